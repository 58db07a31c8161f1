//! Chats as replicated ordered logs: the pure decisions. A chat's record, its
//! members, its messages and its event log live in the data group its id
//! names (the low 16 bits), so a send is one Raft command in one group.
//!
//! * Message ids are 1, 2, 3, … per chat, never reused; a deleted message
//!   stays as a tombstone (G2).
//! * Every change (new message, edit, deletion, read position, membership,
//!   title) is an event with the chat's next `pts`; a device syncs a chat by
//!   asking for the events after the `pts` it has (G4). A post to a channel
//!   with 100,000 subscribers writes one message and one event, not 100,000.
//! * A send carries the sender's `random_id`; the same (chat, sender,
//!   random_id) returns the first message (G3).
//! * The user's chat list lives in the user's own group (`UserChats`); it is a
//!   superset hint (written before a join, removed after a leave), and the
//!   chat's member row is the authority.
//!
//! Keys (`m/…`, ids big-endian): `m/c/<chat>` chat, `m/mem/<chat><user>`
//! member, `m/msg/<chat><id>` message, `m/ev/<chat><pts>` event,
//! `m/rid/<chat><user><random_id>` dedup, `m/uchat/<user><chat>` a chat in
//! the user's list (`m/uchatn/<user>` their count; `m/uchats/<user>`, one
//! value with the whole list, is the format before rows: moved by the next
//! add or removal).

use courier_proto::Code;
use serde::{Deserialize, Serialize};

use courier_raft::logic::{StateRead, StateView};

use crate::error::Result;
use crate::media::logic::Thumb;
use crate::state::{Evolved, get, get_row, id_after, key, put, put_row};

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
            ChatError::NotAMember => Code::NotAMember,
            ChatError::AdminRequired => Code::AdminRequired,
            ChatError::MessageTooLong => Code::MessageTooLong,
            ChatError::CaptionTooLong => Code::MediaCaptionTooLong,
            ChatError::MessageNotFound => Code::MessageNotFound,
            ChatError::EditTimeExpired => Code::EditTimeExpired,
            ChatError::AuthorRequired => Code::MessageAuthorRequired,
            ChatError::BadRequest(_) => Code::BadRequest,
            ChatError::FloodWait { .. } => Code::FloodWait,
            ChatError::UserBlocked => Code::UserIsBlocked,
            ChatError::TooManyChats => Code::ChatsTooMuch,
        }
    }
}

pub type Outcome = std::result::Result<Reply, ChatError>;

// ---- keys ----

fn chat_key(chat: u64) -> Vec<u8> {
    key(b"m/c/", &[chat])
}
/// Who blocked the other user of a private chat (`Vec<u64>`, at most two).
fn blockers_key(chat: u64) -> Vec<u8> {
    key(b"m/blk/", &[chat])
}

/// Whether someone other than `user` blocked in private chat `chat`.
fn blocked_against(view: &dyn StateRead, chat: u64, user: u64) -> Result<bool> {
    Ok(get::<Vec<u64>>(view, &blockers_key(chat))?.unwrap_or_default().iter().any(|b| *b != user))
}

fn member_key(chat: u64, user: u64) -> Vec<u8> {
    key(b"m/mem/", &[chat, user])
}
/// The prefix of a chat's member rows ([`member_key`] without the user).
fn members_prefix(chat: u64) -> Vec<u8> {
    key(b"m/mem/", &[chat])
}
fn msg_key(chat: u64, id: u64) -> Vec<u8> {
    key(b"m/msg/", &[chat, id])
}
fn event_key(chat: u64, pts: u64) -> Vec<u8> {
    key(b"m/ev/", &[chat, pts])
}
fn rid_key(chat: u64, user: u64, random_id: u64) -> Vec<u8> {
    key(b"m/rid/", &[chat, user, random_id])
}
fn hidden_key(chat: u64, user: u64) -> Vec<u8> {
    key(b"m/hide/", &[chat, user])
}
/// A user's chat list as one value (before chat lists were rows): read,
/// and moved to rows by the user's next add or removal.
fn user_chats_key(user: u64) -> Vec<u8> {
    key(b"m/uchats/", &[user])
}
/// A chat in the user's list: one row per chat, so an add writes one small row.
fn user_chat_key(user: u64, chat: u64) -> Vec<u8> {
    key(b"m/uchat/", &[user, chat])
}
/// The prefix of a user's chat rows ([`user_chat_key`] without the chat).
fn user_chats_prefix(user: u64) -> Vec<u8> {
    key(b"m/uchat/", &[user])
}
/// How many chats the user's list holds (its rows).
fn user_chats_count_key(user: u64) -> Vec<u8> {
    key(b"m/uchatn/", &[user])
}
/// How many subscribers read a channel post.
fn views_key(chat: u64, id: u64) -> Vec<u8> {
    key(b"m/views/", &[chat, id])
}
/// A user's reaction to a message (the emoji).
fn reaction_key(chat: u64, id: u64, user: u64) -> Vec<u8> {
    key(b"m/react/", &[chat, id, user])
}

/// Text the brief allows: at most `max` characters, not blank.
pub fn check_text(text: &str, max: usize) -> std::result::Result<(), ChatError> {
    if text.chars().count() > max {
        return Err(if max == MESSAGE_MAX { ChatError::MessageTooLong } else { ChatError::BadRequest(format!("at most {max} characters")) });
    }
    if text.trim().is_empty() {
        return Err(ChatError::BadRequest("empty text".into()));
    }
    Ok(())
}

/// A message's text: a caption (at most `CAPTION_MAX`, may be empty) when
/// it carries media.
fn check_body(text: &str, media: bool) -> std::result::Result<(), ChatError> {
    match media {
        false => check_text(text, MESSAGE_MAX),
        true if text.chars().count() > CAPTION_MAX => Err(ChatError::CaptionTooLong),
        true => Ok(()),
    }
}

/// The chat and the caller's membership, or `NotAMember` (for a chat that
/// does not exist too).
fn membership(view: &dyn StateRead, chat: u64, user: u64) -> Result<std::result::Result<(Chat, Member), ChatError>> {
    let Some(c) = get::<Chat>(view, &chat_key(chat))? else { return Ok(Err(ChatError::NotAMember)) };
    Ok(match get::<Member>(view, &member_key(chat, user))? {
        Some(m) => Ok((c, m)),
        None => Err(ChatError::NotAMember),
    })
}

/// Appends an event and saves the chat.
fn record(view: &mut dyn StateView, chat: &mut Chat, kind: EventKind, now_ms: u64) -> Event {
    chat.pts += 1;
    let ev = Event { pts: chat.pts, date_ms: now_ms, kind };
    put(view, &event_key(chat.id, ev.pts), &ev);
    put(view, &chat_key(chat.id), chat);
    if chat.pts > EVENTS_KEPT {
        view.delete(&event_key(chat.id, chat.pts - EVENTS_KEPT));
    }
    ev
}

fn changed(chat: Chat, events: Vec<Event>, message: Option<Message>) -> Result<Outcome> {
    Ok(Ok(Reply::Changed { chat, events, message }))
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        }
    };
}

/// Posts one message (text, or media with a caption).
#[allow(clippy::too_many_arguments)]
fn send(view: &mut dyn StateView, chat: u64, from: u64, random_id: u64, text: &str, reply_to: u64, media: Option<&Attachment>, now_ms: u64) -> Result<Outcome> {
    let (mut c, me) = tri!(membership(view, chat, from)?);
    if let Some(id) = get::<u64>(view, &rid_key(chat, from, random_id))? {
        let first = get_row::<Message>(view, &msg_key(chat, id))?;
        return Ok(Ok(Reply::Changed { chat: c, events: Vec::new(), message: first }));
    }
    if c.kind == ChatKind::Channel && me.role == Role::Member {
        return Ok(Err(ChatError::AdminRequired));
    }
    if c.kind == ChatKind::Private && blocked_against(view, chat, from)? {
        return Ok(Err(ChatError::UserBlocked));
    }
    tri!(check_body(text, media.is_some()));
    if reply_to > c.last_id {
        return Ok(Err(ChatError::MessageNotFound));
    }
    c.last_id += 1;
    c.last_ms = now_ms;
    let m = Message { id: c.last_id, from, date_ms: now_ms, text: text.to_owned(), reply_to, edit_ms: 0, deleted: false, fwd: None, reactions: Vec::new(), media: media.cloned(), unrowed: Vec::new(), views: 0 };
    put_row(view, &msg_key(chat, m.id), &m);
    put(view, &rid_key(chat, from, random_id), &m.id);
    // The sender has read their own message.
    put(view, &member_key(chat, from), &Member { read_max_id: m.id, ..me });
    let ev = record(view, &mut c, EventKind::New(m.id), now_ms);
    changed(c, vec![ev], Some(m))
}

/// Posts copies of messages in order; `random_id` names the whole forward.
fn forward(view: &mut dyn StateView, chat: u64, from: u64, random_id: u64, items: Vec<Copy>, now_ms: u64) -> Result<Outcome> {
    let (mut c, me) = tri!(membership(view, chat, from)?);
    if let Some(first) = get::<u64>(view, &rid_key(chat, from, random_id))? {
        let n = items.len() as u64;
        let last = get_row::<Message>(view, &msg_key(chat, first + n.saturating_sub(1)))?;
        return changed(c, Vec::new(), last);
    }
    if c.kind == ChatKind::Channel && me.role == Role::Member {
        return Ok(Err(ChatError::AdminRequired));
    }
    if items.is_empty() || items.len() > FORWARD_MAX {
        return Ok(Err(ChatError::BadRequest(format!("forward 1 to {FORWARD_MAX} messages at once"))));
    }
    if c.kind == ChatKind::Private && blocked_against(view, chat, from)? {
        return Ok(Err(ChatError::UserBlocked));
    }
    let n = items.len() as u64;
    let mut events = Vec::new();
    let mut last = None;
    for Copy { text, fwd, media } in items {
        c.last_id += 1;
        let m = Message { id: c.last_id, from, date_ms: now_ms, text, reply_to: 0, edit_ms: 0, deleted: false, fwd: Some(fwd), reactions: Vec::new(), media, unrowed: Vec::new(), views: 0 };
        put_row(view, &msg_key(chat, m.id), &m);
        events.push(record(view, &mut c, EventKind::New(m.id), now_ms));
        last = Some(m);
    }
    let first = c.last_id + 1 - n;
    put(view, &rid_key(chat, from, random_id), &first);
    c.last_ms = now_ms;
    put(view, &chat_key(chat), &c);
    put(view, &member_key(chat, from), &Member { read_max_id: c.last_id, ..me });
    changed(c, events, last)
}

