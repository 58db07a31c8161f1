//! User commands: login, logout, sessions. The profile (`--profile`, default
//! `default`) lives in `$XDG_CONFIG_HOME/courier/<profile>/` (else
//! `~/.config/courier/<profile>/`): `profile.json` (nodes, device), `ca.pem`
//! (the cluster CA, saved at login) and `token` (mode 0600).

use courier_client::Code;
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use courier_client::{Client, ClientConfig, Event, pb};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// How a user command reaches the cluster (flags, then environment, then profile).
#[derive(Args, Clone, Debug, Default)]
pub struct UserConn {
    /// A node's client (QUIC) address, host:port (repeatable).
    #[arg(long = "node", env = "COURIER_NODES", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// The cluster CA certificate (PEM).
    #[arg(long, env = "COURIER_CA")]
    pub ca: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Default, Debug)]
struct Profile {
    nodes: Vec<String>,
    device: Option<String>,
}

#[derive(Clone)]
pub struct ProfileDir(PathBuf);

impl ProfileDir {
    pub fn open(name: &str) -> Result<ProfileDir> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || name.starts_with('.') {
            bail!("profile name {name:?}: use letters, digits, '-', '_' and '.'");
        }
        let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x),
            None => PathBuf::from(std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?).join(".config"),
        };
        Ok(ProfileDir(base.join("courier").join(name)))
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }

    fn load(&self) -> Result<Profile> {
        match std::fs::read(self.path("profile.json")) {
            Ok(b) => serde_json::from_slice(&b).with_context(|| format!("read {}", self.path("profile.json").display())),
            Err(_) => Ok(Profile::default()),
        }
    }

    fn token(&self) -> Result<Option<Vec<u8>>> {
        match std::fs::read_to_string(self.path("token")) {
            Ok(s) => Ok(Some(hex::decode(s.trim()).with_context(|| format!("{} is not a token", self.path("token").display()))?)),
            Err(_) => Ok(None),
        }
    }

    fn save(&self, profile: &Profile, ca_pem: &[u8], token: &[u8]) -> Result<()> {
        std::fs::create_dir_all(&self.0).with_context(|| format!("create {}", self.0.display()))?;
        std::fs::write(self.path("profile.json"), serde_json::to_vec_pretty(profile)?)?;
        std::fs::write(self.path("ca.pem"), ca_pem)?;
        write_secret(&self.path("token"), hex::encode(token).as_bytes())
    }

    fn forget_token(&self) {
        let _ = std::fs::remove_file(self.path("token"));
    }
}

/// Writes a file only its owner can read, replacing any old one.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A client for `profile` with flags and environment applied.
pub async fn client(profile: &ProfileDir, conn: &UserConn, with_token: bool) -> Result<(Client, mpsc::Receiver<Event>, Vec<u8>)> {
    let saved = profile.load()?;
    let nodes = if conn.nodes.is_empty() { saved.nodes.clone() } else { conn.nodes.clone() };
    if nodes.is_empty() {
        bail!("no node address: pass --node HOST:PORT, set COURIER_NODES (`. courier-dev/env`), or log in first");
    }
    let ca_path = conn.ca.clone().unwrap_or_else(|| profile.path("ca.pem"));
    let ca = std::fs::read(&ca_path)
        .with_context(|| format!("read the cluster CA {} (pass --ca FILE or set COURIER_CA)", ca_path.display()))?;
    let mut cfg = ClientConfig::new(nodes, ca.clone());
    cfg.client_version = concat!("courier-cli/", env!("CARGO_PKG_VERSION")).into();
    if let Some(d) = saved.device {
        cfg.device = d;
    }
    if with_token {
        cfg.token = Some(profile.token()?.ok_or_else(|| anyhow!("not logged in; run `courier login --phone +…`"))?);
    }
    let (c, rx) = Client::connect(cfg).await?;
    if with_token && !c.hello().is_some_and(|h| h.authorized) {
        bail!("the session was not accepted; log in again");
    }
    Ok((c, rx, ca))
}

fn prompt(what: &str) -> Result<String> {
    eprint!("{what}: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line)? == 0 {
        bail!("no {what} given (stdin closed); pass it as a flag");
    }
    Ok(line.trim().to_string())
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Your phone number, international format (+…).
    #[arg(long)]
    phone: String,
    /// The code you received (asked for when missing).
    #[arg(long)]
    code: Option<String>,
    /// Your name, for a new account (asked for when needed).
    #[arg(long)]
    name: Option<String>,
    /// A name for this device in the session list.
    #[arg(long)]
    device: Option<String>,
    #[command(flatten)]
    conn: UserConn,
}

