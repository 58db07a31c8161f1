//! `courier-jepsen`: starts a cluster of real `courier` nodes, runs a chat
//! workload through the client SDK while nemeses kill, pause, partition,
//! add, remove and wipe nodes and skew clocks, records every operation, and
//! checks the history against the guarantees. Exit 0: no anomaly; 1: an
//! anomaly; 2: the harness itself failed.

mod checker;
mod cluster;
mod history;
mod nemesis;
mod report;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;

/// A chaos harness for Courier, in the spirit of Jepsen.
///
/// Writes DIR/history.jsonl (every operation: invoke, then ok / fail / info),
/// DIR/summary.json, DIR/anomalies.json and DIR/report.html (latency over
/// time, faults shaded); node logs and data are in DIR/cluster/.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 5)]
    nodes: u32,
    /// Seconds of workload under faults.
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Faults: all, none, or a comma list of kill, pause, partition,
    /// membership, wipe, clock (or single ones: kill-leader, kill-majority,
    /// partition-halves, partition-leader, partition-bridge).
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Where the history, report and cluster go (emptied first).
    #[arg(long, default_value = "./jepsen-out")]
    out: PathBuf,
    /// Node I listens on 127.0.SLOT.I (pick another to run two at once).
    #[arg(long, default_value_t = 200)]
    slot: u8,
    /// The `courier` binary (default: the one beside this program).
    #[arg(long)]
    courier: Option<PathBuf>,
    /// Accounts taking part.
    #[arg(long, default_value_t = 4)]
    users: usize,
    /// Shared group chats they write into.
    #[arg(long, default_value_t = 2)]
    chats: usize,
    /// Sending clients per account.
    #[arg(long, default_value_t = 2)]
    senders_per_user: usize,
    /// Workload operations per second, over all senders.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Instead of starting a cluster, attach to a running `courier dev --dir
    /// DIR` (faults: kill and pause; partitions when every node has its own
    /// address other than 127.0.0.1). Nodes it restarts keep running after.
    #[arg(long, value_name = "DIR")]
    attach: Option<PathBuf>,
    /// Testing the harness: start the nodes with `debug.unsafe_ignore_random_id`
    /// (a deliberate G3 bug; debug builds only). The run must then fail.
    #[arg(long)]
    unsafe_ignore_random_id: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "courier_jepsen=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("courier-jepsen: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// On Ctrl-C or SIGTERM: kill every node this run started (by the pid in
/// its data directory), remove the firewall rules, exit 2.
async fn clean_up_on_signal(cluster_dir: PathBuf, slot: u8, attached: bool) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("courier-jepsen: interrupted; stopping the nodes");
    cluster::kill_all(&cluster_dir, slot, !attached);
    std::process::exit(2);
}

/// Faults that work on a cluster this harness attached to.
fn attachable(f: nemesis::Fault, partitionable: bool) -> bool {
    use nemesis::Fault::*;
    match f {
        Kill | KillLeader | KillMajority | Pause => true,
        PartitionHalves | PartitionLeader | PartitionBridge => partitionable,
        Membership | Wipe | Clock => false,
    }
}

