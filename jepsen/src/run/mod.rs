//! # The test runner: one run, start to verdict
//!
//! [`run_test`] is `jepsen test` as a library call:
//! 1. create the run folder (see `folder.rs`) and find the binary under test;
//! 2. start a fresh three-member cluster in it;
//! 3. start the clock, the workloads and the nemesis together, all on that one clock;
//! 4. at the time limit: stop the generators ([`Phase::Stopping`]) and the nemesis, which heals
//!    everything it broke; once it has, let the watchers catch up ([`Phase::Healed`]) and wait
//!    for every in-flight op (each is bounded by the request timeout);
//! 5. shut the cluster down, then check each workload's history with its checker, off the
//!    async threads;
//! 6. write the history, results, nemesis log, summary and plot; return the verdict.
//!
//! A harness failure (the cluster will not start, the nemesis cannot heal) is an `Err`, exit 2;
//! whatever was recorded before it is still written, with the error in `summary.json`. The
//! cluster is shut down on every path once it has started.

mod args;
mod binary;
pub(crate) mod folder;
mod summary;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch as signal;
use tokio::task::JoinSet;

use crate::cluster::{Cluster, ClusterOpts, Target};
use crate::error::HarnessError;
use crate::history::{History, Op};
use crate::nemesis::{self, NemesisEvent, NemesisKind};
use crate::net::Network;
use crate::plot;
use crate::result::{CheckResult, Validity};
use crate::workload::{self, Clock, Ctx, Phase, ReadMode, WorkloadKind, PROCESS_SPAN};
use crate::{append, lease, linearizable, watch};

pub use args::{parse_test_args, TEST_USAGE};
use folder::RunFolder;
pub use summary::{CheckerVerdict, Counts, Summary, WorkloadCounts};

/// Requests without an answer after this long are recorded `info` (or `fail` for reads).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the nemesis may take to heal the cluster after the time limit.
const HEAL_PATIENCE: Duration = Duration::from_secs(120);
/// How long the workloads may take to wind down after the heal (the watch catch-up is 30 s).
const DRAIN_PATIENCE: Duration = Duration::from_secs(60);
/// With several nemesis kinds, how long each takes its turn (about one fault of the default
/// timing: 5–10 s healthy, then 5–10 s of fault).
const NEMESIS_SLICE: Duration = Duration::from_secs(20);
/// Lease expiry is decided by the leader's monotonic clock, which is this host's clock too,
/// and only ever after the client's invocation: no slack is needed.
const LEASE_SLACK: Duration = Duration::ZERO;

/// The faults of a run: one nemesis kind or several at once ("kill,partition").
#[derive(Clone, Debug)]
pub struct NemesisSpec {
    kinds: Vec<NemesisKind>,
    name: String,
}

