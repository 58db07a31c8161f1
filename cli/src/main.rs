//! `courier`: one binary for operators (certificates, nodes, cluster) and,
//! later, users. `main` only parses options and calls into the crates.

mod admin;
mod bench;
mod chat;
mod dev;
mod failover;
mod media;
mod tui;
mod user;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

/// Small, short-lived allocations (messages, RPC buffers, Raft entries)
/// dominate a node's allocation profile; mimalloc serves them from per-thread
/// pages where glibc's malloc took ~9 % of a loaded node's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Courier: a clustered, Telegram-class messaging backend.
#[derive(Parser)]
#[command(name = "courier", version, propagate_version = true)]
struct Cli {
    /// Keep accounts and devices apart on one machine: each profile has its own login.
    #[arg(long, global = true, env = "COURIER_PROFILE", default_value = "default")]
    profile: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a local cluster: certificates, node processes, init. Ctrl-C stops it.
    Dev(dev::DevArgs),
    /// Create the cluster CA and the certificates it issues.
    #[command(subcommand)]
    Cert(CertCmd),
    /// Run one node.
    Node {
        /// The node's TOML config (see cluster-configs/).
        #[arg(long)]
        config: PathBuf,
    },
    /// Operator commands: init, status, remove-node.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// The replicated key-value probe (a test and debug tool).
    #[command(subcommand, hide = true)]
    Kv(KvCmd),
    /// Log in (or sign up) with your phone number; the session is saved in the profile.
    Login(user::LoginArgs),
    /// End this device's session and forget its token.
    Logout {
        #[command(flatten)]
        conn: user::UserConn,
    },
    /// The logged-in account.
    Whoami {
        #[command(flatten)]
        conn: user::UserConn,
        #[arg(long)]
        json: bool,
    },
    /// Your sessions (devices); `sessions terminate` ends one or all others.
    Sessions {
        #[command(flatten)]
        conn: user::UserConn,
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        cmd: Option<SessionsCmd>,
    },
    /// The interactive terminal client: dialogs, chats, live messages.
    Chat {
        #[command(flatten)]
        conn: user::UserConn,
    },
    /// Send a message to a chat (a chat id, or a phone number: the private chat).
    Send(chat::SendArgs),
    /// The newest messages of a chat, oldest first.
    History(chat::HistoryArgs),
    /// Your chats, most recent first, with unread counts.
    Dialogs {
        #[command(flatten)]
        conn: user::UserConn,
        #[arg(long)]
        json: bool,
    },
    /// Upload a file (resumable: run it again after an interruption); prints its id.
    Upload(media::UploadArgs),
    /// Download a file by id (continues an interrupted download).
    Download(media::DownloadArgs),
    /// Create groups and channels, invite, leave.
    #[command(subcommand)]
    Group(chat::GroupCmd),
    /// Block a user (by id or phone): they can no longer message you
    /// privately or invite you; `--unblock` lifts it.
    Block(chat::BlockArgs),
    /// Benchmarks (see docs/benchmarks.md).
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Subcommand)]
enum SessionsCmd {
    /// End a session (its connections close on every node within a second).
    Terminate {
        /// The session's ID from `courier sessions`.
        #[arg(required_unless_present = "others", conflicts_with = "others")]
        id: Option<u64>,
        /// End every session but this one.
        #[arg(long)]
        others: bool,
        #[command(flatten)]
        conn: user::UserConn,
    },
}

#[derive(Subcommand)]
enum CertCmd {
    /// Create the cluster certificate authority (ca.pem, ca-key.pem).
    CreateCa {
        #[arg(long)]
        certs_dir: PathBuf,
    },
    /// Issue a node certificate for the given host names or IP addresses.
    CreateNode {
        #[arg(long)]
        certs_dir: PathBuf,
        #[arg(long)]
        name: String,
        /// A DNS name or IP address the node is reached at (repeatable).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
    },
    /// Issue an operator certificate (runs `cluster …` commands).
    CreateClient {
        #[arg(long)]
        certs_dir: PathBuf,
        #[arg(long)]
        name: String,
    },
}

