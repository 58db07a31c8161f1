//! The authentication service's replicated decisions: login codes, accounts,
//! the phone index and sessions. Pure: the proposer stamps the time, the code
//! and the new token's hash into the command, so every replica computes the
//! same state and the same answer. Everything about one phone (its code, its
//! daily limit, its account and the account's sessions) lives in the data
//! group the phone maps to, so sign-up is one atomic command.

use serde::{Deserialize, Serialize};

use courier_raft::logic::{StateRead, StateView};

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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmd {
    SendCode { phone: String, code_id: u64, code: String, ttl_ms: u64, max_per_day: u32, now_ms: u64 },
    SignIn { phone: String, code_id: u64, code: String, session: NewSession, now_ms: u64 },
    SignUp { phone: String, code_id: u64, first_name: String, last_name: String, session: NewSession, group: u32, now_ms: u64 },
    /// Records activity of a session (throttled by the caller).
    Touch { token_hash: TokenHash, node_id: u64, address: String, now_ms: u64 },
    /// Revokes sessions of the user owning `by` (which must be live).
    Revoke { by: TokenHash, which: Revoke, now_ms: u64 },
    // Commands are in Raft logs: new ones at the end, old ones keep applying.
    /// A login code asked for from `asker` (an address): a new code beside
    /// the phone's other live ones (at most [`LIVE_CODES`]), never replacing
    /// them. Past the day's SMS budget an account with a logged-in device
    /// still gets one, delivered only in the app ([`Reply::CodeSentVia`]).
    SendCodeFrom { phone: String, code_id: u64, code: String, ttl_ms: u64, max_per_day: u32, now_ms: u64, asker: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Revoke {
    /// Log out: `by` itself.
    Current,
    One(u64),
    Others,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// Which of these tokens are live sessions (batched: the gateway re-checks
    /// every connection of a group in one read).
    Validate(Vec<TokenHash>),
    /// The sessions of the user owning `by`.
    Sessions { by: TokenHash },
    /// The live login code of a phone (operators, `log` delivery).
    Code { phone: String },
    /// The devices the user of `phone` is logged in on (code delivery in-app).
    UserByPhone { phone: String },
    /// An account by id (the account's own group).
    UserById(u64),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Validity {
    Live { user: User, session: Session },
    Revoked,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    CodeSent { code_id: u64, expires_ms: u64 },
    Authorized { user: User, session_id: u64 },
    Done,
    Revoked(Vec<TokenHash>),
    Validity(Vec<Validity>),
    Sessions(Vec<Session>),
    Code(Option<Code>),
    User(Option<User>),
    // Replies cross the wire: new ones at the end.
    /// A code made by [`Cmd::SendCodeFrom`]; `sms: false` when only the
    /// account's logged-in devices may be told it (the SMS budget is spent).
    CodeSentVia { code_id: u64, expires_ms: u64, sms: bool },
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

pub type Outcome = std::result::Result<Reply, AuthError>;

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
fn replayed_sign_in(view: &dyn StateRead, phone: &str, s: &NewSession) -> Result<Option<Reply>> {
    let Some(session) = get::<Session>(view, &session_key(&s.token_hash))? else { return Ok(None) };
    let Some(user) = get::<User>(view, &user_key(session.user_id))? else { return Ok(None) };
    Ok((user.phone == phone).then_some(Reply::Authorized { user, session_id: session.id }))
}

/// Applies one auth command. `Err` only for storage failures.
///
/// Every command may be applied twice (a forwarded request retried after its
/// answer was lost): each recognizes its own repeat and returns the first
/// result. A refused command writes nothing.
pub fn apply(view: &mut dyn StateView, cmd: &Cmd) -> Result<Outcome> {
    match cmd {
        Cmd::SendCode { phone, code_id, code, ttl_ms, max_per_day, now_ms } => {
            if !valid_phone(phone) {
                return Ok(Err(AuthError::PhoneNumberInvalid));
            }
            if let Some(c) = get::<Code>(view, &code_key(phone))?
                && c.id == *code_id
            {
                return Ok(Ok(Reply::CodeSent { code_id: c.id, expires_ms: c.expires_ms }));
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
            Ok(Ok(Reply::CodeSent { code_id: *code_id, expires_ms }))
        }
        Cmd::SendCodeFrom { phone, code_id, code, ttl_ms, max_per_day, now_ms, asker: _ } => {
            if !valid_phone(phone) {
                return Ok(Err(AuthError::PhoneNumberInvalid));
            }
            let mut sends: Vec<u64> = get(view, &sends_key(phone))?.unwrap_or_default();
            let mut codes = load_codes(view, phone)?;
            if let Some(c) = codes.iter().find(|c| c.id == *code_id) {
                // A repeat: the SMS was counted if it was sent.
                return Ok(Ok(Reply::CodeSentVia { code_id: c.id, expires_ms: c.expires_ms, sms: sends.contains(now_ms) }));
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
            Ok(Ok(Reply::CodeSentVia { code_id: *code_id, expires_ms, sms }))
        }
        Cmd::SignIn { phone, code_id, code, session, now_ms } => {
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
            Ok(Ok(Reply::Authorized { user, session_id }))
        }
        Cmd::SignUp { phone, code_id, first_name, last_name, session, group, now_ms } => {
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
            Ok(Ok(Reply::Authorized { user, session_id }))
        }
        Cmd::Touch { token_hash, node_id, address, now_ms } => {
            let mut s = match live_session(view, token_hash)? {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            };
            s.last_active_ms = s.last_active_ms.max(*now_ms);
            s.node_id = *node_id;
            s.address = address.clone();
            put(view, &session_key(token_hash), &s);
            Ok(Ok(Reply::Done))
        }
        Cmd::Revoke { by, which, now_ms } => {
            let me = match live_session(view, by)? {
                Ok(s) => s,
                // A log-out applied twice: the first already ended the session.
                Err(AuthError::SessionRevoked) if matches!(which, Revoke::Current) => return Ok(Ok(Reply::Revoked(vec![*by]))),
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
                return Ok(Ok(Reply::Revoked(Vec::new())));
            }
            for (h, mut s) in targets.iter().cloned() {
                s.revoked_ms = Some(*now_ms);
                put(view, &session_key(&h), &s);
            }
            index.retain(|h| !targets.iter().any(|(t, _)| t == h));
            put(view, &user_sessions_key(me.user_id), &index);
            Ok(Ok(Reply::Revoked(targets.into_iter().map(|(h, _)| h).collect())))
        }
    }
}

/// Answers one auth query from the (linearizably read) state.
pub fn query(view: &dyn StateRead, q: &Query) -> Result<Outcome> {
    match q {
        Query::Validate(hashes) => {
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
            Ok(Ok(Reply::Validity(out)))
        }
        Query::Sessions { by } => {
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
            Ok(Ok(Reply::Sessions(out)))
        }
        Query::Code { phone } => Ok(Ok(Reply::Code(load_codes(view, phone)?.pop()))),
        Query::UserByPhone { phone } => {
            let user = match get::<u64>(view, &phone_key(phone))? {
                Some(id) => get::<User>(view, &user_key(id))?,
                None => None,
            };
            Ok(Ok(Reply::User(user)))
        }
        Query::UserById(id) => Ok(Ok(Reply::User(get::<User>(view, &user_key(*id))?))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_raft::logic::MemView;

    const PHONE: &str = "+15550001111";
    const MIN: u64 = 60_000;

    fn send(v: &mut MemView, id: u64, now: u64) -> Outcome {
        apply(v, &Cmd::SendCode { phone: PHONE.into(), code_id: id, code: "12345".into(), ttl_ms: 5 * MIN, max_per_day: 5, now_ms: now })
            .unwrap()
    }
    fn sess(n: u8) -> NewSession {
        NewSession { token_hash: [n; 32], device: format!("dev{n}"), app_version: "t".into(), node_id: 1, address: "127.0.0.1:1".into() }
    }
    fn sign_in(v: &mut MemView, id: u64, code: &str, n: u8, now: u64) -> Outcome {
        apply(v, &Cmd::SignIn { phone: PHONE.into(), code_id: id, code: code.into(), session: sess(n), now_ms: now }).unwrap()
    }
    fn sign_up(v: &mut MemView, id: u64, n: u8, now: u64) -> Outcome {
        let cmd = Cmd::SignUp {
            phone: PHONE.into(),
            code_id: id,
            first_name: " Ann ".into(),
            last_name: String::new(),
            session: sess(n),
            group: 7,
            now_ms: now,
        };
        apply(v, &cmd).unwrap()
    }

    #[test]
    fn phone_and_test_numbers() {
        assert!(valid_phone("+15550001111"));
        for bad in ["15550001111", "+1555", "+0123456789", "+1555000111122223", "+1555abc1111", ""] {
            assert!(!valid_phone(bad), "{bad}");
        }
        assert_eq!(test_number_code("+9996612345").as_deref(), Some("11111"));
        assert_eq!(test_number_code("+9996639999").as_deref(), Some("33333"));
        assert_eq!(test_number_code("+15550001111"), None);
        assert_eq!(test_number_code("+999661234"), None);
    }

    #[test]
    fn new_phone_signs_up_with_a_verified_code_then_signs_in() {
        let mut v = MemView::default();
        assert!(matches!(send(&mut v, 1, 0), Ok(Reply::CodeSent { code_id: 1, .. })));
        // Sign-up before the code was checked is refused.
        assert!(matches!(sign_up(&mut v, 1, 1, 10), Err(AuthError::BadRequest(_))));
        assert_eq!(sign_in(&mut v, 1, "12345", 1, 10), Err(AuthError::SignUpRequired));
        let Ok(Reply::Authorized { user, session_id }) = sign_up(&mut v, 1, 1, 20) else { panic!() };
        assert_eq!((user.id, user.first_name.as_str(), session_id), ((1 << USER_GROUP_BITS) | 7, "Ann", 1));
        assert_eq!(user_group(user.id), 7);
        // The code is used up.
        assert_eq!(sign_in(&mut v, 1, "12345", 2, 30), Err(AuthError::PhoneCodeExpired));
        send(&mut v, 2, 40).unwrap();
        let Ok(Reply::Authorized { user: again, session_id }) = sign_in(&mut v, 2, "12345", 2, 50) else { panic!() };
        assert_eq!((again.id, session_id), (user.id, 2));
        let Ok(Reply::Sessions(list)) = query(&v, &Query::Sessions { by: [2; 32] }).unwrap() else { panic!() };
        assert_eq!(list.iter().map(|s| s.id).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn three_wrong_codes_end_the_code() {
        let mut v = MemView::default();
        send(&mut v, 1, 0).unwrap();
        assert_eq!(sign_in(&mut v, 1, "00000", 1, 1), Err(AuthError::PhoneCodeInvalid { tries_left: 2 }));
        assert_eq!(sign_in(&mut v, 1, "00000", 1, 2), Err(AuthError::PhoneCodeInvalid { tries_left: 1 }));
        assert_eq!(sign_in(&mut v, 1, "00000", 1, 3), Err(AuthError::PhoneCodeInvalid { tries_left: 0 }));
        assert_eq!(sign_in(&mut v, 1, "12345", 1, 4), Err(AuthError::PhoneCodeExpired));
    }

    #[test]
    fn codes_expire_after_their_ttl_and_a_new_code_replaces_the_old() {
        let mut v = MemView::default();
        send(&mut v, 1, 0).unwrap();
        assert_eq!(sign_in(&mut v, 1, "12345", 1, 5 * MIN), Err(AuthError::PhoneCodeExpired));
        send(&mut v, 2, 6 * MIN).unwrap();
        send(&mut v, 3, 6 * MIN + 1).unwrap();
        assert_eq!(sign_in(&mut v, 2, "12345", 1, 6 * MIN + 2), Err(AuthError::PhoneCodeExpired));
        assert_eq!(sign_in(&mut v, 3, "12345", 1, 6 * MIN + 3), Err(AuthError::SignUpRequired));
    }

    #[test]
    fn sixth_code_in_a_day_waits_until_the_oldest_leaves_the_window() {
        let mut v = MemView::default();
        for i in 0..5 {
            send(&mut v, i, i * MIN).unwrap();
        }
        assert_eq!(send(&mut v, 9, 10 * MIN), Err(AuthError::FloodWait { secs: ((DAY_MS - 10 * MIN) / 1000) as u32 }));
        // A day after the first one, one more is allowed.
        assert!(send(&mut v, 10, DAY_MS).is_ok());
        assert!(matches!(send(&mut v, 11, DAY_MS + 1), Err(AuthError::FloodWait { .. })));
        assert_eq!(
            apply(&mut v, &Cmd::SendCode { phone: "555".into(), code_id: 1, code: "1".into(), ttl_ms: 1, max_per_day: 5, now_ms: 0 }).unwrap(),
            Err(AuthError::PhoneNumberInvalid)
        );
    }

    fn ask(v: &mut MemView, id: u64, asker: &str, now: u64) -> Outcome {
        let cmd = Cmd::SendCodeFrom { phone: PHONE.into(), code_id: id, code: "12345".into(), ttl_ms: 5 * MIN, max_per_day: 5, now_ms: now, asker: asker.into() };
        apply(v, &cmd).unwrap()
    }

    #[test]
    fn a_strangers_codes_neither_replace_the_owners_nor_lock_the_owner_out() {
        let mut v = MemView::default();
        // The owner has an account and a logged-in device.
        assert!(matches!(ask(&mut v, 1, "owner", 0), Ok(Reply::CodeSentVia { sms: true, .. })));
        sign_in(&mut v, 1, "12345", 1, 1).unwrap_err();
        sign_up(&mut v, 1, 1, 2).unwrap();
        // A new device of the owner asks; strangers ask after it, past the SMS budget.
        assert!(matches!(ask(&mut v, 2, "owner", MIN), Ok(Reply::CodeSentVia { sms: true, .. })));
        let mut sms = Vec::new();
        for i in 0..6 {
            match ask(&mut v, 10 + i, "stranger", MIN + 1 + i) {
                Ok(Reply::CodeSentVia { sms: s, .. }) => sms.push(s),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(sms, [true, true, true, false, false, false], "five SMS a day; then in the app only");
        // A repeat of a request answers the same (and sends no second SMS).
        assert!(matches!(ask(&mut v, 15, "stranger", MIN + 6), Ok(Reply::CodeSentVia { sms: false, .. })));
        // The owner's code is still there; a wrong try on another code does not touch it.
        assert!(matches!(sign_in(&mut v, 10, "00000", 3, MIN + 20), Err(AuthError::PhoneCodeInvalid { tries_left: 2 })));
        let Ok(Reply::Authorized { session_id, .. }) = sign_in(&mut v, 2, "12345", 2, MIN + 30) else { panic!("the owner signs in") };
        assert_eq!(session_id, 2);
        // Signing in ends every live code of the phone.
        assert_eq!(sign_in(&mut v, 11, "12345", 3, MIN + 40), Err(AuthError::PhoneCodeExpired));
        // Past the budget, a phone without a logged-in device waits for the day.
        let other = |v: &mut MemView, id: u64, now: u64| {
            apply(v, &Cmd::SendCodeFrom { phone: "+15550002222".into(), code_id: id, code: "1".into(), ttl_ms: MIN, max_per_day: 1, now_ms: now, asker: "x".into() }).unwrap()
        };
        assert!(other(&mut v, 1, 0).is_ok());
        assert!(matches!(other(&mut v, 2, 1), Err(AuthError::FloodWait { .. })));
    }

    #[test]
    fn a_code_left_by_the_previous_version_still_signs_in() {
        let mut v = MemView::default();
        send(&mut v, 1, 0).unwrap();
        assert!(matches!(ask(&mut v, 2, "a", 1), Ok(Reply::CodeSentVia { .. })));
        assert_eq!(sign_in(&mut v, 1, "12345", 1, 2), Err(AuthError::SignUpRequired));
        sign_up(&mut v, 1, 1, 3).unwrap();
        assert_eq!(query(&v, &Query::Code { phone: PHONE.into() }).unwrap(), Ok(Reply::Code(None)), "no code outlives the sign-up");
    }

    #[test]
    fn revoke_others_one_and_current() {
        let mut v = MemView::default();
        send(&mut v, 1, 0).unwrap();
        sign_in(&mut v, 1, "12345", 1, 1).unwrap_err();
        sign_up(&mut v, 1, 1, 2).unwrap();
        for (i, n) in [(2u64, 2u8), (3, 3), (4, 4)] {
            send(&mut v, i, 10 * i).unwrap();
            sign_in(&mut v, i, "12345", n, 10 * i + 1).unwrap();
        }
        let revoke = |v: &mut MemView, by: u8, which: Revoke| apply(v, &Cmd::Revoke { by: [by; 32], which, now_ms: 100 }).unwrap();
        assert_eq!(revoke(&mut v, 1, Revoke::One(2)), Ok(Reply::Revoked(vec![[2; 32]])));
        // Ending an ended session again (a retried request) is a no-op; an id never given is bad input.
        assert_eq!(revoke(&mut v, 1, Revoke::One(2)), Ok(Reply::Revoked(vec![])));
        assert!(matches!(revoke(&mut v, 1, Revoke::One(5)), Err(AuthError::BadRequest(_))));
        assert!(matches!(revoke(&mut v, 1, Revoke::One(0)), Err(AuthError::BadRequest(_))));
        // A revoked session can do nothing, and says so.
        assert_eq!(revoke(&mut v, 2, Revoke::Others), Err(AuthError::SessionRevoked));
        assert_eq!(revoke(&mut v, 9, Revoke::Others), Err(AuthError::Unauthorized));
        assert_eq!(revoke(&mut v, 1, Revoke::Others), Ok(Reply::Revoked(vec![[3; 32], [4; 32]])));
        let Ok(Reply::Validity(val)) = query(&v, &Query::Validate(vec![[1; 32], [3; 32], [8; 32]])).unwrap() else { panic!() };
        assert!(matches!(&val[0], Validity::Live { session, .. } if session.id == 1));
        assert_eq!(val[1..], [Validity::Revoked, Validity::Unknown]);
        assert_eq!(revoke(&mut v, 1, Revoke::Current), Ok(Reply::Revoked(vec![[1; 32]])));
        assert_eq!(query(&v, &Query::Sessions { by: [1; 32] }).unwrap(), Err(AuthError::SessionRevoked));
        // A log-out applied twice answers the same.
        assert_eq!(revoke(&mut v, 1, Revoke::Current), Ok(Reply::Revoked(vec![[1; 32]])));
        assert_eq!(revoke(&mut v, 1, Revoke::Others), Err(AuthError::SessionRevoked));
    }

    #[test]
    fn commands_applied_twice_answer_as_the_first_time() {
        let mut v = MemView::default();
        let first = send(&mut v, 1, 0);
        assert_eq!(send(&mut v, 1, 5), first, "a repeated send_code");
        for i in 2..=5 {
            send(&mut v, i, i).unwrap();
        }
        assert_eq!(send(&mut v, 5, 10), Ok(Reply::CodeSent { code_id: 5, expires_ms: 5 + 5 * MIN }), "the repeat did not count");
        assert_eq!(sign_in(&mut v, 5, "12345", 1, 20), Err(AuthError::SignUpRequired));
        let up = sign_up(&mut v, 5, 1, 30);
        assert!(up.is_ok());
        assert_eq!(sign_up(&mut v, 5, 1, 40), up, "a repeated sign-up: the same user and session");
        let before = v.clone();
        assert_eq!(sign_up(&mut v, 5, 1, 50), up);
        assert_eq!(v, before, "a repeat writes nothing");
        send(&mut v, 9, DAY_MS).unwrap();
        let signed = sign_in(&mut v, 9, "12345", 2, DAY_MS + 1);
        assert!(signed.is_ok());
        assert_eq!(sign_in(&mut v, 9, "12345", 2, DAY_MS + 2), signed, "a repeated sign-in");
        // Another phone cannot take over a session by replaying its token.
        let other = Cmd::SignIn { phone: "+15550002222".into(), code_id: 9, code: "12345".into(), session: sess(2), now_ms: DAY_MS + 3 };
        assert_eq!(apply(&mut v, &other).unwrap(), Err(AuthError::PhoneCodeExpired));
    }
}