/// Applies one messaging command.
/// `Err` only for storage failures; every
/// refusal is an `Ok(Err(..))` and writes nothing. Each command recognizes a
/// repeat of itself (a retried request) and answers as the first time.
pub fn apply(view: &mut dyn StateView, cmd: &Cmd) -> Result<Outcome> {
    match cmd {
        Cmd::Create { id, kind, title, creator, members, now_ms } => {
            if let Some(c) = get::<Chat>(view, &chat_key(*id))? {
                if c.creator == *creator && c.kind == *kind {
                    return changed(c, Vec::new(), None);
                }
                return Ok(Err(ChatError::BadRequest("chat id taken; try again".into())));
            }
            let mut all: Vec<u64> = vec![*creator];
            for m in members {
                if !all.contains(m) {
                    all.push(*m);
                }
            }
            match kind {
                ChatKind::Private if all.len() != 2 => return Ok(Err(ChatError::BadRequest("a private chat has two members".into()))),
                ChatKind::Group if all.len() as u64 > GROUP_MAX => return Ok(Err(ChatError::BadRequest(format!("a group has at most {GROUP_MAX} members")))),
                ChatKind::Group | ChatKind::Channel => tri!(check_text(title, TITLE_MAX)),
                ChatKind::Private => {}
            }
            let mut chat = Chat { id: *id, kind: *kind, title: title.clone(), creator: *creator, created_ms: *now_ms, last_id: 0, pts: 0, members: all.len() as u64, last_ms: *now_ms, pinned: 0 };
            for u in &all {
                let role = if *u == *creator && *kind != ChatKind::Private { Role::Creator } else { Role::Member };
                put(view, &member_key(*id, *u), &Member { role, joined_ms: *now_ms, read_max_id: 0 });
            }
            // A channel's first subscribers see only themselves join.
            let kind = if *kind == ChatKind::Channel { EventKind::SubscribersJoined(all) } else { EventKind::Joined(all) };
            let ev = record(view, &mut chat, kind, *now_ms);
            changed(chat, vec![ev], None)
        }
        Cmd::Send { chat, from, random_id, text, reply_to, now_ms } => send(view, *chat, *from, *random_id, text, *reply_to, None, *now_ms),
        Cmd::SendMedia { chat, from, random_id, caption, reply_to, media, now_ms } => send(view, *chat, *from, *random_id, caption, *reply_to, Some(media), *now_ms),
        Cmd::Edit { chat, by, id, text, now_ms } => {
            let (mut c, _) = tri!(membership(view, *chat, *by)?);
            let Some(mut m) = get_row::<Message>(view, &msg_key(*chat, *id))?.filter(|m| !m.deleted) else {
                return Ok(Err(ChatError::MessageNotFound));
            };
            if m.from != *by {
                return Ok(Err(ChatError::AuthorRequired));
            }
            if m.text == *text {
                return changed(c, Vec::new(), Some(m)); // a repeat, or nothing to change
            }
            if now_ms.saturating_sub(m.date_ms) > EDIT_WINDOW_MS {
                return Ok(Err(ChatError::EditTimeExpired));
            }
            tri!(check_body(text, m.media.is_some()));
            m.text = text.clone();
            m.edit_ms = *now_ms;
            put_row(view, &msg_key(*chat, *id), &m);
            let ev = record(view, &mut c, EventKind::Edited(*id), *now_ms);
            changed(c, vec![ev], Some(m))
        }
        Cmd::Delete { chat, by, ids, now_ms } => {
            let (mut c, me) = tri!(membership(view, *chat, *by)?);
            if ids.is_empty() || ids.len() > PAGE_MAX {
                return Ok(Err(ChatError::BadRequest(format!("delete 1 to {PAGE_MAX} messages at once"))));
            }
            let mut doomed = Vec::new();
            for id in ids {
                let Some(m) = get_row::<Message>(view, &msg_key(*chat, *id))? else { return Ok(Err(ChatError::MessageNotFound)) };
                if m.deleted || doomed.iter().any(|d: &Message| d.id == m.id) {
                    continue; // already a tombstone: a repeat
                }
                if m.from != *by && me.role == Role::Member {
                    return Ok(Err(ChatError::AdminRequired));
                }
                doomed.push(m);
            }
            if doomed.is_empty() {
                return changed(c, Vec::new(), None);
            }
            let gone: Vec<u64> = doomed.iter().map(|m| m.id).collect();
            for m in doomed {
                put_row(view, &msg_key(*chat, m.id), &Message { text: String::new(), deleted: true, edit_ms: *now_ms, reactions: Vec::new(), fwd: None, media: None, unrowed: Vec::new(), ..m });
            }
            let ev = record(view, &mut c, EventKind::Deleted(gone), *now_ms);
            changed(c, vec![ev], None)
        }
        Cmd::Hide { chat, user, ids, now_ms } => {
            let (mut c, _) = tri!(membership(view, *chat, *user)?);
            if ids.is_empty() || ids.len() > PAGE_MAX {
                return Ok(Err(ChatError::BadRequest(format!("delete 1 to {PAGE_MAX} messages at once"))));
            }
            if ids.iter().any(|id| *id == 0 || *id > c.last_id) {
                return Ok(Err(ChatError::MessageNotFound));
            }
            let mut hidden: Vec<u64> = get(view, &hidden_key(*chat, *user))?.unwrap_or_default();
            let mut new: Vec<u64> = ids.iter().copied().filter(|id| hidden.binary_search(id).is_err()).collect();
            new.sort_unstable();
            new.dedup();
            if new.is_empty() {
                return changed(c, Vec::new(), None);
            }
            hidden.extend(&new);
            hidden.sort_unstable();
            put(view, &hidden_key(*chat, *user), &hidden);
            let ev = record(view, &mut c, EventKind::Hidden { user: *user, ids: new }, *now_ms);
            changed(c, vec![ev], None)
        }
        Cmd::Read { chat, user, max_id, now_ms } => {
            let (mut c, me) = tri!(membership(view, *chat, *user)?);
            let max_id = (*max_id).min(c.last_id);
            if max_id <= me.read_max_id {
                return changed(c, Vec::new(), None);
            }
            put(view, &member_key(*chat, *user), &Member { read_max_id: max_id, ..me });
            if c.kind == ChatKind::Channel {
                // The reader's own state only: no event for the others
                // (their devices learn it by `Notice::OwnRead` and
                // difference); the posts read count one more view each,
                // the newest [`VIEWS_PER_READ`] of them.
                let from = me.read_max_id.max(max_id.saturating_sub(VIEWS_PER_READ)) + 1;
                for id in from..=max_id {
                    let n = get::<u64>(view, &views_key(*chat, id))?.unwrap_or(0);
                    put(view, &views_key(*chat, id), &(n + 1));
                }
                return changed(c, Vec::new(), None);
            }
            let ev = record(view, &mut c, EventKind::Read { user: *user, max_id }, *now_ms);
            changed(c, vec![ev], None)
        }
        Cmd::Invite { chat, by, users, now_ms } => {
            let (mut c, me) = tri!(membership(view, *chat, *by)?);
            match c.kind {
                ChatKind::Private => return Ok(Err(ChatError::BadRequest("a private chat has two members".into()))),
                ChatKind::Channel if me.role == Role::Member => return Ok(Err(ChatError::AdminRequired)),
                _ => {}
            }
            let mut added = Vec::new();
            for u in users {
                if get::<Member>(view, &member_key(*chat, *u))?.is_none() && !added.contains(u) {
                    added.push(*u);
                }
            }
            if c.kind == ChatKind::Group && c.members + added.len() as u64 > GROUP_MAX {
                return Ok(Err(ChatError::BadRequest(format!("a group has at most {GROUP_MAX} members"))));
            }
            if added.is_empty() {
                return changed(c, Vec::new(), None);
            }
            for u in &added {
                // New members see the history from here on as unread only from now.
                put(view, &member_key(*chat, *u), &Member { role: Role::Member, joined_ms: *now_ms, read_max_id: c.last_id });
            }
            c.members += added.len() as u64;
            let kind = if c.kind == ChatKind::Channel { EventKind::SubscribersJoined(added) } else { EventKind::Joined(added) };
            let ev = record(view, &mut c, kind, *now_ms);
            changed(c, vec![ev], None)
        }
        Cmd::Remove { chat, by, user, now_ms } => {
            let (mut c, me) = tri!(membership(view, *chat, *by)?);
            if c.kind == ChatKind::Private {
                return Ok(Err(ChatError::BadRequest("you cannot leave a private chat; delete it instead".into())));
            }
            let Some(them) = get::<Member>(view, &member_key(*chat, *user))? else { return changed(c, Vec::new(), None) };
            if by != user && (me.role == Role::Member || them.role >= me.role) {
                return Ok(Err(ChatError::AdminRequired));
            }
            view.delete(&member_key(*chat, *user));
            c.members -= 1;
            let kind = if c.kind == ChatKind::Channel && them.role == Role::Member { EventKind::SubscriberLeft(*user) } else { EventKind::Left(*user) };
            let ev = record(view, &mut c, kind, *now_ms);
            changed(c, vec![ev], None)
        }
        Cmd::SetTitle { chat, by, title, now_ms } => {
            let (mut c, me) = tri!(membership(view, *chat, *by)?);
            if c.kind == ChatKind::Private {
                return Ok(Err(ChatError::BadRequest("a private chat has no title".into())));
            }
            if me.role == Role::Member {
                return Ok(Err(ChatError::AdminRequired));
            }
            tri!(check_text(title, TITLE_MAX));
            if c.title == *title {
                return changed(c, Vec::new(), None);
            }
            c.title = title.clone();
            let ev = record(view, &mut c, EventKind::Title(title.clone()), *now_ms);
            changed(c, vec![ev], None)
        }
        Cmd::SetRole { chat, by, user, role, now_ms } => {
            let (mut c, me) = tri!(membership(view, *chat, *by)?);
            if me.role != Role::Creator || *role == Role::Creator || c.kind == ChatKind::Private {
                return Ok(Err(ChatError::AdminRequired));
            }
            let Some(them) = get::<Member>(view, &member_key(*chat, *user))? else { return Ok(Err(ChatError::BadRequest("not a member of the chat".into()))) };
            if them.role == *role || them.role == Role::Creator {
                return changed(c, Vec::new(), None);
            }
            put(view, &member_key(*chat, *user), &Member { role: *role, ..them });
            let ev = record(view, &mut c, EventKind::Role { user: *user, role: *role }, *now_ms);
            changed(c, vec![ev], None)
        }
        Cmd::ForwardV1 { chat, from, random_id, items, now_ms } => {
            let items = items.iter().map(|(text, fwd)| Copy { text: text.clone(), fwd: fwd.clone(), media: None }).collect();
            forward(view, *chat, *from, *random_id, items, *now_ms)
        }
        Cmd::Forward { chat, from, random_id, items, now_ms } => forward(view, *chat, *from, *random_id, items.clone(), *now_ms),
        Cmd::Block { chat, by, on } => {
            let mut blockers: Vec<u64> = get(view, &blockers_key(*chat))?.unwrap_or_default();
            blockers.retain(|b| b != by);
            if *on {
                blockers.push(*by);
            }
            if blockers.is_empty() {
                view.delete(&blockers_key(*chat));
            } else {
                put(view, &blockers_key(*chat), &blockers);
            }
            Ok(Ok(Reply::Done))
        }
        Cmd::Pin { chat, by, id, now_ms } => {
            let (mut c, me) = tri!(membership(view, *chat, *by)?);
            if c.kind != ChatKind::Private && me.role == Role::Member {
                return Ok(Err(ChatError::AdminRequired));
            }
            if *id != 0 && get_row::<Message>(view, &msg_key(*chat, *id))?.is_none_or(|m| m.deleted) {
                return Ok(Err(ChatError::MessageNotFound));
            }
            if c.pinned == *id {
                return changed(c, Vec::new(), None);
            }
            c.pinned = *id;
            let ev = record(view, &mut c, EventKind::Pinned(*id), *now_ms);
            changed(c, vec![ev], None)
        }
        Cmd::React { chat, user, id, emoji, now_ms } => {
            let (mut c, _) = tri!(membership(view, *chat, *user)?);
            if emoji.chars().count() > REACTION_CHARS || emoji.chars().any(|ch| ch.is_control() || ch.is_whitespace()) {
                return Ok(Err(ChatError::BadRequest(format!("a reaction is up to {REACTION_CHARS} characters, no spaces"))));
            }
            let Some(mut m) = get_row::<Message>(view, &msg_key(*chat, *id))?.filter(|m| !m.deleted) else {
                return Ok(Err(ChatError::MessageNotFound));
            };
            // The user's reaction now: its row, or (a message from before
            // format 3) its place in the old list.
            let unrowed = std::mem::take(&mut m.unrowed);
            let old = match get::<String>(view, &reaction_key(*chat, *id, *user))? {
                Some(e) => Some(e),
                None => unrowed.iter().find(|(u, _)| u == user).map(|(_, e)| e.clone()),
            };
            let channel = c.kind == ChatKind::Channel;
            if old.as_deref().unwrap_or("") == emoji.as_str() {
                m.unrowed = unrowed;
                if channel {
                    unname(&mut m);
                }
                return changed(c, Vec::new(), Some(m)); // a repeat, or nothing to change
            }
            if let Some(old) = &old
                && let Some(i) = m.reactions.iter().position(|r| r.emoji == *old)
            {
                let r = &mut m.reactions[i];
                r.count = r.count.saturating_sub(1);
                r.recent.retain(|u| u != user);
                if r.count == 0 {
                    m.reactions.remove(i);
                }
            }
            if !emoji.is_empty() {
                let i = match m.reactions.iter().position(|r| r.emoji == *emoji) {
                    Some(i) => i,
                    None if m.reactions.len() < REACTIONS_MAX => {
                        m.reactions.push(Reaction { emoji: emoji.clone(), count: 0, recent: Vec::new() });
                        m.reactions.len() - 1
                    }
                    None => return Ok(Err(ChatError::BadRequest(format!("a message holds at most {REACTIONS_MAX} different reactions")))),
                };
                let r = &mut m.reactions[i];
                r.count += 1;
                r.recent.retain(|u| u != user);
                r.recent.insert(0, *user);
                r.recent.truncate(RECENT_REACTORS);
            }
            for (u, e) in unrowed.iter().filter(|(u, _)| u != user) {
                put(view, &reaction_key(*chat, *id, *u), e);
            }
            match emoji.is_empty() {
                true => view.delete(&reaction_key(*chat, *id, *user)),
                false => put(view, &reaction_key(*chat, *id, *user), emoji),
            }
            if channel {
                // Counts only, and no event: a reaction does not go out
                // to every subscriber (they see counts when they load the post).
                unname(&mut m);
                put_row(view, &msg_key(*chat, *id), &m);
                return changed(c, Vec::new(), Some(m));
            }
            put_row(view, &msg_key(*chat, *id), &m);
            let ev = record(view, &mut c, EventKind::Reactions(*id), *now_ms);
            changed(c, vec![ev], Some(m))
        }
        Cmd::AddUserChat { user, chat } => {
            let old = old_user_chats(view, *user)?;
            if old.contains(chat) || view.get(&user_chat_key(*user, *chat))?.is_some() {
                return Ok(Ok(Reply::Done));
            }
            let n = user_chats_count(view, *user, &old)?;
            if n >= USER_CHATS_MAX {
                return Ok(Err(ChatError::TooManyChats));
            }
            move_user_chats(view, *user, &old);
            put(view, &user_chat_key(*user, *chat), &());
            put(view, &user_chats_count_key(*user), &(n + 1));
            Ok(Ok(Reply::Done))
        }
        Cmd::RemoveUserChat { user, chat } => {
            let old = old_user_chats(view, *user)?;
            move_user_chats(view, *user, &old);
            if old.contains(chat) || view.get(&user_chat_key(*user, *chat))?.is_some() {
                let n = user_chats_count(view, *user, &old)?;
                view.delete(&user_chat_key(*user, *chat));
                put(view, &user_chats_count_key(*user), &n.saturating_sub(1));
            }
            Ok(Ok(Reply::Done))
        }
    }
}

