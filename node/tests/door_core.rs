//! The door's core driven by an in-process transport: no socket, no
//! process. A one-node cluster (real Raft, real RocksDB) in this test's
//! runtime; connections are pairs of in-memory pipes. It is the proof that
//! a transport plugs in beside QUIC without touching the services.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use courier_node::gateway::{Connection, DatagramError};
use courier_proto::client as pb;
use courier_proto::client::request::Method as M;
use courier_proto::client::response::Result as R;
use courier_proto::frame::{self, MAX_CLIENT_FRAME};
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};

/// One in-memory connection, the server's side: each request stream and
/// the push stream is a duplex pipe.
struct Mem {
    remote: SocketAddr,
    streams: tokio::sync::Mutex<mpsc::Receiver<DuplexStream>>,
    pushes: mpsc::UnboundedSender<DuplexStream>,
    closed: watch::Sender<Option<(u32, String)>>,
}

/// The client's side of a [`Mem`].
struct Side {
    streams: mpsc::Sender<DuplexStream>,
    pushes: mpsc::UnboundedReceiver<DuplexStream>,
    closed: watch::Receiver<Option<(u32, String)>>,
}

fn pipe(port: u16) -> (Mem, Side) {
    let (streams_tx, streams_rx) = mpsc::channel(16);
    let (push_tx, push_rx) = mpsc::unbounded_channel();
    let (closed_tx, closed_rx) = watch::channel(None);
    let remote = SocketAddr::from(([127, 0, 0, 1], port));
    (Mem { remote, streams: tokio::sync::Mutex::new(streams_rx), pushes: push_tx, closed: closed_tx }, Side { streams: streams_tx, pushes: push_rx, closed: closed_rx })
}

impl Connection for Mem {
    type Send = WriteHalf<DuplexStream>;
    type Recv = ReadHalf<DuplexStream>;

    fn remote(&self) -> SocketAddr {
        self.remote
    }

    async fn accept_bi(&self) -> Option<(Self::Send, Self::Recv)> {
        let mut closed = self.closed.subscribe();
        let mut streams = self.streams.lock().await;
        tokio::select! {
            s = streams.recv() => s.map(|s| { let (r, w) = tokio::io::split(s); (w, r) }),
            _ = closed.wait_for(Option::is_some) => None,
        }
    }

    async fn open_uni(&self) -> Option<Self::Send> {
        let (mine, theirs) = tokio::io::duplex(1 << 20);
        self.pushes.send(theirs).ok()?;
        Some(tokio::io::split(mine).1)
    }

    fn close(&self, code: u32, reason: &str) {
        self.closed.send_replace(Some((code, reason.to_string())));
    }

    fn stop(_: &mut Self::Recv, _: u32) {}

    fn finish(_: &mut Self::Send) {}

    async fn stopped(_: &mut Self::Send) {}

    fn send_datagram(&self, _: Bytes) -> Result<(), DatagramError> {
        Err(DatagramError::Unsupported)
    }

    async fn read_datagram(&self) -> Option<Bytes> {
        None
    }
}

impl Side {
    /// One request on a stream of its own, and its answer.
    async fn call(&self, method: M) -> R {
        let (mine, theirs) = tokio::io::duplex(2 << 20);
        self.streams.send(theirs).await.expect("the connection is served");
        let (mut r, mut w) = tokio::io::split(mine);
        frame::write(&mut w, &pb::Request { method: Some(method) }).await.expect("write a request");
        let answer = tokio::time::timeout(Duration::from_secs(20), frame::read::<pb::Response, _>(&mut r, MAX_CLIENT_FRAME)).await;
        answer.expect("an answer in time").expect("a readable answer").expect("an answer, not an end").result.expect("a result")
    }

    /// `call`, again while the cluster answers UNAVAILABLE (a fresh group electing), for at most 20 s.
    async fn must_call(&self, method: M) -> R {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match self.call(method.clone()).await {
                R::Error(e) if courier_proto::Code::parse(&e.code).is_some_and(|c| c.is_retryable()) && tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                R::Error(e) => panic!("{method:?} refused: {e:?}"),
                r => return r,
            }
        }
    }
}

fn hello(token: Vec<u8>) -> M {
    M::Hello(pb::Hello { protocol: 1, client_version: "door-test/1".into(), device: "memory".into(), session_token: token, requests_only: false, own_sends_key: 0 })
}

