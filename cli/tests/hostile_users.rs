//! Logged-in users against other people, end to end (issue "Hostile users,
//! part 1"): real nodes, the SDK, the CLI and raw QUIC. Each test is a hole
//! that was reproduced against a `courier dev` cluster before it was closed.

mod common;

use courier_client::Code;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use courier_client::sync::SyncState;
use courier_client::{Client, ClientConfig, Event, pb};
use pb::request::Method as M;
use pb::response::Result as R;
use tokio::sync::mpsc;

const EXTRA: &str = "development = true\n[raft]\nheartbeat_ms = 100\nelection_min_ms = 400\nelection_max_ms = 800\n[placement]\ntick_ms = 300\n[auth]\ntest_numbers = true\nlogins_per_address_per_minute = 0\nlogins_per_phone_per_minute = 0\n[limits]\nposts_per_chat_per_minute = 0\nchanges_per_chat_per_minute = 0\ninvites_per_chat_per_minute = 0\ntyping_per_chat_per_minute = 0\nnew_private_chats_per_hour = 0\n";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// 4,096 characters of four bytes each: the largest text a message may hold.
fn heavy_text(i: usize) -> String {
    let mut t: String = std::iter::repeat_n('😀', 4096 - 8).collect();
    t.push_str(&format!("{i:08}"));
    t
}

fn must_messages(r: R) -> pb::Messages {
    match r {
        R::Messages(m) => m,
        other => panic!("not messages: {other:?}"),
    }
}

/// Every message of `chat` by paging back from the newest (bounded).
async fn page_back(c: &Client, chat: u64, search: Option<&str>) -> (Vec<u64>, usize) {
    let mut ids = Vec::new();
    let mut before = 0;
    let mut pages = 0;
    for _ in 0..200 {
        let method = match search {
            None => M::GetHistory(pb::GetHistory { chat_id: chat, before, after: 0, limit: 100 }),
            Some(text) => M::Search(pb::Search { chat_id: chat, text: text.into(), limit: 100, before }),
        };
        let page = must_messages(c.call(method).await.unwrap_or_else(|e| panic!("page before {before}: {e}")));
        pages += 1;
        let Some(last) = page.messages.last() else { break };
        before = last.id;
        ids.extend(page.messages.iter().map(|m| m.id));
        if !page.more && search.is_some() {
            break;
        }
    }
    (ids, pages)
}