/// The user's chat list as written before it was rows (empty once moved).
fn old_user_chats(view: &dyn StateRead, user: u64) -> Result<Vec<u64>> {
    Ok(get(view, &user_chats_key(user))?.unwrap_or_default())
}

/// How many chats the user's list holds: its count row, or the length of
/// a list not moved to rows yet (`old`).
fn user_chats_count(view: &dyn StateRead, user: u64, old: &[u64]) -> Result<u64> {
    Ok(get::<u64>(view, &user_chats_count_key(user))?.unwrap_or(old.len() as u64))
}

/// Moves an old one-value chat list to rows (a user's first add or removal
/// since the upgrade), with its count.
fn move_user_chats(view: &mut dyn StateView, user: u64, old: &[u64]) {
    if old.is_empty() {
        return;
    }
    for c in old {
        put(view, &user_chat_key(user, *c), &());
    }
    view.delete(&user_chats_key(user));
    put(view, &user_chats_count_key(user), &(old.len() as u64));
}

/// The messages `user` deleted for themselves in `chat` (sorted).
fn hidden(view: &dyn StateRead, chat: u64, user: u64) -> Result<Vec<u64>> {
    Ok(get(view, &hidden_key(chat, user))?.unwrap_or_default())
}

/// How one member sees an event: another member's `Hidden` is `Nothing`,
/// and so are other subscribers' joins and leaves in a channel.
pub fn event_for(e: Event, user: u64) -> Event {
    let kind = match e.kind {
        EventKind::Hidden { user: u, .. } if u != user => EventKind::Nothing,
        EventKind::SubscribersJoined(users) => match users.contains(&user) {
            true => EventKind::Joined(vec![user]),
            false => EventKind::Nothing,
        },
        EventKind::SubscriberLeft(u) if u == user => EventKind::Left(u),
        EventKind::SubscriberLeft(_) => EventKind::Nothing,
        kind => kind,
    };
    Event { kind, ..e }
}

/// Channel posts carry their view counts (rows of their own).
fn with_views(view: &dyn StateRead, c: &Chat, messages: &mut [Message]) -> Result<()> {
    if c.kind == ChatKind::Channel {
        for m in messages {
            m.views = get::<u64>(view, &views_key(c.id, m.id))?.unwrap_or(0);
            // Rows from before channels hid reactors may still name some.
            unname(m);
        }
    }
    Ok(())
}

/// How a member sees an event of a chat of `kind`: [`event_for`], and in a
/// channel also events written before channels hid their subscribers
/// (others' reads, joins and leaves) name nobody but the member.
pub fn event_in(e: Event, user: u64, kind: ChatKind) -> Event {
    let e = event_for(e, user);
    if kind != ChatKind::Channel {
        return e;
    }
    let kind = match e.kind {
        EventKind::Read { user: u, .. } if u != user => EventKind::Nothing,
        EventKind::Left(u) if u != user => EventKind::Nothing,
        EventKind::Joined(users) if users.contains(&user) => EventKind::Joined(vec![user]),
        EventKind::Joined(_) => EventKind::Nothing,
        kind => kind,
    };
    Event { kind, ..e }
}

/// A channel's post names no reactor (counts only).
fn unname(m: &mut Message) {
    for r in &mut m.reactions {
        r.recent.clear();
    }
}

fn messages(view: &dyn StateRead, chat: u64, ids: impl Iterator<Item = u64>) -> Result<Vec<Message>> {
    let mut out = Vec::new();
    for id in ids {
        if let Some(m) = get_row::<Message>(view, &msg_key(chat, id))? {
            out.push(m);
        }
    }
    Ok(out)
}

/// Messages after `read_max_id` not sent by `user` (bounded by what a badge shows).
fn unread(view: &dyn StateRead, chat: &Chat, user: u64, read_max_id: u64) -> Result<u64> {
    let from = read_max_id.max(chat.last_id.saturating_sub(999)) + 1;
    let mut n = 0;
    for m in messages(view, chat.id, from..=chat.last_id)? {
        if m.from != user && !m.deleted {
            n += 1;
        }
    }
    Ok(n)
}

/// A page of a chat's members, read from its member rows in user-id order:
/// a page costs its length, whatever the chat's history (before, the list
/// was rebuilt from every event the chat ever had). A channel's subscriber
/// list is for its admins, as in Telegram.
fn members(view: &dyn StateRead, chat: u64, user: u64, after: u64, limit: u32) -> Result<Outcome> {
    let (c, me) = tri!(membership(view, chat, user)?);
    if c.kind == ChatKind::Channel && me.role == Role::Member {
        return Ok(Err(ChatError::AdminRequired));
    }
    let prefix = members_prefix(chat);
    let from = if after == 0 { Vec::new() } else { member_key(chat, after) };
    let rows = view.scan(&prefix, &from, limit.clamp(1, MEMBERS_PAGE_MAX) as usize)?;
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        let id = id_after(&k, prefix.len()).ok_or_else(|| crate::error::Error::Io(format!("a member row of chat {chat} with a malformed key")))?;
        out.push((id, courier_raft::codec::decode(&v)?));
    }
    Ok(Ok(Reply::Members(out)))
}

/// The bytes an answer may still carry. The first item always goes (one
/// message, event or dialog is bounded and fits a frame), so a page cut by
/// its budget still moves its reader on.
#[derive(Debug)]
pub struct Budget {
    left: usize,
    taken: bool,
}

impl Budget {
    pub fn new(bytes: usize) -> Budget {
        Budget { left: bytes, taken: false }
    }

    /// Takes `size` bytes if they fit (or if nothing was taken yet).
    pub fn take(&mut self, size: usize) -> bool {
        if size > self.left && self.taken {
            return false;
        }
        self.left = self.left.saturating_sub(size);
        self.taken = true;
        true
    }

    /// Counts `size` bytes that go whatever they weigh (an item made to
    /// fit what was left, with a floor).
    pub fn charge(&mut self, size: usize) {
        self.left = self.left.saturating_sub(size);
        self.taken = true;
    }

    /// Nothing more fits (but a first item).
    pub fn spent(&self) -> bool {
        self.left == 0 && self.taken
    }

    pub fn left(&self) -> usize {
        self.left
    }
}

/// Messages with these ids that `user` has not hidden and `keep` accepts,
/// up to `limit` and [`REPLY_BYTES`]; `more` when ids were left.
fn page(view: &dyn StateRead, chat: u64, user: u64, ids: impl Iterator<Item = u64>, limit: usize, keep: impl Fn(&Message) -> bool) -> Result<(Vec<Message>, bool)> {
    let hidden = hidden(view, chat, user)?;
    let (mut out, mut budget) = (Vec::new(), Budget::new(REPLY_BYTES));
    let mut ids = ids.peekable();
    while let Some(&id) = ids.peek() {
        if out.len() == limit {
            break;
        }
        if hidden.binary_search(&id).is_err()
            && let Some(m) = get_row::<Message>(view, &msg_key(chat, id))?.filter(&keep)
        {
            if !budget.take(m.wire_size()) {
                break;
            }
            out.push(m);
        }
        ids.next();
    }
    Ok((out, ids.peek().is_some()))
}

fn any(_: &Message) -> bool {
    true
}

/// A history page: below `before` (0: from the newest), newest first; or
/// with `after > 0, before = 0`, after `after`, oldest first.
fn history(view: &dyn StateRead, chat: u64, user: u64, before: u64, after: u64, limit: u32) -> Result<std::result::Result<(Vec<Message>, bool), ChatError>> {
    let (c, _) = tri!(membership(view, chat, user)?);
    let limit = (limit as u64).clamp(1, PAGE_MAX as u64);
    // Hidden messages are skipped; a page looks at most 10 pages' worth of ids.
    let span = limit * 10;
    let (mut found, more) = if after > 0 && before == 0 {
        // Paging forward from `after` (past the end: nothing).
        if after >= c.last_id {
            return Ok(Ok((Vec::new(), false)));
        }
        let hi = after.saturating_add(span).min(c.last_id);
        let (page, more) = page(view, chat, user, (after + 1)..=hi, limit as usize, any)?;
        (page, more || hi < c.last_id)
    } else {
        let top = if before == 0 { c.last_id } else { (before - 1).min(c.last_id) };
        let lo = top.saturating_sub(span - 1).max(after.saturating_add(1)).max(1);
        let (page, more) = page(view, chat, user, (lo..=top).rev(), limit as usize, any)?;
        (page, more || lo > after.saturating_add(1).max(1))
    };
    with_views(view, &c, &mut found)?;
    Ok(Ok((found, more)))
}

/// Messages containing `text` (case-insensitive) below `before` (0: from
/// the newest), newest first, among the chat's last [`SEARCH_SCAN`].
fn search(view: &dyn StateRead, chat: u64, user: u64, text: &str, limit: u32, before: u64) -> Result<std::result::Result<(Vec<Message>, bool), ChatError>> {
    let (c, _) = tri!(membership(view, chat, user)?);
    let needle = text.to_lowercase();
    if needle.trim().is_empty() {
        return Ok(Err(ChatError::BadRequest("search for some text".into())));
    }
    let lo = c.last_id.saturating_sub(SEARCH_SCAN - 1).max(1);
    let top = if before == 0 { c.last_id } else { (before - 1).min(c.last_id) };
    let found = |m: &Message| !m.deleted && m.text.to_lowercase().contains(&needle);
    let (mut matches, more) = page(view, chat, user, (lo..=top).rev(), (limit as usize).clamp(1, PAGE_MAX), found)?;
    with_views(view, &c, &mut matches)?;
    Ok(Ok((matches, more)))
}

