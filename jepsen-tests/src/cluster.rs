//! Cluster control: real `courier` processes, each on its own loopback
//! address (127.0.SLOT.I), set up with the commands an operator uses
//! (`courier cert …`, `courier node --config`, `courier cluster init|status|
//! remove-node`). Faults act on the processes (signals), their data
//! directories, their clock offset files, and the network (nftables).
//!
//! Everything here blocks: the nemesis runs it on its own thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Ports every node uses on its own address.
const PEER_PORT: u16 = 7001;
const CLIENT_PORT: u16 = 7002;
const ADMIN_PORT: u16 = 7003;

pub struct NodeProc {
    /// The node's address (partitions act on it), peer and client `ip:port`.
    pub host: String,
    pub peer: String,
    pub client: String,
    pub config: PathBuf,
    pub data: PathBuf,
    pub log: PathBuf,
    pub clock: PathBuf,
    pub child: Option<Child>,
    /// A running node this harness attached to (not its child): its pid.
    pub external: Option<i32>,
    pub paused: bool,
    /// Decommissioned by `remove-node`: not restarted, not counted.
    pub retired: bool,
}

/// What every node's config adds to the defaults.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The deliberate G3 bug (`debug.unsafe_ignore_random_id`).
    pub unsafe_ignore_random_id: bool,
}

pub struct Cluster {
    pub dir: PathBuf,
    pub slot: u8,
    bin: PathBuf,
    certs: PathBuf,
    opts: Options,
    pub nodes: BTreeMap<u32, NodeProc>,
    /// nftables rules in place.
    partitioned: bool,
    /// Attached to a cluster someone else started: it keeps running after the run.
    pub attached: bool,
}

impl Cluster {
    /// Certificates, `n` nodes, `cluster init`; returns once placement settled.
    pub fn create(dir: &Path, slot: u8, n: u32, bin: &Path, opts: Options) -> Result<Cluster> {
        std::fs::create_dir_all(dir)?;
        let dir = std::fs::canonicalize(dir)?;
        let certs = dir.join("certs");
        let mut c = Cluster {
            dir,
            slot,
            bin: bin.into(),
            certs,
            opts,
            nodes: BTreeMap::new(),
            partitioned: false,
            attached: false,
        };
        c.heal_network()?; // rules a crashed earlier run left behind
        let certs = c.certs.to_string_lossy().to_string();
        c.must_cli(&["cert", "create-ca", "--certs-dir", &certs])?;
        c.must_cli(&[
            "cert",
            "create-client",
            "--certs-dir",
            &certs,
            "--name",
            "operator",
        ])?;
        c.add_node(1, &[])?;
        wait(Duration::from_secs(30), "cluster init", || {
            let out = c.cli_on(&[1], &["cluster", "init"], Duration::from_secs(10))?;
            (out.status.success()
                || String::from_utf8_lossy(&out.stderr).contains("already belongs"))
            .then_some(())
        })?;
        for i in 2..=n {
            c.add_node(i, &[c.peer(1)])?;
            c.wait_registered(i)?;
        }
        c.wait_settled(Duration::from_secs(120))?;
        Ok(c)
    }

