//! One watch stream of a `watch-idle` run: it creates its watchers, keeping `--window` create
//! requests in flight, reports when the last is confirmed, then records the key of every event
//! it receives until stopped.
//!
//! Confirmations come back in request order on a stream (etcd handles a stream's requests one
//! after another), so the send times of the requests in flight are a queue, and a stream needs
//! no map from watch id to watcher: the liveness check goes by the event's key.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail};
use keelson_proto::etcdserverpb::watch_client::WatchClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::plan::Plan;
use super::Shared;

pub(super) struct StreamTask {
    pub(super) client: WatchClient<Channel>,
    pub(super) s: usize,
    pub(super) plan: Arc<Plan>,
    pub(super) shared: Arc<Shared>,
    pub(super) stop: watch::Receiver<bool>,
    /// When this stream's last watcher was confirmed, or why it failed.
    pub(super) done: mpsc::UnboundedSender<Result<Instant, String>>,
    pub(super) problems: Arc<Mutex<Vec<String>>>,
}

impl StreamTask {
    /// Creates the stream's watchers, then records the keys of the events it receives until
    /// stopped.
    pub(super) async fn run(mut self) -> Vec<Option<u64>> {
        let mut received = Vec::new();
        let mut confirmed = false;
        if let Err(e) = self.receive(&mut received, &mut confirmed).await {
            if !confirmed {
                let _ = self.done.send(Err(e.to_string()));
            }
            self.problems
                .lock()
                .expect("not poisoned")
                .push(format!("stream {}: {e}", self.s));
        }
        received
    }

    async fn receive(
        &mut self,
        received: &mut Vec<Option<u64>>,
        confirmed: &mut bool,
    ) -> anyhow::Result<()> {
        let plan = self.plan.clone();
        let n = plan.on_stream(self.s);
        // Watcher j of this stream is watcher s + j × streams overall.
        let number = |j: usize| self.s + j * plan.streams;
        let (tx, rx) = mpsc::channel(plan.window);
        let mut in_flight = VecDeque::with_capacity(plan.window);
        let mut sent = 0;
        // Queued before the call: a Go server sends response headers only with its first message.
        while sent < n.min(plan.window) {
            tx.send(plan.create(number(sent))).await?;
            in_flight.push_back(Instant::now());
            sent += 1;
        }
        let mut stream = self
            .client
            .watch(ReceiverStream::new(rx))
            .await
            .map_err(|s| anyhow!("opening a watch stream: {}", s.message()))?
            .into_inner();
        let mut created = 0;
        loop {
            let msg = tokio::select! {
                biased;
                _ = self.stop.changed() => return Ok(()),
                m = stream.message() => m,
            };
            let r = match msg {
                Ok(Some(r)) => r,
                Ok(None) => bail!("the server ended the watch stream"),
                Err(s) => bail!("watch stream failed: {}", s.message()),
            };
            if r.created {
                if r.canceled || r.watch_id < 0 {
                    bail!("watch create refused: {}", r.cancel_reason);
                }
                let Some(t) = in_flight.pop_front() else {
                    bail!("a created response for no create request");
                };
                self.shared
                    .rec
                    .lock()
                    .expect("not poisoned")
                    .since("create", t);
                self.shared.created.fetch_add(1, Ordering::AcqRel);
                created += 1;
                if sent < n {
                    tx.send(plan.create(number(sent))).await?;
                    in_flight.push_back(Instant::now());
                    sent += 1;
                } else if created == n {
                    *confirmed = true;
                    let _ = self.done.send(Ok(Instant::now()));
                }
            } else if r.canceled {
                bail!("watch {} canceled: {:?}", r.watch_id, r.cancel_reason);
            }
            if !r.events.is_empty() {
                for ev in &r.events {
                    let key = ev.kv.as_ref().map(|kv| &kv.key[..]).unwrap_or_default();
                    received.push(plan.keys.index_of(key));
                }
                self.shared
                    .events
                    .fetch_add(r.events.len() as u64, Ordering::AcqRel);
                self.shared.notify.notify_waiters();
            }
        }
    }
}
