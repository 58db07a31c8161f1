use courier_proto::Code;

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
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    Chat(#[from] crate::messaging::ChatError),
    #[error(transparent)]
    Media(#[from] crate::media::MediaError),
    /// Retryable: a quorum of copies could not be reached right now.
    #[error("{0}")]
    Unavailable(String),
}

impl Error {
    /// The stable error code (see the brief).
    pub fn code(&self) -> courier_proto::Code {
        match self {
            Error::Raft(e) => e.code(),
            Error::NotInitialized => Code::Unavailable,
            Error::BadRequest(_) | Error::Config(_) => Code::BadRequest,
            Error::Unauthorized(_) => Code::Unauthorized,
            Error::Auth(e) => e.code(),
            Error::Chat(e) => e.code(),
            Error::Media(e) => e.code(),
            Error::Unavailable(_) => Code::Unavailable,
            _ => Code::Internal,
        }
    }

    /// Seconds to wait before retrying (`FLOOD_WAIT`).
    pub fn retry_after_secs(&self) -> u32 {
        match self {
            Error::Auth(crate::auth::AuthError::FloodWait { secs }) | Error::Chat(crate::messaging::ChatError::FloodWait { secs }) => *secs,
            _ => 0,
        }
    }

    /// What a client is told: the code, and a message that names nothing internal.
    pub fn to_client(&self) -> courier_proto::client::Error {
        let message = match self.code() {
            Code::Internal => "internal error; the node logged the cause".to_string(),
            _ => self.to_string(),
        };
        let parts = match self {
            Error::Media(crate::media::MediaError::PartMissing(p)) => p.clone(),
            _ => Vec::new(),
        };
        courier_proto::client::Error { code: self.code().as_str().to_string(), message, retry_after_secs: self.retry_after_secs(), parts }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        e.code().status(&e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
