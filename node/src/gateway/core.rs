//! The door's core, whatever carries the bytes: the hello, the session
//! check, one request per stream (`Method` → service → reply), the push
//! stream and its subscriptions, and the limits per connection (time to
//! say hello, time to send a request, frame size). A transport (QUIC
//! today, WebTransport next, an in-process one in tests) implements
//! [`Connection`] and hands each accepted connection to [`Door::serve`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier_proto::Code;
use courier_proto::client as pb;
use courier_proto::client::response::Result as R;
use courier_proto::frame::{self, FrameError, MAX_CLIENT_FRAME};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::doors::{self, AddressSlot};
use super::model::{self, Method};
use crate::auth::{Auth, AuthError, User, Validity};
use crate::cluster::Node;
use crate::config::GatewayConfig;
use crate::error::{Error, Result};
use crate::messaging::Messaging;
use crate::push::{self, Pushes, Session, close};

/// How often every logged-in connection's session is re-checked in bulk (a
/// safety net behind the revocation notices).
const SWEEP: Duration = Duration::from_secs(10);
/// Sessions whose last activity is older than this get it recorded again.
const TOUCH_AFTER_MS: u64 = 60_000;
/// How long a refused hello waits for its answer to be read.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Why a datagram was not sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DatagramError {
    #[error("this connection carries no datagrams")]
    Unsupported,
    #[error("a datagram of {len} bytes is over the path's {max}")]
    TooLarge { len: usize, max: usize },
    #[error("the connection is closed")]
    Closed,
}

/// One client connection as the core sees it: bidirectional streams (one
/// request each), one server-opened stream for pushes, unreliable
/// datagrams (calls' media), and a close with a code and the brief's code
/// as reason. QUIC's and WebTransport's connections are this.
pub trait Connection: Send + Sync + 'static {
    type Send: AsyncWrite + Unpin + Send + 'static;
    type Recv: AsyncRead + Unpin + Send + 'static;

    fn remote(&self) -> SocketAddr;
    /// The next request stream; `None` once the connection ended.
    fn accept_bi(&self) -> impl Future<Output = Option<(Self::Send, Self::Recv)>> + Send;
    /// The server's push stream.
    fn open_uni(&self) -> impl Future<Output = Option<Self::Send>> + Send;
    fn close(&self, code: u32, reason: &str);
    /// Stops reading a stream at once (its request is refused).
    fn stop(recv: &mut Self::Recv, code: u32);
    /// Ends a stream's sending side after its last frame.
    fn finish(send: &mut Self::Send);
    /// Resolves once the peer has read (or dropped) what was sent on `send`.
    fn stopped(send: &mut Self::Send) -> impl Future<Output = ()> + Send;
    fn send_datagram(&self, bytes: Bytes) -> std::result::Result<(), DatagramError>;
    /// The next datagram from the client; `None` once the connection ended
    /// or if it carries none. Nothing reads them yet (calls will), and QUIC
    /// connections accept none until then (`quic::endpoint`).
    fn read_datagram(&self) -> impl Future<Output = Option<Bytes>> + Send;
}

/// Every transport's connection is what the push registry closes.
impl<C: Connection> push::Link for C {
    fn close(&self, code: u32, reason: &str) {
        Connection::close(self, code, reason);
    }
}

/// The session a connection is logged in with, and its user.
#[derive(Clone, Debug)]
pub struct Authed {
    pub group: u32,
    pub hash: crate::auth::TokenHash,
    pub user: User,
    pub session_id: u64,
    /// When the check that accepted the session started.
    pub checked_at: Instant,
}

impl Authed {
    fn session(&self) -> Session {
        Session { group: self.group, hash: self.hash, user: self.user.id, session_id: self.session_id, checked_at: self.checked_at }
    }
}

/// The door's state of one connection; its place in the push registry is `conn`.
pub struct Client {
    pub conn: Arc<push::Conn>,
    pub device: String,
    pub app_version: String,
    /// A device's extra connection for requests only (`Hello.requests_only`):
    /// it gets no push stream.
    pub requests_only: bool,
    /// The session's user as last checked (the session itself is `conn`'s).
    user: Mutex<Option<User>>,
    /// A sign-in or sign-up is running on this connection (one at a time,
    /// and none once it is logged in: one account per connection).
    signing_in: AtomicBool,
    /// Accounts this connection found by phone number (`resolve_phone`):
    /// `get_users` answers them too. Bounded by [`RESOLVED_MAX`].
    resolved: Mutex<HashSet<u64>>,
    /// Starts the transport's push stream (once the connection is logged in).
    start_push: Box<dyn Fn(tokio::sync::mpsc::Receiver<Bytes>) + Send + Sync>,
}

