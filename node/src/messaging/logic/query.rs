//! Queries: [`query`] with its pages, searches, differences, dialogs and
//! member lists, each bounded by count and by bytes ([`Budget`]).

use courier_raft::logic::StateRead;

use super::apply::old_user_chats;
use super::ask;
use super::keys::*;
use super::types::*;
use super::visibility::{event_in, with_views};
use crate::app::answer;
use crate::error::Result;
use crate::state::{get, get_row, id_after, key};

/// The messages `user` deleted for themselves in `chat` (sorted).
fn hidden(view: &dyn StateRead, chat: u64, user: u64) -> Result<Vec<u64>> {
    Ok(get(view, &hidden_key(chat, user))?.unwrap_or_default())
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
fn members(view: &dyn StateRead, chat: u64, user: u64, after: u64, limit: u32) -> Result<Outcome<Vec<(u64, Member)>>> {
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
    Ok(Ok(out))
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
fn difference_bounded(view: &dyn StateRead, user: u64, chats: impl Iterator<Item = (u64, u64, Option<u64>)>) -> Result<BoundedDiff> {
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
    Ok(BoundedDiff { diffs, looked })
}

/// Answers one messaging query from the (linearizably read) state, encoded
/// ([`answer`]).
pub fn query(view: &dyn StateRead, q: &Query) -> Result<Vec<u8>> {
    match q {
        Query::History(r) => answer(r, ask_history(view, r)),
        Query::HistoryPage(r) => answer(r, ask_history_page(view, r)),
        Query::Difference(r) => answer(r, ask_difference(view, r)),
        Query::BlockedAgainst(r) => answer(r, ask_blocked_against(view, r)),
        Query::DifferenceBounded(r) => answer(r, ask_difference_bounded(view, r)),
        Query::DifferenceReads(r) => answer(r, ask_difference_reads(view, r)),
        Query::Dialogs(r) => answer(r, ask_dialogs(view, r)),
        Query::ChatRows(r) => answer(r, ask_chat_rows(view, r)),
        Query::Search(r) => answer(r, ask_search(view, r)),
        Query::SearchBefore(r) => answer(r, ask_search_before(view, r)),
        Query::Reactors(r) => answer(r, ask_reactors(view, r)),
        Query::MembersIn(r) => answer(r, ask_members_in(view, r)),
        Query::Get(r) => answer(r, ask_get(view, r)),
        Query::UserChats(r) => answer(r, ask_user_chats(view, r)),
        Query::Memberships(r) => answer(r, ask_memberships(view, r)),
        Query::Members(r) => answer(r, ask_members(view, r)),
        Query::MembersAfter(r) => answer(r, ask_members_after(view, r)),
    }
}

fn ask_history(view: &dyn StateRead, req: &ask::History) -> Result<Outcome<Vec<Message>>> {
    let ask::History { chat, user, before, after, limit } = req;
    Ok(history(view, *chat, *user, *before, *after, *limit)?.map(|(page, _)| page))
}

fn ask_history_page(view: &dyn StateRead, req: &ask::HistoryPage) -> Result<Outcome<Page>> {
    let ask::HistoryPage { chat, user, before, after, limit } = req;
    Ok(history(view, *chat, *user, *before, *after, *limit)?.map(|(messages, more)| Page { messages, more }))
}

/// Every chat asked, each cut by bytes (nodes of the previous version ask this).
fn ask_difference(view: &dyn StateRead, req: &ask::Difference) -> Result<Outcome<Vec<ChatDiff>>> {
    let ask::Difference { user, chats } = req;
    let mut out = Vec::new();
    for (chat, pts) in chats {
        out.push(chat_difference(view, *chat, *user, *pts, REPLY_BYTES)?);
    }
    Ok(Ok(out))
}

fn ask_blocked_against(view: &dyn StateRead, req: &ask::BlockedAgainst) -> Result<Outcome<Vec<u64>>> {
    let ask::BlockedAgainst { user, chats } = req;
    let mut out = Vec::new();
    for c in chats {
        if blocked_against(view, *c, *user)? {
            out.push(*c);
        }
    }
    Ok(Ok(out))
}

fn ask_difference_bounded(view: &dyn StateRead, req: &ask::DifferenceBounded) -> Result<Outcome<BoundedDiff>> {
    let ask::DifferenceBounded { user, chats } = req;
    let chats = chats.iter().map(|(c, pts)| (*c, *pts, None));
    Ok(Ok(difference_bounded(view, *user, chats)?))
}

fn ask_difference_reads(view: &dyn StateRead, req: &ask::DifferenceReads) -> Result<Outcome<BoundedDiff>> {
    let ask::DifferenceReads { user, chats } = req;
    let chats = chats.iter().map(|(c, pts, read)| (*c, *pts, Some(*read)));
    Ok(Ok(difference_bounded(view, *user, chats)?))
}

fn ask_dialogs(view: &dyn StateRead, req: &ask::Dialogs) -> Result<Outcome<Vec<Dialog>>> {
    let ask::Dialogs { user, chats } = req;
    let mut out = Vec::new();
    for chat in chats {
        let Ok((c, me)) = membership(view, *chat, *user)? else { continue };
        let lo = c.last_id.saturating_sub(99).max(1);
        let mut last = if c.last_id > 0 { page(view, *chat, *user, (lo..=c.last_id).rev(), 1, any)?.0.pop() } else { None };
        if let Some(m) = last.as_mut() {
            with_views(view, &c, std::slice::from_mut(m))?;
        }
        let unread = unread(view, &c, *user, me.read_max_id)?;
        let peer = if c.kind == ChatKind::Private { private_peer(view, *chat, *user)? } else { 0 };
        out.push(Dialog { chat: c, me, last, unread, peer });
    }
    Ok(Ok(out))
}

/// The other member of a private chat (0: none left), whom the chat is
/// titled by on each side.
fn private_peer(view: &dyn StateRead, chat: u64, me: u64) -> Result<u64> {
    let prefix = members_prefix(chat);
    let rows = view.scan(&prefix, &[], 3)?;
    Ok(rows.iter().filter_map(|(k, _)| id_after(k, prefix.len())).find(|u| *u != me).unwrap_or(0))
}

fn ask_chat_rows(view: &dyn StateRead, req: &ask::ChatRows) -> Result<Outcome<Vec<Chat>>> {
    let ask::ChatRows { user, chats } = req;
    let mut out = Vec::new();
    for chat in chats {
        if let Ok((c, _)) = membership(view, *chat, *user)? {
            out.push(c);
        }
    }
    Ok(Ok(out))
}

fn ask_search(view: &dyn StateRead, req: &ask::Search) -> Result<Outcome<Vec<Message>>> {
    let ask::Search { chat, user, text, limit } = req;
    Ok(search(view, *chat, *user, text, *limit, 0)?.map(|(page, _)| page))
}

fn ask_search_before(view: &dyn StateRead, req: &ask::SearchBefore) -> Result<Outcome<Page>> {
    let ask::SearchBefore { chat, user, text, limit, before } = req;
    Ok(search(view, *chat, *user, text, *limit, *before)?.map(|(messages, more)| Page { messages, more }))
}

fn ask_reactors(view: &dyn StateRead, req: &ask::Reactors) -> Result<Outcome<Vec<(u64, String)>>> {
    let ask::Reactors { chat, user, id, after, limit } = req;
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
    Ok(Ok(out))
}

fn ask_members_in(view: &dyn StateRead, req: &ask::MembersIn) -> Result<Outcome<ChatMembers>> {
    let ask::MembersIn { chat, users } = req;
    let Some(c) = get::<Chat>(view, &chat_key(*chat))? else { return Ok(Err(ChatError::NotAMember)) };
    let mut members = Vec::new();
    for u in users.iter().take(MEMBERS_PAGE_MAX as usize) {
        if let Some(m) = get::<Member>(view, &member_key(*chat, *u))? {
            members.push((*u, m));
        }
    }
    Ok(Ok(ChatMembers { kind: c.kind, members }))
}

fn ask_get(view: &dyn StateRead, req: &ask::Get) -> Result<Outcome<Vec<Message>>> {
    let ask::Get { chat, user, ids } = req;
    let (c, _) = tri!(membership(view, *chat, *user)?);
    let mut out = Vec::new();
    for id in ids {
        match get_row::<Message>(view, &msg_key(*chat, *id))? {
            Some(m) if !m.deleted => out.push(m),
            _ => return Ok(Err(ChatError::MessageNotFound)),
        }
    }
    with_views(view, &c, &mut out)?;
    Ok(Ok(out))
}

fn ask_user_chats(view: &dyn StateRead, req: &ask::UserChats) -> Result<Outcome<Vec<u64>>> {
    let ask::UserChats { user } = req;
    let prefix = user_chats_prefix(*user);
    let mut chats = old_user_chats(view, *user)?;
    let rows = view.scan(&prefix, &[], USER_CHATS_MAX as usize)?;
    chats.extend(rows.iter().filter_map(|(k, _)| id_after(k, prefix.len())));
    Ok(Ok(chats))
}

fn ask_memberships(view: &dyn StateRead, req: &ask::Memberships) -> Result<Outcome<Vec<u64>>> {
    let ask::Memberships { user, chats } = req;
    let mut out = Vec::new();
    for chat in chats {
        if get::<Member>(view, &member_key(*chat, *user))?.is_some() {
            out.push(*chat);
        }
    }
    Ok(Ok(out))
}

fn ask_members(view: &dyn StateRead, req: &ask::Members) -> Result<Outcome<Vec<(u64, Member)>>> {
    let ask::Members { chat, user, limit } = req;
    members(view, *chat, *user, 0, *limit)
}

fn ask_members_after(view: &dyn StateRead, req: &ask::MembersAfter) -> Result<Outcome<Vec<(u64, Member)>>> {
    let ask::MembersAfter { chat, user, after, limit } = req;
    members(view, *chat, *user, *after, *limit)
}

#[cfg(test)]
mod tests;
