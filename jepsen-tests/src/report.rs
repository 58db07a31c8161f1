//! The report: a summary (operations by outcome, faults, anomalies,
//! availability), written as `summary.json` and printed, and `report.html`
//! with latency over time and the fault windows shaded.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::checker::Anomaly;
use crate::history::{Entry, Kind};
use crate::nemesis::Window;

#[derive(Debug, Default, Serialize)]
pub struct Outcomes {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub valid: bool,
    pub duration_secs: f64,
    pub nodes: u32,
    /// Operations by function and outcome (the workload's, not the final reads).
    pub operations: BTreeMap<String, Outcomes>,
    pub faults: BTreeMap<&'static str, u64>,
    pub anomalies: BTreeMap<String, u64>,
    /// Share of workload operations that succeeded, overall and during faults.
    pub availability: f64,
    pub availability_in_faults: f64,
    /// Acknowledged sends: latency percentiles in ms.
    pub send_latency_ms: BTreeMap<&'static str, f64>,
    pub messages_acknowledged: u64,
    /// The first anomalies in full.
    pub examples: Vec<Anomaly>,
}

/// Completions of the workload's own operations (not the final checks).
fn workload(e: &Entry) -> bool {
    e.kind != Kind::Invoke && e.process != "final" && e.process != "nemesis" && e.f != "view"
}

/// Operations that count for availability: a probe with a revoked token
/// is meant to fail.
fn counts_for_availability(e: &Entry) -> bool {
    workload(e) && e.f != "probe"
}

pub fn summarize(
    history: &[Entry],
    windows: &[Window],
    anomalies: &[Anomaly],
    nodes: u32,
) -> Summary {
    let mut operations: BTreeMap<String, Outcomes> = BTreeMap::new();
    let (mut ok, mut all, mut ok_f, mut all_f) = (0u64, 0u64, 0u64, 0u64);
    let mut lat = Vec::new();
    for e in history.iter().filter(|e| workload(e)) {
        let o = operations.entry(e.f.clone()).or_default();
        let success = e.kind == Kind::Ok;
        match e.kind {
            Kind::Ok => o.ok += 1,
            Kind::Fail => o.fail += 1,
            _ => o.info += 1,
        }
        let t = e.invoked_ms.unwrap_or(e.time_ms);
        if !counts_for_availability(e) {
            continue;
        }
        all += 1;
        ok += success as u64;
        if windows.iter().any(|w| t >= w.start_ms && t <= w.end_ms) {
            all_f += 1;
            ok_f += success as u64;
        }
        if e.f == "send" && success {
            lat.push(e.time_ms - t);
        }
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() - 1) as f64 * p).round() as usize]
        }
    };
    let mut faults = BTreeMap::new();
    for w in windows {
        *faults.entry(w.fault).or_default() += 1;
    }
    let mut kinds = BTreeMap::new();
    for a in anomalies {
        *kinds.entry(a.kind.clone()).or_default() += 1;
    }
    Summary {
        valid: anomalies.is_empty(),
        duration_secs: history.last().map_or(0.0, |e| e.time_ms / 1000.0),
        nodes,
        messages_acknowledged: operations.get("send").map_or(0, |o| o.ok),
        operations,
        faults,
        anomalies: kinds,
        availability: ratio(ok, all),
        availability_in_faults: ratio(ok_f, all_f),
        send_latency_ms: [("p50", pct(0.5)), ("p99", pct(0.99)), ("max", pct(1.0))]
            .into_iter()
            .collect(),
        examples: anomalies.iter().take(20).cloned().collect(),
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// A self-contained page: the summary, and latency (log scale) over time.
pub fn html(summary: &Summary, history: &[Entry], windows: &[Window]) -> String {
    let (w, h, left, bottom) = (1100.0, 420.0, 60.0, 30.0);
    let end = history.last().map_or(1.0, |e| e.time_ms.max(1.0));
    let x = |t: f64| left + t / end * (w - left - 10.0);
    let (lo, hi) = (0.1f64.log10(), 20_000f64.log10());
    let y = |ms: f64| (h - bottom) - (ms.max(0.1).log10() - lo) / (hi - lo) * (h - bottom - 10.0);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    for win in windows {
        let (x0, x1) = (x(win.start_ms), x(win.end_ms));
        let _ = write!(
            svg,
            r##"<rect x="{x0:.1}" y="10" width="{:.1}" height="{:.1}" fill="#f4a" opacity="0.15"><title>{} {}</title></rect><text x="{x0:.1}" y="20" fill="#a05">{}</text>"##,
            (x1 - x0).max(1.0),
            h - bottom - 10.0,
            win.fault,
            esc(&win.detail),
            win.fault
        );
    }
    for ms in [1.0, 10.0, 100.0, 1_000.0, 10_000.0] {
        let yy = y(ms);
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{:.0}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="4" y="{:.1}">{ms} ms</text>"##,
            w - 10.0,
            yy + 4.0
        );
    }
    let points: Vec<&Entry> = history
        .iter()
        .filter(|e| workload(e) && e.invoked_ms.is_some())
        .collect();
    let step = (points.len() / 20_000).max(1);
    for e in points.iter().step_by(step) {
        let t = e.invoked_ms.unwrap_or(e.time_ms);
        let color = match e.kind {
            Kind::Ok => "#2a7",
            Kind::Fail => "#d33",
            _ => "#e90",
        };
        let _ = write!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.5" fill="{color}"/>"#,
            x(t),
            y(e.time_ms - t)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{left}" y="{}">0 s</text><text x="{:.0}" y="{}">{:.0} s</text></svg>"#,
        h - 8.0,
        w - 60.0,
        h - 8.0,
        end / 1000.0
    );
    let verdict = if summary.valid {
        "<p style=\"color:#2a7\"><b>valid: no anomaly</b></p>"
    } else {
        "<p style=\"color:#d33\"><b>INVALID: anomalies found</b></p>"
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>courier-jepsen report</title></head><body style=\"font-family:sans-serif\">\
         <h1>courier-jepsen</h1>{verdict}<h2>Latency over time</h2><p>Each dot is one operation at its start: \
         <span style=\"color:#2a7\">ok</span>, <span style=\"color:#e90\">unknown</span>, <span style=\"color:#d33\">failed</span>; \
         shaded: faults.</p>{svg}<h2>Summary</h2><pre>{}</pre></body></html>",
        esc(&serde_json::to_string_pretty(summary).unwrap_or_default())
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
