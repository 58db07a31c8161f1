//! The arrows between the node's parts, held by a test: the cluster
//! imports no service, no push and not the door; pushes import no service
//! and not the door; no service imports the door; no file is over 800
//! lines; no code compares error codes as strings; no reply is sorted by
//! kind at run time; the node serves no Raft call (the raft crate does).

use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src(part: &str) -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(part);
    let mut list = Vec::new();
    if root.is_dir() {
        files(&root, &mut list);
    } else {
        list.push(root.with_extension("rs"));
    }
    list.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))).collect()
}

/// Lines of code (not comments) of `part` that name any of `forbidden`.
fn offending(part: &str, forbidden: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, text) in src(part) {
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for f in forbidden {
                if code.contains(f) {
                    out.push(format!("{}:{}: {}", path.display(), n + 1, code));
                }
            }
        }
    }
    out
}

#[test]
fn the_cluster_knows_no_service_no_push_and_not_the_door() {
    let bad = offending("cluster", &["crate::gateway", "crate::auth", "crate::messaging", "crate::media", "crate::push", "crate::app", "crate::rpc"]);
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn pushes_know_the_cluster_and_nothing_above_it() {
    let bad = offending("push", &["crate::gateway", "crate::auth", "crate::messaging", "crate::media", "crate::app", "crate::rpc"]);
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn no_service_imports_the_door() {
    for part in ["auth", "messaging", "media", "app"] {
        let bad = offending(part, &["crate::gateway", "gateway::", "crate::rpc"]);
        assert!(bad.is_empty(), "{part}: {bad:#?}");
    }
}

#[test]
fn the_node_serves_no_raft_call() {
    // Raft's transport is whole in the raft crate: the node wires
    // `courier_raft::server` and names none of its messages or handlers.
    let bad = offending("", &["RaftBatchRequest", "ForwardBatch", "SnapshotChunk", "handle_rpc", "handle_forward", "handle_snapshot", "RaftRpc"]);
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn no_file_of_the_node_is_over_800_lines() {
    let mut all = Vec::new();
    files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut all);
    let long: Vec<String> = all
        .iter()
        .map(|p| (p, std::fs::read_to_string(p).expect("readable").lines().count()))
        .filter(|(_, n)| *n > 800)
        .map(|(p, n)| format!("{}: {n} lines", p.display()))
        .collect();
    assert!(long.is_empty(), "{long:#?}");
}

#[test]
fn no_code_compares_error_codes_as_strings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut all = Vec::new();
    for dir in ["node/src", "node/tests", "client/src", "cli/src", "cli/tests", "jepsen-tests/src"] {
        files(&root.join(dir), &mut all);
    }
    let mut bad = Vec::new();
    for p in all.into_iter().filter(|p| !p.ends_with("node/tests/layers.rs")) {
        let text = std::fs::read_to_string(&p).expect("readable");
        for (n, line) in text.lines().enumerate() {
            let squeezed: String = line.split_whitespace().collect();
            // A comparison with a string in the brief's spelling (a login
            // code such as "00000" is no error code).
            for pattern in ["code()==\"", "code()!=\"", "code==\"", "code!=\"", "code(),\"", "code.as_str()==\"", "matches!(self.code(),\""] {
                let hit = squeezed.match_indices(pattern).any(|(i, _)| squeezed[i + pattern.len()..].starts_with(|c: char| c.is_ascii_uppercase()));
                if hit {
                    bad.push(format!("{}:{}: {}", p.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(bad.is_empty(), "compare `courier_proto::Code` values instead: {bad:#?}");
}

/// Answers are typed: a caller reads a reply as the answer type of what it
/// asked (`courier_raft::Request`, `app::Request`), so no code sorts
/// replies by kind at run time and fails on "an unexpected reply".
#[test]
fn no_reply_is_sorted_by_kind_at_run_time() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut all = Vec::new();
    for dir in ["node/src", "raft/src", "client/src", "cli/src"] {
        files(&root.join(dir), &mut all);
    }
    let mut bad = Vec::new();
    for p in all {
        let text = std::fs::read_to_string(&p).expect("readable");
        for (n, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            if !line.trim_start().starts_with("//") && (lower.contains("unexpected reply") || lower.contains("unexpected answer")) {
                bad.push(format!("{}:{}: {}", p.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(bad.is_empty(), "type the answer instead: {bad:#?}");
}
