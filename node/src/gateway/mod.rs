//! The client front door: a QUIC endpoint on every node (TLS 1.3 with the
//! node's certificate, ALPN `courier/1`). It checks every request into a
//! domain value ([`model::Method`]), checks the session, and hands the work
//! to the services, which route it to the right group's leader.
//!
//! Limits per connection (streams in flight, bytes buffered, idle time, time
//! to send a request) keep one slow or hostile client from stalling others.

pub mod doors;
pub mod model;
pub mod registry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_proto::client as pb;
use courier_proto::client::response::Result as R;
use courier_proto::frame::{self, FrameError, MAX_CLIENT_FRAME};
use quinn::VarInt;
use tokio::sync::{mpsc, watch};

use crate::auth::{Auth, AuthError, Caller, NewAuthorization, Revoke, Validity};
use crate::cluster::Node;
use crate::config::{GatewayConfig, NodeConfig};
use crate::error::{Error, Result};
use crate::messaging::{Messaging, model as chat_model};
use model::Method;
use registry::{Authed, ConnCtx, close};

pub const ALPN: &[u8] = b"courier/1";
/// How often every logged-in connection's session is re-checked in bulk (a
/// safety net behind the revocation notices).
const SWEEP: Duration = Duration::from_secs(10);
/// Sessions whose last activity is older than this get it recorded again.
const TOUCH_AFTER_MS: u64 = 60_000;

pub struct Gateway {
    node: Node,
    auth: Arc<Auth>,
    chats: Arc<Messaging>,
    media: Arc<crate::media::Media>,
    cfg: GatewayConfig,
    /// `resolve_phone` per user (`limits.resolve_phone_per_minute`).
    resolve_limit: std::sync::Mutex<crate::limit::RateLimiter<u64>>,
    /// Connections per address and the hello-less budget.
    doors: Arc<doors::Doors>,
}

/// The QUIC endpoint on `socket` (bound at start-up so a port conflict shows at once).
pub fn endpoint(cfg: &NodeConfig, socket: std::net::UdpSocket) -> Result<quinn::Endpoint> {
    let tls = crate::tls::client_facing_config(&cfg.tls, ALPN)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| Error::Cert(format!("QUIC TLS: {e}")))?;
    let g = &cfg.gateway;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(g.max_streams_per_connection))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(MAX_CLIENT_FRAME + 4096))
        .receive_window(VarInt::from_u32(g.connection_window_bytes))
        .send_window(u64::from(g.connection_window_bytes))
        .max_idle_timeout(Some(Duration::from_secs(g.idle_timeout_secs).try_into().map_err(|_| Error::Config("gateway.idle_timeout_secs too large".into()))?));
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));
    socket.set_nonblocking(true).map_err(|e| Error::Io(format!("client socket: {e}")))?;
    let runtime = quinn::default_runtime().ok_or_else(|| Error::Io("no async runtime for QUIC".into()))?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server), socket, runtime).map_err(|e| Error::Io(format!("client endpoint: {e}")))
}

