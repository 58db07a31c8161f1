//! The chat types: records and rows (with the older formats they are read
//! from), commands, queries and their answers, and the limits. These are in
//! Raft logs, in rows and on the wire: their fields and variants never
//! move, new ones go at the end.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::media::logic::Thumb;
use crate::state::Evolved;

/// Characters in a message (the brief's limit).
pub const MESSAGE_MAX: usize = 4096;
/// Characters in a media message's caption.
pub const CAPTION_MAX: usize = 1024;
pub const TITLE_MAX: usize = 128;
/// Members of a group (channels have no limit).
pub const GROUP_MAX: u64 = 200_000;
/// Users one `create_chat` or `invite` may add (Telegram: 200 at creation):
/// each is a read and a write of its own, so a request stays bounded.
pub const MEMBERS_PER_REQUEST: usize = 200;
/// Own messages can be edited this long.
pub const EDIT_WINDOW_MS: u64 = 48 * 3600 * 1000;
/// Events one difference answer carries before it says "more".
pub const DIFF_SLICE: usize = 500;
/// A device further behind than this many events gets `too_long`.
pub const DIFF_TOO_LONG: u64 = 10_000;
/// Events a chat keeps: no difference reads further back than
/// [`DIFF_TOO_LONG`] (a slice's margin on top), so older ones go as new
/// ones come and a chat's event rows do not grow with its history.
pub const EVENTS_KEPT: u64 = DIFF_TOO_LONG + DIFF_SLICE as u64;
/// Messages a `too_long` answer and a history page carry at most.
pub const PAGE_MAX: usize = 100;
/// Members in one page of a chat's member list (Telegram pages its
/// participants by 200 too).
pub const MEMBERS_PAGE_MAX: u32 = 200;
/// Posts one read in a channel counts a view of (the newest it passes): a
/// read's work stays bounded however far it jumps.
pub const VIEWS_PER_READ: u64 = 100;
/// Chats in one user's list: what a device's difference may name (see
/// `gateway::model::DIFF_CHATS_MAX`); past it, adds are refused.
pub const USER_CHATS_MAX: u64 = 10_000;

/// The bits of a chat id that name its data group (clients route by them:
/// `GetRoutes`).
pub const CHAT_GROUP_MASK: u64 = 0xffff;

/// The data group a chat lives in.
pub fn chat_group(chat: u64) -> u32 {
    (chat & CHAT_GROUP_MASK) as u32
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatKind {
    Private,
    Group,
    Channel,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    pub id: u64,
    pub kind: ChatKind,
    pub title: String,
    pub creator: u64,
    pub created_ms: u64,
    /// The newest message id (0: none yet).
    pub last_id: u64,
    /// The newest event's sequence number.
    pub pts: u64,
    pub members: u64,
    /// When the last message was sent (dialog order).
    pub last_ms: u64,
    /// The pinned message (0: none).
    pub pinned: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    Member,
    Admin,
    Creator,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub role: Role,
    pub joined_ms: u64,
    /// The newest message id this member has read.
    pub read_max_id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: u64,
    pub from: u64,
    pub date_ms: u64,
    pub text: String,
    pub reply_to: u64,
    pub edit_ms: u64,
    pub deleted: bool,
    /// Where a forwarded message came from.
    pub fwd: Option<Forwarded>,
    /// Each emoji's count and most recent reactors; who reacted with what
    /// is in rows of their own (`m/react/…`), paged by `Query::Reactors`.
    pub reactions: Vec<Reaction>,
    /// A photo, file or voice note; `text` is then its caption.
    pub media: Option<Attachment>,
    /// Reactions made before format 3 (user, emoji), which have no row of
    /// their own yet: the message's next reaction moves them to rows.
    pub unrowed: Vec<(u64, String)>,
    /// A channel post: how many subscribers read it. Kept in a row of its
    /// own (`m/views/<chat><id>`, so a read does not rewrite posts) and
    /// filled in when posts are read; 0 in the stored message row.
    pub views: u64,
}

/// One emoji's reactions to a message: a row stays the same size however
/// many react (before format 3 it listed every reactor).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    pub emoji: String,
    pub count: u64,
    /// Who reacted with it most recently, newest first (at most [`RECENT_REACTORS`]).
    pub recent: Vec<u64>,
}

