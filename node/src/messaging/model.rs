//! The messaging model as the client protocol shows it.

use courier_proto::client as pb;

use super::logic::{Attachment, Chat, ChatDiff, ChatKind, Dialog, Event, EventKind, MediaKind, Member, Message, Role};

pub fn chat(c: &Chat) -> pb::Chat {
    let kind = match c.kind {
        ChatKind::Private => pb::ChatKind::Private,
        ChatKind::Group => pb::ChatKind::Group,
        ChatKind::Channel => pb::ChatKind::Channel,
    };
    pb::Chat {
        id: c.id,
        kind: kind.into(),
        title: c.title.clone(),
        creator: c.creator,
        members: c.members,
        last_id: c.last_id,
        pts: c.pts,
        created_ms: c.created_ms,
        pinned: c.pinned,
        last_ms: c.last_ms,
    }
}

pub fn message(chat: u64, m: &Message) -> pb::Message {
    pb::Message {
        chat_id: chat,
        id: m.id,
        from: m.from,
        date_ms: m.date_ms,
        text: m.text.clone(),
        reply_to: m.reply_to,
        edit_ms: m.edit_ms,
        deleted: m.deleted,
        fwd: m.fwd.as_ref().map(|f| pb::ForwardedFrom { from: f.from, chat_id: f.chat, id: f.id, date_ms: f.date_ms }),
        reactions: m.reactions.iter().map(|r| pb::Reaction { emoji: r.emoji.clone(), users: r.recent.clone(), count: r.count }).collect(),
        media: m.media.as_ref().map(media),
        views: m.views,
    }
}

fn media(a: &Attachment) -> pb::MessageMedia {
    let kind = match a.kind {
        MediaKind::Photo => pb::MediaKind::MediaPhoto,
        MediaKind::Document => pb::MediaKind::MediaDocument,
        MediaKind::Voice => pb::MediaKind::MediaVoice,
    };
    let file = pb::File { id: a.file, size: a.size, sha256: a.sha256.to_vec(), name: a.name.clone(), mime: a.mime.clone(), thumbs: thumbs(&a.thumbs), ..Default::default() };
    pb::MessageMedia { kind: kind.into(), file: Some(file), duration_secs: a.duration_secs }
}

pub fn thumbs(t: &[crate::media::logic::Thumb]) -> Vec<pb::Thumb> {
    t.iter().map(|t| pb::Thumb { kind: char::from(t.kind).to_string(), width: t.width, height: t.height, size: t.chunk.len }).collect()
}

pub fn member(user: u64, m: &Member) -> pb::ChatMember {
    pb::ChatMember { user_id: user, role: role(m.role).into(), joined_ms: m.joined_ms }
}

fn role(r: Role) -> pb::Role {
    match r {
        Role::Member => pb::Role::Member,
        Role::Admin => pb::Role::Admin,
        Role::Creator => pb::Role::Creator,
    }
}

/// One event as a client sees it; `messages` holds the messages it names
/// (as they are now).
pub fn event(chat: u64, e: &Event, messages: &[Message]) -> pb::ChatEvent {
    use pb::chat_event::Kind;
    let find = |id: u64| messages.iter().find(|m| m.id == id).map(|m| message(chat, m)).unwrap_or(pb::Message { chat_id: chat, id, ..Default::default() });
    let kind = match &e.kind {
        EventKind::New(id) => Kind::NewMessage(find(*id)),
        EventKind::Edited(id) => Kind::Edited(find(*id)),
        EventKind::Deleted(ids) => Kind::Deleted(pb::Ids { ids: ids.clone() }),
        EventKind::Read { user, max_id } => Kind::Read(pb::ReadUpTo { user: *user, max_id: *max_id }),
        EventKind::Joined(users) => Kind::Joined(pb::Ids { ids: users.clone() }),
        EventKind::Left(u) => Kind::Left(*u),
        EventKind::Title(t) => Kind::Title(t.clone()),
        EventKind::Role { user, role: r } => Kind::Role(pb::RoleChange { user: *user, role: role(*r).into() }),
        EventKind::Pinned(id) => Kind::Pinned(*id),
        EventKind::Hidden { ids, .. } => Kind::Hidden(pb::Ids { ids: ids.clone() }),
        // A channel's joins and leaves go out per member (`logic::event_for`):
        // unconverted, they name nobody.
        EventKind::Nothing | EventKind::SubscribersJoined(_) | EventKind::SubscriberLeft(_) => return pb::ChatEvent { chat_id: chat, pts: e.pts, date_ms: e.date_ms, kind: None },
        EventKind::Reactions(id) => Kind::Reactions(find(*id)),
    };
    pb::ChatEvent { chat_id: chat, pts: e.pts, date_ms: e.date_ms, kind: Some(kind) }
}

pub fn dialog(d: &Dialog) -> pb::Dialog {
    pb::Dialog {
        chat: Some(chat(&d.chat)),
        last: d.last.as_ref().map(|m| message(d.chat.id, m)),
        unread: d.unread,
        read_max_id: d.me.read_max_id,
        role: role(d.me.role).into(),
        peer: d.peer,
    }
}

pub fn difference(d: &ChatDiff) -> pb::ChatDifference {
    match d {
        ChatDiff::Events { chat: c, events, messages, more } => pb::ChatDifference {
            chat: Some(chat(c)),
            events: events.iter().map(|e| event(c.id, e, messages)).collect(),
            more: *more,
            ..Default::default()
        },
        ChatDiff::TooLong { chat: c, messages, read_max_id } => pb::ChatDifference {
            chat: Some(chat(c)),
            too_long: true,
            messages: messages.iter().map(|m| message(c.id, m)).collect(),
            read_max_id: *read_max_id,
            ..Default::default()
        },
        ChatDiff::Gone { chat } => pb::ChatDifference { chat: Some(pb::Chat { id: *chat, ..Default::default() }), gone: true, ..Default::default() },
        ChatDiff::Read { chat: c, read_max_id } => pb::ChatDifference { chat: Some(chat(c)), read_max_id: *read_max_id, ..Default::default() },
    }
}

/// A difference as a client sees it: a channel's read position joins the
/// chat's events when both came.
pub fn differences(diffs: &[ChatDiff]) -> Vec<pb::ChatDifference> {
    let mut out: Vec<pb::ChatDifference> = Vec::with_capacity(diffs.len());
    for d in diffs {
        match (d, out.last_mut()) {
            (ChatDiff::Read { chat, read_max_id }, Some(last)) if last.chat.as_ref().is_some_and(|c| c.id == chat.id) && !last.gone => last.read_max_id = *read_max_id,
            _ => out.push(difference(d)),
        }
    }
    out
}
