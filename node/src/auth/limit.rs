//! Login budgets. Pure: the caller passes the time.
//!
//! Two places count (docs/security.md, "Budgets"):
//! - a [`RateLimiter`] per client address on the node the client reached,
//!   before anything is proposed. Its rate is this node's share of the
//!   cluster's budget (the budget over the live nodes), so a client that
//!   spreads over every node gets the budget once, not once per node.
//! - [`LoginGate`] per phone and asking address, on the leader of the
//!   phone's group, before it proposes: one leader per group at a time, so
//!   the count is cluster-wide without a write (a new leader starts afresh;
//!   nobody outside can make leaders change).

use super::logic::{Cmd, cmd};
use crate::limit::RateLimiter;

/// Login attempts (codes asked for, sign-ins, sign-ups) per phone and
/// asking address, checked by the phone group's leader before it proposes.
#[derive(Debug)]
pub struct LoginGate {
    per_phone: RateLimiter<(String, String)>,
}

impl LoginGate {
    pub fn new(per_phone_per_minute: u32) -> Self {
        LoginGate { per_phone: RateLimiter::penalizing(per_phone_per_minute) }
    }

    /// `Err(seconds)` when `cmd` is a login attempt over the budget of its
    /// phone and address; every other command passes.
    pub fn admit(&mut self, cmd: &Cmd) -> Result<(), u32> {
        let (phone, asker, now_ms) = match cmd {
            Cmd::SendCodeFrom(cmd::SendCodeFrom { phone, asker, now_ms, .. }) => (phone, asker.as_str(), *now_ms),
            Cmd::SignIn(cmd::SignIn { phone, session, now_ms, .. }) | Cmd::SignUp(cmd::SignUp { phone, session, now_ms, .. }) => {
                (phone, host_of(&session.address), *now_ms)
            }
            _ => return Ok(()),
        };
        self.per_phone.check(&(phone.clone(), asker.to_string()), now_ms)
    }
}

/// The address part of `ip:port` (`[v6]:port` too).
fn host_of(addr: &str) -> &str {
    addr.parse::<std::net::SocketAddr>().map_or(addr, |_| addr.rsplit_once(':').map_or(addr, |(h, _)| h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::logic::NewSession;

    #[test]
    fn the_gate_counts_login_attempts_per_phone_and_address() {
        let sign_in = |phone: &str, addr: &str, now_ms| -> Cmd {
            cmd::SignIn {
                phone: phone.into(),
                code_id: 1,
                code: "1".into(),
                session: NewSession { token_hash: [0; 32], device: String::new(), app_version: String::new(), node_id: 1, address: addr.into() },
                now_ms,
            }
            .into()
        };
        let mut g = LoginGate::new(2);
        g.admit(&sign_in("+1", "10.0.0.1:5", 0)).unwrap();
        g.admit(&sign_in("+1", "10.0.0.1:6", 0)).unwrap();
        assert!(g.admit(&sign_in("+1", "10.0.0.1:7", 0)).is_err(), "another port is the same address");
        g.admit(&sign_in("+1", "10.0.0.2:5", 0)).expect("another address has its own budget");
        g.admit(&sign_in("+2", "10.0.0.1:5", 0)).expect("another phone too");
        let code = |asker: &str| -> Cmd { cmd::SendCodeFrom { phone: "+1".into(), code_id: 1, code: "1".into(), ttl_ms: 1, max_per_day: 5, now_ms: 0, asker: asker.into() }.into() };
        assert!(g.admit(&code("10.0.0.1")).is_err(), "codes and sign-ins share the budget");
        let touch: Cmd = cmd::Touch { token_hash: [0; 32], node_id: 1, address: "10.0.0.1:5".into(), now_ms: 0 }.into();
        g.admit(&touch).expect("not a login attempt");
        assert_eq!(host_of("[::1]:5"), "[::1]");
        assert_eq!(host_of("nonsense"), "nonsense");
    }
}
