//! Leader routing: a chat's writes (and its history reads) go straight to
//! the node that leads the chat's data group, over an extra requests-only
//! connection, instead of through the device's own node, which would forward
//! them there (one more hop inside the cluster for two requests in three on
//! a 3-node cluster). TiKV's and Kafka's clients cache their regions' and
//! partitions' leaders the same way.
//!
//! The table comes from `GetRoutes` on the device's own connection and is
//! refreshed in the background once it is [`ROUTES_TTL`] old. Extra
//! connections are opened in the background too: a request never waits for
//! one. Until a route and its connection are ready, or after the connection
//! failed (for [`RETRY_AFTER`]), requests take the device's own connection,
//! which still reaches the leader by forwarding. A stale route costs one
//! forward, never correctness: every node forwards.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use courier_proto::client as pb;
use courier_proto::client::request::Method as M;

/// Age after which the route table is fetched again.
pub(crate) const ROUTES_TTL: Duration = Duration::from_secs(5);
/// How long a node whose extra connection failed is not tried again.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The chat a routable request is about: writes that name one chat and are
/// safe to send again (so a failed extra connection falls back to the
/// device's own), and that chat's history and search.
pub(crate) fn routed_chat(m: &M) -> Option<u64> {
    Some(match m {
        M::SendMessage(s) => s.chat_id,
        M::EditMessage(e) => e.chat_id,
        M::DeleteMessages(d) => d.chat_id,
        M::ReadHistory(r) => r.chat_id,
        M::ForwardMessages(f) => f.chat_id,
        M::PinMessage(p) => p.chat_id,
        M::SendReaction(r) => r.chat_id,
        M::GetHistory(h) => h.chat_id,
        M::Search(s) => s.chat_id,
        M::GetMembers(g) => g.chat_id,
        M::GetReactions(g) => g.chat_id,
        _ => return None,
    })
}

/// What the client knows of the leaders, and its extra connections.
#[derive(Default)]
pub(crate) struct Table {
    routes: Option<Routes>,
    refreshing: bool,
    conns: HashMap<String, Slot>,
}

struct Routes {
    mask: u64,
    /// Group → (leader, its client address).
    leaders: HashMap<u32, (u64, String)>,
    fetched: Instant,
}

pub(crate) enum Slot {
    Connecting,
    Up(quinn::Connection),
    Failed(Instant),
}

/// What to do with a routable request.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Send it on the device's own connection.
    Own,
    /// Send it on this extra connection (to the node at this address).
    Extra(String, quinn::Connection),
    /// Send it on the device's own connection, and open an extra one to this node.
    OwnAndConnect(String),
}

impl Table {
    /// Whether the routes should be fetched (and marks a fetch as started).
    pub(crate) fn start_refresh(&mut self, now: Instant) -> bool {
        let stale = self.routes.as_ref().is_none_or(|r| now.duration_since(r.fetched) >= ROUTES_TTL);
        if stale && !self.refreshing {
            self.refreshing = true;
            return true;
        }
        false
    }

    /// A fetch ended; `routes` is its answer if it got one. Extra
    /// connections to nodes that no longer lead anything are closed.
    pub(crate) fn refreshed(&mut self, routes: Option<pb::Routes>, now: Instant) {
        self.refreshing = false;
        let Some(r) = routes else { return };
        let leaders: HashMap<u32, (u64, String)> = r.routes.into_iter().filter(|r| !r.addr.is_empty()).map(|r| (r.group, (r.node_id, r.addr))).collect();
        self.conns.retain(|addr, slot| {
            let keep = leaders.values().any(|(_, a)| a == addr);
            if !keep && let Slot::Up(c) = slot {
                c.close(0u32.into(), b"no longer a leader");
            }
            keep
        });
        self.routes = Some(Routes { mask: r.group_mask, leaders, fetched: now });
    }

    /// Where a request about `chat` goes when the device's own connection is
    /// to node `own`.
    pub(crate) fn decide(&mut self, chat: u64, own: u64, now: Instant) -> Decision {
        let Some(routes) = &self.routes else { return Decision::Own };
        let Some((leader, addr)) = u32::try_from(chat & routes.mask).ok().and_then(|g| routes.leaders.get(&g)) else { return Decision::Own };
        if *leader == own {
            return Decision::Own;
        }
        match self.conns.get(addr) {
            Some(Slot::Up(c)) if c.close_reason().is_none() => Decision::Extra(addr.clone(), c.clone()),
            Some(Slot::Connecting) => Decision::Own,
            Some(Slot::Failed(at)) if now.duration_since(*at) < RETRY_AFTER => Decision::Own,
            _ => {
                self.conns.insert(addr.clone(), Slot::Connecting);
                Decision::OwnAndConnect(addr.clone())
            }
        }
    }

