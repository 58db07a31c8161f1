//! What a member sees: events as each member sees them (another member's
//! hidden messages, a channel's subscribers), channel posts with their
//! view counts and no reactor named.

use courier_raft::logic::StateRead;

use super::keys::views_key;
use super::types::{Chat, ChatKind, Event, EventKind, Message};
use crate::error::Result;
use crate::state::get;

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
pub(super) fn with_views(view: &dyn StateRead, c: &Chat, messages: &mut [Message]) -> Result<()> {
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
pub(super) fn unname(m: &mut Message) {
    for r in &mut m.reactions {
        r.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use courier_raft::logic::MemView;

    use super::*;
    use crate::messaging::logic::testkit::*;
    use crate::messaging::logic::*;

    #[test]
    fn in_a_channel_reads_are_the_readers_own_and_others_see_counts_never_who() {
        let mut v = MemView::default();
        let ch = 5 << 16 | 5;
        ok(&mut v, cmd::Create { id: ch, kind: ChatKind::Channel, title: "News".into(), creator: A, members: vec![], now_ms: 1 });
        let Changed { events, .. } = ok(&mut v, cmd::Invite { chat: ch, by: A, users: vec![B, C], now_ms: 2 });
        assert_eq!(events[0].kind, EventKind::SubscribersJoined(vec![B, C]));
        assert_eq!(event_for(events[0].clone(), B).kind, EventKind::Joined(vec![B]), "a subscriber sees themselves join");
        assert_eq!(event_for(events[0].clone(), A).kind, EventKind::Nothing, "and nobody sees who else did");
        ok(&mut v, cmd::Send { chat: ch, from: A, random_id: 1, text: "post".into(), reply_to: 0, now_ms: 3 });
        let pts = chat_of(&v, ch).pts;
        // A read moves the reader's position only: no event, the pts stays.
        let Changed { events, .. } = ok(&mut v, cmd::Read { chat: ch, user: B, max_id: 1, now_ms: 4 });
        assert!(events.is_empty());
        assert_eq!(chat_of(&v, ch).pts, pts, "the channel's event window does not fill with reads");
        let states = |read: u64| ask::DifferenceReads { user: B, chats: vec![(ch, pts, read)] };
        let Ok(BoundedDiff { diffs, .. }) = look(&v, states(0)).unwrap() else { panic!() };
        assert!(matches!(&diffs[..], [ChatDiff::Read { read_max_id: 1, .. }]), "B's other device learns it: {diffs:?}");
        let Ok(BoundedDiff { diffs, .. }) = look(&v, states(1)).unwrap() else { panic!() };
        assert!(diffs.is_empty(), "a device that knows it is told nothing: {diffs:?}");
        // The post counts B's view, once however often B reads.
        ok(&mut v, cmd::Read { chat: ch, user: B, max_id: 1, now_ms: 4 });
        let Ok(Page { messages, .. }) = look(&v, ask::HistoryPage { chat: ch, user: C, before: 0, after: 0, limit: 10 }).unwrap() else { panic!() };
        assert_eq!(messages.iter().map(|m| (m.id, m.views)).collect::<Vec<_>>(), [(1, 1)]);
                // A reaction: a count naming nobody, no event; nobody lists reactors.
        let Changed { events, message: Some(m), .. } = ok(&mut v, cmd::React { chat: ch, user: C, id: 1, emoji: "👍".into(), now_ms: 5 }) else { panic!() };
        assert!(events.is_empty());
        assert_eq!(m.reactions, vec![Reaction { emoji: "👍".into(), count: 1, recent: vec![] }]);
        let Changed { message: Some(m), .. } = ok(&mut v, cmd::React { chat: ch, user: B, id: 1, emoji: "👍".into(), now_ms: 6 }) else { panic!() };
        assert_eq!((m.reactions[0].count, m.reactions[0].recent.len()), (2, 0));
        assert!(matches!(look(&v, ask::Reactors { chat: ch, user: A, id: 1, after: 0, limit: 10 }).unwrap(), Err(ChatError::BadRequest(_))));
        assert_eq!(chat_of(&v, ch).pts, pts);
        // A subscriber leaving is news to themselves only; an admin's role is public.
        let Changed { events, .. } = ok(&mut v, cmd::Remove { chat: ch, by: C, user: C, now_ms: 7 });
        assert_eq!((event_for(events[0].clone(), C).kind, event_for(events[0].clone(), B).kind), (EventKind::Left(C), EventKind::Nothing));
        let ChatDiff::Events { events, .. } = ({
            let Ok(mut d) = look(&v, ask::Difference { user: B, chats: vec![(ch, 0)] }).unwrap() else { panic!() };
            d.pop().unwrap()
        }) else { panic!() };
        assert!(events.iter().all(|e| !matches!(&e.kind, EventKind::Joined(u) if u.contains(&C)) && !matches!(e.kind, EventKind::Left(_) | EventKind::Read { .. })), "{events:?}");
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
        let Changed { events, .. } = ok(&mut v, cmd::Create { id: 5 << 16 | 5, kind: ChatKind::Channel, title: "News".into(), creator: A, members: vec![B, C], now_ms: 1 });
        assert_eq!(event_for(events[0].clone(), B).kind, EventKind::Joined(vec![B]));
    }
}
