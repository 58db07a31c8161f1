//! The messaging service: chats as replicated ordered logs (see `logic.rs`
//! for the model and `docs/architecture.md` for the design). It turns client
//! methods into commands for the chat's group (or the user's group for the
//! chat list), and publishes what committed to every node, which pushes it to
//! the connected devices of the chat's members.

pub mod limit;
pub mod logic;
pub mod model;
pub mod updates;

use courier_proto::Code;
use std::sync::Arc;

use courier_raft::multi::group_for_key;

use crate::app::{self, AppCommand, AppQuery, Request};
use crate::auth::Auth;
use crate::clock::Clock;
use crate::cluster::Node;
use crate::error::{Error, Result};
use crate::push::{Origin, Pushes};
pub use logic::{Chat, ChatDiff, ChatError, ChatKind, Dialog, Event, Message, Role};
use logic::{ask, cmd};

/// How long a typing notice shows.
pub const TYPING_MS: u64 = 6_000;

/// The id of the private chat of `a` and `b`: deterministic, so both sides
/// (and a block made before the chat) find the same one.
fn private_chat_id(a: u64, b: u64, groups: u32) -> u64 {
    let (a, b) = (a.min(b), a.max(b));
    let key = format!("dm:{a}:{b}");
    let g = group_for_key(key.as_bytes(), groups);
    (fnv(key.as_bytes()) & ((1 << 47) - 1)).max(1) << 16 | u64::from(g)
}

/// A user's place among their heavy reads in flight; given back on drop
/// (also when the request is cancelled).
struct HeavyTurn {
    book: Arc<std::sync::Mutex<crate::limit::InFlight<u64>>>,
    user: u64,
}

impl HeavyTurn {
    fn take(book: &Arc<std::sync::Mutex<crate::limit::InFlight<u64>>>, user: u64) -> Option<HeavyTurn> {
        book.lock().expect("in-flight lock").try_take(&user).then(|| HeavyTurn { book: book.clone(), user })
    }
}

impl Drop for HeavyTurn {
    fn drop(&mut self) {
        self.book.lock().expect("in-flight lock").give_back(&self.user);
    }
}

/// A file to post, as the client names it (checked at the door for shape only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputMedia {
    pub file: u64,
    pub kind: logic::MediaKind,
    pub duration_secs: u32,
}

pub struct Messaging {
    node: Node,
    pushes: Arc<Pushes>,
    media: Arc<crate::media::Media>,
    auth: Arc<Auth>,
    clock: Clock,
    /// `debug.unsafe_ignore_random_id`: a deliberate G3 bug for the chaos harness.
    ignore_random_id: bool,
    /// Typing notices per (user, chat), this node's share.
    typing_limit: std::sync::Mutex<crate::limit::RateLimiter<(u64, u64)>>,
    /// New private chats per user an hour, this node's share.
    new_private_limit: std::sync::Mutex<crate::limit::RateLimiter<u64>>,
    /// Heavy reads (searches) each user has in flight through this node.
    heavy_in_flight: Arc<std::sync::Mutex<crate::limit::InFlight<u64>>>,
}

impl Messaging {
    pub fn new(node: Node, pushes: Arc<Pushes>, auth: Arc<Auth>, media: Arc<crate::media::Media>, clock: Clock) -> Messaging {
        let ignore_random_id = node.config().debug.unsafe_ignore_random_id;
        if ignore_random_id {
            tracing::warn!("debug.unsafe_ignore_random_id is set: retried sends WILL duplicate messages");
        }
        let typing_limit = std::sync::Mutex::new(crate::limit::RateLimiter::penalizing(0));
        let new_private_limit = std::sync::Mutex::new(crate::limit::RateLimiter::per_hour(0));
        let heavy_in_flight = Arc::new(std::sync::Mutex::new(crate::limit::InFlight::new(node.config().limits.heavy_reads_per_user_at_once)));
        Messaging { node, pushes, media, auth, clock, ignore_random_id, typing_limit, new_private_limit, heavy_in_flight }
    }