    /// Attaches to a running `courier dev --dir DIR` cluster: its `env` file
    /// names the nodes, `nI/courier.pid` their processes, `nI/courier.toml`
    /// how to restart them.
    pub fn attach(dir: &Path, bin: &Path) -> Result<Cluster> {
        let dir = std::fs::canonicalize(dir)
            .with_context(|| format!("no cluster directory {}", dir.display()))?;
        let env = std::fs::read_to_string(dir.join("env"))
            .with_context(|| format!("{}/env (written by `courier dev`)", dir.display()))?;
        let var = |name: &str| -> Vec<String> {
            env.lines()
                .filter_map(|l| {
                    l.trim()
                        .trim_start_matches("export ")
                        .strip_prefix(&format!("{name}="))
                })
                .flat_map(|v| v.split(',').map(str::to_string))
                .filter(|v| !v.is_empty())
                .collect()
        };
        let (clients, peers) = (var("COURIER_NODES"), var("COURIER_ADMIN_NODES"));
        if clients.is_empty() || clients.len() != peers.len() {
            bail!(
                "{}/env must list COURIER_NODES and COURIER_ADMIN_NODES, node 1 first",
                dir.display()
            );
        }
        let mut nodes = BTreeMap::new();
        for (k, (client, peer)) in clients.into_iter().zip(peers).enumerate() {
            let i = k as u32 + 1;
            let data = dir.join(format!("n{i}"));
            let external = std::fs::read_to_string(data.join("courier.pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok());
            let host = peer
                .rsplit_once(':')
                .map(|(h, _)| h.to_string())
                .unwrap_or_default();
            let node = NodeProc {
                host,
                peer,
                client,
                config: data.join("courier.toml"),
                log: data.join("node.log"),
                clock: data.join("jepsen.clock"),
                data,
                child: None,
                external,
                paused: false,
                retired: false,
            };
            nodes.insert(i, node);
        }
        Ok(Cluster {
            certs: dir.join("certs"),
            dir,
            slot: 0,
            bin: bin.into(),
            opts: Options::default(),
            nodes,
            partitioned: false,
            attached: true,
        })
    }

    /// Whether partitions can tell the nodes apart: each on its own address,
    /// none on the address clients come from.
    pub fn partitionable(&self) -> bool {
        let hosts: std::collections::BTreeSet<&str> =
            self.nodes.values().map(|n| n.host.as_str()).collect();
        hosts.len() == self.nodes.len() && !hosts.contains("127.0.0.1")
    }

    pub fn host(&self, i: u32) -> String {
        self.nodes
            .get(&i)
            .map_or_else(|| format!("127.0.{}.{}", self.slot, i), |n| n.host.clone())
    }

    pub fn peer(&self, i: u32) -> String {
        self.nodes.get(&i).map_or_else(
            || format!("{}:{PEER_PORT}", self.host(i)),
            |n| n.peer.clone(),
        )
    }

    pub fn client_addr(&self, i: u32) -> String {
        self.nodes.get(&i).map_or_else(
            || format!("{}:{CLIENT_PORT}", self.host(i)),
            |n| n.client.clone(),
        )
    }

    pub fn ca_pem(&self) -> Result<Vec<u8>> {
        Ok(std::fs::read(self.certs.join("ca.pem"))?)
    }

    /// Nodes that are part of the cluster (not decommissioned).
    pub fn members(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.retired)
            .map(|(i, _)| *i)
            .collect()
    }

    /// Members whose process runs and is not paused.
    pub fn live(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.retired && (n.child.is_some() || n.external.is_some()) && !n.paused)
            .map(|(i, _)| *i)
            .collect()
    }

    /// Writes node `i`'s config, joining through `join` (empty: the first node), and starts it.
    pub fn add_node(&mut self, i: u32, join: &[String]) -> Result<()> {
        let name = format!("n{i}");
        let certs = self.certs.to_string_lossy().to_string();
        self.must_cli(&[
            "cert",
            "create-node",
            "--certs-dir",
            &certs,
            "--name",
            &name,
            "--host",
            &self.host(i),
        ])?;
        let data = self.dir.join(&name);
        std::fs::create_dir_all(&data)?;
        let node = NodeProc {
            host: self.host(i),
            peer: self.peer(i),
            client: self.client_addr(i),
            external: None,
            config: self.dir.join(format!("{name}.toml")),
            data,
            log: self.dir.join(format!("{name}.log")),
            clock: self.dir.join(format!("{name}.clock")),
            child: None,
            paused: false,
            retired: false,
        };
        std::fs::write(&node.clock, "0")?;
        self.nodes.insert(i, node);
        self.write_config(i, join)?;
        self.start(i)
    }