/// Reactors a message row names per emoji (Telegram shows three faces too).
pub const RECENT_REACTORS: usize = 3;

impl Evolved for Message {
    const FORMAT: u8 = 4;
    type Prev = MessageV2;

    fn older(format: u8, bytes: &[u8]) -> Result<Message> {
        let body = courier_raft::codec::split_format(bytes)?.1;
        Ok(match format {
            3 => courier_raft::codec::decode_body::<MessageV3>(body)?.into(),
            2 => courier_raft::codec::decode_body::<MessageV2>(body)?.into(),
            _ => MessageV2::from(courier_raft::codec::decode::<MessageV1>(bytes)?).into(),
        })
    }
}

/// A message row as written before channel posts counted views (format 3).
#[derive(Clone, Debug, Deserialize)]
pub struct MessageV3 {
    id: u64,
    from: u64,
    date_ms: u64,
    text: String,
    reply_to: u64,
    edit_ms: u64,
    deleted: bool,
    fwd: Option<Forwarded>,
    reactions: Vec<Reaction>,
    media: Option<Attachment>,
    unrowed: Vec<(u64, String)>,
}

impl From<MessageV3> for Message {
    fn from(m: MessageV3) -> Message {
        let MessageV3 { id, from, date_ms, text, reply_to, edit_ms, deleted, fwd, reactions, media, unrowed } = m;
        Message { id, from, date_ms, text, reply_to, edit_ms, deleted, fwd, reactions, media, unrowed, views: 0 }
    }
}

/// A message row as written before reactions were counted (format 2):
/// each emoji listed every user who reacted with it.
#[derive(Clone, Debug, Deserialize)]
pub struct MessageV2 {
    id: u64,
    from: u64,
    date_ms: u64,
    text: String,
    reply_to: u64,
    edit_ms: u64,
    deleted: bool,
    fwd: Option<Forwarded>,
    reactions: Vec<(String, Vec<u64>)>,
    media: Option<Attachment>,
}

impl From<MessageV2> for Message {
    fn from(m: MessageV2) -> Message {
        let MessageV2 { id, from, date_ms, text, reply_to, edit_ms, deleted, fwd, reactions, media } = m;
        let counted = reactions
            .iter()
            .map(|(emoji, users)| Reaction { emoji: emoji.clone(), count: users.len() as u64, recent: users.iter().rev().take(RECENT_REACTORS).copied().collect() })
            .collect();
        let unrowed = reactions.into_iter().flat_map(|(emoji, users)| users.into_iter().map(move |u| (u, emoji.clone()))).collect();
        Message { id, from, date_ms, text, reply_to, edit_ms, deleted, fwd, reactions: counted, media, unrowed, views: 0 }
    }
}

/// A message row as written before messages carried media (format 1).
#[derive(Clone, Debug, Deserialize)]
pub struct MessageV1 {
    id: u64,
    from: u64,
    date_ms: u64,
    text: String,
    reply_to: u64,
    edit_ms: u64,
    deleted: bool,
    fwd: Option<Forwarded>,
    reactions: Vec<(String, Vec<u64>)>,
}

impl From<MessageV1> for MessageV2 {
    fn from(m: MessageV1) -> MessageV2 {
        let MessageV1 { id, from, date_ms, text, reply_to, edit_ms, deleted, fwd, reactions } = m;
        MessageV2 { id, from, date_ms, text, reply_to, edit_ms, deleted, fwd, reactions, media: None }
    }
}

/// Bytes answers may carry at most, counted with [`Message::wire_size`]
/// and friends: pages, slices and lists are cut by this as well as by
/// count, so every answer fits a client frame (1 MiB) and a forwarded
/// result whatever the messages hold.
pub const REPLY_BYTES: usize = 256 << 10;

impl Message {
    /// A little over what the message takes on the wire (protobuf tags and
    /// lengths included): what the byte cuts count.
    pub fn wire_size(&self) -> usize {
        let media = self.media.as_ref().map_or(0, |a| 96 + a.name.len() + a.mime.len() + a.thumbs.len() * 24);
        let reactions: usize = self.reactions.iter().map(|r| 24 + r.emoji.len() + 10 * r.recent.len()).sum();
        96 + self.text.len() + media + reactions + if self.fwd.is_some() { 48 } else { 0 }
    }
}

