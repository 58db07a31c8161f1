//! The Courier client SDK: what the `courier` command, the terminal chat and
//! the chaos harness use to talk to a cluster.
//!
//! ```no_run
//! # async fn demo() -> courier_client::Result<()> {
//! use courier_client::{Client, ClientConfig};
//! let ca = std::fs::read("ca.pem").unwrap();
//! let (client, _events) = Client::connect(ClientConfig::new(vec!["127.0.0.1:7002".into()], ca)).await?;
//! let sent = client.send_code("+9996612345").await?;
//! let auth = client.sign_in("+9996612345", &sent.phone_code_hash, "11111").await?;
//! # Ok(()) }
//! ```
//!
//! A client is given several node addresses, picks one at random, and moves
//! to another when its node fails. The server certificate must chain to the
//! cluster CA; nothing (a token least of all) is sent before the TLS handshake
//! has verified it.

mod conn;
pub mod error;
mod route;
pub mod media;
pub mod sync;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use courier_proto::client as pb;
use courier_proto::client::request::Method as M;
use courier_proto::client::response::Result as R;
use tokio::sync::mpsc;

pub use conn::{ALPN, PROTOCOL};
/// The UDP endpoint type of [`shared_endpoint`] and [`ClientConfig::endpoint`].
pub use media::FileLocation;
pub use quinn::Endpoint;
pub use courier_proto::Code;
pub use error::{Error, Result};

/// How to reach and identify to a cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Client (QUIC) addresses of nodes, `host:port`.
    pub nodes: Vec<String>,
    /// The cluster CA certificate (PEM).
    pub ca_pem: Vec<u8>,
    /// A human name for this device (shown in the session list).
    pub device: String,
    pub client_version: String,
    /// A saved session token.
    pub token: Option<Vec<u8>>,
    /// How long connecting to one node may take.
    pub connect_timeout: Duration,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// A UDP endpoint shared with other clients (see [`shared_endpoint`]);
    /// `None` opens one for this client alone.
    pub endpoint: Option<quinn::Endpoint>,
    /// Send a chat's writes straight to its group's leader over an extra
    /// connection ([`route`]); `false` keeps to one connection.
    pub route_to_leaders: bool,
    /// Take your own sends' events from their replies instead of having
    /// the node push them back (they still arrive as [`Event::Update`],
    /// from the reply). `false` asks for the push, as older clients did.
    pub own_sends_in_reply: bool,
    /// QUIC keep-alives on a quiet connection. Each costs the node one
    /// packet in and one out: 200 ms (the default) is 5 a second per idle
    /// client; a client that holds many idle connections, or runs on a
    /// battery, may want it and `idle_timeout` longer.
    pub keep_alive: Duration,
    /// A connection with no packet from the node this long is dead (the
    /// node died, paused or is cut off): the client moves to another node.
    /// Keep it a few keep-alives long; a client holding thousands of
    /// connections may want both longer.
    pub idle_timeout: Duration,
    /// Connecting races the nodes: the next one is tried when the one
    /// before has not answered within this (or failed), and the first
    /// handshake to finish wins.
    pub race_delay: Duration,
}

/// A UDP endpoint many clients can share (a bench holding thousands of
/// connections, one process simulating many devices).
pub fn shared_endpoint() -> Result<quinn::Endpoint> {
    conn::endpoint()
}