/// What a difference answer for one chat weighs (for the cut across chats).
pub fn diff_size(d: &ChatDiff) -> usize {
    match d {
        ChatDiff::Events { chat, events, messages, .. } => chat.wire_size() + events.iter().map(Event::wire_size).sum::<usize>() + messages.iter().map(Message::wire_size).sum::<usize>(),
        ChatDiff::TooLong { chat, messages, .. } => chat.wire_size() + messages.iter().map(Message::wire_size).sum::<usize>(),
        ChatDiff::Gone { .. } => 32,
        ChatDiff::Read { chat, .. } => chat.wire_size() + 16,
    }
}

/// One chat's difference after `pts`, at most [`DIFF_SLICE`] events and
/// `bytes` (at least one event).
fn chat_difference(view: &dyn StateRead, chat: u64, user: u64, pts: u64, bytes: usize) -> Result<ChatDiff> {
    let (c, me) = match membership(view, chat, user)? {
        Ok(x) => x,
        Err(_) => return Ok(ChatDiff::Gone { chat }),
    };
    if pts > c.pts || c.pts - pts > DIFF_TOO_LONG {
        // The newest messages that fit, oldest first.
        let lo = c.last_id.saturating_sub(PAGE_MAX as u64 * 10).max(1);
        let (mut messages, _) = page(view, chat, user, (lo..=c.last_id).rev(), PAGE_MAX, any)?;
        messages.reverse();
        with_views(view, &c, &mut messages)?;
        return Ok(ChatDiff::TooLong { chat: c, messages, read_max_id: me.read_max_id });
    }
    let hi = c.pts.min(pts + DIFF_SLICE as u64);
    let (mut events, mut msgs) = (Vec::new(), Vec::<Message>::new());
    let mut budget = Budget::new(bytes.saturating_sub(c.wire_size()));
    let mut last = pts;
    for p in (pts + 1)..=hi {
        let Some(e) = get::<Event>(view, &event_key(chat, p))? else {
            last = p;
            continue;
        };
        let e = event_in(e, user, c.kind);
        let mut size = e.wire_size();
        let named = match &e.kind {
            EventKind::New(id) | EventKind::Edited(id) | EventKind::Reactions(id) if !msgs.iter().any(|m| m.id == *id) => get_row::<Message>(view, &msg_key(chat, *id))?,
            _ => None,
        };
        size += named.as_ref().map_or(0, Message::wire_size);
        if !budget.take(size) {
            break;
        }
        events.push(e);
        msgs.extend(named);
        last = p;
    }
    msgs.sort_unstable_by_key(|m| m.id);
    with_views(view, &c, &mut msgs)?;
    let more = last < c.pts;
    Ok(ChatDiff::Events { chat: c, events, messages: msgs, more })
}

/// Chats in the order asked, until the answer is full; a chat with nothing
/// new is left out (the device has it all). With the device's read
/// position (`Some`), a channel where the user read further is answered
/// with `ChatDiff::Read`.
fn difference_bounded(view: &dyn StateRead, user: u64, chats: impl Iterator<Item = (u64, u64, Option<u64>)>) -> Result<Reply> {
    let (mut diffs, mut budget, mut looked) = (Vec::new(), Budget::new(REPLY_BYTES), 0);
    for (chat, pts, known_read) in chats {
        if budget.spent() {
            break;
        }
        looked += 1;
        let d = chat_difference(view, chat, user, pts, budget.left().max(REPLY_BYTES / 8))?;
        if !matches!(&d, ChatDiff::Events { events, more: false, .. } if events.is_empty()) {
            budget.charge(diff_size(&d));
            diffs.push(d);
        }
        if let Some(known) = known_read
            && let Ok((c, me)) = membership(view, chat, user)?
            && c.kind == ChatKind::Channel
            && me.read_max_id > known
        {
            let read = ChatDiff::Read { chat: c, read_max_id: me.read_max_id };
            budget.charge(diff_size(&read));
            diffs.push(read);
        }
    }
    Ok(Reply::DifferenceBounded { diffs, looked })
}