    async fn exec<C: Request + Into<AppCommand>>(&self, group: u32, cmd: C) -> Result<C::Answer> {
        app::write(&self.node, group, cmd).await
    }

    async fn read<Q: Request + Into<AppQuery>>(&self, group: u32, q: Q) -> Result<Q::Answer> {
        app::read(&self.node, group, q).await
    }

    /// The group of a chat id, or `NotAMember` for an id no chat can have.
    fn group_of(&self, chat: u64) -> Result<u32> {
        let g = logic::chat_group(chat);
        self.node.raft()?.is_data_group(g).then_some(g).ok_or_else(|| ChatError::NotAMember.into())
    }

    /// Runs a change in the chat's group and publishes what it did.
    async fn change<C: Request<Answer = logic::Changed> + Into<AppCommand>>(&self, chat: u64, cmd: C) -> Result<(Chat, Option<Message>)> {
        let (chat, _, message) = self.change_from(chat, cmd, None).await?;
        Ok((chat, message))
    }

    /// [`Self::change`], also answering the events it made; `origin`'s
    /// client applies them from this answer and is not pushed them.
    async fn change_from<C: Request<Answer = logic::Changed> + Into<AppCommand>>(&self, chat: u64, cmd: C, origin: Option<Origin>) -> Result<(Chat, Vec<Event>, Option<Message>)> {
        let logic::Changed { chat, events, message } = self.exec(self.group_of(chat)?, cmd).await?;
        if !events.is_empty() {
            // Handed to every node (this one first) without making
            // the sender wait; a device that misses it catches up by difference.
            for push in updates::chat_pushes(chat.id, &events, message.as_ref(), origin) {
                self.pushes.publish(push);
            }
        }
        Ok((chat, events, message))
    }

    /// Adds the chat to each user's list (their own groups) before they join:
    /// the list is a superset, the chat's member rows decide.
    async fn list_chat(&self, users: &[u64], chat: u64) -> Result<()> {
        let writes = users.iter().map(|u| self.exec(crate::auth::logic::user_group(*u), cmd::AddUserChat { user: *u, chat }));
        for r in futures::future::join_all(writes).await {
            r?;
        }
        Ok(())
    }

    pub async fn create(&self, me: u64, kind: ChatKind, title: String, members: Vec<u64>) -> Result<Chat> {
        let groups = self.node.raft()?.data_groups();
        let mut all = vec![me];
        for m in members {
            if !all.contains(&m) {
                all.push(m);
            }
        }
        self.must_be_users(&all[1..]).await?;
        let id = match kind {
            ChatKind::Private => {
                if all.len() != 2 {
                    return Err(ChatError::BadRequest("a private chat has exactly one other member".into()).into());
                }
                let id = private_chat_id(all[0], all[1], groups);
                // Someone new costs from the hourly budget; a chat one has, nothing.
                if self.must_be_member(me, id).await.is_err() {
                    let budget = self.node.config().limits.new_private_chats_per_hour;
                    let live = self.node.live_nodes();
                    self.new_private_limit
                        .lock()
                        .expect("limiter lock")
                        .check_share(&me, self.clock.now_ms(), budget, live)
                        .map_err(|secs| ChatError::FloodWait { secs })?;
                }
                id
            }
            _ => {
                self.must_not_be_blocked_by(me, &all[1..]).await?;
                let g = 1 + rand::random_range(0..groups);
                (rand::random::<u64>() & ((1 << 47) - 1)).max(1) << 16 | u64::from(g)
            }
        };
        self.list_chat(&all, id).await?;
        let creator = if kind == ChatKind::Private { all[0].min(all[1]) } else { me };
        let others = all.iter().copied().filter(|u| *u != creator).collect();
        let cmd = cmd::Create { id, kind, title, creator, members: others, now_ms: self.clock.now_ms() };
        // Published like any change: members' connections subscribe through its Joined event.
        Ok(self.change(id, cmd).await?.0)
    }

