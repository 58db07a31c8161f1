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

/// A raft error as a peer sees it: the client protocol's codes (retryable
/// ones `UNAVAILABLE`, a request that cannot be right `BAD_REQUEST`, the rest
/// `INTERNAL`), in the status code senders branch on and the message.
impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        use courier_proto::Code;
        let (code, grpc) = match &e {
            e if e.is_retryable() => (Code::Unavailable, tonic::Code::Unavailable),
            Error::Invalid(_) => (Code::BadRequest, tonic::Code::InvalidArgument),
            _ => (Code::Internal, tonic::Code::Internal),
        };
        tonic::Status::new(grpc, format!("{}: {e}", code.as_str()))
    }
}