    fn write_config(&self, i: u32, join: &[String]) -> Result<()> {
        let n = &self.nodes[&i];
        let join: Vec<String> = join.iter().map(|j| format!("{j:?}")).collect();
        let text = format!(
            "# Written by courier-jepsen.\nname = \"n{i}\"\ndata_dir = {data:?}\npeer_addr = \"{h}:{PEER_PORT}\"\nclient_addr = \"{h}:{CLIENT_PORT}\"\nadmin_addr = \"{h}:{ADMIN_PORT}\"\njoin = [{join}]\nclock_offset_file = {clock:?}\ndevelopment = true\n\n[tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\n\n[auth]\ntest_numbers = true\ncodes_per_day = 1000000\nlogins_per_address_per_minute = 0\nlogins_per_phone_per_minute = 0\n\n# The workload posts as fast as it can.\n[limits]\nposts_per_chat_per_minute = 0\nchanges_per_chat_per_minute = 0\ninvites_per_chat_per_minute = 0\ntyping_per_chat_per_minute = 0\nnew_private_chats_per_hour = 0\n\n# Snapshot points every 500 entries, 100 kept behind: a replica that\n# was down or cut off for seconds catches up by snapshot, under faults.\n[raft]\nsnapshot_logs = 500\nkeep_logs = 100\n\n# Short kills do not move replicas; a wiped node's old id is repaired soon.\n[placement]\ndead_after_secs = 20\n\n# The collector under faults: every 10 s, chunks unused for 2 minutes.\n[media]\ngc_every_secs = 10\ngc_after_secs = 120\n\n[debug]\nunsafe_ignore_random_id = {bug}\n",
            data = n.data.to_string_lossy(),
            h = self.host(i),
            join = join.join(", "),
            clock = n.clock.to_string_lossy(),
            ca = self.certs.join("ca.pem").to_string_lossy(),
            cert = self.certs.join(format!("n{i}.pem")).to_string_lossy(),
            key = self.certs.join(format!("n{i}-key.pem")).to_string_lossy(),
            bug = self.opts.unsafe_ignore_random_id,
        );
        std::fs::write(&n.config, text)?;
        Ok(())
    }

    pub fn start(&mut self, i: u32) -> Result<()> {
        let bin = self.bin.clone();
        let n = self.nodes.get_mut(&i).context("no such node")?;
        if n.child.is_some() || n.external.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)?;
        let child = Command::new(bin)
            .args(["node", "--config"])
            .arg(&n.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start node {i}"))?;
        n.child = Some(child);
        n.paused = false;
        Ok(())
    }

    fn signal(&mut self, i: u32, sig: i32) -> bool {
        let n = self.nodes.get(&i);
        match n.and_then(|n| n.child.as_ref().map(|c| c.id() as i32).or(n.external)) {
            // SAFETY: kill(2) on the pid of a node of this cluster (our child, not
            // yet reaped, or the pid an attached node wrote).
            Some(pid) => unsafe { libc::kill(pid, sig) == 0 },
            None => false,
        }
    }

