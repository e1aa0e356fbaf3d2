//! The harness's one error type: everything that makes a run fail as a *harness* failure (exit
//! status 2), as opposed to an anomaly found in a history.
//!
//! A cluster that cannot be started, a member that will not come back after a fault, a network
//! that cannot be set up: each names what the harness was doing and, for a member, the end of
//! its log, so the report says why without anyone digging through the run folder.

use std::time::Duration;

/// Why the harness could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The options make no sense (no members, a missing binary, an unknown name).
    #[error("{0}")]
    Config(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A member process exited when it should have been serving.
    #[error("member {member} exited ({status}); the end of its log:\n{log_tail}")]
    MemberExited {
        member: String,
        status: String,
        log_tail: String,
    },
    /// Something awaited did not happen in time (a member answering, a leader, a heal).
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    /// A gRPC request the harness itself needed (a membership change) failed for good.
    #[error("{what}: {message}")]
    Rpc { what: String, message: String },
    /// Network namespaces, links or partition proxies could not be set up or changed.
    #[error("network: {0}")]
    Net(String),
}

impl HarnessError {
    /// An [`HarnessError::Io`] saying what was being done.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> HarnessError {
        HarnessError::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn timeout(what: impl Into<String>, after: Duration) -> HarnessError {
        HarnessError::Timeout {
            what: what.into(),
            after,
        }
    }
}