/// How an operator command reaches the cluster.
#[derive(Args, Clone)]
pub struct Conn {
    /// A node's peer address (repeatable; the first that answers is used).
    #[arg(long = "node", env = "COURIER_ADMIN_NODES", value_delimiter = ',')]
    nodes: Vec<String>,
    /// The cluster CA certificate.
    #[arg(long, env = "COURIER_CA")]
    ca: Option<PathBuf>,
    /// An operator certificate from the cluster CA.
    #[arg(long, env = "COURIER_CERT")]
    cert: Option<PathBuf>,
    /// The operator certificate's key.
    #[arg(long, env = "COURIER_KEY")]
    key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Initialize a new cluster on the first node (once).
    Init {
        #[command(flatten)]
        conn: Conn,
        /// Data groups (fixed for the cluster's life; default: the node's config, 16). Each group has one leader, so more groups spread writes over more nodes; fewer batch better: a 3-node cluster that stays small writes ~50 % faster with 4 (docs/benchmarks.md).
        #[arg(long, default_value_t = 0)]
        data_groups: u32,
    },
    /// Nodes, groups, leaders, terms and lag.
    Status {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
    /// Decommission a node: its replicas move away first.
    RemoveNode {
        id: u64,
        #[command(flatten)]
        conn: Conn,
        /// Wait until the node holds no replicas.
        #[arg(long)]
        wait: bool,
    },
    /// The pending login code of a phone (for operators helping a user, and tests).
    LoginCode {
        #[arg(long)]
        phone: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Refuse a certificate on every node's peer port from now on: a
    /// removed node's (so it cannot rejoin with it), or a stolen one. Open
    /// connections that presented it are closed within a few seconds.
    RevokeCert {
        /// The certificate to refuse (PEM), e.g. `certs/n4.pem`.
        #[arg(value_name = "CERT_FILE")]
        revoke: std::path::PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum KvCmd {
    Put {
        #[arg(value_name = "KEY")]
        name: String,
        value: String,
        #[command(flatten)]
        conn: Conn,
    },
    Get {
        #[arg(value_name = "KEY")]
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Replicated durable writes through the KV probe.
    Kv(bench::KvBenchArgs),
    /// Authenticated idle connections one node holds, and its memory per connection.
    Connections(bench::ConnBenchArgs),
    /// Logins per second (send_code + sign_in, sign_up for new numbers) with test numbers.
    SignIns(bench::SignInBenchArgs),
    /// Durable message sends per second, and delivery latency to another node.
    Messages(bench::MessagesBenchArgs),
    /// One message to every online member of a large group: time to the last member.
    Group(bench::GroupBenchArgs),
    /// Upload and download MB/s of one file, beside the disk's fdatasync write rate.
    Media(bench::MediaBenchArgs),
    /// Kill a node under steady senders: the longest gap between acknowledgements, time to re-lead every group, losses.
    Failover(failover::FailoverBenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Node { config } => run_node(config),
        other => {
            // Like other Unix tools, end quietly when the reader of our output goes away (`| head`).
            // SAFETY: setting a signal disposition before any other thread exists.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            // A client is light work: one worker thread serves it, and no
            // second thread is woken for every packet (the 64-sender
            // benchmark's client used ~25 % less CPU per send, CPU the nodes
            // on the same machine then have). The benchmarks that play a
            // thousand devices at once take a worker per core.
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if !matches!(other, Cmd::Bench(BenchCmd::Group(_) | BenchCmd::Connections(_))) {
                rt.worker_threads(1);
            }
            rt.enable_all().build().map_err(Into::into).and_then(|rt| rt.block_on(dispatch(other, &cli.profile)))
        }
    };
    if let Err(e) = result {
        eprintln!("courier: {e:#}");
        std::process::exit(1);
    }
}

fn run_node(config: PathBuf) -> Result<()> {
    tracing_init();
    let cfg = courier_node::NodeConfig::load(&config)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("courier").build()?;
    rt.block_on(courier_node::run(cfg))?;
    Ok(())
}

fn tracing_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("COURIER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,h2=warn,tower=warn,hyper=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
}

async fn dispatch(cmd: Cmd, profile: &str) -> Result<()> {
    use courier_node::certs;
    match cmd {
        Cmd::Dev(args) => dev::run(args).await,
        Cmd::Cert(CertCmd::CreateCa { certs_dir }) => {
            let p = certs::create_ca(&certs_dir)?;
            println!("created cluster CA {}", p.display());
            Ok(())
        }
        Cmd::Cert(CertCmd::CreateNode { certs_dir, name, hosts }) => {
            let (c, k) = certs::create_node(&certs_dir, &name, &hosts)?;
            println!("created node certificate {} and key {}", c.display(), k.display());
            Ok(())
        }
        Cmd::Cert(CertCmd::CreateClient { certs_dir, name }) => {
            let (c, k) = certs::create_client(&certs_dir, &name)?;
            println!("created operator certificate {} and key {}", c.display(), k.display());
            Ok(())
        }
        Cmd::Cluster(ClusterCmd::Init { conn, data_groups }) => admin::init(&conn, data_groups).await,
        Cmd::Cluster(ClusterCmd::Status { conn, json }) => admin::status(&conn, json).await,
        Cmd::Cluster(ClusterCmd::RemoveNode { id, conn, wait }) => admin::remove_node(&conn, id, wait).await,
        Cmd::Kv(KvCmd::Put { name, value, conn }) => admin::kv_put(&conn, name, value).await,
        Cmd::Kv(KvCmd::Get { name, conn }) => admin::kv_get(&conn, name).await,
        Cmd::Cluster(ClusterCmd::LoginCode { phone, conn }) => admin::login_code(&conn, phone).await,
        Cmd::Cluster(ClusterCmd::RevokeCert { revoke, conn }) => admin::revoke_cert(&conn, &revoke).await,
        Cmd::Bench(BenchCmd::Kv(args)) => bench::kv(args).await,
        Cmd::Bench(BenchCmd::Connections(args)) => bench::connections(args).await,
        Cmd::Bench(BenchCmd::SignIns(args)) => bench::sign_ins(args).await,
        Cmd::Bench(BenchCmd::Messages(args)) => bench::messages(args).await,
        Cmd::Bench(BenchCmd::Group(args)) => bench::group(args).await,
        Cmd::Bench(BenchCmd::Media(args)) => bench::media(args).await,
        Cmd::Bench(BenchCmd::Failover(args)) => failover::run(args).await,
        Cmd::Login(args) => user::login(&user::ProfileDir::open(profile)?, args).await,
        Cmd::Logout { conn } => user::logout(&user::ProfileDir::open(profile)?, &conn).await,
        Cmd::Whoami { conn, json } => user::whoami(&user::ProfileDir::open(profile)?, &conn, json).await,
        Cmd::Chat { conn } => tui::run(&user::ProfileDir::open(profile)?, &conn).await,
        Cmd::Send(args) => chat::send(&user::ProfileDir::open(profile)?, args).await,
        Cmd::Block(args) => chat::block(&user::ProfileDir::open(profile)?, args).await,
        Cmd::History(args) => chat::history(&user::ProfileDir::open(profile)?, args).await,
        Cmd::Dialogs { conn, json } => chat::dialogs(&user::ProfileDir::open(profile)?, &conn, json).await,
        Cmd::Group(cmd) => chat::group(&user::ProfileDir::open(profile)?, cmd).await,
        Cmd::Upload(args) => media::upload(&user::ProfileDir::open(profile)?, args).await,
        Cmd::Download(args) => media::download(&user::ProfileDir::open(profile)?, args).await,
        Cmd::Sessions { conn, json, cmd: None } => user::sessions(&user::ProfileDir::open(profile)?, &conn, json).await,
        Cmd::Sessions { cmd: Some(SessionsCmd::Terminate { id, others, conn }), .. } => {
            user::terminate(&user::ProfileDir::open(profile)?, &conn, id, others).await
        }
        Cmd::Node { .. } => unreachable!("handled before the runtime starts"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
