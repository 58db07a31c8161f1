//! The authentication service's replicated decisions: login codes, accounts,
//! the phone index and sessions. Pure: the proposer stamps the time, the code
//! and the new token's hash into the command, so every replica computes the
//! same state and the same answer. Everything about one phone (its code, its
//! daily limit, its account and the account's sessions) lives in the data
//! group the phone maps to, so sign-up is one atomic command.

use serde::{Deserialize, Serialize};

use courier_raft::logic::{StateRead, StateView};

use crate::app::answer;
use crate::error::Result;
use crate::state::{get, key, put};

pub type TokenHash = [u8; 32];

const DAY_MS: u64 = 24 * 3600 * 1000;
/// Wrong codes a login code survives.
pub const CODE_TRIES: u8 = 3;
/// Live codes a phone keeps at once: a stranger's request adds one beside
/// the owner's instead of replacing it; past this the oldest goes.
pub const LIVE_CODES: usize = 16;
const NAME_MAX: usize = 64;

/// Bits of a user id below the per-group sequence: the user's data group.
pub const USER_GROUP_BITS: u32 = 16;

/// The data group a user's account and sessions live in.
pub fn user_group(user_id: u64) -> u32 {
    (user_id & ((1 << USER_GROUP_BITS) - 1)) as u32
}

/// E.164: `+` and 8 to 15 digits, the first not 0.
/// Who asked for a login code, as the account's logged-in devices are
/// shown it: the app's name and version (letters, digits and `./-_` only,
/// at most 32) and the address. The asker chose both strings it sent; only
/// these are shown, so no sentence of theirs reaches the owner.
pub fn asker_label(app_version: &str, ip: std::net::IpAddr) -> String {
    let app: String = app_version.chars().filter(|c| c.is_ascii_alphanumeric() || "./-_".contains(*c)).take(32).collect();
    let app = if app.is_empty() { "an unnamed app".to_string() } else { app };
    format!("{app} from {ip}")
}

pub fn valid_phone(phone: &str) -> bool {
    let Some(digits) = phone.strip_prefix('+') else { return false };
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

/// Telegram's test numbers `+99966XYYYY` (X the DC digit): their code is X five times.
pub fn test_number_code(phone: &str) -> Option<String> {
    let rest = phone.strip_prefix("+99966")?;
    if rest.len() != 5 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let x = rest.chars().next()?;
    Some(std::iter::repeat_n(x, 5).collect())
}

/// A trimmed, printable name of 1..=64 characters (empty allowed for last names).
pub fn clean_name(name: &str, required: bool) -> Option<String> {
    let n = name.trim();
    if (required && n.is_empty()) || n.chars().count() > NAME_MAX || n.chars().any(char::is_control) {
        return None;
    }
    Some(n.to_string())
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub phone: String,
    pub first_name: String,
    pub last_name: String,
    pub created_ms: u64,
    /// The next session id of this user (ids are never reused).
    pub next_session: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: u64,
    pub user_id: u64,
    pub device: String,
    pub app_version: String,
    pub node_id: u64,
    pub address: String,
    pub created_ms: u64,
    pub last_active_ms: u64,
    /// Set when revoked; the record stays so a revoked token is told apart
    /// from a forged one.
    pub revoked_ms: Option<u64>,
}

/// A live login code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    /// Names this code (`phone_code_hash`); a new `send_code` replaces it.
    pub id: u64,
    pub code: String,
    pub expires_ms: u64,
    pub tries_left: u8,
    /// The right code was given for a phone without an account: sign-up may use it.
    pub verified: bool,
}

/// What a new session starts with; the proposer fills it in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSession {
    pub token_hash: TokenHash,
    pub device: String,
    pub app_version: String,
    pub node_id: u64,
    pub address: String,
}

