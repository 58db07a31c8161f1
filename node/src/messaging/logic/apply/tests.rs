//! Commands: who may do what, what each writes, retries answered as the
//! first time, refusals that write nothing.

use courier_raft::logic::{MemView, StateRead};
use serde::Serialize;

use crate::messaging::logic::keys::*;
use crate::messaging::logic::testkit::*;
use crate::messaging::logic::*;
use crate::state::{key, put};

#[test]
fn a_block_stops_the_other_sides_posts_in_the_private_chat_only() {
    let mut v = MemView::default();
    let dm = 6 << 16 | 5;
    ok(&mut v, cmd::Create { id: dm, kind: ChatKind::Private, title: String::new(), creator: A, members: vec![B], now_ms: 1 });
    ok(&mut v, cmd::Send { chat: dm, from: A, random_id: 1, text: "hi".into(), reply_to: 0, now_ms: 2 });
    assert_eq!(ok(&mut v, cmd::Block { chat: dm, by: B, on: true }), ());
    assert_eq!(err(&mut v, cmd::Send { chat: dm, from: A, random_id: 2, text: "hi?".into(), reply_to: 0, now_ms: 3 }), ChatError::UserBlocked);
    // A retry of a send from before the block answers what it did then.
    assert!(matches!(ok(&mut v, cmd::Send { chat: dm, from: A, random_id: 1, text: "hi".into(), reply_to: 0, now_ms: 4 }), Changed { message: Some(_), .. }));
    ok(&mut v, cmd::Send { chat: dm, from: B, random_id: 1, text: "the blocker writes".into(), reply_to: 0, now_ms: 5 });
    assert_eq!(look(&v, ask::BlockedAgainst { user: A, chats: vec![dm, CHAT] }).unwrap(), Ok(vec![dm]));
    assert_eq!(look(&v, ask::BlockedAgainst { user: B, chats: vec![dm] }).unwrap(), Ok(vec![]), "one's own block is not against oneself");
    ok(&mut v, cmd::Block { chat: dm, by: B, on: true });
    ok(&mut v, cmd::Block { chat: dm, by: B, on: false });
    ok(&mut v, cmd::Send { chat: dm, from: A, random_id: 3, text: "back".into(), reply_to: 0, now_ms: 6 });
    assert_eq!(look(&v, ask::BlockedAgainst { user: A, chats: vec![dm] }).unwrap(), Ok(vec![]));
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
    let Ok(page) = look(&v, ask::History { chat: CHAT, user: B, before: 0, after: 0, limit: 2 }).unwrap() else { panic!() };
    assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), vec![3, 2], "newest first");
    let Ok(page) = look(&v, ask::History { chat: CHAT, user: B, before: 2, after: 0, limit: 50 }).unwrap() else { panic!() };
    assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1]);
    let Ok(page) = look(&v, ask::History { chat: CHAT, user: B, before: 0, after: 1, limit: 50 }).unwrap() else { panic!() };
    assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), vec![2, 3], "paging forward");
}

#[test]
fn members_only_and_the_brief_s_limits() {
    let mut v = MemView::default();
    group(&mut v);
    assert_eq!(err(&mut v, cmd::Send { chat: CHAT, from: C, random_id: 1, text: "hi".into(), reply_to: 0, now_ms: 1 }), ChatError::NotAMember);
    let forged = cmd::Send { chat: CHAT + (1 << 16), from: A, random_id: 1, text: "hi".into(), reply_to: 0, now_ms: 1 };
    assert_eq!(err(&mut v, forged), ChatError::NotAMember, "a chat that does not exist looks the same");
    assert_eq!(look(&v, ask::History { chat: CHAT, user: C, before: 0, after: 0, limit: 5 }).unwrap(), Err(ChatError::NotAMember));
    let long = "é".repeat(MESSAGE_MAX + 1);
    assert_eq!(err(&mut v, cmd::Send { chat: CHAT, from: A, random_id: 1, text: long, reply_to: 0, now_ms: 1 }), ChatError::MessageTooLong);
    assert!(send(&mut v, A, 2, &"é".repeat(MESSAGE_MAX), 1).is_ok(), "4096 characters fit");
    assert!(matches!(err(&mut v, cmd::Send { chat: CHAT, from: A, random_id: 3, text: " ".into(), reply_to: 0, now_ms: 1 }), ChatError::BadRequest(_)));
    assert_eq!(err(&mut v, cmd::Send { chat: CHAT, from: A, random_id: 4, text: "x".into(), reply_to: 9, now_ms: 1 }), ChatError::MessageNotFound);
}

