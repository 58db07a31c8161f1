//! The checkers: pure functions from a history to the anomalies in it.
//!
//! What the workload writes, and what is checked against it:
//! * `send` (value `chat`, `user`, `rid`, `text`; an `ok` adds `id`): the text
//!   starts with a token naming the send (`u<user>-r<rid>`), so a message in
//!   the final log can be traced to the send that made it.
//! * `edit` keeps that token; `delete` (value `chat`, `id`) leaves a tombstone.
//! * `read` by `final` (value `node`, `chat`, `messages`): a chat's whole log,
//!   read through one node after every fault was healed.
//! * `view` by a device (value `user`, `chats`, `seen`): the device's synced
//!   copy at the end, and every message it ever saw live.
//! * `revoke` (value `session`) and `probe` (value `session`): a request made
//!   with a session's token.
//!
//! | check | anomaly |
//! | --- | --- |
//! | G1 | an acknowledged send is missing from the final log (or deleted with no delete asked); a file an acknowledged send carried does not download whole after healing |
//! | G2 | reads through different nodes differ; ids not 1..n; an acknowledged id or a live-seen id holds another message |
//! | G3 | two messages for one (chat, sender, random_id); one send acknowledged with two ids |
//! | G4 | a device's synced view differs from the final log, or it could not sync |
//! | G6 | a request with a session's token succeeded although invoked after its revocation was acknowledged |
//! | phantom | a message no send asked for |

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::history::{Entry, Kind};

/// One message as a reader sees it: id, sender, text, deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line(pub u64, pub u64, pub String, pub bool);

/// The token naming the send a text came from.
pub fn ident(text: &str) -> &str {
    text.split_whitespace().next().unwrap_or("")
}

/// The text a send writes: `u<user>-r<rid>`.
pub fn send_text(user: u64, rid: u64) -> String {
    format!("u{user}-r{rid}")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    /// `G1-lost`, `G2-divergent`, … (the guarantee first).
    pub kind: String,
    pub detail: String,
}

fn anomaly(kind: &str, detail: String) -> Anomaly {
    Anomaly {
        kind: kind.into(),
        detail,
    }
}

fn lines(v: Option<&Value>) -> Vec<Line> {
    v.and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// Every check over a whole history.
pub fn check(history: &[Entry]) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let finals = final_logs(history, &mut out);
    check_sends(history, &finals, &mut out);
    check_views(history, &finals, &mut out);
    check_sessions(history, &mut out);
    check_files(history, &finals, &mut out);
    out
}

/// G1 for files: every file an acknowledged send carried (and that is not
/// deleted in the final log) downloads after healing with the bytes that
/// were uploaded.
fn check_files(history: &[Entry], finals: &BTreeMap<u64, Vec<Line>>, out: &mut Vec<Anomaly>) {
    let uploaded: BTreeMap<u64, &str> = history
        .iter()
        .filter(|e| e.f == "upload" && e.kind == Kind::Ok)
        .filter_map(|e| Some((e.get_u64("file")?, e.get_str("sha256")?)))
        .collect();
    let downloads: BTreeMap<(u64, u64), &Entry> = history
        .iter()
        .filter(|e| e.process == "final" && e.f == "download" && e.kind != Kind::Invoke)
        .filter_map(|e| Some(((e.get_u64("chat")?, e.get_u64("id")?), e)))
        .collect();
    let sent: BTreeSet<(u64, u64, u64)> = history
        .iter()
        .filter(|e| e.f == "send" && e.kind == Kind::Ok)
        .filter_map(|e| Some((e.get_u64("chat")?, e.get_u64("id")?, e.get_u64("file")?)))
        .collect();
    for (chat, id, file) in sent {
        let deleted = finals
            .get(&chat)
            .and_then(|log| log.get((id as usize).wrapping_sub(1)))
            .is_some_and(|l| l.3);
        if deleted {
            continue;
        }
        let Some(want) = uploaded.get(&file) else {
            out.push(anomaly("G1-file-unknown", format!("chat {chat}: message {id} carries file {file}, which no acknowledged upload made")));
            continue;
        };
        match downloads.get(&(chat, id)) {
            Some(e) if e.kind == Kind::Ok => {
                if e.get_str("got_sha256") != Some(*want) {
                    out.push(anomaly("G1-file-corrupt", format!("chat {chat}: message {id}: file {file} downloaded as {:?}, uploaded as {want}", e.get_str("got_sha256"))));
                }
            }
            other => out.push(anomaly(
                "G1-file-lost",
                format!("chat {chat}: message {id}: file {file} could not be downloaded after healing ({})", other.and_then(|e| e.error.clone()).unwrap_or_else(|| "not tried".into())),
            )),
        }
    }
}

