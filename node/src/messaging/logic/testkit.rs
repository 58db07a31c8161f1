//! What the tests of chats share: users, a chat, and commands that must
//! pass or be refused.

use courier_raft::logic::{MemView, StateRead};

use crate::messaging::logic::keys::*;
use crate::messaging::logic::*;
use crate::app::{AppCommand, AppQuery, Refusal, Request, answer_of};
use crate::error::Result;
use crate::state::get;

pub(super) const A: u64 = 1 << 16 | 1;
pub(super) const B: u64 = 2 << 16 | 1;
pub(super) const C: u64 = 3 << 16 | 2;
pub(super) const CHAT: u64 = 77 << 16 | 5;
pub(super) const H: u64 = 3600 * 1000;

fn refused(r: Refusal) -> ChatError {
    match r {
        Refusal::Chat(e) => e,
        other => panic!("{other:?}"),
    }
}
/// A command through the state machine, its answer read back from the bytes.
pub(super) fn run<C: Request + Into<AppCommand>>(v: &mut MemView, c: C) -> Result<Outcome<C::Answer>> {
    let AppCommand::Chat(c) = c.into() else { unreachable!() };
    Ok(answer_of(&apply(v, &c)?).map_err(refused))
}
/// A query through the state machine, its answer read back from the bytes.
pub(super) fn look<Q: Request + Into<AppQuery>>(v: &dyn StateRead, q: Q) -> Result<Outcome<Q::Answer>> {
    let AppQuery::Chat(q) = q.into() else { unreachable!() };
    Ok(answer_of(&query(v, &q)?).map_err(refused))
}
pub(super) fn ok<C: Request + Into<AppCommand> + std::fmt::Debug>(v: &mut MemView, cmd: C) -> C::Answer {
    let shown = format!("{cmd:?}");
    run(v, cmd).unwrap().unwrap_or_else(|e| panic!("{shown}: {e}"))
}
pub(super) fn err<C: Request + Into<AppCommand> + std::fmt::Debug>(v: &mut MemView, cmd: C) -> ChatError {
    let before = v.clone();
    let shown = format!("{cmd:?}");
    let e = run(v, cmd).unwrap().err().expect("refused");
    assert_eq!(*v, before, "a refused command wrote nothing: {shown}");
    e
}
pub(super) fn group(v: &mut MemView) -> Chat {
    ok(v, cmd::Create { id: CHAT, kind: ChatKind::Group, title: "Team".into(), creator: A, members: vec![B], now_ms: 0 }).chat
}
pub(super) fn send(v: &mut MemView, from: u64, rid: u64, text: &str, now: u64) -> std::result::Result<Message, ChatError> {
    match run(v, cmd::Send { chat: CHAT, from, random_id: rid, text: text.into(), reply_to: 0, now_ms: now }).unwrap()? {
        Changed { message: Some(m), .. } => Ok(m),
        other => panic!("{other:?}"),
    }
}
pub(super) fn diff(v: &MemView, user: u64, pts: u64) -> ChatDiff {
    let Ok(mut d) = look(v, ask::Difference { user, chats: vec![(CHAT, pts)] }).unwrap() else { panic!() };
    d.pop().unwrap()
}

pub(super) fn chat_of(v: &MemView, chat: u64) -> Chat {
    get(v, &chat_key(chat)).unwrap().unwrap()
}

pub(super) fn photo() -> Attachment {
    Attachment { file: 5 << 16 | 2, kind: MediaKind::Photo, name: "cat.png".into(), mime: "image/png".into(), size: 10, sha256: [1; 32], thumbs: Vec::new(), duration_secs: 0 }
}
