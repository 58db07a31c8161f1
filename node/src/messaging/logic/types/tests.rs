//! Message rows written in older formats still read, and move on.

use courier_raft::logic::{MemView, StateView};
use serde::Serialize;

use crate::messaging::logic::keys::*;
use crate::messaging::logic::testkit::*;
use crate::messaging::logic::*;
use crate::state::{get, get_row, put, put_row};

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
fn reactions_are_counted_and_rows_of_the_old_format_move_at_the_next_reaction() {
    let mut v = MemView::default();
    group(&mut v);
    for u in 10..30u64 {
        ok(&mut v, cmd::Invite { chat: CHAT, by: A, users: vec![u << 16 | 1], now_ms: 1 });
    }
    send(&mut v, A, 1, "react to me", 2).unwrap();
    for u in 10..30u64 {
        ok(&mut v, cmd::React { chat: CHAT, user: u << 16 | 1, id: 1, emoji: "👍".into(), now_ms: 3 });
    }
    let m = get_row::<Message>(&v, &msg_key(CHAT, 1)).unwrap().unwrap();
    assert_eq!(m.reactions, vec![Reaction { emoji: "👍".into(), count: 20, recent: vec![29 << 16 | 1, 28 << 16 | 1, 27 << 16 | 1] }]);
    let page = |v: &MemView, after: u64| match look(v, ask::Reactors { chat: CHAT, user: B, id: 1, after, limit: 7 }).unwrap() {
        Ok(r) => r,
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
    let listed = |v: &MemView| match look(v, ask::Reactors { chat: CHAT, user: B, id: 2, after: 0, limit: 10 }).unwrap() {
        Ok(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(listed(&v), vec![(A, "🔥".to_string()), (B, "🔥".to_string())]);
    // A changes to 👍: the count moves, B's old reaction gets its row.
    ok(&mut v, cmd::React { chat: CHAT, user: A, id: 2, emoji: "👍".into(), now_ms: 5 });
    let m = get_row::<Message>(&v, &msg_key(CHAT, 2)).unwrap().unwrap();
    assert!(m.unrowed.is_empty());
    assert_eq!(m.reactions, vec![Reaction { emoji: "🔥".into(), count: 1, recent: vec![B] }, Reaction { emoji: "👍".into(), count: 1, recent: vec![A] }]);
    assert_eq!(listed(&v), vec![(A, "👍".to_string()), (B, "🔥".to_string())]);
    // B's repeat of its old reaction changes nothing.
    let before = v.clone();
    ok(&mut v, cmd::React { chat: CHAT, user: B, id: 2, emoji: "🔥".into(), now_ms: 6 });
    assert_eq!(v, before);
}
