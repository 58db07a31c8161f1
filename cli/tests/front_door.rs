//! The front door, end to end: real `courier` nodes, real QUIC and TLS 1.3,
//! driven through the client SDK, the CLI, and raw QUIC for hostile input.

mod common;

use courier_client::Code;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use courier_client::{Client, ClientConfig, Event, pb};
use tokio::sync::mpsc;

const FAST: &str = "[raft]\nheartbeat_ms = 100\nelection_min_ms = 400\nelection_max_ms = 800\n[placement]\ntick_ms = 300\n";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}


fn config(c: &Cluster, nodes: &[u32], device: &str) -> ClientConfig {
    let ca = std::fs::read(c.certs.join("ca.pem")).unwrap();
    let mut cfg = ClientConfig::new(nodes.iter().map(|i| c.client_addr(*i)).collect(), ca);
    cfg.device = device.into();
    cfg.client_version = "front-door-test/1".into();
    cfg.request_timeout = Duration::from_secs(10);
    cfg
}

async fn connect(c: &Cluster, nodes: &[u32], device: &str, token: Option<Vec<u8>>) -> courier_client::Result<(Client, mpsc::Receiver<Event>)> {
    let mut cfg = config(c, nodes, device);
    cfg.token = token;
    Client::connect(cfg).await
}

/// Logs in with a test number (`+99966XYYYY`, code `XXXXX`), signing up when new.
async fn log_in(client: &Client, phone: &str, name: &str) -> pb::Authorization {
    let code = phone[6..7].repeat(5);
    let sent = client.send_code(phone).await.expect("send_code");
    match client.sign_in(phone, &sent.phone_code_hash, &code).await {
        Ok(a) => a,
        Err(e) if e.code() == Code::SignUpRequired => client.sign_up(phone, &sent.phone_code_hash, name, "").await.expect("sign_up"),
        Err(e) => panic!("sign_in {phone}: {e}"),
    }
}

/// Waits (bounded) for the first `Disconnected` event.
async fn disconnected(rx: &mut mpsc::Receiver<Event>, within: Duration) -> Option<Option<Code>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Event::Disconnected { code, .. })) => return Some(code),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

/// The sum of every group's applied index: it moves when anything is written.
fn applied_total(c: &Cluster) -> u64 {
    let s = c.status().expect("status");
    s["groups"].as_array().unwrap().iter().map(|g| g["applied"].as_u64().unwrap_or(0)).sum()
}

