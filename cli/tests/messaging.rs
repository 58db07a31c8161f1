//! Messaging, end to end: real nodes, devices on different nodes, through the SDK.

mod common;

use courier_client::Code;
use std::time::{Duration, Instant};

use common::*;
use courier_client::sync::{Followed, SyncState};
use courier_client::{Client, ClientConfig, Event, pb};
use tokio::sync::mpsc;

const EXTRA: &str = "development = true\n[raft]\nheartbeat_ms = 100\nelection_min_ms = 400\nelection_max_ms = 800\n[placement]\ntick_ms = 300\n[auth]\ntest_numbers = true\nlogins_per_address_per_minute = 0\nlogins_per_phone_per_minute = 0\n[limits]\nposts_per_chat_per_minute = 0\nchanges_per_chat_per_minute = 0\ninvites_per_chat_per_minute = 0\ntyping_per_chat_per_minute = 0\nnew_private_chats_per_hour = 0\n";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Waits (bounded) for a chat event matching `f`.
async fn must_see(events: &mut mpsc::Receiver<Event>, what: &str, f: impl Fn(&pb::ChatEvent) -> bool) -> pb::ChatEvent {
    events_until(events, what, f).await.pop().expect("the match ends the list")
}

/// The chat events that arrive up to the first matching `f` (bounded), the match included.
async fn events_until(events: &mut mpsc::Receiver<Event>, what: &str, f: impl Fn(&pb::ChatEvent) -> bool) -> Vec<pb::ChatEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Update(pb::Update { kind: Some(pb::update::Kind::ChatEvent(e)) }))) => {
                let done = f(&e);
                seen.push(e);
                if done {
                    return seen;
                }
            }
            Ok(Some(_)) => continue,
            _ => panic!("no {what} within 10 s"),
        }
    }
}

/// The ids of the new messages of `chat` among `events`, in arrival order.
fn new_ids(events: &[pb::ChatEvent], chat: u64) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::chat_event::Kind::NewMessage(m)) if e.chat_id == chat => Some(m.id),
            _ => None,
        })
        .collect()
}

/// Keeps a device's view from its live events until 3 s pass without one
/// (and syncs when a gap is not filled in time); also says how many syncs
/// gaps took.
fn follow(client: std::sync::Arc<Client>, mut events: mpsc::Receiver<Event>) -> tokio::task::JoinHandle<(SyncState, usize)> {
    tokio::spawn(async move {
        let mut state = SyncState::default();
        state.sync(&client).await.unwrap();
        let mut syncs = 0;
        loop {
            match state.follow(&client, &mut events, Duration::from_secs(3)).await.unwrap() {
                Followed::ChatEvent { synced: true, .. } | Followed::Synced => syncs += 1,
                Followed::Quiet | Followed::Closed => break,
                Followed::ChatEvent { .. } | Followed::Other(_) => {}
            }
        }
        (state, syncs)
    })
}

