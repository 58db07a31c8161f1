//! The node's replicated application: one enum of commands and one of
//! queries over every service, applied by [`Services`] inside the Raft state
//! machine (`courier_raft::logic::App`). The bytes are versioned by the raft
//! codec (format byte + postcard); new variants are only ever appended.

use courier_raft::codec::{decode, encode};
use courier_raft::logic::{App, StateRead, StateView};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auth::logic as auth;
use crate::media::logic as media;
use crate::messaging::logic as chat;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AppCommand {
    Auth(auth::Cmd),
    Chat(chat::Cmd),
    Media(media::Cmd),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AppQuery {
    Auth(auth::Query),
    Chat(chat::Query),
    Media(media::Query),
}

/// A command or query paired with the type of its answer: every command
/// struct (`Into<AppCommand>`) and query struct (`Into<AppQuery>`) of every
/// service says what it answers, and [`answer`] holds each arm of the state
/// machine to it.
pub trait Request {
    type Answer: Serialize + DeserializeOwned;
}

/// Why a command or query was refused: the `Err` of every answer's bytes
/// (`Result<Answer, Refusal>`). postcard encodes an `Err` the same whatever
/// the `Ok` type, so a refusal is written without knowing the request
/// ([`App::admit`]). `Undecodable` when a replica cannot read the request
/// (a newer proposer): refused, never a stopped group. Refusals cross the
/// wire: new ones at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    Auth(auth::AuthError),
    Chat(chat::ChatError),
    Media(media::MediaError),
    Undecodable(String),
}

impl From<auth::AuthError> for Refusal {
    fn from(e: auth::AuthError) -> Refusal {
        Refusal::Auth(e)
    }
}
impl From<chat::ChatError> for Refusal {
    fn from(e: chat::ChatError) -> Refusal {
        Refusal::Chat(e)
    }
}
impl From<media::MediaError> for Refusal {
    fn from(e: media::MediaError) -> Refusal {
        Refusal::Media(e)
    }
}

impl From<Refusal> for crate::Error {
    fn from(r: Refusal) -> crate::Error {
        match r {
            Refusal::Auth(e) => e.into(),
            Refusal::Chat(e) => e.into(),
            Refusal::Media(e) => e.into(),
            Refusal::Undecodable(why) => crate::Error::BadRequest(format!("the cluster cannot read this request: {why}")),
        }
    }
}

/// The encoded answer of one state-machine arm (`Result<R::Answer,
/// Refusal>`): `_request` ties the arm's answer to its request's type.
/// `Err` only for storage failures.
pub fn answer<R: Request, E: Into<Refusal>>(_request: &R, r: crate::Result<Result<R::Answer, E>>) -> crate::Result<Vec<u8>> {
    Ok(encode(&r?.map_err(Into::into)))
}

/// The bytes of a refusal, whatever was asked.
fn refusal(r: Refusal) -> Vec<u8> {
    encode(&Err::<(), Refusal>(r))
}

/// A command's or query's answer out of its bytes: a refusal is its
/// service's error; bytes that do not read are a codec error.
fn answered<R: Request>(bytes: &[u8]) -> crate::Result<R::Answer> {
    Ok(decode::<Result<R::Answer, Refusal>>(bytes)??)
}

/// An answer's bytes read back (the tests of each service's decisions).
#[cfg(test)]
pub fn answer_of<A: DeserializeOwned>(bytes: &[u8]) -> Result<A, Refusal> {
    decode(bytes).expect("answer bytes")
}

/// For each variant of a service's command or query enum: the variant's
/// struct (in module `$m`) goes into the enum and into the app's enum, and
/// answers `$answer`.
macro_rules! requests {
    ($app:ident :: $svc:ident, $enum:ident, $m:ident { $($v:ident => $answer:ty),* $(,)? }) => {$(
        impl From<$m::$v> for $enum {
            fn from(c: $m::$v) -> $enum {
                $enum::$v(c)
            }
        }
        impl From<$m::$v> for crate::app::$app {
            fn from(c: $m::$v) -> crate::app::$app {
                crate::app::$app::$svc($enum::$v(c))
            }
        }
        impl crate::app::Request for $m::$v {
            type Answer = $answer;
        }
    )*};
}
pub(crate) use requests;