    pub async fn invite(&self, me: u64, chat: u64, users: Vec<u64>) -> Result<Chat> {
        // The inviter's membership first (no hint about a chat one is not
        // in), and before anything is listed.
        self.must_be_member(me, chat).await?;
        self.must_be_users(&users).await?;
        self.must_not_be_blocked_by(me, &users).await?;
        self.list_chat(&users, chat).await?;
        Ok(self.change(chat, cmd::Invite { chat, by: me, users, now_ms: self.clock.now_ms() }).await?.0)
    }

    /// Blocks (or unblocks) `other` for `me`: recorded in their private
    /// chat's group, which need not hold the chat yet.
    pub async fn block(&self, me: u64, other: u64, on: bool) -> Result<()> {
        if other == me {
            return Err(ChatError::BadRequest("you cannot block yourself".into()).into());
        }
        self.must_be_users(&[other]).await?;
        let chat = private_chat_id(me, other, self.node.raft()?.data_groups());
        self.exec(self.group_of(chat)?, cmd::Block { chat, by: me, on }).await
    }

    /// `UserBlocked` if any of `users` blocked `me` (one read per group of
    /// their private chats with `me`).
    async fn must_not_be_blocked_by(&self, me: u64, users: &[u64]) -> Result<()> {
        let groups = self.node.raft()?.data_groups();
        let chats = users.iter().filter(|u| **u != me).map(|u| private_chat_id(me, *u, groups)).collect();
        let blocked = self.per_group(chats, |cs| ask::BlockedAgainst { user: me, chats: cs }).await?;
        if blocked.is_empty() { Ok(()) } else { Err(ChatError::UserBlocked.into()) }
    }

    /// Every id names an account (checked before anything is written; the
    /// answer does not say which id is not one).
    /// At most 32 reads at once (an invitation names up to 1,000 users).
    async fn must_be_users(&self, users: &[u64]) -> Result<()> {
        for batch in users.chunks(32) {
            for found in futures::future::join_all(batch.iter().map(|u| self.auth.user_by_id(*u))).await {
                if found?.is_none() {
                    return Err(ChatError::BadRequest("a member named is not a user".into()).into());
                }
            }
        }
        Ok(())
    }

    pub async fn remove(&self, me: u64, chat: u64, user: u64) -> Result<Chat> {
        let (c, events, _) = self.change_from(chat, cmd::Remove { chat, by: me, user, now_ms: self.clock.now_ms() }, None).await?;
        // Only someone who was a member leaves a list: a made-up id names
        // no group worth a write (and may name none: the meta group's bits).
        if events.iter().any(|e| matches!(e.kind, logic::EventKind::Left(u) | logic::EventKind::SubscriberLeft(u) if u == user)) {
            self.exec(crate::auth::logic::user_group(user), cmd::RemoveUserChat { user, chat }).await?;
        }
        Ok(c)
    }

    pub async fn set_title(&self, me: u64, chat: u64, title: String) -> Result<Chat> {
        Ok(self.change(chat, cmd::SetTitle { chat, by: me, title, now_ms: self.clock.now_ms() }).await?.0)
    }

    pub async fn set_admin(&self, me: u64, chat: u64, user: u64, admin: bool) -> Result<Chat> {
        let role = if admin { Role::Admin } else { Role::Member };
        Ok(self.change(chat, cmd::SetRole { chat, by: me, user, role, now_ms: self.clock.now_ms() }).await?.0)
    }

    /// Posts a message; answers it and the events it made (none for a
    /// repeated `random_id`, which answers the first message).
    pub async fn send(&self, me: u64, chat: u64, random_id: u64, text: String, reply_to: u64, origin: Option<Origin>) -> Result<(Message, Vec<Event>)> {
        let random_id = if self.ignore_random_id { rand::random() } else { random_id };
        let cmd = cmd::Send { chat, from: me, random_id, text, reply_to, now_ms: self.clock.now_ms() };
        self.sent(chat, cmd, origin).await
    }

