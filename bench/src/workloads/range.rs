//! `range`: reads over preloaded keys — one random key per request, or a whole prefix.
//!
//! `--consistency l` (linearizable, etcd's default) makes every read confirm the leader's
//! commit index (ReadIndex) before answering; `s` (serializable) answers from the member's own
//! state. The preload happens before the clock starts; each single-key read checks the key is
//! there, so a server that answers fast but empty does not pass.

use std::time::Instant;

use clap::{Args, ValueEnum};
use keelson_proto::etcdserverpb::{kv_client::KvClient, RangeRequest};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tonic::transport::Channel;

use super::{put_all, PRELOAD_BATCH};
use crate::cli::{Load, Target};
use crate::conn::Conns;
use crate::driver::{closed_loop, fail, for_each_parallel, Failed, Limit, Worker};
use crate::keys::{prefix_end, stamp, KeySpace};
use crate::stats::{Recorder, Report};

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

#[derive(Args, Debug, Clone)]
pub struct RangeArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub load: Load,
    /// Read consistency: l (linearizable) or s (serializable).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Keys written before the measured phase.
    #[arg(long, default_value_t = 1000)]
    pub key_count: u64,
    /// Range over the whole prefix instead of one random key.
    #[arg(long)]
    pub prefix: bool,
    /// Limit of a prefix range (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Key size in bytes ("rng/" and a zero-padded index).
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
}

struct RangeWorker {
    kv: KvClient<Channel>,
    keys: KeySpace,
    prefix: bool,
    limit: i64,
    serializable: bool,
    rng: StdRng,
}

impl Worker for RangeWorker {
    async fn op(&mut self, _seq: u64, rec: &mut Recorder) -> Result<(), Failed> {
        let (key, range_end) = if self.prefix {
            let p = self.keys.prefix();
            let end = prefix_end(&p);
            (p, end)
        } else {
            (self.keys.random(&mut self.rng), Default::default())
        };
        let t = Instant::now();
        let r = self
            .kv
            .range(RangeRequest {
                key,
                range_end,
                limit: self.limit,
                serializable: self.serializable,
                ..Default::default()
            })
            .await
            .map_err(fail("range"))?
            .into_inner();
        rec.since("range", t);
        rec.count("kvs", r.kvs.len() as u64);
        if !self.prefix && r.kvs.len() != 1 {
            rec.count("missing_keys", 1);
        }
        Ok(())
    }
}

/// Writes keys 0..n of `keys` with values of `val_size` bytes; returns the last revision.
pub(crate) async fn preload(
    conns: &Conns,
    keys: &KeySpace,
    n: u64,
    val_size: usize,
) -> anyhow::Result<i64> {
    let batches = (n as usize).div_ceil(PRELOAD_BATCH);
    let revs = for_each_parallel(batches, 8, |b| {
        let mut kv = conns.kv(b);
        let lo = (b * PRELOAD_BATCH) as u64;
        let hi = (lo + PRELOAD_BATCH as u64).min(n);
        let kvs: Vec<_> = (lo..hi).map(|i| (keys.key(i), stamp(val_size))).collect();
        async move { put_all(&mut kv, kvs).await }
    })
    .await?;
    Ok(revs.into_iter().max().unwrap_or(0))
}

pub(crate) async fn run(a: &RangeArgs) -> anyhow::Result<Report> {
    let conns = Conns::open(&a.target).await?;
    let keys = KeySpace::new("rng/", a.key_size, a.key_count.max(1))?;
    preload(&conns, &keys, a.key_count, a.val_size).await?;
    let workers = (0..a.load.clients.max(1))
        .map(|i| RangeWorker {
            kv: conns.kv(i),
            keys: keys.clone(),
            prefix: a.prefix,
            limit: a.limit,
            serializable: a.consistency == Consistency::S,
            rng: StdRng::from_rng(&mut rand::rng()),
        })
        .collect();
    let run = closed_loop("range", workers, Limit::from_load(&a.load)).await;
    let mut r = Report {
        elapsed_s: run.elapsed.as_secs_f64(),
        ..Report::default()
    };
    r.add_ops(&run.rec, run.elapsed);
    let ranges = run.rec.hist("range").map(|h| h.count()).unwrap_or(0);
    if ranges > 0 {
        r.figure(
            "kvs_per_range",
            run.rec.counter("kvs") as f64 / ranges as f64,
        );
    }
    let missing = run.rec.counter("missing_keys");
    if missing > 0 {
        r.problem(format!("{missing} single-key ranges found no key"));
    }
    Ok(r)
}
