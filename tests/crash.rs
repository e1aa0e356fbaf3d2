//! Crash test: `keelson store` killed with SIGKILL under concurrent writes, again and again,
//! restarted on the same data directory each time.
//!
//! What must hold after every restart (the durability contract of `store/src/lib.rs`: nothing
//! is acknowledged before it is durable, and the state after a crash is the state after some
//! prefix of the applied commands):
//! - every acknowledged put is present with exactly the value written and the revision its
//!   response header carried (every write uses a key of its own, so nothing overwrites it);
//! - a put that was not acknowledged is either absent or present with the value written;
//! - a txn writing three keys is all there (at one revision) or not there at all, and if it was
//!   acknowledged it is there at the acknowledged revision;
//! - no revision is acknowledged twice, and every write acknowledged after a restart has a
//!   revision above every one acknowledged before it — the store never goes back in time.
//!
//! The schedule (kill delays, writer mix) comes from a seeded RNG; the seed is printed and
//! `KEELSON_CRASH_SEED=N` replays it. `KEELSON_CRASH_CYCLES=N` changes the number of kills
//! (default 20). Thread timing is of course not reproducible, only the schedule.

// Each test crate uses only some of the shared helpers.
#[allow(dead_code)]
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, Txn, TxnOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::cluster::{log_tail, Member, NotReady, Probe};

const WRITERS: usize = 8;

/// Starts a single-member cluster `crash` on `data_dir` (a member restarted on its data dir
/// with new ports), retrying with fresh ports if one was taken meanwhile.
async fn start(data_dir: &Path, log: &Path) -> (Member, Client) {
    for _ in 0..3 {
        let mut m = Member::new("crash", data_dir, log);
        let initial = m.initial_entry();
        m.start(&initial, None, &[], true);
        match m.ready(Duration::from_secs(5), Probe::Get).await {
            Ok(c) => return (m, c),
            Err(NotReady::Exited(status)) => eprintln!(
                "member exited before it was ready ({status}):\n{}",
                log_tail(log)
            ),
            Err(NotReady::TimedOut) => panic!(
                "member on {} not ready after 30 s:\n{}",
                m.endpoint(),
                log_tail(log)
            ),
        }
    }
    panic!(
        "keelson store would not start on {data_dir:?}:\n{}",
        log_tail(log)
    );
}

/// One write a writer attempted: `keys` all written with `value` (one key for a put, three for
/// a txn); `acked` is the revision of the response, if there was one.
#[derive(Debug, Clone)]
struct Write {
    keys: Vec<String>,
    value: String,
    acked: Option<i64>,
    cycle: usize,
}

async fn writer(
    mut c: Client,
    cycle: usize,
    w: usize,
    txn_every: u64,
    stop: Arc<AtomicBool>,
) -> Vec<Write> {
    let mut out = Vec::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let value = format!("v{cycle}.{w}.{seq}");
        let (keys, r) = if seq.is_multiple_of(txn_every) {
            let keys: Vec<String> = (0..3)
                .map(|i| format!("t/{cycle:03}/{w}/{seq:06}/{i}"))
                .collect();
            let ops: Vec<TxnOp> = keys
                .iter()
                .map(|k| TxnOp::put(k.as_str(), value.as_str(), None))
                .collect();
            let r = c
                .txn(Txn::new().and_then(ops))
                .await
                .map(|r| r.header().unwrap().revision());
            (keys, r)
        } else {
            let key = format!("p/{cycle:03}/{w}/{seq:06}");
            let r = c
                .put(key.as_str(), value.as_str(), None)
                .await
                .map(|r| r.header().unwrap().revision());
            (vec![key], r)
        };
        let failed = r.is_err();
        out.push(Write {
            keys,
            value,
            acked: r.ok(),
            cycle,
        });
        if failed {
            // The member is gone (or going): what happened to this write is unknown.
            break;
        }
    }
    out
}

/// Everything stored, as key -> (value, mod_revision), and the header revision.
async fn read_all(c: &mut Client) -> (BTreeMap<String, (String, i64)>, i64) {
    let r = c
        .get("\0", Some(GetOptions::new().with_from_key()))
        .await
        .expect("read everything");
    let map = r
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_string(),
                (kv.value_str().unwrap().to_string(), kv.mod_revision()),
            )
        })
        .collect();
    (map, r.header().unwrap().revision())
}

