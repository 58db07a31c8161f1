//! The node's wall clock, read only at the edges (the proposer stamps the
//! time into commands; decisions take it as a value). Tests can shift it with
//! `clock_offset_file`.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_file: Option<PathBuf>,
}

impl Clock {
    pub fn new(offset_file: Option<PathBuf>) -> Clock {
        Clock { offset_file }
    }

    /// Milliseconds since the Unix epoch, plus the test offset if configured.
    pub fn now_ms(&self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        let offset_secs: i64 = self
            .offset_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        now.saturating_add(offset_secs.saturating_mul(1000)).max(0) as u64
    }
}
