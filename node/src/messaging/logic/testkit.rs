//! What the tests of chats share: users, a chat, and commands that must
//! pass or be refused.

use courier_raft::logic::MemView;

use crate::messaging::logic::keys::*;
use crate::messaging::logic::*;
use crate::state::get;

pub(super) const A: u64 = 1 << 16 | 1;
pub(super) const B: u64 = 2 << 16 | 1;
pub(super) const C: u64 = 3 << 16 | 2;
pub(super) const CHAT: u64 = 77 << 16 | 5;
pub(super) const H: u64 = 3600 * 1000;

pub(super) fn ok(v: &mut MemView, cmd: Cmd) -> Reply {
    apply(v, &cmd).unwrap().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}
pub(super) fn err(v: &mut MemView, cmd: Cmd) -> ChatError {
    let before = v.clone();
    let e = apply(v, &cmd).unwrap().expect_err("refused");
    assert_eq!(*v, before, "a refused command wrote nothing: {cmd:?}");
    e
}
pub(super) fn group(v: &mut MemView) -> Chat {
    let Reply::Changed { chat: c, .. } = ok(v, Cmd::Create { id: CHAT, kind: ChatKind::Group, title: "Team".into(), creator: A, members: vec![B], now_ms: 0 }) else { panic!() };
    c
}
pub(super) fn send(v: &mut MemView, from: u64, rid: u64, text: &str, now: u64) -> std::result::Result<Message, ChatError> {
    match apply(v, &Cmd::Send { chat: CHAT, from, random_id: rid, text: text.into(), reply_to: 0, now_ms: now }).unwrap()? {
        Reply::Changed { message: Some(m), .. } => Ok(m),
        other => panic!("{other:?}"),
    }
}
pub(super) fn diff(v: &MemView, user: u64, pts: u64) -> ChatDiff {
    let Ok(Reply::Difference(mut d)) = query(v, &Query::Difference { user, chats: vec![(CHAT, pts)] }).unwrap() else { panic!() };
    d.pop().unwrap()
}

pub(super) fn chat_of(v: &MemView, chat: u64) -> Chat {
    get(v, &chat_key(chat)).unwrap().unwrap()
}

pub(super) fn photo() -> Attachment {
    Attachment { file: 5 << 16 | 2, kind: MediaKind::Photo, name: "cat.png".into(), mime: "image/png".into(), size: 10, sha256: [1; 32], thumbs: Vec::new(), duration_secs: 0 }
}
