//! Courier Web end to end: a 3-node cluster serving the page and
//! WebTransport, two headless Chromium pages (`web/tests/chat.mjs`, with
//! playwright-core and Debian's chromium) that sign up, chat live, type, and
//! keep chatting when one page's node is killed; then a terminal user sees
//! the same messages, with names.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const EXTRA: &str = "development = true\n[raft]\nheartbeat_ms = 100\nelection_min_ms = 400\nelection_max_ms = 800\n[placement]\ntick_ms = 300\n[auth]\ntest_numbers = true\nlogins_per_address_per_minute = 0\n[web]\naddr = \"@HOST@:7004\"\n";

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web")
}

fn chromium() -> PathBuf {
    let path = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(path.exists(), "{} is missing: `scripts/test` installs Debian's chromium (COURIER_BROWSER_TESTS=1 scripts/setup)", path.display());
    path
}

/// An HTTP GET on the page port (plain HTTP on loopback): (status line, headers, body).
fn get(addr: &str, path: &str) -> Option<(String, String, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
    let mut all = String::new();
    s.read_to_string(&mut all).ok()?;
    let (head, body) = all.split_once("\r\n\r\n")?;
    let (status, headers) = head.split_once("\r\n")?;
    Some((status.to_string(), headers.to_lowercase(), body.to_string()))
}

#[test]
fn two_browser_pages_chat_live_and_one_survives_its_node_dying() {
    let chromium = chromium();
    let mut c = Cluster::start_settled(97, 3, EXTRA);
    let page = |i: u32| format!("{}:7004", c.host(i));

    // Every node's page lists every node, with the hashes of its certificates.
    for i in 1..=3 {
        let dir = must_wait(Duration::from_secs(30), &format!("node {i}'s web.json to list 3 nodes"), || {
            let (status, _, body) = get(&page(i), "/web.json")?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (status.contains("200") && v["nodes"].as_array()?.len() == 3).then_some(v)
        });
        assert_eq!(dir["node_id"], i, "{dir}");
        for n in dir["nodes"].as_array().unwrap() {
            let hashes = n["cert_sha256"].as_array().unwrap();
            assert!(!hashes.is_empty() && hashes.iter().all(|h| h.as_str().is_some_and(|h| h.len() == 64)), "{n}");
            assert!(n["url"].as_str().unwrap().starts_with("https://127.0.97."), "{n}");
        }
    }
    // The page: its script only, under a policy that forbids inline code.
    let (status, headers, body) = get(&page(1), "/").expect("the page");
    assert!(status.contains("200"), "{status}");
    assert!(headers.contains("content-security-policy: default-src 'none'; script-src 'self'"), "{headers}");
    assert!(headers.contains("x-content-type-options: nosniff"), "{headers}");
    assert!(body.contains("app.js"));
    let (status, _, _) = get(&page(1), "/../../etc/passwd").expect("an answer");
    assert!(status.contains("404"), "{status}");

    let artifacts = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| std::env::temp_dir()).join("web-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let urls = (1..=3).map(|i| format!("http://{}/", page(i))).collect::<Vec<_>>().join(",");
    let mut script = Command::new("node")
        .arg("tests/chat.mjs")
        .current_dir(web_dir())
        .env("COURIER_WEB_URLS", &urls)
        .env("COURIER_ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node web/tests/chat.mjs (Node 20 and `npm ci` in web/)");
    let pid = script.id();
    let mut stdin = script.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = script.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut result = None;
    let mut killed = None;
    while result.is_none() && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) else {
            if script.try_wait().unwrap().is_some() {
                break;
            }
            continue;
        };
        println!("page test: {line}");
        if let Some(n) = line.strip_prefix("KILL ") {
            let n: u32 = n.trim().parse().expect("a node id");
            c.kill9(n);
            killed = Some(n);
            stdin.write_all(b"KILLED\n").unwrap();
            stdin.flush().unwrap();
        } else if line == "OK" || line.starts_with("FAIL") {
            result = Some(line);
        }
    }
    // It closes its browser after its last line: a bounded wait, then the kill.
    let exit_by = Instant::now() + Duration::from_secs(20);
    while script.try_wait().unwrap().is_none() && Instant::now() < exit_by {
        std::thread::sleep(Duration::from_millis(100));
    }
    if script.try_wait().unwrap().is_none() {
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let status = script.wait().unwrap();
    assert_eq!(result.as_deref(), Some("OK"), "the browser test did not pass (exit {status}); screenshots in {}", artifacts.display());
    assert!(status.success());
    let killed = killed.expect("the page test asked for its node to be killed");

    // A terminal user sees what the pages sent, with the senders' names.
    let home = tempfile::tempdir().unwrap();
    let up: Vec<u32> = (1..=3).filter(|i| *i != killed).collect();
    let (ok, _, err) = c.user_cli_on(&up, home.path(), "bob", &["login", "--phone", "+9996620002", "--code", "22222"]);
    assert!(ok, "{err}");
    let (ok, dialogs, err) = c.user_cli_on(&up, home.path(), "bob", &["dialogs"]);
    assert!(ok, "{err}");
    assert!(dialogs.contains("Alice Web"), "a private chat is titled by the other person: {dialogs}");
    let (ok, history, err) = c.user_cli_on(&up, home.path(), "bob", &["history", "+9996610001"]);
    assert!(ok, "{err}");
    for text in ["hello from alice", "after kill 1", "after kill 3"] {
        assert!(history.contains(text), "{text:?} in {history}");
    }
    assert!(history.contains("Alice Web: hello from alice"), "history shows names, not ids: {history}");
}

/// The page's own logic without a browser (`web/tests/unit.mjs`): the frame
/// reader (split, joined, oversized and cut frames), the pts order (once,
/// in order, gaps held), and login and failover against an in-memory
/// cluster. Nothing here stands for the real nodes: the test above does.
#[test]
fn the_page_s_frames_and_ordering_pass_their_unit_tests() {
    let out = Command::new("node").arg("tests/unit.mjs").current_dir(web_dir()).output().expect("run node web/tests/unit.mjs (Node 20, `npm ci` in web/)");
    assert!(
        out.status.success(),
        "web unit tests failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