impl Chat {
    pub fn wire_size(&self) -> usize {
        96 + self.title.len()
    }
}

impl Event {
    pub fn wire_size(&self) -> usize {
        32 + match &self.kind {
            EventKind::Deleted(ids) | EventKind::Joined(ids) | EventKind::Hidden { ids, .. } => 10 * ids.len(),
            EventKind::Title(t) => t.len(),
            _ => 16,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaKind {
    Photo,
    Document,
    Voice,
}

/// A file posted in a message, with what a client shows before it
/// downloads anything. Members of the chat may download the file through
/// this message (its chat and id are the file reference).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub file: u64,
    pub kind: MediaKind,
    pub name: String,
    pub mime: String,
    pub size: u64,
    pub sha256: crate::media::logic::Hash,
    pub thumbs: Vec<Thumb>,
    /// A voice note's length.
    pub duration_secs: u32,
}

/// One message of a forward: its text, its origin, and its media.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    pub text: String,
    pub fwd: Forwarded,
    pub media: Option<Attachment>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    pub from: u64,
    pub chat: u64,
    pub id: u64,
    pub date_ms: u64,
}

/// Forwards one request may carry.
pub const FORWARD_MAX: usize = 100;
/// Distinct reactions a message holds, and characters in one.
pub const REACTIONS_MAX: usize = 16;
pub const REACTION_CHARS: usize = 8;
/// Messages a search looks through (newest first) and returns.
pub const SEARCH_SCAN: u64 = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A message was posted.
    New(u64),
    Edited(u64),
    Deleted(Vec<u64>),
    /// `user` deleted these for themselves only; other members are told
    /// nothing (their difference and pushes show an empty event instead).
    Hidden { user: u64, ids: Vec<u64> },
    /// What another member's `Hidden` looks like to you.
    Nothing,
    /// `user` has read up to `max_id`.
    Read { user: u64, max_id: u64 },
    Joined(Vec<u64>),
    Left(u64),
    Title(String),
    Role { user: u64, role: Role },
    Pinned(u64),
    /// The message's reactions changed (the message carries them).
    Reactions(u64),
    // Events are rows and cross the wire: new kinds at the end.
    /// Subscribers joined a channel: each of them sees `Joined([themselves])`,
    /// everyone else `Nothing` (a channel shows counts, never who).
    SubscribersJoined(Vec<u64>),
    /// A subscriber left a channel: `Left` to them, `Nothing` to the others.
    SubscriberLeft(u64),
}

