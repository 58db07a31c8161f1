//! The chat types: records and rows (with the older formats they are read
//! from), commands, queries and their answers, and the limits. These are in
//! Raft logs, in rows and on the wire: their fields and variants never
//! move, new ones go at the end.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::media::logic::Thumb;
use crate::state::Evolved;

use super::{ask, cmd};

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

    /// The members who see a per-member event their own way
    /// ([`event_for`]); everyone else sees an empty event in its place.
    pub fn concerned(&self) -> &[u64] {
        match self {
            EventKind::Hidden { user, .. } | EventKind::SubscriberLeft(user) => std::slice::from_ref(user),
            EventKind::SubscribersJoined(users) => users,
            _ => &[],
        }
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
    Create(cmd::Create),
    Send(cmd::Send),
    Edit(cmd::Edit),
    Delete(cmd::Delete),
    Hide(cmd::Hide),
    Read(cmd::Read),
    Invite(cmd::Invite),
    Remove(cmd::Remove),
    SetTitle(cmd::SetTitle),
    SetRole(cmd::SetRole),
    ForwardV1(cmd::ForwardV1),
    Pin(cmd::Pin),
    React(cmd::React),
    AddUserChat(cmd::AddUserChat),
    RemoveUserChat(cmd::RemoveUserChat),
    // Commands are in Raft logs: a changed command is a new variant at the
    // end, and the old one keeps applying.
    SendMedia(cmd::SendMedia),
    Forward(cmd::Forward),
    Block(cmd::Block),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    History(ask::History),
    Difference(ask::Difference),
    Dialogs(ask::Dialogs),
    UserChats(ask::UserChats),
    Memberships(ask::Memberships),
    Members(ask::Members),
    Search(ask::Search),
    Get(ask::Get),
    // Queries cross the wire to a group's leader: a new one is a new
    // variant at the end.
    MembersAfter(ask::MembersAfter),
    SearchBefore(ask::SearchBefore),
    ChatRows(ask::ChatRows),
    Reactors(ask::Reactors),
    MembersIn(ask::MembersIn),
    HistoryPage(ask::HistoryPage),
    DifferenceBounded(ask::DifferenceBounded),
    BlockedAgainst(ask::BlockedAgainst),
    DifferenceReads(ask::DifferenceReads),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dialog {
    pub chat: Chat,
    pub me: Member,
    pub last: Option<Message>,
    pub unread: u64,
    /// A private chat's other member (0 for other chats).
    pub peer: u64,
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

/// What a change did: the chat after it, the event(s), and the message
/// concerned (for live delivery).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    pub chat: Chat,
    pub events: Vec<Event>,
    pub message: Option<Message>,
}

/// A page of messages; `more` when it was cut before its range ended (by
/// count or bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub messages: Vec<Message>,
    pub more: bool,
}

/// Which of the users asked are members of a chat, with the chat's kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMembers {
    pub kind: ChatKind,
    pub members: Vec<(u64, Member)>,
}

/// The chats of a bounded difference with something new, and how many
/// of the chats asked (in order) it looked at; the rest come next time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundedDiff {
    pub diffs: Vec<ChatDiff>,
    pub looked: u32,
}

crate::app::requests!(AppCommand::Chat, Cmd, cmd {
    Create => Changed,
    Send => Changed,
    Edit => Changed,
    Delete => Changed,
    Hide => Changed,
    Read => Changed,
    Invite => Changed,
    Remove => Changed,
    SetTitle => Changed,
    SetRole => Changed,
    ForwardV1 => Changed,
    Pin => Changed,
    React => Changed,
    AddUserChat => (),
    RemoveUserChat => (),
    SendMedia => Changed,
    Forward => Changed,
    Block => (),
});

crate::app::requests!(AppQuery::Chat, Query, ask {
    History => Vec<Message>,
    Difference => Vec<ChatDiff>,
    Dialogs => Vec<Dialog>,
    UserChats => Vec<u64>,
    Memberships => Vec<u64>,
    Members => Vec<(u64, Member)>,
    Search => Vec<Message>,
    Get => Vec<Message>,
    MembersAfter => Vec<(u64, Member)>,
    SearchBefore => Page,
    ChatRows => Vec<Chat>,
    Reactors => Vec<(u64, String)>,
    MembersIn => ChatMembers,
    HistoryPage => Page,
    DifferenceBounded => BoundedDiff,
    BlockedAgainst => Vec<u64>,
    DifferenceReads => BoundedDiff,
});

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

/// An answer of type `T`, or a refusal.
pub type Outcome<T> = std::result::Result<T, ChatError>;

#[cfg(test)]
mod tests;
