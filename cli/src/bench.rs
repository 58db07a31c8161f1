//! `courier bench kv`: replicated durable writes through the KV probe, with
//! concurrent writers spread over the nodes.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use courier_proto::peer::KvPutRequest;
use hdrhistogram::Histogram;

use crate::{Conn, admin};

#[derive(Args)]
pub struct KvBenchArgs {
    #[command(flatten)]
    conn: Conn,
    /// Concurrent writers (each waits for its write before the next).
    #[arg(long, default_value_t = 1)]
    writers: usize,
    /// How long to write.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    #[arg(long)]
    json: bool,
}

pub async fn kv(args: KvBenchArgs) -> Result<()> {
    if args.writers == 0 || args.writers > 4096 {
        bail!("--writers must be between 1 and 4096");
    }
    // One connection per node; writers take turns over them.
    let mut clients = Vec::new();
    for addr in &args.conn.nodes {
        let conn = Conn { nodes: vec![addr.clone()], ..args.conn.clone() };
        clients.push(admin::connect(&conn).await?);
    }
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..args.writers {
        let mut client = clients[w % clients.len()].clone();
        let value = vec![b'x'; args.value_size];
        tasks.spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let mut errors = 0u64;
            let mut i = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                let r = client.kv_put(KvPutRequest { key: format!("bench/{w}/{i}"), value: value.clone() }).await;
                match r {
                    Ok(_) => hist.record(t.elapsed().as_micros() as u64).expect("record"),
                    Err(_) => errors += 1,
                }
                i += 1;
            }
            (hist, errors)
        });
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (h, e) = r?;
        hist.add(h)?;
        errors += e;
    }
    let ops = hist.len() as f64 / args.seconds as f64;
    let (p50, p99) = (hist.value_at_quantile(0.5) as f64 / 1000.0, hist.value_at_quantile(0.99) as f64 / 1000.0);
    if args.json {
        println!("{}", serde_json::json!({"writers": args.writers, "ops_per_sec": ops, "p50_ms": p50, "p99_ms": p99, "errors": errors, "ops": hist.len()}));
    } else {
        println!("writers {:>4}: {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} ops, {} errors)", args.writers, ops, p50, p99, hist.len(), errors);
    }
    Ok(())
}
