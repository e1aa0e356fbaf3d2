//! # Clients: one logical client, one member, one outcome per request
//!
//! A workload's logical client is bound to one member's client URL for the whole run (clients
//! are spread over the members, so an isolated or lagging member is always being asked), and
//! runs one request at a time. Every request is bounded by the run's request timeout.
//!
//! The outcome of a request decides the history's `type`, and getting it wrong in one direction
//! is fatal to the checkers: recording `fail` for a write that did take effect makes a correct
//! store look broken. So:
//! - an answer is `ok`;
//! - a request with no effect on the store (a read) that errs is `fail`;
//! - a write that errs is `fail` only when the error is *definite*: the server rejected it
//!   before proposing it, or applying it rejected it (bad argument, missing lease, compacted
//!   revision...). Those carry gRPC codes no in-flight proposal ever produces;
//! - anything else — a timeout, a dropped or refused connection, `Unavailable` ("leader
//!   changed", "request timed out"), `Unknown` — is `info`: the write may take effect at any
//!   time, or never.
//!
//! After an indeterminate failure the connection is dropped and the next request opens a new
//! one (lazily, with a short connect timeout): a connection to a killed, paused or cut-off
//! member is not worth keeping, and a fresh one follows the member when it comes back.

use std::future::Future;
use std::time::Duration;

use keelson_proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, watch_client::WatchClient,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::history::OpType;

/// How long opening a TCP connection to a member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a request did not produce an answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No answer within the request timeout.
    Timeout,
    /// An error status: from the server, or tonic's for a transport failure.
    Status(Status),
}

impl Failure {
    /// The request certainly had no effect (see the module docs).
    pub(crate) fn is_definite(&self) -> bool {
        match self {
            Failure::Timeout => false,
            Failure::Status(s) => matches!(
                s.code(),
                Code::InvalidArgument
                    | Code::FailedPrecondition
                    | Code::OutOfRange
                    | Code::NotFound
                    | Code::AlreadyExists
                    | Code::PermissionDenied
                    | Code::Unauthenticated
                    | Code::Unimplemented
            ),
        }
    }

    /// The text recorded in the history's `error` field.
    pub(crate) fn message(&self) -> String {
        match self {
            Failure::Timeout => "timeout".to_string(),
            Failure::Status(s) => format!("{:?}: {}", s.code(), s.message()),
        }
    }
}

/// What a request may do to the store, which decides how its failures are recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Reads nothing but state: failing it changes nothing.
    Read,
    /// May change the store.
    Write,
}

/// The history type of a request that failed this way.
pub(crate) fn outcome(failure: &Failure, effect: Effect) -> OpType {
    match effect {
        Effect::Read => OpType::Fail,
        Effect::Write if failure.is_definite() => OpType::Fail,
        Effect::Write => OpType::Info,
    }
}

/// One logical client's connection to its member.
pub(crate) struct Conn {
    url: String,
    timeout: Duration,
    channel: Option<Channel>,
}

impl Conn {
    /// `endpoint` is "host:port" or a URL.
    pub(crate) fn new(endpoint: &str, timeout: Duration) -> Conn {
        let url = if endpoint.contains("://") {
            endpoint.to_string()
        } else {
            format!("http://{endpoint}")
        };
        Conn {
            url,
            timeout,
            channel: None,
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    fn channel(&mut self) -> Channel {
        self.channel
            .get_or_insert_with(|| {
                Endpoint::from_shared(self.url.clone())
                    .expect("cluster endpoints are valid URLs")
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .connect_lazy()
            })
            .clone()
    }

    pub(crate) fn kv(&mut self) -> KvClient<Channel> {
        KvClient::new(self.channel())
    }

    pub(crate) fn lease(&mut self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel())
    }

    pub(crate) fn watch(&mut self) -> WatchClient<Channel> {
        WatchClient::new(self.channel())
    }

    /// Drops the connection; the next request opens a new one.
    pub(crate) fn reset(&mut self) {
        self.channel = None;
    }

    /// Awaits one request within the timeout, dropping the connection after an
    /// indeterminate failure.
    pub(crate) async fn call<T>(
        &mut self,
        request: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Failure> {
        let result = match tokio::time::timeout(self.timeout, request).await {
            Err(_) => Err(Failure::Timeout),
            Ok(Err(status)) => Err(Failure::Status(status)),
            Ok(Ok(response)) => Ok(response.into_inner()),
        };
        if let Err(failure) = &result {
            if !failure.is_definite() {
                self.reset();
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code) -> Failure {
        Failure::Status(Status::new(code, "x"))
    }

    #[test]
    fn reads_that_fail_are_fail_whatever_the_error() {
        for f in [
            Failure::Timeout,
            status(Code::Unavailable),
            status(Code::InvalidArgument),
        ] {
            assert_eq!(outcome(&f, Effect::Read), OpType::Fail, "{f:?}");
        }
    }

    #[test]
    fn writes_fail_only_on_definite_errors() {
        for code in [
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::OutOfRange,
            Code::NotFound,
        ] {
            assert_eq!(
                outcome(&status(code), Effect::Write),
                OpType::Fail,
                "{code:?}"
            );
        }
        // "leader changed", "request timed out", a refused or reset connection, an h2 error,
        // "too many requests" (also tonic's code for an oversized message): all may have
        // taken effect, or may yet.
        for code in [
            Code::Unavailable,
            Code::Unknown,
            Code::Internal,
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::ResourceExhausted,
            Code::DataLoss,
        ] {
            assert_eq!(
                outcome(&status(code), Effect::Write),
                OpType::Info,
                "{code:?}"
            );
        }
        assert_eq!(outcome(&Failure::Timeout, Effect::Write), OpType::Info);
    }

    #[tokio::test]
    async fn a_refused_connection_is_indeterminate_and_reconnects() {
        // A port nobody listens on: bind, learn the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut conn = Conn::new(&format!("127.0.0.1:{port}"), Duration::from_secs(2));
        let mut kv = conn.kv();
        let failure = conn
            .call(kv.put(keelson_proto::etcdserverpb::PutRequest {
                key: "k".into(),
                value: "v".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(
            outcome(&failure, Effect::Write),
            OpType::Info,
            "{failure:?}"
        );
        assert!(conn.channel.is_none(), "the connection is dropped");
    }

    #[tokio::test]
    async fn a_request_without_answer_times_out() {
        let mut conn = Conn::new("127.0.0.1:1", Duration::from_millis(50));
        let failure = conn
            .call(std::future::pending::<Result<tonic::Response<()>, Status>>())
            .await
            .unwrap_err();
        assert!(matches!(failure, Failure::Timeout));
        assert_eq!(failure.message(), "timeout");
    }
}