/// Accounts a connection remembers having resolved by phone.
pub const RESOLVED_MAX: usize = 1_000;

impl Client {
    pub fn id(&self) -> u64 {
        self.conn.id
    }

    pub fn remote(&self) -> SocketAddr {
        self.conn.remote
    }

    pub fn authed(&self) -> Option<Authed> {
        let s = self.conn.session()?;
        let user = self.user.lock().expect("client lock").clone()?;
        Some(Authed { group: s.group, hash: s.hash, user, session_id: s.session_id, checked_at: s.checked_at })
    }

    /// Starts a sign-in on a logged-out connection: `false` when it is
    /// logged in or another sign-in runs (one account per connection).
    pub fn begin_sign_in(&self) -> bool {
        self.conn.session().is_none() && !self.signing_in.swap(true, Ordering::AcqRel)
    }

    pub fn end_sign_in(&self) {
        self.signing_in.store(false, Ordering::Release);
    }

    /// Remembers an account found by phone on this connection.
    pub fn resolved(&self, user: u64) {
        let mut r = self.resolved.lock().expect("client lock");
        if r.len() < RESOLVED_MAX {
            r.insert(user);
        }
    }

    /// Whether this connection resolved `user` by phone.
    pub fn has_resolved(&self, user: u64) -> bool {
        self.resolved.lock().expect("client lock").contains(&user)
    }
}

/// The door: every transport's connections come here.
pub struct Door {
    pub(super) node: Node,
    pub(super) pushes: Arc<Pushes>,
    pub(super) auth: Arc<Auth>,
    pub(super) chats: Arc<Messaging>,
    pub(super) media: Arc<crate::media::Media>,
    pub(super) cfg: GatewayConfig,
    /// `resolve_phone` per user (`limits.resolve_phone_per_minute`).
    pub(super) resolve_limit: Mutex<crate::limit::RateLimiter<u64>>,
    /// Connections per address and the hello-less budget.
    doors: Arc<doors::Doors>,
}

/// A connection let in, before its transport's handshake: its place among
/// its address's connections (`None`: over the cap) and among those
/// waiting for their hello, and the deadline for the hello.
pub struct Admission {
    address: Option<AddressSlot>,
    waiting: doors::HelloSlot,
    pub hello_by: tokio::time::Instant,
}

/// Why a connection is closed before its hello: the close code and reason
/// its transport closes it with.
pub struct TurnedAway {
    pub code: u32,
    pub reason: String,
}

impl Door {
    pub fn new(node: Node, pushes: Arc<Pushes>, auth: Arc<Auth>, chats: Arc<Messaging>, media: Arc<crate::media::Media>, cfg: GatewayConfig) -> Arc<Door> {
        let resolve_limit = Mutex::new(crate::limit::RateLimiter::new(node.config().limits.resolve_phone_per_minute));
        let doors = doors::Doors::new(cfg.max_connections_per_address, cfg.max_hello_less);
        Arc::new(Door { node, pushes, auth, chats, media, cfg, resolve_limit, doors })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.request_timeout_secs)
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// Closes every connection (node shutdown).
    pub fn close_all(&self) {
        self.pushes.registry().close_all();
    }

    /// Whether the node holds `gateway.max_connections` already (a new one
    /// is refused before its handshake).
    pub fn full(&self) -> bool {
        self.pushes.registry().len() >= self.cfg.max_connections
    }

    /// Counts a connection from `remote` in, from its first packet: a
    /// place among the hello-less connections (the oldest goes when a new
    /// one needs it) and a deadline of its own.
    pub fn admit(&self, remote: SocketAddr) -> Admission {
        let address = self.doors.open(remote.ip());
        let waiting = self.doors.wait_for_hello();
        Admission { address, waiting, hello_by: tokio::time::Instant::now() + Duration::from_secs(self.cfg.hello_timeout_secs) }
    }

