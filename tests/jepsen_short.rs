//! The short Jepsen-style runs CI makes: a fresh three-member cluster, register and watch
//! workloads, kill -9 and network partitions, the whole history checked.
//!
//! - Keelson, 60 s, nemesis `kill,partition`: must be judged valid, with enough ok operations
//!   and faults that the verdict means something.
//! - The control: real etcd 3.4 under the same workloads for 30 s with kills. If the checkers
//!   reject etcd, the harness is wrong, not Keelson.
//!
//! The two share a lock: each cluster wants the machine's two cores to itself. A run's folder
//! (history, results, plot, member logs) is kept under the target's tmp dir when it fails.
//! `KEELSON_JEPSEN_SEED` picks the seed (default 1).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use jepsen::cluster::Target;
use jepsen::run::{run_test, NemesisSpec, Outcome, RunOpts};
use jepsen::workload::WorkloadKind;
use jepsen::Validity;

static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

fn seed() -> u64 {
    std::env::var("KEELSON_JEPSEN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn opts(target: Target, nemesis: &str, secs: u64) -> RunOpts {
    let mut opts = RunOpts::new(target, vec![WorkloadKind::Register, WorkloadKind::Watch]);
    opts.nemesis = NemesisSpec::parse(nemesis).unwrap();
    opts.time_limit = Duration::from_secs(secs);
    opts.seed = seed();
    opts.keelson_bin = Some(PathBuf::from(env!("CARGO_BIN_EXE_keelson")));
    opts.out = Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "jepsen-short-{}-{}-{}",
        target.name(),
        std::process::id(),
        seed()
    )));
    opts
}

/// Runs, asserts a valid verdict with at least `min_ok` ok ops per workload and
/// `min_faults` faults, and removes the run folder when all is well.
fn run_and_judge(opts: RunOpts, min_ok: usize, min_faults: usize) -> Outcome {
    let _one = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let outcome = runtime
        .block_on(run_test(opts))
        .expect("the harness ran: cluster started, faults healed");
    let summary = &outcome.summary;
    let text = summary.render(&outcome.dir);
    eprintln!("{text}");
    assert_eq!(outcome.verdict(), Validity::Valid, "{text}");
    assert_eq!(outcome.exit_code(), 0);
    for (workload, counts) in &summary.ops {
        assert!(
            counts.all.ok >= min_ok,
            "{workload}: only {} ok ops\n{text}",
            counts.all.ok
        );
    }
    let watched: usize = outcome
        .results
        .iter()
        .filter(|r| r.checker == "watch")
        .filter_map(|r| r.stats["watches"].as_u64())
        .sum::<u64>() as usize;
    assert!(watched >= 3, "every observer watched\n{text}");
    assert!(
        summary.nemesis_events >= min_faults,
        "only {} faults\n{text}",
        summary.nemesis_events
    );
    for file in [
        "history.jsonl",
        "latency.svg",
        "nemesis.json",
        "summary.json",
    ] {
        assert!(outcome.dir.join(file).is_file(), "{file}");
    }
    std::fs::remove_dir_all(&outcome.dir).unwrap();
    outcome
}

#[test]
fn keelson_stays_linearizable_and_watches_stay_reliable_through_kills_and_partitions() {
    run_and_judge(opts(Target::Keelson, "kill,partition", 60), 500, 2);
}

#[test]
fn real_etcd_passes_the_same_checks_as_a_control() {
    run_and_judge(opts(Target::Etcd, "kill", 30), 300, 1);
}
