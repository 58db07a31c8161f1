//! The authentication service: login codes and their delivery, sign-in and
//! sign-up, sessions and their revocation. Decisions live in [`logic`] and are
//! replicated through the phone's data group; this module does the I/O around
//! them (randomness, the clock, code delivery, notices to other nodes).

pub mod limit;
pub mod logic;
pub mod token;

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::app::{self, AppCommand, AppQuery, Request};
use crate::clock::Clock;
use crate::cluster::Node;
use crate::config::AuthConfig;
use crate::error::Result;
use crate::push::{Notice, Push, Pushes};
use courier_proto::client as pb;
pub use logic::{AuthError, Revoke, Session, TokenHash, User, Validity};
use logic::{ask, cmd};

/// How long a node may keep serving a connection on its last session check.
/// Revocation is acknowledged once every node has dropped the session, or
/// this long after it committed, whichever comes first.
pub const SESSION_LEASE: Duration = Duration::from_secs(3);

/// What the gateway knows about the caller of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub addr: SocketAddr,
    pub device: String,
    pub app_version: String,
}

/// A code on its way.
#[derive(Clone, Debug)]
pub struct SentCode {
    pub code_id: u64,
    pub ttl_secs: u32,
    pub delivery: &'static str,
}

/// A new session: the token is returned once, to the client that made it.
#[derive(Clone, Debug)]
pub struct NewAuthorization {
    pub user: User,
    pub session_id: u64,
    pub token: Vec<u8>,
}

pub struct Auth {
    node: Node,
    pushes: std::sync::Arc<Pushes>,
    cfg: AuthConfig,
    clock: Clock,
    per_address: Mutex<crate::limit::RateLimiter<IpAddr>>,
}

impl Auth {
    pub fn new(node: Node, pushes: std::sync::Arc<Pushes>, cfg: AuthConfig, clock: Clock) -> Auth {
        let per_address = Mutex::new(crate::limit::RateLimiter::penalizing(cfg.logins_per_address_per_minute));
        Auth { node, pushes, cfg, clock, per_address }
    }

