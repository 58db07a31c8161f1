//! The live client connections of this node, and the notices other nodes send
//! about them (a session revoked, an update for a user).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier_proto::client as pb;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::auth::{SESSION_LEASE, TokenHash, User};

/// QUIC application close codes; the reason bytes carry the brief's code.
pub mod close {
    pub const NORMAL: u32 = 0;
    pub const SESSION_REVOKED: u32 = 1;
    pub const BAD_REQUEST: u32 = 2;
    pub const UNAUTHORIZED: u32 = 3;
    pub const OVERLOADED: u32 = 4;
    pub const SLOW_CONSUMER: u32 = 5;
    pub const SHUTTING_DOWN: u32 = 6;
}

/// Updates a connection may have queued before it counts as too slow (it is
/// closed and catches up by sync when it comes back).
pub const PUSH_QUEUE: usize = 256;

/// A notice from one node to all (`Peer.Notify`), versioned by the raft codec.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Notice {
    /// Close every connection of these sessions.
    Revoked(Vec<TokenHash>),
    /// A login code as a service message to the user's logged-in devices.
    LoginCode { user_id: u64, phone: String, code: String, device: String },
    /// Committed changes of a chat, for its members' connected devices.
    Chat { chat: u64, events: Vec<crate::messaging::Event>, message: Option<crate::messaging::Message> },
    /// A member is typing in a chat (ephemeral).
    Typing { chat: u64, user: u64, until_ms: u64 },
    // Notices cross the wire: new ones at the end.
    /// The user's read position in a channel moved (no event of the chat):
    /// for their own devices.
    OwnRead { chat: u64, user: u64, max_id: u64 },
}

/// Who made a change, when the client applies its own changes from their
/// replies: its connections (same session, same `Hello.own_sends_key`) skip
/// the push. It travels as a trailer after the notice's encoding, so nodes
/// that do not know it decode the notice as before (and push it).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Origin {
    pub user: u64,
    /// Session ids count per user.
    pub session: u64,
    pub key: u64,
}

/// The session a connection is logged in with.
#[derive(Clone, Debug)]
pub struct Authed {
    pub group: u32,
    pub hash: TokenHash,
    pub user: User,
    pub session_id: u64,
    /// When the check that accepted the session started.
    pub checked_at: Instant,
}

/// One client connection.
pub struct ConnCtx {
    pub id: u64,
    pub conn: quinn::Connection,
    pub remote: SocketAddr,
    pub device: String,
    pub app_version: String,
    /// A device's extra connection for requests only (`Hello.requests_only`):
    /// it gets no push stream.
    pub requests_only: bool,
    /// `Hello.own_sends_key` (0: the client wants its own sends pushed).
    pub own_sends_key: u64,
    auth: Mutex<Option<Authed>>,
    push: Mutex<Option<mpsc::Sender<pb::Update>>>,
    /// The chats whose events this connection receives.
    chats: Mutex<HashSet<u64>>,
    /// While the user's chat list is being read for the subscriptions: the
    /// chats the user left meanwhile (not to be subscribed from that read).
    loading: Mutex<Option<Vec<u64>>>,
    /// A sign-in or sign-up is running on this connection (one at a time,
    /// and none once it is logged in: one account per connection).
    signing_in: std::sync::atomic::AtomicBool,
    /// Accounts this connection found by phone number (`resolve_phone`):
    /// `get_users` answers them too. Bounded by [`RESOLVED_MAX`].
    resolved: Mutex<HashSet<u64>>,
}

/// Accounts a connection remembers having resolved by phone.
pub const RESOLVED_MAX: usize = 1_000;

impl ConnCtx {
    pub fn authed(&self) -> Option<Authed> {
        self.auth.lock().expect("conn lock").clone()
    }

    /// Whether the session check is recent enough to serve a request on.
    pub fn lease_valid(&self, now: Instant) -> bool {
        self.auth.lock().expect("conn lock").as_ref().is_some_and(|a| now.duration_since(a.checked_at) < SESSION_LEASE)
    }

    pub fn has_push(&self) -> bool {
        self.push.lock().expect("conn lock").is_some()
    }

    pub fn set_push(&self, tx: mpsc::Sender<pb::Update>) {
        *self.push.lock().expect("conn lock") = Some(tx);
    }