    /// Posts a file: only the sender's own uploads (a file received travels
    /// by forwarding its message), and a photo only if it is an image.
    pub async fn send_media(&self, me: u64, chat: u64, random_id: u64, caption: String, reply_to: u64, m: InputMedia, origin: Option<Origin>) -> Result<(Message, Vec<Event>)> {
        let f = self.media.file(me, m.file, false).await?;
        if m.kind == logic::MediaKind::Photo && f.thumbs.is_empty() {
            return Err(Error::BadRequest("a photo must be an image (JPEG, PNG, GIF or WebP); send it as a document".into()));
        }
        let media = logic::Attachment { file: f.id, kind: m.kind, name: f.name, mime: f.mime, size: f.size, sha256: f.sha256, thumbs: f.thumbs, duration_secs: m.duration_secs };
        let random_id = if self.ignore_random_id { rand::random() } else { random_id };
        let cmd = cmd::SendMedia { chat, from: me, random_id, caption, reply_to, media, now_ms: self.clock.now_ms() };
        self.sent(chat, cmd, origin).await
    }

    async fn sent<C: Request<Answer = logic::Changed> + Into<AppCommand>>(&self, chat: u64, cmd: C, origin: Option<Origin>) -> Result<(Message, Vec<Event>)> {
        match self.change_from(chat, cmd, origin).await? {
            (_, events, Some(m)) => Ok((m, events)),
            (_, _, None) => Err(Error::Io("send answered no message".into())),
        }
    }

    /// Bytes of a file: the uploader's own, or (`via`: a chat and message)
    /// a file carried by a message of a chat `me` is in.
    pub async fn read_file(&self, me: u64, file: u64, via: Option<(u64, u64)>, thumb: Option<u8>, offset: u64, limit: u32) -> Result<(crate::media::File, Vec<u8>)> {
        let shared = match via {
            Some((chat, msg)) => match self.attachment(me, chat, msg).await? {
                Some(a) if a.file == file => true,
                _ => return Err(crate::media::MediaError::NotFound.into()),
            },
            None => false,
        };
        self.media.read_file(me, file, shared, thumb, offset, limit).await
    }

    /// The attachment of message `id` in `chat`, if `me` is a member and it
    /// carries one: the grant behind downloading a file posted in a chat.
    pub async fn attachment(&self, me: u64, chat: u64, id: u64) -> Result<Option<logic::Attachment>> {
        let m = self.read(self.group_of(chat)?, ask::Get { chat, user: me, ids: vec![id] }).await?;
        Ok(m.into_iter().next().and_then(|m| m.media))
    }

    pub async fn edit(&self, me: u64, chat: u64, id: u64, text: String) -> Result<Message> {
        let cmd = cmd::Edit { chat, by: me, id, text, now_ms: self.clock.now_ms() };
        self.change(chat, cmd).await?.1.ok_or_else(|| Error::Io("edit answered no message".into()))
    }

    pub async fn delete(&self, me: u64, chat: u64, ids: Vec<u64>) -> Result<()> {
        self.change(chat, cmd::Delete { chat, by: me, ids, now_ms: self.clock.now_ms() }).await?;
        Ok(())
    }

    pub async fn delete_for_me(&self, me: u64, chat: u64, ids: Vec<u64>) -> Result<()> {
        self.change(chat, cmd::Hide { chat, user: me, ids, now_ms: self.clock.now_ms() }).await?;
        Ok(())
    }

    pub async fn read_history(&self, me: u64, chat: u64, max_id: u64) -> Result<()> {
        let (c, _) = self.change(chat, cmd::Read { chat, user: me, max_id, now_ms: self.clock.now_ms() }).await?;
        if c.kind == ChatKind::Channel {
            // A read in a channel is no event: only the reader's devices hear of it.
            self.pushes.publish(updates::own_read(chat, me, max_id.min(c.last_id)));
        }
        Ok(())
    }