/// Checks every write attempted so far against what the restarted member serves.
/// Returns how many unacknowledged writes turned out to be applied.
fn verify(
    writes: &[Write],
    stored: &BTreeMap<String, (String, i64)>,
    head: i64,
    max_acked: i64,
    restart: usize,
) -> usize {
    assert!(
        head >= max_acked,
        "restart {restart}: head revision {head} is below acknowledged revision {max_acked}"
    );
    let ctx = |w: &Write| format!("restart {restart}: write of cycle {} {w:?}", w.cycle);
    let mut applied_unacked = 0;
    for w in writes {
        let present: Vec<&(String, i64)> = w.keys.iter().filter_map(|k| stored.get(k)).collect();
        if let Some(rev) = w.acked {
            assert_eq!(
                present.len(),
                w.keys.len(),
                "{}: acknowledged but lost",
                ctx(w)
            );
            for (v, m) in &present {
                assert_eq!(
                    (v, *m),
                    (&w.value, rev),
                    "{}: wrong value or revision",
                    ctx(w)
                );
            }
        } else {
            assert!(
                present.is_empty() || present.len() == w.keys.len(),
                "{}: partly applied: {present:?}",
                ctx(w)
            );
            for (v, _) in &present {
                assert_eq!(v, &w.value, "{}: wrong value", ctx(w));
            }
            let revs: HashSet<i64> = present.iter().map(|(_, m)| *m).collect();
            assert!(
                revs.len() <= 1,
                "{}: one txn, several revisions {revs:?}",
                ctx(w)
            );
            applied_unacked += !present.is_empty() as usize;
        }
    }
    // Nothing is stored that no writer wrote (the probe reads write nothing).
    let known: HashSet<&str> = writes
        .iter()
        .flat_map(|w| w.keys.iter().map(|k| k.as_str()))
        .collect();
    for k in stored.keys() {
        assert!(
            known.contains(k.as_str()),
            "restart {restart}: unexpected key {k}"
        );
    }
    applied_unacked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let seed = std::env::var("KEELSON_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let cycles: usize = std::env::var("KEELSON_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    eprintln!(
        "crash test: seed {seed} (KEELSON_CRASH_SEED={seed} replays the schedule), {cycles} kills"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let log = dir.path().join("keelson.log");
    let started = Instant::now();

    let mut writes: Vec<Write> = Vec::new();
    // The highest revision acknowledged in any earlier cycle.
    let mut max_acked = 0i64;
    let mut acked_revs: HashMap<i64, Vec<String>> = HashMap::new();
    let (mut member, mut client) = start(&data_dir, &log).await;
    for cycle in 0..cycles {
        let (stored, head) = read_all(&mut client).await;
        verify(&writes, &stored, head, max_acked, cycle);
        // Whatever survived the crash (acknowledged or not) is history now: new writes go after.
        let floor = head;

        let stop = Arc::new(AtomicBool::new(false));
        let txn_every = rng.random_range(2..=6);
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(writer(client.clone(), cycle, w, txn_every, stop.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..=500))).await;
        tokio::task::spawn_blocking(move || member.kill9())
            .await
            .unwrap();
        // Writers stop on their first failed request; the flag stops one whose last answer
        // was already on its way when the process died (that write was acknowledged, and
        // must be durable like any other).
        stop.store(true, Ordering::Relaxed);
        let mut this_cycle = Vec::new();
        for t in tasks {
            this_cycle.extend(
                tokio::time::timeout(Duration::from_secs(20), t)
                    .await
                    .expect("writer stops")
                    .unwrap(),
            );
        }
        let acked: Vec<i64> = this_cycle.iter().filter_map(|w| w.acked).collect();
        for w in &this_cycle {
            if let Some(r) = w.acked {
                assert!(r > floor, "cycle {cycle}: write {w:?} acknowledged at {r}, not above the head {floor} after the restart");
                if let Some(other) = acked_revs.insert(r, w.keys.clone()) {
                    panic!("cycle {cycle}: revision {r} acknowledged twice: {w:?} and {other:?}");
                }
            }
        }
        eprintln!(
            "cycle {cycle}: {} writes, {} acknowledged, revisions {:?}..{:?}",
            this_cycle.len(),
            acked.len(),
            acked.iter().min(),
            acked.iter().max()
        );
        max_acked = max_acked.max(acked.iter().copied().max().unwrap_or(0));
        writes.extend(this_cycle);
        let (m, c) = start(&data_dir, &log).await;
        member = m;
        client = c;
    }
    let (stored, head) = read_all(&mut client).await;
    let applied_unacked = verify(&writes, &stored, head, max_acked, cycles);
    // The member must also keep working after all that.
    let r = client
        .put("after", "1", None)
        .await
        .expect("a write after the last restart");
    assert!(r.header().unwrap().revision() > max_acked);
    drop(member);

    let acked = writes.iter().filter(|w| w.acked.is_some()).count();
    eprintln!(
        "crash test: {cycles} kills, {} writes ({acked} acknowledged, {} of the others applied) checked in {:?}",
        writes.len(),
        applied_unacked,
        started.elapsed()
    );
    assert!(
        acked > 0,
        "no write was ever acknowledged: the test tested nothing"
    );
}