async fn must_boot(dir: &std::path::Path) -> (courier_node::Node, courier_node::Parts) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = dir.join("certs");
    let ca = courier_node::certs::create_ca(&certs).expect("CA");
    let (cert, key) = courier_node::certs::create_node(&certs, "n1", &["127.0.0.1".into()]).expect("node certificate");
    let mut cfg = courier_node::NodeConfig { name: "n1".into(), data_dir: dir.join("data"), data_groups: 2, development: true, ..Default::default() };
    cfg.tls = courier_node::config::TlsConfig { ca, cert, key };
    cfg.auth.test_numbers = true;
    cfg.validate().expect("a valid config");
    let app = std::sync::Arc::new(courier_node::app::Services::new(&cfg));
    let node = courier_node::Node::open(cfg, courier_node::metrics::Metrics::default(), app).expect("open the node");
    node.init(2).await.expect("init a one-node cluster");
    let parts = courier_node::Parts::new(&node);
    (node, parts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_in_memory_says_hello_logs_in_sends_and_is_pushed_to() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, parts) = must_boot(dir.path()).await;
    let door = parts.door.clone();

    // The phone: hello without a session, then a code and a sign-up.
    let (mem, phone) = pipe(40001);
    tokio::spawn(door.clone().serve(mem, door.admit(SocketAddr::from(([127, 0, 0, 1], 40001)))));
    let R::Hello(h) = phone.call(hello(Vec::new())).await else { panic!("no hello reply") };
    assert!(!h.authorized);
    let number = "+9996610001";
    let R::SentCode(sent) = phone.must_call(M::SendCode(pb::SendCode { phone: number.into() })).await else { panic!("no code sent") };
    let sign_in = M::SignIn(pb::SignIn { phone: number.into(), phone_code_hash: sent.phone_code_hash.clone(), code: "11111".into() });
    match phone.call(sign_in).await {
        R::Error(e) => assert_eq!(courier_proto::Code::parse(&e.code), Some(courier_proto::Code::SignUpRequired), "{e:?}"),
        other => panic!("a new number signed in: {other:?}"),
    }
    let sign_up = M::SignUp(pb::SignUp { phone: number.into(), phone_code_hash: sent.phone_code_hash, first_name: "Ann".into(), last_name: String::new() });
    let R::Authorization(auth) = phone.must_call(sign_up).await else { panic!("no authorization") };
    assert!(!auth.session_token.is_empty());

    // The laptop: a second connection with the session, which gets a push stream.
    let (mem, mut laptop) = pipe(40002);
    tokio::spawn(door.clone().serve(mem, door.admit(SocketAddr::from(([127, 0, 0, 1], 40002)))));
    let R::Hello(h) = laptop.call(hello(auth.session_token.clone())).await else { panic!("no hello reply") };
    assert!(h.authorized, "the session is accepted on a second connection");
    let mut updates = tokio::time::timeout(Duration::from_secs(5), laptop.pushes.recv()).await.expect("a push stream in time").expect("a push stream");

    // The phone makes a group and posts in it; the laptop is pushed the post.
    let create = M::CreateChat(pb::CreateChat { kind: pb::ChatKind::Group.into(), title: "door".into(), members: vec![] });
    let R::Chat(chat) = phone.must_call(create).await else { panic!("no chat") };
    let send = M::SendMessage(pb::SendMessage { chat_id: chat.id, random_id: 7, text: "through the core".into(), reply_to: 0, media: None });
    let R::Message(sent) = phone.must_call(send).await else { panic!("no message") };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let pushed = loop {
        let update = tokio::time::timeout_at(deadline, frame::read::<pb::Update, _>(&mut updates, MAX_CLIENT_FRAME)).await.expect("the post pushed in time").expect("a readable update").expect("an update");
        if let Some(pb::update::Kind::ChatEvent(pb::ChatEvent { kind: Some(pb::chat_event::Kind::NewMessage(m)), .. })) = update.kind {
            break m;
        }
    };
    assert_eq!((pushed.chat_id, pushed.id, pushed.text.as_str()), (chat.id, sent.id, "through the core"));
    assert!(laptop.closed.borrow().is_none(), "the laptop's connection stays open");

    node.shutdown().await;
}
