//! Commands: [`apply`], with the helpers that post messages, record events
//! and keep each user's list of chats.

use courier_raft::logic::{StateRead, StateView};

use super::cmd;
use super::keys::*;
use super::types::*;
use super::visibility::unname;
use crate::app::answer;
use crate::error::Result;
use crate::state::{get, get_row, put, put_row};

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

fn changed(chat: Chat, events: Vec<Event>, message: Option<Message>) -> Result<Outcome<Changed>> {
    Ok(Ok(Changed { chat, events, message }))
}

/// Posts one message (text, or media with a caption).
#[allow(clippy::too_many_arguments)]
fn send(view: &mut dyn StateView, chat: u64, from: u64, random_id: u64, text: &str, reply_to: u64, media: Option<&Attachment>, now_ms: u64) -> Result<Outcome<Changed>> {
    let (mut c, me) = tri!(membership(view, chat, from)?);
    if let Some(id) = get::<u64>(view, &rid_key(chat, from, random_id))? {
        let first = get_row::<Message>(view, &msg_key(chat, id))?;
        return Ok(Ok(Changed { chat: c, events: Vec::new(), message: first }));
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
fn forward(view: &mut dyn StateView, chat: u64, from: u64, random_id: u64, items: Vec<Copy>, now_ms: u64) -> Result<Outcome<Changed>> {
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

/// Applies one messaging command: its answer encoded ([`answer`]: each arm
/// answers its command's own type).
/// `Err` only for storage failures; every
/// refusal is an `Ok(Err(..))` and writes nothing. Each command recognizes a
/// repeat of itself (a retried request) and answers as the first time.
pub fn apply(view: &mut dyn StateView, cmd: &Cmd) -> Result<Vec<u8>> {
    match cmd {
        Cmd::Create(r) => answer(r, apply_create(view, r)),
        Cmd::Send(r) => answer(r, apply_send(view, r)),
        Cmd::SendMedia(r) => answer(r, apply_send_media(view, r)),
        Cmd::Edit(r) => answer(r, apply_edit(view, r)),
        Cmd::Delete(r) => answer(r, apply_delete(view, r)),
        Cmd::Hide(r) => answer(r, apply_hide(view, r)),
        Cmd::Read(r) => answer(r, apply_read(view, r)),
        Cmd::Invite(r) => answer(r, apply_invite(view, r)),
        Cmd::Remove(r) => answer(r, apply_remove(view, r)),
        Cmd::SetTitle(r) => answer(r, apply_set_title(view, r)),
        Cmd::SetRole(r) => answer(r, apply_set_role(view, r)),
        Cmd::ForwardV1(r) => answer(r, apply_forward_v1(view, r)),
        Cmd::Forward(r) => answer(r, apply_forward(view, r)),
        Cmd::Block(r) => answer(r, apply_block(view, r)),
        Cmd::Pin(r) => answer(r, apply_pin(view, r)),
        Cmd::React(r) => answer(r, apply_react(view, r)),
        Cmd::AddUserChat(r) => answer(r, apply_add_user_chat(view, r)),
        Cmd::RemoveUserChat(r) => answer(r, apply_remove_user_chat(view, r)),
    }
}

fn apply_create(view: &mut dyn StateView, req: &cmd::Create) -> Result<Outcome<Changed>> {
    let cmd::Create { id, kind, title, creator, members, now_ms } = req;
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

fn apply_send(view: &mut dyn StateView, req: &cmd::Send) -> Result<Outcome<Changed>> {
    let cmd::Send { chat, from, random_id, text, reply_to, now_ms } = req;
    send(view, *chat, *from, *random_id, text, *reply_to, None, *now_ms)
}

fn apply_send_media(view: &mut dyn StateView, req: &cmd::SendMedia) -> Result<Outcome<Changed>> {
    let cmd::SendMedia { chat, from, random_id, caption, reply_to, media, now_ms } = req;
    send(view, *chat, *from, *random_id, caption, *reply_to, Some(media), *now_ms)
}

fn apply_edit(view: &mut dyn StateView, req: &cmd::Edit) -> Result<Outcome<Changed>> {
    let cmd::Edit { chat, by, id, text, now_ms } = req;
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

fn apply_delete(view: &mut dyn StateView, req: &cmd::Delete) -> Result<Outcome<Changed>> {
    let cmd::Delete { chat, by, ids, now_ms } = req;
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

fn apply_hide(view: &mut dyn StateView, req: &cmd::Hide) -> Result<Outcome<Changed>> {
    let cmd::Hide { chat, user, ids, now_ms } = req;
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

fn apply_read(view: &mut dyn StateView, req: &cmd::Read) -> Result<Outcome<Changed>> {
    let cmd::Read { chat, user, max_id, now_ms } = req;
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

fn apply_invite(view: &mut dyn StateView, req: &cmd::Invite) -> Result<Outcome<Changed>> {
    let cmd::Invite { chat, by, users, now_ms } = req;
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

fn apply_remove(view: &mut dyn StateView, req: &cmd::Remove) -> Result<Outcome<Changed>> {
    let cmd::Remove { chat, by, user, now_ms } = req;
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

fn apply_set_title(view: &mut dyn StateView, req: &cmd::SetTitle) -> Result<Outcome<Changed>> {
    let cmd::SetTitle { chat, by, title, now_ms } = req;
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

fn apply_set_role(view: &mut dyn StateView, req: &cmd::SetRole) -> Result<Outcome<Changed>> {
    let cmd::SetRole { chat, by, user, role, now_ms } = req;
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

fn apply_forward_v1(view: &mut dyn StateView, req: &cmd::ForwardV1) -> Result<Outcome<Changed>> {
    let cmd::ForwardV1 { chat, from, random_id, items, now_ms } = req;
    let items = items.iter().map(|(text, fwd)| Copy { text: text.clone(), fwd: fwd.clone(), media: None }).collect();
    forward(view, *chat, *from, *random_id, items, *now_ms)
}

fn apply_forward(view: &mut dyn StateView, req: &cmd::Forward) -> Result<Outcome<Changed>> {
    let cmd::Forward { chat, from, random_id, items, now_ms } = req;
    forward(view, *chat, *from, *random_id, items.clone(), *now_ms)
}

fn apply_block(view: &mut dyn StateView, req: &cmd::Block) -> Result<Outcome<()>> {
    let cmd::Block { chat, by, on } = req;
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
    Ok(Ok(()))
}

fn apply_pin(view: &mut dyn StateView, req: &cmd::Pin) -> Result<Outcome<Changed>> {
    let cmd::Pin { chat, by, id, now_ms } = req;
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

fn apply_react(view: &mut dyn StateView, req: &cmd::React) -> Result<Outcome<Changed>> {
    let cmd::React { chat, user, id, emoji, now_ms } = req;
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

fn apply_add_user_chat(view: &mut dyn StateView, req: &cmd::AddUserChat) -> Result<Outcome<()>> {
    let cmd::AddUserChat { user, chat } = req;
    let old = old_user_chats(view, *user)?;
    if old.contains(chat) || view.get(&user_chat_key(*user, *chat))?.is_some() {
        return Ok(Ok(()));
    }
    let n = user_chats_count(view, *user, &old)?;
    if n >= USER_CHATS_MAX {
        return Ok(Err(ChatError::TooManyChats));
    }
    move_user_chats(view, *user, &old);
    put(view, &user_chat_key(*user, *chat), &());
    put(view, &user_chats_count_key(*user), &(n + 1));
    Ok(Ok(()))
}

fn apply_remove_user_chat(view: &mut dyn StateView, req: &cmd::RemoveUserChat) -> Result<Outcome<()>> {
    let cmd::RemoveUserChat { user, chat } = req;
    let old = old_user_chats(view, *user)?;
    move_user_chats(view, *user, &old);
    if old.contains(chat) || view.get(&user_chat_key(*user, *chat))?.is_some() {
        let n = user_chats_count(view, *user, &old)?;
        view.delete(&user_chat_key(*user, *chat));
        put(view, &user_chats_count_key(*user), &n.saturating_sub(1));
    }
    Ok(Ok(()))
}

/// The user's chat list as written before it was rows (empty once moved).
pub(super) fn old_user_chats(view: &dyn StateRead, user: u64) -> Result<Vec<u64>> {
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

#[cfg(test)]
mod tests;
