//! `watch`: W watchers, then P puts; delivery rate, put→event latency, completeness.
//!
//! Watchers are created first (over `--conns × --streams` streams), each on one key of a
//! `--keys` key set (watcher i on key i mod K) or, with `--watch-prefix`, on the whole set.
//! Then `--puts` puts go to the keys round-robin, paced at `--put-rate` (0: as fast as
//! `--clients` writers go), every value stamped with its send time. The run waits until every
//! expected event has arrived (or none arrives for `--drain-timeout`), then checks each
//! watcher's log against the revisions the puts were acknowledged with ([`crate::check`]).
//! Any missing, duplicate, reordered or foreign event fails the run.

use std::time::{Duration, Instant};

use clap::Args;
use keelson_proto::etcdserverpb::{kv_client::KvClient, PutRequest};
use tonic::transport::Channel;

use crate::check::{Expectation, Filter};
use crate::cli::Target;
use crate::conn::{parse_duration, Conns};
use crate::driver::{closed_loop, fail, Failed, Limit, Worker};
use crate::keys::{prefix_end, stamp, KeySpace};
use crate::stats::{rate, Recorder, Report};
use crate::watchers::{WatchSpec, Watchers};

/// Flags shared by `watch` and `watch-catchup`: who watches what.
#[derive(Args, Debug, Clone)]
pub struct WatchSet {
    /// Watchers in all.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Watch streams per connection; the watchers are dealt over conns × streams.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Keys written (and watched, one per watcher).
    #[arg(long, default_value_t = 1)]
    pub keys: u64,
    /// Every watcher watches the whole key set's prefix instead of one key.
    #[arg(long)]
    pub watch_prefix: bool,
    /// Concurrent writers.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Value size in bytes (at least 8: the send-time stamp).
    #[arg(long, default_value_t = 64)]
    pub val_size: usize,
    /// Give up waiting for events when none has arrived for this long.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub drain_timeout: Duration,
}

impl WatchSet {
    pub(crate) fn key_space(&self) -> anyhow::Result<KeySpace> {
        let k = self.keys.max(1);
        KeySpace::new("watch/", 6 + (k - 1).to_string().len(), k)
    }

    /// Watcher i's spec, from `start_revision` (0: from now on).
    pub(crate) fn specs(&self, keys: &KeySpace, start_revision: i64) -> Vec<WatchSpec> {
        (0..self.watchers)
            .map(|i| {
                let k = i as u64 % keys.len();
                let (filter, key, range_end) = if self.watch_prefix {
                    let p = keys.prefix();
                    (Filter::All, p.clone(), prefix_end(&p))
                } else {
                    (Filter::Key(k as u32), keys.key(k), Default::default())
                };
                WatchSpec {
                    filter,
                    key,
                    range_end,
                    start_revision,
                    prev_kv: false,
                }
            })
            .collect()
    }
}

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub set: WatchSet,
    /// Puts made once the watchers exist.
    #[arg(long, default_value_t = 1000)]
    pub puts: u64,
    /// Puts per second (0 = as fast as the writers go).
    #[arg(long, default_value_t = 0.0)]
    pub put_rate: f64,
}

/// A writer: put number `seq` goes to key `seq mod K`, stamped, paced by `rate`.
pub(crate) struct Putter {
    kv: KvClient<Channel>,
    keys: KeySpace,
    val_size: usize,
    rate: f64,
    start: Instant,
    /// Acknowledged puts: (key index, revision).
    pub(crate) log: Vec<(u32, i64)>,
}

impl Putter {
    pub(crate) fn new(kv: KvClient<Channel>, keys: KeySpace, val_size: usize, rate: f64) -> Putter {
        Putter {
            kv,
            keys,
            val_size,
            rate,
            start: Instant::now(),
            log: Vec::new(),
        }
    }
}

impl Worker for Putter {
    async fn op(&mut self, seq: u64, rec: &mut Recorder) -> Result<(), Failed> {
        if self.rate > 0.0 {
            let at = self.start + Duration::from_secs_f64(seq as f64 / self.rate);
            tokio::time::sleep_until(at.into()).await;
        }
        let k = seq % self.keys.len();
        let t = Instant::now();
        let r = self
            .kv
            .put(PutRequest {
                key: self.keys.key(k),
                value: stamp(self.val_size),
                ..Default::default()
            })
            .await
            .map_err(fail("put"))?
            .into_inner();
        rec.since("put", t);
        self.log
            .push((k as u32, r.header.map(|h| h.revision).unwrap_or(0)));
        Ok(())
    }
}

/// Runs `n` puts with `set.clients` writers; returns the run and the write log.
pub(crate) async fn put_phase(
    label: &str,
    conns: &Conns,
    set: &WatchSet,
    keys: &KeySpace,
    n: u64,
    rate: f64,
) -> (crate::driver::Run<Putter>, Vec<(u32, i64)>) {
    let writers = (0..set.clients.max(1))
        .map(|i| Putter::new(conns.kv(i), keys.clone(), set.val_size, rate))
        .collect();
    let mut run = closed_loop(label, writers, Limit::Total(n)).await;
    let log = run
        .workers
        .iter_mut()
        .flat_map(|w| std::mem::take(&mut w.log))
        .collect();
    (run, log)
}

pub(crate) async fn run(a: &WatchArgs) -> anyhow::Result<Report> {
    let conns = Conns::open(&a.target).await?;
    let keys = a.set.key_space()?;
    let specs = a.set.specs(&keys, 0);
    let watchers = Watchers::start(&conns, a.set.streams, specs, true).await?;
    let start = Instant::now();
    let (puts, log) = put_phase("watch puts", &conns, &a.set, &keys, a.puts, a.put_rate).await;
    let expect = Expectation::new(&log);
    let want = watchers.expected_events(&expect);
    let last = watchers.wait_for(want, a.set.drain_timeout).await;
    let window = last.unwrap_or_else(Instant::now).duration_since(start);
    let got = watchers.stop().await;
    let delivery = got.check(&expect);

    let mut r = Report {
        elapsed_s: window.as_secs_f64(),
        ..Report::default()
    };
    r.add_ops(&puts.rec, puts.elapsed);
    r.add_op(got.rec.op_stats("event", window));
    r.figure("events_per_s", rate(delivery.delivered, window));
    delivery.report_into(&mut r);
    for p in got.problems {
        r.problem(p);
    }
    Ok(r)
}
