//! Batched forwarding: a follower's writes travel to the leader many to a `Forward` call.
//!
//! Every write a client sends to a follower must reach the leader (`forward.rs`). One gRPC call
//! per write costs both members a whole call's work (an HTTP/2 stream, headers, a task, a
//! message) for a few hundred bytes; etcd's followers send proposals as raft messages on their
//! peer stream instead. Here the writes queued for a leader leave together: a call carries every
//! request queued when it starts, and up to [`IN_FLIGHT`] calls are under way at once, so under
//! load each call carries many writes, and a lone write still leaves at once.
//!
//! Invariants:
//! - **Replies in order, one per request**: the leader proposes a call's requests concurrently
//!   (so they share its log appends) and answers a list in request order; a reply list of
//!   another length is a failure of every request in the call.
//! - **Failure semantics are per call, as before**: a call refused before it reached raft
//!   (`SendError::NotSent`) proposed none of its requests, which may then be retried; one that
//!   may have reached the leader (`SendError::Unknown`) leaves every request's outcome unknown.
//! - **Deadlines stay per request**: a call waits as long as the latest deadline among its
//!   requests; each caller still gives up at its own deadline.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::forward::{ForwardReply, ForwardRequest, Forwarder, Rpc, SendError};
use crate::types::Member;

/// Calls to one leader under way at once.
const IN_FLIGHT: usize = 4;

/// Most requests in one call.
const MAX_BATCH: usize = 256;

/// One forwarded request waiting for its call.
struct Pending {
    req: ForwardRequest,
    node: Member,
    deadline: Instant,
    reply: oneshot::Sender<Result<ForwardReply, SendError>>,
}

/// Queues forwarded requests per leader and sends them in batches (module docs).
pub(crate) struct Batcher {
    forwarder: Arc<Forwarder>,
    queues: Mutex<HashMap<u64, mpsc::UnboundedSender<Pending>>>,
}

impl Batcher {
    pub(crate) fn new(forwarder: Arc<Forwarder>) -> Batcher {
        Batcher {
            forwarder,
            queues: Mutex::default(),
        }
    }

    /// Forwards `req` to member `target` (described by `node`) and waits for its reply, at
    /// most until `deadline`.
    pub(crate) async fn send(
        &self,
        target: u64,
        node: &Member,
        req: ForwardRequest,
        deadline: Instant,
    ) -> Result<ForwardReply, SendError> {
        let (tx, rx) = oneshot::channel();
        let pending = Pending {
            req,
            node: node.clone(),
            deadline,
            reply: tx,
        };
        self.queue(target)
            .send(pending)
            .map_err(|_| SendError::NotSent("the forwarding queue is closed (stopping)".into()))?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r,
            // The sender task ended before answering: the call's outcome is unknown.
            Ok(Err(_)) => Err(SendError::Unknown("forwarding stopped".into())),
            Err(_) => Err(SendError::Unknown("Forward timed out".into())),
        }
    }

    fn queue(&self, target: u64) -> mpsc::UnboundedSender<Pending> {
        let mut queues = self.queues.lock();
        if let Some(q) = queues.get(&target).filter(|q| !q.is_closed()) {
            return q.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(Arc::clone(&self.forwarder), target, rx));
        queues.insert(target, tx.clone());
        tx
    }
}

/// Sends the queued requests for `target` until the queue closes.
async fn run(forwarder: Arc<Forwarder>, target: u64, mut queue: mpsc::UnboundedReceiver<Pending>) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        // Whatever queued while waiting for a free call goes in this one.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let forwarder = Arc::clone(&forwarder);
        tokio::spawn(async move {
            send_batch(&forwarder, target, batch).await;
            drop(permit);
        });
    }
}

async fn send_batch(forwarder: &Forwarder, target: u64, batch: Vec<Pending>) {
    let deadline = batch
        .iter()
        .map(|p| p.deadline)
        .max()
        .expect("a batch is never empty");
    let left = deadline.saturating_duration_since(Instant::now());
    let node = batch[0].node.clone();
    let (reqs, waiters): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.req, p.reply)).unzip();
    let answer: Result<Vec<ForwardReply>, SendError> = forwarder
        .call(Rpc::Forward, target, &node, &reqs, left)
        .await;
    match answer {
        Ok(replies) if replies.len() == waiters.len() => {
            for (w, r) in waiters.into_iter().zip(replies) {
                let _ = w.send(Ok(r));
            }
        }
        Ok(replies) => {
            let why = format!(
                "member {target:x} answered {} of {} forwarded requests",
                replies.len(),
                waiters.len()
            );
            for w in waiters {
                let _ = w.send(Err(SendError::Unknown(why.clone())));
            }
        }
        Err(e) => {
            for w in waiters {
                let _ = w.send(Err(e.clone()));
            }
        }
    }
}