impl ClientConfig {
    pub fn new(nodes: Vec<String>, ca_pem: Vec<u8>) -> ClientConfig {
        ClientConfig {
            nodes,
            ca_pem,
            device: hostname(),
            client_version: concat!("courier-client/", env!("CARGO_PKG_VERSION")).into(),
            token: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            endpoint: None,
            route_to_leaders: true,
            own_sends_in_reply: true,
            keep_alive: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(700),
            race_delay: Duration::from_millis(100),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "device".into())
}

/// What arrives without being asked for.
#[derive(Clone, Debug)]
pub enum Event {
    /// An update pushed by the node.
    Update(pb::Update),
    /// The connection to `node` ended; `code` is the brief's code when the
    /// node said why (`SESSION_REVOKED`, `UNAVAILABLE`, …).
    Disconnected { node: String, code: Option<Code> },
    /// Connected (again) to `node`; `authorized` when the session was accepted.
    Connected { node: String, authorized: bool },
}

/// A connection to a cluster. Cheap to share behind an `Arc`.
pub struct Client {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    cfg: ClientConfig,
    endpoint: quinn::Endpoint,
    /// Whether `endpoint` is this client's alone (closed with it).
    own_endpoint: bool,
    tls: quinn::ClientConfig,
    token: Mutex<Option<Vec<u8>>>,
    current: tokio::sync::Mutex<Option<conn::Conn>>,
    /// Index into `cfg.nodes` of the node to try next.
    next: Mutex<usize>,
    /// When each node last failed to connect or dropped its connection:
    /// such a node is tried last for [`FAILED_FOR`].
    failed: Mutex<std::collections::HashMap<usize, Instant>>,
    events: mpsc::Sender<Event>,
    hello: Mutex<Option<pb::HelloReply>>,
    /// Chats' leaders and the extra connections to them ([`route`]).
    routes: Mutex<route::Table>,
    /// `Hello.own_sends_key`: random per client, 0 with `own_sends_in_reply` off.
    pub(crate) own_sends_key: u64,
}

impl Inner {
    /// Connects if there is no live connection. The nodes race: the
    /// preferred one (the last that worked) first, the next when it has
    /// not answered within `race_delay` or failed, nodes that failed
    /// lately last; the first handshake and hello to finish wins and the
    /// others are dropped. A node that answers and refuses the session
    /// ends it (another would too).
    pub(crate) async fn ensure(self: &Arc<Self>) -> Result<quinn::Connection> {
        use futures::StreamExt;
        let mut cur = self.current.lock().await;
        if let Some(c) = cur.as_ref()
            && c.conn.close_reason().is_none()
        {
            return Ok(c.conn.clone());
        }
        if let Some(c) = cur.take() {
            self.failed.lock().expect("failed lock").insert(self.index_of(&c.node), Instant::now());
        }
        let order = {
            let failed = self.failed.lock().expect("failed lock");
            connect_order(self.cfg.nodes.len(), *self.next.lock().expect("next lock"), &failed, Instant::now())
        };
        let token = self.token.lock().expect("token lock").clone();
        let mut queue = order.into_iter();
        let mut racing = futures::stream::FuturesUnordered::new();
        let mut last = None;
        loop {
            if racing.is_empty() {
                let Some(idx) = queue.next() else { break };
                racing.push(self.attempt(idx, token.clone()));
            }
            let more = queue.len() > 0;
            tokio::select! {
                Some((idx, r)) = racing.next() => match r {
                    Ok((c, hello)) => {
                        // The rest of the race is dropped: their connections close.
                        drop(racing);
                        *self.next.lock().expect("next lock") = idx;
                        self.failed.lock().expect("failed lock").remove(&idx);
                        c.start_readers(self);
                        let _ = self.events.try_send(Event::Connected { node: c.node.clone(), authorized: hello.authorized });
                        *self.hello.lock().expect("hello lock") = Some(hello);
                        let live = c.conn.clone();
                        *cur = Some(c);
                        return Ok(live);
                    }
                    // The node answered and refused the session: another node will too.
                    Err(e @ (Error::Api { .. } | Error::Tls(_))) => return Err(e),
                    Err(e) => {
                        tracing::debug!(node = %self.cfg.nodes[idx], "cannot connect: {e}");
                        self.failed.lock().expect("failed lock").insert(idx, Instant::now());
                        last = Some(e);
                        if let Some(next) = queue.next() {
                            racing.push(self.attempt(next, token.clone()));
                        }
                    }
                },
                _ = tokio::time::sleep(self.cfg.race_delay), if more => {
                    if let Some(next) = queue.next() {
                        racing.push(self.attempt(next, token.clone()));
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable("no node answered".into())))
    }

    /// One racer: connect to node `idx` and say hello.
    fn attempt(self: &Arc<Self>, idx: usize, token: Option<Vec<u8>>) -> impl std::future::Future<Output = (usize, Result<(conn::Conn, pb::HelloReply)>)> + use<> {
        let inner = self.clone();
        async move {
            let addr = inner.cfg.nodes[idx].clone();
            (idx, conn::Conn::open(&inner, &addr, token.as_deref(), false).await)
        }
    }

    fn index_of(&self, node: &str) -> usize {
        self.cfg.nodes.iter().position(|n| n == node).unwrap_or(0)
    }
}

/// How long a node that failed is tried after the others.
const FAILED_FOR: Duration = Duration::from_secs(30);

/// The order in which to try `n` nodes: from `preferred` on, round the
/// list, but nodes that failed within [`FAILED_FOR`] last (the longest
/// ago first). Pure, for the unit test.
fn connect_order(n: usize, preferred: usize, failed: &std::collections::HashMap<usize, Instant>, now: Instant) -> Vec<usize> {
    let recent = |i: &usize| failed.get(i).filter(|t| now.duration_since(**t) < FAILED_FOR).copied();
    let all: Vec<usize> = (0..n).map(|k| (preferred + k) % n.max(1)).collect();
    let mut order: Vec<usize> = all.iter().copied().filter(|i| recent(i).is_none()).collect();
    let mut bad: Vec<(Instant, usize)> = all.iter().filter_map(|i| recent(i).map(|t| (t, *i))).collect();
    bad.sort();
    order.extend(bad.into_iter().map(|(_, i)| i));
    order
}

/// Events are dropped (never block the client) when the reader falls this far behind.
const EVENT_QUEUE: usize = 1024;

impl Client {
    /// Connects to one of `cfg.nodes` (starting at a random one) and says hello.
    pub async fn connect(cfg: ClientConfig) -> Result<(Client, mpsc::Receiver<Event>)> {
        let (client, rx) = Client::new(cfg)?;
        client.ensure().await?;
        Ok((client, rx))
    }

    /// A client that connects on its first request.
    pub fn new(cfg: ClientConfig) -> Result<(Client, mpsc::Receiver<Event>)> {
        if cfg.nodes.is_empty() {
            return Err(Error::Config("no node addresses; pass --node ADDR or set COURIER_NODES".into()));
        }
        let tls = conn::tls_config(&cfg.ca_pem, cfg.keep_alive, cfg.idle_timeout)?;
        let (endpoint, own_endpoint) = match &cfg.endpoint {
            Some(e) => (e.clone(), false),
            None => (conn::endpoint()?, true),
        };
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let start = rand::random_range(0..cfg.nodes.len());
        let token = Mutex::new(cfg.token.clone());
        let own_sends_key = if cfg.own_sends_in_reply { rand::random::<u64>().max(1) } else { 0 };
        let inner = Inner {
            cfg,
            endpoint,
            own_endpoint,
            tls,
            token,
            current: Default::default(),
            next: Mutex::new(start),
            failed: Mutex::default(),
            events: tx,
            hello: Mutex::new(None),
            routes: Mutex::default(),
            own_sends_key,
        };
        Ok((Client { inner: Arc::new(inner) }, rx))
    }

    /// The session token (after a sign-in, or the one configured).
    pub fn token(&self) -> Option<Vec<u8>> {
        self.inner.token.lock().expect("token lock").clone()
    }

    /// The node's answer to the last hello.
    pub fn hello(&self) -> Option<pb::HelloReply> {
        self.inner.hello.lock().expect("hello lock").clone()
    }

    /// The address of the node currently connected, if any.
    pub async fn node(&self) -> Option<String> {
        self.inner.current.lock().await.as_ref().map(|c| c.node.clone())
    }

    async fn ensure(&self) -> Result<quinn::Connection> {
        self.inner.ensure().await
    }

    /// Sends one request. On a broken connection a read-only request is
    /// retried once on another node; any other fails with `UNAVAILABLE`
    /// (it may or may not have happened) and the next call reconnects.
    pub async fn call(&self, method: M) -> Result<R> {
        // Safe to send twice: reads, and changes that recognize their repeat
        // (a message's random_id, an edit to the same text, a deletion, …).
        let idempotent = match &method {
            M::CreateChat(c) => c.kind == pb::ChatKind::Private as i32,
            m => matches!(
                m,
                M::Ping(_)
                    | M::GetSelf(_)
                    | M::GetSessions(_)
                    | M::ResolvePhone(_)
                    | M::Invite(_)
                    | M::SetTitle(_)
                    | M::SetAdmin(_)
                    | M::SendMessage(_)
                    | M::EditMessage(_)
                    | M::DeleteMessages(_)
                    | M::ReadHistory(_)
                    | M::GetHistory(_)
                    | M::GetDialogs(_)
                    | M::GetDifference(_)
                    | M::ForwardMessages(_)
                    | M::PinMessage(_)
                    | M::SendReaction(_)
                    | M::Search(_)
                    | M::SetTyping(_)
                    | M::GetUsers(_)
                    | M::DeleteForMe(_)
                    | M::UploadPart(_)
                    | M::FinishUpload(_)
                    | M::GetFile(_)
                    | M::GetMembers(_)
                    | M::GetReactions(_)
            ),
        };
        let chat = route::routed_chat(&method).filter(|_| idempotent);
        let req = pb::Request { method: Some(method) };
        if let Some(chat) = chat
            && let Some((addr, conn)) = self.routed(chat)
        {
            match self.attempt(&conn, &req).await {
                Ok(done) => return done,
                // Routed requests are idempotent: the device's own connection takes it again.
                Err(e) => {
                    tracing::debug!(node = %addr, "routed request failed, sending it through the own node: {e}");
                    self.inner.routes.lock().expect("routes lock").set_conn(&addr, None, Instant::now());
                }
            }
        }
        let mut tried = 0;
        loop {
            tried += 1;
            let conn = self.ensure().await?;
            match self.attempt(&conn, &req).await {
                Ok(done) => return done,
                Err(e) => {
                    self.drop_conn(&conn).await;
                    if !idempotent || tried >= 2 {
                        return Err(Error::Unavailable(format!("{e}; the request may or may not have been applied")));
                    }
                }
            }
        }
    }

    /// One request on `conn`. `Ok`: the outcome, final (the answer, or an
    /// error the node gave). `Err`: the connection failed, and the request
    /// may or may not have been applied.
    async fn attempt(&self, conn: &quinn::Connection, req: &pb::Request) -> std::result::Result<Result<R>, Error> {
        match conn::request(conn, req, self.inner.cfg.request_timeout).await {
            Ok(R::Error(e)) => Ok(Err(Error::from_proto(e))),
            Err(e) if e.code() == Code::SessionRevoked => {
                *self.inner.token.lock().expect("token lock") = None;
                Ok(Err(e))
            }
            Ok(r) => Ok(Ok(r)),
            Err(e @ (Error::Api { .. } | Error::Protocol(_))) => Ok(Err(e)),
            Err(e) => Err(e),
        }
    }

    /// The extra connection to the leader of `chat`'s group, when it is
    /// known, elsewhere than the own node, and open ([`route`]). Fetches the
    /// routes and opens connections in the background.
    fn routed(&self, chat: u64) -> Option<(String, quinn::Connection)> {
        if !self.inner.cfg.route_to_leaders {
            return None;
        }
        // Only a logged-in device routes: its extra connections carry its session.
        if self.inner.token.lock().expect("token lock").is_none() {
            return None;
        }
        let own = self.inner.hello.lock().expect("hello lock").as_ref()?.node_id;
        let now = Instant::now();
        let (refresh, decision) = {
            let mut table = self.inner.routes.lock().expect("routes lock");
            (table.start_refresh(now), table.decide(chat, own, now))
        };
        if refresh {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                let routes = match inner.ensure().await {
                    Ok(conn) => match conn::request(&conn, &pb::Request { method: Some(M::GetRoutes(pb::GetRoutes {})) }, inner.cfg.request_timeout).await {
                        Ok(R::Routes(r)) => Some(r),
                        // An older node does not know the method: requests stay on the own connection.
                        _ => None,
                    },
                    Err(_) => None,
                };
                inner.routes.lock().expect("routes lock").refreshed(routes, Instant::now());
            });
        }
        match decision {
            route::Decision::Own => None,
            route::Decision::Extra(addr, conn) => Some((addr, conn)),
            route::Decision::OwnAndConnect(addr) => {
                let inner = self.inner.clone();
                tokio::spawn(async move {
                    let token = inner.token.lock().expect("token lock").clone();
                    let conn = match conn::Conn::open(&inner, &addr, token.as_deref(), true).await {
                        Ok((c, hello)) if hello.authorized => Some(c.conn),
                        Ok((c, _)) => {
                            c.conn.close(0u32.into(), b"not authorized");
                            None
                        }
                        Err(e) => {
                            tracing::debug!(node = %addr, "cannot open a connection to a chat's leader: {e}");
                            None
                        }
                    };
                    inner.routes.lock().expect("routes lock").set_conn(&addr, conn, Instant::now());
                });
                None
            }
        }
    }