/// Each variant's struct is in [`cmd`]; a newtype variant around a struct
/// encodes as the struct variant it was, so the bytes in Raft logs read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmd {
    SendCode(cmd::SendCode),
    SignIn(cmd::SignIn),
    SignUp(cmd::SignUp),
    Touch(cmd::Touch),
    Revoke(cmd::Revoke),
    // Commands are in Raft logs: new ones at the end, old ones keep applying.
    SendCodeFrom(cmd::SendCodeFrom),
}

/// The auth commands, one struct each.
pub mod cmd {
    use super::{NewSession, TokenHash};
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SendCode {
        pub phone: String,
        pub code_id: u64,
        pub code: String,
        pub ttl_ms: u64,
        pub max_per_day: u32,
        pub now_ms: u64,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SignIn {
        pub phone: String,
        pub code_id: u64,
        pub code: String,
        pub session: NewSession,
        pub now_ms: u64,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SignUp {
        pub phone: String,
        pub code_id: u64,
        pub first_name: String,
        pub last_name: String,
        pub session: NewSession,
        pub group: u32,
        pub now_ms: u64,
    }

    /// Records activity of a session (throttled by the caller).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Touch {
        pub token_hash: TokenHash,
        pub node_id: u64,
        pub address: String,
        pub now_ms: u64,
    }

    /// Revokes sessions of the user owning `by` (which must be live).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Revoke {
        pub by: TokenHash,
        pub which: super::Revoke,
        pub now_ms: u64,
    }

    /// A login code asked for from `asker` (an address): a new code beside
    /// the phone's other live ones (at most [`super::LIVE_CODES`]), never
    /// replacing them. Past the day's SMS budget an account with a logged-in
    /// device still gets one, delivered only in the app
    /// ([`super::CodeSentVia`]).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SendCodeFrom {
        pub phone: String,
        pub code_id: u64,
        pub code: String,
        pub ttl_ms: u64,
        pub max_per_day: u32,
        pub now_ms: u64,
        pub asker: String,
    }
}

crate::app::requests!(AppCommand::Auth, Cmd, cmd {
    SendCode => CodeSent,
    SignIn => Authorized,
    SignUp => Authorized,
    Touch => (),
    Revoke => Vec<TokenHash>,
    SendCodeFrom => CodeSentVia,
});

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Revoke {
    /// Log out: `by` itself.
    Current,
    One(u64),
    Others,
}

/// Each variant's struct is in [`ask`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    Validate(ask::Validate),
    Sessions(ask::Sessions),
    Code(ask::Code),
    UserByPhone(ask::UserByPhone),
    UserById(ask::UserById),
}

/// The auth queries, one struct each.
pub mod ask {
    use super::TokenHash;
    use serde::{Deserialize, Serialize};

    /// Which of these tokens are live sessions (batched: the gateway re-checks
    /// every connection of a group in one read).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Validate(pub Vec<TokenHash>);

    /// The sessions of the user owning `by`.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Sessions {
        pub by: TokenHash,
    }

    /// The live login code of a phone (operators, `log` delivery).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Code {
        pub phone: String,
    }

    /// The devices the user of `phone` is logged in on (code delivery in-app).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct UserByPhone {
        pub phone: String,
    }

    /// An account by id (the account's own group).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct UserById(pub u64);
}

crate::app::requests!(AppQuery::Auth, Query, ask {
    Validate => Vec<Validity>,
    Sessions => Vec<Session>,
    Code => Option<Code>,
    UserByPhone => Option<User>,
    UserById => Option<User>,
});

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Validity {
    Live { user: User, session: Session },
    Revoked,
    Unknown,
}

/// A code made by [`cmd::SendCode`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeSent {
    pub code_id: u64,
    pub expires_ms: u64,
}

/// A code made by [`cmd::SendCodeFrom`]; `sms: false` when only the
/// account's logged-in devices may be told it (the SMS budget is spent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeSentVia {
    pub code_id: u64,
    pub expires_ms: u64,
    pub sms: bool,
}

/// A sign-in's or sign-up's new session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorized {
    pub user: User,
    pub session_id: u64,
}

