//! `watch-idle`: W idle watchers; how fast the server accepts them and what they cost it in
//! memory, and a check that they are all still there.
//!
//! The run, in order:
//! 1. `--conns` connections are opened and the server's resident memory is read (`--server-pid`,
//!    one per endpoint, in `--endpoints` order; `compare` passes the pids of the servers it
//!    started). That reading is the baseline.
//! 2. The clock starts and `--conns × --streams` watch streams create the watchers, dealt
//!    round-robin (watcher i on stream i mod streams, stream s on connection s mod conns,
//!    connection c on endpoint c mod endpoints). Each stream keeps `--window` create requests
//!    in flight (1, the default, is what etcd's Go client does: the next create goes out when
//!    the previous one is confirmed). The clock stops when the last `created` response has
//!    arrived: accept time and watchers/s.
//! 3. Memory is sampled `--samples` times, `--sample-interval` apart, and each server's largest
//!    reading counts ([`crate::os::sample_max`]); growth over the baseline divided by the
//!    watchers that server holds is the RSS per watcher.
//! 4. Liveness: one put to each of `--verify` keys spread evenly over the key set, and every
//!    watcher of those keys must get exactly that one event, on the stream that created it. A
//!    server that accepted watchers and then dropped them (or never registered them) fails
//!    here, however little memory it used.
//!
//! The client keeps no state per watcher: a watcher's key and shape follow from its number,
//! a stream only counts its confirmations, and the liveness check needs only the sampled keys.
//! So a million watchers cost this process a few bytes each, and no file descriptors (those go
//! per connection; the open-file limit is raised to what `--conns` needs).
//!
//! Watcher i watches key `i mod K` (`--keys K`, default one key per watcher) of a fixed-width
//! key space, as a single key or, with `--prefix` (all) or `--mixed` (every other one), as a
//! prefix of that key — which, the keys being of one width, matches that key alone but goes
//! through the server's range-watcher index rather than its exact-key table.
//!
//! [`plan`] says who watches what and checks liveness; [`stream`] is one watch stream's task.

mod plan;
mod stream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use clap::Args;
use keelson_proto::etcdserverpb::PutRequest;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::cli::Target;
use crate::conn::{parse_duration, Conns};
use crate::driver::{for_each_parallel, Limit, Progress};
use crate::keys::KeySpace;
use crate::os::{self, mib, Rss};
use crate::stats::{rate, Recorder, Report};
use plan::{check_liveness, Plan};
use stream::StreamTask;

#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    #[command(flatten)]
    pub target: Target,
    /// Watchers in all.
    #[arg(long, default_value_t = 10_000)]
    pub watchers: usize,
    /// Watch streams per connection; the watchers are dealt over conns × streams.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Distinct keys watched (0: one per watcher); watcher i watches key i mod K.
    #[arg(long, default_value_t = 0)]
    pub keys: u64,
    /// Every watcher watches its key as a prefix (a range watch).
    #[arg(long, conflicts_with = "mixed")]
    pub prefix: bool,
    /// Every other watcher watches its key as a prefix, the rest as a single key.
    #[arg(long)]
    pub mixed: bool,
    /// Create requests in flight per stream.
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    /// A server process to measure, repeatable: one per endpoint, in --endpoints order.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Memory readings once every watcher is created; the largest counts.
    #[arg(long, default_value_t = 5)]
    pub samples: usize,
    /// Time between two memory readings.
    #[arg(long, value_parser = parse_duration, default_value = "500ms")]
    pub sample_interval: Duration,
    /// Hold the watchers idle this long after the first readings, then read memory again
    /// (the `held_` figures): a garbage-collected server (etcd is Go) gives memory back only
    /// after its next collection, forced every 2 minutes when idle, so 180s shows what it
    /// keeps rather than what accepting needed. 0: no second reading.
    #[arg(long, value_parser = parse_hold, default_value = "0")]
    pub hold: Duration,
    /// Keys put at the end to check that their watchers are live (0: none).
    #[arg(long, default_value_t = 1000)]
    pub verify: u64,
    /// Give up when no watcher is confirmed (or no check event arrives) for this long.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub stall_timeout: Duration,
}