/// Item 1: a page, a search, a sync slice and the dialog list of messages
/// at the size limit all fit a frame; pages are cut by bytes and say where
/// to go on; a message's reactions are counts plus a few recent reactors,
/// the full list paged on request.
#[test]
fn every_reply_fits_a_frame_whatever_the_content() {
    let c = Cluster::start_settled(80, 3, EXTRA);
    let rt = rt();
    let home = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let (ann, _ann_events, ann_user) = device(&c, 1, "+9996610001", "Ann").await;
        let (bob, _bob_events, bob_user) = device(&c, 2, "+9996620002", "Bob").await;
        let group = ann.create_group("Heavy", vec![bob_user.id]).await.unwrap();
        // 80 messages of 4,096 four-byte characters: 1.3 MB of text.
        for i in 0..80 {
            ann.send_message(group.id, 1000 + i as u64, &heavy_text(i), 0).await.unwrap();
        }
        let (ids, pages) = page_back(&bob, group.id, None).await;
        assert_eq!(ids, (1..=80).rev().collect::<Vec<u64>>(), "paging back gives every message once, in order");
        assert!(pages > 2, "a 100-message page of 16 KiB messages is cut by bytes ({pages} pages)");
        let first = must_messages(bob.call(M::GetHistory(pb::GetHistory { chat_id: group.id, before: 0, after: 0, limit: 100 })).await.unwrap());
        assert!(first.more, "a page cut by its size says so");
        let forward = must_messages(bob.call(M::GetHistory(pb::GetHistory { chat_id: group.id, before: 0, after: 1, limit: 100 })).await.unwrap());
        assert!(forward.more && !forward.messages.is_empty() && forward.messages[0].id == 2, "paging forward is cut too");

        let (found, pages) = page_back(&bob, group.id, Some("😀😀😀")).await;
        assert_eq!(found.len(), 80, "search pages reach every match ({pages} pages)");

        // A sync from nothing: every message, through slices that fit.
        let mut state = SyncState::default();
        state.sync(&bob).await.expect("a sync of heavy chats");
        let lines = state.chats.get(&group.id).expect("the group synced").lines();
        assert_eq!(lines.len(), 80, "the sync brought every message");

        // 70 chats whose last message is 16 KiB: the dialog list pages.
        for i in 0..70u64 {
            let g = ann.create_group(&format!("Room {i}"), vec![bob_user.id]).await.unwrap();
            ann.send_message(g.id, 5000 + i, &heavy_text(i as usize), 0).await.unwrap();
        }
        let (mut seen, mut before) = (BTreeSet::new(), (0u64, 0u64));
        let mut pages = 0;
        loop {
            let r = bob.call(M::GetDialogs(pb::GetDialogs { before_ms: before.0, before_chat: before.1, limit: 100 })).await.expect("a dialog page");
            let R::Dialogs(d) = r else { panic!("{r:?}") };
            pages += 1;
            for dl in &d.dialogs {
                assert!(seen.insert(dl.chat.as_ref().unwrap().id), "a dialog on two pages");
            }
            let Some(last) = d.dialogs.last() else { break };
            let chat = last.chat.as_ref().unwrap();
            before = (chat.last_ms, chat.id);
            if !d.more {
                break;
            }
            assert!(pages < 50, "dialog pages end");
        }
        assert_eq!(seen.len(), 71, "every dialog once, over {pages} pages");
        assert!(pages > 1, "71 dialogs with 16 KiB last messages are cut by bytes");
        assert_eq!(bob.dialogs().await.expect("the SDK pages the dialog list").len(), 71);

        // Reactions: counts per emoji and the most recent reactors.
        let mut extra = Vec::new();
        for i in 0..6u64 {
            let (cl, _ev, u) = device(&c, 1 + (i % 3) as u32, &format!("+99966300{i:02}"), &format!("R{i}")).await;
            ann.invite(group.id, vec![u.id]).await.unwrap();
            extra.push((cl, u.id));
        }
        let mut reactors: Vec<(&Client, u64)> = vec![(&ann, ann_user.id), (&bob, bob_user.id)];
        reactors.extend(extra.iter().map(|(cl, id)| (cl, *id)));
        for (i, (cl, _)) in reactors.iter().enumerate() {
            cl.send_reaction(group.id, 1, if i % 2 == 0 { "👍" } else { "🔥" }).await.unwrap();
        }
        let m = must_messages(bob.call(M::GetHistory(pb::GetHistory { chat_id: group.id, before: 2, after: 0, limit: 1 })).await.unwrap()).messages.remove(0);
        let thumbs = m.reactions.iter().find(|r| r.emoji == "👍").expect("👍 counted");
        assert_eq!((thumbs.count, m.reactions.iter().map(|r| r.count).sum::<u64>()), (4, 8), "{:?}", m.reactions);
        assert!(thumbs.users.len() <= 3 && thumbs.users[0] == reactors[6].1, "the most recent reactors, newest first: {:?}", thumbs.users);
        // Changing a reaction moves the count; the full list pages.
        reactors[0].0.send_reaction(group.id, 1, "🔥").await.unwrap();
        let mut all = Vec::new();
        let mut after = 0;
        for _ in 0..10 {
            let r = bob.call(M::GetReactions(pb::GetReactions { chat_id: group.id, id: 1, after_user: after, limit: 3 })).await.unwrap();
            let R::Reactors(p) = r else { panic!("{r:?}") };
            let Some(last) = p.reactors.last() else { break };
            after = last.user_id;
            all.extend(p.reactors.into_iter().map(|r| (r.user_id, r.emoji)));
        }
        assert_eq!(all.len(), 8, "every reactor once: {all:?}");
        assert!(all.contains(&(ann_user.id, "🔥".to_string())), "ann's changed reaction");
        // A stranger sees none of it.
        let (eve, _e, _) = device(&c, 3, "+9996640004", "Eve").await;
        let r = eve.call(M::GetReactions(pb::GetReactions { chat_id: group.id, id: 1, after_user: 0, limit: 10 })).await;
        assert_eq!(r.map(|_| ()).unwrap_err().code(), Code::NotAMember);
    });
    // The CLI shows a chat of heavy messages (it failed with "frame … over the limit").
    let login = c.user_cli(home.path(), "bob", &["login", "--phone", "+9996620002", "--code", "22222"]);
    assert!(login.0, "{login:?}");
    let dialogs = c.user_cli(home.path(), "bob", &["dialogs", "--json"]);
    assert!(dialogs.0, "{}", dialogs.2);
    let v: serde_json::Value = serde_json::from_str(&dialogs.1).unwrap();
    let heavy = v["dialogs"].as_array().unwrap().iter().find(|d| d["chat"]["title"] == "Heavy").expect("the heavy group listed").clone();
    let chat_id = heavy["chat"]["id"].as_u64().unwrap().to_string();
    let (ok, out, err) = c.user_cli(home.path(), "bob", &["history", &chat_id, "--limit", "100"]);
    assert!(ok, "courier history of a chat of heavy messages: {err}");
    assert_eq!(out.lines().filter(|l| l.starts_with('#')).count(), 80, "{}", &out[..out.len().min(300)]);
}