    /// Serves one connection after its transport's handshake: the hello,
    /// then a request per stream until it ends.
    pub async fn serve<C: Connection>(self: Arc<Self>, conn: C, admission: Admission) {
        let conn = Arc::new(conn);
        let remote = conn.remote();
        let client = match self.before_hello(&admission, remote, self.hello(&conn)).await {
            Ok(Ok(client)) => client,
            Ok(Err((code, e))) => {
                tracing::debug!(%remote, "hello refused: {e}");
                conn.close(code, e.code().as_str());
                return;
            }
            Err(t) => {
                conn.close(t.code, &t.reason);
                return;
            }
        };
        // Its place among its address's connections is held while it lives;
        // it waits for no hello any more.
        let Admission { address: _address, waiting, .. } = admission;
        drop(waiting);
        let metrics = self.node.metrics().clone();
        metrics.client_connections.inc();
        metrics.client_connections_opened.inc();
        while let Some((send, recv)) = conn.accept_bi().await {
            let (door, client) = (self.clone(), client.clone());
            tokio::spawn(async move { door.stream::<C>(&client, send, recv).await });
        }
        tracing::debug!(%remote, conn = client.id(), "client connection ended");
        self.pushes.registry().remove(client.id(), self.auth.clock().now_ms());
        metrics.client_connections.dec();
    }

    /// Runs `phase` (the hello, and before it a transport's own handshake
    /// such as WebTransport's CONNECT) under the hello's rules: an address
    /// over its cap is turned away before the phase starts (told why: a
    /// refused handshake would only say "refused"), and the phase ends at
    /// the hello deadline or when a newer connection takes its place among
    /// those waiting for their hello.
    pub async fn before_hello<T>(&self, admission: &Admission, remote: SocketAddr, phase: impl Future<Output = T>) -> std::result::Result<T, TurnedAway> {
        if admission.address.is_none() {
            let reason = format!("FLOOD_WAIT: too many connections from {} (gateway.max_connections_per_address = {})", remote.ip(), self.cfg.max_connections_per_address);
            return Err(TurnedAway { code: close::OVERLOADED, reason });
        }
        tokio::select! {
            r = tokio::time::timeout_at(admission.hello_by, phase) => {
                r.map_err(|_| TurnedAway { code: close::BAD_REQUEST, reason: "BAD_REQUEST: no hello in time".into() })
            }
            _ = admission.waiting.evicted.notified() => Err(TurnedAway {
                code: close::OVERLOADED,
                reason: "UNAVAILABLE: too many connections waiting for their hello; say hello at once".into(),
            }),
        }
    }

    /// The first stream: `Request{hello}` → `Response{hello}`. A refusal is
    /// answered, then the caller closes the connection with the returned code.
    async fn hello<C: Connection>(&self, conn: &Arc<C>) -> std::result::Result<Arc<Client>, (u32, Error)> {
        let bad = |e: Error| (close::BAD_REQUEST, e);
        let (mut send, mut recv) = conn.accept_bi().await.ok_or_else(|| bad(Error::BadRequest("the connection ended before its hello".into())))?;
        let hello = match frame::read::<pb::Request, _>(&mut recv, MAX_CLIENT_FRAME).await {
            Ok(Some(req)) => match Method::try_from(req) {
                Ok(Method::Hello(h)) => Ok(h),
                Ok(other) => Err(Error::BadRequest(format!("the first request must be hello, not {}", other.name()))),
                Err(e) => Err(e),
            },
            Ok(None) => return Err(bad(Error::BadRequest("empty hello stream".into()))),
            Err(e) => {
                if matches!(e, FrameError::TooLarge { .. }) {
                    C::stop(&mut recv, close::BAD_REQUEST);
                }
                Err(Error::BadRequest(e.to_string()))
            }
        };
        // A bad hello is answered like any bad request, then closed.
        let hello = match hello {
            Ok(h) => h,
            Err(e) => {
                refuse::<C>(&mut send, &e).await;
                return Err(bad(e));
            }
        };
        let link: Arc<dyn push::Link> = conn.clone();
        let pusher = conn.clone();
        let client = Arc::new(Client {
            conn: self.pushes.registry().add(link, conn.remote(), hello.own_sends_key),
            device: hello.device.clone(),
            app_version: hello.client_version.clone(),
            requests_only: hello.requests_only,
            user: Mutex::new(None),
            signing_in: AtomicBool::new(false),
            resolved: Mutex::default(),
            start_push: Box::new(move |updates| {
                tokio::spawn(push_stream(pusher.clone(), updates));
            }),
        });
        let mut out = pb::HelloReply {
            protocol: model::PROTOCOL,
            node_id: self.node.raft().map(|r| r.id()).unwrap_or(0),
            server_version: env!("CARGO_PKG_VERSION").into(),
            server_time_ms: self.auth.clock().now_ms(),
            ..Default::default()
        };
        if let Some(token) = &hello.token {
            let started = Instant::now();
            let checked = match self.auth.check_token(token).await {
                Ok((group, hash, user, session)) => {
                    let authed = Authed { group, hash, user: user.clone(), session_id: session.id, checked_at: started };
                    if self.accept_check(&client, authed) {
                        // The session list shows the device's own node, not the leaders it writes to.
                        if !hello.requests_only && self.auth.clock().now_ms().saturating_sub(session.last_active_ms) > TOUCH_AFTER_MS {
                            let auth = self.auth.clone();
                            let addr = client.remote();
                            tokio::spawn(async move { auth.touch(group, hash, addr).await });
                        }
                        Ok((user, session.id))
                    } else {
                        Err(Error::from(AuthError::SessionRevoked))
                    }
                }
                Err(e) => Err(e),
            };
            match checked {
                Ok((user, session_id)) => {
                    out.authorized = true;
                    out.user = Some(super::methods::user_to_proto(&user));
                    out.session_id = session_id;
                }
                Err(e) => {
                    self.pushes.registry().remove(client.id(), self.auth.clock().now_ms());
                    refuse::<C>(&mut send, &e).await;
                    let code = match e.code() {
                        Code::SessionRevoked => close::SESSION_REVOKED,
                        Code::Unauthorized => close::UNAUTHORIZED,
                        _ => close::OVERLOADED,
                    };
                    return Err((code, e));
                }
            }
        }
        reply::<C>(&mut send, Ok(R::Hello(out))).await;
        if client.authed().is_some() {
            self.start_push(&client);
        }
        Ok(client)
    }

