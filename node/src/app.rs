//! The node's replicated application: one enum of commands and one of
//! queries over every service, applied by [`Services`] inside the Raft state
//! machine (`courier_raft::logic::App`). The bytes are versioned by the raft
//! codec (format byte + postcard); new variants are only ever appended.

use courier_raft::codec::{decode, encode};
use courier_raft::logic::{App, StateRead, StateView};
use std::sync::Mutex;

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

/// The answer to a command or query; `Undecodable` when a replica cannot read
/// the bytes (a newer proposer): refused, never a stopped group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AppReply {
    Auth(auth::Outcome),
    Undecodable(String),
    Chat(chat::Outcome),
    Media(media::Outcome),
}

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
                Some(encode(&AppReply::Auth(Err(auth::AuthError::FloodWait { secs }))))
            }
            Some(CHAT) => {
                let gate = self.chat_gate.as_ref()?;
                let Ok(AppCommand::Chat(c)) = decode::<AppCommand>(cmd) else { return None };
                let secs = gate.lock().expect("chat gate lock").admit(&c).err()?;
                Some(encode(&AppReply::Chat(Err(chat::ChatError::FloodWait { secs }))))
            }
            _ => None,
        }
    }

    fn heavy(&self, query: &[u8]) -> bool {
        service_of(query) == Some(CHAT)
            && matches!(decode::<AppQuery>(query), Ok(AppQuery::Chat(chat::Query::Search { .. } | chat::Query::SearchBefore { .. })))
    }

    fn apply(&self, view: &mut dyn StateView, cmd: &[u8], _index: u64) -> courier_raft::Result<Vec<u8>> {
        let reply = match decode::<AppCommand>(cmd) {
            Ok(AppCommand::Auth(c)) => AppReply::Auth(auth::apply(view, &c).map_err(into_raft)?),
            Ok(AppCommand::Chat(c)) => AppReply::Chat(chat::apply(view, &c).map_err(into_raft)?),
            Ok(AppCommand::Media(c)) => AppReply::Media(media::apply(view, &c).map_err(into_raft)?),
            Err(e) => AppReply::Undecodable(e.to_string()),
        };
        Ok(encode(&reply))
    }

    fn query(&self, view: &dyn StateRead, query: &[u8]) -> courier_raft::Result<Vec<u8>> {
        let reply = match decode::<AppQuery>(query) {
            Ok(AppQuery::Auth(q)) => AppReply::Auth(auth::query(view, &q).map_err(into_raft)?),
            Ok(AppQuery::Chat(q)) => AppReply::Chat(chat::query(view, &q).map_err(into_raft)?),
            Ok(AppQuery::Media(q)) => AppReply::Media(media::query(view, &q).map_err(into_raft)?),
            Err(e) => AppReply::Undecodable(e.to_string()),
        };
        Ok(encode(&reply))
    }
}

fn into_raft(e: crate::Error) -> courier_raft::Error {
    match e {
        crate::Error::Raft(e) => e,
        crate::Error::Storage(e) => courier_raft::Error::Storage(e),
        other => courier_raft::Error::Fatal(other.to_string()),
    }
}

/// Runs a command in `group` (through its leader) and decodes the answer.
pub async fn write(node: &crate::Node, group: u32, cmd: &AppCommand) -> crate::Result<AppReply> {
    match node.raft()?.write(group, courier_raft::Command::App(encode(cmd))).await? {
        courier_raft::Response::App(b) => Ok(decode(&b)?),
        other => Err(crate::Error::Io(format!("unexpected reply {other:?}"))),
    }
}

/// A linearizable query of `group`'s state, decoded.
pub async fn read(node: &crate::Node, group: u32, query: &AppQuery) -> crate::Result<AppReply> {
    match node.raft()?.read(group, courier_raft::Query::App(encode(query))).await? {
        courier_raft::QueryResult::App(b) => Ok(decode(&b)?),
        other => Err(crate::Error::Io(format!("unexpected reply {other:?}"))),
    }
}

/// A query of one replica's own copy of `group`, without asking the leader:
/// this node's (`addr: None`) or the node's at `addr`. Only for rows that never
/// change once written. `None` when that node holds no replica.
pub async fn read_stale(node: &crate::Node, group: u32, addr: Option<&str>, query: &AppQuery) -> crate::Result<Option<AppReply>> {
    let raft = node.raft()?;
    let q = courier_raft::Query::App(encode(query));
    let r = match addr {
        None => raft.read_stale(group, &q)?,
        Some(addr) => raft.read_stale_at(addr, group, q).await?,
    };
    match r {
        Some(courier_raft::QueryResult::App(b)) => Ok(Some(decode(&b)?)),
        Some(other) => Err(crate::Error::Io(format!("unexpected reply {other:?}"))),
        None => Ok(None),
    }
}

