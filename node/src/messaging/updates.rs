//! What a chat's changes look like to its members' devices: each event a
//! [`Push`] with its audience, in the client's own update format. The
//! decisions (who joins, who leaves, who sees their own version) are here;
//! delivery is the push part's.

use courier_proto::client as pb;

use super::logic::{self, Event, EventKind, Message};
use super::model;
use crate::push::{Audience, Origin, Push, client_update as encode};

fn chat_event(chat: u64, e: &Event, messages: &[Message]) -> Vec<u8> {
    encode(pb::update::Kind::ChatEvent(model::event(chat, e, messages)))
}

/// One push per event of a committed change, in order: members who joined
/// receive from their join on, members who left up to their leave;
/// `origin`'s client has them from its reply.
pub fn chat_pushes(chat: u64, events: &[Event], message: Option<&Message>, origin: Option<Origin>) -> Vec<Push> {
    let messages: Vec<Message> = message.into_iter().cloned().collect();
    events
        .iter()
        .map(|e| {
            let (join, leave) = match &e.kind {
                EventKind::Joined(users) | EventKind::SubscribersJoined(users) => (users.clone(), Vec::new()),
                EventKind::Left(user) | EventKind::SubscriberLeft(user) => (Vec::new(), vec![*user]),
                _ => (Vec::new(), Vec::new()),
            };
            let (update, except) = match e.kind.per_member() {
                false => (chat_event(chat, e, &messages), Vec::new()),
                true => {
                    let nothing = Event { kind: EventKind::Nothing, ..e.clone() };
                    let own = e.kind.concerned().iter().map(|u| (*u, Some(chat_event(chat, &logic::event_for(e.clone(), *u), &messages)))).collect();
                    (chat_event(chat, &nothing, &messages), own)
                }
            };
            Push { audience: Audience::Chat { chat, join, leave }, update: Some(update), except, origin }
        })
        .collect()
}

/// `user` is typing in `chat`: for the chat's other members.
pub fn typing(chat: u64, user: u64, until_ms: u64) -> Push {
    let update = encode(pb::update::Kind::Typing(pb::Typing { chat_id: chat, user, until_ms }));
    Push { audience: Audience::Chat { chat, join: Vec::new(), leave: Vec::new() }, update: Some(update), except: vec![(user, None)], origin: None }
}

/// The user's read position in a channel moved (no event of the chat):
/// for their own devices.
pub fn own_read(chat: u64, user: u64, max_id: u64) -> Push {
    Push::to_users(vec![user], encode(pb::update::Kind::OwnRead(pb::ReadPosition { chat_id: chat, max_id })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn decoded(b: &[u8]) -> pb::ChatEvent {
        match pb::Update::decode(b).unwrap().kind {
            Some(pb::update::Kind::ChatEvent(e)) => e,
            other => panic!("not a chat event: {other:?}"),
        }
    }

    fn ev(kind: EventKind) -> Event {
        Event { pts: 9, date_ms: 1, kind }
    }

    #[test]
    fn joins_subscribe_before_and_leaves_unsubscribe_after() {
        let p = chat_pushes(5, &[ev(EventKind::Joined(vec![1, 2])), ev(EventKind::Left(3))], None, None);
        assert_eq!(p[0].audience, Audience::Chat { chat: 5, join: vec![1, 2], leave: vec![] });
        assert_eq!(p[1].audience, Audience::Chat { chat: 5, join: vec![], leave: vec![3] });
        assert!(p.iter().all(|p| p.except.is_empty()), "everyone sees a group's joins and leaves");
    }

    #[test]
    fn a_member_only_event_is_empty_for_the_others_at_the_same_pts() {
        let p = &chat_pushes(5, &[ev(EventKind::Hidden { user: 7, ids: vec![1] })], None, None)[0];
        let others = decoded(p.update.as_ref().unwrap());
        assert_eq!(others.pts, 9, "the others' pts still advances");
        assert_eq!(others.kind, None, "an empty event");
        assert_eq!(p.except.len(), 1);
        let (user, own) = &p.except[0];
        assert_eq!(*user, 7);
        assert!(matches!(decoded(own.as_ref().unwrap()).kind, Some(pb::chat_event::Kind::Hidden(_))));
    }

    #[test]
    fn channel_subscribers_see_only_their_own_join() {
        let p = &chat_pushes(5, &[ev(EventKind::SubscribersJoined(vec![1, 2]))], None, None)[0];
        assert_eq!(p.audience, Audience::Chat { chat: 5, join: vec![1, 2], leave: vec![] });
        for (user, own) in &p.except {
            match decoded(own.as_ref().unwrap()).kind {
                Some(pb::chat_event::Kind::Joined(j)) => assert_eq!(j.ids, vec![*user]),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(decoded(p.update.as_ref().unwrap()).kind, None);
    }

    #[test]
    fn typing_is_not_shown_to_the_typist() {
        assert_eq!(typing(5, 3, 10).except, vec![(3, None)]);
    }
}