pub async fn login(profile: &ProfileDir, args: LoginArgs) -> Result<()> {
    if let Some(d) = &args.device {
        let mut p = profile.load()?;
        p.device = Some(d.clone());
        std::fs::create_dir_all(&profile.0)?;
        std::fs::write(profile.path("profile.json"), serde_json::to_vec_pretty(&p)?)?;
    }
    let (client, _events, ca) = client(profile, &args.conn, false).await?;
    let sent = client.send_code(&args.phone).await?;
    let code = match args.code {
        Some(c) => c,
        None => prompt(&format!("Code (sent by {}; expires in {} s)", sent.delivery, sent.timeout_secs))?,
    };
    let auth = match client.sign_in(&args.phone, &sent.phone_code_hash, &code).await {
        Ok(a) => a,
        Err(e) if e.code() == Code::SignUpRequired => {
            let name = match args.name {
                Some(n) => n,
                None => prompt("New account. Your name")?,
            };
            let (first, last) = name.trim().split_once(' ').map_or((name.trim(), ""), |(f, l)| (f, l.trim()));
            client.sign_up(&args.phone, &sent.phone_code_hash, first, last).await?
        }
        Err(e) => return Err(e.into()),
    };
    let user = auth.user.unwrap_or_default();
    let mut p = profile.load()?;
    p.nodes = if args.conn.nodes.is_empty() { p.nodes } else { args.conn.nodes.clone() };
    profile.save(&p, &ca, &auth.session_token)?;
    println!(
        "Logged in as {} ({}), user {}, session {}, through {}.",
        full_name(&user),
        user.phone,
        user.id,
        auth.session_id,
        client.node().await.unwrap_or_default()
    );
    Ok(())
}

/// A person's name as the terminal shows it.
pub(crate) fn full_name(u: &pb::User) -> String {
    if u.last_name.is_empty() { u.first_name.clone() } else { format!("{} {}", u.first_name, u.last_name) }
}

pub async fn logout(profile: &ProfileDir, conn: &UserConn) -> Result<()> {
    let (client, _events, _) = match client(profile, conn, true).await {
        Ok(c) => c,
        Err(e) if e.downcast_ref::<courier_client::Error>().is_some_and(|e| matches!(e.code(), Code::SessionRevoked | Code::Unauthorized)) => {
            profile.forget_token();
            println!("The session had already ended; logged out.");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    client.log_out().await?;
    profile.forget_token();
    println!("Logged out.");
    Ok(())
}

pub async fn whoami(profile: &ProfileDir, conn: &UserConn, json: bool) -> Result<()> {
    let (client, _events, _) = client(profile, conn, true).await?;
    let u = client.get_self().await?;
    if json {
        println!("{}", serde_json::json!({"id": u.id, "phone": u.phone, "first_name": u.first_name, "last_name": u.last_name}));
    } else {
        println!("{} ({}), user {}", full_name(&u), u.phone, u.id);
    }
    Ok(())
}

pub fn when(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

pub async fn sessions(profile: &ProfileDir, conn: &UserConn, json: bool) -> Result<()> {
    let (client, _events, _) = client(profile, conn, true).await?;
    let list = client.sessions().await?;
    if json {
        let v: Vec<_> = list
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id, "current": s.current, "device": s.device, "app_version": s.app_version,
                    "node": s.node_id, "address": s.address, "created_ms": s.created_ms, "last_active_ms": s.last_active_ms,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "sessions": v }));
        return Ok(());
    }
    println!("{:<4} {:<1} {:<20} {:<22} {:<5} {:<22} {:<26} LAST ACTIVE", "ID", "", "DEVICE", "APP", "NODE", "ADDRESS", "CREATED");
    for s in list {
        println!(
            "{:<4} {:<1} {:<20} {:<22} {:<5} {:<22} {:<26} {}",
            s.id,
            if s.current { "*" } else { "" },
            s.device,
            s.app_version,
            s.node_id,
            s.address,
            when(s.created_ms),
            when(s.last_active_ms)
        );
    }
    Ok(())
}

pub async fn terminate(profile: &ProfileDir, conn: &UserConn, id: Option<u64>, others: bool) -> Result<()> {
    let (client, _events, _) = client(profile, conn, true).await?;
    match (id, others) {
        (Some(id), false) => {
            client.terminate_session(id).await?;
            println!("Session {id} terminated.");
        }
        (None, true) => {
            client.terminate_other_sessions().await?;
            println!("All other sessions terminated.");
        }
        _ => bail!("give a session ID or --others"),
    }
    Ok(())
}