#[test]
fn sessions_work_on_every_node_and_revocation_closes_them_everywhere() {
    let c = Cluster::start_settled(50, 3, &format!("development = true\n{FAST}[auth]\ntest_numbers = true\nlogins_per_address_per_minute = 0\nlogins_per_phone_per_minute = 0\n[limits]\nposts_per_chat_per_minute = 0\nchanges_per_chat_per_minute = 0\ninvites_per_chat_per_minute = 0\ntyping_per_chat_per_minute = 0\nnew_private_chats_per_hour = 0\n"));
    let rt = rt();
    rt.block_on(async {
        // Sign up through node 1.
        let (laptop, _) = connect(&c, &[1], "laptop", None).await.unwrap();
        assert!(!laptop.hello().unwrap().authorized);
        assert_eq!(laptop.get_self().await.unwrap_err().code(), Code::Unauthorized, "no session yet");
        let auth = log_in(&laptop, "+9996610001", "Ada").await;
        let user = auth.user.clone().unwrap();
        assert_eq!((user.first_name.as_str(), user.phone.as_str()), ("Ada", "+9996610001"));
        assert_eq!(auth.session_token.len(), 35, "version, group, 256 random bits");
        assert_eq!(laptop.get_self().await.unwrap().id, user.id);

        // The same session through nodes 2 and 3.
        for n in [2, 3] {
            let (other, _) = connect(&c, &[n], "laptop", Some(auth.session_token.clone())).await.unwrap();
            let hello = other.hello().unwrap();
            assert!(hello.authorized, "node {n} accepts the session");
            assert_eq!(hello.node_id, u64::from(n));
            assert_eq!(hello.session_id, auth.session_id);
            assert_eq!(other.get_self().await.unwrap().id, user.id, "node {n}");
        }

        // A second device signs in through node 2: the same account, a second session.
        let (phone, _) = connect(&c, &[2], "phone", None).await.unwrap();
        let auth2 = log_in(&phone, "+9996610001", "ignored").await;
        assert_eq!(auth2.user.as_ref().unwrap().id, user.id, "signing in again finds the account");
        assert_ne!(auth2.session_id, auth.session_id);
        let list = phone.sessions().await.unwrap();
        assert_eq!(list.len(), 2);
        let mine = list.iter().find(|s| s.current).expect("current session marked");
        assert_eq!((mine.id, mine.device.as_str(), mine.node_id), (auth2.session_id, "phone", 2));
        assert!(mine.address.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_loopback()), "client address recorded: {}", mine.address);
        let theirs = list.iter().find(|s| !s.current).unwrap();
        assert_eq!((theirs.id, theirs.device.as_str(), theirs.app_version.as_str()), (auth.session_id, "laptop", "front-door-test/1"));
        assert!(theirs.created_ms > 0 && theirs.last_active_ms >= theirs.created_ms);

        // The laptop session, live on node 3, is terminated from the phone on node 2.
        let (victim, mut victim_events) = connect(&c, &[3], "laptop", Some(auth.session_token.clone())).await.unwrap();
        assert!(victim.hello().unwrap().authorized);
        phone.terminate_session(auth.session_id).await.unwrap();
        let returned = Instant::now();
        let code = disconnected(&mut victim_events, Duration::from_secs(1)).await;
        assert_eq!(code, Some(Some(Code::SessionRevoked)), "the connection on node 3 closed within 1 s of the terminate (after {:?})", returned.elapsed());
        // The old laptop connection on node 1 is closed as well: its next request fails.
        assert!(laptop.get_self().await.is_err(), "the revoked session's connection on node 1 is gone");
        // Every node refuses the token from now on.
        for n in [1, 2, 3] {
            let e = connect(&c, &[n], "laptop", Some(auth.session_token.clone())).await.err().unwrap_or_else(|| panic!("node {n} accepted a revoked token"));
            assert_eq!(e.code(), Code::SessionRevoked, "node {n}: {e}");
        }
        let list = phone.sessions().await.unwrap();
        assert_eq!(list.iter().map(|s| s.id).collect::<Vec<_>>(), vec![auth2.session_id]);

        // Terminate all others; then log out: the phone's token dies too.
        let (tablet, _) = connect(&c, &[1], "tablet", None).await.unwrap();
        let auth3 = log_in(&tablet, "+9996610001", "ignored").await;
        let (tablet_on_3, mut tablet_events) = connect(&c, &[3], "tablet", Some(auth3.session_token.clone())).await.unwrap();
        phone.terminate_other_sessions().await.unwrap();
        assert_eq!(disconnected(&mut tablet_events, Duration::from_secs(1)).await, Some(Some(Code::SessionRevoked)));
        assert_eq!(phone.sessions().await.unwrap().len(), 1);
        drop(tablet_on_3);
        phone.log_out().await.unwrap();
        assert_eq!(phone.get_self().await.unwrap_err().code(), Code::Unauthorized, "logged out on this connection");
        let e = connect(&c, &[3], "phone", Some(auth2.session_token.clone())).await.err().expect("logged-out token refused");
        assert_eq!(e.code(), Code::SessionRevoked);
    });
}