/// Refusals; each maps to one code of the brief.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AuthError {
    #[error("the phone number is not a valid international number (+ and 8 to 15 digits)")]
    PhoneNumberInvalid,
    #[error("wrong code; {tries_left} tries left")]
    PhoneCodeInvalid { tries_left: u8 },
    #[error("the code expired or was used up; ask for a new one")]
    PhoneCodeExpired,
    #[error("too many requests; wait {secs} s")]
    FloodWait { secs: u32 },
    #[error("this phone has no account yet; sign up with a name")]
    SignUpRequired,
    #[error("{0}")]
    BadRequest(String),
    #[error("not logged in")]
    Unauthorized,
    #[error("this session was terminated; log in again")]
    SessionRevoked,
    // Outcomes cross the wire: new refusals at the end.
    /// A sign-in or sign-up on a connection that is logged in (one account
    /// per connection; log out first, or open another connection).
    #[error("this connection is logged in (or signing in) already; log out first, or use another connection")]
    AlreadyLoggedIn,
}

impl AuthError {
    pub fn code(&self) -> courier_proto::Code {
        match self {
            AuthError::PhoneNumberInvalid => courier_proto::Code::PhoneNumberInvalid,
            AuthError::PhoneCodeInvalid { .. } => courier_proto::Code::PhoneCodeInvalid,
            AuthError::PhoneCodeExpired => courier_proto::Code::PhoneCodeExpired,
            AuthError::FloodWait { .. } => courier_proto::Code::FloodWait,
            AuthError::SignUpRequired => courier_proto::Code::SignUpRequired,
            AuthError::BadRequest(_) => courier_proto::Code::BadRequest,
            AuthError::Unauthorized => courier_proto::Code::Unauthorized,
            AuthError::SessionRevoked => courier_proto::Code::SessionRevoked,
            AuthError::AlreadyLoggedIn => courier_proto::Code::AlreadyLoggedIn,
        }
    }
}

/// An answer of type `T`, or a refusal.
pub type Outcome<T> = std::result::Result<T, AuthError>;

// ---- keys ----

fn phone_key(phone: &str) -> Vec<u8> {
    format!("a/phone/{phone}").into_bytes()
}
fn code_key(phone: &str) -> Vec<u8> {
    format!("a/code/{phone}").into_bytes()
}
/// The phone's live codes (`Vec<Code>`, oldest first) since `SendCodeFrom`;
/// `code_key` holds the one code of the previous `SendCode`.
fn codes_key(phone: &str) -> Vec<u8> {
    format!("a/codes/{phone}").into_bytes()
}
fn sends_key(phone: &str) -> Vec<u8> {
    format!("a/sends/{phone}").into_bytes()
}
fn user_key(id: u64) -> Vec<u8> {
    key(b"a/user/", &[id])
}
fn session_key(hash: &TokenHash) -> Vec<u8> {
    let mut k = b"a/sess/".to_vec();
    k.extend_from_slice(hash);
    k
}
/// The user's session index: `a/usess/<user>` → the token hashes of live sessions.
fn user_sessions_key(user: u64) -> Vec<u8> {
    key(b"a/usess/", &[user])
}
const NEXT_USER: &[u8] = b"a/next_user";

fn live_session(view: &dyn StateRead, hash: &TokenHash) -> Result<std::result::Result<Session, AuthError>> {
    Ok(match get::<Session>(view, &session_key(hash))? {
        Some(s) if s.revoked_ms.is_none() => Ok(s),
        Some(_) => Err(AuthError::SessionRevoked),
        None => Err(AuthError::Unauthorized),
    })
}

/// The phone's live codes, oldest first: the list, and the code a
/// `SendCode` of the previous version left at `code_key`.
fn load_codes(view: &dyn StateRead, phone: &str) -> Result<Vec<Code>> {
    let mut codes: Vec<Code> = get(view, &codes_key(phone))?.unwrap_or_default();
    if let Some(old) = get::<Code>(view, &code_key(phone))?
        && !codes.iter().any(|c| c.id == old.id)
    {
        codes.insert(0, old);
    }
    Ok(codes)
}