impl EventKind {
    /// Whether members see this event differently ([`event_for`]).
    pub fn per_member(&self) -> bool {
        matches!(self, EventKind::Hidden { .. } | EventKind::SubscribersJoined(_) | EventKind::SubscriberLeft(_))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub pts: u64,
    pub date_ms: u64,
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmd {
    /// Creates a chat with `id` (chosen by the proposer: deterministic for a
    /// private chat, random otherwise). Creating an existing chat again with
    /// the same creator is the first answer (a retry).
    Create { id: u64, kind: ChatKind, title: String, creator: u64, members: Vec<u64>, now_ms: u64 },
    Send { chat: u64, from: u64, random_id: u64, text: String, reply_to: u64, now_ms: u64 },
    Edit { chat: u64, by: u64, id: u64, text: String, now_ms: u64 },
    /// Deletes for everyone: the sender's own messages, or any as an admin.
    Delete { chat: u64, by: u64, ids: Vec<u64>, now_ms: u64 },
    /// Deletes for `user` only (any messages of the chat).
    Hide { chat: u64, user: u64, ids: Vec<u64>, now_ms: u64 },
    Read { chat: u64, user: u64, max_id: u64, now_ms: u64 },
    Invite { chat: u64, by: u64, users: Vec<u64>, now_ms: u64 },
    /// `by` removes `user` (an admin), or leaves (`by == user`).
    Remove { chat: u64, by: u64, user: u64, now_ms: u64 },
    SetTitle { chat: u64, by: u64, title: String, now_ms: u64 },
    SetRole { chat: u64, by: u64, user: u64, role: Role, now_ms: u64 },
    /// A forward as written before messages carried media (see `Forward`).
    ForwardV1 { chat: u64, from: u64, random_id: u64, items: Vec<(String, Forwarded)>, now_ms: u64 },
    /// Pins a message (admins in groups and channels; either side in a private chat); 0 unpins.
    Pin { chat: u64, by: u64, id: u64, now_ms: u64 },
    /// Sets the user's reaction to a message (empty: removes it).
    React { chat: u64, user: u64, id: u64, emoji: String, now_ms: u64 },
    /// The user's chat list, in the user's group.
    AddUserChat { user: u64, chat: u64 },
    RemoveUserChat { user: u64, chat: u64 },
    // Commands are in Raft logs: a changed command is a new variant at the
    // end, and the old one keeps applying.
    /// A photo, file or voice note with a caption (the proposer checked
    /// the sender may post the file).
    SendMedia { chat: u64, from: u64, random_id: u64, caption: String, reply_to: u64, media: Attachment, now_ms: u64 },
    /// Copies of messages (read from their chats by the proposer, which
    /// checked the sender may read them), posted in order; `random_id` names
    /// the whole forward.
    Forward { chat: u64, from: u64, random_id: u64, items: Vec<Copy>, now_ms: u64 },
    /// `by` blocks (`on`) or unblocks the other user of private chat `chat`
    /// (which need not exist yet): the other can no longer post there.
    Block { chat: u64, by: u64, on: bool },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// Messages with ids in `(after, before)`, newest first when paging back.
    History { chat: u64, user: u64, before: u64, after: u64, limit: u32 },
    /// Events after `pts` in each chat of this group the user is a member of.
    Difference { user: u64, chats: Vec<(u64, u64)> },
    /// Dialog entries (chat, membership, last message, unread) for these chats.
    Dialogs { user: u64, chats: Vec<u64> },
    /// The user's chat list (user's group).
    UserChats { user: u64 },
    /// Which of these chats `user` is a member of.
    Memberships { user: u64, chats: Vec<u64> },
    /// A chat's first members (bounded); `MembersAfter` pages.
    Members { chat: u64, user: u64, limit: u32 },
    /// Messages whose text contains `text` (case-insensitive), newest first.
    Search { chat: u64, user: u64, text: String, limit: u32 },
    /// Messages of a chat by id (forwarding reads its sources with this).
    Get { chat: u64, user: u64, ids: Vec<u64> },
    // Queries cross the wire to a group's leader: a new one is a new
    // variant at the end.
    /// A page of a chat's members: those with ids after `after` (0: from
    /// the first), in id order, at most `limit`.
    MembersAfter { chat: u64, user: u64, after: u64, limit: u32 },
    /// Search below message `before` (0: from the newest); `Search` is
    /// this with `before = 0`.
    SearchBefore { chat: u64, user: u64, text: String, limit: u32, before: u64 },
    /// The chat rows (dialog order) of those of these chats `user` is a
    /// member of: a dialog page is chosen from them before its last
    /// messages are read.
    ChatRows { user: u64, chats: Vec<u64> },
    /// Who reacted with what to a message, in user-id order after `after`.
    Reactors { chat: u64, user: u64, id: u64, after: u64, limit: u32 },
    /// Which of `users` are members of `chat`, with the chat's kind (whom
    /// a user may see: `get_users`). Asked by the node, not a client: no
    /// caller's membership is checked.
    MembersIn { chat: u64, users: Vec<u64> },
    /// `History`, answered as a `Page` (whether the range went on).
    HistoryPage { chat: u64, user: u64, before: u64, after: u64, limit: u32 },
    /// `Difference` that leaves out chats with nothing new and stops when
    /// its answer is full, saying how many chats it looked at.
    DifferenceBounded { user: u64, chats: Vec<(u64, u64)> },
    /// Of these private chats, those where someone other than `user`
    /// blocked (`Reply::Chats`): who would refuse `user`'s invitation.
    BlockedAgainst { user: u64, chats: Vec<u64> },
    /// `DifferenceBounded` with the read position each device knows, as
    /// (chat, pts, read_max_id): a channel where the user's read moved past
    /// it is answered `ChatDiff::Read` too (reads in a channel are no events).
    DifferenceReads { user: u64, chats: Vec<(u64, u64, u64)> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dialog {
    pub chat: Chat,
    pub me: Member,
    pub last: Option<Message>,
    pub unread: u64,
}

/// One chat's part of a difference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatDiff {
    /// The events after the device's `pts`, oldest first, with the messages
    /// they name as they are now; `more` when the slice was cut.
    Events { chat: Chat, events: Vec<Event>, messages: Vec<Message>, more: bool },
    /// Too far behind: the chat as it is now and its newest messages; the
    /// device drops what it has of the chat and starts from `chat.pts`.
    TooLong { chat: Chat, messages: Vec<Message>, read_max_id: u64 },
    /// Not (any more) a member: the device forgets the chat.
    Gone { chat: u64 },
    // Cross the wire: new kinds at the end.
    /// The user's read position in a channel, after their other device read
    /// (right after the chat's `Events`, if any).
    Read { chat: Chat, read_max_id: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// What a change did: the chat after it, the event(s), and the message
    /// concerned (for live delivery).
    Changed { chat: Chat, events: Vec<Event>, message: Option<Message> },
    Messages(Vec<Message>),
    Difference(Vec<ChatDiff>),
    Dialogs(Vec<Dialog>),
    Chats(Vec<u64>),
    Members(Vec<(u64, Member)>),
    Done,
    // Replies cross the wire too: new ones at the end.
    /// A page that was cut before its range ended (by count or bytes).
    Page { messages: Vec<Message>, more: bool },
    ChatRows(Vec<Chat>),
    Reactors(Vec<(u64, String)>),
    MembersIn { kind: ChatKind, members: Vec<(u64, Member)> },
    /// The chats of a bounded difference with something new, and how many
    /// of the chats asked (in order) it looked at; the rest come next time.
    DifferenceBounded { diffs: Vec<ChatDiff>, looked: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ChatError {
    /// Also the answer for a chat that does not exist: no leak of which.
    #[error("you are not a member of this chat")]
    NotAMember,
    #[error("only admins can do that")]
    AdminRequired,
    #[error("message text is over {MESSAGE_MAX} characters")]
    MessageTooLong,
    #[error("a media caption is over {CAPTION_MAX} characters")]
    CaptionTooLong,
    #[error("no such message in this chat")]
    MessageNotFound,
    #[error("messages can be edited for 48 hours")]
    EditTimeExpired,
    #[error("only the sender can do that to a message")]
    AuthorRequired,
    #[error("{0}")]
    BadRequest(String),
    // Outcomes cross the wire: new refusals at the end.
    /// Over a per-user budget (docs/security.md); wait this long.
    #[error("too many at once; wait {secs} s")]
    FloodWait { secs: u32 },
    /// The other user blocked you: no private messages, no invitations.
    #[error("this user does not accept messages or invitations from you")]
    UserBlocked,
    /// The user's chat list is full ([`USER_CHATS_MAX`]).
    #[error("a user is in {USER_CHATS_MAX} chats already; they must leave some first")]
    TooManyChats,
}

impl ChatError {
    pub fn code(&self) -> courier_proto::Code {
        match self {
            ChatError::NotAMember => courier_proto::Code::NotAMember,
            ChatError::AdminRequired => courier_proto::Code::AdminRequired,
            ChatError::MessageTooLong => courier_proto::Code::MessageTooLong,
            ChatError::CaptionTooLong => courier_proto::Code::MediaCaptionTooLong,
            ChatError::MessageNotFound => courier_proto::Code::MessageNotFound,
            ChatError::EditTimeExpired => courier_proto::Code::EditTimeExpired,
            ChatError::AuthorRequired => courier_proto::Code::MessageAuthorRequired,
            ChatError::BadRequest(_) => courier_proto::Code::BadRequest,
            ChatError::FloodWait { .. } => courier_proto::Code::FloodWait,
            ChatError::UserBlocked => courier_proto::Code::UserIsBlocked,
            ChatError::TooManyChats => courier_proto::Code::ChatsTooMuch,
        }
    }
}

pub type Outcome = std::result::Result<Reply, ChatError>;

#[cfg(test)]
mod tests;