    /// A page of history and whether its range went on (see `ask::History`).
    pub async fn history(&self, me: u64, chat: u64, before: u64, after: u64, limit: u32) -> Result<(Vec<Message>, bool)> {
        let logic::Page { messages, more } = self.read(self.group_of(chat)?, ask::HistoryPage { chat, user: me, before, after, limit }).await?;
        Ok((messages, more))
    }

    /// Who reacted with what to a message, a page in user-id order.
    pub async fn reactors(&self, me: u64, chat: u64, id: u64, after: u64, limit: u32) -> Result<Vec<(u64, String)>> {
        self.read(self.group_of(chat)?, ask::Reactors { chat, user: me, id, after, limit }).await
    }

    /// Which of `users` `me` may see (names, presence): `me`, and anyone
    /// who shares a chat with `me`, except that in a channel subscribers
    /// see its admins and admins see everyone. Both chat lists are read
    /// (a superset each); a common chat is then checked in its group.
    pub async fn visible_users(&self, me: u64, users: &[u64]) -> Result<Vec<u64>> {
        /// Common chats checked per user (each list is a superset; one that
        /// is still shared is enough).
        const CHECKED: usize = 4;
        let mut seen: Vec<u64> = users.iter().copied().filter(|u| *u == me).take(1).collect();
        let others: Vec<u64> = {
            let mut o: Vec<u64> = users.iter().copied().filter(|u| *u != me && self.user_group_of(*u).is_ok()).collect();
            o.sort_unstable();
            o.dedup();
            o
        };
        if others.is_empty() {
            return Ok(seen);
        }
        let mine: std::collections::HashSet<u64> = self.user_chats(me).await?.into_iter().collect();
        let lists = futures::future::join_all(others.iter().map(|u| self.user_chats(*u))).await;
        // chat → the users to check in it
        let mut checks: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
        for (u, list) in others.iter().zip(lists) {
            for chat in list?.into_iter().filter(|c| mine.contains(c)).take(CHECKED) {
                checks.entry(chat).or_default().push(*u);
            }
        }
        let reads = checks.into_iter().filter_map(|(chat, mut who)| {
            who.push(me);
            Some(self.read(self.group_of(chat).ok()?, ask::MembersIn { chat, users: who }))
        });
        for r in futures::future::join_all(reads).await {
            let (kind, members) = match r {
                Ok(logic::ChatMembers { kind, members }) => (kind, members),
                Err(e) if e.code() == Code::Unavailable => return Err(e),
                _ => continue, // the chat is gone: it shows no one
            };
            let Some((_, mine)) = members.iter().find(|(u, _)| *u == me) else { continue };
            for (u, m) in members.iter().filter(|(u, _)| *u != me) {
                let ok = kind != ChatKind::Channel || mine.role != Role::Member || m.role != Role::Member;
                if ok && !seen.contains(u) {
                    seen.push(*u);
                }
            }
        }
        Ok(seen)
    }

    /// The data group of a user id, or an error for an id no account can have.
    fn user_group_of(&self, user: u64) -> Result<u32> {
        let g = crate::auth::logic::user_group(user);
        self.node.raft()?.is_data_group(g).then_some(g).ok_or_else(|| ChatError::BadRequest("no such user".into()).into())
    }

    /// A page of the chat's members, in id order after `after`.
    pub async fn members(&self, me: u64, chat: u64, after: u64, limit: u32) -> Result<Vec<(u64, logic::Member)>> {
        self.read(self.group_of(chat)?, ask::MembersAfter { chat, user: me, after, limit }).await
    }

