//! This node's live client connections, whatever transport carries them:
//! who is logged in on each, which chats each is subscribed to, and the
//! queue its updates wait in. Targeting ([`Registry::deliver`]) turns a
//! [`Push`]'s audience into connections.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier_proto::Code;
use tokio::sync::mpsc;

use super::update::{Audience, Notice, Origin, Push, TokenHash};

/// Application close codes (QUIC's and WebTransport's); the reason bytes
/// carry the brief's code.
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

/// What the registry needs of a connection, whatever carries it.
pub trait Link: Send + Sync + 'static {
    /// Closes the connection: `code` from [`close`], the reason the brief's code.
    fn close(&self, code: u32, reason: &str);
}

/// The session a connection is logged in with.
#[derive(Clone, Debug)]
pub struct Session {
    /// The auth group holding the session.
    pub group: u32,
    pub hash: TokenHash,
    pub user: u64,
    pub session_id: u64,
    /// When the check that accepted the session started.
    pub checked_at: Instant,
}

/// One client connection.
pub struct Conn {
    pub id: u64,
    pub remote: SocketAddr,
    /// `Hello.own_sends_key` (0: the client wants its own sends pushed).
    pub own_sends_key: u64,
    link: Arc<dyn Link>,
    session: Mutex<Option<Session>>,
    /// Encoded `client.Update`s for the transport's push stream.
    push: Mutex<Option<mpsc::Sender<Bytes>>>,
    /// The chats whose events this connection receives.
    chats: Mutex<HashSet<u64>>,
    /// While the user's chat list is being read for the subscriptions: the
    /// chats the user left meanwhile (not to be subscribed from that read).
    loading: Mutex<Option<Vec<u64>>>,
}

impl Conn {
    pub fn session(&self) -> Option<Session> {
        self.session.lock().expect("conn lock").clone()
    }

    pub fn user(&self) -> Option<u64> {
        self.session.lock().expect("conn lock").as_ref().map(|s| s.user)
    }

    pub fn close(&self, code: u32, reason: Code) {
        self.link.close(code, reason.as_str());
    }

    pub fn has_push(&self) -> bool {
        self.push.lock().expect("conn lock").is_some()
    }

    /// Starts queueing updates for this connection; the transport sends
    /// what arrives on the returned queue, in order.
    pub fn open_push(&self) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(PUSH_QUEUE);
        *self.push.lock().expect("conn lock") = Some(tx);
        rx
    }

    /// Forgets the session; no more pushes (the registry drops the
    /// subscriptions: [`Registry::log_out`]).
    fn forget_session(&self) {
        *self.session.lock().expect("conn lock") = None;
        *self.push.lock().expect("conn lock") = None;
    }

    /// Whether the change came from this connection's client itself.
    fn made(&self, origin: Option<Origin>) -> bool {
        origin.is_some_and(|o| self.own_sends_key != 0 && o.key == self.own_sends_key && self.session().is_some_and(|s| (s.user, s.session_id) == (o.user, o.session)))
    }

    fn push(&self, update: Bytes) {
        let tx = self.push.lock().expect("conn lock").clone();
        if let Some(tx) = tx
            && let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(update)
        {
            tracing::info!(conn = self.id, "closing a connection that does not read its updates");
            self.close(close::SLOW_CONSUMER, Code::SlowConsumer);
        }
    }
}

pub struct Registry {
    next: AtomicU64,
    /// How long a session check holds (a revoked session is remembered twice as long).
    lease: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<u64, Arc<Conn>>,
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
    pub fn new(lease: Duration) -> Registry {
        Registry { next: AtomicU64::new(0), lease, inner: Mutex::default() }
    }