impl Gateway {
    pub fn new(node: Node, auth: Arc<Auth>, chats: Arc<Messaging>, media: Arc<crate::media::Media>, cfg: GatewayConfig) -> Arc<Gateway> {
        let resolve_limit = std::sync::Mutex::new(crate::limit::RateLimiter::new(node.config().limits.resolve_phone_per_minute));
        let doors = doors::Doors::new(cfg.max_connections_per_address, cfg.max_hello_less);
        Arc::new(Gateway { node, auth, chats, media, cfg, resolve_limit, doors })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.request_timeout_secs)
    }

    /// Accepts connections until `stop`, then closes them all.
    pub async fn serve(self: Arc<Self>, endpoint: quinn::Endpoint, mut stop: watch::Receiver<bool>) {
        let sweeper = tokio::spawn(self.clone().sweep_loop());
        loop {
            tokio::select! {
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    if self.node.conns().len() >= self.cfg.max_connections {
                        tracing::warn!(remote = %incoming.remote_address(), "refusing a connection: gateway.max_connections reached");
                        incoming.refuse();
                        continue;
                    }
                    let gw = self.clone();
                    tokio::spawn(async move { gw.connection(incoming).await });
                }
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        sweeper.abort();
        self.node.conns().close_all();
        let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    }

    async fn connection(self: Arc<Self>, incoming: quinn::Incoming) {
        let remote = incoming.remote_address();
        let address_slot = self.doors.open(remote.ip());
        // From the first packet to the hello: a place among the hello-less
        // connections (the oldest goes when a new one needs it), and a
        // deadline of its own.
        let waiting = self.doors.wait_for_hello();
        let hello_by = tokio::time::Instant::now() + Duration::from_secs(self.cfg.hello_timeout_secs);
        let conn = match incoming.accept() {
            Ok(connecting) => match tokio::time::timeout_at(hello_by, connecting).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return tracing::debug!(%remote, "client handshake failed: {e}"),
                Err(_) => return tracing::debug!(%remote, "client handshake timed out"),
            },
            Err(e) => return tracing::debug!(%remote, "cannot accept a client: {e}"),
        };
        let Some(_address_slot) = address_slot else {
            // Told why (a refused handshake would only say "refused").
            let why = format!("FLOOD_WAIT: too many connections from {} (gateway.max_connections_per_address = {})", remote.ip(), self.cfg.max_connections_per_address);
            conn.close(close::OVERLOADED.into(), why.as_bytes());
            return;
        };
        let alpn = conn
            .handshake_data()
            .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|h| h.protocol);
        if alpn.as_deref() != Some(ALPN) {
            conn.close(close::BAD_REQUEST.into(), b"BAD_REQUEST: ALPN courier/1 required");
            return;
        }
        let hello = tokio::select! {
            r = tokio::time::timeout_at(hello_by, self.hello(&conn)) => r,
            _ = waiting.evicted.notified() => {
                conn.close(close::OVERLOADED.into(), b"UNAVAILABLE: too many connections waiting for their hello; say hello at once");
                return;
            }
        };
        drop(waiting);
        let ctx = match hello {
            Ok(Ok(ctx)) => ctx,
            Ok(Err((code, e))) => {
                tracing::debug!(%remote, "hello refused: {e}");
                conn.close(code.into(), e.code().as_bytes());
                return;
            }
            Err(_) => {
                conn.close(close::BAD_REQUEST.into(), b"BAD_REQUEST: no hello in time");
                return;
            }
        };
        let metrics = self.node.metrics().clone();
        metrics.client_connections.inc();
        metrics.client_connections_opened.inc();
        loop {
            match conn.accept_bi().await {
                Ok((send, recv)) => {
                    let gw = self.clone();
                    let ctx = ctx.clone();
                    tokio::spawn(async move { gw.stream(&ctx, send, recv).await });
                }
                Err(e) => {
                    tracing::debug!(%remote, conn = ctx.id, "client connection ended: {e}");
                    break;
                }
            }
        }
        self.node.conns().remove(ctx.id);
        metrics.client_connections.dec();
    }

    /// The first stream: `Request{hello}` → `Response{hello}`. A refusal is
    /// answered, then the caller closes the connection with the returned code.
    async fn hello(&self, conn: &quinn::Connection) -> std::result::Result<Arc<ConnCtx>, (u32, Error)> {
        let bad = |e: Error| (close::BAD_REQUEST, e);
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| bad(Error::Io(e.to_string())))?;
        let req = match frame::read::<pb::Request, _>(&mut recv, MAX_CLIENT_FRAME).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(bad(Error::BadRequest("empty hello stream".into()))),
            Err(e) => {
                // Answered like any bad hello, then closed.
                if matches!(e, FrameError::TooLarge { .. }) {
                    let _ = recv.stop(VarInt::from_u32(close::BAD_REQUEST));
                }
                let e = Error::BadRequest(e.to_string());
                refuse(&mut send, &e).await;
                return Err(bad(e));
            }
        };
        let hello = match Method::try_from(req) {
            Ok(Method::Hello(h)) => h,
            Ok(other) => {
                let e = Error::BadRequest(format!("the first request must be hello, not {}", other.name()));
                refuse(&mut send, &e).await;
                return Err(bad(e));
            }
            Err(e) => {
                refuse(&mut send, &e).await;
                return Err(bad(e));
            }
        };
        let ctx = self.node.conns().add(conn.clone(), &hello);
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
                    if self.node.conns().accept_check(&ctx, authed) {
                        // The session list shows the device's own node, not the leaders it writes to.
                        if !hello.requests_only && self.auth.clock().now_ms().saturating_sub(session.last_active_ms) > TOUCH_AFTER_MS {
                            let auth = self.auth.clone();
                            let addr = ctx.remote;
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
                    out.user = Some(user_to_proto(&user));
                    out.session_id = session_id;
                }
                Err(e) => {
                    self.node.conns().remove(ctx.id);
                    refuse(&mut send, &e).await;
                    let code = match e.code() {
                        "SESSION_REVOKED" => close::SESSION_REVOKED,
                        "UNAUTHORIZED" => close::UNAUTHORIZED,
                        _ => close::OVERLOADED,
                    };
                    return Err((code, e));
                }
            }
        }
        reply(&mut send, Ok(R::Hello(out))).await;
        if ctx.authed().is_some() {
            self.start_push(&ctx);
        }
        Ok(ctx)
    }

    /// One request stream: one frame in, one frame out.
    async fn stream(&self, ctx: &Arc<ConnCtx>, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let req = match tokio::time::timeout(self.timeout(), frame::read::<pb::Request, _>(&mut recv, MAX_CLIENT_FRAME)).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                if matches!(e, FrameError::TooLarge { .. }) {
                    let _ = recv.stop(VarInt::from_u32(close::BAD_REQUEST));
                }
                tracing::debug!(conn = ctx.id, "bad request frame: {e}");
                reply(&mut send, Err(&Error::BadRequest(e.to_string()))).await;
                return;
            }
            Err(_) => {
                let _ = recv.stop(VarInt::from_u32(close::BAD_REQUEST));
                reply(&mut send, Err(&Error::BadRequest("request not received in time".into()))).await;
                return;
            }
        };
        self.node.metrics().client_requests.inc();
        let result = match Method::try_from(req) {
            Ok(m) => {
                let name = m.name();
                let r = self.handle(ctx, m).await;
                if let Err(e) = &r
                    && e.code() == "INTERNAL"
                {
                    tracing::error!(conn = ctx.id, method = name, "request failed: {e}");
                }
                r
            }
            Err(e) => Err(e),
        };
        reply(&mut send, result.as_ref().map(Clone::clone)).await;
    }

    async fn handle(&self, ctx: &Arc<ConnCtx>, m: Method) -> Result<R> {
        let caller = Caller { addr: ctx.remote, device: ctx.device.clone(), app_version: ctx.app_version.clone() };
        match m {
            Method::Hello(_) => Err(Error::BadRequest("hello comes once, on the first stream".into())),
            Method::Ping(nonce) => Ok(R::Pong(pb::Pong { nonce })),
            Method::SendCode { phone } => {
                let sent = self.auth.send_code(&phone, &caller).await?;
                Ok(R::SentCode(pb::SentCode {
                    phone_code_hash: model::code_id_string(sent.code_id),
                    timeout_secs: sent.ttl_secs,
                    delivery: sent.delivery.into(),
                }))
            }
            // One account per connection (as one auth key per connection in
            // Telegram): refused before anything is proposed.
            Method::SignIn { .. } | Method::SignUp { .. } if !ctx.begin_sign_in() => Err(AuthError::AlreadyLoggedIn.into()),
            Method::SignIn { phone, code_id, code } => {
                let r = self.auth.sign_in(&phone, code_id, &code, &caller).await.map(|a| self.logged_in(ctx, a));
                ctx.end_sign_in();
                r
            }
            Method::SignUp { phone, code_id, first_name, last_name } => {
                let r = self.auth.sign_up(&phone, code_id, &first_name, &last_name, &caller).await.map(|a| self.logged_in(ctx, a));
                ctx.end_sign_in();
                r
            }
            m => {
                let me = self.session(ctx).await?;
                match m {
                    Method::GetSelf => Ok(R::User(user_to_proto(&me.user))),
                    Method::GetRoutes => {
                        let raft = self.node.raft()?;
                        let routes = raft
                            .leader_client_addrs()
                            .into_iter()
                            .map(|(group, leader)| {
                                let (node_id, addr) = leader.unwrap_or_default();
                                pb::Route { group, addr, node_id }
                            })
                            .collect();
                        Ok(R::Routes(pb::Routes { group_mask: crate::messaging::logic::CHAT_GROUP_MASK, routes }))
                    }
                    Method::ResolvePhone { phone } => {
                        let now_ms = self.auth.clock().now_ms();
                        let (budget, live) = (self.node.config().limits.resolve_phone_per_minute, self.node.live_nodes());
                        if let Err(secs) = self.resolve_limit.lock().expect("limiter lock").check_share(&me.user.id, now_ms, budget, live) {
                            return Err(AuthError::FloodWait { secs }.into());
                        }
                        match self.auth.user_by_phone(&phone).await? {
                            Some(u) => {
                                ctx.resolved(u.id);
                                // The caller gave this very number: it may be shown.
                                Ok(R::User(user_to_proto(&u)))
                            }
                            None => Err(Error::BadRequest("no account has this phone number".into())),
                        }
                    }
                    Method::GetUsers(ids) => {
                        // Accounts this connection resolved need no chat lists read.
                        let (mut visible, rest): (Vec<u64>, Vec<u64>) = ids.iter().partition(|id| ctx.has_resolved(**id));
                        visible.sort_unstable();
                        visible.dedup();
                        visible.extend(self.chats.visible_users(me.user.id, &rest).await?);
                        let found = futures::future::join_all(visible.iter().map(|id| self.auth.user_by_id(*id))).await;
                        let (online, seen) = self.node.presence(&visible).await;
                        let mut users = Vec::new();
                        for u in found {
                            users.extend(u?.map(|u| pb::User {
                                online: online.contains(&u.id),
                                last_seen_ms: seen.get(&u.id).copied().unwrap_or(0),
                                // A phone number is shown to its owner only.
                                phone: if u.id == me.user.id { u.phone.clone() } else { String::new() },
                                ..user_to_proto(&u)
                            }));
                        }
                        Ok(R::Users(pb::Users { users }))
                    }
                    Method::GetSessions => {
                        let mut list = self.auth.sessions(me.group, me.hash).await?;
                        // The current session first, then the most recently
                        // active, as many as fit an answer (terminating the
                        // others reaches every one).
                        list.sort_by_key(|s| (s.id != me.session_id, std::cmp::Reverse(s.last_active_ms)));
                        let mut budget = crate::messaging::logic::Budget::new(2 * crate::messaging::logic::REPLY_BYTES);
                        list.retain(|s| budget.take(64 + s.device.len() + s.app_version.len() + s.address.len()));
                        Ok(R::Sessions(pb::Sessions {
                            sessions: list
                                .into_iter()
                                .map(|s| pb::Session {
                                    id: s.id,
                                    current: s.id == me.session_id,
                                    device: s.device,
                                    app_version: s.app_version,
                                    node_id: s.node_id,
                                    address: s.address,
                                    created_ms: s.created_ms,
                                    last_active_ms: s.last_active_ms,
                                })
                                .collect(),
                        }))
                    }
                    Method::TerminateSession(id) if id == me.session_id => self.log_out(ctx, &me).await,
                    Method::TerminateSession(id) => {
                        self.auth.revoke(me.group, me.hash, Revoke::One(id)).await?;
                        Ok(R::Done(pb::Done {}))
                    }
                    Method::TerminateOthers => {
                        self.auth.revoke(me.group, me.hash, Revoke::Others).await?;
                        Ok(R::Done(pb::Done {}))
                    }
                    Method::LogOut => self.log_out(ctx, &me).await,
                    Method::UploadPart { upload, part, part_size, bytes } => {
                        self.media.upload_part(me.user.id, upload, part, part_size, bytes).await?;
                        Ok(R::Done(pb::Done {}))
                    }
                    Method::FinishUpload { upload, parts, part_size, size, sha256, name, mime } => {
                        let f = self.media.finish(me.user.id, upload, parts, part_size, size, sha256, name, mime).await?;
                        Ok(R::File(file_to_proto(&f)))
                    }
                    Method::GetFile { file, offset, limit, via, thumb } => {
                        // Not the uploader: the message named must carry the file, in a chat the caller is in.
                        let shared = match via {
                            Some((chat, msg)) => match self.chats.attachment(me.user.id, chat, msg).await? {
                                Some(a) if a.file == file => true,
                                _ => return Err(crate::media::MediaError::NotFound.into()),
                            },
                            None => false,
                        };
                        let (f, bytes) = self.media.read_file(me.user.id, file, shared, thumb, offset, limit).await?;
                        Ok(R::FileBytes(pb::FileBytes { file: Some(file_to_proto(&f)), offset, bytes }))
                    }
                    Method::SendMessage { chat, random_id, text, reply_to, media: Some(m) } => {
                        // Only your own uploads; a file you received travels by forwarding its message.
                        let f = self.media.file(me.user.id, m.file, false).await?;
                        if m.kind == crate::messaging::logic::MediaKind::Photo && f.thumbs.is_empty() {
                            return Err(Error::BadRequest("a photo must be an image (JPEG, PNG, GIF or WebP); send it as a document".into()));
                        }
                        let a = crate::messaging::logic::Attachment { file: f.id, kind: m.kind, name: f.name, mime: f.mime, size: f.size, sha256: f.sha256, thumbs: f.thumbs, duration_secs: m.duration_secs };
                        let origin = sender(ctx, &me);
                        Ok(sent(chat, self.chats.send_media(me.user.id, chat, random_id, text, reply_to, a, origin).await?, origin))
                    }
                    Method::SendMessage { chat, random_id, text, reply_to, media: None } => {
                        let origin = sender(ctx, &me);
                        Ok(sent(chat, self.chats.send(me.user.id, chat, random_id, text, reply_to, origin).await?, origin))
                    }
                    m => self.chat_method(me.user.id, m).await,
                }
            }
        }
    }

    /// The messaging methods, for user `me`.
    async fn chat_method(&self, me: u64, m: Method) -> Result<R> {
        let c = &self.chats;
        let chat = |c: crate::messaging::Chat| Ok(R::Chat(chat_model::chat(&c)));
        match m {
            Method::CreateChat { kind, title, members } => chat(c.create(me, kind, title, members).await?),
            Method::Invite { chat: id, users } => chat(c.invite(me, id, users).await?),
            Method::RemoveMember { chat: id, user } => chat(c.remove(me, id, user).await?),
            Method::SetTitle { chat: id, title } => chat(c.set_title(me, id, title).await?),
            Method::SetAdmin { chat: id, user, admin } => chat(c.set_admin(me, id, user, admin).await?),
            Method::EditMessage { chat: id, id: msg, text } => Ok(R::Message(chat_model::message(id, &c.edit(me, id, msg, text).await?))),
            Method::DeleteMessages { chat: id, ids } => {
                c.delete(me, id, ids).await?;
                Ok(R::Done(pb::Done {}))
            }
            Method::DeleteForMe { chat: id, ids } => {
                c.delete_for_me(me, id, ids).await?;
                Ok(R::Done(pb::Done {}))
            }
            Method::ReadHistory { chat: id, max_id } => {
                c.read_history(me, id, max_id).await?;
                Ok(R::Done(pb::Done {}))
            }
            Method::GetHistory { chat: id, before, after, limit } => {
                let (list, more) = c.history(me, id, before, after, limit).await?;
                Ok(R::Messages(pb::Messages { messages: list.iter().map(|m| chat_model::message(id, m)).collect(), more }))
            }
            Method::GetMembers { chat: id, after, limit } => {
                let list = c.members(me, id, after, limit).await?;
                Ok(R::Members(pb::Members { members: list.iter().map(|(u, m)| chat_model::member(*u, m)).collect() }))
            }
            Method::Forward { chat: id, from_chat, ids, random_id } => Ok(R::Message(chat_model::message(id, &c.forward(me, id, from_chat, ids, random_id).await?))),
            Method::Pin { chat: id, id: msg } => chat(c.pin(me, id, msg).await?),
            Method::React { chat: id, id: msg, emoji } => Ok(R::Message(chat_model::message(id, &c.react(me, id, msg, emoji).await?))),
            Method::Search { chat: id, text, limit, before } => {
                let (list, more) = c.search(me, id, text, limit, before).await?;
                Ok(R::Messages(pb::Messages { messages: list.iter().map(|m| chat_model::message(id, m)).collect(), more }))
            }
            Method::GetReactions { chat: id, id: msg, after, limit } => {
                let list = c.reactors(me, id, msg, after, limit).await?;
                Ok(R::Reactors(pb::Reactors { reactors: list.into_iter().map(|(user_id, emoji)| pb::Reactor { user_id, emoji }).collect() }))
            }
            Method::Typing { chat: id } => {
                c.typing(me, id).await?;
                Ok(R::Done(pb::Done {}))
            }
            Method::BlockUser { user, blocked } => {
                c.block(me, user, blocked).await?;
                Ok(R::Done(pb::Done {}))
            }
            Method::GetDialogs { before, limit } => {
                let (list, more) = c.dialogs(me, before, limit as usize).await?;
                Ok(R::Dialogs(pb::Dialogs { dialogs: list.iter().map(chat_model::dialog).collect(), more }))
            }
            Method::GetDifference(states) => {
                let (list, more) = c.difference(me, states).await?;
                Ok(R::Difference(pb::Difference { chats: chat_model::differences(&list), more }))
            }
            other => Err(Error::BadRequest(format!("unexpected method {}", other.name()))),
        }
    }

    /// Ends this connection's session; the connection stays open, logged out.
    async fn log_out(&self, ctx: &Arc<ConnCtx>, me: &Authed) -> Result<R> {
        self.node.conns().log_out(ctx);
        self.auth.revoke(me.group, me.hash, Revoke::Current).await?;
        Ok(R::Done(pb::Done {}))
    }

    /// Ends a sign-in begun with `ConnCtx::begin_sign_in`: the connection
    /// is logged in with the new session.
    fn logged_in(&self, ctx: &Arc<ConnCtx>, a: NewAuthorization) -> R {
        let group = crate::auth::token::token_group(&a.token, u32::MAX).unwrap_or(0);
        let authed = Authed { group, hash: crate::auth::token::token_hash(&a.token), user: a.user.clone(), session_id: a.session_id, checked_at: Instant::now() };
        if self.node.conns().accept_check(ctx, authed) {
            self.start_push(ctx);
        }
        R::Authorization(pb::Authorization { user: Some(user_to_proto(&a.user)), session_token: a.token, session_id: a.session_id })
    }

    /// The connection's session, re-checked if its lease ran out.
    async fn session(&self, ctx: &Arc<ConnCtx>) -> Result<Authed> {
        let me = ctx.authed().ok_or(AuthError::Unauthorized)?;
        if ctx.lease_valid(Instant::now()) {
            return Ok(me);
        }
        let started = Instant::now();
        match self.auth.validate(me.group, vec![me.hash]).await?.pop() {
            Some(Validity::Live { user, session }) => {
                let fresh = Authed { user, session_id: session.id, checked_at: started, ..me };
                if self.node.conns().accept_check(ctx, fresh.clone()) {
                    return Ok(fresh);
                }
            }
            Some(Validity::Unknown) | None => {
                self.node.conns().log_out(ctx);
                return Err(AuthError::Unauthorized.into());
            }
            Some(Validity::Revoked) => {}
        }
        self.node.conns().log_out(ctx);
        ctx.conn.close(close::SESSION_REVOKED.into(), b"SESSION_REVOKED");
        Err(AuthError::SessionRevoked.into())
    }

    /// Re-checks every logged-in connection's session in bulk, one read per
    /// group, and closes those revoked (if their notice was missed).
    async fn sweep_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Instant::now();
            for (group, conns) in self.node.conns().stale(SWEEP, now) {
                for chunk in conns.chunks(1000) {
                    let hashes = chunk.iter().filter_map(|c| c.authed().map(|a| a.hash)).collect::<Vec<_>>();
                    if hashes.len() != chunk.len() {
                        continue; // a connection logged out meanwhile; next round
                    }
                    let Ok(verdicts) = self.auth.validate(group, hashes).await else { continue };
                    for (ctx, v) in chunk.iter().zip(verdicts) {
                        match (v, ctx.authed()) {
                            (Validity::Live { .. }, Some(a)) => {
                                self.node.conns().accept_check(ctx, Authed { checked_at: now, ..a });
                            }
                            (_, Some(_)) => {
                                self.node.conns().log_out(ctx);
                                ctx.conn.close(close::SESSION_REVOKED.into(), b"SESSION_REVOKED");
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
}

impl Gateway {
    /// Opens the push stream of a logged-in connection and subscribes it to
    /// the user's chats.
    fn start_push(&self, ctx: &Arc<ConnCtx>) {
        if ctx.has_push() || ctx.requests_only {
            return;
        }
        open_push(ctx);
        let (Some(me), chats, registry, ctx) = (ctx.authed(), self.chats.clone(), self.node.conns().clone(), ctx.clone()) else { return };
        registry.begin_load(&ctx);
        tokio::spawn(async move {
            match chats.member_chats(me.user.id).await {
                Ok(list) => registry.subscribe_loaded(&ctx, &list),
                Err(e) => {
                    registry.subscribe_loaded(&ctx, &[]);
                    tracing::warn!(conn = ctx.id, "cannot load the user's chats for live updates: {e}");
                }
            }
        });
    }
}

/// The client behind a send, when it applies its own sends from the reply.
fn sender(ctx: &ConnCtx, me: &Authed) -> Option<registry::Origin> {
    (ctx.own_sends_key != 0).then_some(registry::Origin { user: me.user.id, session: me.session_id, key: ctx.own_sends_key })
}

/// A send's answer: with its events for a client that applies them itself
/// (it is not pushed them), else the message alone.
fn sent(chat: u64, (m, events): (crate::messaging::Message, Vec<crate::messaging::Event>), origin: Option<registry::Origin>) -> R {
    if origin.is_none() {
        return R::Message(chat_model::message(chat, &m));
    }
    let events = events.iter().map(|e| chat_model::event(chat, e, std::slice::from_ref(&m))).collect();
    R::Sent(pb::Sent { message: Some(chat_model::message(chat, &m)), events })
}

/// Opens the server's push stream (the caller checked it is not open yet).
fn open_push(ctx: &Arc<ConnCtx>) {
    let (tx, mut rx) = mpsc::channel::<pb::Update>(registry::PUSH_QUEUE);
    ctx.set_push(tx);
    let conn = ctx.conn.clone();
    tokio::spawn(async move {
        let Ok(mut stream) = conn.open_uni().await else { return };
        while let Some(update) = rx.recv().await {
            if frame::write(&mut stream, &update).await.is_err() {
                return;
            }
        }
        let _ = stream.finish();
    });
}

/// Answers a refused hello and waits (briefly) until the client has read the
/// answer, so closing the connection next does not discard it.
async fn refuse(send: &mut quinn::SendStream, e: &Error) {
    reply(send, Err(e)).await;
    let _ = tokio::time::timeout(REFUSAL_LINGER, send.stopped()).await;
}

/// How long a refused hello waits for its answer to be read.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

async fn reply(send: &mut quinn::SendStream, result: std::result::Result<R, &Error>) {
    let result = match result {
        Ok(r) => r,
        Err(e) => R::Error(e.to_client()),
    };
    let mut response = pb::Response { result: Some(result) };
    // Every answer is cut to fit a frame where it is made; one that still
    // does not is a bug, answered as one (never a frame the client refuses).
    let bytes = prost::Message::encoded_len(&response);
    if bytes > MAX_CLIENT_FRAME as usize {
        tracing::error!(bytes, "an answer over the frame limit");
        response = pb::Response { result: Some(R::Error(Error::Io("an answer over the frame limit".into()).to_client())) };
    }
    let _ = frame::write(send, &response).await;
    let _ = send.finish();
}

fn user_to_proto(u: &crate::auth::User) -> pb::User {
    pb::User { id: u.id, phone: u.phone.clone(), first_name: u.first_name.clone(), last_name: u.last_name.clone(), ..Default::default() }
}

fn file_to_proto(f: &crate::media::File) -> pb::File {
    pb::File {
        id: f.id,
        size: f.size,
        sha256: f.sha256.to_vec(),
        name: f.name.clone(),
        mime: f.mime.clone(),
        owner: f.owner,
        date_ms: f.created_ms,
        thumbs: chat_model::thumbs(&f.thumbs),
    }
}