/// Writes the phone's live codes (all in the list from now on).
fn store_codes(view: &mut dyn StateView, phone: &str, codes: &[Code]) {
    view.delete(&code_key(phone));
    if codes.is_empty() {
        view.delete(&codes_key(phone));
    } else {
        put(view, &codes_key(phone), &codes.to_vec());
    }
}

/// Whether the account of `phone` has a logged-in device.
fn has_live_session(view: &dyn StateRead, phone: &str) -> Result<bool> {
    let Some(user) = get::<u64>(view, &phone_key(phone))? else { return Ok(false) };
    let index: Vec<TokenHash> = get(view, &user_sessions_key(user))?.unwrap_or_default();
    Ok(!index.is_empty())
}

/// Checks code `code_id` of `phone`; on a wrong code spends a try (and ends
/// the code after the last). Nothing is written for an unknown `code_id`.
fn check_code(view: &mut dyn StateView, phone: &str, code_id: u64, code: &str, now_ms: u64) -> Result<std::result::Result<Code, AuthError>> {
    let mut codes = load_codes(view, phone)?;
    let Some(i) = codes.iter().position(|c| c.id == code_id) else { return Ok(Err(AuthError::PhoneCodeExpired)) };
    if now_ms >= codes[i].expires_ms {
        codes.remove(i);
        store_codes(view, phone, &codes);
        return Ok(Err(AuthError::PhoneCodeExpired));
    }
    if codes[i].code != code {
        codes[i].tries_left = codes[i].tries_left.saturating_sub(1);
        let tries_left = codes[i].tries_left;
        if tries_left == 0 {
            codes.remove(i);
        }
        store_codes(view, phone, &codes);
        return Ok(Err(AuthError::PhoneCodeInvalid { tries_left }));
    }
    Ok(Ok(codes[i].clone()))
}

fn create_session(view: &mut dyn StateView, user: &mut User, s: &NewSession, now_ms: u64) -> Result<std::result::Result<u64, AuthError>> {
    if get::<Session>(view, &session_key(&s.token_hash))?.is_some() {
        // 256 random bits do not collide; a repeat is a replayed command.
        return Ok(Err(AuthError::BadRequest("session token already used".into())));
    }
    let id = user.next_session;
    user.next_session += 1;
    let session = Session {
        id,
        user_id: user.id,
        device: s.device.clone(),
        app_version: s.app_version.clone(),
        node_id: s.node_id,
        address: s.address.clone(),
        created_ms: now_ms,
        last_active_ms: now_ms,
        revoked_ms: None,
    };
    put(view, &session_key(&s.token_hash), &session);
    let mut index: Vec<TokenHash> = get(view, &user_sessions_key(user.id))?.unwrap_or_default();
    index.push(s.token_hash);
    put(view, &user_sessions_key(user.id), &index);
    put(view, &user_key(user.id), user);
    Ok(Ok(id))
}

/// The first answer to a sign-in or sign-up whose session (token) already
/// exists for this phone: the same command applied again, after a retry that
/// followed a lost answer.
fn replayed_sign_in(view: &dyn StateRead, phone: &str, s: &NewSession) -> Result<Option<Authorized>> {
    let Some(session) = get::<Session>(view, &session_key(&s.token_hash))? else { return Ok(None) };
    let Some(user) = get::<User>(view, &user_key(session.user_id))? else { return Ok(None) };
    Ok((user.phone == phone).then_some(Authorized { user, session_id: session.id }))
}

