//! The harness run the way CI and operators run it: the `courier-jepsen`
//! binary against real `courier` processes.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs `courier-jepsen` with `args`, killed (by its pid) after `limit`.
fn must_run_jepsen(out: &Path, args: &[&str], limit: Duration) -> (ExitStatus, Value, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_courier-jepsen"))
        .args(args)
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .spawn()
        .expect("start courier-jepsen");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            // SIGTERM: the harness stops its nodes and removes its firewall rules.
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            std::thread::sleep(Duration::from_secs(10));
            let _ = child.kill();
            let _ = child.wait();
            panic!("courier-jepsen {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let read = |name: &str| -> Value {
        let text = std::fs::read_to_string(out.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e} (exit {status})"));
        serde_json::from_str(&text).expect("json")
    };
    (status, read("summary.json"), read("anomalies.json"))
}

#[test]
fn a_short_schedule_of_kills_and_partitions_finds_no_anomaly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (status, summary, anomalies) = must_run_jepsen(
        &out,
        &[
            "--nodes",
            "5",
            "--time",
            "100",
            "--nemesis",
            "kill,partition",
            "--slot",
            "201",
        ],
        Duration::from_secs(420),
    );
    assert!(status.success(), "exit {status}; anomalies: {anomalies:#}");
    assert_eq!(summary["valid"], true);
    assert_eq!(anomalies, serde_json::json!([]));
    // The run did what it claims: faults of both kinds, and real traffic.
    let faults = summary["faults"].as_object().unwrap();
    assert!(
        faults.keys().any(|k| k.starts_with("kill")),
        "no kill in {faults:?}"
    );
    assert!(
        faults.keys().any(|k| k.starts_with("partition")),
        "no partition in {faults:?}"
    );
    assert!(
        summary["messages_acknowledged"].as_u64().unwrap() > 100,
        "{summary:#}"
    );
    assert!(
        summary["operations"]["revoke"]["ok"].as_u64().unwrap() > 0,
        "{summary:#}"
    );
    let history = std::fs::read_to_string(out.join("history.jsonl")).unwrap();
    assert!(
        history
            .lines()
            .any(|l| l.contains("\"f\":\"view\"") && l.contains("\"type\":\"ok\"")),
        "no device view was checked"
    );
    assert!(
        history
            .lines()
            .filter(|l| l.contains("\"f\":\"read\"") && l.contains("\"type\":\"ok\""))
            .count()
            >= 5,
        "final reads through every node"
    );
    assert!(
        history
            .lines()
            .any(|l| l.contains("\"f\":\"download\"") && l.contains("\"type\":\"ok\"")),
        "files sent in messages were downloaded and compared after healing"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("<rect"),
        "the report plots latency with fault windows"
    );
}

#[test]
fn a_node_that_forgets_random_ids_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (status, summary, anomalies) = must_run_jepsen(
        &out,
        &[
            "--nodes",
            "3",
            "--time",
            "10",
            "--nemesis",
            "none",
            "--slot",
            "202",
            "--unsafe-ignore-random-id",
        ],
        Duration::from_secs(240),
    );
    assert_eq!(
        status.code(),
        Some(1),
        "an anomaly must exit 1; summary: {summary:#}"
    );
    assert_eq!(summary["valid"], false);
    assert!(
        summary["anomalies"]["G3-duplicate"].as_u64().unwrap_or(0) > 0,
        "{summary:#}"
    );
    assert!(
        anomalies
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "G3-duplicate")
    );
}