/// The connection's pushes (chat events), gathered for `within`.
async fn pushed(events: &mut mpsc::Receiver<Event>, within: Duration) -> Vec<pb::ChatEvent> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if let Event::Update(pb::Update { kind: Some(pb::update::Kind::ChatEvent(e)) }) = e {
            out.push(e);
        }
    }
    out
}

fn config(c: &Cluster, node: u32, device: &str) -> ClientConfig {
    let ca = std::fs::read(c.certs.join("ca.pem")).unwrap();
    let mut cfg = ClientConfig::new(vec![c.client_addr(node)], ca);
    cfg.device = device.into();
    cfg.request_timeout = Duration::from_secs(10);
    cfg.route_to_leaders = false;
    cfg
}

async fn sign_in(client: &Client, phone: &str) -> courier_client::Result<pb::Authorization> {
    let sent = client.send_code(phone).await?;
    client.sign_in(phone, &sent.phone_code_hash, &phone[6..7].repeat(5)).await
}

/// Item 2: one account per connection. A second sign-in on a logged-in
/// connection is refused; log-out drops every subscription.
#[test]
fn one_connection_carries_one_account() {
    let c = Cluster::start_settled(81, 3, EXTRA);
    let rt = rt();
    rt.block_on(async {
        let (_ann, _, ann) = device(&c, 1, "+9996611001", "Ann").await;
        let (bob, _, bob_user) = device(&c, 2, "+9996621002", "Bob").await;
        let (_cat, _, _) = device(&c, 3, "+9996631003", "Cat").await;
        let group = bob.create_group("Secret", vec![ann.id]).await.unwrap();
        // One connection, Ann's second device.
        let (x, mut x_events) = Client::connect(config(&c, 1, "shared")).await.unwrap();
        sign_in(&x, "+9996611001").await.unwrap();
        bob.send_message(group.id, 1, "for members", 0).await.unwrap();
        assert!(!pushed(&mut x_events, Duration::from_secs(2)).await.is_empty(), "ann's device gets the group's pushes");
        // Signing in as Cat on the same connection is refused, before anything is written.
        let e = sign_in(&x, "+9996631003").await.expect_err("a second account on one connection");
        assert_eq!(e.code(), Code::AlreadyLoggedIn, "{e}");
        assert_eq!(x.get_self().await.unwrap().id, ann.id, "still ann");
        // Log out, then Cat signs in on the same connection: no pushes of Ann's chats.
        x.log_out().await.unwrap();
        let cat = sign_in(&x, "+9996631003").await.expect("after log-out a sign-in is fine");
        assert_ne!(cat.user.unwrap().id, ann.id);
        let _ = pushed(&mut x_events, Duration::from_millis(500)).await;
        bob.send_message(group.id, 2, "still for members only", 0).await.unwrap();
        let leaked: Vec<_> = pushed(&mut x_events, Duration::from_secs(2)).await.into_iter().filter(|e| e.chat_id == group.id).collect();
        assert!(leaked.is_empty(), "cat's connection received ann's group: {leaked:?}");
        let _ = bob_user;
    });
}