    async fn drop_conn(&self, conn: &quinn::Connection) {
        let mut cur = self.inner.current.lock().await;
        if cur.as_ref().is_some_and(|c| c.conn.stable_id() == conn.stable_id()) {
            conn.close(0u32.into(), b"");
            *cur = None;
        }
    }

    /// Closes the connection (the session stays valid).
    pub async fn close(&self) {
        self.inner.routes.lock().expect("routes lock").clear();
        if let Some(c) = self.inner.current.lock().await.take() {
            c.conn.close(0u32.into(), b"bye");
        }
    }

    pub async fn ping(&self) -> Result<()> {
        match self.call(M::Ping(pb::Ping { nonce: 1 })).await? {
            R::Pong(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn send_code(&self, phone: &str) -> Result<pb::SentCode> {
        match self.call(M::SendCode(pb::SendCode { phone: phone.into() })).await? {
            R::SentCode(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Logs in with a code. `Err` with code `SIGN_UP_REQUIRED` means: call
    /// [`Client::sign_up`] with the same `phone_code_hash`.
    pub async fn sign_in(&self, phone: &str, phone_code_hash: &str, code: &str) -> Result<pb::Authorization> {
        let r = self.call(M::SignIn(pb::SignIn { phone: phone.into(), phone_code_hash: phone_code_hash.into(), code: code.into() })).await?;
        self.authorization(r)
    }

    pub async fn sign_up(&self, phone: &str, phone_code_hash: &str, first_name: &str, last_name: &str) -> Result<pb::Authorization> {
        let r = self
            .call(M::SignUp(pb::SignUp {
                phone: phone.into(),
                phone_code_hash: phone_code_hash.into(),
                first_name: first_name.into(),
                last_name: last_name.into(),
            }))
            .await?;
        self.authorization(r)
    }

    fn authorization(&self, r: R) -> Result<pb::Authorization> {
        match r {
            R::Authorization(a) => {
                *self.inner.token.lock().expect("token lock") = Some(a.session_token.clone());
                Ok(a)
            }
            other => Err(unexpected(other)),
        }
    }

    pub async fn get_self(&self) -> Result<pb::User> {
        match self.call(M::GetSelf(pb::GetSelf {})).await? {
            R::User(u) => Ok(u),
            other => Err(unexpected(other)),
        }
    }

    pub async fn sessions(&self) -> Result<Vec<pb::Session>> {
        match self.call(M::GetSessions(pb::GetSessions {})).await? {
            R::Sessions(s) => Ok(s.sessions),
            other => Err(unexpected(other)),
        }
    }

    pub async fn terminate_session(&self, id: u64) -> Result<()> {
        match self.call(M::TerminateSession(pb::TerminateSession { session_id: id })).await? {
            R::Done(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn terminate_other_sessions(&self) -> Result<()> {
        match self.call(M::TerminateOtherSessions(pb::TerminateOtherSessions {})).await? {
            R::Done(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Ends this session everywhere; the token is forgotten.
    pub async fn log_out(&self) -> Result<()> {
        match self.call(M::LogOut(pb::LogOut {})).await? {
            R::Done(_) => {
                *self.inner.token.lock().expect("token lock") = None;
                self.inner.routes.lock().expect("routes lock").clear();
                Ok(())
            }
            other => Err(unexpected(other)),
        }
    }
}

/// Chats and messages.
impl Client {
    /// The account with this phone number.
    pub async fn resolve_phone(&self, phone: &str) -> Result<pb::User> {
        match self.call(M::ResolvePhone(pb::ResolvePhone { phone: phone.into() })).await? {
            R::User(u) => Ok(u),
            other => Err(unexpected(other)),
        }
    }

    /// Accounts by id (at most 100; unknown ids are left out).
    pub async fn users(&self, ids: Vec<u64>) -> Result<Vec<pb::User>> {
        match self.call(M::GetUsers(pb::GetUsers { ids })).await? {
            R::Users(u) => Ok(u.users),
            other => Err(unexpected(other)),
        }
    }

    async fn chat_call(&self, m: M) -> Result<pb::Chat> {
        match self.call(m).await? {
            R::Chat(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    /// The private chat with `user` (created on first use; both sides get the same chat).
    pub async fn private_chat(&self, user: u64) -> Result<pb::Chat> {
        self.chat_call(M::CreateChat(pb::CreateChat { kind: pb::ChatKind::Private.into(), title: String::new(), members: vec![user] })).await
    }

    pub async fn create_group(&self, title: &str, members: Vec<u64>) -> Result<pb::Chat> {
        self.chat_call(M::CreateChat(pb::CreateChat { kind: pb::ChatKind::Group.into(), title: title.into(), members })).await
    }

    pub async fn create_channel(&self, title: &str) -> Result<pb::Chat> {
        self.chat_call(M::CreateChat(pb::CreateChat { kind: pb::ChatKind::Channel.into(), title: title.into(), members: vec![] })).await
    }

    pub async fn invite(&self, chat: u64, users: Vec<u64>) -> Result<pb::Chat> {
        self.chat_call(M::Invite(pb::Invite { chat_id: chat, users })).await
    }

    /// Removes a member (admins), or leaves when `user` is yourself.
    pub async fn remove_member(&self, chat: u64, user: u64) -> Result<pb::Chat> {
        self.chat_call(M::RemoveMember(pb::RemoveMember { chat_id: chat, user_id: user })).await
    }

    pub async fn set_title(&self, chat: u64, title: &str) -> Result<pb::Chat> {
        self.chat_call(M::SetTitle(pb::SetTitle { chat_id: chat, title: title.into() })).await
    }

    pub async fn set_admin(&self, chat: u64, user: u64, admin: bool) -> Result<pb::Chat> {
        self.chat_call(M::SetAdmin(pb::SetAdmin { chat_id: chat, user_id: user, admin })).await
    }

    /// Sends a message. Retrying with the same `random_id` (after a timeout,
    /// on any node) returns the first message, never a second one.
    pub async fn send_message(&self, chat: u64, random_id: u64, text: &str, reply_to: u64) -> Result<pb::Message> {
        self.send(pb::SendMessage { chat_id: chat, random_id, text: text.into(), reply_to, media: None }).await
    }

    /// A send's events come in its reply (`Sent`, see
    /// [`ClientConfig::own_sends_in_reply`]): they join the pushed ones on
    /// the event channel, dropped like them when its reader is far behind
    /// (a gap the reader fills by difference). An older node answers the
    /// message alone and pushes the events.
    async fn send(&self, m: pb::SendMessage) -> Result<pb::Message> {
        match self.call(M::SendMessage(m)).await? {
            R::Message(m) => Ok(m),
            R::Sent(pb::Sent { message: Some(m), events }) => {
                for e in events {
                    let _ = self.inner.events.try_send(Event::Update(pb::Update { kind: Some(pb::update::Kind::ChatEvent(e)) }));
                }
                Ok(m)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Posts a file you uploaded (a photo, document or voice note) with a
    /// caption; retries with the same `random_id` return the first message.
    pub async fn send_media(&self, chat: u64, random_id: u64, caption: &str, media: pb::InputMedia, reply_to: u64) -> Result<pb::Message> {
        self.send(pb::SendMessage { chat_id: chat, random_id, text: caption.into(), reply_to, media: Some(media) }).await
    }

    pub async fn edit_message(&self, chat: u64, id: u64, text: &str) -> Result<pb::Message> {
        match self.call(M::EditMessage(pb::EditMessage { chat_id: chat, id, text: text.into() })).await? {
            R::Message(m) => Ok(m),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes for everyone (leaves tombstones).
    pub async fn delete_messages(&self, chat: u64, ids: Vec<u64>) -> Result<()> {
        match self.call(M::DeleteMessages(pb::DeleteMessages { chat_id: chat, ids })).await? {
            R::Done(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes messages for you only; your other devices drop them too.
    pub async fn delete_for_me(&self, chat: u64, ids: Vec<u64>) -> Result<()> {
        match self.call(M::DeleteForMe(pb::DeleteForMe { chat_id: chat, ids })).await? {
            R::Done(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn read_history(&self, chat: u64, max_id: u64) -> Result<()> {
        match self.call(M::ReadHistory(pb::ReadHistory { chat_id: chat, max_id })).await? {
            R::Done(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Messages below `before` (0: the newest), newest first; or with
    /// `before = 0, after > 0`, those after `after`, oldest first.
    pub async fn history(&self, chat: u64, before: u64, after: u64, limit: u32) -> Result<Vec<pb::Message>> {
        Ok(self.history_page(chat, before, after, limit).await?.messages)
    }

    /// [`Client::history`] with `more`: the page was cut (by count or by
    /// bytes) before its range ended; go on from its last message's id.
    pub async fn history_page(&self, chat: u64, before: u64, after: u64, limit: u32) -> Result<pb::Messages> {
        match self.call(M::GetHistory(pb::GetHistory { chat_id: chat, before, after, limit })).await? {
            R::Messages(m) => Ok(m),
            other => Err(unexpected(other)),
        }
    }

    /// Who reacted with what to a message: a page in user-id order after
    /// `after_user` (0: from the first), at most `limit` (1 to 200; 0: 100).
    pub async fn reactions(&self, chat: u64, id: u64, after_user: u64, limit: u32) -> Result<Vec<pb::Reactor>> {
        match self.call(M::GetReactions(pb::GetReactions { chat_id: chat, id, after_user, limit })).await? {
            R::Reactors(r) => Ok(r.reactors),
            other => Err(unexpected(other)),
        }
    }

    /// A page of the chat's members in id order: those after `after_user`
    /// (0: from the first), at most `limit` (1 to 200; 0: 100). Channels
    /// list their subscribers to admins only (`ADMIN_REQUIRED`).
    pub async fn members(&self, chat: u64, after_user: u64, limit: u32) -> Result<Vec<pb::ChatMember>> {
        match self.call(M::GetMembers(pb::GetMembers { chat_id: chat, after_user, limit })).await? {
            R::Members(m) => Ok(m.members),
            other => Err(unexpected(other)),
        }
    }

    /// Copies messages of `from_chat` into `chat`, in order (one `random_id`
    /// for the whole forward); answers the last new message.
    pub async fn forward_messages(&self, chat: u64, from_chat: u64, ids: Vec<u64>, random_id: u64) -> Result<pb::Message> {
        match self.call(M::ForwardMessages(pb::ForwardMessages { chat_id: chat, from_chat, ids, random_id })).await? {
            R::Message(m) => Ok(m),
            other => Err(unexpected(other)),
        }
    }

    /// Pins a message (0 unpins).
    pub async fn pin_message(&self, chat: u64, id: u64) -> Result<pb::Chat> {
        self.chat_call(M::PinMessage(pb::PinMessage { chat_id: chat, id })).await
    }

    /// Your reaction to a message; an empty emoji removes it.
    pub async fn send_reaction(&self, chat: u64, id: u64, emoji: &str) -> Result<pb::Message> {
        match self.call(M::SendReaction(pb::SendReaction { chat_id: chat, id, emoji: emoji.into() })).await? {
            R::Message(m) => Ok(m),
            other => Err(unexpected(other)),
        }
    }

    /// The newest messages containing `text` (one page; see [`Client::search_page`]).
    pub async fn search(&self, chat: u64, text: &str, limit: u32) -> Result<Vec<pb::Message>> {
        Ok(self.search_page(chat, text, limit, 0).await?.messages)
    }

    /// Matches below message `before` (0: from the newest); `more`: ask
    /// again with `before` = the last match's id.
    pub async fn search_page(&self, chat: u64, text: &str, limit: u32, before: u64) -> Result<pb::Messages> {
        match self.call(M::Search(pb::Search { chat_id: chat, text: text.into(), limit, before })).await? {
            R::Messages(m) => Ok(m),
            other => Err(unexpected(other)),
        }
    }

    /// Blocks `user` (or unblocks, with `blocked = false`): they can no
    /// longer message you privately (`USER_IS_BLOCKED`) nor invite you.
    pub async fn block_user(&self, user: u64, blocked: bool) -> Result<()> {
        match self.call(M::BlockUser(pb::BlockUser { user_id: user, blocked })).await? {
            R::Done(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Shows "typing…" to the chat's other members for 6 s.
    pub async fn set_typing(&self, chat: u64) -> Result<()> {
        match self.call(M::SetTyping(pb::SetTyping { chat_id: chat })).await? {
            R::Done(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Every dialog, most recent first (all pages; see [`Client::dialogs_page`]).
    pub async fn dialogs(&self) -> Result<Vec<pb::Dialog>> {
        let mut all: Vec<pb::Dialog> = Vec::new();
        let mut before = (0, 0);
        // Bounded: each page moves `before` down the list.
        for _ in 0..100_000 {
            let page = self.dialogs_page(before, 100).await?;
            let Some(last) = page.dialogs.last().and_then(|d| d.chat.as_ref()) else { break };
            let next = (last.last_ms, last.id);
            all.extend(page.dialogs);
            if !page.more || next == before {
                break;
            }
            before = next;
        }
        Ok(all)
    }

    /// A page of dialogs after `before` = (`chat.last_ms`, `chat.id`) of the
    /// last one of the previous page ((0, 0): from the top); `more` says
    /// whether more follow.
    pub async fn dialogs_page(&self, before: (u64, u64), limit: u32) -> Result<pb::Dialogs> {
        match self.call(M::GetDialogs(pb::GetDialogs { before_ms: before.0, before_chat: before.1, limit })).await? {
            R::Dialogs(d) => Ok(d),
            other => Err(unexpected(other)),
        }
    }

    /// One part of an upload (see [`media`] for whole files).
    pub async fn upload_part(&self, upload_id: u64, part: u32, part_size: u32, bytes: Vec<u8>) -> Result<()> {
        match self.call(M::UploadPart(pb::UploadPart { upload_id, part, part_size, bytes })).await? {
            R::Done(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Turns an upload into a file; `FILE_PART_MISSING` lists parts to send (again).
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_upload(&self, upload_id: u64, parts: u32, part_size: u32, size: u64, sha256: [u8; 32], name: &str, mime: &str) -> Result<pb::File> {
        let req = pb::FinishUpload { upload_id, parts, part_size, size, sha256: sha256.to_vec(), name: name.into(), mime: mime.into() };
        match self.call(M::FinishUpload(req)).await? {
            R::File(f) => Ok(f),
            other => Err(unexpected(other)),
        }
    }

    /// Up to `limit` bytes (at most 512 KiB) from `offset` of a file (or of
    /// its preview, see [`FileLocation`]).
    pub async fn get_file(&self, at: impl Into<FileLocation>, offset: u64, limit: u32) -> Result<pb::FileBytes> {
        let at = at.into();
        let thumb = at.thumb.map(String::from).unwrap_or_default();
        let req = pb::GetFile { file_id: at.file_id, offset, limit, chat_id: at.chat_id, message_id: at.message_id, thumb };
        match self.call(M::GetFile(req)).await? {
            R::FileBytes(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// What happened in each chat after the given pts (chats not named come from 0).
    pub async fn difference(&self, states: Vec<(u64, u64)>) -> Result<Vec<pb::ChatDifference>> {
        Ok(self.difference_page(states).await?.chats)
    }

    /// [`Client::difference`] with `more`: the answer reached its size
    /// bound and left chats out; apply it and ask again.
    pub async fn difference_page(&self, states: Vec<(u64, u64)>) -> Result<pb::Difference> {
        self.difference_of(states.into_iter().map(|(chat_id, pts)| pb::ChatState { chat_id, pts, read_max_id: None }).collect()).await
    }

    /// [`Client::difference_page`] with the read positions the device
    /// knows: a channel whose read position moved past it comes back with
    /// `read_max_id` (reads in a channel are not events).
    pub async fn difference_of(&self, states: Vec<pb::ChatState>) -> Result<pb::Difference> {
        match self.call(M::GetDifference(pb::GetDifference { states })).await? {
            R::Difference(d) => Ok(d),
            other => Err(unexpected(other)),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Ok(mut routes) = self.inner.routes.lock() {
            routes.clear();
        }
        if self.inner.own_endpoint {
            self.inner.endpoint.close(0u32.into(), b"bye");
        } else if let Ok(mut cur) = self.inner.current.try_lock()
            && let Some(c) = cur.take()
        {
            c.conn.close(0u32.into(), b"bye");
        }
    }
}

fn unexpected(r: R) -> Error {
    Error::Protocol(format!("unexpected response {r:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_tried_from_the_preferred_one_and_failed_ones_last() {
        let now = Instant::now();
        let none = std::collections::HashMap::new();
        assert_eq!(connect_order(3, 1, &none, now), vec![1, 2, 0]);
        let mut failed = std::collections::HashMap::new();
        failed.insert(1, now - Duration::from_secs(2));
        failed.insert(2, now - Duration::from_secs(5));
        assert_eq!(connect_order(3, 1, &failed, now), vec![0, 2, 1], "failed last, the longest ago first");
        failed.insert(2, now - FAILED_FOR - Duration::from_secs(1));
        assert_eq!(connect_order(3, 1, &failed, now), vec![2, 0, 1], "a failure long ago is forgotten");
        assert_eq!(connect_order(1, 0, &failed, now), vec![0]);
    }
}