    /// Starts a sign-in on a logged-out connection: `false` when it is
    /// logged in or another sign-in runs (one account per connection).
    /// [`ConnCtx::end_sign_in`] ends it.
    pub fn begin_sign_in(&self) -> bool {
        self.authed().is_none() && !self.signing_in.swap(true, Ordering::AcqRel)
    }

    pub fn end_sign_in(&self) {
        self.signing_in.store(false, Ordering::Release);
    }

    /// Remembers an account found by phone on this connection.
    pub fn resolved(&self, user: u64) {
        let mut r = self.resolved.lock().expect("conn lock");
        if r.len() < RESOLVED_MAX {
            r.insert(user);
        }
    }

    /// Whether this connection resolved `user` by phone.
    pub fn has_resolved(&self, user: u64) -> bool {
        self.resolved.lock().expect("conn lock").contains(&user)
    }

    /// Forgets the session; no more pushes (the registry drops the
    /// subscriptions: [`Registry::log_out`]).
    fn forget_session(&self) {
        *self.auth.lock().expect("conn lock") = None;
        *self.push.lock().expect("conn lock") = None;
        self.resolved.lock().expect("conn lock").clear();
    }

    /// Whether the change came from this connection's client itself.
    fn made(&self, origin: Option<Origin>) -> bool {
        origin.is_some_and(|o| self.own_sends_key != 0 && o.key == self.own_sends_key && self.authed().is_some_and(|a| (a.user.id, a.session_id) == (o.user, o.session)))
    }

    fn push(&self, update: pb::Update) {
        let tx = self.push.lock().expect("conn lock").clone();
        if let Some(tx) = tx
            && let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(update)
        {
            tracing::info!(conn = self.id, "closing a connection that does not read its updates");
            self.conn.close(close::SLOW_CONSUMER.into(), b"SLOW_CONSUMER");
        }
    }
}

#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<u64, Arc<ConnCtx>>,
    /// Sessions revoked recently, kept for a lease so that a check that was
    /// in flight when the notice came cannot admit them afterwards.
    revoked: HashMap<TokenHash, Instant>,
    /// Chat id → the connections that receive its events.
    subs: HashMap<u64, HashSet<u64>>,
    /// When each user's last logged-in connection here ended (ms since the epoch).
    last_seen: HashMap<u64, u64>,
}

fn unsubscribe(subs: &mut HashMap<u64, HashSet<u64>>, chat: u64, conn: u64) {
    if let Some(set) = subs.get_mut(&chat) {
        set.remove(&conn);
        if set.is_empty() {
            subs.remove(&chat);
        }
    }
}

