//! Client requests as validated domain values: nothing past the gateway sees
//! an unchecked protobuf message.

use courier_proto::client as pb;
use courier_proto::client::request::Method as M;

use crate::auth::AuthError;
use crate::error::{Error, Result};

pub const PROTOCOL: u32 = 1;
const SHORT: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub client_version: String,
    pub device: String,
    pub token: Option<Vec<u8>>,
}

/// One client request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Hello(Hello),
    Ping(u64),
    SendCode { phone: String },
    SignIn { phone: String, code_id: u64, code: String },
    SignUp { phone: String, code_id: u64, first_name: String, last_name: String },
    GetSelf,
    GetSessions,
    TerminateSession(u64),
    TerminateOthers,
    LogOut,
}

impl Method {
    /// Whether the method needs a logged-in connection.
    pub fn needs_session(&self) -> bool {
        matches!(self, Method::GetSelf | Method::GetSessions | Method::TerminateSession(_) | Method::TerminateOthers | Method::LogOut)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Method::Hello(_) => "hello",
            Method::Ping(_) => "ping",
            Method::SendCode { .. } => "send_code",
            Method::SignIn { .. } => "sign_in",
            Method::SignUp { .. } => "sign_up",
            Method::GetSelf => "get_self",
            Method::GetSessions => "get_sessions",
            Method::TerminateSession(_) => "terminate_session",
            Method::TerminateOthers => "terminate_other_sessions",
            Method::LogOut => "log_out",
        }
    }
}

fn text(field: &str, v: String, max: usize) -> Result<String> {
    if v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(Error::BadRequest(format!("{field}: at most {max} printable characters")));
    }
    Ok(v)
}

fn phone(v: String) -> Result<String> {
    if !crate::auth::logic::valid_phone(&v) {
        return Err(AuthError::PhoneNumberInvalid.into());
    }
    Ok(v)
}

fn code_id(v: &str) -> Result<u64> {
    if v.len() != 16 {
        return Err(Error::BadRequest("phone_code_hash: the value send_code returned".into()));
    }
    u64::from_str_radix(v, 16).map_err(|_| Error::BadRequest("phone_code_hash: the value send_code returned".into()))
}

/// How `send_code` names a code to the client.
pub fn code_id_string(id: u64) -> String {
    format!("{id:016x}")
}

impl TryFrom<pb::Request> for Method {
    type Error = Error;

    fn try_from(r: pb::Request) -> Result<Method> {
        Ok(match r.method {
            None => return Err(Error::BadRequest("unknown or missing method".into())),
            Some(M::Hello(h)) => {
                if h.protocol != PROTOCOL {
                    return Err(Error::BadRequest(format!("protocol {} is not spoken here; this node speaks {PROTOCOL}", h.protocol)));
                }
                Method::Hello(Hello {
                    client_version: text("client_version", h.client_version, 64)?,
                    device: text("device", h.device, SHORT)?,
                    token: (!h.session_token.is_empty()).then_some(h.session_token),
                })
            }
            Some(M::Ping(p)) => Method::Ping(p.nonce),
            Some(M::SendCode(s)) => Method::SendCode { phone: phone(s.phone)? },
            Some(M::SignIn(s)) => Method::SignIn { phone: phone(s.phone)?, code_id: code_id(&s.phone_code_hash)?, code: text("code", s.code, 16)? },
            Some(M::SignUp(s)) => Method::SignUp {
                phone: phone(s.phone)?,
                code_id: code_id(&s.phone_code_hash)?,
                first_name: text("first_name", s.first_name, 64)?,
                last_name: text("last_name", s.last_name, 64)?,
            },
            Some(M::GetSelf(_)) => Method::GetSelf,
            Some(M::GetSessions(_)) => Method::GetSessions,
            Some(M::TerminateSession(t)) => Method::TerminateSession(t.session_id),
            Some(M::TerminateOtherSessions(_)) => Method::TerminateOthers,
            Some(M::LogOut(_)) => Method::LogOut,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_into_methods() {
        let bad = |r: pb::Request| Method::try_from(r).unwrap_err().code();
        assert_eq!(bad(pb::Request { method: None }), "BAD_REQUEST");
        let send = |p: &str| pb::Request { method: Some(M::SendCode(pb::SendCode { phone: p.into() })) };
        assert_eq!(bad(send("12")), "PHONE_NUMBER_INVALID");
        assert_eq!(Method::try_from(send("+15550001111")).unwrap(), Method::SendCode { phone: "+15550001111".into() });
        let sign_in = |h: &str| pb::Request {
            method: Some(M::SignIn(pb::SignIn { phone: "+15550001111".into(), phone_code_hash: h.into(), code: "1".into() })),
        };
        assert_eq!(bad(sign_in("zz")), "BAD_REQUEST");
        assert!(matches!(Method::try_from(sign_in(&code_id_string(77))).unwrap(), Method::SignIn { code_id: 77, .. }));
        let hello = |p: u32, d: &str| pb::Request {
            method: Some(M::Hello(pb::Hello { protocol: p, client_version: "t".into(), device: d.into(), session_token: vec![] })),
        };
        assert_eq!(bad(hello(2, "d")), "BAD_REQUEST");
        assert_eq!(bad(hello(1, "bad\u{7}device")), "BAD_REQUEST");
        assert_eq!(bad(hello(1, &"x".repeat(200))), "BAD_REQUEST");
        assert!(matches!(Method::try_from(hello(1, "laptop")).unwrap(), Method::Hello(Hello { token: None, .. })));
    }
}