/// Every service's apply and query, behind the raft layer's [`App`], and
/// the leader's login budget ([`App::admit`]).
pub struct Services {
    login_gate: Mutex<crate::auth::limit::LoginGate>,
    /// `None` when every per-chat budget is off: chat commands are then not decoded.
    chat_gate: Option<Mutex<crate::messaging::limit::ChatGate>>,
}

impl Services {
    pub fn new(cfg: &crate::config::NodeConfig) -> Services {
        let chat_gate = crate::messaging::limit::ChatGate::enabled(&cfg.limits).then(|| Mutex::new(crate::messaging::limit::ChatGate::new(&cfg.limits)));
        Services { login_gate: Mutex::new(crate::auth::limit::LoginGate::new(cfg.auth.logins_per_phone_per_minute)), chat_gate }
    }
}

/// Which service encoded command bytes are for, without decoding them: the
/// codec's format byte, then postcard's variant index ([`AppCommand`]'s
/// order). Lets the leader skip decoding what no budget looks at.
fn service_of(cmd: &[u8]) -> Option<u8> {
    cmd.get(1).copied()
}
const AUTH: u8 = 0;
const CHAT: u8 = 1;

impl App for Services {
    fn admit(&self, _group: u32, cmd: &[u8]) -> Option<Vec<u8>> {
        match service_of(cmd) {
            Some(AUTH) => {
                let Ok(AppCommand::Auth(c)) = decode::<AppCommand>(cmd) else { return None };
                let secs = self.login_gate.lock().expect("login gate lock").admit(&c).err()?;
                Some(refusal(Refusal::Auth(auth::AuthError::FloodWait { secs })))
            }
            Some(CHAT) => {
                let gate = self.chat_gate.as_ref()?;
                let Ok(AppCommand::Chat(c)) = decode::<AppCommand>(cmd) else { return None };
                let secs = gate.lock().expect("chat gate lock").admit(&c).err()?;
                Some(refusal(Refusal::Chat(chat::ChatError::FloodWait { secs })))
            }
            _ => None,
        }
    }

    fn heavy(&self, query: &[u8]) -> bool {
        service_of(query) == Some(CHAT) && matches!(decode::<AppQuery>(query), Ok(AppQuery::Chat(chat::Query::Search(_) | chat::Query::SearchBefore(_))))
    }

    fn apply(&self, view: &mut dyn StateView, cmd: &[u8], _index: u64) -> courier_raft::Result<Vec<u8>> {
        match decode::<AppCommand>(cmd) {
            Ok(AppCommand::Auth(c)) => auth::apply(view, &c).map_err(into_raft),
            Ok(AppCommand::Chat(c)) => chat::apply(view, &c).map_err(into_raft),
            Ok(AppCommand::Media(c)) => media::apply(view, &c).map_err(into_raft),
            Err(e) => Ok(refusal(Refusal::Undecodable(e.to_string()))),
        }
    }

    fn query(&self, view: &dyn StateRead, query: &[u8]) -> courier_raft::Result<Vec<u8>> {
        match decode::<AppQuery>(query) {
            Ok(AppQuery::Auth(q)) => auth::query(view, &q).map_err(into_raft),
            Ok(AppQuery::Chat(q)) => chat::query(view, &q).map_err(into_raft),
            Ok(AppQuery::Media(q)) => media::query(view, &q).map_err(into_raft),
            Err(e) => Ok(refusal(Refusal::Undecodable(e.to_string()))),
        }
    }
}

fn into_raft(e: crate::Error) -> courier_raft::Error {
    match e {
        crate::Error::Raft(e) => e,
        crate::Error::Storage(e) => courier_raft::Error::Storage(e),
        other => courier_raft::Error::Fatal(other.to_string()),
    }
}

/// Runs a command in `group` (through its leader): its answer, or its
/// refusal as its service's error.
pub async fn write<C: Request + Into<AppCommand>>(node: &crate::Node, group: u32, cmd: C) -> crate::Result<C::Answer> {
    answered::<C>(&node.raft()?.write(group, courier_raft::cmd::App(encode(&cmd.into()))).await?)
}

