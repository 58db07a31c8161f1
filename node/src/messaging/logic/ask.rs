//! The chat queries, one struct each.

use serde::{Deserialize, Serialize};

/// Messages with ids in `(after, before)`, newest first when paging back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub chat: u64,
    pub user: u64,
    pub before: u64,
    pub after: u64,
    pub limit: u32,
}

/// Events after `pts` in each chat of this group the user is a member of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub user: u64,
    pub chats: Vec<(u64, u64)>,
}

/// Dialog entries (chat, membership, last message, unread) for these chats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dialogs {
    pub user: u64,
    pub chats: Vec<u64>,
}

/// The user's chat list (user's group).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserChats {
    pub user: u64,
}

/// Which of these chats `user` is a member of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memberships {
    pub user: u64,
    pub chats: Vec<u64>,
}

/// A chat's first members (bounded); `MembersAfter` pages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    pub chat: u64,
    pub user: u64,
    pub limit: u32,
}

/// Messages whose text contains `text` (case-insensitive), newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Search {
    pub chat: u64,
    pub user: u64,
    pub text: String,
    pub limit: u32,
}

/// Messages of a chat by id (forwarding reads its sources with this).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Get {
    pub chat: u64,
    pub user: u64,
    pub ids: Vec<u64>,
}

/// A page of a chat's members: those with ids after `after` (0: from
/// the first), in id order, at most `limit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersAfter {
    pub chat: u64,
    pub user: u64,
    pub after: u64,
    pub limit: u32,
}

/// Search below message `before` (0: from the newest); `Search` is
/// this with `before = 0`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchBefore {
    pub chat: u64,
    pub user: u64,
    pub text: String,
    pub limit: u32,
    pub before: u64,
}

/// The chat rows (dialog order) of those of these chats `user` is a
/// member of: a dialog page is chosen from them before its last
/// messages are read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatRows {
    pub user: u64,
    pub chats: Vec<u64>,
}

/// Who reacted with what to a message, in user-id order after `after`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reactors {
    pub chat: u64,
    pub user: u64,
    pub id: u64,
    pub after: u64,
    pub limit: u32,
}

/// Which of `users` are members of `chat`, with the chat's kind (whom
/// a user may see: `get_users`). Asked by the node, not a client: no
/// caller's membership is checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersIn {
    pub chat: u64,
    pub users: Vec<u64>,
}

/// `History`, answered as a `Page` (whether the range went on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub chat: u64,
    pub user: u64,
    pub before: u64,
    pub after: u64,
    pub limit: u32,
}

/// `Difference` that leaves out chats with nothing new and stops when
/// its answer is full, saying how many chats it looked at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DifferenceBounded {
    pub user: u64,
    pub chats: Vec<(u64, u64)>,
}

/// Of these private chats, those where someone other than `user`
/// blocked: who would refuse `user`'s invitation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedAgainst {
    pub user: u64,
    pub chats: Vec<u64>,
}

/// `DifferenceBounded` with the read position each device knows, as
/// (chat, pts, read_max_id): a channel where the user's read moved past
/// it is answered `ChatDiff::Read` too (reads in a channel are no events).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DifferenceReads {
    pub user: u64,
    pub chats: Vec<(u64, u64, u64)>,
}
