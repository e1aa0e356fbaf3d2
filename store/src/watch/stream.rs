//! One client watch stream: the request side ([`StreamHandle`]) and the sending side
//! ([`WatchStream`]).
//!
//! The sending side is a pull-based stream the gRPC layer polls: it yields frames from its
//! queue, and in between it catches up its lagging watchers, one step (at most
//! `catch_up_revs` revisions) at a time, from the hub's ring or from the backend. Because
//! catch-up runs only when the client takes frames, a slow client slows only its own stream;
//! the apply path never waits for it (see `queue.rs`). Catch-up also runs every
//! [`CATCH_UP_EVERY`] queued items, so a busy stream cannot starve its lagging watchers.
//!
//! Dropping the sending side (the client went away) removes every watcher of the stream.
//! A client that only half-closes (ends its requests) keeps its watchers, as with etcd.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use keelson_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::batch::Frame;
use super::history;
use super::queue::{Item, StreamShared};
use super::registry::CatchUp;
use super::WatchHub;
use crate::error::{Error, Result};

/// Queued items taken between two catch-up steps while watchers lag.
const CATCH_UP_EVERY: usize = 64;

/// The request side: the service's receive loop calls these for each request.
pub(crate) struct StreamHandle {
    hub: Arc<WatchHub>,
    shared: Arc<StreamShared>,
    sid: u64,
}

impl StreamHandle {
    /// Waits until the stream's queue has room, so a client that does not read responses
    /// stops having its requests read (etcd blocks on its control channel the same way).
    pub(crate) async fn ready(&self) {
        self.shared.room().await
    }

    pub(crate) fn create(&self, req: &WatchCreateRequest) {
        let current = self.hub.mvcc.current_revision();
        self.hub.reg.lock().create(self.sid, req, current);
    }

    pub(crate) fn cancel(&self, watch_id: i64) {
        let current = self.hub.mvcc.current_revision();
        self.hub.reg.lock().cancel(self.sid, watch_id, current);
    }

    pub(crate) fn request_progress(&self) {
        self.hub.reg.lock().request_progress(self.sid);
    }

    /// Ends the stream (the request side failed).
    pub(crate) fn close(&self) {
        self.shared.close();
    }

    /// Resolves once the stream is over (client gone, or server shutting down), so the request
    /// loop can stop and release the request body.
    pub(crate) async fn closed(&self) {
        self.shared.closed().await
    }
}

/// The sending side. See the module docs.
pub(crate) struct WatchStream {
    hub: Arc<WatchHub>,
    shared: Arc<StreamShared>,
    sid: u64,
    header: ResponseHeader,
    fragment_limit: usize,
    pending: VecDeque<Frame>,
    since_catch_up: usize,
    /// Items taken from the queue, waiting to be rendered (kept to reuse its allocation).
    taken: Vec<Item>,
    tick: Option<Interval>,
    done: bool,
}

pub(crate) fn open(
    hub: &Arc<WatchHub>,
    header: ResponseHeader,
    fragment_limit: usize,
) -> (StreamHandle, WatchStream) {
    let shared = Arc::new(StreamShared::new(hub.cfg.queue_cap));
    let sid = hub.reg.lock().add_stream(shared.clone());
    if hub.is_closed() {
        shared.close();
    }
    let handle = StreamHandle {
        hub: hub.clone(),
        shared: shared.clone(),
        sid,
    };
    let stream = WatchStream {
        hub: hub.clone(),
        shared,
        sid,
        header,
        fragment_limit,
        pending: VecDeque::new(),
        since_catch_up: 0,
        taken: Vec::new(),
        tick: None,
        done: false,
    };
    (handle, stream)
}

impl WatchStream {
    /// The next frame to send; `None` when the stream is over.
    pub(crate) async fn next(&mut self) -> Option<Result<Frame>> {
        loop {
            if let Some(f) = self.pending.pop_front() {
                return Some(Ok(f));
            }
            if self.done {
                return None;
            }
            if self.hub.is_closed() {
                self.done = true;
                return Some(Err(Error::Stopped));
            }
            if self.shared.is_closed() {
                return None;
            }
            if self.shared.is_lagging()
                && (self.since_catch_up >= CATCH_UP_EVERY || self.shared.is_empty())
            {
                self.since_catch_up = 0;
                match self.catch_up().await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            // While watchers lag, take no more than the catch-up cadence allows.
            let max = if self.shared.is_lagging() {
                CATCH_UP_EVERY.saturating_sub(self.since_catch_up)
            } else {
                CATCH_UP_EVERY
            };
            let mut taken = std::mem::take(&mut self.taken);
            let n = self.shared.pop_many(max, &mut taken);
            if n > 0 {
                self.since_catch_up += n;
                for item in taken.drain(..) {
                    self.render(item);
                }
                self.taken = taken;
                continue;
            }
            self.taken = taken;
            let interval = self.hub.cfg.progress_interval;
            let tick = self.tick.get_or_insert_with(|| progress_ticker(interval));
            tokio::select! {
                _ = self.shared.woken() => {}
                _ = tick.tick() => {
                    self.hub.reg.lock().progress_tick(self.sid);
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn shared_is_lagging(&self) -> bool {
        self.shared.is_lagging()
    }

    fn render(&mut self, item: Item) {
        match item {
            Item::Control(mut r) => {
                let revision = r.header.as_ref().map_or(0, |h| h.revision);
                r.header = Some(ResponseHeader {
                    revision,
                    ..self.header
                });
                self.pending.push_back(Frame::control(r));
            }
            Item::Events(d) => {
                let compacted = self.hub.mvcc.compacted_revision();
                d.push_frames(
                    &self.header,
                    self.fragment_limit,
                    compacted,
                    &mut self.pending,
                );
            }
        }
    }

    /// One catch-up step. Returns whether anything changed.
    async fn catch_up(&mut self) -> Result<bool> {
        let hub = &self.hub;
        let compacted = hub.mvcc.compacted_revision();
        let plan = match hub
            .reg
            .lock()
            .plan_catch_up(self.sid, compacted, hub.cfg.catch_up_revs)
        {
            CatchUp::Idle => return Ok(false),
            CatchUp::Changed => return Ok(true),
            CatchUp::Work(plan) => plan,
        };
        let (batches, compacted_after) = match &plan.ring {
            Some(b) => (b.clone(), None),
            None => {
                let (backend, mvcc) = (hub.backend.clone(), hub.mvcc.clone());
                let (from, to, need_prev) = (plan.from, plan.to, plan.need_prev);
                let read = tokio::task::spawn_blocking(move || {
                    let batches = history::read(&*backend, &mvcc, from, to, need_prev)?;
                    Ok::<_, Error>((batches, mvcc.compacted_revision()))
                });
                let (b, c) = read
                    .await
                    .map_err(|e| Error::Io(format!("watch history read: {e}")))??;
                (b, Some(c))
            }
        };
        let items = hub
            .reg
            .lock()
            .finish_catch_up(self.sid, &plan, &batches, compacted_after);
        for item in items {
            self.render(item);
        }
        Ok(true)
    }
}

/// etcd adds up to a tenth of the interval as jitter, so watchers created together do not
/// all get their progress notifications at once.
fn progress_ticker(interval: Duration) -> Interval {
    let jitter = interval.mul_f64(rand::random::<f64>() / 10.0);
    let period = interval + jitter;
    let mut t = tokio::time::interval_at(Instant::now() + period, period);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.hub.reg.lock().remove_stream(self.sid);
    }
}
