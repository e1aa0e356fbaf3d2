//! Watchers over watch streams: create them, log every event, count arrivals, stop.
//!
//! `conns × streams` Watch streams are opened and the watchers are dealt round-robin over
//! them, so several watchers share a stream exactly as etcd clients multiplex them. Each
//! stream is one task that owns its watchers' logs (no locks): it creates its watchers one at
//! a time — the next create request goes out when the previous `created` response arrives, so
//! the i-th `created` response is the i-th watcher and no client-chosen watch ids are needed —
//! while already handling events, which a watcher from an old revision receives at once.
//!
//! Two details of gRPC matter here. A Go gRPC server sends response headers only with its first
//! message, and tonic's streaming call waits for the headers, so the first create request is
//! queued *before* the call. And arrivals are counted in one shared atomic with a [`Notify`],
//! so [`Watchers::wait_for`] wakes when the last expected event lands, not on a poll tick.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::Bytes;
use keelson_proto::etcdserverpb::{
    watch_request::RequestUnion, WatchCreateRequest, WatchRequest, WatchResponse,
};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_stream::wrappers::ReceiverStream;

use crate::check::{Delivery, Expectation, Filter};
use crate::conn::Conns;
use crate::keys::stamp_age;
use crate::stats::Recorder;

/// One watcher to create.
#[derive(Clone, Debug)]
pub(crate) struct WatchSpec {
    /// What the completeness check expects it to see.
    pub(crate) filter: Filter,
    pub(crate) key: Bytes,
    /// Empty for a single key.
    pub(crate) range_end: Bytes,
    /// 0 = from the next revision.
    pub(crate) start_revision: i64,
    pub(crate) prev_kv: bool,
}

/// Running watchers.
pub(crate) struct Watchers {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<StreamLog>>,
    events: Arc<AtomicU64>,
    notify: Arc<Notify>,
    filters: Vec<Filter>,
}

/// What a stream task hands back when stopped.
struct StreamLog {
    /// (global watcher index, revisions received in arrival order)
    logs: Vec<(usize, Vec<i64>)>,
    rec: Recorder,
    problems: Vec<String>,
}

/// What all watchers received.
pub(crate) struct Collected {
    /// Per watcher (in spec order): its filter and the revisions it received.
    pub(crate) logs: Vec<(Filter, Vec<i64>)>,
    /// `event` latencies (put→event), when measured.
    pub(crate) rec: Recorder,
    pub(crate) problems: Vec<String>,
}

impl Watchers {
    /// Creates every watcher of `specs` over `conns.len() × streams_per_conn` streams and
    /// returns once all are created. With `measure_latency`, each event's value stamp is read.
    pub(crate) async fn start(
        conns: &Conns,
        streams_per_conn: usize,
        specs: Vec<WatchSpec>,
        measure_latency: bool,
    ) -> anyhow::Result<Watchers> {
        let nstreams = (conns.len() * streams_per_conn.max(1))
            .min(specs.len())
            .max(1);
        let mut per_stream: Vec<Vec<(usize, WatchSpec)>> = vec![Vec::new(); nstreams];
        for (i, s) in specs.iter().enumerate() {
            per_stream[i % nstreams].push((i, s.clone()));
        }
        let (stop, stop_rx) = watch::channel(false);
        let events = Arc::new(AtomicU64::new(0));
        let notify = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        let mut created = Vec::new();
        for (s, specs) in per_stream.into_iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            created.push(rx);
            let stream = StreamTask {
                client: conns.watch(s),
                specs,
                stop: stop_rx.clone(),
                events: events.clone(),
                notify: notify.clone(),
                measure_latency,
            };
            tasks.push(tokio::spawn(stream.run(tx)));
        }
        let w = Watchers {
            stop,
            tasks,
            events,
            notify,
            filters: specs.iter().map(|s| s.filter).collect(),
        };
        for rx in created {
            match tokio::time::timeout(Duration::from_secs(60), rx).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => bail!("creating watchers: {e}"),
                Ok(Err(_)) => bail!("a watch stream task ended before creating its watchers"),
                Err(_) => bail!("watchers not created within 60 s"),
            }
        }
        Ok(w)
    }

    /// How many events the watchers should receive in all, given the writes.
    pub(crate) fn expected_events(&self, expect: &Expectation) -> u64 {
        self.filters
            .iter()
            .map(|&f| expect.expected(f).len() as u64)
            .sum()
    }

    /// Events received so far, over all watchers.
    pub(crate) fn events(&self) -> u64 {
        self.events.load(Ordering::Acquire)
    }

    /// Waits until `n` events in all have arrived; gives up when none arrives for `idle`.
    /// Returns the instant the n-th arrived (as observed), or `None` after giving up.
    pub(crate) async fn wait_for(&self, n: u64, idle: Duration) -> Option<Instant> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.events() >= n {
                return Some(Instant::now());
            }
            if tokio::time::timeout(idle, notified).await.is_err() {
                return (self.events() >= n).then(Instant::now);
            }
        }
    }

    /// Stops every stream and collects what the watchers received.
    pub(crate) async fn stop(self) -> Collected {
        let _ = self.stop.send(true);
        let mut logs: Vec<(Filter, Vec<i64>)> =
            self.filters.iter().map(|&f| (f, Vec::new())).collect();
        let mut rec = Recorder::default();
        let mut problems = Vec::new();
        for t in self.tasks {
            match t.await {
                Ok(s) => {
                    for (i, l) in s.logs {
                        logs[i].1 = l;
                    }
                    rec.merge(s.rec);
                    problems.extend(s.problems);
                }
                Err(e) => problems.push(format!("a watch stream task failed: {e}")),
            }
        }
        problems.dedup();
        Collected {
            logs,
            rec,
            problems,
        }
    }
}