/// Item 3: a phone number only to its owner (and in `resolve_phone` for
/// that very number); names only to people who share a chat or resolved.
#[test]
fn phone_numbers_and_names_follow_the_rule() {
    let c = Cluster::start_settled(82, 3, EXTRA);
    let rt = rt();
    rt.block_on(async {
        let (ann, _, ann_user) = device(&c, 1, "+9996612001", "Ann").await;
        let (bob, _, bob_user) = device(&c, 2, "+9996622002", "Bob").await;
        let (eve, _, eve_user) = device(&c, 3, "+9996632003", "Eve").await;
        let (chan_admin, _, admin_user) = device(&c, 1, "+9996642004", "Admin").await;
        ann.private_chat(bob_user.id).await.unwrap();
        // A stranger learns nothing by id, and ids are sequential.
        let mut probe: Vec<u64> = vec![ann_user.id, bob_user.id];
        for g in 1..=16u64 {
            for n in 1..=5u64 {
                probe.push(n << 16 | g);
            }
        }
        probe.truncate(100);
        let seen = eve.users(probe.clone()).await.unwrap();
        assert!(seen.iter().all(|u| u.id == eve_user.id), "a stranger read other accounts: {seen:?}");
        // A chat partner gets the name, never the phone.
        let bob_sees = bob.users(vec![ann_user.id]).await.unwrap();
        assert_eq!(bob_sees.len(), 1, "a chat partner is seen");
        assert_eq!((bob_sees[0].first_name.as_str(), bob_sees[0].phone.as_str()), ("Ann", ""), "a name, no phone");
        // The owner sees their own number.
        assert_eq!(ann.users(vec![ann_user.id]).await.unwrap()[0].phone, "+9996612001");
        // resolve_phone answers the number the caller gave; then get_users knows the account (without its phone).
        let r = eve.resolve_phone("+9996612001").await.unwrap();
        assert_eq!((r.id, r.phone.as_str()), (ann_user.id, "+9996612001"));
        let after = eve.users(vec![ann_user.id, bob_user.id]).await.unwrap();
        assert_eq!(after.iter().map(|u| (u.id, u.phone.clone())).collect::<Vec<_>>(), vec![(ann_user.id, String::new())], "resolved: name only; bob still hidden");
        // A channel: subscribers see its admins, not each other.
        let ch = chan_admin.create_channel("News").await.unwrap();
        chan_admin.invite(ch.id, vec![ann_user.id, eve_user.id]).await.unwrap();
        let ids: BTreeSet<u64> = eve.users(vec![admin_user.id, bob_user.id]).await.unwrap().iter().map(|u| u.id).collect();
        assert!(ids.contains(&admin_user.id), "a channel's admin is seen by subscribers");
        let subs = chan_admin.users(vec![eve_user.id]).await.unwrap();
        assert_eq!(subs.len(), 1, "admins see subscribers");
        // Members, messages and events carry no phone: the wire types have none;
        // resolve_phone is limited per user.
        let mut flood = None;
        for i in 0..200u32 {
            match eve.resolve_phone(&format!("+99966{:05}", 50000 + i)).await {
                Err(e) if e.code() == Code::FloodWait => {
                    flood = Some(i);
                    break;
                }
                _ => {}
            }
        }
        // 30 a minute for the cluster: this node's share is 10 (one was used above).
        assert!(flood.is_some_and(|n| n >= 5), "resolve_phone is rate-limited per user after a fair number: {flood:?}");
    });
}

