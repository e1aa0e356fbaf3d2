//! The store's one error enum, and its one conversion to `tonic::Status`.
//!
//! etcd clients (clientv3, etcdctl, the `etcd-client` crate, kube-apiserver) map errors back to
//! typed values by the *exact* gRPC code and message, so every client-visible variant below
//! carries etcd 3.4's text byte for byte (see `etcdserver/api/v3rpc/rpctypes/error.go`).
//!
//! Errors are either deterministic (the same command fails the same way on every replica, e.g.
//! a compacted revision) or not (an I/O failure). A non-deterministic error during apply must
//! never be turned into a client response: the applier panics instead, so replicas cannot
//! diverge (toydb's rule).

/// Everything that can go wrong in the store.
///
/// Serializable so a replicated proposer can carry a deterministic rejection from the member
/// that applied a command back to the one that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Error {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("etcdserver: corrupt cluster")]
    CorruptCluster,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    TimeoutLeaderTransfer,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    MemberNotEnoughStarted,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExists,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExists,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// Lock: the waiter's lease expired while it waited (`concurrency.ErrSessionExpired`).
    #[error("mutex: session is expired")]
    SessionExpired,
    /// Proclaim with a leader key that no longer holds the election.
    #[error("election: not leader")]
    ElectionNotLeader,
    /// Leader on an election nobody campaigns in.
    #[error("election: no leader")]
    ElectionNoLeader,
    /// Proclaim/Resign without a leader key (`v3election.ErrMissingLeaderKey`).
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    /// A gRPC request the server does not implement at all.
    #[error("{0}")]
    Unimplemented(String),
    /// Invalid client input with a free-form message (InvalidArgument).
    #[error("{0}")]
    InvalidArgument(String),
    /// Stored data failed its checksum or could not be decoded. Never served.
    #[error("keelson: data corruption detected: {0}")]
    Corrupt(String),
    /// An I/O error from the backend. Non-deterministic.
    #[error("keelson: io error: {0}")]
    Io(String),
}

impl Error {
    /// Whether every replica applying the same command hits the same error. Only deterministic
    /// errors may be returned from apply; anything else must stop the member.
    pub fn is_deterministic(&self) -> bool {
        !matches!(self, Error::Io(_) | Error::Corrupt(_))
    }

    /// The gRPC code etcd uses for this error (`v3rpc/rpctypes/error.go`).
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Error::EmptyKey
            | Error::KeyNotFound
            | Error::ValueProvided
            | Error::LeaseProvided
            | Error::RequestTooLarge
            | Error::TooManyOps
            | Error::DuplicateKey
            | Error::MemberBadUrls
            | Error::UserEmpty
            | Error::RoleEmpty
            | Error::InvalidAuthMgmt
            | Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::Compacted | Error::FutureRev => Code::OutOfRange,
            Error::LeaseNotFound | Error::MemberNotFound => Code::NotFound,
            Error::LeaseExists => Code::FailedPrecondition,
            Error::LeaseTtlTooLarge => Code::OutOfRange,
            Error::NoSpace | Error::TooManyRequests => Code::ResourceExhausted,
            Error::NoLeader
            | Error::Timeout
            | Error::LeaderChanged
            | Error::Stopped
            | Error::NotSupportedForLearner => Code::Unavailable,
            Error::AuthNotEnabled
            | Error::BadLeaderTransferee
            | Error::NotLeader
            | Error::PeerUrlExists
            | Error::MemberNotEnoughStarted
            | Error::MemberNotLearner
            | Error::LearnerNotReady
            | Error::MemberExists
            | Error::TooManyLearners
            | Error::RootUserNotExist
            | Error::RootRoleNotExist
            | Error::UserAlreadyExists
            | Error::UserNotFound
            | Error::RoleAlreadyExists
            | Error::RoleNotFound
            | Error::RoleNotGranted
            | Error::PermissionNotGranted => Code::FailedPrecondition,
            Error::CorruptCluster => Code::DataLoss,
            Error::TimeoutLeaderTransfer => Code::DeadlineExceeded,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Corrupt(_) => Code::DataLoss,
            Error::Io(_) => Code::Unknown,
            // Plain Go errors returned from the v3lock/v3election handlers: grpc-go sends them
            // as Unknown with their text.
            Error::SessionExpired
            | Error::ElectionNotLeader
            | Error::ElectionNoLeader
            | Error::MissingLeaderKey => Code::Unknown,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Corruption { .. } => Error::Corrupt(e.to_string()),
            other => Error::Io(other.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_etcd_code_and_text() {
        let s: tonic::Status = Error::Compacted.into();
        assert_eq!(s.code(), tonic::Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let s: tonic::Status = Error::LeaseNotFound.into();
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert_eq!(s.message(), "etcdserver: requested lease not found");
        assert!(!Error::Io("x".into()).is_deterministic());
        assert!(Error::DuplicateKey.is_deterministic());
    }

    #[test]
    fn errors_round_trip_through_serde() {
        for e in [
            Error::LeaseNotFound,
            Error::Corrupt("x".into()),
            Error::InvalidArgument("bad".into()),
        ] {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<Error>(&json).unwrap(), e);
        }
    }
}