#[test]
fn live_delivery_read_receipts_and_sync_on_another_node() {
    let c = Cluster::start_settled(60, 3, EXTRA);
    let rt = rt();
    rt.block_on(async {
        let (a1, mut a1_ev, ann) = device(&c, 1, "+9996610001", "Ann").await;
        let (_a2, mut a2_ev, _) = device(&c, 3, "+9996610001", "Ann").await;
        let (b1, mut b1_ev, bob) = device(&c, 2, "+9996620002", "Bob").await;
        let (b2, mut b2_ev, _) = device(&c, 3, "+9996620002", "Bob").await;

        // Ann opens the private chat with Bob (found by phone); Bob finds the same chat.
        let found = a1.resolve_phone("+9996620002").await.unwrap();
        assert_eq!(found.id, bob.id);
        let chat = a1.private_chat(bob.id).await.unwrap();
        assert_eq!(b1.private_chat(ann.id).await.unwrap().id, chat.id, "one private chat for the pair");
        tokio::time::sleep(Duration::from_millis(500)).await; // subscriptions from the Joined event

        // A message from Ann's first device reaches Bob's two devices and Ann's other one, same id.
        let sent = a1.send_message(chat.id, 42, "hello Bob", 0).await.unwrap();
        assert_eq!(sent.id, 1);
        for (who, ev) in [("Bob on n2", &mut b1_ev), ("Bob on n3", &mut b2_ev), ("Ann on n3", &mut a2_ev)] {
            let e = must_see(ev, &format!("the message on {who}"), |e| matches!(&e.kind, Some(pb::chat_event::Kind::NewMessage(_)))).await;
            let Some(pb::chat_event::Kind::NewMessage(m)) = e.kind else { unreachable!() };
            assert_eq!((m.chat_id, m.id, m.text.as_str(), m.from), (chat.id, sent.id, "hello Bob", ann.id), "{who}");
        }
        // Bob reads it; Ann's devices see it read. The sending device had its
        // message once, from the reply: the node did not push it back as well
        // (the read receipt comes after the push would have, on the same stream).
        b1.read_history(chat.id, sent.id).await.unwrap();
        let is_read = |e: &pb::ChatEvent| matches!(&e.kind, Some(pb::chat_event::Kind::Read(_)));
        let on_a1 = events_until(&mut a1_ev, "the read receipt", is_read).await;
        assert_eq!(new_ids(&on_a1, chat.id), vec![sent.id], "the sending device has its message exactly once");
        for e in [on_a1.last().unwrap().clone(), must_see(&mut a2_ev, "the read receipt", is_read).await] {
            let Some(pb::chat_event::Kind::Read(r)) = e.kind else { unreachable!() };
            assert_eq!((r.user, r.max_id), (bob.id, sent.id));
        }
        // Typing reaches Bob (not Ann's own devices); a reaction is an event like any other.
        a1.set_typing(chat.id).await.unwrap();
        let typing = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(Event::Update(pb::Update { kind: Some(pb::update::Kind::Typing(t)) })) = b1_ev.recv().await {
                    return t;
                }
            }
        })
        .await
        .expect("Bob sees Ann typing");
        assert_eq!((typing.chat_id, typing.user), (chat.id, ann.id));
        assert!(typing.until_ms > 0);
        b1.send_reaction(chat.id, sent.id, "👍").await.unwrap();
        let e = must_see(&mut a2_ev, "the reaction", |e| matches!(&e.kind, Some(pb::chat_event::Kind::Reactions(_)))).await;
        let Some(pb::chat_event::Kind::Reactions(m)) = e.kind else { unreachable!() };
        assert_eq!((m.reactions[0].emoji.as_str(), m.reactions[0].users.clone()), ("👍", vec![bob.id]));
        assert!(tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                if let Some(Event::Update(pb::Update { kind: Some(pb::update::Kind::Typing(_)) })) = a2_ev.recv().await {
                    return;
                }
            }
        })
        .await
        .is_err(), "Ann's other device is not told she is typing");
        // Forwarding into a group the message came from elsewhere keeps its origin.
        let team = a1.create_group("Team", vec![bob.id]).await.unwrap();
        let fwd = a1.forward_messages(team.id, chat.id, vec![sent.id], 7).await.unwrap();
        assert_eq!((fwd.id, fwd.text.as_str()), (1, "hello Bob"));
        let origin = fwd.fwd.unwrap();
        assert_eq!((origin.from, origin.chat_id, origin.id), (ann.id, chat.id, sent.id));
        assert_eq!(a1.search(team.id, "HELLO", 10).await.unwrap().len(), 1);

        // A second program on Ann's session (a script's `courier send` while
        // her chat is open) is another client: Ann's first device still gets
        // its sends pushed. An older client asks for its own sends pushed back.
        let ca = std::fs::read(c.certs.join("ca.pem")).unwrap();
        let (a3, mut a3_ev) = Client::connect(ClientConfig { token: a1.token(), ..ClientConfig::new(vec![c.client_addr(2)], ca) }).await.unwrap();
        let (a4, mut a4_ev, _) = device_with(&c, 3, "+9996610001", "Ann", |cfg| cfg.own_sends_in_reply = false).await;
        tokio::time::sleep(Duration::from_millis(500)).await; // their subscriptions, made at log-in
        let m3 = a3.send_message(team.id, 8, "from a second program", 0).await.unwrap();
        let m4 = a4.send_message(team.id, 9, "from an older client", 0).await.unwrap();
        b1.read_history(team.id, m4.id).await.unwrap();
        let read_m4 = |e: &pb::ChatEvent| e.chat_id == team.id && matches!(&e.kind, Some(pb::chat_event::Kind::Read(r)) if r.max_id == m4.id);
        for (who, ev) in [("Ann's first device", &mut a1_ev), ("the second program", &mut a3_ev), ("the older client", &mut a4_ev)] {
            let ids: Vec<u64> = new_ids(&events_until(ev, who, read_m4).await, team.id).into_iter().filter(|id| *id >= m3.id).collect();
            assert_eq!(ids, vec![m3.id, m4.id], "{who} has each message exactly once");
        }

        // Bob is online (connected to nodes 2 and 3); Ann asks through node 1.
        let seen = a1.users(vec![bob.id, 999_999 << 16 | 1]).await.unwrap();
        assert_eq!(seen.len(), 1, "unknown ids are left out");
        assert!(seen[0].online, "Bob has live connections");

        let d = a1.dialogs().await.unwrap();
        assert_eq!(d.len(), 2);
        let d: Vec<_> = d.into_iter().filter(|d| d.chat.as_ref().unwrap().id == chat.id).collect();
        assert_eq!(d[0].last.as_ref().unwrap().text, "hello Bob");
        assert!(b2.dialogs().await.unwrap().iter().all(|d| d.chat.as_ref().unwrap().id != chat.id || d.unread == 0), "read on one device is read on all");

        // Bob's second device goes away; Bob's first stays online and follows live.
        let mut offline = SyncState::default();
        offline.sync(&b2).await.unwrap();
        drop(b2);
        drop(b2_ev);
        let b1 = std::sync::Arc::new(b1);
        let online = follow(b1.clone(), b1_ev);
        // 1,000 messages, 20 edits and 10 deletions, from both sides.
        let t = Instant::now();
        let a = std::sync::Arc::new(a1);
        let mut sends = tokio::task::JoinSet::new();
        for w in 0..8u64 {
            let a = a.clone();
            sends.spawn(async move {
                for i in 0..125u64 {
                    a.send_message(chat.id, 1000 + w * 1000 + i, &format!("m{w}-{i}"), 0).await.unwrap();
                }
            });
        }
        while let Some(r) = sends.join_next().await {
            r.unwrap();
        }
        for id in (2..=40).step_by(2) {
            a.edit_message(chat.id, id, &format!("edited {id}")).await.unwrap();
        }
        a.delete_messages(chat.id, (100..110).collect()).await.unwrap();
        // Bob deletes five for himself (from his online device); one of them Ann then edits.
        b1.delete_for_me(chat.id, (200..205).collect()).await.unwrap();
        a.edit_message(chat.id, 202, "edited after Bob hid it").await.unwrap();
        eprintln!("1,000 sends, 21 edits, 10 deletions, 5 deletions for Bob in {:?}", t.elapsed());

        // The offline device comes back through node 1 and syncs.
        let (b3, _b3_ev, _) = device(&c, 1, "+9996620002", "Bob").await;
        offline.sync(&b3).await.unwrap();
        let (online, gap_syncs) = online.await.unwrap();
        eprintln!("the online device synced {gap_syncs} times for gaps");
        let mine = &offline.chats[&chat.id];
        let theirs = &online.chats[&chat.id];
        assert_eq!(mine.pts, theirs.pts);
        assert_eq!(mine.lines(), theirs.lines(), "the synced view equals the always-online view");
        assert_eq!(mine.messages.len(), 996);
        assert_eq!(mine.messages.keys().copied().collect::<Vec<_>>(), (1..=1001).filter(|id| !(200..205).contains(id)).collect::<Vec<_>>(), "ids 1..=1001, no gaps but what Bob hid");
        assert_eq!(mine.messages.values().filter(|m| m.deleted).count(), 10);
        assert_eq!(mine.messages.values().filter(|m| m.text.starts_with("edited")).count(), 20);
        assert_eq!(a.history(chat.id, 203, 0, 1).await.unwrap()[0].text, "edited after Bob hid it", "Ann still has what Bob hid");
        // And both equal the server's history.
        let mut history = Vec::new();
        let mut before = 0;
        loop {
            let page = b3.history(chat.id, before, 0, 100).await.unwrap();
            let Some(last) = page.last() else { break };
            before = last.id;
            history.extend(page);
        }
        history.reverse();
        let server: Vec<_> = history.iter().map(|m| (m.id, m.from, m.text.clone(), m.deleted)).collect();
        assert_eq!(mine.lines(), server);
    });
}

