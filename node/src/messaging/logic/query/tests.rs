//! Queries: pages, differences, dialogs and member lists, and what they cost.

use courier_raft::logic::{MemView, StateRead};

use crate::app::{AppQuery, Request};
use crate::messaging::logic::keys::*;
use crate::messaging::logic::testkit::*;
use crate::messaging::logic::*;
use crate::state::get_row;

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
    ok(&mut v, cmd::Invite { chat: CHAT, by: A, users: others.clone(), now_ms: 1 });
    ok(&mut v, cmd::Remove { chat: CHAT, by: A, user: others[1], now_ms: 2 });
    ok(&mut v, cmd::SetRole { chat: CHAT, by: A, user: B, role: Role::Admin, now_ms: 3 });
    for i in 0..500 {
        send(&mut v, A, i, "x", 4).unwrap();
    }
    let page = |after: u64, limit: u32| -> Vec<u64> {
        let counted = Counting(&v, Default::default());
        let Ok(m) = look(&counted, ask::MembersAfter { chat: CHAT, user: B, after, limit }).unwrap() else { panic!() };
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
    let Ok(m) = look(&v, ask::Members { chat: CHAT, user: A, limit: 3 }).unwrap() else { panic!() };
    assert_eq!(m.iter().map(|(u, _)| *u).collect::<Vec<_>>(), all[..3]);
    assert_eq!(m.iter().find(|(u, _)| *u == B).map(|(_, r)| r.role), Some(Role::Admin), "with their roles");
    assert_eq!(look(&v, ask::MembersAfter { chat: CHAT, user: C, after: 0, limit: 5 }).unwrap(), Err(ChatError::NotAMember));

    // A channel's subscribers are listed to its admins only.
    let ch = 5 << 16 | 5;
    ok(&mut v, cmd::Create { id: ch, kind: ChatKind::Channel, title: "News".into(), creator: A, members: vec![], now_ms: 9 });
    ok(&mut v, cmd::Invite { chat: ch, by: A, users: vec![B, C], now_ms: 10 });
    assert_eq!(look(&v, ask::MembersAfter { chat: ch, user: C, after: 0, limit: 5 }).unwrap(), Err(ChatError::AdminRequired));
    let Ok(m) = look(&v, ask::MembersAfter { chat: ch, user: A, after: 0, limit: 5 }).unwrap() else { panic!() };
    assert_eq!(m.len(), 3);
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
    ok(&mut v, cmd::Edit { chat: CHAT, by: A, id: 1, text: "a2".into(), now_ms: 3 });
    ok(&mut v, cmd::Delete { chat: CHAT, by: A, ids: vec![2], now_ms: 4 });
    ok(&mut v, cmd::Read { chat: CHAT, user: B, max_id: 2, now_ms: 5 });
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
        let Changed { events, .. } = ok(&mut v, cmd::Read { chat: CHAT, user: B, max_id: again, now_ms: 6 });
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
fn unread_counts_and_dialogs() {
    let mut v = MemView::default();
    group(&mut v);
    send(&mut v, A, 1, "a", 1).unwrap();
    send(&mut v, A, 2, "b", 2).unwrap();
    send(&mut v, B, 3, "c", 3).unwrap();
    let dialogs = |v: &MemView, u: u64| {
        let Ok(d) = look(v, ask::Dialogs { user: u, chats: vec![CHAT, 12345] }).unwrap() else { panic!() };
        d
    };
    let d = dialogs(&v, B);
    assert_eq!(d.len(), 1, "only chats the user is in");
    assert_eq!((d[0].unread, d[0].last.as_ref().unwrap().text.as_str()), (0, "c"), "B's own message read what came before");
    let d = dialogs(&v, A);
    assert_eq!(d[0].unread, 1);
    ok(&mut v, cmd::Read { chat: CHAT, user: A, max_id: 3, now_ms: 4 });
    assert_eq!(dialogs(&v, A)[0].unread, 0);
}

fn page_of<Q: Request<Answer = Page> + Into<AppQuery>>(v: &MemView, q: Q) -> (Vec<u64>, bool) {
    match look(v, q).unwrap() {
        Ok(Page { messages, more }) => (messages.iter().map(|m| m.id).collect(), more),
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
    let (ids, more) = page_of(&v, ask::HistoryPage { chat: CHAT, user: B, before: 0, after: 0, limit: 100 });
    assert!(more && ids.len() <= per_page + 1 && ids.len() >= per_page - 1, "{} of 40 fit", ids.len());
    assert_eq!(ids[0], 40, "newest first");
    // Paging back from the last id reaches every message once.
    let (mut all, mut before) = (ids.clone(), *ids.last().unwrap());
    loop {
        let (ids, more) = page_of(&v, ask::HistoryPage { chat: CHAT, user: B, before, after: 0, limit: 100 });
        all.extend(&ids);
        if !more {
            break;
        }
        before = *ids.last().unwrap();
    }
    assert_eq!(all, (1..=40).rev().collect::<Vec<_>>());
    let (fwd, more) = page_of(&v, ask::HistoryPage { chat: CHAT, user: B, before: 0, after: 38, limit: 100 });
    assert_eq!((fwd, more), (vec![39, 40], false), "forward to the end");
    let (none, more) = page_of(&v, ask::HistoryPage { chat: CHAT, user: B, before: 0, after: u64::MAX, limit: 10 });
    assert!(none.is_empty() && !more, "past the end: nothing, no overflow");
    let (found, more) = page_of(&v, ask::SearchBefore { chat: CHAT, user: B, text: "😀😀".into(), limit: 100, before: 0 });
    assert!(more && found.len() < 40);
    let (next, _) = page_of(&v, ask::SearchBefore { chat: CHAT, user: B, text: "😀😀".into(), limit: 100, before: *found.last().unwrap() });
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
    let wire = prost::Message::encoded_len(&crate::messaging::model::message(CHAT, &m));
    assert!(m.wire_size() >= wire, "{} < {wire}", m.wire_size());
}
