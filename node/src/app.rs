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