/// Item 4: no client value picks the meta group; item 5: small leaks.
#[test]
fn client_values_stay_out_of_the_control_plane_and_errors_say_no_more_than_the_code() {
    let c = Cluster::start_settled(83, 3, EXTRA);
    let rt = rt();
    let meta_applied = |c: &Cluster| -> u64 {
        let s = c.status().expect("status");
        s["groups"].as_array().unwrap().iter().find(|g| g["id"] == 0).unwrap()["applied"].as_u64().unwrap()
    };
    rt.block_on(async {
        let (ann, _, _) = device(&c, 1, "+9996613001", "Ann").await;
        let (_bob, _, bob) = device(&c, 2, "+9996623002", "Bob").await;
        let group = ann.create_group("G", vec![bob.id]).await.unwrap();
        // The meta group at rest (leaders moved and placement settled).
        let mut before = meta_applied(&c);
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let now = meta_applied(&c);
            if now == before {
                break;
            }
            before = now;
        }
        for forged in [5u64 << 16, 7u64 << 16, 1u64 << 40] {
            let _ = ann.remove_member(group.id, forged).await;
            let _ = ann.invite(group.id, vec![forged]).await;
            let _ = ann.create_group("x", vec![forged]).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(meta_applied(&c), before, "a made-up user id reached the meta group");
        // Errors do not echo ids or say which of two things failed.
        let e = ann.create_group("x", vec![9u64 << 16 | 3]).await.unwrap_err();
        assert!(!e.to_string().contains(&(9u64 << 16 | 3).to_string()), "{e}");
        // A history far past the end is an empty page, not a crash.
        let r = ann.call(M::GetHistory(pb::GetHistory { chat_id: group.id, before: 0, after: u64::MAX, limit: 10 })).await.expect("an answer");
        assert!(must_messages(r).messages.is_empty());
        ann.send_message(group.id, 1, "still alive", 0).await.expect("the node serves on");
        // Routes need a session.
        let (anon, _) = Client::connect(config(&c, 1, "anon")).await.unwrap();
        let r = anon.call(M::GetRoutes(pb::GetRoutes {})).await;
        assert_eq!(r.map(|_| ()).unwrap_err().code(), Code::Unauthorized);
        // A test number's code is not delivered: the answer says so.
        let sent = anon.send_code("+9996613001").await.unwrap();
        assert_eq!(sent.delivery, "test");
    });
    // The login code pushed to an account's devices names the app and the
    // address that asked, never the free text the asker chose as its device.
    rt.block_on(async {
        let phone = "+15550100001";
        let (owner, mut owner_events) = Client::connect(config(&c, 2, "owner")).await.unwrap();
        let sent = owner.send_code(phone).await.unwrap();
        let code = c.must_run(&["cluster", "login-code", "--phone", phone]).trim().to_string();
        match owner.sign_in(phone, &sent.phone_code_hash, &code).await {
            Ok(_) => {}
            Err(e) if e.code() == Code::SignUpRequired => {
                owner.sign_up(phone, &sent.phone_code_hash, "Owner", "").await.unwrap();
            }
            Err(e) => panic!("{e}"),
        }
        let mut cfg = config(&c, 3, "Your account is locked: open evil.example now");
        cfg.client_version = "phish/1".into();
        let (asker, _) = Client::connect(cfg).await.unwrap();
        asker.send_code(phone).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let notice = loop {
            match tokio::time::timeout_at(deadline, owner_events.recv()).await {
                Ok(Some(Event::Update(pb::Update { kind: Some(pb::update::Kind::LoginCode(l)) }))) => break l,
                Ok(Some(_)) => continue,
                _ => panic!("no login code pushed to the owner's device"),
            }
        };
        assert!(!notice.device.contains("evil"), "the asker's free text reached the owner: {:?}", notice.device);
        assert!(notice.device.contains("127.0.0.1") && notice.device.contains("phish/1"), "the app and the address: {:?}", notice.device);
    });
}