impl Collected {
    /// Checks every watcher's log against the writes.
    pub(crate) fn check(&self, expect: &Expectation) -> Delivery {
        expect.check(self.logs.iter().map(|(f, l)| (*f, l.as_slice())))
    }
}

struct StreamTask {
    client: keelson_proto::etcdserverpb::watch_client::WatchClient<tonic::transport::Channel>,
    specs: Vec<(usize, WatchSpec)>,
    stop: watch::Receiver<bool>,
    events: Arc<AtomicU64>,
    notify: Arc<Notify>,
    measure_latency: bool,
}

fn create(s: &WatchSpec) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: s.key.clone(),
            range_end: s.range_end.clone(),
            start_revision: s.start_revision,
            prev_kv: s.prev_kv,
            ..Default::default()
        })),
    }
}

impl StreamTask {
    async fn run(mut self, created: oneshot::Sender<Result<(), String>>) -> StreamLog {
        let mut out = StreamLog {
            logs: self.specs.iter().map(|(i, _)| (*i, Vec::new())).collect(),
            rec: Recorder::default(),
            problems: Vec::new(),
        };
        let mut created = Some(created);
        if let Err(e) = self.receive(&mut out, &mut created).await {
            if let Some(c) = created.take() {
                let _ = c.send(Err(e.to_string()));
            }
            out.problems.push(e.to_string());
        }
        out
    }

    async fn receive(
        &mut self,
        out: &mut StreamLog,
        created: &mut Option<oneshot::Sender<Result<(), String>>>,
    ) -> anyhow::Result<()> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(create(&self.specs[0].1)).await?;
        let mut stream = self
            .client
            .watch(ReceiverStream::new(rx))
            .await
            .map_err(|s| anyhow!("opening a watch stream: {}", s.message()))?
            .into_inner();
        // watch id → index into self.specs / out.logs
        let mut ids = std::collections::HashMap::new();
        loop {
            let msg = tokio::select! {
                biased;
                _ = self.stop.changed() => return Ok(()),
                m = stream.message() => m,
            };
            let r = match msg {
                Ok(Some(r)) => r,
                Ok(None) => bail!("the server ended a watch stream"),
                Err(s) => bail!("watch stream failed: {}", s.message()),
            };
            if r.created {
                if r.canceled || r.watch_id < 0 {
                    bail!("watch create refused: {}", r.cancel_reason);
                }
                let n = ids.len();
                ids.insert(r.watch_id, n);
                if n + 1 < self.specs.len() {
                    tx.send(create(&self.specs[n + 1].1)).await?;
                } else if let Some(c) = created.take() {
                    let _ = c.send(Ok(()));
                }
            } else if r.canceled {
                bail!(
                    "watch {} canceled: {:?} (compact revision {})",
                    r.watch_id,
                    r.cancel_reason,
                    r.compact_revision
                );
            }
            self.record(&r, &ids, out)?;
        }
    }

    fn record(
        &self,
        r: &WatchResponse,
        ids: &std::collections::HashMap<i64, usize>,
        out: &mut StreamLog,
    ) -> anyhow::Result<()> {
        if r.events.is_empty() {
            return Ok(());
        }
        let &i = ids
            .get(&r.watch_id)
            .ok_or_else(|| anyhow!("events for unknown watch id {}", r.watch_id))?;
        let log = &mut out.logs[i].1;
        for ev in &r.events {
            let Some(kv) = &ev.kv else { continue };
            log.push(kv.mod_revision);
            if self.measure_latency {
                if let Some(age) = stamp_age(&kv.value) {
                    out.rec.record("event", age);
                }
            }
        }
        self.events
            .fetch_add(r.events.len() as u64, Ordering::AcqRel);
        self.notify.notify_waiters();
        Ok(())
    }
}