    pub fn add(&self, link: Arc<dyn Link>, remote: SocketAddr, own_sends_key: u64) -> Arc<Conn> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let conn = Arc::new(Conn { id, remote, own_sends_key, link, session: Mutex::new(None), push: Mutex::new(None), chats: Default::default(), loading: Mutex::new(None) });
        self.inner.lock().expect("registry lock").conns.insert(id, conn.clone());
        conn
    }

    pub fn remove(&self, id: u64, now_ms: u64) {
        let mut inner = self.inner.lock().expect("registry lock");
        if let Some(conn) = inner.conns.remove(&id) {
            for chat in conn.chats.lock().expect("conn lock").drain() {
                unsubscribe(&mut inner.subs, chat, id);
            }
            if let Some(user) = conn.user() {
                inner.last_seen.insert(user, now_ms);
            }
        }
    }

    /// Whether `conn`'s session check is recent enough to serve a request on.
    pub fn lease_valid(&self, conn: &Conn, now: Instant) -> bool {
        conn.session.lock().expect("conn lock").as_ref().is_some_and(|s| now.duration_since(s.checked_at) < self.lease)
    }

    /// Which of `users` have a logged-in connection here, and when the
    /// others last had one.
    pub fn presence(&self, users: &[u64]) -> (Vec<u64>, Vec<(u64, u64)>) {
        let inner = self.inner.lock().expect("registry lock");
        let here: HashSet<u64> = inner.conns.values().filter_map(|c| c.user()).collect();
        let online: Vec<u64> = users.iter().copied().filter(|u| here.contains(u)).collect();
        let seen = users.iter().filter(|u| !here.contains(u)).filter_map(|u| inner.last_seen.get(u).map(|t| (*u, *t))).collect();
        (online, seen)
    }

    /// Starts delivering these chats' events to `conn`.
    pub fn subscribe(&self, conn: &Conn, chats: &[u64]) {
        let mut inner = self.inner.lock().expect("registry lock");
        Self::subscribe_locked(&mut inner, conn, chats);
    }

    fn subscribe_locked(inner: &mut Inner, conn: &Conn, chats: &[u64]) {
        if !inner.conns.contains_key(&conn.id) || conn.user().is_none() {
            return; // gone or logged out meanwhile
        }
        let mut mine = conn.chats.lock().expect("conn lock");
        for c in chats {
            mine.insert(*c);
            inner.subs.entry(*c).or_default().insert(conn.id);
        }
    }

    /// The user's chat list is about to be read for `conn`'s subscriptions:
    /// from now on, chats the user leaves are noted, so that a list read
    /// before the leave does not subscribe them ([`Registry::subscribe_loaded`]).
    pub fn begin_load(&self, conn: &Conn) {
        let _inner = self.inner.lock().expect("registry lock");
        *conn.loading.lock().expect("conn lock") = Some(Vec::new());
    }

    /// Subscribes `conn` to the chats read since [`Registry::begin_load`],
    /// less those the user left meanwhile.
    pub fn subscribe_loaded(&self, conn: &Conn, chats: &[u64]) {
        let mut inner = self.inner.lock().expect("registry lock");
        let left = conn.loading.lock().expect("conn lock").take().unwrap_or_default();
        let keep: Vec<u64> = chats.iter().copied().filter(|c| !left.contains(c)).collect();
        Self::subscribe_locked(&mut inner, conn, &keep);
    }

    /// Logs the connection out: no session, no push stream, no
    /// subscriptions (a later sign-in on it starts from nothing).
    pub fn log_out(&self, conn: &Conn) {
        let mut inner = self.inner.lock().expect("registry lock");
        Self::drop_session(&mut inner, conn);
    }

    fn drop_session(inner: &mut Inner, conn: &Conn) {
        conn.forget_session();
        *conn.loading.lock().expect("conn lock") = None;
        for chat in conn.chats.lock().expect("conn lock").drain() {
            unsubscribe(&mut inner.subs, chat, conn.id);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("registry lock").conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a successful session check for `conn`, unless a revocation
    /// of that session arrived meanwhile. Returns whether it was accepted.
    pub fn accept_check(&self, conn: &Conn, session: Session) -> bool {
        let inner = self.inner.lock().expect("registry lock");
        if inner.revoked.contains_key(&session.hash) {
            return false;
        }
        *conn.session.lock().expect("conn lock") = Some(session);
        true
    }

    /// Applies a notice from any node (this one included).
    pub fn apply(&self, notice: &Notice) {
        match notice {
            Notice::Revoked(hashes) => self.revoke(hashes),
            Notice::Push(push) => self.deliver(push),
        }
    }

    fn revoke(&self, hashes: &[TokenHash]) {
        let set: HashSet<&TokenHash> = hashes.iter().collect();
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("registry lock");
        let keep = self.lease * 2;
        inner.revoked.retain(|_, at| now.duration_since(*at) < keep);
        for h in hashes {
            inner.revoked.insert(*h, now);
        }
        let hit: Vec<Arc<Conn>> = inner.conns.values().filter(|c| c.session.lock().expect("conn lock").as_ref().is_some_and(|s| set.contains(&s.hash))).cloned().collect();
        for conn in hit {
            Self::drop_session(&mut inner, &conn);
            conn.close(close::SESSION_REVOKED, Code::SessionRevoked);
            tracing::info!(conn = conn.id, remote = %conn.remote, "closed a connection of a revoked session");
        }
    }

    /// Hands a push to its audience's connections here: joins subscribe
    /// first, leaves unsubscribe after; the client that made the change is
    /// skipped.
    pub fn deliver(&self, push: &Push) {
        let update = push.update.clone().map(Bytes::from);
        let except: HashMap<u64, Option<Bytes>> = push.except.iter().map(|(u, b)| (*u, b.clone().map(Bytes::from))).collect();
        let targets = match &push.audience {
            Audience::Users(users) => self.user_conns(users),
            Audience::Chat { chat, join, .. } => {
                if !join.is_empty() {
                    let joining = self.user_conns(join);
                    let mut inner = self.inner.lock().expect("registry lock");
                    for conn in joining {
                        Self::subscribe_locked(&mut inner, &conn, &[*chat]);
                    }
                }
                self.subscribers(*chat)
            }
        };
        for conn in targets.iter().filter(|c| !c.made(push.origin)) {
            let seen = match conn.user().and_then(|u| except.get(&u)) {
                Some(own) => own,
                None => &update,
            };
            if let Some(bytes) = seen {
                conn.push(bytes.clone());
            }
        }
        if let Audience::Chat { chat, leave, .. } = &push.audience
            && !leave.is_empty()
        {
            // Every connection of the users, subscribed or still loading their list.
            let theirs = self.user_conns(leave);
            let mut inner = self.inner.lock().expect("registry lock");
            for conn in theirs {
                conn.chats.lock().expect("conn lock").remove(chat);
                unsubscribe(&mut inner.subs, *chat, conn.id);
                if let Some(left) = conn.loading.lock().expect("conn lock").as_mut() {
                    left.push(*chat);
                }
            }
        }
    }

    fn subscribers(&self, chat: u64) -> Vec<Arc<Conn>> {
        let inner = self.inner.lock().expect("registry lock");
        inner.subs.get(&chat).map(|s| s.iter().filter_map(|id| inner.conns.get(id).cloned()).collect()).unwrap_or_default()
    }

    /// The logged-in connections of these users (one pass over the connections).
    fn user_conns(&self, users: &[u64]) -> Vec<Arc<Conn>> {
        let users: HashSet<u64> = users.iter().copied().collect();
        let inner = self.inner.lock().expect("registry lock");
        inner.conns.values().filter(|c| c.user().is_some_and(|u| users.contains(&u))).cloned().collect()
    }

    /// Logged-in connections whose last check is older than `age`, by group.
    pub fn stale(&self, age: Duration, now: Instant) -> HashMap<u32, Vec<Arc<Conn>>> {
        let inner = self.inner.lock().expect("registry lock");
        let mut out: HashMap<u32, Vec<Arc<Conn>>> = HashMap::new();
        for conn in inner.conns.values() {
            if let Some(s) = conn.session()
                && now.duration_since(s.checked_at) >= age
            {
                out.entry(s.group).or_default().push(conn.clone());
            }
        }
        out
    }

    /// Closes every connection (node shutdown).
    pub fn close_all(&self) {
        for conn in self.inner.lock().expect("registry lock").conns.values() {
            conn.close(close::SHUTTING_DOWN, Code::Unavailable);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Closed(Mutex<Vec<(u32, String)>>);

    impl Link for Closed {
        fn close(&self, code: u32, reason: &str) {
            self.0.lock().unwrap().push((code, reason.to_string()));
        }
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    fn logged_in(r: &Registry, user: u64, session_id: u64, key: u64) -> (Arc<Conn>, mpsc::Receiver<Bytes>, Arc<Closed>) {
        let link = Arc::new(Closed::default());
        let c = r.add(link.clone(), addr(), key);
        assert!(r.accept_check(&c, Session { group: 1, hash: [user as u8; 32], user, session_id, checked_at: Instant::now() }));
        let rx = c.open_push();
        (c, rx, link)
    }

    fn got(rx: &mut mpsc::Receiver<Bytes>) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| rx.try_recv().ok()).map(|b| b.to_vec()).collect()
    }

    #[test]
    fn a_chat_push_reaches_subscribers_joins_first_leaves_after_and_members_see_their_own() {
        let r = Registry::new(Duration::from_secs(3));
        let (a, mut ra, _) = logged_in(&r, 1, 1, 0);
        let (_b, mut rb, _) = logged_in(&r, 2, 1, 0);
        let (_c, mut rc, _) = logged_in(&r, 3, 1, 0);
        r.subscribe(&a, &[10]);
        let push = Push { audience: Audience::Chat { chat: 10, join: vec![2], leave: vec![1] }, update: Some(vec![0]), except: vec![(2, Some(vec![2]))], origin: None };
        r.deliver(&push);
        assert_eq!(got(&mut ra), vec![vec![0]], "the leaver receives the event that removes them");
        assert_eq!(got(&mut rb), vec![vec![2]], "the joiner is subscribed first and sees their own version");
        assert!(got(&mut rc).is_empty(), "not subscribed, not named");
        r.deliver(&Push { audience: Audience::Chat { chat: 10, join: vec![], leave: vec![] }, update: Some(vec![5]), except: vec![(2, None)], origin: None });
        assert!(got(&mut ra).is_empty(), "unsubscribed after leaving");
        assert!(got(&mut rb).is_empty(), "an excepted user with nothing sees nothing");
    }

    #[test]
    fn the_client_that_made_a_change_is_skipped_and_revocation_closes_its_sessions() {
        let r = Registry::new(Duration::from_secs(3));
        let (me, mut rme, link) = logged_in(&r, 1, 7, 42);
        let (_other, mut rother, _) = logged_in(&r, 1, 8, 42);
        let mut push = Push::to_users(vec![1], vec![1]);
        push.origin = Some(Origin { user: 1, session: 7, key: 42 });
        r.deliver(&push);
        assert!(got(&mut rme).is_empty(), "the maker has it from its reply");
        assert_eq!(got(&mut rother).len(), 1, "the same user's other session is pushed");
        r.apply(&Notice::Revoked(vec![[1; 32]]));
        assert!(me.session().is_none());
        assert_eq!(link.0.lock().unwrap().as_slice(), &[(close::SESSION_REVOKED, "SESSION_REVOKED".to_string())]);
        assert!(!r.accept_check(&me, Session { group: 1, hash: [1; 32], user: 1, session_id: 7, checked_at: Instant::now() }), "a check in flight cannot readmit it");
    }

    #[test]
    fn a_connection_that_does_not_read_is_closed_as_a_slow_consumer() {
        let r = Registry::new(Duration::from_secs(3));
        let (_c, _rx, link) = logged_in(&r, 1, 1, 0);
        for _ in 0..=PUSH_QUEUE {
            r.deliver(&Push::to_users(vec![1], vec![1]));
        }
        assert_eq!(link.0.lock().unwrap().last(), Some(&(close::SLOW_CONSUMER, "SLOW_CONSUMER".to_string())));
    }
}