#[test]
fn edit_own_within_48_hours_delete_leaves_tombstones() {
    let mut v = MemView::default();
    group(&mut v);
    let m = send(&mut v, A, 1, "helo", 0).unwrap();
    send(&mut v, B, 1, "hi", 1).unwrap();
    assert_eq!(err(&mut v, cmd::Edit { chat: CHAT, by: B, id: 1, text: "x".into(), now_ms: 2 }), ChatError::AuthorRequired);
    ok(&mut v, cmd::Edit { chat: CHAT, by: A, id: 1, text: "hello".into(), now_ms: 47 * H });
    assert_eq!(err(&mut v, cmd::Edit { chat: CHAT, by: A, id: 1, text: "hello!".into(), now_ms: m.date_ms + 48 * H + 1 }), ChatError::EditTimeExpired);
    assert_eq!(err(&mut v, cmd::Edit { chat: CHAT, by: A, id: 9, text: "x".into(), now_ms: 3 }), ChatError::MessageNotFound);
    // B (a member) cannot delete A's message; A can; the id stays.
    assert_eq!(err(&mut v, cmd::Delete { chat: CHAT, by: B, ids: vec![1], now_ms: 4 }), ChatError::AdminRequired);
    ok(&mut v, cmd::Delete { chat: CHAT, by: A, ids: vec![1], now_ms: 5 });
    let Changed { events, .. } = ok(&mut v, cmd::Delete { chat: CHAT, by: A, ids: vec![1], now_ms: 6 });
    assert!(events.is_empty(), "deleting again is a no-op");
    // The creator (an admin) deletes B's message.
    ok(&mut v, cmd::Delete { chat: CHAT, by: A, ids: vec![2], now_ms: 7 });
    assert_eq!(send(&mut v, B, 2, "after", 8).unwrap().id, 3, "ids continue past tombstones");
    let Ok(page) = look(&v, ask::History { chat: CHAT, user: B, before: 0, after: 0, limit: 10 }).unwrap() else { panic!() };
    assert_eq!(page.iter().map(|m| (m.id, m.deleted, m.text.as_str())).collect::<Vec<_>>(), vec![(3, false, "after"), (2, true, ""), (1, true, "")]);
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
fn membership_admins_and_channels() {
    let mut v = MemView::default();
    group(&mut v);
    // A member invites; only admins remove; anyone leaves.
    ok(&mut v, cmd::Invite { chat: CHAT, by: B, users: vec![C, C], now_ms: 1 });
    let Changed { chat, .. } = ok(&mut v, cmd::Invite { chat: CHAT, by: B, users: vec![C], now_ms: 2 });
    assert_eq!(chat.members, 3, "inviting twice adds once");
    assert_eq!(err(&mut v, cmd::Remove { chat: CHAT, by: B, user: C, now_ms: 3 }), ChatError::AdminRequired);
    assert_eq!(err(&mut v, cmd::SetTitle { chat: CHAT, by: B, title: "x".into(), now_ms: 3 }), ChatError::AdminRequired);
    assert_eq!(err(&mut v, cmd::SetRole { chat: CHAT, by: B, user: C, role: Role::Admin, now_ms: 3 }), ChatError::AdminRequired);
    ok(&mut v, cmd::SetRole { chat: CHAT, by: A, user: B, role: Role::Admin, now_ms: 4 });
    ok(&mut v, cmd::Remove { chat: CHAT, by: B, user: C, now_ms: 5 });
    assert_eq!(err(&mut v, cmd::Remove { chat: CHAT, by: B, user: A, now_ms: 6 }), ChatError::AdminRequired, "an admin cannot remove the creator");
    ok(&mut v, cmd::Remove { chat: CHAT, by: B, user: B, now_ms: 7 });
    assert_eq!(err(&mut v, cmd::Send { chat: CHAT, from: B, random_id: 9, text: "x".into(), reply_to: 0, now_ms: 8 }), ChatError::NotAMember);
    let Ok(m) = look(&v, ask::Members { chat: CHAT, user: A, limit: 10 }).unwrap() else { panic!() };
    assert_eq!(m.iter().map(|(u, _)| *u).collect::<Vec<_>>(), vec![A]);
    // Channels: admins post, subscribers read.
    let ch = 5 << 16 | 5;
    ok(&mut v, cmd::Create { id: ch, kind: ChatKind::Channel, title: "News".into(), creator: A, members: vec![], now_ms: 9 });
    assert_eq!(err(&mut v, cmd::Invite { chat: ch, by: B, users: vec![B], now_ms: 10 }), ChatError::NotAMember);
    ok(&mut v, cmd::Invite { chat: ch, by: A, users: vec![B, C], now_ms: 10 });
    assert_eq!(err(&mut v, cmd::Send { chat: ch, from: B, random_id: 1, text: "x".into(), reply_to: 0, now_ms: 11 }), ChatError::AdminRequired);
    let Changed { events, .. } = ok(&mut v, cmd::Send { chat: ch, from: A, random_id: 1, text: "post".into(), reply_to: 0, now_ms: 12 });
    assert_eq!(events.len(), 1, "one event however many subscribers");
    // Private chats have exactly two members and no title.
    let dm = 6 << 16 | 5;
    assert!(matches!(err(&mut v, cmd::Create { id: dm, kind: ChatKind::Private, title: String::new(), creator: A, members: vec![A], now_ms: 13 }), ChatError::BadRequest(_)));
    let chat_of = |r: Changed| r.chat;
    let first = chat_of(ok(&mut v, cmd::Create { id: dm, kind: ChatKind::Private, title: String::new(), creator: A, members: vec![B], now_ms: 13 }));
    assert_eq!(chat_of(ok(&mut v, cmd::Create { id: dm, kind: ChatKind::Private, title: String::new(), creator: A, members: vec![B], now_ms: 14 })), first, "a retry");
    assert!(matches!(err(&mut v, cmd::Invite { chat: dm, by: A, users: vec![C], now_ms: 15 }), ChatError::BadRequest(_)));
}

#[test]
fn a_read_far_ahead_in_a_channel_counts_views_of_the_newest_posts_only() {
    let mut v = MemView::default();
    let ch = 5 << 16 | 5;
    ok(&mut v, cmd::Create { id: ch, kind: ChatKind::Channel, title: "News".into(), creator: A, members: vec![], now_ms: 1 });
    ok(&mut v, cmd::Invite { chat: ch, by: A, users: vec![B], now_ms: 2 });
    for i in 0..VIEWS_PER_READ + 50 {
        ok(&mut v, cmd::Send { chat: ch, from: A, random_id: i, text: "post".into(), reply_to: 0, now_ms: 3 });
    }
    let before = v.0.len();
    ok(&mut v, cmd::Read { chat: ch, user: B, max_id: VIEWS_PER_READ + 50, now_ms: 4 });
    assert_eq!(v.0.len() - before, VIEWS_PER_READ as usize, "one view row each for the newest {VIEWS_PER_READ} posts");
    let Ok(m) = look(&v, ask::Get { chat: ch, user: A, ids: vec![50, 51, VIEWS_PER_READ + 50] }).unwrap() else { panic!() };
    assert_eq!(m.iter().map(|m| m.views).collect::<Vec<_>>(), [0, 1, 1]);
    // A message row of format 3 (before views) reads with 0 views.
    #[derive(Serialize)]
    struct V3Row(u64, u64, u64, String, u64, u64, bool, Option<Forwarded>, Vec<Reaction>, Option<Attachment>, Vec<(u64, String)>);
    let row = V3Row(1, A, 3, "old".into(), 0, 0, false, None, vec![Reaction { emoji: "👍".into(), count: 2, recent: vec![] }], None, vec![]);
    let m: Message = crate::state::decode_row(&courier_raft::codec::encode_as(3, &row)).unwrap();
    assert_eq!((m.text.as_str(), m.reactions[0].count, m.views), ("old", 2, 0));
}

#[test]
fn media_messages_carry_their_file_and_a_caption() {
    let mut v = MemView::default();
    group(&mut v);
    let post = |caption: &str, rid: u64| cmd::SendMedia { chat: CHAT, from: A, random_id: rid, caption: caption.into(), reply_to: 0, media: photo(), now_ms: 1 };
    let Changed { message: Some(m), .. } = ok(&mut v, post("", 1)) else { panic!() };
    assert_eq!((m.id, m.media.as_ref().map(|a| a.file)), (1, Some(photo().file)), "an empty caption is fine");
    assert_eq!(err(&mut v, post(&"x".repeat(CAPTION_MAX + 1), 2)), ChatError::CaptionTooLong);
    let Changed { message: Some(again), events, .. } = ok(&mut v, post("", 1)) else { panic!() };
    assert!(events.is_empty() && again == m, "a retried post is the first one");
    // A caption is edited under the caption limit; deleting drops the file from the message.
    assert_eq!(err(&mut v, cmd::Edit { chat: CHAT, by: A, id: 1, text: "y".repeat(CAPTION_MAX + 1), now_ms: 2 }), ChatError::CaptionTooLong);
    ok(&mut v, cmd::Edit { chat: CHAT, by: A, id: 1, text: "a cat".into(), now_ms: 2 });
    let Ok(got) = look(&v, ask::Get { chat: CHAT, user: B, ids: vec![1] }).unwrap() else { panic!() };
    assert_eq!((got[0].text.as_str(), got[0].media.clone()), ("a cat", Some(photo())));
    // Forwarding copies the file: members of the other chat reach it through their copy.
    let dm = 9 << 16 | 5;
    ok(&mut v, cmd::Create { id: dm, kind: ChatKind::Private, title: String::new(), creator: B, members: vec![C], now_ms: 3 });
    let items = vec![Copy { text: got[0].text.clone(), fwd: Forwarded { from: A, chat: CHAT, id: 1, date_ms: 1 }, media: got[0].media.clone() }];
    let Changed { message: Some(copy), .. } = ok(&mut v, cmd::Forward { chat: dm, from: B, random_id: 1, items, now_ms: 4 }) else { panic!() };
    assert_eq!(copy.media, Some(photo()));
    ok(&mut v, cmd::Delete { chat: CHAT, by: A, ids: vec![1], now_ms: 5 });
    assert_eq!(look(&v, ask::Get { chat: CHAT, user: B, ids: vec![1] }).unwrap(), Err(ChatError::MessageNotFound), "a deleted message grants nothing");
}

#[test]
fn forward_pin_react_and_search() {
    let mut v = MemView::default();
    group(&mut v);
    send(&mut v, A, 1, "Hello World", 1).unwrap();
    send(&mut v, B, 2, "second", 2).unwrap();
    // Forward both into a private chat, as one request: consecutive ids, one retry-safe random_id.
    let dm = 9 << 16 | 5;
    ok(&mut v, cmd::Create { id: dm, kind: ChatKind::Private, title: String::new(), creator: A, members: vec![C], now_ms: 3 });
    let Ok(src) = look(&v, ask::Get { chat: CHAT, user: A, ids: vec![1, 2] }).unwrap() else { panic!() };
    assert_eq!(look(&v, ask::Get { chat: CHAT, user: C, ids: vec![1] }).unwrap(), Err(ChatError::NotAMember), "only readers may forward");
    let items: Vec<_> = src.iter().map(|m| Copy { text: m.text.clone(), fwd: Forwarded { from: m.from, chat: CHAT, id: m.id, date_ms: m.date_ms }, media: None }).collect();
    let fwd = cmd::Forward { chat: dm, from: A, random_id: 5, items, now_ms: 4 };
    let Changed { events, message: Some(last), .. } = ok(&mut v, fwd.clone()) else { panic!() };
    assert_eq!((events.len(), last.id, last.fwd.as_ref().unwrap().from), (2, 2, B));
    let Changed { events, message: Some(again), .. } = ok(&mut v, fwd) else { panic!() };
    assert!(events.is_empty() && again == last, "a retried forward is the first one");
    let too_many = cmd::Forward { chat: dm, from: A, random_id: 6, items: vec![Copy { text: "x".into(), fwd: last.fwd.clone().unwrap(), media: None }; 101], now_ms: 5 };
    assert!(matches!(err(&mut v, too_many), ChatError::BadRequest(_)));
    // Pins: admins in groups; either side of a private chat.
    assert_eq!(err(&mut v, cmd::Pin { chat: CHAT, by: B, id: 1, now_ms: 6 }), ChatError::AdminRequired);
    let Changed { chat, .. } = ok(&mut v, cmd::Pin { chat: CHAT, by: A, id: 1, now_ms: 6 });
    assert_eq!(chat.pinned, 1);
    ok(&mut v, cmd::Pin { chat: dm, by: C, id: 2, now_ms: 7 });
    assert_eq!(err(&mut v, cmd::Pin { chat: CHAT, by: A, id: 99, now_ms: 7 }), ChatError::MessageNotFound);
    // Reactions: one per user, replaced, removed.
    let react = |v: &mut MemView, user: u64, emoji: &str| match ok(v, cmd::React { chat: CHAT, user, id: 1, emoji: emoji.into(), now_ms: 8 }) {
        Changed { message: Some(m), .. } => m.reactions,
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
    assert!(matches!(err(&mut v, cmd::React { chat: CHAT, user: A, id: 1, emoji: "no way".into(), now_ms: 9 }), ChatError::BadRequest(_)));
    assert_eq!(err(&mut v, cmd::React { chat: CHAT, user: C, id: 1, emoji: "x".into(), now_ms: 9 }), ChatError::NotAMember);
    // Search: case-insensitive, newest first, members only, deleted ones excluded.
    send(&mut v, A, 3, "hello again", 10).unwrap();
    let found = |v: &MemView| match look(v, ask::Search { chat: CHAT, user: B, text: "HELLO".into(), limit: 10 }).unwrap() {
        Ok(m) => m.iter().map(|m| m.id).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(found(&v), vec![3, 1]);
    ok(&mut v, cmd::Delete { chat: CHAT, by: A, ids: vec![3], now_ms: 11 });
    assert_eq!(found(&v), vec![1]);
    assert_eq!(look(&v, ask::Search { chat: CHAT, user: C, text: "hello".into(), limit: 10 }).unwrap(), Err(ChatError::NotAMember));
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
    ok(&mut v, cmd::Hide { chat: CHAT, user: A, ids: vec![2], now_ms: 3 });
    let Changed { events, .. } = ok(&mut v, cmd::Hide { chat: CHAT, user: A, ids: vec![2], now_ms: 4 });
    assert!(events.is_empty(), "hiding again is a no-op");
    assert_eq!(err(&mut v, cmd::Hide { chat: CHAT, user: A, ids: vec![9], now_ms: 4 }), ChatError::MessageNotFound);
    assert_eq!(err(&mut v, cmd::Hide { chat: CHAT, user: C, ids: vec![1], now_ms: 4 }), ChatError::NotAMember);
    let history = |v: &MemView, u: u64| match look(v, ask::History { chat: CHAT, user: u, before: 0, after: 0, limit: 10 }).unwrap() {
        Ok(m) => m.iter().map(|m| m.id).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(history(&v, A), vec![1]);
    assert_eq!(history(&v, B), vec![2, 1], "B still has it");
    // A's devices learn it; B sees only that the pts moved.
    let ChatDiff::Events { events, .. } = diff(&v, A, pts) else { panic!() };
    assert_eq!(events[0].kind, EventKind::Hidden { user: A, ids: vec![2] });
    let ChatDiff::Events { events, .. } = diff(&v, B, pts) else { panic!() };
    assert_eq!((events[0].pts, events[0].kind.clone()), (pts + 1, EventKind::Nothing));
    let Ok(d) = look(&v, ask::Dialogs { user: A, chats: vec![CHAT] }).unwrap() else { panic!() };
    assert_eq!(d[0].last.as_ref().map(|m| m.id), Some(1), "the dialog shows the last message A still has");
}

#[test]
fn user_chat_lists() {
    let mut v = MemView::default();
    ok(&mut v, cmd::AddUserChat { user: A, chat: 1 });
    ok(&mut v, cmd::AddUserChat { user: A, chat: 2 });
    ok(&mut v, cmd::AddUserChat { user: A, chat: 1 });
    ok(&mut v, cmd::RemoveUserChat { user: A, chat: 2 });
    assert_eq!(look(&v, ask::UserChats { user: A }).unwrap(), Ok(vec![1]));
    assert_eq!(look(&v, ask::UserChats { user: B }).unwrap(), Ok(vec![]));
}

#[test]
fn a_users_chat_list_is_a_row_per_chat_and_an_old_list_moves_to_rows() {
    use courier_raft::logic::StateRead;
    let mut v = MemView::default();
    // Before: one value with every chat, rewritten whole by each add.
    put(&mut v, &user_chats_key(A), &vec![7u64, 8]);
    assert_eq!(look(&v, ask::UserChats { user: A }).unwrap(), Ok(vec![7, 8]), "an old list reads as it is");
    ok(&mut v, cmd::AddUserChat { user: A, chat: 9 });
    assert_eq!(v.get(&user_chats_key(A)).unwrap(), None, "the first add moved the old list to rows");
    for c in [7, 8, 9] {
        assert!(v.get(&user_chat_key(A, c)).unwrap().is_some(), "chat {c} has its row");
    }
    ok(&mut v, cmd::RemoveUserChat { user: A, chat: 8 });
    assert_eq!(v.get(&user_chat_key(A, 8)).unwrap(), None);
    assert_eq!(look(&v, ask::UserChats { user: A }).unwrap(), Ok(vec![7, 9]));
    // An add writes its own row, whatever the list's length.
    let before = v.clone();
    ok(&mut v, cmd::AddUserChat { user: A, chat: 10 });
    let written: Vec<&Vec<u8>> = v.0.iter().filter(|(k, val)| before.0.get(*k) != Some(*val)).map(|(k, _)| k).collect();
    assert!(written.iter().all(|k| k.starts_with(b"m/uchat/") || k.starts_with(b"m/uchatn/")), "{written:?}");
    // A full list refuses more (and an add of a chat already in it still answers).
    let mut v = MemView::default();
    for c in 1..=USER_CHATS_MAX {
        ok(&mut v, cmd::AddUserChat { user: B, chat: c });
    }
    assert_eq!(err(&mut v, cmd::AddUserChat { user: B, chat: USER_CHATS_MAX + 1 }), ChatError::TooManyChats);
    ok(&mut v, cmd::AddUserChat { user: B, chat: 5 });
    ok(&mut v, cmd::RemoveUserChat { user: B, chat: 5 });
    ok(&mut v, cmd::RemoveUserChat { user: B, chat: 5 });
    ok(&mut v, cmd::AddUserChat { user: B, chat: USER_CHATS_MAX + 1 });
    assert_eq!(err(&mut v, cmd::AddUserChat { user: B, chat: USER_CHATS_MAX + 2 }), ChatError::TooManyChats, "a removal twice frees one place");
    let Ok(all) = look(&v, ask::UserChats { user: B }).unwrap() else { panic!() };
    assert_eq!(all.len() as u64, USER_CHATS_MAX);
}