#[test]
fn one_order_for_concurrent_senders_retries_and_the_brief_s_errors() {
    let mut c = Cluster::start_settled(61, 3, EXTRA);
    let rt = rt();
    let (chat, users) = rt.block_on(async {
        let (a, _, ann) = device(&c, 1, "+9996630001", "Ann").await;
        let (b, _, bob) = device(&c, 2, "+9996630002", "Bob").await;
        let (cc, _, cid) = device(&c, 3, "+9996630003", "Cid").await;
        let (eve, _, _) = device(&c, 1, "+9996630004", "Eve").await;
        let chat = a.create_group("Team", vec![bob.id]).await.unwrap();
        a.invite(chat.id, vec![cid.id]).await.unwrap();
        assert_eq!(chat.members, 2);

        // Three senders on three nodes, concurrently.
        let clients = [std::sync::Arc::new(a), std::sync::Arc::new(b), std::sync::Arc::new(cc)];
        let mut set = tokio::task::JoinSet::new();
        for (k, cl) in clients.iter().enumerate() {
            let cl = cl.clone();
            set.spawn(async move {
                for i in 0..40u64 {
                    cl.send_message(chat.id, i + 1, &format!("{k}:{i}"), 0).await.unwrap();
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        // Every member sees one order, ids 1..=120.
        let mut views = Vec::new();
        for cl in &clients {
            let mut s = SyncState::default();
            s.sync(cl).await.unwrap();
            views.push(s.chats[&chat.id].lines());
        }
        assert_eq!(views[0].iter().map(|l| l.0).collect::<Vec<_>>(), (1..=120).collect::<Vec<_>>());
        assert!(views.iter().all(|v| *v == views[0]), "every member sees the same order");
        // Each sender's own messages keep their order.
        for k in 0..3 {
            let mine: Vec<u64> = views[0].iter().filter(|l| l.2.starts_with(&format!("{k}:"))).map(|l| l.2[2..].parse().unwrap()).collect();
            assert_eq!(mine, (0..40).collect::<Vec<_>>());
        }

        // The brief's errors.
        let [a, _, _] = &clients;
        assert_eq!(eve.send_message(chat.id, 1, "let me in", 0).await.unwrap_err().code(), Code::NotAMember);
        assert_eq!(eve.history(chat.id, 0, 0, 10).await.unwrap_err().code(), Code::NotAMember);
        let forged = chat.id ^ (12345 << 16);
        assert_eq!(a.send_message(forged, 1, "x", 0).await.unwrap_err().code(), Code::NotAMember, "a forged chat id looks like any chat you are not in");
        assert_eq!(a.history(u64::MAX, 0, 0, 10).await.unwrap_err().code(), Code::NotAMember);
        assert_eq!(a.send_message(chat.id, 999, &"x".repeat(4097), 0).await.unwrap_err().code(), Code::MessageTooLong);
        assert_eq!(a.edit_message(chat.id, 99_999, "x").await.unwrap_err().code(), Code::MessageNotFound);
        assert_eq!(eve.invite(chat.id, vec![1]).await.unwrap_err().code(), Code::NotAMember);
        assert_eq!(clients[1].set_title(chat.id, "mine now").await.unwrap_err().code(), Code::AdminRequired);
        let anns = views[0].iter().find(|l| l.1 == ann.id).unwrap().0;
        assert_eq!(clients[1].delete_messages(chat.id, vec![anns]).await.unwrap_err().code(), Code::AdminRequired, "a member deletes only their own");
        assert_eq!(clients[1].edit_message(chat.id, anns, "mine").await.unwrap_err().code(), Code::MessageAuthorRequired);
        (chat, (ann, bob))
    });

    // A send whose node dies before the answer, retried with the same random_id on another node: one message.
    let (ann, _) = users;
    let before = rt.block_on(async {
        // One connection only, so the send below goes to node 3 and no further.
        let (a, _, _) = device_with(&c, 3, "+9996630001", "Ann", |cfg| cfg.route_to_leaders = false).await;
        let msg = a.send_message(chat.id, 777, "exactly once", 0).await.unwrap();
        (a, msg)
    });
    let (a_on_3, first) = before;
    // Now the same send again, racing the death of the node it went to.
    let racer = rt.spawn(async move {
        let r = a_on_3.send_message(chat.id, 778, "racing", 0).await;
        (a_on_3, r)
    });
    std::thread::sleep(Duration::from_millis(2));
    c.kill9(3);
    let (_gone, raced) = rt.block_on(racer).unwrap();
    rt.block_on(async {
        let (a, _, _) = device(&c, 1, "+9996630001", "Ann").await;
        let retried = a.send_message(chat.id, 778, "racing", 0).await.unwrap();
        if let Ok(m) = &raced {
            assert_eq!(m.id, retried.id, "the retry answers the first send");
        }
        assert_eq!(a.send_message(chat.id, 777, "exactly once", 0).await.unwrap().id, first.id);
        let mut s = SyncState::default();
        s.sync(&a).await.unwrap();
        let lines = s.chats[&chat.id].lines();
        assert_eq!(lines.iter().filter(|l| l.2 == "racing").count(), 1, "exactly one message for random_id 778");
        assert_eq!(lines.iter().filter(|l| l.2 == "exactly once").count(), 1);
        assert_eq!(lines.iter().map(|l| l.0).collect::<Vec<_>>(), (1..=lines.len() as u64).collect::<Vec<_>>(), "no gaps");
        assert!(lines.iter().all(|l| l.1 == ann.id || l.0 <= 120));
    });
}

#[test]
fn cli_send_history_dialogs_and_groups() {
    let c = Cluster::start_settled(62, 3, EXTRA);
    let home = tempfile::tempdir().unwrap();
    let courier = |profile: &str, args: &[&str]| c.user_cli(home.path(), profile, args);
    let ok = |r: (bool, String, String)| {
        assert!(r.0, "courier failed: {}{}", r.1, r.2);
        r.1
    };
    ok(courier("ann", &["login", "--phone", "+9996640001", "--code", "44444", "--name", "Ann"]));
    ok(courier("bob", &["login", "--phone", "+9996640002", "--code", "44444", "--name", "Bob"]));
    ok(courier("cid", &["login", "--phone", "+9996640003", "--code", "44444", "--name", "Cid"]));
    // A private chat by phone number, from both sides.
    assert!(ok(courier("ann", &["send", "+9996640002", "hi Bob"])).contains("sent message 1"));
    assert!(ok(courier("bob", &["send", "+9996640001", "hi Ann"])).contains("sent message 2"));
    let h: serde_json::Value = serde_json::from_str(&ok(courier("ann", &["history", "+9996640002", "--json"]))).unwrap();
    let texts: Vec<&str> = h["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["hi Bob", "hi Ann"], "oldest first");
    // A group: create with a member, post, the member sees it unread, the outsider cannot read.
    let group = ok(courier("ann", &["group", "create", "Team", "--member", "+9996640002"])).trim().to_string();
    ok(courier("ann", &["send", &group, "hello team"]));
    let d: serde_json::Value = serde_json::from_str(&ok(courier("bob", &["dialogs", "--json"]))).unwrap();
    let first = &d["dialogs"][0];
    assert_eq!(first["chat"]["id"].as_u64().unwrap().to_string(), group, "the newest chat first");
    assert_eq!((first["chat"]["kind"].as_str(), first["unread"].as_u64()), (Some("group"), Some(1)));
    assert_eq!(first["last"]["text"], "hello team");
    let (okay, _, err) = courier("cid", &["history", &group]);
    assert!(!okay && err.contains("NOT_A_MEMBER"), "{err}");
    ok(courier("bob", &["group", "invite", &group, "+9996640003"]));
    assert!(ok(courier("cid", &["history", &group])).contains("hello team"));
    // The member list, with roles and names, for any member.
    let members = |profile: &str| -> Vec<(String, String)> {
        let m: serde_json::Value = serde_json::from_str(&ok(courier(profile, &["group", "members", &group, "--json"]))).unwrap();
        m["members"].as_array().unwrap().iter().map(|m| (m["name"].as_str().unwrap().to_string(), m["role"].as_str().unwrap().to_string())).collect()
    };
    let mut list = members("cid");
    list.sort();
    assert_eq!(list, [("Ann".to_string(), "creator".to_string()), ("Bob".into(), "member".into()), ("Cid".into(), "member".into())]);
    assert!(ok(courier("ann", &["group", "members", &group])).contains("creator"));
    ok(courier("cid", &["group", "leave", &group]));
    assert_eq!(members("ann").len(), 2, "who left is no longer listed");
    let (okay, _, err) = courier("cid", &["group", "members", &group]);
    assert!(!okay && err.contains("NOT_A_MEMBER"), "{err}");
    let (okay, _, err) = courier("cid", &["send", &group, "still here?"]);
    assert!(!okay && err.contains("NOT_A_MEMBER"), "{err}");
    let (okay, _, err) = courier("ann", &["send", &group, &"x".repeat(4097)]);
    assert!(!okay && err.contains("MESSAGE_TOO_LONG"), "{err}");
}

/// A tmux server on its own socket, killed when dropped.
struct Tmux(String);

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("tmux").arg("-L").arg(&self.0).args(args).output().expect("tmux (scripts/setup installs it)")
    }
    fn keys(&self, text: &str) {
        assert!(self.cmd(&["send-keys", "-t", "t", "-l", text]).status.success());
        assert!(self.cmd(&["send-keys", "-t", "t", "Enter"]).status.success());
    }
    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "t", "-S", "-200"]).stdout).to_string()
    }
    fn must_show(&self, what: &str) -> String {
        must_wait(Duration::from_secs(20), &format!("{what:?} on the terminal"), || {
            let s = self.screen();
            s.contains(what).then_some(s)
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- terminal ----\n{}", self.screen());
        }
        let _ = self.cmd(&["kill-server"]);
    }
}