    /// One request stream: one frame in, one frame out.
    async fn stream<C: Connection>(&self, client: &Arc<Client>, mut send: C::Send, mut recv: C::Recv) {
        let req = match tokio::time::timeout(self.timeout(), frame::read::<pb::Request, _>(&mut recv, MAX_CLIENT_FRAME)).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                if matches!(e, FrameError::TooLarge { .. }) {
                    C::stop(&mut recv, close::BAD_REQUEST);
                }
                tracing::debug!(conn = client.id(), "bad request frame: {e}");
                reply::<C>(&mut send, Err(&Error::BadRequest(e.to_string()))).await;
                return;
            }
            Err(_) => {
                C::stop(&mut recv, close::BAD_REQUEST);
                reply::<C>(&mut send, Err(&Error::BadRequest("request not received in time".into()))).await;
                return;
            }
        };
        let result = self.request(client, req).await;
        reply::<C>(&mut send, result.as_ref().map(Clone::clone)).await;
    }

    /// Answers one request of a connection past its hello.
    pub async fn request(&self, client: &Arc<Client>, req: pb::Request) -> Result<R> {
        self.node.metrics().client_requests.inc();
        let m = Method::try_from(req)?;
        let name = m.name();
        let r = self.handle(client, m).await;
        if let Err(e) = &r
            && e.code() == Code::Internal
        {
            tracing::error!(conn = client.id(), method = name, "request failed: {e}");
        }
        r
    }

    /// Records a successful session check for `client` (see
    /// [`push::Registry::accept_check`]).
    pub(super) fn accept_check(&self, client: &Client, authed: Authed) -> bool {
        let user = authed.user.clone();
        if !self.pushes.registry().accept_check(&client.conn, authed.session()) {
            return false;
        }
        *client.user.lock().expect("client lock") = Some(user);
        true
    }

    /// Logs the connection out (it stays open).
    pub(super) fn log_out_client(&self, client: &Client) {
        self.pushes.registry().log_out(&client.conn);
        *client.user.lock().expect("client lock") = None;
        client.resolved.lock().expect("client lock").clear();
    }

    /// The connection's session, re-checked if its lease ran out.
    pub(super) async fn session(&self, client: &Arc<Client>) -> Result<Authed> {
        let me = client.authed().ok_or(AuthError::Unauthorized)?;
        if self.pushes.registry().lease_valid(&client.conn, Instant::now()) {
            return Ok(me);
        }
        let started = Instant::now();
        match self.auth.validate(me.group, vec![me.hash]).await?.pop() {
            Some(Validity::Live { user, session }) => {
                let fresh = Authed { user, session_id: session.id, checked_at: started, ..me };
                if self.accept_check(client, fresh.clone()) {
                    return Ok(fresh);
                }
            }
            Some(Validity::Unknown) | None => {
                self.log_out_client(client);
                return Err(AuthError::Unauthorized.into());
            }
            Some(Validity::Revoked) => {}
        }
        self.log_out_client(client);
        client.conn.close(close::SESSION_REVOKED, Code::SessionRevoked);
        Err(AuthError::SessionRevoked.into())
    }

    /// Re-checks every logged-in connection's session in bulk, one read per
    /// group, and closes those revoked (if their notice was missed).
    pub async fn sweep_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let now = Instant::now();
            let registry = self.pushes.registry();
            for (group, conns) in registry.stale(SWEEP, now) {
                for chunk in conns.chunks(1000) {
                    let sessions: Vec<Session> = chunk.iter().filter_map(|c| c.session()).collect();
                    if sessions.len() != chunk.len() {
                        continue; // a connection logged out meanwhile; next round
                    }
                    let Ok(verdicts) = self.auth.validate(group, sessions.iter().map(|s| s.hash).collect()).await else { continue };
                    for ((conn, s), v) in chunk.iter().zip(sessions).zip(verdicts) {
                        match v {
                            Validity::Live { .. } => {
                                registry.accept_check(conn, Session { checked_at: now, ..s });
                            }
                            _ => {
                                registry.log_out(conn);
                                conn.close(close::SESSION_REVOKED, Code::SessionRevoked);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Opens the push stream of a logged-in connection and subscribes it to
    /// the user's chats.
    pub(super) fn start_push(&self, client: &Arc<Client>) {
        if client.conn.has_push() || client.requests_only {
            return;
        }
        (client.start_push)(client.conn.open_push());
        let Some(me) = client.conn.user() else { return };
        let (chats, pushes, conn) = (self.chats.clone(), self.pushes.clone(), client.conn.clone());
        pushes.registry().begin_load(&conn);
        tokio::spawn(async move {
            match chats.member_chats(me).await {
                Ok(list) => pushes.registry().subscribe_loaded(&conn, &list),
                Err(e) => {
                    pushes.registry().subscribe_loaded(&conn, &[]);
                    tracing::warn!(conn = conn.id, "cannot load the user's chats for live updates: {e}");
                }
            }
        });
    }
}

/// Writes a connection's updates, in order, on the server's push stream
/// (the updates come encoded: one encoding for every recipient).
async fn push_stream<C: Connection>(conn: Arc<C>, mut updates: tokio::sync::mpsc::Receiver<Bytes>) {
    use tokio::io::AsyncWriteExt;
    let Some(mut stream) = conn.open_uni().await else { return };
    while let Some(update) = updates.recv().await {
        let head = (update.len() as u32).to_be_bytes();
        if stream.write_all(&head).await.is_err() || stream.write_all(&update).await.is_err() {
            return;
        }
    }
    C::finish(&mut stream);
}

/// Answers a refused hello and waits (briefly) until the client has read the
/// answer, so closing the connection next does not discard it.
async fn refuse<C: Connection>(send: &mut C::Send, e: &Error) {
    reply::<C>(send, Err(e)).await;
    let _ = tokio::time::timeout(REFUSAL_LINGER, C::stopped(send)).await;
}

async fn reply<C: Connection>(send: &mut C::Send, result: std::result::Result<R, &Error>) {
    let _ = frame::write(send, &response(result)).await;
    C::finish(send);
}

/// The response frame for a result. Every answer is cut to fit a frame
/// where it is made; one that still does not is a bug, answered as one
/// (never a frame the client refuses).
pub fn response(result: std::result::Result<R, &Error>) -> pb::Response {
    let result = match result {
        Ok(r) => r,
        Err(e) => R::Error(e.to_client()),
    };
    let response = pb::Response { result: Some(result) };
    let bytes = prost::Message::encoded_len(&response);
    if bytes > MAX_CLIENT_FRAME as usize {
        tracing::error!(bytes, "an answer over the frame limit");
        return pb::Response { result: Some(R::Error(Error::Io("an answer over the frame limit".into()).to_client())) };
    }
    response
}