impl NemesisSpec {
    pub fn parse(s: &str) -> Result<NemesisSpec, String> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let kinds = parts
            .iter()
            .map(|p| p.parse::<NemesisKind>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        Ok(NemesisSpec {
            kinds,
            name: parts.join(","),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Everything a run needs to know.
#[derive(Clone, Debug)]
pub struct RunOpts {
    pub target: Target,
    pub workloads: Vec<WorkloadKind>,
    pub nemesis: NemesisSpec,
    /// How long workloads and faults run.
    pub time_limit: Duration,
    pub seed: u64,
    pub read_mode: ReadMode,
    /// The run folder; default `jepsen/store/<name>-<timestamp>`.
    pub out: Option<PathBuf>,
    /// Where default run folders go.
    pub store: PathBuf,
    pub keelson_bin: Option<PathBuf>,
    pub etcd_bin: PathBuf,
    pub network: Network,
    /// The linearizability search's budget, past which it answers `unknown`.
    pub check_timeout: Duration,
    /// Whether watch observers request progress notifications; `None`: yes for Keelson, no
    /// for etcd 3.4.23, which answers them out of order (see `workload/watch.rs`).
    pub watch_progress: Option<bool>,
}

impl RunOpts {
    /// Defaults: no faults, 60 s, seed 0, linearizable reads, default folder and binaries.
    pub fn new(target: Target, workloads: Vec<WorkloadKind>) -> RunOpts {
        RunOpts {
            target,
            workloads,
            nemesis: NemesisSpec::parse("none").expect("none is a nemesis"),
            time_limit: Duration::from_secs(60),
            seed: 0,
            read_mode: ReadMode::Linearizable,
            out: None,
            store: folder::default_store(),
            keelson_bin: None,
            etcd_bin: PathBuf::from("/usr/bin/etcd"),
            network: Network::Auto,
            check_timeout: Duration::from_secs(120),
            watch_progress: None,
        }
    }

    pub fn watch_progress(&self) -> bool {
        self.watch_progress
            .unwrap_or(self.target == Target::Keelson)
    }

    /// `<target>-<workloads>-<nemesis>`, as the default run folder starts.
    pub fn run_name(&self) -> String {
        let workloads: Vec<&str> = self.workloads.iter().map(|w| w.name()).collect();
        format!(
            "{}-{}-{}",
            self.target.name(),
            workloads.join("+"),
            self.nemesis.name().replace(',', "+")
        )
    }
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    pub dir: PathBuf,
    pub summary: Summary,
    /// One result per checker, in workload order.
    pub results: Vec<CheckResult>,
}

impl Outcome {
    pub fn verdict(&self) -> Validity {
        self.summary.verdict
    }

    /// 0 valid, 1 anomalies found, 2 unknown (not a pass).
    pub fn exit_code(&self) -> u8 {
        self.summary.exit_code
    }
}

/// What the cluster phase of a run recorded.
struct Recorded {
    ops: Vec<Op>,
    events: Vec<NemesisEvent>,
    error: Option<HarnessError>,
}

/// Runs one test (see the module docs).
pub async fn run_test(opts: RunOpts) -> Result<Outcome, HarnessError> {
    if opts.workloads.is_empty() {
        return Err(HarnessError::Config("no workload".into()));
    }
    let began = Instant::now();
    let started_at = folder::timestamp(SystemTime::now());
    let folder = RunFolder::create(opts.out.as_deref(), &opts.store, &opts.run_name())?;
    let mut summary = Summary {
        target: opts.target.name().to_string(),
        workloads: opts
            .workloads
            .iter()
            .map(|w| w.name().to_string())
            .collect(),
        nemesis: opts.nemesis.name().to_string(),
        seed: opts.seed,
        time_limit_s: opts.time_limit.as_secs_f64(),
        read_mode: opts.read_mode.name().to_string(),
        watch_progress: opts.watch_progress(),
        started_at,
        duration_s: 0.0,
        binary: String::new(),
        endpoints: vec![],
        processes: opts
            .workloads
            .iter()
            .map(|w| {
                let base = w.process_base();
                (w.name().to_string(), [base, base + PROCESS_SPAN - 1])
            })
            .collect(),
        ops: BTreeMap::new(),
        nemesis_events: 0,
        checkers: BTreeMap::new(),
        verdict: Validity::Unknown,
        reasons: vec![],
        exit_code: 2,
        error: None,
    };
    let fail = |summary: &mut Summary, e: HarnessError| {
        summary.error = Some(e.to_string());
        summary.duration_s = began.elapsed().as_secs_f64();
        let _ = folder.write_json(folder::SUMMARY, &*summary);
        e
    };

    let keelson_bin = match opts.target {
        Target::Keelson => match binary::keelson(opts.keelson_bin.as_deref()) {
            Ok(bin) => bin,
            Err(e) => return Err(fail(&mut summary, e)),
        },
        Target::Etcd => opts.keelson_bin.clone().unwrap_or_default(),
    };
    summary.binary = match opts.target {
        Target::Keelson => keelson_bin.display().to_string(),
        Target::Etcd => opts.etcd_bin.display().to_string(),
    };
    eprintln!(
        "jepsen: testing {} in {}",
        summary.binary,
        folder.dir().display()
    );
    let mut cluster_opts = ClusterOpts::new(opts.target, folder.dir(), keelson_bin);
    cluster_opts.etcd_bin = opts.etcd_bin.clone();
    cluster_opts.network = opts.network;
    let cluster = match Cluster::start(cluster_opts).await {
        Ok(c) => c,
        Err(e) => return Err(fail(&mut summary, e)),
    };
    summary.endpoints = cluster.endpoints();
    let recorded = drive(&opts, &cluster).await;
    cluster.shutdown().await;

    let Recorded { ops, events, error } = recorded;
    let (history, per_workload) = split(&opts.workloads, ops);
    folder.write_history(folder::HISTORY, &history)?;
    folder.write_json(folder::NEMESIS, &nemesis_json(&events))?;
    let intervals: Vec<plot::Interval> = events
        .iter()
        .map(|e| plot::Interval {
            start_ns: e.start_ns,
            end_ns: e.end_ns,
            kind: e.kind.clone(),
        })
        .collect();
    let title = format!("{} (seed {})", opts.run_name(), opts.seed);
    folder.write_text(
        folder::PLOT,
        &plot::render(&title, &history.ops, &intervals),
    )?;
    summary.nemesis_events = events.len();
    for (w, h) in &per_workload {
        summary
            .ops
            .insert(w.name().to_string(), summary::count(&h.ops));
    }
    if let Some(e) = error {
        return Err(fail(&mut summary, e));
    }

    let mut results = Vec::new();
    for (w, h) in per_workload {
        let file = if opts.workloads.len() > 1 {
            let file = folder::workload_history_file(w.name());
            folder.write_history(&file, &h)?;
            file
        } else {
            folder::HISTORY.to_string()
        };
        let timeout = opts.check_timeout;
        let result = tokio::task::spawn_blocking(move || check(w, &h, timeout))
            .await
            .map_err(|e| {
                HarnessError::Config(format!("the {} checker panicked: {e}", w.checker()))
            })?;
        let mut json = serde_json::to_value(&result).expect("results serialize");
        json["history"] = serde_json::Value::String(file.clone());
        folder.write_json(&folder::results_file(w.checker()), &json)?;
        summary
            .checkers
            .insert(w.checker().to_string(), CheckerVerdict::of(&result, &file));
        results.push(result);
    }
    let (verdict, reasons) = summary::verdict(&summary.checkers, &summary.ops);
    summary.verdict = verdict;
    summary.reasons = reasons;
    summary.exit_code = summary::exit_code(verdict);
    summary.duration_s = began.elapsed().as_secs_f64();
    folder.write_json(folder::SUMMARY, &summary)?;
    Ok(Outcome {
        dir: folder.dir().to_path_buf(),
        summary,
        results,
    })
}

fn check(w: WorkloadKind, h: &History, timeout: Duration) -> CheckResult {
    match w {
        WorkloadKind::Register => linearizable::check(h, timeout),
        WorkloadKind::Append => append::check(h),
        WorkloadKind::Watch => watch::check(h),
        WorkloadKind::Lease => lease::check(h, LEASE_SLACK),
    }
}

/// Runs workloads and nemesis for the time limit, heals, and drains.
async fn drive(opts: &RunOpts, cluster: &Arc<Cluster>) -> Recorded {
    let start = Instant::now();
    let (phase_tx, phase_rx) = signal::channel(Phase::Running);
    let (stop_tx, stop_rx) = signal::channel(false);
    let ctx = Ctx {
        endpoints: cluster.endpoints(),
        clock: Clock::new(start),
        phase: phase_rx,
        seed: opts.seed,
        timeout: REQUEST_TIMEOUT,
        read_mode: opts.read_mode,
        watch_progress: opts.watch_progress(),
    };
    let mut workloads = JoinSet::new();
    for &w in &opts.workloads {
        workloads.spawn(workload::run(w, ctx.clone()));
    }
    let mut nemeses = JoinSet::new();
    nemeses.spawn(schedule(
        opts.nemesis.kinds.clone(),
        cluster.clone(),
        opts.seed,
        start,
        stop_rx,
    ));

    let mut events = Vec::new();
    let mut error = None;
    let mut collect = |joined: Result<Result<Vec<NemesisEvent>, HarnessError>, _>| match joined {
        Ok(Ok(evs)) => events.extend(evs),
        Ok(Err(e)) => error = error.take().or(Some(e)),
        Err(e) => {
            error = error.take().or(Some(HarnessError::Config(format!(
                "the nemesis panicked: {e}"
            ))))
        }
    };
    let deadline = tokio::time::sleep(opts.time_limit);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            Some(joined) = nemeses.join_next() => {
                let failed = matches!(joined, Ok(Err(_)) | Err(_));
                collect(joined);
                if failed {
                    break;
                }
            }
        }
    }
    let _ = phase_tx.send(Phase::Stopping);
    let _ = stop_tx.send(true);
    let heal = async {
        while let Some(joined) = nemeses.join_next().await {
            collect(joined);
        }
    };
    if tokio::time::timeout(HEAL_PATIENCE, heal).await.is_err() {
        nemeses.abort_all();
        error = error.or(Some(HarnessError::timeout(
            "the nemesis to heal the cluster",
            HEAL_PATIENCE,
        )));
    }
    let _ = phase_tx.send(Phase::Healed);
    let mut ops = Vec::new();
    let drain = async {
        while let Some(joined) = workloads.join_next().await {
            ops.extend(joined.expect("workloads do not panic"));
        }
    };
    if tokio::time::timeout(DRAIN_PATIENCE, drain).await.is_err() {
        workloads.abort_all();
        error = error.or(Some(HarnessError::timeout(
            "the workloads to finish",
            DRAIN_PATIENCE,
        )));
    }
    events.sort_by_key(|e| e.start_ns);
    Recorded { ops, events, error }
}

/// Runs the nemesis kinds until `stop`. One kind runs alone; several take turns in
/// [`NEMESIS_SLICE`] slices, each stopped (so healed, and the cluster serving again) before the
/// next begins: the nemesis injects one fault at a time, and so does a mix.
async fn schedule(
    kinds: Vec<NemesisKind>,
    cluster: Arc<Cluster>,
    seed: u64,
    start: Instant,
    mut stop: signal::Receiver<bool>,
) -> Result<Vec<NemesisEvent>, HarnessError> {
    if let [kind] = kinds[..] {
        return nemesis::run(kind, cluster, seed, start, stop).await;
    }
    let mut events = Vec::new();
    for (slice, &kind) in kinds.iter().cycle().enumerate() {
        if *stop.borrow() {
            break;
        }
        let (slice_tx, slice_rx) = signal::channel(false);
        let seed = seed.wrapping_add(slice as u64);
        let run = nemesis::run(kind, cluster.clone(), seed, start, slice_rx);
        tokio::pin!(run);
        let stopped = tokio::select! {
            result = &mut run => {
                events.extend(result?);
                continue;
            }
            _ = tokio::time::sleep(NEMESIS_SLICE) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        let _ = slice_tx.send(true);
        events.extend(run.await?);
        if stopped {
            break;
        }
    }
    Ok(events)
}

/// The merged history, ordered by invocation, and each workload's own (renumbered).
fn split(workloads: &[WorkloadKind], mut ops: Vec<Op>) -> (History, Vec<(WorkloadKind, History)>) {
    ops.sort_by_key(|op| (op.invoke_ns, op.process));
    let history = History::new(ops);
    let per = workloads
        .iter()
        .map(|&w| {
            let mine = history
                .ops
                .iter()
                .filter(|op| WorkloadKind::of_process(op.process) == Some(w))
                .cloned()
                .collect();
            (w, History::new(mine))
        })
        .collect();
    (history, per)
}

fn nemesis_json(events: &[NemesisEvent]) -> serde_json::Value {
    serde_json::Value::Array(
        events
            .iter()
            .map(|e| {
                serde_json::json!({
                    "start_ns": e.start_ns,
                    "end_ns": e.end_ns,
                    "start_s": e.start_ns as f64 / 1e9,
                    "end_s": e.end_ns as f64 / 1e9,
                    "kind": e.kind,
                    "detail": e.detail,
                })
            })
            .collect(),
    )
}

/// Prints a run's summary and returns the process exit status.
pub fn report(outcome: &Outcome) -> u8 {
    print!("{}", outcome.summary.render(&outcome.dir));
    outcome.exit_code()
}