impl Registry {
    pub fn add(&self, conn: quinn::Connection, hello: &super::model::Hello) -> Arc<ConnCtx> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let remote = conn.remote_address();
        let ctx = Arc::new(ConnCtx {
            id,
            conn,
            remote,
            device: hello.device.clone(),
            app_version: hello.client_version.clone(),
            requests_only: hello.requests_only,
            own_sends_key: hello.own_sends_key,
            auth: Mutex::new(None),
            push: Mutex::new(None),
            chats: Default::default(),
            loading: Mutex::new(None),
            signing_in: Default::default(),
            resolved: Default::default(),
        });
        self.inner.lock().expect("registry lock").conns.insert(id, ctx.clone());
        ctx
    }

    pub fn remove(&self, id: u64) {
        let mut inner = self.inner.lock().expect("registry lock");
        if let Some(ctx) = inner.conns.remove(&id) {
            for chat in ctx.chats.lock().expect("conn lock").drain() {
                unsubscribe(&mut inner.subs, chat, id);
            }
            if let Some(a) = ctx.authed() {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                inner.last_seen.insert(a.user.id, now);
            }
        }
    }

    /// Which of `users` have a logged-in connection here, and when the
    /// others last had one.
    pub fn presence(&self, users: &[u64]) -> (Vec<u64>, Vec<(u64, u64)>) {
        let inner = self.inner.lock().expect("registry lock");
        let here: HashSet<u64> = inner.conns.values().filter_map(|c| c.authed().map(|a| a.user.id)).collect();
        let online: Vec<u64> = users.iter().copied().filter(|u| here.contains(u)).collect();
        let seen = users.iter().filter(|u| !here.contains(u)).filter_map(|u| inner.last_seen.get(u).map(|t| (*u, *t))).collect();
        (online, seen)
    }

    /// Starts delivering these chats' events to `ctx`.
    pub fn subscribe(&self, ctx: &ConnCtx, chats: &[u64]) {
        let mut inner = self.inner.lock().expect("registry lock");
        if !inner.conns.contains_key(&ctx.id) || ctx.authed().is_none() {
            return; // gone or logged out meanwhile
        }
        let mut mine = ctx.chats.lock().expect("conn lock");
        for c in chats {
            mine.insert(*c);
            inner.subs.entry(*c).or_default().insert(ctx.id);
        }
    }

    /// The user's chat list is about to be read for `ctx`'s subscriptions:
    /// from now on, chats the user leaves are noted, so that a list read
    /// before the leave does not subscribe them ([`Registry::subscribe_loaded`]).
    pub fn begin_load(&self, ctx: &ConnCtx) {
        let _inner = self.inner.lock().expect("registry lock");
        *ctx.loading.lock().expect("conn lock") = Some(Vec::new());
    }

    /// Subscribes `ctx` to the chats read since [`Registry::begin_load`],
    /// less those the user left meanwhile.
    pub fn subscribe_loaded(&self, ctx: &ConnCtx, chats: &[u64]) {
        let left = {
            let _inner = self.inner.lock().expect("registry lock");
            ctx.loading.lock().expect("conn lock").take().unwrap_or_default()
        };
        let keep: Vec<u64> = chats.iter().copied().filter(|c| !left.contains(c)).collect();
        self.subscribe(ctx, &keep);
    }

    /// Logs the connection out: no session, no push stream, no
    /// subscriptions (a later sign-in on it starts from nothing).
    pub fn log_out(&self, ctx: &ConnCtx) {
        let mut inner = self.inner.lock().expect("registry lock");
        Self::drop_session(&mut inner, ctx);
    }

    fn drop_session(inner: &mut Inner, ctx: &ConnCtx) {
        ctx.forget_session();
        *ctx.loading.lock().expect("conn lock") = None;
        for chat in ctx.chats.lock().expect("conn lock").drain() {
            unsubscribe(&mut inner.subs, chat, ctx.id);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("registry lock").conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a successful session check for `ctx`, unless a revocation of
    /// that session arrived meanwhile. Returns whether it was accepted.
    pub fn accept_check(&self, ctx: &ConnCtx, authed: Authed) -> bool {
        let inner = self.inner.lock().expect("registry lock");
        if inner.revoked.contains_key(&authed.hash) {
            return false;
        }
        *ctx.auth.lock().expect("conn lock") = Some(authed);
        true
    }

    /// Applies a notice from any node (this one included), made by `origin`'s client if known.
    pub fn apply(&self, notice: &Notice, origin: Option<Origin>) {
        match notice {
            Notice::Revoked(hashes) => {
                let set: HashSet<&TokenHash> = hashes.iter().collect();
                let now = Instant::now();
                let mut inner = self.inner.lock().expect("registry lock");
                inner.revoked.retain(|_, at| now.duration_since(*at) < SESSION_LEASE * 2);
                for h in hashes {
                    inner.revoked.insert(*h, now);
                }
                let hit: Vec<Arc<ConnCtx>> = inner.conns.values().filter(|ctx| ctx.auth.lock().expect("conn lock").as_ref().is_some_and(|a| set.contains(&a.hash))).cloned().collect();
                for ctx in hit {
                    Self::drop_session(&mut inner, &ctx);
                    ctx.conn.close(close::SESSION_REVOKED.into(), b"SESSION_REVOKED");
                    tracing::info!(conn = ctx.id, remote = %ctx.remote, "closed a connection of a revoked session");
                }
            }
            Notice::LoginCode { user_id, phone, code, device } => {
                let update = pb::Update {
                    kind: Some(pb::update::Kind::LoginCode(pb::LoginCode { phone: phone.clone(), code: code.clone(), device: device.clone() })),
                };
                for ctx in self.user_conns(&[*user_id]) {
                    ctx.push(update.clone());
                }
            }
            Notice::Chat { chat, events, message } => self.chat_events(*chat, events, message.as_ref(), origin),
            Notice::OwnRead { chat, user, max_id } => {
                let update = pb::Update { kind: Some(pb::update::Kind::OwnRead(pb::ReadPosition { chat_id: *chat, max_id: *max_id })) };
                for ctx in self.user_conns(&[*user]) {
                    ctx.push(update.clone());
                }
            }
            Notice::Typing { chat, user, until_ms } => {
                let update = pb::Update { kind: Some(pb::update::Kind::Typing(pb::Typing { chat_id: *chat, user: *user, until_ms: *until_ms })) };
                for ctx in self.subscribers(*chat) {
                    if ctx.authed().is_none_or(|a| a.user.id != *user) {
                        ctx.push(update.clone());
                    }
                }
            }
        }
    }

    /// Pushes a chat's events to its subscribers; members who joined start
    /// receiving (this event included), members who left stop (after it).
    /// The client that made them (`origin`) is skipped: it has them from its reply.
    fn chat_events(&self, chat: u64, events: &[crate::messaging::Event], message: Option<&crate::messaging::Message>, origin: Option<Origin>) {
        use crate::messaging::logic::EventKind;
        let messages: Vec<_> = message.into_iter().cloned().collect();
        for e in events {
            if let EventKind::Joined(users) | EventKind::SubscribersJoined(users) = &e.kind {
                for ctx in self.user_conns(users) {
                    self.subscribe(&ctx, &[chat]);
                }
            }
            let update = pb::Update { kind: Some(pb::update::Kind::ChatEvent(crate::messaging::model::event(chat, e, &messages))) };
            let targets = self.subscribers(chat);
            for ctx in targets.iter().filter(|c| !c.made(origin)) {
                match ctx.authed() {
                    // Another member's delete-for-me, a channel's joins and
                    // leaves: each member sees their own version.
                    Some(a) if e.kind.per_member() => {
                        let seen = crate::messaging::logic::event_for(e.clone(), a.user.id);
                        let update = pb::Update { kind: Some(pb::update::Kind::ChatEvent(crate::messaging::model::event(chat, &seen, &messages))) };
                        ctx.push(update);
                    }
                    _ => ctx.push(update.clone()),
                }
            }
            if let EventKind::Left(user) | EventKind::SubscriberLeft(user) = &e.kind {
                // Every connection of the user, subscribed or still loading its list.
                let theirs = self.user_conns(&[*user]);
                let mut inner = self.inner.lock().expect("registry lock");
                for ctx in theirs {
                    ctx.chats.lock().expect("conn lock").remove(&chat);
                    unsubscribe(&mut inner.subs, chat, ctx.id);
                    if let Some(left) = ctx.loading.lock().expect("conn lock").as_mut() {
                        left.push(chat);
                    }
                }
            }
        }
    }

    fn subscribers(&self, chat: u64) -> Vec<Arc<ConnCtx>> {
        let inner = self.inner.lock().expect("registry lock");
        inner.subs.get(&chat).map(|s| s.iter().filter_map(|id| inner.conns.get(id).cloned()).collect()).unwrap_or_default()
    }

    /// The logged-in connections of these users (one pass over the connections).
    fn user_conns(&self, users: &[u64]) -> Vec<Arc<ConnCtx>> {
        let users: HashSet<u64> = users.iter().copied().collect();
        let inner = self.inner.lock().expect("registry lock");
        inner.conns.values().filter(|c| c.authed().is_some_and(|a| users.contains(&a.user.id))).cloned().collect()
    }

    /// Logged-in connections whose last check is older than `age`, by group.
    pub fn stale(&self, age: Duration, now: Instant) -> HashMap<u32, Vec<Arc<ConnCtx>>> {
        let inner = self.inner.lock().expect("registry lock");
        let mut out: HashMap<u32, Vec<Arc<ConnCtx>>> = HashMap::new();
        for ctx in inner.conns.values() {
            if let Some(a) = ctx.authed()
                && now.duration_since(a.checked_at) >= age
            {
                out.entry(a.group).or_default().push(ctx.clone());
            }
        }
        out
    }

    /// Closes every connection (node shutdown).
    pub fn close_all(&self) {
        for ctx in self.inner.lock().expect("registry lock").conns.values() {
            ctx.conn.close(close::SHUTTING_DOWN.into(), b"UNAVAILABLE");
        }
    }
}
