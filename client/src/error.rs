//! Errors a client sees: the node's answer with its stable code, or a local
//! failure (which maps to `UNAVAILABLE` or `BAD_REQUEST` where a code is asked for).

use courier_proto::Code;
use courier_proto::client as pb;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The node answered with an error code from the brief.
    #[error("{code}: {message}")]
    /// A code this build does not know (a newer node's) is `INTERNAL`, with
    /// the node's code at the start of the message.
    Api { code: Code, message: String, retry_after_secs: u32, parts: Vec<u32> },
    /// No node could be reached, or the connection broke mid-request.
    #[error("UNAVAILABLE: {0}")]
    Unavailable(String),
    /// The node's certificate is not from the cluster CA (or TLS failed).
    #[error("TLS: {0}")]
    Tls(String),
    #[error("bad client configuration: {0}")]
    Config(String),
    /// The node sent something this client does not understand.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl Error {
    pub(crate) fn from_proto(e: pb::Error) -> Error {
        let (code, message) = match Code::parse(&e.code) {
            Some(code) => (code, e.message),
            None => (Code::Internal, format!("{}: {}", e.code, e.message)),
        };
        Error::Api { code, message, retry_after_secs: e.retry_after_secs, parts: e.parts }
    }

    /// The brief's code for this error.
    pub fn code(&self) -> Code {
        match self {
            Error::Api { code, .. } => *code,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Tls(_) => Code::Unauthorized,
            Error::Config(_) | Error::Protocol(_) => Code::BadRequest,
        }
    }

    /// Whether trying again (later, or on another node) may succeed.
    pub fn is_retryable(&self) -> bool {
        self.code().is_retryable()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