/// Applies one auth command: its answer encoded ([`answer`]: each arm
/// answers its command's own type). `Err` only for storage failures.
///
/// Every command may be applied twice (a forwarded request retried after its
/// answer was lost): each recognizes its own repeat and returns the first
/// result. A refused command writes nothing.
pub fn apply(view: &mut dyn StateView, cmd: &Cmd) -> Result<Vec<u8>> {
    match cmd {
        Cmd::SendCode(r) => answer(r, send_code(view, r)),
        Cmd::SendCodeFrom(r) => answer(r, send_code_from(view, r)),
        Cmd::SignIn(r) => answer(r, sign_in(view, r)),
        Cmd::SignUp(r) => answer(r, sign_up(view, r)),
        Cmd::Touch(r) => answer(r, touch(view, r)),
        Cmd::Revoke(r) => answer(r, revoke(view, r)),
    }
}

fn send_code(view: &mut dyn StateView, req: &cmd::SendCode) -> Result<Outcome<CodeSent>> {
    let cmd::SendCode { phone, code_id, code, ttl_ms, max_per_day, now_ms } = req;
    if !valid_phone(phone) {
        return Ok(Err(AuthError::PhoneNumberInvalid));
    }
    if let Some(c) = get::<Code>(view, &code_key(phone))?
        && c.id == *code_id
    {
        return Ok(Ok(CodeSent { code_id: c.id, expires_ms: c.expires_ms }));
    }
    let mut sends: Vec<u64> = get(view, &sends_key(phone))?.unwrap_or_default();
    sends.retain(|t| t + DAY_MS > *now_ms);
    if sends.len() >= *max_per_day as usize {
        let oldest = sends.iter().min().copied().unwrap_or(*now_ms);
        let wait_ms = (oldest + DAY_MS).saturating_sub(*now_ms);
        return Ok(Err(AuthError::FloodWait { secs: wait_ms.div_ceil(1000).max(1) as u32 }));
    }
    sends.push(*now_ms);
    put(view, &sends_key(phone), &sends);
    let expires_ms = now_ms + ttl_ms;
    put(view, &code_key(phone), &Code { id: *code_id, code: code.clone(), expires_ms, tries_left: CODE_TRIES, verified: false });
    Ok(Ok(CodeSent { code_id: *code_id, expires_ms }))
}

fn send_code_from(view: &mut dyn StateView, req: &cmd::SendCodeFrom) -> Result<Outcome<CodeSentVia>> {
    let cmd::SendCodeFrom { phone, code_id, code, ttl_ms, max_per_day, now_ms, asker: _ } = req;
    if !valid_phone(phone) {
        return Ok(Err(AuthError::PhoneNumberInvalid));
    }
    let mut sends: Vec<u64> = get(view, &sends_key(phone))?.unwrap_or_default();
    let mut codes = load_codes(view, phone)?;
    if let Some(c) = codes.iter().find(|c| c.id == *code_id) {
        // A repeat: the SMS was counted if it was sent.
        return Ok(Ok(CodeSentVia { code_id: c.id, expires_ms: c.expires_ms, sms: sends.contains(now_ms) }));
    }
    sends.retain(|t| t + DAY_MS > *now_ms);
    let sms = sends.len() < *max_per_day as usize;
    if sms {
        sends.push(*now_ms);
        put(view, &sends_key(phone), &sends);
    } else if !has_live_session(view, phone)? {
        let oldest = sends.iter().min().copied().unwrap_or(*now_ms);
        let wait_ms = (oldest + DAY_MS).saturating_sub(*now_ms);
        return Ok(Err(AuthError::FloodWait { secs: wait_ms.div_ceil(1000).max(1) as u32 }));
    }
    codes.retain(|c| c.expires_ms > *now_ms);
    let expires_ms = now_ms + ttl_ms;
    codes.push(Code { id: *code_id, code: code.clone(), expires_ms, tries_left: CODE_TRIES, verified: false });
    if codes.len() > LIVE_CODES {
        codes.remove(0);
    }
    store_codes(view, phone, &codes);
    Ok(Ok(CodeSentVia { code_id: *code_id, expires_ms, sms }))
}

