//! What one user makes others receive, per chat: posts, changes and
//! invitations counted by the chat group's leader before it proposes
//! ([`ChatGate`], pure: the command's own time is the clock). Typing
//! notices and new private chats are counted on the node the user reached,
//! each node its share (`crate::limit::node_share`), in
//! [`super::Messaging`].

use super::logic::{Cmd, cmd};
use crate::config::LimitsConfig;
use crate::limit::RateLimiter;

#[derive(Debug)]
pub struct ChatGate {
    posts: RateLimiter<(u64, u64)>,
    changes: RateLimiter<(u64, u64)>,
    invites: RateLimiter<(u64, u64)>,
}

impl ChatGate {
    pub fn new(cfg: &LimitsConfig) -> Self {
        ChatGate {
            posts: RateLimiter::penalizing(cfg.posts_per_chat_per_minute),
            changes: RateLimiter::penalizing(cfg.changes_per_chat_per_minute),
            invites: RateLimiter::penalizing(cfg.invites_per_chat_per_minute),
        }
    }

    /// Whether any budget is on (when none is, commands are not even decoded).
    pub fn enabled(cfg: &LimitsConfig) -> bool {
        cfg.posts_per_chat_per_minute + cfg.changes_per_chat_per_minute + cfg.invites_per_chat_per_minute > 0
    }

    /// `Err(seconds)` when `cmd` is over its user's budget in its chat.
    pub fn admit(&mut self, cmd: &Cmd) -> Result<(), u32> {
        match cmd {
            Cmd::Send(cmd::Send { chat, from, now_ms, .. })
            | Cmd::SendMedia(cmd::SendMedia { chat, from, now_ms, .. })
            | Cmd::Forward(cmd::Forward { chat, from, now_ms, .. })
            | Cmd::ForwardV1(cmd::ForwardV1 { chat, from, now_ms, .. }) => self.posts.check(&(*from, *chat), *now_ms),
            Cmd::Edit(cmd::Edit { chat, by, now_ms, .. }) | Cmd::Pin(cmd::Pin { chat, by, now_ms, .. }) | Cmd::React(cmd::React { chat, user: by, now_ms, .. }) => {
                self.changes.check(&(*by, *chat), *now_ms)
            }
            Cmd::Invite(cmd::Invite { chat, by, now_ms, .. }) => self.invites.check(&(*by, *chat), *now_ms),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_changes_and_invitations_have_budgets_per_user_and_chat() {
        let cfg = LimitsConfig { posts_per_chat_per_minute: 2, changes_per_chat_per_minute: 1, invites_per_chat_per_minute: 1, ..LimitsConfig::default() };
        let mut g = ChatGate::new(&cfg);
        let send = |chat, from, now_ms| Cmd::from(cmd::Send { chat, from, random_id: 1, text: "x".into(), reply_to: 0, now_ms });
        g.admit(&send(1, 7, 0)).unwrap();
        g.admit(&send(1, 7, 0)).unwrap();
        assert_eq!(g.admit(&send(1, 7, 0)), Err(60), "the third post in a minute");
        g.admit(&send(2, 7, 0)).expect("another chat");
        g.admit(&send(1, 8, 0)).expect("another user");
        g.admit(&send(1, 7, 90_000)).expect("later");
        let react = Cmd::from(cmd::React { chat: 1, user: 7, id: 1, emoji: "👍".into(), now_ms: 0 });
        g.admit(&react).expect("changes have their own budget");
        assert!(g.admit(&Cmd::from(cmd::Edit { chat: 1, by: 7, id: 1, text: "y".into(), now_ms: 0 })).is_err(), "edits and reactions share it");
        let invite = Cmd::from(cmd::Invite { chat: 1, by: 7, users: vec![9], now_ms: 0 });
        g.admit(&invite).unwrap();
        assert!(g.admit(&invite).is_err());
        g.admit(&Cmd::from(cmd::Read { chat: 1, user: 7, max_id: 5, now_ms: 0 })).expect("reads are the user's own");
        let off = LimitsConfig { posts_per_chat_per_minute: 0, changes_per_chat_per_minute: 0, invites_per_chat_per_minute: 0, ..LimitsConfig::default() };
        assert!(!ChatGate::enabled(&off));
    }
}
