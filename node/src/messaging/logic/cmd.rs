//! The chat commands, one struct each (the variant of [`super::Cmd`] around it encodes as the struct variant it was).

use super::types::{Attachment, ChatKind, Copy, Forwarded, Role};
use serde::{Deserialize, Serialize};

/// Creates a chat with `id` (chosen by the proposer: deterministic for a
/// private chat, random otherwise). Creating an existing chat again with
/// the same creator is the first answer (a retry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Create {
    pub id: u64,
    pub kind: ChatKind,
    pub title: String,
    pub creator: u64,
    pub members: Vec<u64>,
    pub now_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Send {
    pub chat: u64,
    pub from: u64,
    pub random_id: u64,
    pub text: String,
    pub reply_to: u64,
    pub now_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    pub chat: u64,
    pub by: u64,
    pub id: u64,
    pub text: String,
    pub now_ms: u64,
}

/// Deletes for everyone: the sender's own messages, or any as an admin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delete {
    pub chat: u64,
    pub by: u64,
    pub ids: Vec<u64>,
    pub now_ms: u64,
}

/// Deletes for `user` only (any messages of the chat).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hide {
    pub chat: u64,
    pub user: u64,
    pub ids: Vec<u64>,
    pub now_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    pub chat: u64,
    pub user: u64,
    pub max_id: u64,
    pub now_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    pub chat: u64,
    pub by: u64,
    pub users: Vec<u64>,
    pub now_ms: u64,
}

/// `by` removes `user` (an admin), or leaves (`by == user`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remove {
    pub chat: u64,
    pub by: u64,
    pub user: u64,
    pub now_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetTitle {
    pub chat: u64,
    pub by: u64,
    pub title: String,
    pub now_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRole {
    pub chat: u64,
    pub by: u64,
    pub user: u64,
    pub role: Role,
    pub now_ms: u64,
}

/// A forward as written before messages carried media (see `Forward`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardV1 {
    pub chat: u64,
    pub from: u64,
    pub random_id: u64,
    pub items: Vec<(String, Forwarded)>,
    pub now_ms: u64,
}

/// Pins a message (admins in groups and channels; either side in a private chat); 0 unpins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub chat: u64,
    pub by: u64,
    pub id: u64,
    pub now_ms: u64,
}

/// Sets the user's reaction to a message (empty: removes it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct React {
    pub chat: u64,
    pub user: u64,
    pub id: u64,
    pub emoji: String,
    pub now_ms: u64,
}

/// The user's chat list, in the user's group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddUserChat {
    pub user: u64,
    pub chat: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveUserChat {
    pub user: u64,
    pub chat: u64,
}

/// A photo, file or voice note with a caption (the proposer checked
/// the sender may post the file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMedia {
    pub chat: u64,
    pub from: u64,
    pub random_id: u64,
    pub caption: String,
    pub reply_to: u64,
    pub media: Attachment,
    pub now_ms: u64,
}

/// Copies of messages (read from their chats by the proposer, which
/// checked the sender may read them), posted in order; `random_id` names
/// the whole forward.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    pub chat: u64,
    pub from: u64,
    pub random_id: u64,
    pub items: Vec<Copy>,
    pub now_ms: u64,
}

/// `by` blocks (`on`) or unblocks the other user of private chat `chat`
/// (which need not exist yet): the other can no longer post there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub chat: u64,
    pub by: u64,
    pub on: bool,
}
