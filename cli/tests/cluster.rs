//! Cluster core, end to end: real `courier` processes, real RocksDB, real
//! mutual TLS gRPC, driven only through the CLI.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const FAST: &str = "[raft]\nheartbeat_ms = 100\nelection_min_ms = 400\nelection_max_ms = 800\n[placement]\ntick_ms = 300\n";

#[test]
fn dev_cluster_serves_linearizable_writes_from_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Command::new(bin())
        .args(["dev", "--nodes", "3", "--dir", dir.path().to_str().unwrap(), "--host", "127.0.40.1", "--base-port", "7200"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let env_file = dir.path().join("env");
    let env = must_wait(Duration::from_secs(120), "courier dev to write DIR/env", || std::fs::read_to_string(&env_file).ok());
    let vars: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let var = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("{k} missing from env"));
    assert_eq!(var("COURIER_NODES").split(',').count(), 3);
    assert!(var("COURIER_NODES").starts_with("127.0.40.1:7211"), "node 1's client address first");
    let courier = |args: &[&str]| {
        let mut c = Command::new(bin());
        c.args(args).stdin(Stdio::null());
        for (k, v) in &vars {
            c.env(k, v);
        }
        c.output().unwrap()
    };

    // status --json: 3 nodes up, every group with a leader and 3 voters.
    let status = must_wait(Duration::from_secs(120), "3 voters in every group", || {
        let out = courier(&["cluster", "status", "--json"]);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let ok = s["nodes"].as_array()?.len() == 3
            && s["nodes"].as_array()?.iter().all(|n| n["state"] == "up")
            && s["groups"].as_array()?.iter().all(|g| g["leader"].is_u64() && g["voters"].as_array().unwrap().len() == 3);
        ok.then_some(s)
    });
    assert_eq!(status["groups"].as_array().unwrap().len(), 17, "meta group + 16 data groups");
    for n in status["nodes"].as_array().unwrap() {
        for f in ["id", "addr", "state"] {
            assert!(!n[f].is_null(), "node field {f}");
        }
    }
    for g in status["groups"].as_array().unwrap() {
        for f in ["id", "leader", "voters", "learners", "term", "applied"] {
            assert!(!g[f].is_null(), "group field {f}");
        }
    }
    // Every node writes its pid file.
    for i in 1..=3 {
        let pid = read_pid(&dir.path().join(format!("n{i}"))).expect("courier.pid");
        assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "pid {pid} of n{i} is alive");
    }

    // A write through any node is readable through every node.
    let peers: Vec<String> = var("COURIER_ADMIN_NODES").split(',').map(String::from).collect();
    for (i, p) in peers.iter().enumerate() {
        for k in 0..5 {
            let out = courier(&["kv", "put", &format!("k{i}-{k}"), &format!("v{i}-{k}"), "--node", p]);
            assert!(out.status.success(), "put via {p}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    for p in &peers {
        for i in 0..peers.len() {
            for k in 0..5 {
                let out = courier(&["kv", "get", &format!("k{i}-{k}"), "--node", p]);
                assert!(out.status.success(), "get via {p}: {}", String::from_utf8_lossy(&out.stderr));
                assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("v{i}-{k}"));
            }
        }
    }
    // A missing key is an error, not an empty answer.
    assert!(!courier(&["kv", "get", "never-written"]).status.success());

    // An operator certificate from another CA is refused, and the node logs it.
    let foreign = tempfile::tempdir().unwrap();
    let fc = foreign.path().to_str().unwrap();
    assert!(Command::new(bin()).args(["cert", "create-ca", "--certs-dir", fc]).output().unwrap().status.success());
    assert!(Command::new(bin()).args(["cert", "create-client", "--certs-dir", fc, "--name", "mallory"]).output().unwrap().status.success());
    let status_as = |cert: std::path::PathBuf, key: std::path::PathBuf| {
        Command::new(bin())
            .args(["cluster", "status", "--node", &peers[0]])
            .env("COURIER_CA", dir.path().join("certs/ca.pem"))
            .env("COURIER_CERT", cert)
            .env("COURIER_KEY", key)
            .output()
            .unwrap()
    };
    let out = status_as(foreign.path().join("mallory.pem"), foreign.path().join("mallory-key.pem"));
    assert!(!out.status.success(), "a foreign operator certificate must be refused");
    must_wait(Duration::from_secs(10), "the refusal in n1's log", || {
        std::fs::read_to_string(dir.path().join("n1/node.log")).ok()?.contains("refused peer connection").then_some(())
    });
    // A node certificate is not an operator certificate.
    let out = status_as(dir.path().join("certs/n2.pem"), dir.path().join("certs/n2-key.pem"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNAUTHORIZED"), "{}", String::from_utf8_lossy(&out.stderr));

    // Ctrl-C (SIGTERM) stops the whole cluster.
    unsafe { libc::kill(dev.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while dev.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "courier dev did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 1..=3 {
        if read_pid(&dir.path().join(format!("n{i}"))).is_some() {
            let mut said = String::new();
            if let Some(mut e) = dev.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut said);
            }
            let log = std::fs::read_to_string(dir.path().join(format!("n{i}/node.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!("n{i} left its pid file on shutdown; courier dev said:\n{said}\nlast lines of n{i}/node.log:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
    }
}

#[test]
fn killing_the_busiest_leader_loses_nothing_and_the_node_catches_up() {
    let mut c = Cluster::start_settled(41, 3, FAST);
    for k in 0..60 {
        assert!(c.put_on(1 + k % 3, &format!("key{k}"), &format!("value{k}")), "put key{k}");
    }
    let s = c.status().unwrap();
    let led = leaders(&s);
    let victim = (1..=3u64).max_by_key(|n| led.values().filter(|l| **l == Some(*n)).count()).unwrap() as u32;
    let killed = Instant::now();
    c.kill9(victim);
    let survivors: Vec<u32> = (1..=3).filter(|i| *i != victim).collect();
    must_wait(Duration::from_secs(30), "a new leader in every group", || {
        let s = c.status_on(&survivors)?;
        leaders(&s).values().all(|l| l.is_some_and(|l| l != victim as u64)).then_some(())
    });
    eprintln!("FAILOVER: every group had a new leader {:?} after kill -9 of node {victim}", killed.elapsed());
    for k in 0..60 {
        assert_eq!(c.get_on(survivors[k % 2], &format!("key{k}")).as_deref(), Some(format!("value{k}").as_str()), "key{k} after failover");
    }
    // Writes go on with one node down.
    for k in 60..90 {
        assert!(c.put_on(survivors[k % 2], &format!("key{k}"), &format!("value{k}")), "put key{k} with a node down");
    }
    c.start(victim);
    // The restarted node catches up: every replica it holds reaches lag 0.
    must_wait(Duration::from_secs(60), "the restarted node to catch up", || {
        let s = c.status()?;
        let caught_up = s["groups"].as_array()?.iter().all(|g| {
            g["replicas"].as_array().is_some_and(|r| r.len() == 3 && r.iter().all(|r| r["lag"].as_u64() == Some(0)))
        });
        (caught_up && s["nodes"].as_array()?.iter().all(|n| n["state"] == "up")).then_some(())
    });
    for k in 0..90 {
        assert_eq!(c.get_on(victim, &format!("key{k}")).as_deref(), Some(format!("value{k}").as_str()));
    }

    // Graceful shutdown hands leadership over before the node exits: right
    // after it is gone every group already has a leader (after kill -9 the
    // groups it led have none until an election timeout passes).
    let s = c.status().unwrap();
    let led = leaders(&s);
    let busiest = (1..=3u64).max_by_key(|n| led.values().filter(|l| **l == Some(*n)).count()).unwrap() as u32;
    assert!(led.values().any(|l| *l == Some(busiest as u64)));
    c.stop(busiest);
    let others: Vec<u32> = (1..=3).filter(|i| *i != busiest).collect();
    // A handed-over group's new leader runs its election at once when told
    // (it may still be finishing as the old node exits), so look for up to
    // 350 ms: less than the 400 ms minimum election timeout an orphaned group
    // would need before anyone even starts an election.
    let gone = Instant::now();
    let mut orphaned;
    loop {
        let s = c.status_on(&others).unwrap();
        orphaned = leaders(&s).iter().filter(|(_, l)| l.is_none_or(|l| l == busiest as u64)).map(|(g, _)| *g).collect::<Vec<u64>>();
        if orphaned.is_empty() || gone.elapsed() > Duration::from_millis(350) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(orphaned.is_empty(), "groups without a leader right after SIGTERM of node {busiest}: {orphaned:?}");
    assert!(c.log(busiest).contains("handing over leadership"));
}

#[test]
fn wiped_node_rejoins_under_a_new_id_and_catches_up_by_snapshot() {
    // Small snapshots and a short grace period, so the test exercises both.
    let extra = "[raft]\nheartbeat_ms = 100\nelection_min_ms = 400\nelection_max_ms = 800\nsnapshot_logs = 20\nkeep_logs = 5\n\
                 [placement]\ntick_ms = 300\ndead_after_secs = 3\n";
    let mut c = Cluster::start_settled(42, 3, extra);
    for k in 0..200 {
        assert!(c.put_on(1, &format!("key{k}"), &format!("value{k}")), "put key{k}");
    }
    c.kill9(3);
    c.wipe(3);
    c.start(3);
    // The wiped node joins again as node 4; node 3's replicas move to it.
    let s = must_wait(Duration::from_secs(120), "groups to move from node 3 to node 4", || {
        let s = c.status_on(&[1, 2])?;
        let ok = voters(&s).values().all(|v| !v.contains(&3) && v.contains(&4) && v.len() == 3);
        (ok && s["placement_settled"] == true).then_some(s)
    });
    let ids: BTreeSet<u64> = s["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, BTreeSet::from([1, 2, 3, 4]), "ids are never reused");
    must_wait(Duration::from_secs(60), "node 4 to catch up", || {
        let s = c.status_on(&[1, 2])?;
        s["groups"].as_array()?.iter().all(|g| g["replicas"].as_array().unwrap().iter().all(|r| r["lag"].as_u64() == Some(0))).then_some(())
    });
    assert!(c.log(3).contains("installed snapshot"), "the new replica was seeded by a snapshot, not the whole log");
    // Snapshots arrive through staged files, moved into the database on install.
    let staging = c.nodes[&3].data.join("staging");
    assert!(staging.is_dir(), "snapshots were staged in {}", staging.display());
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0, "no staged file is left");
    // Everything written before the wipe is readable through the new node.
    for k in (0..200).step_by(7) {
        assert_eq!(c.get_on(3, &format!("key{k}")).as_deref(), Some(format!("value{k}").as_str()));
    }
}

#[test]
fn joining_nodes_rebalance_and_remove_node_moves_replicas_first() {
    let mut c = Cluster::start_settled(43, 3, FAST);
    c.add_node(4, FAST);
    c.add_node(5, FAST);
    let s = c.must_settle(5, Duration::from_secs(180));
    let data_groups = s["data_groups"].as_u64().unwrap() as usize;
    let bound = (3 * data_groups).div_ceil(5) + 1;
    for n in 1..=5u64 {
        let held = voters(&s).iter().filter(|(g, v)| **g != 0 && v.contains(&n)).count();
        assert!(held <= bound, "node {n} holds {held} data replicas, more than {bound}");
        assert!(held > 0, "node {n} got replicas");
    }

    // Remove node 2 while a writer keeps writing through node 1: no write may fail.
    let writer = {
        let certs = c.certs.clone();
        let peer = c.peer(1);
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let end = Instant::now() + Duration::from_secs(20);
            let mut k = 0;
            while Instant::now() < end {
                let out = Command::new(bin())
                    .args(["kv", "put", &format!("during{k}"), "x", "--node", &peer])
                    .env("COURIER_CA", certs.join("ca.pem"))
                    .env("COURIER_CERT", certs.join("operator.pem"))
                    .env("COURIER_KEY", certs.join("operator-key.pem"))
                    .output()
                    .unwrap();
                if !out.status.success() {
                    failures.push(String::from_utf8_lossy(&out.stderr).to_string());
                }
                k += 1;
            }
            (k, failures)
        })
    };
    let out = c.run_on(&[1], &["cluster", "remove-node", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = must_wait(Duration::from_secs(180), "node 2 removed", || {
        let s = c.status_on(&[1, 3])?;
        let removed = s["nodes"].as_array()?.iter().any(|n| n["id"] == 2 && n["state"] == "removed");
        (removed && voters(&s).values().all(|v| !v.contains(&2))).then_some(s)
    });
    assert!(voters(&s).iter().all(|(g, v)| *g == 0 || v.len() == 3), "every data group keeps 3 replicas: {:?}", voters(&s));
    let (writes, failures) = writer.join().unwrap();
    assert!(writes > 0);
    assert!(failures.is_empty(), "{} of {writes} writes failed during the move: {:?}", failures.len(), failures.first());
    assert_eq!(c.get_on(1, "during0").as_deref(), Some("x"));
}

#[test]
fn bad_config_and_unknown_data_version_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "name = \"n1\"\n[raft]\nheartbeat = 100\n").unwrap();
    let out = Command::new(bin()).args(["node", "--config", cfg.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("heartbeat") && err.contains("bad.toml"), "{err}");

    // A data directory written by an unknown format version.
    let c = Cluster::new(44);
    c.must_run(&["cert", "create-node", "--certs-dir", c.certs.to_str().unwrap(), "--name", "n1", "--host", "127.0.44.1"]);
    let data = dir.path().join("data");
    courier_storage::Store::open(&data).unwrap();
    courier_storage::testing::set_format_version(&data, "99").unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "name = \"n1\"\ndata_dir = \"{}\"\npeer_addr = \"127.0.44.1:7001\"\nclient_addr = \"127.0.44.1:7002\"\nadmin_addr = \"127.0.44.1:7003\"\n[tls]\nca = \"{c}/ca.pem\"\ncert = \"{c}/n1.pem\"\nkey = \"{c}/n1-key.pem\"\n",
            data.display(),
            c = c.certs.display()
        ),
    )
    .unwrap();
    let out = Command::new(bin()).args(["node", "--config", good.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("format version 99"), "{err}");
}

#[test]
fn a_node_with_a_foreign_certificate_cannot_join() {
    let mut c = Cluster::start_settled(45, 1, FAST);
    // A second CA issues node 2's certificate.
    let foreign = tempfile::tempdir().unwrap();
    let fc = foreign.path().to_str().unwrap();
    c.must_run(&["cert", "create-ca", "--certs-dir", fc]);
    c.must_run(&["cert", "create-node", "--certs-dir", fc, "--name", "n2", "--host", "127.0.45.2"]);
    for f in ["n2.pem", "n2-key.pem"] {
        std::fs::copy(foreign.path().join(f), c.certs.join(f)).unwrap();
    }
    c.add_node_with(2, FAST, false);
    must_wait(Duration::from_secs(20), "n1 to log the refusal", || c.log(1).contains("refused peer connection").then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    let s = c.status_on(&[1]).unwrap();
    assert_eq!(s["nodes"].as_array().unwrap().len(), 1, "the foreign node was not registered: {s}");
}

/// An operator refuses a removed node's certificate (`courier cluster
/// revoke-cert CERT_FILE`): the node, wiped and started again to rejoin
/// with it, is refused at the TLS door of every node and not registered,
/// while the others go on. Before: it joined again under a new id.
#[test]
fn a_revoked_certificate_cannot_rejoin() {
    let mut c = Cluster::start_settled(46, 3, FAST);
    c.add_node(4, FAST);
    c.must_settle(4, Duration::from_secs(180));
    let out = c.run_on(&[1], &["cluster", "remove-node", "4", "--wait"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Revoked while it still runs (a removed node still reads the meta
    // group through its peers): its open connections are ended.
    let cert = c.certs.join("n4.pem");
    let out = c.run_on(&[2], &["cluster", "revoke-cert", cert.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("revoked"), "{said}");
    must_wait(Duration::from_secs(30), "a connection of n4 to be closed", || (1..=3).any(|i| c.log(i).contains("closed a peer connection: its certificate was revoked")).then_some(()));
    c.stop(4);
    c.wipe(4);
    // Every node refreshes its list within a few seconds.
    std::thread::sleep(Duration::from_secs(3));
    c.start(4);
    must_wait(Duration::from_secs(30), "n1 to refuse the revoked certificate", || c.log(1).contains("certificate was revoked").then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    let s = c.status_on(&[1, 2, 3]).unwrap();
    let live: Vec<&serde_json::Value> = s["nodes"].as_array().unwrap().iter().filter(|n| n["state"] != "removed").collect();
    assert_eq!(live.len(), 3, "the revoked node did not join again: {s}");
    assert!(c.put_on(3, "after-revoke", "x"), "the cluster goes on");
    // A second revoke of the same certificate is fine.
    let out = c.run_on(&[1], &["cluster", "revoke-cert", cert.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.stop(4);
}
