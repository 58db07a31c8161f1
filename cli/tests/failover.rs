//! Failover as a user feels it (issue "Failover a user does not notice"):
//! one node of three killed, one-shot commands keep working whatever node
//! they try first, and a connected device on the dead node lands on another
//! and gets what was sent meanwhile, once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use courier_client::sync::{Followed, SyncState};

/// No per-user budgets: every one-shot `courier send +PHONE` resolves the
/// phone again, and the resolve budget (30 a minute, shared over the live
/// nodes) is not what these tests are about.
const EXTRA: &str = "development = true\n[raft]\nheartbeat_ms = 100\nelection_min_ms = 400\nelection_max_ms = 800\n[placement]\ntick_ms = 300\n[auth]\ntest_numbers = true\nlogins_per_address_per_minute = 0\nlogins_per_phone_per_minute = 0\n[limits]\nresolve_phone_per_minute = 0\nposts_per_chat_per_minute = 0\nchanges_per_chat_per_minute = 0\ninvites_per_chat_per_minute = 0\ntyping_per_chat_per_minute = 0\nnew_private_chats_per_hour = 0\n";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn one_node_of_three_killed_sends_go_on_and_a_connected_device_moves_and_catches_up() {
    let mut c = Cluster::start_settled(85, 3, EXTRA);
    let rt = rt();
    let home = tempfile::tempdir().unwrap();
    let ann = |c: &Cluster, args: &[&str]| c.user_cli(home.path(), "ann", args);
    let (ok, _, err) = ann(&c, &["login", "--phone", "+9996615001", "--code", "11111", "--name", "Ann"]);
    assert!(ok, "{err}");
    // Bob: a device that knows every node, following its chats.
    let nodes: Vec<String> = (1..=3).map(|i| c.client_addr(i)).collect();
    // Bob notices the death after the sends below are done (his idle timeout
    // is longer than they take), so nothing pushed after his move shows him
    // a gap: only the sync on reconnecting brings him what he missed.
    let (bob, mut events, bob_user) = rt.block_on(device_with(&c, 1, "+9996625002", "Bob", |cfg| {
        cfg.nodes = nodes.clone();
        cfg.idle_timeout = Duration::from_secs(5);
    }));
    let (ok, _, err) = ann(&c, &["send", "+9996625002", "before"]);
    assert!(ok, "{err}");
    let bob = std::sync::Arc::new(bob);
    // Bob has everything so far before his node dies.
    let mut state = SyncState::default();
    rt.block_on(state.sync(&bob)).unwrap();
    let follower = {
        let bob = bob.clone();
        rt.spawn(async move {
            let mut moved = 0;
            let deadline = Instant::now() + Duration::from_secs(90);
            while Instant::now() < deadline {
                match state.follow(&bob, &mut events, Duration::from_secs(9)).await {
                    Ok(Followed::Quiet) | Ok(Followed::Closed) => break,
                    Ok(Followed::Synced) => moved += 1,
                    Ok(_) => {}
                    // The request that found the node dead; the next one moves.
                    Err(e) => eprintln!("follow: {e}"),
                }
            }
            (state, moved)
        })
    };
    let on = rt.block_on(bob.node()).expect("bob is connected");
    let victim = (1..=3).find(|i| c.client_addr(*i) == on).unwrap();
    c.kill9(victim);
    let killed = Instant::now();

    // One-shot sends: each command starts at a random node, a third of them the dead one.
    let mut took = Vec::new();
    for i in 0..12 {
        let t = Instant::now();
        let (ok, _, err) = ann(&c, &["send", "+9996625002", &format!("while down {i}")]);
        took.push(t.elapsed().as_millis());
        assert!(ok, "send {i} with node {victim} dead: {err}");
    }
    took.sort_unstable();
    eprintln!("one-shot sends with node {victim} dead: {took:?} ms (process start included)");

    let (state, moved) = rt.block_on(follower).unwrap();
    let now_on = rt.block_on(bob.node()).expect("bob is connected again");
    assert_ne!(now_on, on, "bob left the dead node");
    eprintln!("bob moved from {on} to {now_on}; {moved} syncs; {:.1} s after the kill", killed.elapsed().as_secs_f64());
    let chat = state.chats.values().find(|v| v.lines().iter().any(|(_, _, t, _)| t == "before")).expect("the private chat");
    let texts: Vec<String> = chat.lines().into_iter().map(|(_, _, t, _)| t).collect();
    for i in 0..12 {
        let want = format!("while down {i}");
        assert_eq!(texts.iter().filter(|t| **t == want).count(), 1, "{want:?} once in {texts:?}");
    }
    let _ = bob_user;
}

/// Issue "Failover …", item 4: on a 5-node cluster (3 replicas per group),
/// killing two voters of the group an account lives in leaves that group
/// without a majority. The account's commands answer `UNAVAILABLE` within a
/// few seconds through any live node (before: 10 s, then `BAD_REQUEST: … no
/// hello in time`), `cluster status` marks the group `NOQUORUM`, and once
/// the nodes are back the same commands work again.
#[test]
fn a_group_without_a_majority_answers_unavailable_fast_and_status_says_so() {
    let extra = EXTRA.replace("tick_ms = 300\n", "tick_ms = 300\nreplicas = 3\n");
    let mut c = Cluster::start_settled(86, 5, &extra);
    let home = tempfile::tempdir().unwrap();
    let ann = |c: &Cluster, args: &[&str]| c.user_cli(home.path(), "ann", args);
    let (ok, _, err) = ann(&c, &["login", "--phone", "+9996615011", "--code", "11111", "--name", "Ann"]);
    assert!(ok, "{err}");
    let (ok, out, err) = ann(&c, &["whoami", "--json"]);
    assert!(ok, "{err}");
    let me: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let group = me["id"].as_u64().unwrap() & 0xffff;
    let status = c.status().expect("status");
    let voters = voters(&status)[&group].clone();
    assert_eq!(voters.len(), 3, "group {group} has three voters: {voters:?}");
    let dead = [voters[0] as u32, voters[1] as u32];
    let live: Vec<u32> = (1..=5).filter(|i| !dead.contains(i)).collect();
    for i in dead {
        c.kill9(i);
    }
    let killed = Instant::now();

    let t = Instant::now();
    let (ok, out, err) = c.user_cli_on(&live, home.path(), "ann", &["whoami"]);
    let took = t.elapsed();
    assert!(!ok, "whoami with group {group}'s majority {dead:?} dead answered: {out}");
    assert!(err.contains("UNAVAILABLE"), "whoami without a majority: {err}");
    eprintln!("whoami with nodes {dead:?} dead (group {group}): {:.2} s: {}", took.as_secs_f64(), err.trim());

    // A live node marks the group as without a majority.
    let marked = must_wait(Duration::from_secs(20), "status to mark the group", || {
        let s = c.status_on(&live)?;
        let g = s["groups"].as_array()?.iter().find(|g| g["id"] == group)?.clone();
        (g["quorum"] == false).then_some(g)
    });
    assert!(marked["leader"].is_null(), "a group without a majority shows no leader: {marked}");
    let out = c.run_on(&live, &["cluster", "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NOQUORUM"), "status table: {text}");
    eprintln!("marked NOQUORUM {:.1} s after the kill", killed.elapsed().as_secs_f64());

    // Back: the same account works again.
    for i in dead {
        c.start(i);
    }
    must_wait(Duration::from_secs(60), "whoami to work again", || ann(&c, &["whoami"]).0.then_some(()));
}
