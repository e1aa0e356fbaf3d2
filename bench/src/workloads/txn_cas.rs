//! `txn-cas`: compare-and-swap increments of `--hot-keys` counters.
//!
//! Each worker keeps the last (mod_revision, counter) it saw of every hot key and increments a
//! random one with `Txn(mod_revision == seen → put counter+1, else get)`; on a conflict it takes
//! the current value from the failure branch and retries. With many workers on few keys this
//! is contention by design: the figures are successful CAS/s, conflicts, and the latency of a
//! whole increment including its retries.
//!
//! The counters double as a correctness check: after the run, the sum of all counters must
//! have grown by exactly the number of successful CASes; a lost or doubled update shows.

use std::time::Instant;

use clap::Args;
use keelson_proto::etcdserverpb::{kv_client::KvClient, RangeRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use super::{cas_put, Cas};
use crate::cli::{Load, Target};
use crate::conn::Conns;
use crate::driver::{closed_loop, fail, Failed, Limit, Worker};
use crate::keys::{counter, counter_of, prefix_end, KeySpace};
use crate::stats::{Recorder, Report};

#[derive(Args, Debug, Clone)]
pub struct CasArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub load: Load,
    /// How many counters the workers contend on.
    #[arg(long, default_value_t = 10)]
    pub hot_keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 64)]
    pub val_size: usize,
}

/// Give up on one increment after this many conflicts in a row (the report then fails).
const MAX_ATTEMPTS: u32 = 10_000;

struct CasWorker {
    kv: KvClient<Channel>,
    keys: KeySpace,
    /// Per hot key: (mod_revision, counter) as last seen.
    seen: Vec<(i64, u64)>,
    val_size: usize,
    rng: StdRng,
}

impl Worker for CasWorker {
    async fn op(&mut self, _seq: u64, rec: &mut Recorder) -> Result<(), Failed> {
        let k = self.rng.random_range(0..self.keys.len());
        let key = self.keys.key(k);
        let start = Instant::now();
        for _ in 0..MAX_ATTEMPTS {
            let (rev, n) = self.seen[k as usize];
            let t = Instant::now();
            let r = cas_put(
                &mut self.kv,
                key.clone(),
                rev,
                counter(n + 1, self.val_size),
            )
            .await
            .map_err(fail("txn"))?;
            rec.since("txn", t);
            match r {
                Cas::Done(new_rev) => {
                    self.seen[k as usize] = (new_rev, n + 1);
                    rec.since("cas", start);
                    return Ok(());
                }
                Cas::Conflict(now) => {
                    rec.count("conflicts", 1);
                    self.seen[k as usize] =
                        now.map_or((0, 0), |kv| (kv.mod_revision, counter_of(&kv.value)));
                }
            }
        }
        Err(Failed(
            "cas",
            tonic::Status::aborted("too many conflicts in a row"),
        ))
    }
}

/// The (mod_revision, counter) of every hot key, read in one range.
async fn read_counters(
    kv: &mut KvClient<Channel>,
    keys: &KeySpace,
) -> anyhow::Result<Vec<(i64, u64)>> {
    let p = keys.prefix();
    let r = kv
        .range(RangeRequest {
            range_end: prefix_end(&p),
            key: p,
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("reading the counters: {}", s.message()))?
        .into_inner();
    let mut out = vec![(0, 0); keys.len() as usize];
    for (i, slot) in out.iter_mut().enumerate() {
        let key = keys.key(i as u64);
        if let Some(kv) = r.kvs.iter().find(|kv| kv.key == key) {
            *slot = (kv.mod_revision, counter_of(&kv.value));
        }
    }
    Ok(out)
}

pub(crate) async fn run(a: &CasArgs) -> anyhow::Result<Report> {
    let conns = Conns::open(&a.target).await?;
    let hot = a.hot_keys.max(1);
    let keys = KeySpace::new("cas/", 4 + (hot - 1).to_string().len(), hot)?;
    let before = read_counters(&mut conns.kv(0), &keys).await?;
    let workers = (0..a.load.clients.max(1))
        .map(|i| CasWorker {
            kv: conns.kv(i),
            keys: keys.clone(),
            seen: before.clone(),
            val_size: a.val_size,
            rng: StdRng::from_rng(&mut rand::rng()),
        })
        .collect();
    let run = closed_loop("txn-cas", workers, Limit::from_load(&a.load)).await;
    let after = read_counters(&mut conns.kv(0), &keys).await?;
    let mut r = Report {
        elapsed_s: run.elapsed.as_secs_f64(),
        ..Report::default()
    };
    r.add_ops(&run.rec, run.elapsed);
    let done = run.rec.hist("cas").map(|h| h.count()).unwrap_or(0);
    let conflicts = run.rec.counter("conflicts");
    r.figure("conflicts", conflicts as f64);
    r.figure(
        "conflicts_per_cas",
        if done > 0 {
            conflicts as f64 / done as f64
        } else {
            0.0
        },
    );
    let sum = |v: &[(i64, u64)]| v.iter().map(|&(_, n)| n).sum::<u64>();
    let grown = sum(&after).wrapping_sub(sum(&before));
    if grown != done {
        r.problem(format!(
            "the counters grew by {grown} but {done} compare-and-swaps succeeded: lost or doubled updates"
        ));
    }
    Ok(r)
}