/// A linearizable query of `group`'s state: its answer, or its refusal.
pub async fn read<Q: Request + Into<AppQuery>>(node: &crate::Node, group: u32, query: Q) -> crate::Result<Q::Answer> {
    answered::<Q>(&node.raft()?.read(group, courier_raft::ask::App(encode(&query.into()))).await?)
}

/// A query of one replica's own copy of `group`, without asking the leader:
/// this node's (`addr: None`) or the node's at `addr`. Only for rows that never
/// change once written. `None` when that node holds no replica.
pub async fn read_stale<Q: Request + Into<AppQuery>>(node: &crate::Node, group: u32, addr: Option<&str>, query: Q) -> crate::Result<Option<Q::Answer>> {
    let raft = node.raft()?;
    let q = courier_raft::ask::App(encode(&query.into()));
    let r = match addr {
        None => raft.read_stale(group, q)?,
        Some(addr) => raft.read_stale_at(addr, group, q).await?,
    };
    r.map(|b| answered::<Q>(&b)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_told_apart_without_decoding() {
        let auth = AppCommand::from(auth::cmd::Touch { token_hash: [1; 32], node_id: 1, address: "a".into(), now_ms: 5 });
        assert_eq!(service_of(&encode(&auth)), Some(AUTH));
        let chat = AppCommand::from(chat::cmd::Read { chat: 1, user: 2, max_id: 3, now_ms: 4 });
        assert_eq!(service_of(&encode(&chat)), Some(CHAT));
    }

    /// A command through the state machine as the raft layer runs it: its
    /// typed answer, a refusal, the leader's budget, bytes a replica cannot read.
    #[test]
    fn the_state_machine_answers_each_request_in_its_own_type() {
        let mut cfg = crate::config::NodeConfig::default();
        cfg.auth.logins_per_phone_per_minute = 1;
        let services = Services::new(&cfg);
        let mut v = courier_raft::logic::MemView::default();
        let send = auth::cmd::SendCodeFrom { phone: "+15550001111".into(), code_id: 9, code: "12345".into(), ttl_ms: 60_000, max_per_day: 5, now_ms: 1, asker: "1.2.3.4".into() };
        let bytes = encode(&AppCommand::from(send.clone()));
        assert_eq!(services.admit(1, &bytes), None, "the first attempt is in the budget");
        let sent: auth::CodeSentVia = answered::<auth::cmd::SendCodeFrom>(&services.apply(&mut v, &bytes, 1).unwrap()).unwrap();
        assert_eq!((sent.code_id, sent.sms), (9, true));
        let flood = services.admit(1, &bytes).expect("the second is over it");
        assert!(matches!(answered::<auth::cmd::SendCodeFrom>(&flood), Err(crate::Error::Auth(auth::AuthError::FloodWait { .. }))));
        let wrong = encode(&AppCommand::from(auth::cmd::SignIn { phone: "+1".into(), code_id: 9, code: "0".into(), session: bytes::session(), now_ms: 2 }));
        let refused = services.apply(&mut v, &wrong, 2).unwrap();
        assert!(matches!(answered::<auth::cmd::SignIn>(&refused), Err(crate::Error::Auth(auth::AuthError::PhoneNumberInvalid))));
        let code = services.query(&v, &encode(&AppQuery::from(auth::ask::Code { phone: "+15550001111".into() }))).unwrap();
        assert_eq!(answered::<auth::ask::Code>(&code).unwrap().map(|c| c.id), Some(9));
        let newer = services.apply(&mut v, &courier_raft::codec::encode(&(7u32, 1u8)), 3).unwrap();
        assert_eq!(answered::<chat::cmd::Send>(&newer).unwrap_err().code(), courier_proto::Code::BadRequest, "a command from a newer node is refused");
    }

    #[test]
    fn a_refusal_reads_back_whatever_was_asked_and_garbage_is_a_codec_error() {
        let flood = refusal(Refusal::Chat(chat::ChatError::FloodWait { secs: 3 }));
        assert!(matches!(answered::<chat::cmd::Send>(&flood), Err(crate::Error::Chat(chat::ChatError::FloodWait { secs: 3 }))));
        assert!(matches!(answered::<auth::cmd::Touch>(&flood), Err(crate::Error::Chat(_))), "the same bytes for any request");
        let newer = refusal(Refusal::Undecodable("unknown variant".into()));
        assert_eq!(answered::<auth::ask::Validate>(&newer).unwrap_err().code(), courier_proto::Code::BadRequest);
        let sent = answer(&media::cmd::Abort { upload: 1, owner: 2 }, Ok(Ok::<(), media::MediaError>(()))).unwrap();
        answered::<media::cmd::Abort>(&sent).unwrap();
        assert!(matches!(answered::<media::ask::File>(&sent), Err(crate::Error::Raft(_))), "an answer of another type does not read");
    }
}

/// Commands are in Raft logs and commands and queries cross the wire: one
/// sample of every variant of every service, and the exact bytes it has
/// always encoded to.
#[cfg(test)]
mod bytes {
    use super::*;
    use crate::media::logic::{ChunkRef, RefRows, Thumb};
    use crate::messaging::logic::{Attachment, ChatKind, Copy, Forwarded, MediaKind, Role};

    fn cmd<C: Request + Into<AppCommand>>(c: C) -> Vec<u8> {
        encode(&c.into())
    }

    fn ask<Q: Request + Into<AppQuery>>(q: Q) -> Vec<u8> {
        encode(&q.into())
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Each sample's bytes against the literal beside it (printed all when
    /// one differs, to read the change).
    fn same(samples: Vec<Vec<u8>>, expected: &[&str]) {
        let got: Vec<String> = samples.iter().map(|b| hex(b)).collect();
        if got.iter().zip(expected).any(|(g, e)| g != e) {
            got.iter().for_each(|g| println!("\"{g}\","));
        }
        assert_eq!(got.len(), expected.len(), "one literal per sample");
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            assert_eq!(g, e, "sample {i}");
        }
    }

    pub(super) fn session() -> auth::NewSession {
        auth::NewSession { token_hash: [7; 32], device: "dev".into(), app_version: "1.0".into(), node_id: 3, address: "10.0.0.1:5".into() }
    }

    #[test]
    fn auth_commands_and_queries_keep_their_bytes() {
        let samples = vec![
            cmd(auth::cmd::SendCode { phone: "+15550001111".into(), code_id: 9, code: "12345".into(), ttl_ms: 300_000, max_per_day: 5, now_ms: 1_700_000_000_000 }),
            cmd(auth::cmd::SignIn { phone: "+15550001111".into(), code_id: 9, code: "12345".into(), session: session(), now_ms: 2 }),
            cmd(auth::cmd::SignUp { phone: "+15550001111".into(), code_id: 9, first_name: "Ann".into(), last_name: "Lee".into(), session: session(), group: 7, now_ms: 3 }),
            cmd(auth::cmd::Touch { token_hash: [1; 32], node_id: 1, address: "a".into(), now_ms: 5 }),
            cmd(auth::cmd::Revoke { by: [2; 32], which: auth::Revoke::Current, now_ms: 6 }),
            cmd(auth::cmd::Revoke { by: [2; 32], which: auth::Revoke::One(300), now_ms: 6 }),
            cmd(auth::cmd::Revoke { by: [2; 32], which: auth::Revoke::Others, now_ms: 6 }),
            cmd(auth::cmd::SendCodeFrom { phone: "+15550001111".into(), code_id: 10, code: "54321".into(), ttl_ms: 1, max_per_day: 2, now_ms: 3, asker: "1.2.3.4".into() }),
            ask(auth::ask::Validate(vec![[3; 32], [4; 32]])),
            ask(auth::ask::Sessions { by: [5; 32] }),
            ask(auth::ask::Code { phone: "+1555".into() }),
            ask(auth::ask::UserByPhone { phone: "+1666".into() }),
            ask(auth::ask::UserById(1 << 16 | 7)),
        ];
        same(
            samples,
            &[
                "0100000c2b313535353030303131313109053132333435e0a7120580d095ffbc31",
                "0100010c2b31353535303030313131310905313233343507070707070707070707070707070707070707070707070707070707070707070364657603312e30030a31302e302e302e313a3502",
                "0100020c2b31353535303030313131310903416e6e034c656507070707070707070707070707070707070707070707070707070707070707070364657603312e30030a31302e302e302e313a350703",
                "010003010101010101010101010101010101010101010101010101010101010101010101016105",
                "01000402020202020202020202020202020202020202020202020202020202020202020006",
                "010004020202020202020202020202020202020202020202020202020202020202020201ac0206",
                "01000402020202020202020202020202020202020202020202020202020202020202020206",
                "0100050c2b31353535303030313131310a05353433323101020307312e322e332e34",
                "0100000203030303030303030303030303030303030303030303030303030303030303030404040404040404040404040404040404040404040404040404040404040404",
                "0100010505050505050505050505050505050505050505050505050505050505050505",
                "010002052b31353535",
                "010003052b31363636",
                "010004878004",
            ],
        );
    }

    fn attachment() -> Attachment {
        let chunk = ChunkRef { hash: [9; 32], len: 1000 };
        Attachment { file: 5 << 16 | 2, kind: MediaKind::Voice, name: "a.ogg".into(), mime: "audio/ogg".into(), size: 10, sha256: [8; 32], thumbs: vec![Thumb { kind: b's', width: 90, height: 60, chunk }], duration_secs: 4 }
    }

    #[test]
    fn chat_commands_and_queries_keep_their_bytes() {
        let fwd = Forwarded { from: 11, chat: 12, id: 13, date_ms: 14 };
        let samples = vec![
            cmd(chat::cmd::Create { id: 77 << 16 | 5, kind: ChatKind::Group, title: "Team".into(), creator: 1, members: vec![2, 3], now_ms: 4 }),
            cmd(chat::cmd::Send { chat: 5, from: 1, random_id: u64::MAX, text: "hi".into(), reply_to: 2, now_ms: 3 }),
            cmd(chat::cmd::Edit { chat: 5, by: 1, id: 2, text: "hello".into(), now_ms: 3 }),
            cmd(chat::cmd::Delete { chat: 5, by: 1, ids: vec![2, 3], now_ms: 4 }),
            cmd(chat::cmd::Hide { chat: 5, user: 1, ids: vec![2], now_ms: 4 }),
            cmd(chat::cmd::Read { chat: 1, user: 2, max_id: 3, now_ms: 4 }),
            cmd(chat::cmd::Invite { chat: 5, by: 1, users: vec![6, 7], now_ms: 8 }),
            cmd(chat::cmd::Remove { chat: 5, by: 1, user: 6, now_ms: 8 }),
            cmd(chat::cmd::SetTitle { chat: 5, by: 1, title: "New".into(), now_ms: 8 }),
            cmd(chat::cmd::SetRole { chat: 5, by: 1, user: 6, role: Role::Admin, now_ms: 8 }),
            cmd(chat::cmd::ForwardV1 { chat: 5, from: 1, random_id: 2, items: vec![("t".into(), fwd.clone())], now_ms: 8 }),
            cmd(chat::cmd::Pin { chat: 5, by: 1, id: 2, now_ms: 8 }),
            cmd(chat::cmd::React { chat: 5, user: 1, id: 2, emoji: "👍".into(), now_ms: 8 }),
            cmd(chat::cmd::AddUserChat { user: 1, chat: 5 }),
            cmd(chat::cmd::RemoveUserChat { user: 1, chat: 5 }),
            cmd(chat::cmd::SendMedia { chat: 5, from: 1, random_id: 2, caption: "c".into(), reply_to: 0, media: attachment(), now_ms: 8 }),
            cmd(chat::cmd::Forward { chat: 5, from: 1, random_id: 2, items: vec![Copy { text: "t".into(), fwd, media: Some(attachment()) }], now_ms: 8 }),
            cmd(chat::cmd::Block { chat: 5, by: 1, on: true }),
            ask(chat::ask::History { chat: 5, user: 1, before: 9, after: 2, limit: 50 }),
            ask(chat::ask::Difference { user: 1, chats: vec![(5, 6), (7, 8)] }),
            ask(chat::ask::Dialogs { user: 1, chats: vec![5, 6] }),
            ask(chat::ask::UserChats { user: 1 }),
            ask(chat::ask::Memberships { user: 1, chats: vec![5] }),
            ask(chat::ask::Members { chat: 5, user: 1, limit: 200 }),
            ask(chat::ask::Search { chat: 5, user: 1, text: "cat".into(), limit: 20 }),
            ask(chat::ask::Get { chat: 5, user: 1, ids: vec![2, 3] }),
            ask(chat::ask::MembersAfter { chat: 5, user: 1, after: 9, limit: 200 }),
            ask(chat::ask::SearchBefore { chat: 5, user: 1, text: "cat".into(), limit: 20, before: 99 }),
            ask(chat::ask::ChatRows { user: 1, chats: vec![5, 6] }),
            ask(chat::ask::Reactors { chat: 5, user: 1, id: 2, after: 3, limit: 4 }),
            ask(chat::ask::MembersIn { chat: 5, users: vec![1, 2] }),
            ask(chat::ask::HistoryPage { chat: 5, user: 1, before: 9, after: 2, limit: 50 }),
            ask(chat::ask::DifferenceBounded { user: 1, chats: vec![(5, 6)] }),
            ask(chat::ask::BlockedAgainst { user: 1, chats: vec![5] }),
            ask(chat::ask::DifferenceReads { user: 1, chats: vec![(5, 6, 7)] }),
        ];
        same(
            samples,
            &[
                "0101008580b40201045465616d0102020304",
                "0101010501ffffffffffffffffff010268690203",
                "0101020501020568656c6c6f03",
                "010103050102020304",
                "0101040501010204",
                "01010501020304",
                "010106050102060708",
                "01010705010608",
                "0101080501034e657708",
                "0101090501060108",
                "01010a0501020101740b0c0d0e08",
                "01010b05010208",
                "01010c05010204f09f918d08",
                "01010d0105",
                "01010e0105",
                "01010f0501020163008280140205612e6f676709617564696f2f6f67670a080808080808080808080808080808080808080808080808080808080808080801735a3c0909090909090909090909090909090909090909090909090909090909090909e8070408",
                "0101100501020101740b0c0d0e018280140205612e6f676709617564696f2f6f67670a080808080808080808080808080808080808080808080808080808080808080801735a3c0909090909090909090909090909090909090909090909090909090909090909e8070408",
                "010111050101",
                "0101000501090232",
                "010101010205060708",
                "01010201020506",
                "01010301",
                "010104010105",
                "0101050501c801",
                "01010605010363617414",
                "0101070501020203",
                "010108050109c801",
                "0101090501036361741463",
                "01010a01020506",
                "01010b0501020304",
                "01010c05020102",
                "01010d0501090232",
                "01010e01010506",
                "01010f010105",
                "0101100101050607",
            ],
        );
    }

    #[test]
    fn media_commands_and_queries_keep_their_bytes() {
        let chunk = ChunkRef { hash: [9; 32], len: 1 << 20 };
        let thumb = Thumb { kind: b'm', width: 320, height: 200, chunk };
        let samples = vec![
            cmd(media::cmd::AddChunk { upload: 1, owner: 2, part_size: 512 << 10, index: 3, chunk, now_ms: 4 }),
            cmd(media::cmd::FinishV1 { upload: 1, owner: 2, file: 3, size: 4, sha256: [5; 32], name: "n".into(), mime: "m/m".into(), now_ms: 6 }),
            cmd(media::cmd::Abort { upload: 1, owner: 2 }),
            cmd(media::cmd::Share { file: 1, chat: 2 }),
            cmd(media::cmd::Finish { upload: 1, owner: 2, file: 3, size: 4, sha256: [5; 32], name: "n".into(), mime: "m/m".into(), thumbs: vec![thumb], now_ms: 6 }),
            cmd(media::cmd::Charge { owner: 2, upload: 1, bytes: 3, quota: 4 }),
            ask(media::ask::Upload { upload: 1 }),
            ask(media::ask::File { file: 2 }),
            ask(media::ask::Finished { upload: 3 }),
            ask(media::ask::ChunkRefs { rows: RefRows::Files, after: vec![1, 2], limit: 1000 }),
        ];
        same(
            samples,
            &[
                "010200010280802003090909090909090909090909090909090909090909090909090909090909090980804004",
                "010201010203040505050505050505050505050505050505050505050505050505050505050505016e036d2f6d06",
                "0102020102",
                "0102030102",
                "010204010203040505050505050505050505050505050505050505050505050505050505050505016e036d2f6d016dc002c801090909090909090909090909090909090909090909090909090909090909090980804006",
                "01020502010304",
                "01020001",
                "01020102",
                "01020203",
                "01020301020102e807",
            ],
        );
    }
}