    /// A login attempt (code, sign-in, sign-up) from `caller`'s address,
    /// counted against this node's share of the cluster's budget before
    /// anything is proposed; `FLOOD_WAIT` past it, growing while the caller
    /// keeps trying.
    fn admit_address(&self, caller: &Caller) -> Result<()> {
        let live = self.node.live_nodes();
        let mut limiter = self.per_address.lock().expect("limiter lock");
        limiter.check_share(&caller.addr.ip(), self.clock.now_ms(), self.cfg.logins_per_address_per_minute, live).map_err(|secs| AuthError::FloodWait { secs }.into())
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn phone_group(&self, phone: &str) -> Result<u32> {
        Ok(self.node.raft()?.group_for_key(format!("phone:{phone}").as_bytes()))
    }

    async fn exec<C: Request + Into<AppCommand>>(&self, group: u32, cmd: C) -> Result<C::Answer> {
        app::write(&self.node, group, cmd).await
    }

    async fn read<Q: Request + Into<AppQuery>>(&self, group: u32, q: Q) -> Result<Q::Answer> {
        app::read(&self.node, group, q).await
    }

    fn new_session(&self, token: &[u8], caller: &Caller) -> logic::NewSession {
        logic::NewSession {
            token_hash: token::token_hash(token),
            device: caller.device.clone(),
            app_version: caller.app_version.clone(),
            node_id: self.node.raft().map(|r| r.id()).unwrap_or(0),
            address: caller.addr.to_string(),
        }
    }

    pub async fn send_code(&self, phone: &str, caller: &Caller) -> Result<SentCode> {
        if !logic::valid_phone(phone) {
            return Err(AuthError::PhoneNumberInvalid.into());
        }
        self.admit_address(caller)?;
        let now_ms = self.clock.now_ms();
        let test_code = if self.cfg.test_numbers { logic::test_number_code(phone) } else { None };
        let code = test_code.clone().unwrap_or_else(|| format!("{:05}", rand::random_range(0..100_000u32)));
        let code_id: u64 = rand::random::<u64>() | 1;
        let group = self.phone_group(phone)?;
        let cmd = cmd::SendCodeFrom {
            phone: phone.to_string(),
            code_id,
            code: code.clone(),
            ttl_ms: self.cfg.code_ttl_secs * 1000,
            max_per_day: self.cfg.codes_per_day,
            now_ms,
            asker: caller.addr.ip().to_string(),
        };
        let logic::CodeSentVia { code_id, sms, .. } = self.exec(group, cmd).await?;
        let mut delivery = "sms";
        if test_code.is_none() {
            // Past the day's SMS budget only the account's devices are told.
            if sms {
                self.deliver(phone, &code).await;
            }
            if (self.cfg.deliver_in_app || !sms)
                && let Ok(Some(user)) = self.read(group, ask::UserByPhone { phone: phone.into() }).await
            {
                // Who asked, as the account's devices show it: the app and the
                // address, never the asker's free text (a phishing line).
                let shown = pb::LoginCode { phone: phone.into(), code: code.clone(), device: logic::asker_label(&caller.app_version, caller.addr.ip()) };
                let update = crate::push::client_update(pb::update::Kind::LoginCode(shown));
                self.pushes.broadcast(Notice::Push(Push::to_users(vec![user.id], update)), Duration::from_secs(1)).await;
                delivery = "app";
            }
        } else {
            tracing::info!(%phone, "login code for a test number (code = the DC digit five times)");
            delivery = "test";
        }
        Ok(SentCode { code_id, ttl_secs: self.cfg.code_ttl_secs as u32, delivery })
    }

    /// Hands the code to the configured channel; a failure is logged (the
    /// user asks for a new code), never an error for the request.
    async fn deliver(&self, phone: &str, code: &str) {
        match (self.cfg.code_delivery.as_str(), &self.cfg.code_command) {
            ("command", Some(program)) => {
                let run = tokio::process::Command::new(program).arg(phone).arg(code).kill_on_drop(true).status();
                match tokio::time::timeout(Duration::from_secs(10), run).await {
                    Ok(Ok(st)) if st.success() => tracing::info!(%phone, "login code handed to the delivery command"),
                    Ok(Ok(st)) => tracing::warn!(%phone, %st, "code delivery command failed"),
                    Ok(Err(e)) => tracing::warn!(%phone, "cannot run code delivery command {}: {e}", program.display()),
                    Err(_) => tracing::warn!(%phone, "code delivery command timed out after 10 s"),
                }
            }
            _ => tracing::info!(%phone, %code, "login code (delivery: log)"),
        }
    }

    pub async fn sign_in(&self, phone: &str, code_id: u64, code: &str, caller: &Caller) -> Result<NewAuthorization> {
        self.new_authorization(phone, caller, |session, _, now_ms| cmd::SignIn { phone: phone.into(), code_id, code: code.into(), session, now_ms })
            .await
    }

    pub async fn sign_up(&self, phone: &str, code_id: u64, first: &str, last: &str, caller: &Caller) -> Result<NewAuthorization> {
        self.new_authorization(phone, caller, |session, group, now_ms| cmd::SignUp {
            phone: phone.into(),
            code_id,
            first_name: first.into(),
            last_name: last.into(),
            session,
            group,
            now_ms,
        })
        .await
    }

    /// Makes a token in the phone's group and runs `cmd(session, group, now)` there.
    async fn new_authorization<C: Request<Answer = logic::Authorized> + Into<AppCommand>>(
        &self,
        phone: &str,
        caller: &Caller,
        cmd: impl FnOnce(logic::NewSession, u32, u64) -> C,
    ) -> Result<NewAuthorization> {
        self.admit_address(caller)?;
        let group = self.phone_group(phone)?;
        let token = token::new_token(group);
        let cmd = cmd(self.new_session(&token, caller), group, self.clock.now_ms());
        let logic::Authorized { user, session_id } = self.exec(group, cmd).await?;
        self.node.metrics().sign_ins.inc();
        tracing::info!(user = user.id, session = session_id, "signed in");
        Ok(NewAuthorization { user, session_id, token })
    }

    /// Checks a batch of tokens of one group with one linearizable read.
    pub async fn validate(&self, group: u32, hashes: Vec<TokenHash>) -> Result<Vec<Validity>> {
        self.read(group, ask::Validate(hashes)).await
    }

    /// The session a token names, if it is live.
    pub async fn check_token(&self, token: &[u8]) -> Result<(u32, TokenHash, User, Session)> {
        let groups = self.node.raft()?.data_groups();
        let group = token::token_group(token, groups).ok_or(AuthError::Unauthorized)?;
        let hash = token::token_hash(token);
        match self.validate(group, vec![hash]).await?.pop() {
            Some(Validity::Live { user, session }) => Ok((group, hash, user, session)),
            Some(Validity::Revoked) => Err(AuthError::SessionRevoked.into()),
            _ => Err(AuthError::Unauthorized.into()),
        }
    }

    /// Records that a session was used now, through this node.
    pub async fn touch(&self, group: u32, hash: TokenHash, addr: SocketAddr) -> Result<()> {
        let node_id = self.node.raft()?.id();
        self.exec(group, cmd::Touch { token_hash: hash, node_id, address: addr.to_string(), now_ms: self.clock.now_ms() }).await?;
        Ok(())
    }

    pub async fn sessions(&self, group: u32, hash: TokenHash) -> Result<Vec<Session>> {
        self.read(group, ask::Sessions { by: hash }).await
    }

    /// Revokes sessions and returns once no node serves them any more: every
    /// node confirmed it closed their connections, or [`SESSION_LEASE`]
    /// passed since the commit (a node that did not hear stops trusting its
    /// last check by then).
    pub async fn revoke(&self, group: u32, hash: TokenHash, which: Revoke) -> Result<Vec<TokenHash>> {
        let hashes = self.exec(group, cmd::Revoke { by: hash, which, now_ms: self.clock.now_ms() }).await?;
        let committed = Instant::now();
        if !hashes.is_empty() {
            let all = self.pushes.broadcast(Notice::Revoked(hashes.clone()), SESSION_LEASE).await;
            if !all {
                tokio::time::sleep_until((committed + SESSION_LEASE + Duration::from_millis(100)).into()).await;
            }
            tracing::info!(sessions = hashes.len(), all_nodes_confirmed = all, "sessions revoked");
        }
        Ok(hashes)
    }

    /// The account of a phone number, if any.
    pub async fn user_by_phone(&self, phone: &str) -> Result<Option<User>> {
        self.read(self.phone_group(phone)?, ask::UserByPhone { phone: phone.into() }).await
    }

    /// An account by id (its group is in the id).
    pub async fn user_by_id(&self, id: u64) -> Result<Option<User>> {
        let group = logic::user_group(id);
        if !self.node.raft()?.is_data_group(group) {
            return Ok(None);
        }
        self.read(group, ask::UserById(id)).await
    }

    /// The live code of a phone (operators; `log` delivery).
    pub async fn login_code(&self, phone: &str) -> Result<Option<logic::Code>> {
        if !logic::valid_phone(phone) {
            return Err(AuthError::PhoneNumberInvalid.into());
        }
        let code = self.read(self.phone_group(phone)?, ask::Code { phone: phone.into() }).await?;
        Ok(code.filter(|c| c.expires_ms > self.clock.now_ms()))
    }
}