/// Runs the whole test; `Ok(valid)`.
fn run(args: Args) -> Result<bool> {
    let faults = nemesis::parse(&args.nemesis)?;
    anyhow::ensure!((1..=200).contains(&args.nodes), "--nodes must be 1 to 200");
    anyhow::ensure!(
        args.users >= 1 && args.chats >= 1 && args.senders_per_user >= 1,
        "--users, --chats and --senders-per-user must be at least 1"
    );
    let bin = match &args.courier {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("courier"),
    };
    anyhow::ensure!(
        bin.exists(),
        "no courier binary at {} (build the workspace, or pass --courier PATH)",
        bin.display()
    );
    if args.out.exists() {
        std::fs::remove_dir_all(&args.out)
            .with_context(|| format!("empty {}", args.out.display()))?;
    }
    std::fs::create_dir_all(&args.out)?;
    let out = std::fs::canonicalize(&args.out)?;

    let mut cluster = match &args.attach {
        Some(dir) => {
            anyhow::ensure!(
                !args.unsafe_ignore_random_id,
                "--unsafe-ignore-random-id needs nodes started by courier-jepsen"
            );
            let c = cluster::Cluster::attach(dir, &bin)?;
            let unsupported: Vec<&str> = faults
                .iter()
                .filter(|f| !attachable(**f, c.partitionable()))
                .map(|f| f.name())
                .collect();
            anyhow::ensure!(
                unsupported.is_empty(),
                "attached to {}: cannot inject {} (membership, wipe and clock need nodes started by courier-jepsen; partitions need a distinct address per node, e.g. `courier dev --host 127.0.0.2` is not enough)",
                dir.display(),
                unsupported.join(", ")
            );
            eprintln!(
                "attached to {} nodes of {}",
                c.members().len(),
                dir.display()
            );
            c
        }
        None => {
            eprintln!("starting {} nodes on 127.0.{}.x …", args.nodes, args.slot);
            let opts = cluster::Options {
                unsafe_ignore_random_id: args.unsafe_ignore_random_id,
            };
            cluster::Cluster::create(&out.join("cluster"), args.slot, args.nodes, &bin, opts)?
        }
    };
    let cluster_dir = cluster.dir.clone();
    let history = Arc::new(history::History::create(&out.join("history.jsonl"))?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.spawn(clean_up_on_signal(
        cluster_dir,
        cluster.slot,
        cluster.attached,
    ));
    let nodes: Vec<String> = cluster
        .members()
        .into_iter()
        .map(|i| cluster.client_addr(i))
        .collect();
    let ca_pem = cluster.ca_pem()?;
    let endpoint = rt.block_on(async { courier_client::shared_endpoint() })?;
    let target = workload::Target {
        nodes,
        ca_pem,
        endpoint,
    };
    let wopts = workload::Options {
        users: args.users,
        chats: args.chats,
        senders_per_user: args.senders_per_user,
    };
    let setup = rt
        .block_on(workload::Setup::create(target.clone(), &wopts))
        .context("workload set-up")?;
    eprintln!(
        "workload: {} users, {} chats, {} senders; faults: {} for {} s",
        args.users,
        args.chats,
        setup.senders.len(),
        args.nemesis,
        args.time
    );

    let until = Instant::now() + Duration::from_secs(args.time);
    let stop = AtomicBool::new(false);
    let (final_tx, final_rx) = tokio::sync::watch::channel(false);
    let phones = setup.phones();
    let workload::Setup {
        chats,
        senders,
        devices,
        reader_token,
        ..
    } = setup;
    let pause = if args.rate > 0.0 {
        Duration::from_secs_f64(senders.len() as f64 / args.rate)
    } else {
        Duration::ZERO
    };
    let members = cluster.members().len() as u32;

    let (windows, settled, device_tasks) = std::thread::scope(|s| {
        let nemesis = s.spawn(|| {
            let mut n = nemesis::Nemesis { cluster: &mut cluster, history: &history, faults: faults.clone(), next_index: members + 1 };
            let windows = n.run(until, &stop);
            // Heal everything and let the cluster settle before the final checks.
            let healed = nemesis::heal_all(n.cluster).and_then(|_| n.cluster.wait_settled(Duration::from_secs(180)).map(|_| ()));
            history.note("nemesis", "healed", serde_json::json!({"settled": healed.is_ok(), "error": healed.as_ref().err().map(|e| format!("{e:#}"))}));
            (windows, healed)
        });
        let device_tasks = rt.block_on(async {
            let mut workers = Vec::new();
            for (k, d) in senders.into_iter().enumerate() {
                workers.push(tokio::spawn(workload::sender(
                    history.clone(),
                    d,
                    format!("c{k}"),
                    chats.clone(),
                    pause,
                    until,
                )));
            }
            workers.push(tokio::spawn(workload::revoker(
                history.clone(),
                phones,
                target.clone(),
                until,
            )));
            let devices: Vec<_> = devices
                .into_iter()
                .enumerate()
                .map(|(k, d)| {
                    tokio::spawn(workload::device(
                        history.clone(),
                        d,
                        format!("d{k}"),
                        until,
                        final_rx.clone(),
                    ))
                })
                .collect();
            for w in workers {
                // Every operation is bounded in time; this is a safety net.
                let _ = tokio::time::timeout(Duration::from_secs(120), w).await;
            }
            devices
        });
        stop.store(true, Ordering::Relaxed);
        let (windows, healed) = nemesis.join().expect("nemesis thread");
        (windows, healed, device_tasks)
    });
    if let Err(e) = &settled {
        eprintln!("warning: the cluster did not settle after the faults: {e:#}");
    }

    // Final state: every device syncs once more, every chat is read through every node.
    let final_nodes: Vec<String> = cluster
        .members()
        .into_iter()
        .map(|i| cluster.client_addr(i))
        .collect();
    rt.block_on(async {
        let _ = final_tx.send(true);
        for d in device_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(120), d).await;
        }
        workload::final_reads(&history, &target, &reader_token, &chats, &final_nodes).await;
        if let Some(node) = final_nodes.first() {
            workload::final_files(&history, &target, &reader_token, node).await;
        }
    });
    history.flush();
    cluster.shutdown();

    let entries = history.entries();
    let anomalies = checker::check(&entries);
    let summary = report::summarize(&entries, &windows, &anomalies, members);
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    std::fs::write(
        out.join("anomalies.json"),
        serde_json::to_string_pretty(&anomalies)?,
    )?;
    std::fs::write(
        out.join("report.html"),
        report::html(&summary, &entries, &windows),
    )?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    println!("report: {}", out.join("report.html").display());
    if !summary.valid {
        eprintln!(
            "INVALID: {} anomalies (see {})",
            anomalies.len(),
            out.join("anomalies.json").display()
        );
    }
    Ok(summary.valid)
}