#[test]
fn terminal_client_in_tmux_logs_in_opens_a_chat_sends_and_sees_the_reply() {
    let c = Cluster::start_settled(63, 3, EXTRA);
    let home = tempfile::tempdir().unwrap();
    let ca = c.certs.join("ca.pem");
    let courier = |profile: &str, args: &[&str]| {
        let (ok, out, err) = c.user_cli(home.path(), profile, args);
        assert!(ok, "{err}");
        out
    };
    courier("ann", &["login", "--phone", "+9996650001", "--code", "55555", "--name", "Ann"]);

    let t = Tmux(format!("courier-test-{}", std::process::id()));
    let env = |k: &str, v: &str| format!("{k}={v}");
    let started = t.cmd(&[
        "new-session", "-d", "-s", "t", "-x", "160", "-y", "50",
        "-e", &env("XDG_CONFIG_HOME", home.path().to_str().unwrap()),
        "-e", &env("COURIER_NODES", &c.client_addr(2)),
        "-e", &env("COURIER_CA", ca.to_str().unwrap()),
        "-e", "COURIER_PROFILE=bob",
        "-e", "PS1=$ ",
        "sh",
    ]);
    assert!(started.status.success(), "tmux: {}", String::from_utf8_lossy(&started.stderr));
    let bin = bin();
    // Log in inside the terminal, then start the chat client.
    t.keys(&format!("{} login --phone +9996650002 --code 55555 --name Bob", bin.display()));
    t.must_show("Logged in as Bob");
    t.keys(&format!("{} chat", bin.display()));
    t.must_show("/help for commands");
    t.keys("/open +9996650001");
    t.must_show("── Ann");
    t.must_show("(type to send");
    t.keys("hi Ann, from the terminal");
    t.must_show("you: hi Ann, from the terminal");
    // Ann (another node) sees it and answers; the reply shows up live.
    let h = courier("ann", &["history", "+9996650002"]);
    assert!(h.contains("hi Ann, from the terminal"), "{h}");
    courier("ann", &["send", "+9996650002", "hello Bob, reply from node 1"]);
    t.must_show("Ann: hello Bob, reply from node 1");
    // Bob's client marked it read: Ann's dialog shows the chat read by Bob.
    must_wait(Duration::from_secs(10), "Bob's read mark", || {
        let d: serde_json::Value = serde_json::from_str(&courier("bob", &["dialogs", "--json"])).ok()?;
        (d["dialogs"][0]["unread"] == 0).then_some(())
    });
    // Who is in the chat, from the terminal.
    t.keys("/members");
    let screen = t.must_show("2 members: ");
    assert!(screen.contains("Ann") && screen.contains("Bob"), "{screen}");
    eprintln!("---- the terminal ----\n{screen}");
    t.keys("/quit");
    t.must_show("bye");
}