/// Counters shared by the stream tasks and the run.
#[derive(Default)]
struct Shared {
    created: Arc<AtomicU64>,
    events: AtomicU64,
    notify: Notify,
    /// One recorder for all streams: a histogram per stream would cost more than the watchers.
    rec: Mutex<Recorder>,
}

/// The stream tasks; aborted if the run ends early, so no stream outlives it.
struct Streams {
    tasks: Vec<JoinHandle<Vec<Option<u64>>>>,
    stop: watch::Sender<bool>,
    problems: Arc<Mutex<Vec<String>>>,
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

pub(crate) async fn run(a: &IdleArgs) -> anyhow::Result<Report> {
    let plan = Arc::new(Plan::new(a)?);
    os::raise_nofile(plan.conns as u64 + 256)?;
    let conns = Conns::open(&a.target).await?;
    let pids = &a.server_pids;
    let before = pids
        .iter()
        .map(|&p| os::rss(p))
        .collect::<Result<Vec<_>, _>>()?;
    let client_before = os::own_rss()?;

    let shared = Arc::new(Shared::default());
    let (stop, stop_rx) = watch::channel(false);
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let mut streams = Streams {
        tasks: Vec::with_capacity(plan.streams),
        stop,
        problems: Arc::default(),
    };
    let progress = Progress::start(
        "watchers",
        Limit::Total(plan.watchers as u64),
        shared.created.clone(),
    );
    let start = Instant::now();
    for s in 0..plan.streams {
        let task = StreamTask {
            client: conns.watch(s),
            s,
            plan: plan.clone(),
            shared: shared.clone(),
            stop: stop_rx.clone(),
            done: done_tx.clone(),
            problems: streams.problems.clone(),
        };
        streams.tasks.push(tokio::spawn(task.run()));
    }
    drop(done_tx);
    let confirmed = all_confirmed(&mut done, &plan, &shared, a.stall_timeout).await;
    progress.finish();
    let last = confirmed?.max(start);
    let accept = last.duration_since(start);

    let after = os::sample_max(pids, a.samples, a.sample_interval).await?;
    let client_after = os::own_rss()?;
    let held = if a.hold.is_zero() || pids.is_empty() {
        None
    } else {
        // Holding idle for a set time is what is measured here; there is no event to await.
        tokio::time::sleep(a.hold).await;
        Some(os::sample_max(pids, a.samples, a.sample_interval).await?)
    };

    let sampled = plan.sampled_keys(a.verify);
    let expected = plan.expected(&sampled);
    let want: u64 = expected.values().sum();
    let mut r = Report {
        elapsed_s: accept.as_secs_f64(),
        ..Report::default()
    };
    let put_errors = verify_puts(&conns, &plan.keys, &sampled).await;
    if let Some(e) = put_errors {
        r.problem(e);
    }
    wait_events(&shared, want, a.stall_timeout).await;
    let _ = streams.stop.send(true);
    let mut received = Vec::with_capacity(plan.streams);
    for t in std::mem::take(&mut streams.tasks) {
        received.push(
            t.await
                .map_err(|e| anyhow!("a watch stream task failed: {e}"))?,
        );
    }
    let live = check_liveness(&expected, &received);

    let rec = std::mem::take(&mut *shared.rec.lock().expect("not poisoned"));
    r.add_ops(&rec, accept);
    r.figure("watchers", plan.watchers as f64);
    r.figure("accept_s", accept.as_secs_f64());
    r.figure("accept_watchers_per_s", rate(plan.watchers as u64, accept));
    memory_figures(&mut r, "", &plan.per_endpoint(), &before, &after);
    if let Some(held) = held {
        memory_figures(&mut r, "held_", &plan.per_endpoint(), &before, &held);
    }
    r.figure(
        "client_rss_per_watcher_b",
        growth(client_before, client_after) / plan.watchers as f64,
    );
    r.figure("verified_watchers", live.watchers as f64);
    if live.missing > 0 || live.unexpected > 0 {
        r.problem(format!(
            "liveness: {} of {} sampled watchers got no event; {} unexpected events",
            live.missing, live.watchers, live.unexpected
        ));
    }
    for p in streams.problems.lock().expect("not poisoned").drain(..) {
        r.problem(p);
    }
    Ok(r)
}

/// Waits for every stream to report its last watcher confirmed; returns when the last did.
/// Fails when a stream fails, or when no watcher at all is confirmed for `stall`.
async fn all_confirmed(
    done: &mut mpsc::UnboundedReceiver<Result<Instant, String>>,
    plan: &Plan,
    shared: &Shared,
    stall: Duration,
) -> anyhow::Result<Instant> {
    let mut last: Option<Instant> = None;
    let mut remaining = plan.streams;
    let mut progress_seen = 0;
    while remaining > 0 {
        match tokio::time::timeout(stall, done.recv()).await {
            Ok(Some(Ok(at))) => {
                remaining -= 1;
                last = Some(last.map_or(at, |l| l.max(at)));
            }
            Ok(Some(Err(e))) => bail!("creating watchers: {e}"),
            Ok(None) => bail!("the watch stream tasks ended"),
            Err(_) => {
                let now = shared.created.load(Ordering::Acquire);
                if now == progress_seen {
                    bail!(
                        "no watcher confirmed for {stall:?} ({now} of {} created)",
                        plan.watchers
                    );
                }
                progress_seen = now;
            }
        }
    }
    last.ok_or_else(|| anyhow!("no watch stream"))
}

/// A hold time: a duration, or 0 for none.
fn parse_hold(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

/// Growth in bytes (negative if memory was returned).
fn growth(before: Rss, after: Rss) -> f64 {
    after.total as f64 - before.total as f64
}

/// The memory figures, given the watchers each server holds and its readings before and after,
/// each name prefixed with `label`. Per server (`member{j}.`, j in --server-pid order) only
/// when there are several. Growth and per-watcher figures count only servers holding watchers.
pub(crate) fn memory_figures(
    r: &mut Report,
    label: &str,
    holding: &[usize],
    before: &[Rss],
    after: &[Rss],
) {
    if before.is_empty() {
        return;
    }
    let mut total_growth = 0.0;
    let mut total_anon = 0.0;
    let mut watchers = 0;
    let mut peak = 0u64;
    for (j, (b, a)) in before.iter().zip(after).enumerate() {
        let held = holding.get(j).copied().unwrap_or(0);
        let g = growth(*b, *a);
        if before.len() > 1 {
            if label.is_empty() {
                r.figure(&format!("member{j}.watchers"), held as f64);
            }
            r.figure(&format!("{label}member{j}.rss_after_mib"), mib(a.total));
            if held > 0 {
                r.figure(
                    &format!("{label}member{j}.rss_per_watcher_b"),
                    g / held as f64,
                );
            }
        }
        if held > 0 {
            total_growth += g;
            total_anon += a.anon as f64 - b.anon as f64;
            watchers += held;
            peak = peak.max(a.total);
        }
    }
    if label.is_empty() {
        let before_total: u64 = before.iter().map(|b| b.total).sum();
        r.figure("rss_before_mib", mib(before_total));
    }
    r.figure(&format!("{label}rss_after_mib"), mib(peak));
    r.figure(
        &format!("{label}rss_growth_mib"),
        total_growth / (1024.0 * 1024.0),
    );
    if watchers > 0 {
        let per = |v: f64| v / watchers as f64;
        r.figure(&format!("{label}rss_per_watcher_b"), per(total_growth));
        r.figure(&format!("{label}rss_anon_per_watcher_b"), per(total_anon));
    }
}

/// One put to each sampled key; returns a problem if any failed.
async fn verify_puts(conns: &Conns, keys: &KeySpace, sampled: &[u64]) -> Option<String> {
    let res = for_each_parallel(sampled.len(), 32, |j| {
        let mut kv = conns.kv(j);
        let key = keys.key(sampled[j]);
        async move {
            kv.put(PutRequest {
                key,
                value: "live".into(),
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow!("liveness put: {}", s.message()))
        }
    })
    .await;
    res.err().map(|e| format!("{e:#}"))
}

/// Waits until `n` events in all have arrived, or none has for `stall`.
async fn wait_events(shared: &Shared, n: u64, stall: Duration) {
    loop {
        let notified = shared.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if shared.events.load(Ordering::Acquire) >= n {
            return;
        }
        if tokio::time::timeout(stall, notified).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse_workload, Workload};

    #[test]
    fn arguments_parse_and_conflict() {
        let w = parse_workload(
            "watch-idle --watchers 1000 --conns 2 --streams 3 --prefix --server-pid 7 \
             --server-pid 9 --endpoints a:1,b:2 --sample-interval 250ms --window 4",
        )
        .unwrap();
        let Workload::WatchIdle(a) = &w else {
            panic!("{w:?}")
        };
        assert_eq!(a.server_pids, [7, 9]);
        assert_eq!(a.sample_interval, Duration::from_millis(250));
        assert_eq!(a.hold, Duration::ZERO, "no hold unless asked");
        let Workload::WatchIdle(h) = parse_workload("watch-idle --hold 3m").unwrap() else {
            panic!()
        };
        assert_eq!(h.hold, Duration::from_secs(180));
        assert_eq!(
            (a.watchers, a.window, a.prefix, a.mixed),
            (1000, 4, true, false)
        );
        assert_eq!(w.name(), "watch-idle");
        assert!(parse_workload("watch-idle --prefix --mixed").is_err());
        let e = Plan::new(&IdleArgs {
            server_pids: vec![1],
            ..a.clone()
        })
        .unwrap_err();
        assert!(e.to_string().contains("one per endpoint"), "{e}");
    }

    #[test]
    fn memory_is_reported_per_watcher_held() {
        let rss = |mb: u64| Rss {
            total: mb << 20,
            anon: mb << 20,
            file: 0,
        };
        let mut r = Report::default();
        memory_figures(&mut r, "", &[1000], &[rss(10)], &[rss(20)]);
        memory_figures(&mut r, "held_", &[1000], &[rss(10)], &[rss(15)]);
        assert_eq!(r.figures["held_rss_after_mib"], 15.0);
        assert_eq!(
            r.figures["held_rss_per_watcher_b"],
            (5 << 20) as f64 / 1000.0
        );
        assert_eq!(r.figures["rss_per_watcher_b"], (10 << 20) as f64 / 1000.0);
        assert_eq!(r.figures["rss_after_mib"], 20.0);
        assert!(!r.figures.keys().any(|k| k.starts_with("member")));

        // Three members, the third holding none: it counts in neither growth nor peak.
        let mut r = Report::default();
        memory_figures(
            &mut r,
            "",
            &[2048, 1024, 0],
            &[rss(10), rss(10), rss(10)],
            &[rss(12), rss(11), rss(50)],
        );
        assert_eq!(r.figures["member0.rss_per_watcher_b"], 1024.0);
        assert_eq!(r.figures["member1.rss_per_watcher_b"], 1024.0);
        assert!(!r.figures.contains_key("member2.rss_per_watcher_b"));
        assert_eq!(r.figures["rss_per_watcher_b"], 1024.0);
        assert_eq!(r.figures["rss_after_mib"], 12.0);
        assert_eq!(r.figures["rss_before_mib"], 30.0);

        let mut none = Report::default();
        memory_figures(&mut none, "", &[5], &[], &[]);
        assert!(none.figures.is_empty(), "no pid, no memory figures");
    }
}