fn sign_in(view: &mut dyn StateView, req: &cmd::SignIn) -> Result<Outcome<Authorized>> {
    let cmd::SignIn { phone, code_id, code, session, now_ms } = req;
    if !valid_phone(phone) {
        return Ok(Err(AuthError::PhoneNumberInvalid));
    }
    if let Some(first) = replayed_sign_in(view, phone, session)? {
        return Ok(Ok(first));
    }
    let mut c = match check_code(view, phone, *code_id, code, *now_ms)? {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let Some(user_id) = get::<u64>(view, &phone_key(phone))? else {
        c.verified = true;
        let mut codes = load_codes(view, phone)?;
        codes.iter_mut().filter(|x| x.id == c.id).for_each(|x| *x = c.clone());
        store_codes(view, phone, &codes);
        return Ok(Err(AuthError::SignUpRequired));
    };
    let Some(mut user) = get::<User>(view, &user_key(user_id))? else {
        return Ok(Err(AuthError::BadRequest("account record missing".into())));
    };
    let session_id = match create_session(view, &mut user, session, *now_ms)? {
        Ok(id) => id,
        Err(e) => return Ok(Err(e)),
    };
    // In: every live code of the phone ends.
    store_codes(view, phone, &[]);
    Ok(Ok(Authorized { user, session_id }))
}

fn sign_up(view: &mut dyn StateView, req: &cmd::SignUp) -> Result<Outcome<Authorized>> {
    let cmd::SignUp { phone, code_id, first_name, last_name, session, group, now_ms } = req;
    if !valid_phone(phone) {
        return Ok(Err(AuthError::PhoneNumberInvalid));
    }
    if let Some(first) = replayed_sign_in(view, phone, session)? {
        return Ok(Ok(first));
    }
    let (Some(first), Some(last)) = (clean_name(first_name, true), clean_name(last_name, false)) else {
        return Ok(Err(AuthError::BadRequest(format!("a name is 1 to {NAME_MAX} printable characters"))));
    };
    let Some(c) = load_codes(view, phone)?.into_iter().find(|c| c.id == *code_id) else { return Ok(Err(AuthError::PhoneCodeExpired)) };
    if *now_ms >= c.expires_ms {
        return Ok(Err(AuthError::PhoneCodeExpired));
    }
    if !c.verified {
        return Ok(Err(AuthError::BadRequest("sign in with the code first".into())));
    }
    if get::<u64>(view, &phone_key(phone))?.is_some() {
        return Ok(Err(AuthError::BadRequest("this phone already has an account; sign in".into())));
    }
    let seq: u64 = get(view, NEXT_USER)?.unwrap_or(1);
    let id = (seq << USER_GROUP_BITS) | u64::from(*group);
    let mut user = User { id, phone: phone.clone(), first_name: first, last_name: last, created_ms: *now_ms, next_session: 1 };
    // Refused before anything is written: no half-made account.
    let session_id = match create_session(view, &mut user, session, *now_ms)? {
        Ok(id) => id,
        Err(e) => return Ok(Err(e)),
    };
    put(view, NEXT_USER, &(seq + 1));
    put(view, &phone_key(phone), &id);
    store_codes(view, phone, &[]);
    Ok(Ok(Authorized { user, session_id }))
}

fn touch(view: &mut dyn StateView, req: &cmd::Touch) -> Result<Outcome<()>> {
    let cmd::Touch { token_hash, node_id, address, now_ms } = req;
    let mut s = match live_session(view, token_hash)? {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    s.last_active_ms = s.last_active_ms.max(*now_ms);
    s.node_id = *node_id;
    s.address = address.clone();
    put(view, &session_key(token_hash), &s);
    Ok(Ok(()))
}

fn revoke(view: &mut dyn StateView, req: &cmd::Revoke) -> Result<Outcome<Vec<TokenHash>>> {
    let cmd::Revoke { by, which, now_ms } = req;
    let me = match live_session(view, by)? {
        Ok(s) => s,
        // A log-out applied twice: the first already ended the session.
        Err(AuthError::SessionRevoked) if matches!(which, Revoke::Current) => return Ok(Ok(vec![*by])),
        Err(e) => return Ok(Err(e)),
    };
    let mut index: Vec<TokenHash> = get(view, &user_sessions_key(me.user_id))?.unwrap_or_default();
    let mut targets = Vec::new();
    for h in &index {
        let Some(s) = get::<Session>(view, &session_key(h))? else { continue };
        let hit = match which {
            Revoke::Current => h == by,
            Revoke::One(id) => s.id == *id,
            Revoke::Others => h != by,
        };
        if hit {
            targets.push((*h, s));
        }
    }
    if let Revoke::One(id) = which
        && targets.is_empty()
    {
        // Ids below the user's next one were sessions once: already ended (or a repeat).
        let next = get::<User>(view, &user_key(me.user_id))?.map_or(0, |u| u.next_session);
        if *id == 0 || *id >= next {
            return Ok(Err(AuthError::BadRequest(format!("you have no session {id}"))));
        }
        return Ok(Ok(Vec::new()));
    }
    for (h, mut s) in targets.iter().cloned() {
        s.revoked_ms = Some(*now_ms);
        put(view, &session_key(&h), &s);
    }
    index.retain(|h| !targets.iter().any(|(t, _)| t == h));
    put(view, &user_sessions_key(me.user_id), &index);
    Ok(Ok(targets.into_iter().map(|(h, _)| h).collect()))
}

/// Answers one auth query from the (linearizably read) state, encoded
/// ([`answer`]).
pub fn query(view: &dyn StateRead, q: &Query) -> Result<Vec<u8>> {
    match q {
        Query::Validate(r) => answer(r, ask_validate(view, r)),
        Query::Sessions(r) => answer(r, ask_sessions(view, r)),
        Query::Code(r) => answer(r, ask_code(view, r)),
        Query::UserByPhone(r) => answer(r, ask_user_by_phone(view, r)),
        Query::UserById(r) => answer(r, ask_user_by_id(view, r)),
    }
}

fn ask_validate(view: &dyn StateRead, req: &ask::Validate) -> Result<Outcome<Vec<Validity>>> {
    let ask::Validate(hashes) = req;
    let mut out = Vec::with_capacity(hashes.len());
    for h in hashes {
        out.push(match get::<Session>(view, &session_key(h))? {
            Some(s) if s.revoked_ms.is_none() => match get::<User>(view, &user_key(s.user_id))? {
                Some(user) => Validity::Live { user, session: s },
                None => Validity::Unknown,
            },
            Some(_) => Validity::Revoked,
            None => Validity::Unknown,
        });
    }
    Ok(Ok(out))
}

fn ask_sessions(view: &dyn StateRead, req: &ask::Sessions) -> Result<Outcome<Vec<Session>>> {
    let ask::Sessions { by } = req;
    let me = match live_session(view, by)? {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    let index: Vec<TokenHash> = get(view, &user_sessions_key(me.user_id))?.unwrap_or_default();
    let mut out = Vec::new();
    for h in &index {
        if let Some(s) = get::<Session>(view, &session_key(h))? {
            out.push(s);
        }
    }
    out.sort_by_key(|s| s.id);
    Ok(Ok(out))
}

fn ask_code(view: &dyn StateRead, req: &ask::Code) -> Result<Outcome<Option<Code>>> {
    let ask::Code { phone } = req;
    Ok(Ok(load_codes(view, phone)?.pop()))
}

fn ask_user_by_phone(view: &dyn StateRead, req: &ask::UserByPhone) -> Result<Outcome<Option<User>>> {
    let ask::UserByPhone { phone } = req;
    let user = match get::<u64>(view, &phone_key(phone))? {
        Some(id) => get::<User>(view, &user_key(id))?,
        None => None,
    };
    Ok(Ok(user))
}

fn ask_user_by_id(view: &dyn StateRead, req: &ask::UserById) -> Result<Outcome<Option<User>>> {
    let ask::UserById(id) = req;
    Ok(Ok(get::<User>(view, &user_key(*id))?))
}

#[cfg(test)]
mod tests;