#[test]
fn edits_end_after_48_hours_on_every_node() {
    let mut c = Cluster::new(64);
    let offset = c.dir.path().join("clock-offset");
    let extra = format!("clock_offset_file = \"{}\"\n{EXTRA}", offset.display());
    c.add_node(1, &extra);
    must_wait(Duration::from_secs(30), "cluster init", || c.run_on(&[1], &["cluster", "init"]).status.success().then_some(()));
    for i in 2..=3 {
        c.add_node(i, &extra);
    }
    c.must_settle(3, Duration::from_secs(120));
    let rt = rt();
    rt.block_on(async {
        let (a, _, _) = device(&c, 1, "+9996670001", "Ann").await;
        let (b, _, bob) = device(&c, 2, "+9996670002", "Bob").await;
        let chat = a.private_chat(bob.id).await.unwrap();
        let m = a.send_message(chat.id, 1, "tpyo", 0).await.unwrap();
        std::fs::write(&offset, (47 * 3600).to_string()).unwrap();
        assert_eq!(a.edit_message(chat.id, m.id, "typo, 47 h later").await.unwrap().text, "typo, 47 h later");
        assert_eq!(b.edit_message(chat.id, m.id, "not mine").await.unwrap_err().code(), Code::MessageAuthorRequired);
        std::fs::write(&offset, (48 * 3600 + 60).to_string()).unwrap();
        let e = a.edit_message(chat.id, m.id, "too late").await.unwrap_err();
        assert_eq!(e.code(), Code::EditTimeExpired, "{e}");
        // Deleting your own message has no time limit.
        a.delete_messages(chat.id, vec![m.id]).await.unwrap();
        assert!(b.history(chat.id, 0, 0, 1).await.unwrap()[0].deleted);
    });
}