/// One service's answer out of an [`AppReply`]: `pick` takes the service's
/// own variant (or hands the reply back); the answers every service shares
/// are mapped here.
pub fn service_reply<T, E: Into<crate::Error>>(reply: AppReply, pick: impl FnOnce(AppReply) -> Result<Result<T, E>, AppReply>) -> crate::Result<T> {
    match pick(reply) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.into()),
        Err(AppReply::Undecodable(why)) => Err(crate::Error::BadRequest(format!("the cluster cannot read this request: {why}"))),
        Err(other) => Err(crate::Error::Io(format!("unexpected reply {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_told_apart_without_decoding() {
        let auth = AppCommand::Auth(auth::Cmd::Touch { token_hash: [1; 32], node_id: 1, address: "a".into(), now_ms: 5 });
        assert_eq!(service_of(&encode(&auth)), Some(AUTH));
        let chat = AppCommand::Chat(chat::Cmd::Read { chat: 1, user: 2, max_id: 3, now_ms: 4 });
        assert_eq!(service_of(&encode(&chat)), Some(CHAT));
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

    fn session() -> auth::NewSession {
        auth::NewSession { token_hash: [7; 32], device: "dev".into(), app_version: "1.0".into(), node_id: 3, address: "10.0.0.1:5".into() }
    }

    #[test]
    fn auth_commands_and_queries_keep_their_bytes() {
        let c = |c: auth::Cmd| encode(&AppCommand::Auth(c));
        let q = |q: auth::Query| encode(&AppQuery::Auth(q));
        let samples = vec![
            c(auth::Cmd::SendCode { phone: "+15550001111".into(), code_id: 9, code: "12345".into(), ttl_ms: 300_000, max_per_day: 5, now_ms: 1_700_000_000_000 }),
            c(auth::Cmd::SignIn { phone: "+15550001111".into(), code_id: 9, code: "12345".into(), session: session(), now_ms: 2 }),
            c(auth::Cmd::SignUp { phone: "+15550001111".into(), code_id: 9, first_name: "Ann".into(), last_name: "Lee".into(), session: session(), group: 7, now_ms: 3 }),
            c(auth::Cmd::Touch { token_hash: [1; 32], node_id: 1, address: "a".into(), now_ms: 5 }),
            c(auth::Cmd::Revoke { by: [2; 32], which: auth::Revoke::Current, now_ms: 6 }),
            c(auth::Cmd::Revoke { by: [2; 32], which: auth::Revoke::One(300), now_ms: 6 }),
            c(auth::Cmd::Revoke { by: [2; 32], which: auth::Revoke::Others, now_ms: 6 }),
            c(auth::Cmd::SendCodeFrom { phone: "+15550001111".into(), code_id: 10, code: "54321".into(), ttl_ms: 1, max_per_day: 2, now_ms: 3, asker: "1.2.3.4".into() }),
            q(auth::Query::Validate(vec![[3; 32], [4; 32]])),
            q(auth::Query::Sessions { by: [5; 32] }),
            q(auth::Query::Code { phone: "+1555".into() }),
            q(auth::Query::UserByPhone { phone: "+1666".into() }),
            q(auth::Query::UserById(1 << 16 | 7)),
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
        let c = |c: chat::Cmd| encode(&AppCommand::Chat(c));
        let q = |q: chat::Query| encode(&AppQuery::Chat(q));
        let fwd = Forwarded { from: 11, chat: 12, id: 13, date_ms: 14 };
        let samples = vec![
            c(chat::Cmd::Create { id: 77 << 16 | 5, kind: ChatKind::Group, title: "Team".into(), creator: 1, members: vec![2, 3], now_ms: 4 }),
            c(chat::Cmd::Send { chat: 5, from: 1, random_id: u64::MAX, text: "hi".into(), reply_to: 2, now_ms: 3 }),
            c(chat::Cmd::Edit { chat: 5, by: 1, id: 2, text: "hello".into(), now_ms: 3 }),
            c(chat::Cmd::Delete { chat: 5, by: 1, ids: vec![2, 3], now_ms: 4 }),
            c(chat::Cmd::Hide { chat: 5, user: 1, ids: vec![2], now_ms: 4 }),
            c(chat::Cmd::Read { chat: 1, user: 2, max_id: 3, now_ms: 4 }),
            c(chat::Cmd::Invite { chat: 5, by: 1, users: vec![6, 7], now_ms: 8 }),
            c(chat::Cmd::Remove { chat: 5, by: 1, user: 6, now_ms: 8 }),
            c(chat::Cmd::SetTitle { chat: 5, by: 1, title: "New".into(), now_ms: 8 }),
            c(chat::Cmd::SetRole { chat: 5, by: 1, user: 6, role: Role::Admin, now_ms: 8 }),
            c(chat::Cmd::ForwardV1 { chat: 5, from: 1, random_id: 2, items: vec![("t".into(), fwd.clone())], now_ms: 8 }),
            c(chat::Cmd::Pin { chat: 5, by: 1, id: 2, now_ms: 8 }),
            c(chat::Cmd::React { chat: 5, user: 1, id: 2, emoji: "👍".into(), now_ms: 8 }),
            c(chat::Cmd::AddUserChat { user: 1, chat: 5 }),
            c(chat::Cmd::RemoveUserChat { user: 1, chat: 5 }),
            c(chat::Cmd::SendMedia { chat: 5, from: 1, random_id: 2, caption: "c".into(), reply_to: 0, media: attachment(), now_ms: 8 }),
            c(chat::Cmd::Forward { chat: 5, from: 1, random_id: 2, items: vec![Copy { text: "t".into(), fwd, media: Some(attachment()) }], now_ms: 8 }),
            c(chat::Cmd::Block { chat: 5, by: 1, on: true }),
            q(chat::Query::History { chat: 5, user: 1, before: 9, after: 2, limit: 50 }),
            q(chat::Query::Difference { user: 1, chats: vec![(5, 6), (7, 8)] }),
            q(chat::Query::Dialogs { user: 1, chats: vec![5, 6] }),
            q(chat::Query::UserChats { user: 1 }),
            q(chat::Query::Memberships { user: 1, chats: vec![5] }),
            q(chat::Query::Members { chat: 5, user: 1, limit: 200 }),
            q(chat::Query::Search { chat: 5, user: 1, text: "cat".into(), limit: 20 }),
            q(chat::Query::Get { chat: 5, user: 1, ids: vec![2, 3] }),
            q(chat::Query::MembersAfter { chat: 5, user: 1, after: 9, limit: 200 }),
            q(chat::Query::SearchBefore { chat: 5, user: 1, text: "cat".into(), limit: 20, before: 99 }),
            q(chat::Query::ChatRows { user: 1, chats: vec![5, 6] }),
            q(chat::Query::Reactors { chat: 5, user: 1, id: 2, after: 3, limit: 4 }),
            q(chat::Query::MembersIn { chat: 5, users: vec![1, 2] }),
            q(chat::Query::HistoryPage { chat: 5, user: 1, before: 9, after: 2, limit: 50 }),
            q(chat::Query::DifferenceBounded { user: 1, chats: vec![(5, 6)] }),
            q(chat::Query::BlockedAgainst { user: 1, chats: vec![5] }),
            q(chat::Query::DifferenceReads { user: 1, chats: vec![(5, 6, 7)] }),
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
        let c = |c: media::Cmd| encode(&AppCommand::Media(c));
        let q = |q: media::Query| encode(&AppQuery::Media(q));
        let chunk = ChunkRef { hash: [9; 32], len: 1 << 20 };
        let thumb = Thumb { kind: b'm', width: 320, height: 200, chunk };
        let samples = vec![
            c(media::Cmd::AddChunk { upload: 1, owner: 2, part_size: 512 << 10, index: 3, chunk, now_ms: 4 }),
            c(media::Cmd::FinishV1 { upload: 1, owner: 2, file: 3, size: 4, sha256: [5; 32], name: "n".into(), mime: "m/m".into(), now_ms: 6 }),
            c(media::Cmd::Abort { upload: 1, owner: 2 }),
            c(media::Cmd::Share { file: 1, chat: 2 }),
            c(media::Cmd::Finish { upload: 1, owner: 2, file: 3, size: 4, sha256: [5; 32], name: "n".into(), mime: "m/m".into(), thumbs: vec![thumb], now_ms: 6 }),
            c(media::Cmd::Charge { owner: 2, upload: 1, bytes: 3, quota: 4 }),
            q(media::Query::Upload { upload: 1 }),
            q(media::Query::File { file: 2 }),
            q(media::Query::Finished { upload: 3 }),
            q(media::Query::ChunkRefs { rows: RefRows::Files, after: vec![1, 2], limit: 1000 }),
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
