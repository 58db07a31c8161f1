use crate::types::NodeId;

/// Errors of the raft layer. `Unavailable` and `NotLeader` are retryable;
/// `Storage`, `Decode` and `Fatal` are not.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no quorum for group {group} right now; retry")]
    Unavailable { group: u32 },
    #[error("this node is not the leader of group {group} (leader: {leader:?})")]
    NotLeader { group: u32, leader: Option<NodeId> },
    #[error("unknown group {0}")]
    UnknownGroup(u32),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("storage: {0}")]
    Storage(#[from] courier_storage::Error),
    #[error("undecodable bytes: {0}")]
    Decode(String),
    #[error("raft stopped: {0}")]
    Fatal(String),
    #[error("peer rpc failed: {0}")]
    Rpc(String),
}

impl Error {
    /// Whether a caller may retry the same request.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::NotLeader { .. } | Error::Rpc(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Its stable code: retryable errors `UNAVAILABLE`, a request that
    /// cannot be right `BAD_REQUEST`, the rest `INTERNAL`.
    pub fn code(&self) -> courier_proto::Code {
        match self {
            e if e.is_retryable() => courier_proto::Code::Unavailable,
            Error::Invalid(_) => courier_proto::Code::BadRequest,
            _ => courier_proto::Code::Internal,
        }
    }
}

/// A raft error as a peer sees it (its code, see [`courier_proto::Code::status`]).
impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        e.code().status(e)
    }
}