#[test]
fn cli_login_sessions_terminate_and_logout() {
    let c = Cluster::start_settled(55, 3, &format!("development = true\n{FAST}[auth]\ntest_numbers = true\nlogins_per_address_per_minute = 0\nlogins_per_phone_per_minute = 0\n[limits]\nposts_per_chat_per_minute = 0\nchanges_per_chat_per_minute = 0\ninvites_per_chat_per_minute = 0\ntyping_per_chat_per_minute = 0\nnew_private_chats_per_hour = 0\n"));
    let home = tempfile::tempdir().unwrap();
    let nodes = (1..=3).map(|i| c.client_addr(i)).collect::<Vec<_>>().join(",");
    let ca = c.certs.join("ca.pem");
    let courier = |profile: &str, args: &[&str], with_env: bool| {
        let mut cmd = std::process::Command::new(bin());
        cmd.args(args).env("XDG_CONFIG_HOME", home.path()).env("COURIER_PROFILE", profile).env_remove("COURIER_NODES").env_remove("COURIER_CA");
        if with_env {
            cmd.env("COURIER_NODES", &nodes).env("COURIER_CA", &ca);
        }
        cmd.stdin(std::process::Stdio::null()).output().unwrap()
    };
    let ok = |out: std::process::Output| {
        assert!(out.status.success(), "courier failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    // Log in two devices; the second profile only has flags (no environment).
    let out = ok(courier("desk", &["login", "--phone", "+9996620002", "--code", "22222", "--name", "Grace Hopper", "--device", "desk"], true));
    assert!(out.contains("Logged in as Grace Hopper"), "{out}");
    let token = home.path().join("courier/desk/token");
    assert_eq!(std::fs::metadata(&token).unwrap().permissions().mode() & 0o777, 0o600, "token file is private");
    assert!(home.path().join("courier/desk/ca.pem").exists(), "the CA is saved in the profile");
    ok(courier("pocket", &["login", "--phone", "+9996620002", "--code", "22222", "--device", "pocket", "--node", &c.client_addr(3), "--ca", ca.to_str().unwrap()], false));

    // Later commands need nothing but the profile.
    let who: serde_json::Value = serde_json::from_str(&ok(courier("desk", &["whoami", "--json"], false))).unwrap();
    assert_eq!(who["first_name"], "Grace");
    assert_eq!(who["last_name"], "Hopper");
    let list: serde_json::Value = serde_json::from_str(&ok(courier("pocket", &["sessions", "--json"], false))).unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let devices: BTreeSet<&str> = sessions.iter().map(|s| s["device"].as_str().unwrap()).collect();
    assert_eq!(devices, BTreeSet::from(["desk", "pocket"]));
    for s in sessions {
        for f in ["id", "device", "app_version", "node", "address", "created_ms", "last_active_ms", "current"] {
            assert!(!s[f].is_null(), "session field {f}");
        }
    }
    let table = ok(courier("desk", &["sessions"], false));
    assert!(table.contains("DEVICE") && table.contains("pocket"), "{table}");

    // The pocket device ends every other session: the desk profile is logged out by it.
    let out = ok(courier("pocket", &["sessions", "terminate", "--others"], false));
    assert!(out.contains("terminated"), "{out}");
    let out = courier("desk", &["whoami"], false);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SESSION_REVOKED"), "{}", String::from_utf8_lossy(&out.stderr));
    ok(courier("desk", &["logout"], false));
    assert!(!token.exists(), "logout forgets the token");

    // Terminating one session by id, and logging out for real.
    ok(courier("desk", &["login", "--phone", "+9996620002", "--code", "22222"], true));
    let list: serde_json::Value = serde_json::from_str(&ok(courier("pocket", &["sessions", "--json"], false))).unwrap();
    let desk_id = list["sessions"].as_array().unwrap().iter().find(|s| s["current"] == false).unwrap()["id"].as_u64().unwrap();
    ok(courier("pocket", &["sessions", "terminate", &desk_id.to_string()], false));
    assert!(!courier("desk", &["whoami"], false).status.success());
    ok(courier("pocket", &["logout"], false));
    let out = courier("pocket", &["sessions"], false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not logged in"), "{}", String::from_utf8_lossy(&out.stderr));
    // Bad input is a clear error.
    let out = courier("x", &["login", "--phone", "12345", "--code", "11111"], true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("PHONE_NUMBER_INVALID"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn leader_killed_during_sign_up_leaves_no_half_made_account() {
    let mut c = Cluster::start_settled(51, 3, &format!("development = true\n{FAST}[auth]\ntest_numbers = true\nlogins_per_address_per_minute = 0\nlogins_per_phone_per_minute = 0\n[limits]\nposts_per_chat_per_minute = 0\nchanges_per_chat_per_minute = 0\ninvites_per_chat_per_minute = 0\ntyping_per_chat_per_minute = 0\nnew_private_chats_per_hour = 0\n"));
    let rt = rt();
    let groups = c.status().unwrap()["data_groups"].as_u64().unwrap() as u32;
    for (round, phone) in ["+9996630001", "+9996630002", "+9996630003"].into_iter().enumerate() {
        let group = courier_raft::multi::group_for_key(format!("phone:{phone}").as_bytes(), groups);
        let status = c.must_settle(3, Duration::from_secs(60));
        let leader = leaders(&status)[&u64::from(group)].expect("group has a leader") as u32;
        let via = (1..=3).find(|n| *n != leader).unwrap();
        // The code is sent; the sign-up races the leader's death.
        let (client, sent) = rt.block_on(async {
            let (client, _) = connect(&c, &[via], "racer", None).await.unwrap();
            let sent = client.send_code(phone).await.unwrap();
            let e = client.sign_in(phone, &sent.phone_code_hash, &phone[6..7].repeat(5)).await.unwrap_err();
            assert_eq!(e.code(), Code::SignUpRequired);
            (client, sent)
        });
        // Round 0 freezes the leader first, so the sign-up is surely in flight
        // when it dies; rounds 1 and 2 kill it 3 and 15 ms into the request.
        let pid = c.nodes[&leader].child.as_ref().unwrap().id() as i32;
        if round == 0 {
            unsafe { libc::kill(pid, libc::SIGSTOP) };
        }
        let signing = rt.spawn(async move {
            let r = client.sign_up(phone, &sent.phone_code_hash, "Racer", "").await;
            (client, sent, r)
        });
        std::thread::sleep(Duration::from_millis([300, 3, 15][round]));
        c.kill9(leader);
        let (client, sent, first) = rt.block_on(signing).unwrap();
        eprintln!("round {round}: the raced sign-up answered {:?}", first.as_ref().map(|_| "ok").map_err(|e| e.code().to_string()));
        match &first {
            Ok(a) => assert_eq!(a.user.as_ref().unwrap().phone, phone),
            Err(e) => assert_eq!(e.code(), Code::Unavailable, "round {round}: only UNAVAILABLE or success, got {e}"),
        }
        rt.block_on(async {
            // After failover: a fresh code and a sign-in find the account whole, or no account at all.
            // A new connection: one that signed up carries that account (one per connection).
            drop(client);
            let (client, _) = connect(&c, &[via], "racer", None).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            let sent2 = loop {
                match client.send_code(phone).await {
                    Ok(s) => break s,
                    Err(e) if e.code() == Code::Unavailable && Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
                    Err(e) => panic!("send_code after failover: {e}"),
                }
            };
            assert_ne!(sent2.phone_code_hash, sent.phone_code_hash);
            let code = phone[6..7].repeat(5);
            match client.sign_in(phone, &sent2.phone_code_hash, &code).await {
                Ok(a) => {
                    let u = a.user.unwrap();
                    assert_eq!((u.phone.as_str(), u.first_name.as_str()), (phone, "Racer"), "the account is whole");
                    if let Ok(f) = &first {
                        assert_eq!(f.user.as_ref().unwrap().id, u.id, "one account");
                    }
                    // The session list holds the sign-up's session (if it committed) and this one.
                    let n = client.sessions().await.unwrap().len();
                    assert!((1..=2).contains(&n), "sessions: {n}");
                }
                Err(e) if e.code() == Code::SignUpRequired => {
                    assert!(first.is_err(), "an acknowledged sign-up was lost");
                    let a = client.sign_up(phone, &sent2.phone_code_hash, "Racer", "").await.unwrap();
                    assert_eq!(client.sessions().await.unwrap().len(), 1, "no session left from the failed attempt");
                    assert_eq!(a.user.unwrap().phone, phone);
                }
                Err(e) => panic!("sign_in after failover: {e}"),
            }
        });
        c.start(leader);
    }

    // A logged-in client whose node dies moves to another node by itself and carries on.
    c.must_settle(3, Duration::from_secs(60));
    let (mover, first_node) = rt.block_on(async {
        let (setup, _) = connect(&c, &[1], "setup", None).await.unwrap();
        let a = log_in(&setup, "+9996630009", "Mover").await;
        let mut cfg = config(&c, &[1, 2, 3], "mover");
        cfg.token = Some(a.session_token);
        cfg.request_timeout = Duration::from_secs(3);
        let (mover, _) = Client::connect(cfg).await.unwrap();
        let node = mover.node().await.unwrap();
        (mover, (1..=3).find(|i| c.client_addr(*i) == node).unwrap())
    });
    c.kill9(first_node);
    rt.block_on(async {
        let me = mover.get_self().await.expect("get_self moves to a live node");
        assert_eq!(me.first_name, "Mover");
        let now = mover.node().await.unwrap();
        assert_ne!(now, c.client_addr(first_node), "reconnected elsewhere");
        assert!(mover.hello().unwrap().authorized, "the session came along");
    });
}

#[test]
fn login_codes_end_after_three_tries_expire_and_are_limited_per_phone_and_address() {
    let mut c = Cluster::new(52);
    let codes = c.dir.path().join("codes.txt");
    let sms = c.dir.path().join("sms-gateway.sh");
    std::fs::write(&sms, format!("#!/bin/sh\necho \"$1 $2\" >> {}\n", codes.display())).unwrap();
    std::fs::set_permissions(&sms, std::fs::Permissions::from_mode(0o755)).unwrap();
    let offset = c.dir.path().join("clock-offset");
    let extra = format!(
        "clock_offset_file = \"{}\"\ndevelopment = true\n{FAST}[auth]\ncode_delivery = \"command\"\ncode_command = \"{}\"\nlogins_per_address_per_minute = 36\nlogins_per_phone_per_minute = 0\n",
        offset.display(),
        sms.display()
    );
    c.add_node(1, &extra);
    must_wait(Duration::from_secs(30), "cluster init", || c.run_on(&[1], &["cluster", "init"]).status.success().then_some(()));
    for i in 2..=3 {
        c.add_node(i, &extra);
    }
    c.must_settle(3, Duration::from_secs(120));
    let last_code = |phone: &str| -> String {
        let text = std::fs::read_to_string(&codes).unwrap_or_default();
        text.lines().filter_map(|l| l.strip_prefix(&format!("{phone} "))).next_back().expect("the SMS gateway got a code").to_string()
    };
    let rt = rt();
    rt.block_on(async {
        let phone = "+15550001234";
        let clients = [connect(&c, &[1], "a", None).await.unwrap().0, connect(&c, &[2], "b", None).await.unwrap().0, connect(&c, &[3], "c", None).await.unwrap().0];
        // 1st code: 3 wrong tries end it; the right code then finds it ended.
        let sent = clients[0].send_code(phone).await.unwrap();
        assert_eq!(sent.timeout_secs, 300);
        let code = last_code(phone);
        assert_eq!(code.len(), 5);
        assert!(code.chars().all(|ch| ch.is_ascii_digit()));
        let wrong = if code == "00000" { "11111" } else { "00000" };
        let operator = c.must_run(&["cluster", "login-code", "--phone", phone]);
        assert_eq!(operator.trim(), code, "the operator sees the pending code");
        for (i, left) in [2u32, 1, 0].into_iter().enumerate() {
            let e = clients[i].sign_in(phone, &sent.phone_code_hash, wrong).await.unwrap_err();
            assert_eq!(e.code(), Code::PhoneCodeInvalid, "try {i}");
            assert!(e.to_string().contains(&format!("{left} tries left")), "{e}");
        }
        let e = clients[0].sign_in(phone, &sent.phone_code_hash, &code).await.unwrap_err();
        assert_eq!(e.code(), Code::PhoneCodeExpired, "three wrong tries ended the code");

        // 2nd code expires after 5 minutes (the nodes' clocks moved on).
        let sent = clients[1].send_code(phone).await.unwrap();
        let code = last_code(phone);
        std::fs::write(&offset, "301").unwrap();
        let e = clients[2].sign_in(phone, &sent.phone_code_hash, &code).await.unwrap_err();
        assert_eq!(e.code(), Code::PhoneCodeExpired);
        std::fs::write(&offset, "0").unwrap();

        // 3rd to 5th through different nodes: the limit is the cluster's, not a node's.
        for client in &clients {
            client.send_code(phone).await.unwrap();
        }
        let e = clients[1].send_code(phone).await.unwrap_err();
        assert_eq!(e.code(), Code::FloodWait, "6th code in a day");
        let courier_client::Error::Api { retry_after_secs, .. } = e else { unreachable!() };
        assert!(retry_after_secs > 0 && retry_after_secs <= 86_400, "FLOOD_WAIT carries its seconds: {retry_after_secs}");
        // The last code still works, and a day later codes flow again.
        std::fs::write(&offset, "86401").unwrap();
        let sent = clients[2].send_code(phone).await.unwrap();
        let e = clients[2].sign_in(phone, &sent.phone_code_hash, &last_code(phone)).await.unwrap_err();
        assert_eq!(e.code(), Code::SignUpRequired, "the right code is accepted; the number is new");
        let a = clients[2].sign_up(phone, &sent.phone_code_hash, "Real", "Phone").await.unwrap();
        assert_eq!(a.user.unwrap().phone, phone);
        // The next code also arrives as a service message on the logged-in device (on another node).
        let (_device, mut events) = connect(&c, &[3], "logged-in", Some(a.session_token)).await.unwrap();
        let sent = clients[0].send_code(phone).await.unwrap();
        assert_eq!(sent.delivery, "app");
        let pushed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match events.recv().await {
                    Some(Event::Update(pb::Update { kind: Some(pb::update::Kind::LoginCode(c)) })) => return c,
                    Some(_) => continue,
                    None => panic!("events ended"),
                }
            }
        })
        .await
        .expect("the login code was pushed to the logged-in device");
        assert_eq!((pushed.phone.as_str(), pushed.code.as_str(), pushed.device.as_str()), (phone, last_code(phone).as_str(), "front-door-test/1 from 127.0.0.1"), "the asking app and address, not its device text");
        std::fs::write(&offset, "0").unwrap();

        // Per source address: node 3 allows its share (36 over 3 nodes: 12 a
        // minute) of the cluster's login attempts to one address, whatever the phone.
        let (c3, _) = connect(&c, &[3], "d", None).await.unwrap();
        let mut flood = None;
        for i in 0..20 {
            match c3.send_code(&format!("+1555000{:04}", 2000 + i)).await {
                Ok(_) => {}
                Err(e) => {
                    flood = Some((i, e));
                    break;
                }
            }
        }
        let (i, e) = flood.expect("the per-address limit holds");
        assert_eq!(e.code(), Code::FloodWait);
        assert!(i <= 12, "stopped after {i} codes");
        // Malformed phones are refused before anything is written.
        for bad in ["", "12345", "+1", "+1234567890123456789", "+1555abc1234"] {
            assert_eq!(clients[0].send_code(bad).await.unwrap_err().code(), Code::PhoneNumberInvalid, "{bad:?}");
        }
    });
}

fn hello_frame(token: &[u8]) -> Vec<u8> {
    courier_proto::frame::encode(&pb::Request {
        method: Some(pb::request::Method::Hello(pb::Hello { protocol: 1, client_version: "raw/1".into(), device: "raw".into(), session_token: token.to_vec(), requests_only: false, own_sends_key: 0 })),
    })
}

/// One stream: writes `bytes` (then finishes unless `keep_open`), reads the answer.
async fn raw_exchange(conn: &quinn::Connection, bytes: &[u8]) -> Result<pb::Response, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(bytes).await.map_err(|e| e.to_string())?;
    let _ = send.finish();
    let r = tokio::time::timeout(Duration::from_secs(15), courier_proto::frame::read::<pb::Response, _>(&mut recv, 1 << 20)).await;
    match r {
        Ok(Ok(Some(resp))) => Ok(resp),
        Ok(Ok(None)) => Err("stream closed without an answer".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer in 15 s".into()),
    }
}

fn error_code(r: &Result<pb::Response, String>) -> String {
    match r {
        Ok(pb::Response { result: Some(pb::response::Result::Error(e)) }) => e.code.clone(),
        Ok(other) => format!("not an error: {other:?}"),
        Err(e) => format!("transport: {e}"),
    }
}

#[test]
fn hostile_input_gets_errors_writes_nothing_and_others_are_served() {
    let c = Cluster::start_settled(53, 1, &format!("development = true\n{FAST}[auth]\ntest_numbers = true\nlogins_per_address_per_minute = 0\nlogins_per_phone_per_minute = 0\n[limits]\nposts_per_chat_per_minute = 0\nchanges_per_chat_per_minute = 0\ninvites_per_chat_per_minute = 0\ntyping_per_chat_per_minute = 0\nnew_private_chats_per_hour = 0\n"));
    let rt = rt();
    let ca = std::fs::read(c.certs.join("ca.pem")).unwrap();
    let addr: SocketAddr = c.client_addr(1).parse().unwrap();
    let host = c.host(1);
    rt.block_on(async {
        // A good client, logged in, and a revoked token, before the baseline.
        let (good, _) = connect(&c, &[1], "good", None).await.unwrap();
        log_in(&good, "+9996640001", "Good").await;
        let (doomed, _) = connect(&c, &[1], "doomed", None).await.unwrap();
        let revoked = log_in(&doomed, "+9996640002", "Doomed").await.session_token;
        doomed.log_out().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = applied_total(&c);
        let ep = raw_endpoint(&ca, b"courier/1");
        let open = || async { ep.connect(addr, &host).unwrap().await.expect("handshake") };

        // Random bytes as UDP datagrams to the QUIC port.
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for _ in 0..500 {
            let junk: Vec<u8> = (0..rand::random_range(1..1400)).map(|_| rand::random()).collect();
            sock.send_to(&junk, addr).await.unwrap();
        }
        // Random bytes as the hello: the connection is closed.
        let conn = open().await;
        let junk: Vec<u8> = (0..3000).map(|_| rand::random()).collect();
        let r = raw_exchange(&conn, &junk).await;
        assert!(r.is_err() || error_code(&r) == "BAD_REQUEST", "random hello: {r:?}");
        assert!(tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.is_ok(), "random bytes instead of hello close the connection");

        // A session for the rest: hello, then hostile streams on a live connection.
        let conn = open().await;
        let hello = raw_exchange(&conn, &hello_frame(&[])).await.unwrap();
        assert!(matches!(hello.result, Some(pb::response::Result::Hello(_))));
        // A frame announcing 4 GiB: refused from its 4-byte header.
        let r = raw_exchange(&conn, &u32::MAX.to_be_bytes()).await;
        assert!(r.is_err() || error_code(&r) == "BAD_REQUEST", "4 GiB frame: {r:?}");
        // A truncated frame: 100 bytes announced, 10 sent.
        let mut t = 100u32.to_be_bytes().to_vec();
        t.extend([1u8; 10]);
        assert_eq!(error_code(&raw_exchange(&conn, &t).await), "BAD_REQUEST", "truncated frame");
        // Random bytes in a well-sized frame.
        let mut f = 64u32.to_be_bytes().to_vec();
        f.extend((0..64).map(|_| rand::random::<u8>() | 0x80));
        let r = raw_exchange(&conn, &f).await;
        assert_eq!(error_code(&r), "BAD_REQUEST", "undecodable frame: {r:?}");
        // An unknown method (field 99) and an empty request.
        let unknown = [0, 0, 0, 3, 0x98, 0x06, 0x01];
        assert_eq!(error_code(&raw_exchange(&conn, &unknown).await), "BAD_REQUEST", "unknown method");
        assert_eq!(error_code(&raw_exchange(&conn, &[0, 0, 0, 0]).await), "BAD_REQUEST", "no method");
        // A second hello, and methods that need a session.
        assert_eq!(error_code(&raw_exchange(&conn, &hello_frame(&[])).await), "BAD_REQUEST", "second hello");
        let get_self = courier_proto::frame::encode(&pb::Request { method: Some(pb::request::Method::GetSelf(pb::GetSelf {})) });
        assert_eq!(error_code(&raw_exchange(&conn, &get_self).await), "UNAUTHORIZED");
        let terminate = courier_proto::frame::encode(&pb::Request { method: Some(pb::request::Method::TerminateOtherSessions(pb::TerminateOtherSessions {})) });
        assert_eq!(error_code(&raw_exchange(&conn, &terminate).await), "UNAUTHORIZED");
        // A sign-in with a forged code id and an oversized name are bad input.
        let forged = courier_proto::frame::encode(&pb::Request {
            method: Some(pb::request::Method::SignUp(pb::SignUp { phone: "+9996640003".into(), phone_code_hash: "zz".into(), first_name: "x".repeat(10_000), last_name: String::new() })),
        });
        assert_eq!(error_code(&raw_exchange(&conn, &forged).await), "BAD_REQUEST");
        conn.close(0u32.into(), b"");

        // Forged and revoked tokens: refused with their code, then closed.
        let mut forged = revoked.clone();
        forged[3..].copy_from_slice(&rand::random::<[u8; 32]>());
        for (token, want) in [(vec![1u8; 35], "UNAUTHORIZED"), (vec![9u8; 3], "UNAUTHORIZED"), (forged, "UNAUTHORIZED"), (revoked.clone(), "SESSION_REVOKED")] {
            let conn = open().await;
            let r = raw_exchange(&conn, &hello_frame(&token)).await;
            assert_eq!(error_code(&r), want, "token {:?}", &token[..3]);
            assert!(tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.is_ok(), "a refused hello closes the connection");
        }
        // Not hello first: refused and closed.
        let conn = open().await;
        assert_eq!(error_code(&raw_exchange(&conn, &get_self).await), "BAD_REQUEST");
        assert!(tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.is_ok());

        // Thousands of streams at once, each sending half a frame and waiting:
        // the node caps them per connection, and the good client is still served.
        let conn = open().await;
        raw_exchange(&conn, &hello_frame(&[])).await.unwrap();
        let mut flood = tokio::task::JoinSet::new();
        for _ in 0..3000 {
            let conn = conn.clone();
            flood.spawn(async move {
                let Ok((mut send, mut recv)) = conn.open_bi().await else { return };
                let _ = send.write_all(&[0, 0, 1, 0, 1, 2]).await;
                let mut buf = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_secs(30), recv.read(&mut buf)).await;
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in 0..20 {
            good.ping().await.expect("the good client is served during the stream flood");
        }
        assert_eq!(good.get_self().await.unwrap().first_name, "Good");
        flood.abort_all();
        conn.close(0u32.into(), b"");

        // A wrong ALPN never gets a connection.
        let wrong = raw_endpoint(&ca, b"h3");
        let r = wrong.connect(addr, &host).unwrap().await;
        match r {
            Err(_) => {}
            Ok(conn) => {
                let r = raw_exchange(&conn, &hello_frame(&[])).await;
                assert!(r.is_err(), "wrong ALPN was served: {r:?}");
            }
        }

        // Nothing above wrote anything; the good client still works.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(applied_total(&c), before, "hostile input changed replicated state");
        good.ping().await.unwrap();
        assert_eq!(good.get_self().await.unwrap().first_name, "Good");
    });
}

#[test]
fn untrusted_servers_and_clients_never_meet() {
    let c = Cluster::start_settled(54, 1, &format!("development = true\n{FAST}[auth]\ntest_numbers = true\nlogins_per_address_per_minute = 0\nlogins_per_phone_per_minute = 0\n[limits]\nposts_per_chat_per_minute = 0\nchanges_per_chat_per_minute = 0\ninvites_per_chat_per_minute = 0\ntyping_per_chat_per_minute = 0\nnew_private_chats_per_hour = 0\n"));
    let rt = rt();
    // A second CA, and a node certificate from it for the impostor's address.
    let other = tempfile::tempdir().unwrap();
    let other_certs = other.path().join("certs");
    courier_node::certs::create_ca(&other_certs).unwrap();
    let impostor_host = c.host(9);
    let (cert, key) = courier_node::certs::create_node(&other_certs, "impostor", std::slice::from_ref(&impostor_host)).unwrap();
    rt.block_on(async {
        // A client that trusts another CA cannot connect to the real node.
        let mut cfg = config(&c, &[1], "stranger");
        cfg.ca_pem = std::fs::read(other_certs.join("ca.pem")).unwrap();
        let e = Client::connect(cfg).await.err().expect("a client trusting another CA connected");
        assert!(matches!(e, courier_client::Error::Tls(_)), "{e:?}");

        // An impostor with a certificate from another CA: the client aborts the
        // handshake and never opens a stream, so the token never leaves.
        let certs = rustls_pemfile::certs(&mut &std::fs::read(&cert).unwrap()[..]).collect::<Result<Vec<_>, _>>().unwrap();
        let key = rustls_pemfile::private_key(&mut &std::fs::read(&key).unwrap()[..]).unwrap().unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tls.alpn_protocols = vec![b"courier/1".to_vec()];
        let server = quinn::ServerConfig::with_crypto(Arc::new(quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap()));
        let impostor_addr: SocketAddr = format!("{impostor_host}:7002").parse().unwrap();
        let ep = quinn::Endpoint::server(server, impostor_addr).unwrap();
        let seen = Arc::new(std::sync::Mutex::new((0usize, Vec::<u8>::new())));
        let seen2 = seen.clone();
        let impostor = tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                seen2.lock().unwrap().0 += 1;
                let seen3 = seen2.clone();
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((_, mut recv)) = conn.accept_bi().await {
                        let bytes = recv.read_to_end(1 << 20).await.unwrap_or_default();
                        seen3.lock().unwrap().1.extend(bytes);
                    }
                });
            }
        });
        let token = vec![0x5a; 35];
        let mut cfg = config(&c, &[], "victim");
        cfg.nodes = vec![impostor_addr.to_string()];
        cfg.token = Some(token.clone());
        let e = Client::connect(cfg).await.err().expect("the client trusted the impostor");
        assert!(matches!(e, courier_client::Error::Tls(_)), "{e:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (attempts, bytes) = seen.lock().unwrap().clone();
        assert!(attempts >= 1, "the impostor saw the connection attempt");
        assert!(bytes.is_empty(), "the impostor received {} bytes", bytes.len());
        impostor.abort();

        // The same client config with the right CA and a token works against the real node.
        let (real, _) = connect(&c, &[1], "real", None).await.unwrap();
        let a = log_in(&real, "+9996650001", "Real").await;
        let (again, _) = connect(&c, &[1], "real", Some(a.session_token)).await.unwrap();
        assert!(again.hello().unwrap().authorized);
    });
}