/// The final log of every chat (G2: every node's read agrees, ids are 1..n).
fn final_logs(history: &[Entry], out: &mut Vec<Anomaly>) -> BTreeMap<u64, Vec<Line>> {
    let mut logs: BTreeMap<u64, (String, Vec<Line>)> = BTreeMap::new();
    for e in history
        .iter()
        .filter(|e| e.process == "final" && e.f == "read" && e.kind == Kind::Ok)
    {
        let (Some(chat), node) = (e.get_u64("chat"), e.node.clone().unwrap_or_default()) else {
            continue;
        };
        let log = lines(e.value.get("messages"));
        match logs.get(&chat) {
            None => {
                for (i, l) in log.iter().enumerate() {
                    if l.0 != i as u64 + 1 {
                        out.push(anomaly("G2-gap", format!("chat {chat} read through {node}: position {} holds id {} (ids must be 1, 2, 3, …)", i + 1, l.0)));
                        break;
                    }
                }
                logs.insert(chat, (node, log));
            }
            Some((first_node, first)) if *first != log => {
                let at = first
                    .iter()
                    .zip(&log)
                    .position(|(a, b)| a != b)
                    .unwrap_or(first.len().min(log.len()));
                out.push(anomaly(
                    "G2-divergent",
                    format!(
                        "chat {chat}: {first_node} and {node} disagree from position {} ({} vs {} messages; {:?} vs {:?})",
                        at + 1,
                        first.len(),
                        log.len(),
                        first.get(at),
                        log.get(at)
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    logs.into_iter().map(|(c, (_, l))| (c, l)).collect()
}

fn check_sends(history: &[Entry], finals: &BTreeMap<u64, Vec<Line>>, out: &mut Vec<Anomaly>) {
    let deletes: BTreeSet<(u64, u64)> = history
        .iter()
        .filter(|e| e.f == "delete" && e.kind == Kind::Invoke)
        .filter_map(|e| Some((e.get_u64("chat")?, e.get_u64("id")?)))
        .collect();
    let asked: BTreeSet<(u64, String)> = history
        .iter()
        .filter(|e| e.f == "send" && e.kind == Kind::Invoke)
        .filter_map(|e| Some((e.get_u64("chat")?, ident(e.get_str("text")?).to_string())))
        .collect();
    // G3: one send, one id.
    let mut acked: BTreeMap<(u64, String), u64> = BTreeMap::new();
    for e in history
        .iter()
        .filter(|e| e.f == "send" && e.kind == Kind::Ok)
    {
        let (Some(chat), Some(user), Some(id), Some(text)) = (
            e.get_u64("chat"),
            e.get_u64("user"),
            e.get_u64("id"),
            e.get_str("text"),
        ) else {
            continue;
        };
        let key = (chat, ident(text).to_string());
        if let Some(prev) = acked.insert(key.clone(), id)
            && prev != id
        {
            out.push(anomaly(
                "G3-two-ids",
                format!(
                    "chat {chat}: send {} acknowledged as message {prev} and as message {id}",
                    key.1
                ),
            ));
        }
        let Some(log) = finals.get(&chat) else {
            out.push(anomaly(
                "G1-unread",
                format!("chat {chat}: acknowledged sends but no final read succeeded"),
            ));
            continue;
        };
        match (id as usize).checked_sub(1).and_then(|i| log.get(i)).filter(|l| l.0 == id) {
            None => out.push(anomaly("G1-lost", format!("chat {chat}: send {} acknowledged as message {id}, which the final log ({} messages) lacks", key.1, log.len()))),
            Some(Line(_, _, _, true)) if deletes.contains(&(chat, id)) => {}
            Some(Line(_, _, _, true)) => out.push(anomaly("G1-lost", format!("chat {chat}: message {id} ({}) is deleted but nobody deleted it", key.1))),
            Some(Line(_, from, t, false)) if *from != user || ident(t) != key.1 => {
                out.push(anomaly("G2-wrong-id", format!("chat {chat}: send {} acknowledged as message {id}, which holds {:?} from user {from}", key.1, t)))
            }
            Some(_) => {}
        }
    }
    // G3 in the log itself, and messages nobody sent.
    for (chat, log) in finals {
        let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
        for Line(id, _, text, deleted) in log {
            if *deleted {
                continue;
            }
            let t = ident(text);
            if let Some(first) = seen.insert(t, *id) {
                out.push(anomaly(
                    "G3-duplicate",
                    format!("chat {chat}: send {t} is both message {first} and message {id}"),
                ));
            }
            if !asked.contains(&(*chat, t.to_string())) {
                out.push(anomaly(
                    "phantom",
                    format!("chat {chat}: message {id} {text:?} was never sent"),
                ));
            }
        }
    }
}

fn check_views(history: &[Entry], finals: &BTreeMap<u64, Vec<Line>>, out: &mut Vec<Anomaly>) {
    for e in history
        .iter()
        .filter(|e| e.f == "view" && e.kind != Kind::Invoke)
    {
        let who = &e.process;
        if e.kind != Kind::Ok {
            out.push(anomaly(
                "G4-unsynced",
                format!(
                    "device {who} could not sync after the faults healed: {}",
                    e.error.clone().unwrap_or_default()
                ),
            ));
            continue;
        }
        let chats: BTreeMap<String, Value> = e
            .value
            .get("chats")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        for (chat, log) in finals {
            let view = lines(chats.get(&chat.to_string()));
            if view != *log {
                let at = view
                    .iter()
                    .zip(log)
                    .position(|(a, b)| a != b)
                    .unwrap_or(view.len().min(log.len()));
                out.push(anomaly(
                    "G4-view",
                    format!("device {who}, chat {chat}: synced view differs from the final log at position {} ({:?} vs {:?}; {} vs {} messages)", at + 1, view.get(at), log.get(at), view.len(), log.len()),
                ));
            }
        }
        // G2: what the device saw live carried the ids every reader sees.
        let seen: Vec<(u64, u64, u64, String)> = e
            .value
            .get("seen")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        for (chat, id, from, t) in seen {
            let Some(l) = finals
                .get(&chat)
                .and_then(|log| log.get((id as usize).checked_sub(1)?))
            else {
                out.push(anomaly("G2-seen-lost", format!("device {who} saw message {id} ({t}) in chat {chat} live; the final log lacks it")));
                continue;
            };
            if !l.3 && (l.1 != from || ident(&l.2) != t) {
                out.push(anomaly("G2-wrong-id", format!("device {who} saw {t} from {from} as message {id} in chat {chat}; the final log has {:?} from {}", l.2, l.1)));
            }
        }
    }
}

fn check_sessions(history: &[Entry], out: &mut Vec<Anomaly>) {
    let revoked: BTreeMap<u64, f64> = history
        .iter()
        .filter(|e| e.f == "revoke" && e.kind == Kind::Ok)
        .filter_map(|e| Some((e.get_u64("session")?, e.time_ms)))
        .collect();
    for e in history
        .iter()
        .filter(|e| e.f == "probe" && e.kind == Kind::Ok)
    {
        let (Some(s), Some(invoked)) = (e.get_u64("session"), e.invoked_ms) else {
            continue;
        };
        if let Some(at) = revoked.get(&s)
            && invoked > *at
        {
            out.push(anomaly(
                "G6-revoked-session",
                format!("session {s}: a request invoked at {:.0} ms through {} succeeded; its revocation was acknowledged at {at:.0} ms", invoked, e.node.clone().unwrap_or_default()),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(process: &str, kind: Kind, f: &str, value: Value) -> Entry {
        Entry {
            time_ms: 0.0,
            process: process.into(),
            kind,
            f: f.into(),
            node: Some("n".into()),
            value,
            error: None,
            invoked_ms: Some(0.0),
        }
    }

    fn send(user: u64, rid: u64, chat: u64, id: Option<u64>) -> Vec<Entry> {
        let v = json!({"chat": chat, "user": user, "rid": rid, "text": send_text(user, rid)});
        let mut done = v.clone();
        let kind = match id {
            Some(id) => {
                done["id"] = json!(id);
                Kind::Ok
            }
            None => Kind::Info,
        };
        vec![
            entry("c1", Kind::Invoke, "send", v),
            entry("c1", kind, "send", done),
        ]
    }

    fn read(node: &str, chat: u64, log: &[Line]) -> Entry {
        let mut e = entry(
            "final",
            Kind::Ok,
            "read",
            json!({"chat": chat, "messages": log}),
        );
        e.node = Some(node.into());
        e
    }

    fn line(id: u64, user: u64, rid: u64) -> Line {
        Line(id, user, send_text(user, rid), false)
    }

    fn kinds(h: &[Entry]) -> Vec<String> {
        check(h).into_iter().map(|a| a.kind).collect()
    }

    #[test]
    fn a_clean_history_has_no_anomaly() {
        let mut h = send(7, 1, 9, Some(1));
        h.extend(send(8, 2, 9, None)); // unknown, and it did happen
        h.extend(send(8, 3, 9, None)); // unknown, and it did not
        let log = vec![line(1, 7, 1), line(2, 8, 2)];
        h.push(read("a", 9, &log));
        h.push(read("b", 9, &log));
        h.push(entry(
            "d1",
            Kind::Ok,
            "view",
            json!({"chats": {"9": log}, "seen": [[9, 2, 8, "u8-r2"]]}),
        ));
        assert_eq!(kinds(&h), Vec::<String>::new());
    }

    #[test]
    fn a_lost_acknowledged_send_is_g1() {
        let mut h = send(7, 1, 9, Some(1));
        h.extend(send(7, 2, 9, Some(2)));
        h.push(read("a", 9, &[line(1, 7, 1)]));
        assert_eq!(kinds(&h), vec!["G1-lost"]);
    }

    #[test]
    fn a_tombstone_needs_a_delete() {
        let mut h = send(7, 1, 9, Some(1));
        h.push(read("a", 9, &[Line(1, 7, String::new(), true)]));
        assert_eq!(kinds(&h), vec!["G1-lost"]);
        h.push(entry(
            "c1",
            Kind::Invoke,
            "delete",
            json!({"chat": 9, "id": 1}),
        ));
        assert_eq!(kinds(&h), Vec::<String>::new());
    }

    #[test]
    fn divergent_reads_gaps_and_wrong_ids_are_g2() {
        let mut h = send(7, 1, 9, Some(2));
        h.extend(send(7, 2, 9, Some(1)));
        h.push(read("a", 9, &[line(1, 7, 1), line(2, 7, 2)]));
        h.push(read("b", 9, &[line(1, 7, 1)]));
        h.push(read("a", 10, &[line(2, 7, 5)]));
        h.extend(send(7, 5, 10, None));
        let k = kinds(&h);
        assert!(k.contains(&"G2-divergent".to_string()), "{k:?}");
        assert!(k.contains(&"G2-gap".to_string()), "{k:?}");
        assert_eq!(k.iter().filter(|k| *k == "G2-wrong-id").count(), 2, "{k:?}");
    }

    #[test]
    fn duplicates_are_g3() {
        let mut h = send(7, 1, 9, Some(1));
        h.extend(send(7, 1, 9, Some(2)));
        h.push(read("a", 9, &[line(1, 7, 1), line(2, 7, 1)]));
        let k = kinds(&h);
        assert!(
            k.contains(&"G3-duplicate".to_string()) && k.contains(&"G3-two-ids".to_string()),
            "{k:?}"
        );
    }

    #[test]
    fn a_device_view_that_differs_or_did_not_sync_is_g4() {
        let mut h = send(7, 1, 9, Some(1));
        let log = vec![line(1, 7, 1)];
        h.push(read("a", 9, &log));
        h.push(entry("d1", Kind::Ok, "view", json!({"chats": {"9": []}})));
        let mut failed = entry("d2", Kind::Info, "view", json!({}));
        failed.error = Some("UNAVAILABLE".into());
        h.push(failed);
        assert_eq!(kinds(&h), vec!["G4-view", "G4-unsynced"]);
    }

    #[test]
    fn a_message_nobody_sent_is_a_phantom() {
        let h = vec![read("a", 9, &[line(1, 7, 1)])];
        assert_eq!(kinds(&h), vec!["phantom"]);
    }

    #[test]
    fn success_after_an_acknowledged_revocation_is_g6() {
        let mut revoke = entry("r", Kind::Ok, "revoke", json!({"session": 5}));
        revoke.time_ms = 100.0;
        let mut before = entry("r", Kind::Ok, "probe", json!({"session": 5}));
        before.invoked_ms = Some(99.0); // raced the revocation: allowed
        let mut after = entry("r", Kind::Fail, "probe", json!({"session": 5}));
        after.invoked_ms = Some(150.0);
        let h = vec![revoke.clone(), before, after.clone()];
        assert_eq!(kinds(&h), Vec::<String>::new());
        after.kind = Kind::Ok;
        assert_eq!(kinds(&[revoke, after]), vec!["G6-revoked-session"]);
    }

    #[test]
    fn a_file_that_does_not_come_back_whole_is_caught() {
        let entry = |process: &str, f: &str, kind: Kind, value: Value, error: Option<&str>| Entry {
            time_ms: 0.0,
            process: process.into(),
            kind,
            f: f.into(),
            node: None,
            value,
            error: error.map(String::from),
            invoked_ms: None,
        };
        let log = json!({"chat": 1, "messages": [[1, 5, "u5-r1", false], [2, 5, "u5-r2", false], [3, 5, "u5-r3", true]]});
        let mut h = vec![
            entry("final", "read", Kind::Ok, log, None),
            entry(
                "c1",
                "upload",
                Kind::Ok,
                json!({"file": 10, "sha256": "aa"}),
                None,
            ),
            entry(
                "c1",
                "upload",
                Kind::Ok,
                json!({"file": 11, "sha256": "bb"}),
                None,
            ),
            entry(
                "c1",
                "upload",
                Kind::Ok,
                json!({"file": 12, "sha256": "cc"}),
                None,
            ),
        ];
        for (id, file) in [(1, 10), (2, 11), (3, 12)] {
            let text = format!("u5-r{id}");
            h.push(entry(
                "c1",
                "send",
                Kind::Invoke,
                json!({"chat": 1, "user": 5, "text": text, "file": file}),
                None,
            ));
            h.push(entry(
                "c1",
                "send",
                Kind::Ok,
                json!({"chat": 1, "user": 5, "text": text, "file": file, "id": id}),
                None,
            ));
        }
        h.push(entry(
            "c1",
            "delete",
            Kind::Invoke,
            json!({"chat": 1, "id": 3}),
            None,
        ));
        h.push(entry(
            "final",
            "download",
            Kind::Ok,
            json!({"chat": 1, "id": 1, "file": 10, "got_sha256": "aa"}),
            None,
        ));
        assert_eq!(
            kinds(&h),
            vec!["G1-file-lost"],
            "file 11 never came back; 12's message was deleted"
        );
        h.push(entry(
            "final",
            "download",
            Kind::Ok,
            json!({"chat": 1, "id": 2, "file": 11, "got_sha256": "b0"}),
            None,
        ));
        assert_eq!(kinds(&h), vec!["G1-file-corrupt"]);
        h.pop();
        h.push(entry(
            "final",
            "download",
            Kind::Ok,
            json!({"chat": 1, "id": 2, "file": 11, "got_sha256": "bb"}),
            None,
        ));
        assert_eq!(kinds(&h), Vec::<String>::new());
    }
}