#[test]
fn last_seen_when_every_device_left() {
    let c = Cluster::start_settled(65, 3, EXTRA);
    let rt = rt();
    rt.block_on(async {
        let (a, _, _) = device(&c, 1, "+9996680001", "Ann").await;
        let (b, _, bob) = device(&c, 3, "+9996680002", "Bob").await;
        // Presence is for people who share a chat (docs/security.md).
        a.private_chat(bob.id).await.unwrap();
        assert!(a.users(vec![bob.id]).await.unwrap()[0].online);
        let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        b.close().await;
        drop(b);
        let deadline = Instant::now() + Duration::from_secs(10);
        let u = loop {
            let u = a.users(vec![bob.id]).await.unwrap().pop().unwrap();
            if !u.online || Instant::now() > deadline {
                break u;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(!u.online, "Bob went offline");
        assert!(u.last_seen_ms >= before, "last seen when he left: {} vs {before}", u.last_seen_ms);
    });
}

/// A chat's writes go from the device straight to its group's leader (no
/// forwarding by the device's own node), both for a group the device's node
/// hosts and for one it does not (it learned the leader when it forwarded),
/// and back through the own node when that leader's node dies.
#[test]
fn a_chat_s_writes_go_to_its_leader_and_fall_back_to_the_own_node_when_it_dies() {
    let mut c = Cluster::start_settled(66, 4, EXTRA);
    let rt = rt();
    let (a, _events, _) = rt.block_on(device(&c, 1, "+9996660001", "Ann"));
    // Group chats whose data groups other nodes lead: one with a replica on
    // node 1, one without.
    let (mut hosted, mut elsewhere) = (None, None);
    must_wait(Duration::from_secs(60), "chats in groups led elsewhere, hosted on node 1 and not", || {
        let chat = rt.block_on(a.create_group("Routed", vec![])).unwrap();
        let s = c.status()?;
        let g = chat.id & 0xffff;
        let leader = leaders(&s).get(&g).copied().flatten()?;
        if leader != 1 {
            let slot = if voters(&s)[&g].contains(&1) { &mut hosted } else { &mut elsewhere };
            slot.get_or_insert((chat.id, leader as u32));
        }
        (hosted.is_some() && elsewhere.is_some()).then_some(())
    });
    let forwarded = |c: &Cluster| c.metric(1, "courier_forwarded_requests_total").expect("node 1's metrics");
    let mut next = 0u64;
    let mut send = |chat: u64| {
        next += 1;
        rt.block_on(a.send_message(chat, next, &format!("m{next}"), 0)).unwrap();
    };
    for (chat, leader) in [hosted.unwrap(), elsewhere.unwrap()] {
        // The first sends go through node 1 while the route and the extra
        // connection come up (routes are fetched every 5 s).
        must_wait(Duration::from_secs(30), "a send node 1 does not forward", || {
            let before = forwarded(&c);
            send(chat);
            (forwarded(&c) == before).then_some(())
        });
        let served = |c: &Cluster| c.metric(leader, "courier_client_requests_total").expect("the leader's metrics");
        let (fwd0, served0) = (forwarded(&c), served(&c));
        for _ in 0..50 {
            send(chat);
        }
        let (fwd1, served1) = (forwarded(&c), served(&c));
        assert!(fwd1 - fwd0 < 10.0, "node 1 forwarded {} of 50 sends", fwd1 - fwd0);
        assert!(served1 - served0 >= 50.0, "the leader served {} requests", served1 - served0);
    }

    // The leader's node dies: the same send, retried, goes through node 1
    // and lands once; the chat stays one gap-free log.
    let (chat, leader) = hosted.unwrap();
    c.kill9(leader);
    let last = must_wait(Duration::from_secs(30), "a send after the leader died", || rt.block_on(a.send_message(chat, 1 << 40, "after", 0)).ok());
    let history = rt.block_on(a.history(chat, 0, 0, 100)).unwrap();
    let mut ids: Vec<u64> = history.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=last.id).collect::<Vec<_>>(), "gap-free, and the last send is the last message");
    assert_eq!(history.iter().filter(|m| m.text == "after").count(), 1);
}
