//! Pipelined replication: openraft's `stream_append` over one gRPC bidirectional stream
//! (`RaftPeer.AppendStream`) per replication session.
//!
//! openraft hands the network a stream of AppendEntries requests, yielding the next one as soon
//! as the leader has submitted new entries to its own log — without waiting for the follower
//! to answer the previous one. Sent one RPC at a time (openraft's default), replication to each
//! follower would take a round trip plus the follower's fsync per request; here requests follow
//! each other on the stream, the follower's log writes them as they come (sharing fsyncs), and
//! its answers come back in order on the response stream.
//!
//! Invariants:
//! - **Answers are in request order**, one per request: the receiver feeds the requests to
//!   `Raft::stream_append`, which answers in order; the stream ends after a conflict or a
//!   higher vote (openraft then starts a new session from what was matched).
//! - **A stalled follower is noticed**: when the oldest unanswered request has waited longer than
//!   openraft's `soft_ttl`, the session fails with `Timeout`, as a unary call would. An idle
//!   stream (nothing unanswered) has no deadline.
//! - **A session's requests end with it**: when openraft drops or finishes the answer stream,
//!   the request stream ends too (openraft's next session draws from the same source).
//! - **Messages stay under the peer message limit**: a request too large is cut to a prefix of
//!   its entries (as the unary path does) and the request stream ends after it, so the follower
//!   answers with the prefix's last log id and openraft sends the rest in its next session.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use keelson_proto::keelsonraftpb::RaftMessage;
use openraft::base::{BoxFuture, BoxStream};
use openraft::network::{RPCOption, RPCTypes};
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::client::{fit_append, PeerClient, Rpc};
use super::codec;
use crate::types::TypeConfig;

type Answer = Rpc<StreamAppendResult<TypeConfig>>;

/// When each unanswered request was handed to the transport, oldest first.
#[derive(Default)]
struct InFlight {
    sent: Mutex<VecDeque<Instant>>,
    /// Signalled when a request is sent, to arm the deadline of an idle stream.
    more: Notify,
}

impl InFlight {
    fn sent(&self) {
        self.sent.lock().push_back(Instant::now());
        self.more.notify_one();
    }

    fn answered(&self) {
        self.sent.lock().pop_front();
    }

    fn oldest(&self) -> Option<Instant> {
        self.sent.lock().front().copied()
    }
}

impl PeerClient {
    /// Opens the session: see the module docs.
    pub(super) fn append_stream<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Rpc<BoxStream<'s, Answer>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let action = RPCTypes::AppendEntries;
            let ttl = option.soft_ttl();
            let mut client = self.rpc()?;
            let in_flight = Arc::new(InFlight::default());
            // The request stream must end with the session: openraft's next session takes
            // its requests from the same source, and a request stream left running would
            // keep taking them (and keep the HTTP/2 stream open). `stop` lives in the answer
            // stream's state, so dropping or finishing that ends the requests too.
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let requests = encoded(input, self.cfg.max_message_bytes, self.target, {
                let in_flight = Arc::clone(&in_flight);
                move || in_flight.sent()
            })
            .take_until(stopped);
            let call = client.append_stream(self.addressed(requests));
            let answers = match tokio::time::timeout(ttl, call).await {
                Err(_) => return Err(self.timeout(action, ttl).into()),
                Ok(r) => r.map_err(|s| self.error(action, ttl, s))?.into_inner(),
            };
            let this: &'s PeerClient = self;
            let out = futures::stream::unfold(Some((answers, stop)), move |state| {
                let in_flight = Arc::clone(&in_flight);
                async move {
                    let (mut answers, stop) = state?;
                    let next = match next_answer(&mut answers, &in_flight, ttl).await {
                        None => return Some((Err(this.timeout(action, ttl).into()), None)),
                        Some(Ok(None)) => return None,
                        Some(Err(status)) => {
                            return Some((Err(this.error(action, ttl, status)), None))
                        }
                        Some(Ok(Some(msg))) => msg,
                    };
                    in_flight.answered();
                    match codec::decode::<StreamAppendResult<TypeConfig>>(
                        &next.payload,
                        "append stream answer",
                    ) {
                        Ok(answer) => Some((Ok(answer), Some((answers, stop)))),
                        Err(e) => Some((Err(this.unreachable(e).into()), None)),
                    }
                }
            });
            Ok(Box::pin(out) as BoxStream<'s, Answer>)
        })
    }
}

/// The requests as wire messages; `on_send` runs as each is handed to the transport. Ends
/// after a request that had to be cut to fit, or at one that cannot be sent at all.
fn encoded<S>(
    input: S,
    max: usize,
    target: u64,
    on_send: impl Fn() + Send + 'static,
) -> impl Stream<Item = RaftMessage> + Send + 'static
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    futures::stream::unfold(Some((input, on_send)), move |state| async move {
        let (mut input, on_send) = state?;
        let rpc = input.next().await?;
        match fit_append(rpc, max) {
            Ok((payload, cut)) => {
                on_send();
                let rest = cut.is_none().then_some((input, on_send));
                Some((RaftMessage { payload }, rest))
            }
            Err(e) => {
                tracing::error!(target, "cannot replicate: {e}");
                None
            }
        }
    })
}

/// The next answer: `None` when the oldest unanswered request has waited `ttl`.
async fn next_answer(
    answers: &mut tonic::Streaming<RaftMessage>,
    in_flight: &InFlight,
    ttl: Duration,
) -> Option<Result<Option<RaftMessage>, tonic::Status>> {
    loop {
        let more = in_flight.more.notified();
        tokio::pin!(more);
        // Registered before looking, so a request sent in between still wakes us.
        more.as_mut().enable();
        match in_flight.oldest() {
            Some(sent) => {
                return tokio::time::timeout_at(sent + ttl, answers.message())
                    .await
                    .ok()
            }
            None => tokio::select! {
                answer = answers.message() => return Some(answer),
                _ = more => continue,
            },
        }
    }
}