    /// Copies messages of `from_chat` (which `me` must be able to read) into `chat`.
    pub async fn forward(&self, me: u64, chat: u64, from_chat: u64, ids: Vec<u64>, random_id: u64) -> Result<Message> {
        let sources = self.read(self.group_of(from_chat)?, ask::Get { chat: from_chat, user: me, ids }).await?;
        let items = sources
            .into_iter()
            .map(|m| {
                // A forward of a forward names the original.
                let origin = m.fwd.clone().unwrap_or(logic::Forwarded { from: m.from, chat: from_chat, id: m.id, date_ms: m.date_ms });
                logic::Copy { text: m.text, fwd: origin, media: m.media }
            })
            .collect();
        let cmd = cmd::Forward { chat, from: me, random_id, items, now_ms: self.clock.now_ms() };
        self.change(chat, cmd).await?.1.ok_or_else(|| Error::Io("forward answered no message".into()))
    }

    pub async fn pin(&self, me: u64, chat: u64, id: u64) -> Result<Chat> {
        Ok(self.change(chat, cmd::Pin { chat, by: me, id, now_ms: self.clock.now_ms() }).await?.0)
    }

    pub async fn react(&self, me: u64, chat: u64, id: u64, emoji: String) -> Result<Message> {
        let cmd = cmd::React { chat, user: me, id, emoji, now_ms: self.clock.now_ms() };
        self.change(chat, cmd).await?.1.ok_or_else(|| Error::Io("reaction answered no message".into()))
    }

    /// Matches below `before` (0: from the newest) and whether more may follow.
    pub async fn search(&self, me: u64, chat: u64, text: String, limit: u32, before: u64) -> Result<(Vec<Message>, bool)> {
        // A few at once per user (`limits.heavy_reads_per_user_at_once`);
        // the leader runs a few at once for everyone.
        let _turn = HeavyTurn::take(&self.heavy_in_flight, me).ok_or(ChatError::FloodWait { secs: 1 })?;
        let logic::Page { messages, more } = self.read(self.group_of(chat)?, ask::SearchBefore { chat, user: me, text, limit, before }).await?;
        Ok((messages, more))
    }

    /// "typing…": checked against membership, sent to every node, not stored.
    pub async fn typing(&self, me: u64, chat: u64) -> Result<()> {
        // In a channel only admins type (subscribers' notices would go to all).
        match self.read(self.group_of(chat)?, ask::MembersIn { chat, users: vec![me] }).await? {
            logic::ChatMembers { members, .. } if members.is_empty() => return Err(ChatError::NotAMember.into()),
            logic::ChatMembers { kind: ChatKind::Channel, members } if members[0].1.role == Role::Member => return Err(ChatError::AdminRequired.into()),
            logic::ChatMembers { .. } => {}
        }
        let (budget, live) = (self.node.config().limits.typing_per_chat_per_minute, self.node.live_nodes());
        self.typing_limit
            .lock()
            .expect("limiter lock")
            .check_share(&(me, chat), self.clock.now_ms(), budget, live)
            .map_err(|secs| ChatError::FloodWait { secs })?;
        self.pushes.publish(updates::typing(chat, me, self.clock.now_ms() + TYPING_MS));
        Ok(())
    }

    /// `NotAMember` unless `me` is in `chat` (one read of the member row).
    async fn must_be_member(&self, me: u64, chat: u64) -> Result<()> {
        match self.read(self.group_of(chat)?, ask::Memberships { user: me, chats: vec![chat] }).await? {
            c if c == [chat] => Ok(()),
            _ => Err(ChatError::NotAMember.into()),
        }
    }

    /// The user's chat list (a superset; see [`Messaging::list_chat`]).
    async fn user_chats(&self, me: u64) -> Result<Vec<u64>> {
        self.read(self.user_group_of(me)?, ask::UserChats { user: me }).await
    }

    /// Runs one query per group over `chats`, concurrently.
    async fn per_group<T, Q: Request<Answer = Vec<T>> + Into<AppQuery>>(&self, chats: Vec<u64>, q: impl Fn(Vec<u64>) -> Q) -> Result<Vec<T>> {
        let mut by_group: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
        for c in chats {
            if let Ok(g) = self.group_of(c) {
                by_group.entry(g).or_default().push(c);
            }
        }
        let reads = by_group.into_iter().map(|(g, cs)| self.read(g, q(cs)));
        let mut out = Vec::new();
        for r in futures::future::join_all(reads).await {
            out.extend(r?);
        }
        Ok(out)
    }