/// Item 5 and the protocol doc: a bad frame on the hello stream is answered
/// (`Response{error}`) before the close; the close reason starts with the code.
#[test]
fn a_bad_hello_frame_is_answered_before_the_close() {
    let c = Cluster::start_settled(84, 1, EXTRA);
    on_raw_connection(&c, |conn| async move {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let mut garbage = 3u32.to_be_bytes().to_vec();
        garbage.extend([0xff, 0xff, 0xff]);
        send.write_all(&garbage).await.unwrap();
        let _ = send.finish();
        let r = tokio::time::timeout(Duration::from_secs(10), courier_proto::frame::read::<pb::Response, _>(&mut recv, 1 << 20)).await.expect("an answer in time");
        match r {
            Ok(Some(pb::Response { result: Some(R::Error(e)) })) => assert_eq!(e.code, "BAD_REQUEST"),
            other => panic!("a bad hello frame got no error answer: {other:?}"),
        }
        let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await.expect("closed");
        assert!(reason.to_string().contains("BAD_REQUEST"), "{reason}");
    });
}

/// With Courier Web on, the client port must let browsers open HTTP/3's
/// unidirectional streams (the transport parameters are endpoint-wide);
/// a `courier/1` client that opens one is closed with `BAD_REQUEST`.
#[test]
fn a_web_node_still_refuses_courier1_unidirectional_streams() {
    let c = Cluster::start_settled(98, 1, &format!("{EXTRA}[web]\naddr = \"@HOST@:7004\"\n"));
    on_raw_connection(&c, |conn| async move {
        let mut uni = conn.open_uni().await.unwrap();
        uni.write_all(b"\x00\x04").await.unwrap();
        // Before the hello's deadline, and for this reason (not for the
        // missing hello).
        let reason = tokio::time::timeout(Duration::from_secs(3), conn.closed()).await.expect("closed at once");
        let reason = reason.to_string();
        assert!(reason.contains("BAD_REQUEST") && reason.contains("unidirectional"), "{reason}");
    });
}

/// Runs `f` on a raw `courier/1` QUIC connection to node 1 (no SDK: the
/// bytes are the test's).
fn on_raw_connection<F: std::future::Future<Output = ()>>(c: &Cluster, f: impl FnOnce(quinn::Connection) -> F) {
    let ca = std::fs::read(c.certs.join("ca.pem")).unwrap();
    let addr: SocketAddr = c.client_addr(1).parse().unwrap();
    rt().block_on(async {
        let conn = raw_endpoint(&ca, b"courier/1").connect(addr, &c.host(1)).unwrap().await.unwrap();
        f(conn).await
    });
}

/// An address over its connection cap gets no WebTransport session: the
/// node closes an `h3` connection with `FLOOD_WAIT` before it reads
/// anything of HTTP/3 (the client here never sends it).
#[test]
fn a_browser_connection_over_its_address_cap_is_refused_before_http3() {
    let c = Cluster::start_settled(100, 1, &format!("{EXTRA}[gateway]\nmax_connections_per_address = 1\n[web]\naddr = \"@HOST@:7004\"\n"));
    let ca = std::fs::read(c.certs.join("ca.pem")).unwrap();
    let addr: SocketAddr = c.client_addr(1).parse().unwrap();
    rt().block_on(async {
        // The one connection the address may hold.
        let first = raw_endpoint(&ca, b"courier/1").connect(addr, &c.host(1)).unwrap().await.unwrap();
        let h3 = any_cert_endpoint(b"h3").connect(addr, "localhost").unwrap().await.expect("the QUIC handshake");
        let reason = tokio::time::timeout(Duration::from_secs(3), h3.closed()).await.expect("closed at once, not at the hello deadline");
        assert!(reason.to_string().contains("FLOOD_WAIT"), "{reason}");
        drop(first);
    });
}

/// A QUIC client endpoint offering `alpn` that accepts any server
/// certificate: a browser's handshake without a browser (the node's own web
/// certificate is self-signed, pinned by hash in browsers).
fn any_cert_endpoint(alpn: &[u8]) -> quinn::Endpoint {
    #[derive(Debug)]
    struct AnyCert(std::sync::Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    endpoint_with(tls, alpn)
}
