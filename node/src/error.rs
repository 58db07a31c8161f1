/// Errors of a node. Every one a client or operator can see maps to a stable
/// code from the brief ([`Error::code`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad config: {0}")]
    Config(String),
    #[error("certificate: {0}")]
    Cert(String),
    #[error(transparent)]
    Storage(#[from] courier_storage::Error),
    #[error(transparent)]
    Raft(#[from] courier_raft::Error),
    #[error("{0}")]
    Io(String),
    #[error("this node is not part of an initialized cluster yet; run `courier cluster init` on the first node")]
    NotInitialized,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
}

impl Error {
    /// The stable error code (see the brief).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Raft(e) if e.is_retryable() => "UNAVAILABLE",
            Error::Raft(courier_raft::Error::Invalid(_)) => "BAD_REQUEST",
            Error::NotInitialized => "UNAVAILABLE",
            Error::BadRequest(_) | Error::Config(_) => "BAD_REQUEST",
            Error::Unauthorized(_) => "UNAUTHORIZED",
            _ => "INTERNAL",
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        let code = match e.code() {
            "UNAVAILABLE" => tonic::Code::Unavailable,
            "BAD_REQUEST" => tonic::Code::InvalidArgument,
            "UNAUTHORIZED" => tonic::Code::PermissionDenied,
            _ => tonic::Code::Internal,
        };
        let mut status = tonic::Status::new(code, format!("{}: {e}", e.code()));
        if let Ok(v) = e.code().parse() {
            status.metadata_mut().insert("courier-code", v);
        }
        status
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