    /// A page of the user's dialogs, most recent first: those after
    /// `before` = (last_ms, chat id) in that order ((0, 0): from the top), at
    /// most `limit` and [`logic::REPLY_BYTES`] twice over; and whether more
    /// follow. The chat rows are read first (small), the page chosen, and
    /// only its chats' last messages and unread counts read.
    pub async fn dialogs(&self, me: u64, before: (u64, u64), limit: usize) -> Result<(Vec<Dialog>, bool)> {
        let chats = self.user_chats(me).await?;
        let mut rows = self.per_group(chats, |cs| ask::ChatRows { user: me, chats: cs }).await?;
        rows.retain(|c| before == (0, 0) || (c.last_ms, c.id) < before);
        rows.sort_by_key(|c| std::cmp::Reverse((c.last_ms, c.id)));
        let mut more = rows.len() > limit;
        rows.truncate(limit);
        let order: Vec<u64> = rows.iter().map(|c| c.id).collect();
        let mut found = self.per_group(order.clone(), |cs| ask::Dialogs { user: me, chats: cs }).await?;
        found.sort_by_key(|d| order.iter().position(|c| *c == d.chat.id));
        let mut budget = logic::Budget::new(2 * logic::REPLY_BYTES);
        let n = found.len();
        let out: Vec<Dialog> = found.into_iter().take_while(|d| budget.take(d.chat.wire_size() + d.last.as_ref().map_or(0, Message::wire_size) + 32)).collect();
        more |= out.len() < n;
        Ok((out, more))
    }

    /// The chats the user is a member of now (the list checked against the chats).
    pub async fn member_chats(&self, me: u64) -> Result<Vec<u64>> {
        let chats = self.user_chats(me).await?;
        self.per_group(chats, |cs| ask::Memberships { user: me, chats: cs }).await
    }

    /// What the device missed: for each chat it names, the events after its
    /// pts; chats it does not name but the user is in come from pts 0. At
    /// most [`logic::REPLY_BYTES`] twice over: `true` when chats were left
    /// out (the device applies this and asks again).
    /// `states` are (chat, pts, read_max_id) as the device knows them.
    pub async fn difference(&self, me: u64, states: Vec<(u64, u64, u64)>) -> Result<(Vec<ChatDiff>, bool)> {
        let mut states = states;
        for c in self.user_chats(me).await? {
            if !states.iter().any(|(s, _, _)| *s == c) {
                states.push((c, 0, 0));
            }
        }
        let mut by_group: std::collections::BTreeMap<u32, Vec<(u64, u64, u64)>> = Default::default();
        let mut out = Vec::new();
        for (c, pts, read) in states {
            match self.group_of(c) {
                Ok(g) => by_group.entry(g).or_default().push((c, pts, read)),
                Err(_) => out.push(ChatDiff::Gone { chat: c }),
            }
        }
        let reads = by_group.into_iter().map(|(g, cs)| async move {
            let asked = cs.len();
            (asked, self.read(g, ask::DifferenceReads { user: me, chats: cs }).await)
        });
        let mut budget = logic::Budget::new(2 * logic::REPLY_BYTES);
        for d in &out {
            budget.charge(logic::diff_size(d));
        }
        let mut more = false;
        for (asked, r) in futures::future::join_all(reads).await {
            let logic::BoundedDiff { diffs, looked } = r?;
            // A group answers chats in order until its answer is full;
            // the rest wait for the next ask.
            more |= (looked as usize) < asked;
            for d in diffs {
                match budget.take(logic::diff_size(&d)) {
                    true => out.push(d),
                    false => more = true,
                }
            }
        }
        Ok((out, more))
    }
}

/// FNV-1a: a pinned hash for deterministic private-chat ids.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3))
}
