//! The history: every operation as an invocation and a completion, in the
//! order they happened, written as JSON lines (`history.jsonl`) and kept in
//! memory for the checkers.
//!
//! A completion is `ok` (it happened), `fail` (it certainly did not happen)
//! or `info` (unknown: it may or may not have happened — a timeout, a broken
//! connection, `UNAVAILABLE`). Checkers treat `info` as Jepsen does: never as
//! a success and never as a failure.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Milliseconds since the run started.
    pub time_ms: f64,
    /// Who did it: `c3` (a client), `d2` (a device), `nemesis`, `final`.
    pub process: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// What: `send`, `edit`, `delete`, `revoke`, `probe`, `view`, `read`, `fault`, …
    pub f: String,
    /// The node the client was connected to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default)]
    pub value: Value,
    /// The error code of a `fail` or `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// On a completion: when its operation was invoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoked_ms: Option<f64>,
}

impl Entry {
    pub fn get_u64(&self, field: &str) -> Option<u64> {
        self.value.get(field).and_then(Value::as_u64)
    }

    pub fn get_str(&self, field: &str) -> Option<&str> {
        self.value.get(field).and_then(Value::as_str)
    }
}

/// The history being written. Cheap to share behind an `Arc`.
pub struct History {
    start: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    entries: Vec<Entry>,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

/// An operation that was invoked and must be completed.
pub struct Pending {
    process: String,
    f: String,
    value: Value,
    pub invoked_ms: f64,
}

impl History {
    /// A history written to `path` (and kept in memory).
    pub fn create(path: &Path) -> anyhow::Result<History> {
        let file = std::fs::File::create(path)?;
        Ok(History {
            start: Instant::now(),
            inner: Mutex::new(Inner {
                entries: Vec::new(),
                file: Some(std::io::BufWriter::new(file)),
            }),
        })
    }

    pub fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    fn push(&self, e: Entry) {
        let mut inner = self.inner.lock().expect("history lock");
        if let Some(f) = inner.file.as_mut() {
            // A history that cannot be written is still checked from memory.
            let _ = serde_json::to_writer(&mut *f, &e)
                .map_err(std::io::Error::from)
                .and_then(|_| f.write_all(b"\n"));
        }
        inner.entries.push(e);
    }

    /// Records an invocation; complete it with [`History::complete`].
    pub fn invoke(&self, process: &str, f: &str, value: Value) -> Pending {
        let time_ms = self.now_ms();
        self.push(Entry {
            time_ms,
            process: process.into(),
            kind: Kind::Invoke,
            f: f.into(),
            node: None,
            value: value.clone(),
            error: None,
            invoked_ms: None,
        });
        Pending {
            process: process.into(),
            f: f.into(),
            value,
            invoked_ms: time_ms,
        }
    }

    /// Records the completion of `p`. `extra` fields are added to its value.
    pub fn complete(
        &self,
        p: Pending,
        kind: Kind,
        node: Option<String>,
        extra: Value,
        error: Option<String>,
    ) -> f64 {
        let mut value = p.value;
        if let (Value::Object(v), Value::Object(x)) = (&mut value, extra) {
            v.extend(x);
        }
        let time_ms = self.now_ms();
        self.push(Entry {
            time_ms,
            process: p.process,
            kind,
            f: p.f,
            node,
            value,
            error,
            invoked_ms: Some(p.invoked_ms),
        });
        time_ms
    }

    /// Records something that has no duration (a fault starting or ending, a final view).
    pub fn note(&self, process: &str, f: &str, value: Value) {
        let time_ms = self.now_ms();
        self.push(Entry {
            time_ms,
            process: process.into(),
            kind: Kind::Info,
            f: f.into(),
            node: None,
            value,
            error: None,
            invoked_ms: None,
        });
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.inner.lock().expect("history lock").entries.clone()
    }

    pub fn flush(&self) {
        if let Some(f) = self.inner.lock().expect("history lock").file.as_mut() {
            let _ = f.flush();
        }
    }
}