/// Answers one messaging query from the (linearizably read) state.
pub fn query(view: &dyn StateRead, q: &Query) -> Result<Outcome> {
    match q {
        Query::History { chat, user, before, after, limit } => Ok(history(view, *chat, *user, *before, *after, *limit)?.map(|(page, _)| Reply::Messages(page))),
        Query::HistoryPage { chat, user, before, after, limit } => {
            Ok(history(view, *chat, *user, *before, *after, *limit)?.map(|(messages, more)| Reply::Page { messages, more }))
        }
        // Every chat asked, each cut by bytes (nodes of the previous version ask this).
        Query::Difference { user, chats } => {
            let mut out = Vec::new();
            for (chat, pts) in chats {
                out.push(chat_difference(view, *chat, *user, *pts, REPLY_BYTES)?);
            }
            Ok(Ok(Reply::Difference(out)))
        }
        Query::BlockedAgainst { user, chats } => {
            let mut out = Vec::new();
            for c in chats {
                if blocked_against(view, *c, *user)? {
                    out.push(*c);
                }
            }
            Ok(Ok(Reply::Chats(out)))
        }
        Query::DifferenceBounded { user, chats } => {
            let chats = chats.iter().map(|(c, pts)| (*c, *pts, None));
            Ok(Ok(difference_bounded(view, *user, chats)?))
        }
        Query::DifferenceReads { user, chats } => {
            let chats = chats.iter().map(|(c, pts, read)| (*c, *pts, Some(*read)));
            Ok(Ok(difference_bounded(view, *user, chats)?))
        }
        Query::Dialogs { user, chats } => {
            let mut out = Vec::new();
            for chat in chats {
                let Ok((c, me)) = membership(view, *chat, *user)? else { continue };
                let lo = c.last_id.saturating_sub(99).max(1);
                let mut last = if c.last_id > 0 { page(view, *chat, *user, (lo..=c.last_id).rev(), 1, any)?.0.pop() } else { None };
                if let Some(m) = last.as_mut() {
                    with_views(view, &c, std::slice::from_mut(m))?;
                }
                let unread = unread(view, &c, *user, me.read_max_id)?;
                out.push(Dialog { chat: c, me, last, unread });
            }
            Ok(Ok(Reply::Dialogs(out)))
        }
        Query::ChatRows { user, chats } => {
            let mut out = Vec::new();
            for chat in chats {
                if let Ok((c, _)) = membership(view, *chat, *user)? {
                    out.push(c);
                }
            }
            Ok(Ok(Reply::ChatRows(out)))
        }
        Query::Search { chat, user, text, limit } => Ok(search(view, *chat, *user, text, *limit, 0)?.map(|(page, _)| Reply::Messages(page))),
        Query::SearchBefore { chat, user, text, limit, before } => Ok(search(view, *chat, *user, text, *limit, *before)?.map(|(messages, more)| Reply::Page { messages, more })),
        Query::Reactors { chat, user, id, after, limit } => {
            let (c, _) = tri!(membership(view, *chat, *user)?);
            if c.kind == ChatKind::Channel {
                return Ok(Err(ChatError::BadRequest("a channel shows how many reacted, not who".into())));
            }
            let Some(m) = get_row::<Message>(view, &msg_key(*chat, *id))?.filter(|m| !m.deleted) else {
                return Ok(Err(ChatError::MessageNotFound));
            };
            let limit = (*limit).clamp(1, MEMBERS_PAGE_MAX) as usize;
            let prefix = key(b"m/react/", &[*chat, *id]);
            let from = if *after == 0 { Vec::new() } else { reaction_key(*chat, *id, *after) };
            let mut out = Vec::with_capacity(limit);
            for (k, v) in view.scan(&prefix, &from, limit)? {
                let u = id_after(&k, prefix.len()).ok_or_else(|| crate::error::Error::Io(format!("a reaction row of chat {chat} with a malformed key")))?;
                out.push((u, courier_raft::codec::decode::<String>(&v)?));
            }
            // Reactions from before format 3 that have no row yet.
            out.extend(m.unrowed.iter().filter(|(u, _)| *u > *after).cloned());
            out.sort_unstable_by_key(|(u, _)| *u);
            out.dedup_by_key(|(u, _)| *u);
            out.truncate(limit);
            Ok(Ok(Reply::Reactors(out)))
        }
        Query::MembersIn { chat, users } => {
            let Some(c) = get::<Chat>(view, &chat_key(*chat))? else { return Ok(Err(ChatError::NotAMember)) };
            let mut members = Vec::new();
            for u in users.iter().take(MEMBERS_PAGE_MAX as usize) {
                if let Some(m) = get::<Member>(view, &member_key(*chat, *u))? {
                    members.push((*u, m));
                }
            }
            Ok(Ok(Reply::MembersIn { kind: c.kind, members }))
        }
        Query::Get { chat, user, ids } => {
            let (c, _) = tri!(membership(view, *chat, *user)?);
            let mut out = Vec::new();
            for id in ids {
                match get_row::<Message>(view, &msg_key(*chat, *id))? {
                    Some(m) if !m.deleted => out.push(m),
                    _ => return Ok(Err(ChatError::MessageNotFound)),
                }
            }
            with_views(view, &c, &mut out)?;
            Ok(Ok(Reply::Messages(out)))
        }
        Query::UserChats { user } => {
            let prefix = user_chats_prefix(*user);
            let mut chats = old_user_chats(view, *user)?;
            let rows = view.scan(&prefix, &[], USER_CHATS_MAX as usize)?;
            chats.extend(rows.iter().filter_map(|(k, _)| id_after(k, prefix.len())));
            Ok(Ok(Reply::Chats(chats)))
        }
        Query::Memberships { user, chats } => {
            let mut out = Vec::new();
            for chat in chats {
                if get::<Member>(view, &member_key(*chat, *user))?.is_some() {
                    out.push(*chat);
                }
            }
            Ok(Ok(Reply::Chats(out)))
        }
        Query::Members { chat, user, limit } => members(view, *chat, *user, 0, *limit),
        Query::MembersAfter { chat, user, after, limit } => members(view, *chat, *user, *after, *limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_raft::logic::MemView;

    const A: u64 = 1 << 16 | 1;
    const B: u64 = 2 << 16 | 1;
    const C: u64 = 3 << 16 | 2;
    const CHAT: u64 = 77 << 16 | 5;
    const H: u64 = 3600 * 1000;

    fn ok(v: &mut MemView, cmd: Cmd) -> Reply {
        apply(v, &cmd).unwrap().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
    }
    fn err(v: &mut MemView, cmd: Cmd) -> ChatError {
        let before = v.clone();
        let e = apply(v, &cmd).unwrap().expect_err("refused");
        assert_eq!(*v, before, "a refused command wrote nothing: {cmd:?}");
        e
    }
    fn group(v: &mut MemView) -> Chat {
        let Reply::Changed { chat: c, .. } = ok(v, Cmd::Create { id: CHAT, kind: ChatKind::Group, title: "Team".into(), creator: A, members: vec![B], now_ms: 0 }) else { panic!() };
        c
    }
    fn send(v: &mut MemView, from: u64, rid: u64, text: &str, now: u64) -> std::result::Result<Message, ChatError> {
        match apply(v, &Cmd::Send { chat: CHAT, from, random_id: rid, text: text.into(), reply_to: 0, now_ms: now }).unwrap()? {
            Reply::Changed { message: Some(m), .. } => Ok(m),
            other => panic!("{other:?}"),
        }
    }
    fn diff(v: &MemView, user: u64, pts: u64) -> ChatDiff {
        let Ok(Reply::Difference(mut d)) = query(v, &Query::Difference { user, chats: vec![(CHAT, pts)] }).unwrap() else { panic!() };
        d.pop().unwrap()
    }

    #[test]
    fn a_block_stops_the_other_sides_posts_in_the_private_chat_only() {
        let mut v = MemView::default();
        let dm = 6 << 16 | 5;
        ok(&mut v, Cmd::Create { id: dm, kind: ChatKind::Private, title: String::new(), creator: A, members: vec![B], now_ms: 1 });
        ok(&mut v, Cmd::Send { chat: dm, from: A, random_id: 1, text: "hi".into(), reply_to: 0, now_ms: 2 });
        assert_eq!(ok(&mut v, Cmd::Block { chat: dm, by: B, on: true }), Reply::Done);
        assert_eq!(err(&mut v, Cmd::Send { chat: dm, from: A, random_id: 2, text: "hi?".into(), reply_to: 0, now_ms: 3 }), ChatError::UserBlocked);
        // A retry of a send from before the block answers what it did then.
        assert!(matches!(ok(&mut v, Cmd::Send { chat: dm, from: A, random_id: 1, text: "hi".into(), reply_to: 0, now_ms: 4 }), Reply::Changed { message: Some(_), .. }));
        ok(&mut v, Cmd::Send { chat: dm, from: B, random_id: 1, text: "the blocker writes".into(), reply_to: 0, now_ms: 5 });
        assert_eq!(query(&v, &Query::BlockedAgainst { user: A, chats: vec![dm, CHAT] }).unwrap(), Ok(Reply::Chats(vec![dm])));
        assert_eq!(query(&v, &Query::BlockedAgainst { user: B, chats: vec![dm] }).unwrap(), Ok(Reply::Chats(vec![])), "one's own block is not against oneself");
        ok(&mut v, Cmd::Block { chat: dm, by: B, on: true });
        ok(&mut v, Cmd::Block { chat: dm, by: B, on: false });
        ok(&mut v, Cmd::Send { chat: dm, from: A, random_id: 3, text: "back".into(), reply_to: 0, now_ms: 6 });
        assert_eq!(query(&v, &Query::BlockedAgainst { user: A, chats: vec![dm] }).unwrap(), Ok(Reply::Chats(vec![])));
    }

    #[test]
    fn ids_are_gap_free_and_a_retried_send_is_the_first_message() {
        let mut v = MemView::default();
        assert_eq!(group(&mut v).members, 2);
        let m1 = send(&mut v, A, 10, "one", 1).unwrap();
        let m2 = send(&mut v, B, 10, "two", 2).unwrap(); // same random_id, other sender
        let again = send(&mut v, A, 10, "one (retry)", 3).unwrap();
        assert_eq!((m1.id, m2.id), (1, 2));
        assert_eq!(again, m1, "the retry answers the first message");
        let m3 = send(&mut v, A, 11, "three", 4).unwrap();
        assert_eq!(m3.id, 3);
        let Ok(Reply::Messages(page)) = query(&v, &Query::History { chat: CHAT, user: B, before: 0, after: 0, limit: 2 }).unwrap() else { panic!() };
        assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), vec![3, 2], "newest first");
        let Ok(Reply::Messages(page)) = query(&v, &Query::History { chat: CHAT, user: B, before: 2, after: 0, limit: 50 }).unwrap() else { panic!() };
        assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1]);
        let Ok(Reply::Messages(page)) = query(&v, &Query::History { chat: CHAT, user: B, before: 0, after: 1, limit: 50 }).unwrap() else { panic!() };
        assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), vec![2, 3], "paging forward");
    }

    /// A view that counts the rows it was asked for.
    struct Counting<'a>(&'a MemView, std::cell::Cell<usize>);

    impl StateRead for Counting<'_> {
        fn get(&self, key: &[u8]) -> courier_raft::Result<Option<Vec<u8>>> {
            self.1.set(self.1.get() + 1);
            self.0.get(key)
        }
        fn scan(&self, prefix: &[u8], after: &[u8], limit: usize) -> courier_raft::Result<Vec<(Vec<u8>, Vec<u8>)>> {
            let rows = self.0.scan(prefix, after, limit)?;
            self.1.set(self.1.get() + rows.len());
            Ok(rows)
        }
    }

    #[test]
    fn members_come_in_pages_by_id_whatever_the_chat_s_history() {
        let mut v = MemView::default();
        group(&mut v);
        let others: Vec<u64> = (10..15).map(|n| n << 16 | 3).collect();
        ok(&mut v, Cmd::Invite { chat: CHAT, by: A, users: others.clone(), now_ms: 1 });
        ok(&mut v, Cmd::Remove { chat: CHAT, by: A, user: others[1], now_ms: 2 });
        ok(&mut v, Cmd::SetRole { chat: CHAT, by: A, user: B, role: Role::Admin, now_ms: 3 });
        for i in 0..500 {
            send(&mut v, A, i, "x", 4).unwrap();
        }
        let page = |after: u64, limit: u32| -> Vec<u64> {
            let counted = Counting(&v, Default::default());
            let Ok(Reply::Members(m)) = query(&counted, &Query::MembersAfter { chat: CHAT, user: B, after, limit }).unwrap() else { panic!() };
            assert!(counted.1.get() <= 2 + limit as usize, "a page read {} rows for {limit} members of a chat with 500 messages", counted.1.get());
            m.into_iter().map(|(u, _)| u).collect()
        };
        let mut all = vec![A, B];
        all.extend(others.iter().filter(|u| **u != others[1]));
        all.sort();
        assert_eq!(page(0, 200), all, "every member, in id order, without the one removed");
        assert_eq!(page(0, 2), all[..2]);
        assert_eq!(page(all[1], 2), all[2..4], "the next page starts after the last id seen");
        assert_eq!(page(*all.last().unwrap(), 2), Vec::<u64>::new());
        let Ok(Reply::Members(m)) = query(&v, &Query::Members { chat: CHAT, user: A, limit: 3 }).unwrap() else { panic!() };
        assert_eq!(m.iter().map(|(u, _)| *u).collect::<Vec<_>>(), all[..3]);
        assert_eq!(m.iter().find(|(u, _)| *u == B).map(|(_, r)| r.role), Some(Role::Admin), "with their roles");
        assert_eq!(query(&v, &Query::MembersAfter { chat: CHAT, user: C, after: 0, limit: 5 }).unwrap(), Err(ChatError::NotAMember));

        // A channel's subscribers are listed to its admins only.
        let ch = 5 << 16 | 5;
        ok(&mut v, Cmd::Create { id: ch, kind: ChatKind::Channel, title: "News".into(), creator: A, members: vec![], now_ms: 9 });
        ok(&mut v, Cmd::Invite { chat: ch, by: A, users: vec![B, C], now_ms: 10 });
        assert_eq!(query(&v, &Query::MembersAfter { chat: ch, user: C, after: 0, limit: 5 }).unwrap(), Err(ChatError::AdminRequired));
        let Ok(Reply::Members(m)) = query(&v, &Query::MembersAfter { chat: ch, user: A, after: 0, limit: 5 }).unwrap() else { panic!() };
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn members_only_and_the_brief_s_limits() {
        let mut v = MemView::default();
        group(&mut v);
        assert_eq!(err(&mut v, Cmd::Send { chat: CHAT, from: C, random_id: 1, text: "hi".into(), reply_to: 0, now_ms: 1 }), ChatError::NotAMember);
        let forged = Cmd::Send { chat: CHAT + (1 << 16), from: A, random_id: 1, text: "hi".into(), reply_to: 0, now_ms: 1 };
        assert_eq!(err(&mut v, forged), ChatError::NotAMember, "a chat that does not exist looks the same");
        assert_eq!(query(&v, &Query::History { chat: CHAT, user: C, before: 0, after: 0, limit: 5 }).unwrap(), Err(ChatError::NotAMember));
        let long = "é".repeat(MESSAGE_MAX + 1);
        assert_eq!(err(&mut v, Cmd::Send { chat: CHAT, from: A, random_id: 1, text: long, reply_to: 0, now_ms: 1 }), ChatError::MessageTooLong);
        assert!(send(&mut v, A, 2, &"é".repeat(MESSAGE_MAX), 1).is_ok(), "4096 characters fit");
        assert!(matches!(err(&mut v, Cmd::Send { chat: CHAT, from: A, random_id: 3, text: " ".into(), reply_to: 0, now_ms: 1 }), ChatError::BadRequest(_)));
        assert_eq!(err(&mut v, Cmd::Send { chat: CHAT, from: A, random_id: 4, text: "x".into(), reply_to: 9, now_ms: 1 }), ChatError::MessageNotFound);
    }

    #[test]
    fn edit_own_within_48_hours_delete_leaves_tombstones() {
        let mut v = MemView::default();
        group(&mut v);
        let m = send(&mut v, A, 1, "helo", 0).unwrap();
        send(&mut v, B, 1, "hi", 1).unwrap();
        assert_eq!(err(&mut v, Cmd::Edit { chat: CHAT, by: B, id: 1, text: "x".into(), now_ms: 2 }), ChatError::AuthorRequired);
        ok(&mut v, Cmd::Edit { chat: CHAT, by: A, id: 1, text: "hello".into(), now_ms: 47 * H });
        assert_eq!(err(&mut v, Cmd::Edit { chat: CHAT, by: A, id: 1, text: "hello!".into(), now_ms: m.date_ms + 48 * H + 1 }), ChatError::EditTimeExpired);
        assert_eq!(err(&mut v, Cmd::Edit { chat: CHAT, by: A, id: 9, text: "x".into(), now_ms: 3 }), ChatError::MessageNotFound);
        // B (a member) cannot delete A's message; A can; the id stays.
        assert_eq!(err(&mut v, Cmd::Delete { chat: CHAT, by: B, ids: vec![1], now_ms: 4 }), ChatError::AdminRequired);
        ok(&mut v, Cmd::Delete { chat: CHAT, by: A, ids: vec![1], now_ms: 5 });
        let Reply::Changed { events, .. } = ok(&mut v, Cmd::Delete { chat: CHAT, by: A, ids: vec![1], now_ms: 6 }) else { panic!() };
        assert!(events.is_empty(), "deleting again is a no-op");
        // The creator (an admin) deletes B's message.
        ok(&mut v, Cmd::Delete { chat: CHAT, by: A, ids: vec![2], now_ms: 7 });
        assert_eq!(send(&mut v, B, 2, "after", 8).unwrap().id, 3, "ids continue past tombstones");
        let Ok(Reply::Messages(page)) = query(&v, &Query::History { chat: CHAT, user: B, before: 0, after: 0, limit: 10 }).unwrap() else { panic!() };
        assert_eq!(page.iter().map(|m| (m.id, m.deleted, m.text.as_str())).collect::<Vec<_>>(), vec![(3, false, "after"), (2, true, ""), (1, true, "")]);
    }

    #[test]
    fn difference_replays_every_change_in_order_and_says_too_long() {
        let mut v = MemView::default();
        group(&mut v);
        let start = match diff(&v, B, 0) {
            ChatDiff::Events { chat, .. } => chat.pts,
            other => panic!("{other:?}"),
        };
        send(&mut v, A, 1, "a", 1).unwrap();
        send(&mut v, A, 2, "b", 2).unwrap();
        ok(&mut v, Cmd::Edit { chat: CHAT, by: A, id: 1, text: "a2".into(), now_ms: 3 });
        ok(&mut v, Cmd::Delete { chat: CHAT, by: A, ids: vec![2], now_ms: 4 });
        ok(&mut v, Cmd::Read { chat: CHAT, user: B, max_id: 2, now_ms: 5 });
        let ChatDiff::Events { chat, events, messages, more } = diff(&v, B, start) else { panic!() };
        assert!(!more);
        assert_eq!(chat.pts, start + 5);
        let kinds: Vec<_> = events.iter().map(|e| (e.pts, e.kind.clone())).collect();
        assert_eq!(
            kinds,
            vec![
                (start + 1, EventKind::New(1)),
                (start + 2, EventKind::New(2)),
                (start + 3, EventKind::Edited(1)),
                (start + 4, EventKind::Deleted(vec![2])),
                (start + 5, EventKind::Read { user: B, max_id: 2 }),
            ]
        );
        assert_eq!(messages.iter().map(|m| (m.id, m.text.as_str(), m.deleted)).collect::<Vec<_>>(), vec![(1, "a2", false), (2, "", true)], "messages as they are now");
        // Reading backwards is a no-op; reading past the end stops at the end.
        for again in [1, 2] {
            let Reply::Changed { events, .. } = ok(&mut v, Cmd::Read { chat: CHAT, user: B, max_id: again, now_ms: 6 }) else { panic!() };
            assert!(events.is_empty(), "reading up to {again} again changes nothing");
        }
        // A slice is bounded.
        for i in 0..(DIFF_SLICE as u64 + 10) {
            send(&mut v, A, 100 + i, "m", 10 + i).unwrap();
        }
        let ChatDiff::Events { events, more, .. } = diff(&v, B, start) else { panic!() };
        assert!(more);
        assert_eq!(events.len(), DIFF_SLICE);
        // Far behind, or from the future: too_long with the newest messages.
        assert!(matches!(diff(&v, B, 1_000_000), ChatDiff::TooLong { .. }));
        assert_eq!(diff(&v, C, 0), ChatDiff::Gone { chat: CHAT });
    }

    #[test]
    fn a_chat_keeps_the_events_a_difference_can_ask_for_and_no_more() {
        let mut v = MemView::default();
        let c = group(&mut v);
        for i in 0..EVENTS_KEPT + 100 {
            send(&mut v, A, i, "m", i).unwrap();
        }
        let pts = c.pts + EVENTS_KEPT + 100;
        let events = v.scan(&key(b"m/ev/", &[CHAT]), &[], usize::MAX).unwrap();
        assert_eq!(events.len() as u64, EVENTS_KEPT, "the newest {EVENTS_KEPT} events, not all {pts}");
        assert_eq!(events[0].0, event_key(CHAT, pts - EVENTS_KEPT + 1));
        // The furthest-behind device still served gets every event after its pts.
        let ChatDiff::Events { events, more, .. } = diff(&v, B, pts - DIFF_TOO_LONG) else { panic!("within the window") };
        assert!(more);
        assert_eq!(events.iter().map(|e| e.pts).collect::<Vec<_>>(), (pts - DIFF_TOO_LONG + 1..=pts - DIFF_TOO_LONG + DIFF_SLICE as u64).collect::<Vec<_>>());
        assert!(matches!(diff(&v, B, pts - DIFF_TOO_LONG - 1), ChatDiff::TooLong { .. }), "one further: too_long");
    }

    #[test]
    fn unread_counts_and_dialogs() {
        let mut v = MemView::default();
        group(&mut v);
        send(&mut v, A, 1, "a", 1).unwrap();
        send(&mut v, A, 2, "b", 2).unwrap();
        send(&mut v, B, 3, "c", 3).unwrap();
        let dialogs = |v: &MemView, u: u64| {
            let Ok(Reply::Dialogs(d)) = query(v, &Query::Dialogs { user: u, chats: vec![CHAT, 12345] }).unwrap() else { panic!() };
            d
        };
        let d = dialogs(&v, B);
        assert_eq!(d.len(), 1, "only chats the user is in");
        assert_eq!((d[0].unread, d[0].last.as_ref().unwrap().text.as_str()), (0, "c"), "B's own message read what came before");
        let d = dialogs(&v, A);
        assert_eq!(d[0].unread, 1);
        ok(&mut v, Cmd::Read { chat: CHAT, user: A, max_id: 3, now_ms: 4 });
        assert_eq!(dialogs(&v, A)[0].unread, 0);
    }

    #[test]
    fn membership_admins_and_channels() {
        let mut v = MemView::default();
        group(&mut v);
        // A member invites; only admins remove; anyone leaves.
        ok(&mut v, Cmd::Invite { chat: CHAT, by: B, users: vec![C, C], now_ms: 1 });
        let Reply::Changed { chat, .. } = ok(&mut v, Cmd::Invite { chat: CHAT, by: B, users: vec![C], now_ms: 2 }) else { panic!() };
        assert_eq!(chat.members, 3, "inviting twice adds once");
        assert_eq!(err(&mut v, Cmd::Remove { chat: CHAT, by: B, user: C, now_ms: 3 }), ChatError::AdminRequired);
        assert_eq!(err(&mut v, Cmd::SetTitle { chat: CHAT, by: B, title: "x".into(), now_ms: 3 }), ChatError::AdminRequired);
        assert_eq!(err(&mut v, Cmd::SetRole { chat: CHAT, by: B, user: C, role: Role::Admin, now_ms: 3 }), ChatError::AdminRequired);
        ok(&mut v, Cmd::SetRole { chat: CHAT, by: A, user: B, role: Role::Admin, now_ms: 4 });
        ok(&mut v, Cmd::Remove { chat: CHAT, by: B, user: C, now_ms: 5 });
        assert_eq!(err(&mut v, Cmd::Remove { chat: CHAT, by: B, user: A, now_ms: 6 }), ChatError::AdminRequired, "an admin cannot remove the creator");
        ok(&mut v, Cmd::Remove { chat: CHAT, by: B, user: B, now_ms: 7 });
        assert_eq!(err(&mut v, Cmd::Send { chat: CHAT, from: B, random_id: 9, text: "x".into(), reply_to: 0, now_ms: 8 }), ChatError::NotAMember);
        let Ok(Reply::Members(m)) = query(&v, &Query::Members { chat: CHAT, user: A, limit: 10 }).unwrap() else { panic!() };
        assert_eq!(m.iter().map(|(u, _)| *u).collect::<Vec<_>>(), vec![A]);
        // Channels: admins post, subscribers read.
        let ch = 5 << 16 | 5;
        ok(&mut v, Cmd::Create { id: ch, kind: ChatKind::Channel, title: "News".into(), creator: A, members: vec![], now_ms: 9 });
        assert_eq!(err(&mut v, Cmd::Invite { chat: ch, by: B, users: vec![B], now_ms: 10 }), ChatError::NotAMember);
        ok(&mut v, Cmd::Invite { chat: ch, by: A, users: vec![B, C], now_ms: 10 });
        assert_eq!(err(&mut v, Cmd::Send { chat: ch, from: B, random_id: 1, text: "x".into(), reply_to: 0, now_ms: 11 }), ChatError::AdminRequired);
        let Reply::Changed { events, .. } = ok(&mut v, Cmd::Send { chat: ch, from: A, random_id: 1, text: "post".into(), reply_to: 0, now_ms: 12 }) else { panic!() };
        assert_eq!(events.len(), 1, "one event however many subscribers");
        // Private chats have exactly two members and no title.
        let dm = 6 << 16 | 5;
        assert!(matches!(err(&mut v, Cmd::Create { id: dm, kind: ChatKind::Private, title: String::new(), creator: A, members: vec![A], now_ms: 13 }), ChatError::BadRequest(_)));
        let chat_of = |r: Reply| match r {
            Reply::Changed { chat, .. } => chat,
            other => panic!("{other:?}"),
        };
        let first = chat_of(ok(&mut v, Cmd::Create { id: dm, kind: ChatKind::Private, title: String::new(), creator: A, members: vec![B], now_ms: 13 }));
        assert_eq!(chat_of(ok(&mut v, Cmd::Create { id: dm, kind: ChatKind::Private, title: String::new(), creator: A, members: vec![B], now_ms: 14 })), first, "a retry");
        assert!(matches!(err(&mut v, Cmd::Invite { chat: dm, by: A, users: vec![C], now_ms: 15 }), ChatError::BadRequest(_)));
    }

    #[test]
    fn in_a_channel_reads_are_the_readers_own_and_others_see_counts_never_who() {
        let mut v = MemView::default();
        let ch = 5 << 16 | 5;
        ok(&mut v, Cmd::Create { id: ch, kind: ChatKind::Channel, title: "News".into(), creator: A, members: vec![], now_ms: 1 });
        let Reply::Changed { events, .. } = ok(&mut v, Cmd::Invite { chat: ch, by: A, users: vec![B, C], now_ms: 2 }) else { panic!() };
        assert_eq!(events[0].kind, EventKind::SubscribersJoined(vec![B, C]));
        assert_eq!(event_for(events[0].clone(), B).kind, EventKind::Joined(vec![B]), "a subscriber sees themselves join");
        assert_eq!(event_for(events[0].clone(), A).kind, EventKind::Nothing, "and nobody sees who else did");
        ok(&mut v, Cmd::Send { chat: ch, from: A, random_id: 1, text: "post".into(), reply_to: 0, now_ms: 3 });
        let pts = chat_of(&v, ch).pts;
        // A read moves the reader's position only: no event, the pts stays.
        let Reply::Changed { events, .. } = ok(&mut v, Cmd::Read { chat: ch, user: B, max_id: 1, now_ms: 4 }) else { panic!() };
        assert!(events.is_empty());
        assert_eq!(chat_of(&v, ch).pts, pts, "the channel's event window does not fill with reads");
        let states = |read: u64| Query::DifferenceReads { user: B, chats: vec![(ch, pts, read)] };
        let Ok(Reply::DifferenceBounded { diffs, .. }) = query(&v, &states(0)).unwrap() else { panic!() };
        assert!(matches!(&diffs[..], [ChatDiff::Read { read_max_id: 1, .. }]), "B's other device learns it: {diffs:?}");
        let Ok(Reply::DifferenceBounded { diffs, .. }) = query(&v, &states(1)).unwrap() else { panic!() };
        assert!(diffs.is_empty(), "a device that knows it is told nothing: {diffs:?}");
        // The post counts B's view, once however often B reads.
        ok(&mut v, Cmd::Read { chat: ch, user: B, max_id: 1, now_ms: 4 });
        let Ok(Reply::Page { messages, .. }) = query(&v, &Query::HistoryPage { chat: ch, user: C, before: 0, after: 0, limit: 10 }).unwrap() else { panic!() };
        assert_eq!(messages.iter().map(|m| (m.id, m.views)).collect::<Vec<_>>(), [(1, 1)]);
                // A reaction: a count naming nobody, no event; nobody lists reactors.
        let Reply::Changed { events, message: Some(m), .. } = ok(&mut v, Cmd::React { chat: ch, user: C, id: 1, emoji: "👍".into(), now_ms: 5 }) else { panic!() };
        assert!(events.is_empty());
        assert_eq!(m.reactions, vec![Reaction { emoji: "👍".into(), count: 1, recent: vec![] }]);
        let Reply::Changed { message: Some(m), .. } = ok(&mut v, Cmd::React { chat: ch, user: B, id: 1, emoji: "👍".into(), now_ms: 6 }) else { panic!() };
        assert_eq!((m.reactions[0].count, m.reactions[0].recent.len()), (2, 0));
        assert!(matches!(query(&v, &Query::Reactors { chat: ch, user: A, id: 1, after: 0, limit: 10 }).unwrap(), Err(ChatError::BadRequest(_))));
        assert_eq!(chat_of(&v, ch).pts, pts);
        // A subscriber leaving is news to themselves only; an admin's role is public.
        let Reply::Changed { events, .. } = ok(&mut v, Cmd::Remove { chat: ch, by: C, user: C, now_ms: 7 }) else { panic!() };
        assert_eq!((event_for(events[0].clone(), C).kind, event_for(events[0].clone(), B).kind), (EventKind::Left(C), EventKind::Nothing));
        let ChatDiff::Events { events, .. } = ({
            let Ok(Reply::Difference(mut d)) = query(&v, &Query::Difference { user: B, chats: vec![(ch, 0)] }).unwrap() else { panic!() };
            d.pop().unwrap()
        }) else { panic!() };
        assert!(events.iter().all(|e| !matches!(&e.kind, EventKind::Joined(u) if u.contains(&C)) && !matches!(e.kind, EventKind::Left(_) | EventKind::Read { .. })), "{events:?}");
    }

    #[test]
    fn a_read_far_ahead_in_a_channel_counts_views_of_the_newest_posts_only() {
        let mut v = MemView::default();
        let ch = 5 << 16 | 5;
        ok(&mut v, Cmd::Create { id: ch, kind: ChatKind::Channel, title: "News".into(), creator: A, members: vec![], now_ms: 1 });
        ok(&mut v, Cmd::Invite { chat: ch, by: A, users: vec![B], now_ms: 2 });
        for i in 0..VIEWS_PER_READ + 50 {
            ok(&mut v, Cmd::Send { chat: ch, from: A, random_id: i, text: "post".into(), reply_to: 0, now_ms: 3 });
        }
        let before = v.0.len();
        ok(&mut v, Cmd::Read { chat: ch, user: B, max_id: VIEWS_PER_READ + 50, now_ms: 4 });
        assert_eq!(v.0.len() - before, VIEWS_PER_READ as usize, "one view row each for the newest {VIEWS_PER_READ} posts");
        let Ok(Reply::Messages(m)) = query(&v, &Query::Get { chat: ch, user: A, ids: vec![50, 51, VIEWS_PER_READ + 50] }).unwrap() else { panic!() };
        assert_eq!(m.iter().map(|m| m.views).collect::<Vec<_>>(), [0, 1, 1]);
        // A message row of format 3 (before views) reads with 0 views.
        #[derive(Serialize)]
        struct V3Row(u64, u64, u64, String, u64, u64, bool, Option<Forwarded>, Vec<Reaction>, Option<Attachment>, Vec<(u64, String)>);
        let row = V3Row(1, A, 3, "old".into(), 0, 0, false, None, vec![Reaction { emoji: "👍".into(), count: 2, recent: vec![] }], None, vec![]);
        let m: Message = crate::state::decode_row(&courier_raft::codec::encode_as(3, &row)).unwrap();
        assert_eq!((m.text.as_str(), m.reactions[0].count, m.views), ("old", 2, 0));
    }

    #[test]
    fn a_channels_events_from_before_name_nobody_but_the_member() {
        let ev = |kind: EventKind| Event { pts: 1, date_ms: 0, kind };
        for (kind, seen_by_b) in [
            (EventKind::Read { user: A, max_id: 3 }, EventKind::Nothing),
            (EventKind::Read { user: B, max_id: 3 }, EventKind::Read { user: B, max_id: 3 }),
            (EventKind::Joined(vec![A, B, C]), EventKind::Joined(vec![B])),
            (EventKind::Joined(vec![A, C]), EventKind::Nothing),
            (EventKind::Left(C), EventKind::Nothing),
            (EventKind::Left(B), EventKind::Left(B)),
            (EventKind::New(4), EventKind::New(4)),
        ] {
            assert_eq!(event_in(ev(kind.clone()), B, ChatKind::Channel).kind, seen_by_b, "{kind:?}");
            assert_eq!(event_in(ev(kind.clone()), B, ChatKind::Group).kind, kind, "a group shows it as it is");
        }
        // A channel made with members: each sees only themselves join.
        let mut v = MemView::default();
        let Reply::Changed { events, .. } = ok(&mut v, Cmd::Create { id: 5 << 16 | 5, kind: ChatKind::Channel, title: "News".into(), creator: A, members: vec![B, C], now_ms: 1 }) else { panic!() };
        assert_eq!(event_for(events[0].clone(), B).kind, EventKind::Joined(vec![B]));
    }

    fn chat_of(v: &MemView, chat: u64) -> Chat {
        get(v, &chat_key(chat)).unwrap().unwrap()
    }

    fn photo() -> Attachment {
        Attachment { file: 5 << 16 | 2, kind: MediaKind::Photo, name: "cat.png".into(), mime: "image/png".into(), size: 10, sha256: [1; 32], thumbs: Vec::new(), duration_secs: 0 }
    }

    #[test]
    fn media_messages_carry_their_file_and_a_caption() {
        let mut v = MemView::default();
        group(&mut v);
        let post = |caption: &str, rid: u64| Cmd::SendMedia { chat: CHAT, from: A, random_id: rid, caption: caption.into(), reply_to: 0, media: photo(), now_ms: 1 };
        let Reply::Changed { message: Some(m), .. } = ok(&mut v, post("", 1)) else { panic!() };
        assert_eq!((m.id, m.media.as_ref().map(|a| a.file)), (1, Some(photo().file)), "an empty caption is fine");
        assert_eq!(err(&mut v, post(&"x".repeat(CAPTION_MAX + 1), 2)), ChatError::CaptionTooLong);
        let Reply::Changed { message: Some(again), events, .. } = ok(&mut v, post("", 1)) else { panic!() };
        assert!(events.is_empty() && again == m, "a retried post is the first one");
        // A caption is edited under the caption limit; deleting drops the file from the message.
        assert_eq!(err(&mut v, Cmd::Edit { chat: CHAT, by: A, id: 1, text: "y".repeat(CAPTION_MAX + 1), now_ms: 2 }), ChatError::CaptionTooLong);
        ok(&mut v, Cmd::Edit { chat: CHAT, by: A, id: 1, text: "a cat".into(), now_ms: 2 });
        let Ok(Reply::Messages(got)) = query(&v, &Query::Get { chat: CHAT, user: B, ids: vec![1] }).unwrap() else { panic!() };
        assert_eq!((got[0].text.as_str(), got[0].media.clone()), ("a cat", Some(photo())));
        // Forwarding copies the file: members of the other chat reach it through their copy.
        let dm = 9 << 16 | 5;
        ok(&mut v, Cmd::Create { id: dm, kind: ChatKind::Private, title: String::new(), creator: B, members: vec![C], now_ms: 3 });
        let items = vec![Copy { text: got[0].text.clone(), fwd: Forwarded { from: A, chat: CHAT, id: 1, date_ms: 1 }, media: got[0].media.clone() }];
        let Reply::Changed { message: Some(copy), .. } = ok(&mut v, Cmd::Forward { chat: dm, from: B, random_id: 1, items, now_ms: 4 }) else { panic!() };
        assert_eq!(copy.media, Some(photo()));
        ok(&mut v, Cmd::Delete { chat: CHAT, by: A, ids: vec![1], now_ms: 5 });
        assert_eq!(query(&v, &Query::Get { chat: CHAT, user: B, ids: vec![1] }).unwrap(), Err(ChatError::MessageNotFound), "a deleted message grants nothing");
    }

    #[test]
    fn message_rows_written_before_media_still_read() {
        let mut v = MemView::default();
        group(&mut v);
        // The format-1 layout: the same fields without `media`.
        let v1 = (4u64, A, 9u64, String::from("old"), 0u64, 0u64, false, None::<Forwarded>, Vec::<(String, Vec<u64>)>::new());
        v.put(&msg_key(CHAT, 4), courier_raft::codec::encode(&v1));
        let m = get_row::<Message>(&v, &msg_key(CHAT, 4)).unwrap().unwrap();
        assert_eq!((m.id, m.text.as_str(), m.media), (4, "old", None));
        let now = Message { media: Some(photo()), ..m };
        put_row(&mut v, &msg_key(CHAT, 4), &now);
        assert_eq!(get_row::<Message>(&v, &msg_key(CHAT, 4)).unwrap(), Some(now));
        v.put(&msg_key(CHAT, 5), courier_raft::codec::encode_as(9, &v1));
        assert!(get_row::<Message>(&v, &msg_key(CHAT, 5)).is_err(), "a format from the future is an error, not a guess");
    }

    #[test]
    fn forward_pin_react_and_search() {
        let mut v = MemView::default();
        group(&mut v);
        send(&mut v, A, 1, "Hello World", 1).unwrap();
        send(&mut v, B, 2, "second", 2).unwrap();
        // Forward both into a private chat, as one request: consecutive ids, one retry-safe random_id.
        let dm = 9 << 16 | 5;
        ok(&mut v, Cmd::Create { id: dm, kind: ChatKind::Private, title: String::new(), creator: A, members: vec![C], now_ms: 3 });
        let Ok(Reply::Messages(src)) = query(&v, &Query::Get { chat: CHAT, user: A, ids: vec![1, 2] }).unwrap() else { panic!() };
        assert_eq!(query(&v, &Query::Get { chat: CHAT, user: C, ids: vec![1] }).unwrap(), Err(ChatError::NotAMember), "only readers may forward");
        let items: Vec<_> = src.iter().map(|m| Copy { text: m.text.clone(), fwd: Forwarded { from: m.from, chat: CHAT, id: m.id, date_ms: m.date_ms }, media: None }).collect();
        let fwd = Cmd::Forward { chat: dm, from: A, random_id: 5, items, now_ms: 4 };
        let Reply::Changed { events, message: Some(last), .. } = ok(&mut v, fwd.clone()) else { panic!() };
        assert_eq!((events.len(), last.id, last.fwd.as_ref().unwrap().from), (2, 2, B));
        let Reply::Changed { events, message: Some(again), .. } = ok(&mut v, fwd) else { panic!() };
        assert!(events.is_empty() && again == last, "a retried forward is the first one");
        let too_many = Cmd::Forward { chat: dm, from: A, random_id: 6, items: vec![Copy { text: "x".into(), fwd: last.fwd.clone().unwrap(), media: None }; 101], now_ms: 5 };
        assert!(matches!(err(&mut v, too_many), ChatError::BadRequest(_)));
        // Pins: admins in groups; either side of a private chat.
        assert_eq!(err(&mut v, Cmd::Pin { chat: CHAT, by: B, id: 1, now_ms: 6 }), ChatError::AdminRequired);
        let Reply::Changed { chat, .. } = ok(&mut v, Cmd::Pin { chat: CHAT, by: A, id: 1, now_ms: 6 }) else { panic!() };
        assert_eq!(chat.pinned, 1);
        ok(&mut v, Cmd::Pin { chat: dm, by: C, id: 2, now_ms: 7 });
        assert_eq!(err(&mut v, Cmd::Pin { chat: CHAT, by: A, id: 99, now_ms: 7 }), ChatError::MessageNotFound);
        // Reactions: one per user, replaced, removed.
        let react = |v: &mut MemView, user: u64, emoji: &str| match ok(v, Cmd::React { chat: CHAT, user, id: 1, emoji: emoji.into(), now_ms: 8 }) {
            Reply::Changed { message: Some(m), .. } => m.reactions,
            other => panic!("{other:?}"),
        };
        let r = |emoji: &str, count: u64, recent: Vec<u64>| Reaction { emoji: emoji.into(), count, recent };
        react(&mut v, A, "👍");
        assert_eq!(react(&mut v, B, "👍"), vec![r("👍", 2, vec![B, A])], "newest reactor first");
        assert_eq!(react(&mut v, A, "🔥"), vec![r("👍", 1, vec![B]), r("🔥", 1, vec![A])]);
        assert_eq!(react(&mut v, B, ""), vec![r("🔥", 1, vec![A])]);
        let before = v.clone();
        assert_eq!(react(&mut v, A, "🔥"), vec![r("🔥", 1, vec![A])], "a repeat");
        assert_eq!(v, before, "a repeat writes nothing");
        assert!(matches!(err(&mut v, Cmd::React { chat: CHAT, user: A, id: 1, emoji: "no way".into(), now_ms: 9 }), ChatError::BadRequest(_)));
        assert_eq!(err(&mut v, Cmd::React { chat: CHAT, user: C, id: 1, emoji: "x".into(), now_ms: 9 }), ChatError::NotAMember);
        // Search: case-insensitive, newest first, members only, deleted ones excluded.
        send(&mut v, A, 3, "hello again", 10).unwrap();
        let found = |v: &MemView| match query(v, &Query::Search { chat: CHAT, user: B, text: "HELLO".into(), limit: 10 }).unwrap() {
            Ok(Reply::Messages(m)) => m.iter().map(|m| m.id).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(found(&v), vec![3, 1]);
        ok(&mut v, Cmd::Delete { chat: CHAT, by: A, ids: vec![3], now_ms: 11 });
        assert_eq!(found(&v), vec![1]);
        assert_eq!(query(&v, &Query::Search { chat: CHAT, user: C, text: "hello".into(), limit: 10 }).unwrap(), Err(ChatError::NotAMember));
    }

    #[test]
    fn delete_for_me_hides_from_one_member_only() {
        let mut v = MemView::default();
        group(&mut v);
        send(&mut v, A, 1, "one", 1).unwrap();
        send(&mut v, B, 2, "two", 2).unwrap();
        let pts = match diff(&v, A, 0) {
            ChatDiff::Events { chat, .. } => chat.pts,
            other => panic!("{other:?}"),
        };
        // A hides B's message 2 (anyone's message can be hidden for oneself).
        ok(&mut v, Cmd::Hide { chat: CHAT, user: A, ids: vec![2], now_ms: 3 });
        let Reply::Changed { events, .. } = ok(&mut v, Cmd::Hide { chat: CHAT, user: A, ids: vec![2], now_ms: 4 }) else { panic!() };
        assert!(events.is_empty(), "hiding again is a no-op");
        assert_eq!(err(&mut v, Cmd::Hide { chat: CHAT, user: A, ids: vec![9], now_ms: 4 }), ChatError::MessageNotFound);
        assert_eq!(err(&mut v, Cmd::Hide { chat: CHAT, user: C, ids: vec![1], now_ms: 4 }), ChatError::NotAMember);
        let history = |v: &MemView, u: u64| match query(v, &Query::History { chat: CHAT, user: u, before: 0, after: 0, limit: 10 }).unwrap() {
            Ok(Reply::Messages(m)) => m.iter().map(|m| m.id).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(history(&v, A), vec![1]);
        assert_eq!(history(&v, B), vec![2, 1], "B still has it");
        // A's devices learn it; B sees only that the pts moved.
        let ChatDiff::Events { events, .. } = diff(&v, A, pts) else { panic!() };
        assert_eq!(events[0].kind, EventKind::Hidden { user: A, ids: vec![2] });
        let ChatDiff::Events { events, .. } = diff(&v, B, pts) else { panic!() };
        assert_eq!((events[0].pts, events[0].kind.clone()), (pts + 1, EventKind::Nothing));
        let Ok(Reply::Dialogs(d)) = query(&v, &Query::Dialogs { user: A, chats: vec![CHAT] }).unwrap() else { panic!() };
        assert_eq!(d[0].last.as_ref().map(|m| m.id), Some(1), "the dialog shows the last message A still has");
    }

    #[test]
    fn user_chat_lists() {
        let mut v = MemView::default();
        ok(&mut v, Cmd::AddUserChat { user: A, chat: 1 });
        ok(&mut v, Cmd::AddUserChat { user: A, chat: 2 });
        ok(&mut v, Cmd::AddUserChat { user: A, chat: 1 });
        ok(&mut v, Cmd::RemoveUserChat { user: A, chat: 2 });
        assert_eq!(query(&v, &Query::UserChats { user: A }).unwrap(), Ok(Reply::Chats(vec![1])));
        assert_eq!(query(&v, &Query::UserChats { user: B }).unwrap(), Ok(Reply::Chats(vec![])));
    }

    #[test]
    fn a_users_chat_list_is_a_row_per_chat_and_an_old_list_moves_to_rows() {
        use courier_raft::logic::StateRead;
        let mut v = MemView::default();
        // Before: one value with every chat, rewritten whole by each add.
        put(&mut v, &user_chats_key(A), &vec![7u64, 8]);
        assert_eq!(query(&v, &Query::UserChats { user: A }).unwrap(), Ok(Reply::Chats(vec![7, 8])), "an old list reads as it is");
        ok(&mut v, Cmd::AddUserChat { user: A, chat: 9 });
        assert_eq!(v.get(&user_chats_key(A)).unwrap(), None, "the first add moved the old list to rows");
        for c in [7, 8, 9] {
            assert!(v.get(&user_chat_key(A, c)).unwrap().is_some(), "chat {c} has its row");
        }
        ok(&mut v, Cmd::RemoveUserChat { user: A, chat: 8 });
        assert_eq!(v.get(&user_chat_key(A, 8)).unwrap(), None);
        assert_eq!(query(&v, &Query::UserChats { user: A }).unwrap(), Ok(Reply::Chats(vec![7, 9])));
        // An add writes its own row, whatever the list's length.
        let before = v.clone();
        ok(&mut v, Cmd::AddUserChat { user: A, chat: 10 });
        let written: Vec<&Vec<u8>> = v.0.iter().filter(|(k, val)| before.0.get(*k) != Some(*val)).map(|(k, _)| k).collect();
        assert!(written.iter().all(|k| k.starts_with(b"m/uchat/") || k.starts_with(b"m/uchatn/")), "{written:?}");
        // A full list refuses more (and an add of a chat already in it still answers).
        let mut v = MemView::default();
        for c in 1..=USER_CHATS_MAX {
            ok(&mut v, Cmd::AddUserChat { user: B, chat: c });
        }
        assert_eq!(err(&mut v, Cmd::AddUserChat { user: B, chat: USER_CHATS_MAX + 1 }), ChatError::TooManyChats);
        ok(&mut v, Cmd::AddUserChat { user: B, chat: 5 });
        ok(&mut v, Cmd::RemoveUserChat { user: B, chat: 5 });
        ok(&mut v, Cmd::RemoveUserChat { user: B, chat: 5 });
        ok(&mut v, Cmd::AddUserChat { user: B, chat: USER_CHATS_MAX + 1 });
        assert_eq!(err(&mut v, Cmd::AddUserChat { user: B, chat: USER_CHATS_MAX + 2 }), ChatError::TooManyChats, "a removal twice frees one place");
        let Ok(Reply::Chats(all)) = query(&v, &Query::UserChats { user: B }).unwrap() else { panic!() };
        assert_eq!(all.len() as u64, USER_CHATS_MAX);
    }

    fn page_of(v: &MemView, q: Query) -> (Vec<u64>, bool) {
        match query(v, &q).unwrap() {
            Ok(Reply::Page { messages, more }) => (messages.iter().map(|m| m.id).collect(), more),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pages_slices_and_searches_are_cut_by_bytes_and_say_where_to_go_on() {
        let mut v = MemView::default();
        group(&mut v);
        let heavy: String = std::iter::repeat_n('😀', MESSAGE_MAX).collect();
        for i in 1..=40 {
            send(&mut v, A, i, &heavy, i).unwrap();
        }
        let per_page = REPLY_BYTES / (heavy.len() + 96);
        let (ids, more) = page_of(&v, Query::HistoryPage { chat: CHAT, user: B, before: 0, after: 0, limit: 100 });
        assert!(more && ids.len() <= per_page + 1 && ids.len() >= per_page - 1, "{} of 40 fit", ids.len());
        assert_eq!(ids[0], 40, "newest first");
        // Paging back from the last id reaches every message once.
        let (mut all, mut before) = (ids.clone(), *ids.last().unwrap());
        loop {
            let (ids, more) = page_of(&v, Query::HistoryPage { chat: CHAT, user: B, before, after: 0, limit: 100 });
            all.extend(&ids);
            if !more {
                break;
            }
            before = *ids.last().unwrap();
        }
        assert_eq!(all, (1..=40).rev().collect::<Vec<_>>());
        let (fwd, more) = page_of(&v, Query::HistoryPage { chat: CHAT, user: B, before: 0, after: 38, limit: 100 });
        assert_eq!((fwd, more), (vec![39, 40], false), "forward to the end");
        let (none, more) = page_of(&v, Query::HistoryPage { chat: CHAT, user: B, before: 0, after: u64::MAX, limit: 10 });
        assert!(none.is_empty() && !more, "past the end: nothing, no overflow");
        let (found, more) = page_of(&v, Query::SearchBefore { chat: CHAT, user: B, text: "😀😀".into(), limit: 100, before: 0 });
        assert!(more && found.len() < 40);
        let (next, _) = page_of(&v, Query::SearchBefore { chat: CHAT, user: B, text: "😀😀".into(), limit: 100, before: *found.last().unwrap() });
        assert_eq!(next[0], found.last().unwrap() - 1, "search goes on below the last match");
        // A difference slice from 0 is cut too, and says more.
        match diff(&v, B, 0) {
            ChatDiff::Events { events, messages, more, .. } => {
                assert!(more && events.len() < 41, "{} events", events.len());
                let bytes: usize = messages.iter().map(Message::wire_size).sum();
                assert!(bytes <= REPLY_BYTES, "{bytes}");
            }
            other => panic!("{other:?}"),
        }
        // The byte count is an upper bound of the wire encoding.
        let m = get_row::<Message>(&v, &msg_key(CHAT, 1)).unwrap().unwrap();
        let wire = prost::Message::encoded_len(&super::super::model::message(CHAT, &m));
        assert!(m.wire_size() >= wire, "{} < {wire}", m.wire_size());
    }

    #[test]
    fn reactions_are_counted_and_rows_of_the_old_format_move_at_the_next_reaction() {
        let mut v = MemView::default();
        group(&mut v);
        for u in 10..30u64 {
            ok(&mut v, Cmd::Invite { chat: CHAT, by: A, users: vec![u << 16 | 1], now_ms: 1 });
        }
        send(&mut v, A, 1, "react to me", 2).unwrap();
        for u in 10..30u64 {
            ok(&mut v, Cmd::React { chat: CHAT, user: u << 16 | 1, id: 1, emoji: "👍".into(), now_ms: 3 });
        }
        let m = get_row::<Message>(&v, &msg_key(CHAT, 1)).unwrap().unwrap();
        assert_eq!(m.reactions, vec![Reaction { emoji: "👍".into(), count: 20, recent: vec![29 << 16 | 1, 28 << 16 | 1, 27 << 16 | 1] }]);
        let page = |v: &MemView, after: u64| match query(v, &Query::Reactors { chat: CHAT, user: B, id: 1, after, limit: 7 }).unwrap() {
            Ok(Reply::Reactors(r)) => r,
            other => panic!("{other:?}"),
        };
        let (mut all, mut after) = (Vec::new(), 0);
        loop {
            let p = page(&v, after);
            let Some(last) = p.last() else { break };
            after = last.0;
            all.extend(p);
        }
        assert_eq!(all.len(), 20);
        // A row written before format 3 lists every reactor; it reads as
        // counts, its reactors page, and they get rows at the next reaction.
        let old = MessageV2 { id: 2, from: A, date_ms: 4, text: "old".into(), reply_to: 0, edit_ms: 0, deleted: false, fwd: None, reactions: vec![("🔥".into(), vec![A, B])], media: None };
        #[derive(Serialize)]
        struct V2Row<'a>(u64, u64, u64, &'a str, u64, u64, bool, Option<Forwarded>, Vec<(String, Vec<u64>)>, Option<Attachment>);
        let row = V2Row(old.id, old.from, old.date_ms, &old.text, 0, 0, false, None, old.reactions.clone(), None);
        v.put(&msg_key(CHAT, 2), courier_raft::codec::encode_as(2, &row));
        let mut c = get::<Chat>(&v, &chat_key(CHAT)).unwrap().unwrap();
        c.last_id = 2;
        put(&mut v, &chat_key(CHAT), &c);
        let m = get_row::<Message>(&v, &msg_key(CHAT, 2)).unwrap().unwrap();
        assert_eq!(m.reactions, vec![Reaction { emoji: "🔥".into(), count: 2, recent: vec![B, A] }]);
        let listed = |v: &MemView| match query(v, &Query::Reactors { chat: CHAT, user: B, id: 2, after: 0, limit: 10 }).unwrap() {
            Ok(Reply::Reactors(r)) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(listed(&v), vec![(A, "🔥".to_string()), (B, "🔥".to_string())]);
        // A changes to 👍: the count moves, B's old reaction gets its row.
        ok(&mut v, Cmd::React { chat: CHAT, user: A, id: 2, emoji: "👍".into(), now_ms: 5 });
        let m = get_row::<Message>(&v, &msg_key(CHAT, 2)).unwrap().unwrap();
        assert!(m.unrowed.is_empty());
        assert_eq!(m.reactions, vec![Reaction { emoji: "🔥".into(), count: 1, recent: vec![B] }, Reaction { emoji: "👍".into(), count: 1, recent: vec![A] }]);
        assert_eq!(listed(&v), vec![(A, "👍".to_string()), (B, "🔥".to_string())]);
        // B's repeat of its old reaction changes nothing.
        let before = v.clone();
        ok(&mut v, Cmd::React { chat: CHAT, user: B, id: 2, emoji: "🔥".into(), now_ms: 6 });
        assert_eq!(v, before);
    }
}