    /// Waits (at most `limit`) until an attached node's process is gone
    /// (or a zombie its parent has not reaped).
    fn forget_external(&mut self, i: u32, limit: Duration) -> Option<i32> {
        let pid = self.nodes.get_mut(&i).and_then(|n| n.external.take())?;
        let deadline = Instant::now() + limit;
        while !gone(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        (!gone(pid)).then_some(pid)
    }

    pub fn kill(&mut self, i: u32) {
        self.signal(i, libc::SIGKILL);
        self.forget_external(i, Duration::from_secs(5));
        if let Some(n) = self.nodes.get_mut(&i)
            && let Some(mut c) = n.child.take()
        {
            let _ = c.wait();
            n.paused = false;
        }
    }

    pub fn pause(&mut self, i: u32) {
        if self.signal(i, libc::SIGSTOP) {
            self.nodes.get_mut(&i).expect("node").paused = true;
        }
    }

    pub fn resume(&mut self, i: u32) {
        if self.signal(i, libc::SIGCONT) {
            self.nodes.get_mut(&i).expect("node").paused = false;
        }
    }

    /// SIGTERM, and SIGKILL after 15 s.
    pub fn stop(&mut self, i: u32) {
        self.resume(i);
        self.signal(i, libc::SIGTERM);
        if let Some(pid) = self.forget_external(i, Duration::from_secs(15)) {
            // SAFETY: kill(2) on the attached node's pid, which has not exited.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        if let Some(n) = self.nodes.get_mut(&i)
            && let Some(mut c) = n.child.take()
        {
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills node `i`, empties its data directory and starts it again: it
    /// joins as a new node (a new id) through the other members.
    pub fn wipe(&mut self, i: u32) -> Result<()> {
        self.kill(i);
        let data = self.nodes[&i].data.clone();
        std::fs::remove_dir_all(&data)?;
        std::fs::create_dir_all(&data)?;
        let join: Vec<String> = self
            .members()
            .into_iter()
            .filter(|j| *j != i)
            .map(|j| self.peer(j))
            .collect();
        self.write_config(i, &join)?;
        self.start(i)
    }

    /// Shifts node `i`'s clock by `secs` (its `clock_offset_file`).
    pub fn set_clock(&self, i: u32, secs: i64) -> Result<()> {
        Ok(std::fs::write(&self.nodes[&i].clock, secs.to_string())?)
    }

    /// Drops every packet between the two nodes of each pair (both ways).
    pub fn partition(&mut self, cuts: &[(u32, u32)]) -> Result<()> {
        let table = self.table();
        let mut script = format!(
            "table inet {table} {{\n chain input {{ type filter hook input priority -10; policy accept; }}\n}}\nflush table inet {table}\n"
        );
        for (a, b) in cuts {
            for (x, y) in [(a, b), (b, a)] {
                script.push_str(&format!(
                    "add rule inet {table} input ip saddr {} ip daddr {} drop\n",
                    self.host(*x),
                    self.host(*y)
                ));
            }
        }
        nft(&script)?;
        self.partitioned = true;
        Ok(())
    }

    pub fn heal_network(&mut self) -> Result<()> {
        delete_rules(self.slot)?;
        self.partitioned = false;
        Ok(())
    }

    fn table(&self) -> String {
        table(self.slot)
    }

    /// Runs a `courier` command against the given nodes' peer ports, at most `timeout`.
    pub fn cli_on(&self, nodes: &[u32], args: &[&str], timeout: Duration) -> Option<Output> {
        let admin: Vec<String> = nodes.iter().map(|i| self.peer(*i)).collect();
        let mut child = Command::new(&self.bin)
            .args(args)
            .env("COURIER_CA", self.certs.join("ca.pem"))
            .env("COURIER_CERT", self.certs.join("operator.pem"))
            .env("COURIER_KEY", self.certs.join("operator-key.pem"))
            .env("COURIER_ADMIN_NODES", admin.join(","))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + timeout;
        while child.try_wait().ok()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().ok()
    }

    fn must_cli(&self, args: &[&str]) -> Result<String> {
        let out = self
            .cli_on(&self.live(), args, Duration::from_secs(60))
            .with_context(|| format!("courier {args:?} timed out"))?;
        if !out.status.success() {
            bail!(
                "courier {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into())
    }

    /// `courier cluster status --json` through the live nodes.
    pub fn status(&self) -> Option<Value> {
        let out = self.cli_on(
            &self.live(),
            &["cluster", "status", "--json"],
            Duration::from_secs(10),
        )?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The cluster id node `i` runs under now (a wiped node gets a new one).
    pub fn node_id(&self, status: &Value, i: u32) -> Option<u64> {
        let peer = self.peer(i);
        status["nodes"]
            .as_array()?
            .iter()
            .filter(|n| n["peer_addr"] == peer.as_str() && n["state"] != "removed")
            .filter_map(|n| n["id"].as_u64())
            .max()
    }

    /// The node leading the most groups.
    pub fn busiest_leader(&self) -> Option<u32> {
        let s = self.status()?;
        let mut led: BTreeMap<u64, usize> = BTreeMap::new();
        for g in s["groups"].as_array()? {
            if let Some(l) = g["leader"].as_u64() {
                *led.entry(l).or_default() += 1;
            }
        }
        let (id, _) = led.into_iter().max_by_key(|(_, n)| *n)?;
        self.members()
            .into_iter()
            .find(|i| self.node_id(&s, *i) == Some(id))
    }

    fn wait_registered(&self, i: u32) -> Result<u64> {
        wait(
            Duration::from_secs(60),
            &format!("node {i} to join"),
            || {
                let s = self.status()?;
                let id = self.node_id(&s, i)?;
                s["nodes"]
                    .as_array()?
                    .iter()
                    .any(|n| n["id"] == id && n["state"] == "up")
                    .then_some(id)
            },
        )
    }

    /// Until every member is up, every group has a leader and placement settled.
    pub fn wait_settled(&self, timeout: Duration) -> Result<Value> {
        let want = self.members().len();
        wait(
            timeout,
            &format!("{want} nodes up and placement settled"),
            || {
                let s = self.status()?;
                let up = s["nodes"]
                    .as_array()?
                    .iter()
                    .filter(|n| n["state"] == "up")
                    .count();
                let led = s["groups"]
                    .as_array()?
                    .iter()
                    .all(|g| g["leader"].as_u64().is_some());
                (up == want && led && s["placement_settled"] == true).then_some(s)
            },
        )
    }

    /// Adds node `i` under load and waits until it joined; returns its id.
    pub fn join_new(&mut self, i: u32) -> Result<u64> {
        let join: Vec<String> = self.members().into_iter().map(|j| self.peer(j)).collect();
        self.add_node(i, &join)?;
        self.wait_registered(i)
    }

    /// `courier cluster remove-node ID`, then waits (bounded) until the node
    /// is `removed`.
    pub fn remove_node(&self, id: u64, timeout: Duration) -> Result<()> {
        let id_s = id.to_string();
        let out = self
            .cli_on(
                &self.live(),
                &["cluster", "remove-node", &id_s],
                Duration::from_secs(20),
            )
            .context("remove-node timed out")?;
        if !out.status.success() {
            bail!(
                "remove-node {id}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        wait(timeout, &format!("node {id} to be removed"), || {
            let s = self.status()?;
            s["nodes"]
                .as_array()?
                .iter()
                .any(|n| n["id"] == id && n["state"] == "removed")
                .then_some(())
        })
    }

    /// Stops every node (graceful first) and removes the firewall rules.
    pub fn shutdown(&mut self) {
        let _ = self.heal_network();
        if self.attached {
            // Leave someone else's cluster as it was found: running.
            for i in self.members() {
                self.resume(i);
                let _ = self.start(i);
            }
            return;
        }
        let ids: Vec<u32> = self.nodes.keys().copied().collect();
        for i in &ids {
            self.resume(*i);
            self.signal(*i, libc::SIGTERM);
        }
        for i in ids {
            self.stop(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.partitioned {
            let _ = self.heal_network();
        }
        if self.attached {
            return;
        }
        let ids: Vec<u32> = self.nodes.keys().copied().collect();
        for i in ids {
            self.kill(i);
        }
    }
}

/// Whether a process has exited (or is a zombie its parent has not reaped).
fn gone(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty()
        || stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
}

/// Removes the firewall rules of `slot` and, with `kill_nodes`, kills every
/// node under `dir` by the pid it wrote (used when the harness is interrupted).
pub fn kill_all(dir: &Path, slot: u8, kill_nodes: bool) {
    let entries = if kill_nodes {
        std::fs::read_dir(dir).ok()
    } else {
        None
    };
    for entry in entries.into_iter().flatten().flatten() {
        let pid = std::fs::read_to_string(entry.path().join("courier.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            // SAFETY: kill(2) on a node this run started (its pid file is in our directory).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = delete_rules(slot);
}

/// The nftables table holding the partitions of `slot`.
fn table(slot: u8) -> String {
    format!("courier_jepsen_{slot}")
}

/// Removes every partition rule of `slot`.
fn delete_rules(slot: u8) -> Result<()> {
    let table = table(slot);
    // Declaring the table first makes the delete succeed when it is absent.
    nft(&format!("table inet {table}\ndelete table inet {table}\n"))
}

fn nft(script: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context(
            "run nft (partitions need nftables and root; `scripts/setup` installs nftables)",
        )?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Polls `f` every 250 ms until it answers, at most `timeout`.
pub fn wait<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