    /// An extra connection opened (`Some`) or failed (`None`), or a request
    /// on it failed (`None`): the node is left alone for [`RETRY_AFTER`].
    pub(crate) fn set_conn(&mut self, addr: &str, conn: Option<quinn::Connection>, now: Instant) {
        if let Some(Slot::Up(old)) = self.conns.get(addr)
            && conn.as_ref().is_none_or(|c| c.stable_id() != old.stable_id())
        {
            old.close(0u32.into(), b"replaced");
        }
        self.conns.insert(addr.to_string(), conn.map_or(Slot::Failed(now), Slot::Up));
    }

    /// Closes every extra connection and forgets the routes (log-out, drop).
    pub(crate) fn clear(&mut self) {
        for slot in self.conns.values() {
            if let Slot::Up(c) = slot {
                c.close(0u32.into(), b"bye");
            }
        }
        self.conns.clear();
        self.routes = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(leaders: &[(u32, u64, &str)]) -> pb::Routes {
        pb::Routes { group_mask: 0xffff, routes: leaders.iter().map(|(g, n, a)| pb::Route { group: *g, node_id: *n, addr: a.to_string() }).collect() }
    }

    #[test]
    fn requests_about_one_chat_are_routed_others_are_not() {
        let send = M::SendMessage(pb::SendMessage { chat_id: 7 << 16 | 3, ..Default::default() });
        assert_eq!(routed_chat(&send), Some(7 << 16 | 3));
        assert_eq!(routed_chat(&M::GetHistory(pb::GetHistory { chat_id: 9, ..Default::default() })), Some(9));
        // Not idempotent, or not about one chat's group.
        assert_eq!(routed_chat(&M::CreateChat(pb::CreateChat::default())), None);
        assert_eq!(routed_chat(&M::GetDialogs(pb::GetDialogs::default())), None);
        assert_eq!(routed_chat(&M::SetTyping(pb::SetTyping { chat_id: 9 })), None);
    }

    #[test]
    fn a_chat_goes_to_its_groups_leader_once_connected_and_back_to_its_own_node_on_failure() {
        let t0 = Instant::now();
        let mut t = Table::default();
        let chat = |g: u64| 42 << 16 | g;
        // No routes yet: own connection, and a fetch starts (only one at a time).
        assert!(matches!(t.decide(chat(2), 1, t0), Decision::Own));
        assert!(t.start_refresh(t0));
        assert!(!t.start_refresh(t0));
        t.refreshed(Some(routes(&[(1, 1, "n1"), (2, 2, "n2"), (3, 0, "")])), t0);
        assert!(!t.start_refresh(t0 + Duration::from_secs(1)), "fresh routes are not fetched again");
        assert!(t.start_refresh(t0 + ROUTES_TTL), "old ones are");
        t.refreshed(None, t0 + ROUTES_TTL);
        // Led by the own node, or by nobody known: own connection.
        assert!(matches!(t.decide(chat(1), 1, t0), Decision::Own));
        assert!(matches!(t.decide(chat(3), 1, t0), Decision::Own));
        assert!(matches!(t.decide(chat(9), 1, t0), Decision::Own));
        // Led elsewhere: own connection while the extra one opens, once.
        assert!(matches!(t.decide(chat(2), 1, t0), Decision::OwnAndConnect(a) if a == "n2"));
        assert!(matches!(t.decide(chat(2), 1, t0), Decision::Own));
        // The connection failed: not tried again before RETRY_AFTER.
        t.set_conn("n2", None, t0);
        assert!(matches!(t.decide(chat(2), 1, t0 + Duration::from_secs(1)), Decision::Own));
        assert!(matches!(t.decide(chat(2), 1, t0 + RETRY_AFTER), Decision::OwnAndConnect(a) if a == "n2"));
        assert!(matches!(t.conns.get("n2"), Some(Slot::Connecting)));
    }
}
