//! `k8s`: the traffic a Kubernetes apiserver sends etcd, on `/registry/pods/`.
//!
//! The apiserver's storage layer does four things, and so does this workload, mixed by weight
//! (`--mix create=10,update=50,get=30,list=10`):
//! - create: `Txn(mod_revision(key) == 0 → put, else get)` — fail if it exists;
//! - update: `Txn(mod_revision(key) == R → put, else get)` with R the revision last seen, and
//!   on a conflict retry with the revision the failure branch returned (GuaranteedUpdate);
//! - get: a linearizable single-key range;
//! - list: paged with `--limit`, the next page starting at the last key + "\0" and read at
//!   the first page's revision, as the apiserver's continue tokens do.
//!
//! Meanwhile `--watchers` prefix watchers (with prev_kv, like the apiserver's watch cache) run
//! from the revision after the preload; at the end they must have seen every create and update
//! exactly once, in order ([`crate::check`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::anyhow;
use bytes::{Bytes, BytesMut};
use clap::Args;
use keelson_proto::etcdserverpb::{kv_client::KvClient, RangeRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use super::{cas_put, put_all, Cas, PRELOAD_BATCH};
use crate::check::{Expectation, Filter};
use crate::cli::{Load, Target};
use crate::conn::{parse_duration, Conns};
use crate::driver::{closed_loop, fail, for_each_parallel, Failed, Limit, Worker};
use crate::keys::{prefix_end, stamp};
use crate::stats::{rate, Recorder, Report};
use crate::watchers::{WatchSpec, Watchers};

const PREFIX: &str = "/registry/pods/";

#[derive(Args, Debug, Clone)]
pub struct K8sArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub load: Load,
    /// Operation weights: create=W,update=W,get=W,list=W.
    #[arg(long, default_value = "create=10,update=50,get=30,list=10", value_parser = Mix::parse)]
    pub mix: Mix,
    /// Pods written before the measured phase.
    #[arg(long, default_value_t = 1000)]
    pub pods: u64,
    /// Namespaces the pods are spread over.
    #[arg(long, default_value_t = 10)]
    pub namespaces: u64,
    /// Size of a pod object in bytes.
    #[arg(long, default_value_t = 2048)]
    pub val_size: usize,
    /// Page size of a list (0 = one page).
    #[arg(long, default_value_t = 500)]
    pub limit: i64,
    /// Prefix watchers running through the measured phase.
    #[arg(long, default_value_t = 10)]
    pub watchers: usize,
    /// Give up waiting for watch events when none has arrived for this long.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub drain_timeout: std::time::Duration,
}

/// Operation weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 4],
}

const OPS: [&str; 4] = ["create", "update", "get", "list"];

impl Mix {
    pub fn parse(s: &str) -> Result<Mix, String> {
        let mut weights = [0; 4];
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (name, w) = part
                .split_once('=')
                .ok_or(format!("{part:?} is not op=weight"))?;
            let i = OPS
                .iter()
                .position(|o| *o == name.trim())
                .ok_or(format!("unknown op {name:?} (create, update, get, list)"))?;
            weights[i] = w
                .trim()
                .parse()
                .map_err(|_| format!("weight {w:?} is not a number"))?;
        }
        if weights.iter().all(|&w| w == 0) {
            return Err("every weight is 0".into());
        }
        Ok(Mix { weights })
    }

    /// The operation for a uniform draw `x` in 0..total().
    fn pick(&self, mut x: u32) -> usize {
        for (i, &w) in self.weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        unreachable!("x < total")
    }

    fn total(&self) -> u32 {
        self.weights.iter().sum()
    }
}

/// The pods that exist, with the mod_revision last seen of each.
type Pool = Arc<Mutex<Vec<(Bytes, i64)>>>;

struct K8sWorker {
    kv: KvClient<Channel>,
    a: Arc<K8sArgs>,
    pool: Pool,
    next_pod: Arc<AtomicU64>,
    rng: StdRng,
    /// Acknowledged writes (all on key id 0: the watchers watch the prefix).
    log: Vec<(u32, i64)>,
}

fn pod_key(id: u64, namespaces: u64) -> Bytes {
    Bytes::from(format!("{PREFIX}ns-{}/pod-{id:08}", id % namespaces.max(1)))
}

impl K8sWorker {
    fn random_pod(&mut self) -> Option<(usize, Bytes, i64)> {
        let pool = self.pool.lock().expect("pool lock");
        if pool.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..pool.len());
        Some((i, pool[i].0.clone(), pool[i].1))
    }

    async fn create(&mut self, rec: &mut Recorder) -> Result<(), Failed> {
        let key = pod_key(
            self.next_pod.fetch_add(1, Ordering::Relaxed),
            self.a.namespaces,
        );
        let t = Instant::now();
        match cas_put(&mut self.kv, key.clone(), 0, stamp(self.a.val_size))
            .await
            .map_err(fail("create"))?
        {
            Cas::Done(rev) => {
                rec.since("create", t);
                self.log.push((0, rev));
                self.pool.lock().expect("pool lock").push((key, rev));
            }
            Cas::Conflict(_) => rec.count("create_conflicts", 1),
        }
        Ok(())
    }

    async fn update(&mut self, rec: &mut Recorder) -> Result<(), Failed> {
        let Some((i, key, mut rev)) = self.random_pod() else {
            return self.create(rec).await;
        };
        let t = Instant::now();
        for _ in 0..1000 {
            match cas_put(&mut self.kv, key.clone(), rev, stamp(self.a.val_size))
                .await
                .map_err(fail("update"))?
            {
                Cas::Done(new) => {
                    rec.since("update", t);
                    self.log.push((0, new));
                    let mut pool = self.pool.lock().expect("pool lock");
                    pool[i].1 = pool[i].1.max(new);
                    return Ok(());
                }
                Cas::Conflict(Some(now)) => {
                    rec.count("update_conflicts", 1);
                    rev = now.mod_revision;
                }
                Cas::Conflict(None) => {
                    return Err(Failed("update", tonic::Status::not_found("a pod vanished")));
                }
            }
        }
        Err(Failed(
            "update",
            tonic::Status::aborted("too many conflicts in a row"),
        ))
    }

    async fn get(&mut self, rec: &mut Recorder) -> Result<(), Failed> {
        let Some((_, key, _)) = self.random_pod() else {
            return self.create(rec).await;
        };
        let t = Instant::now();
        let r = self
            .kv
            .range(RangeRequest {
                key,
                ..Default::default()
            })
            .await
            .map_err(fail("get"))?
            .into_inner();
        rec.since("get", t);
        if r.kvs.len() != 1 {
            rec.count("missing_pods", 1);
        }
        Ok(())
    }

    async fn list(&mut self, rec: &mut Recorder) -> Result<(), Failed> {
        let end = prefix_end(PREFIX.as_bytes());
        let (mut key, mut revision) = (Bytes::from_static(PREFIX.as_bytes()), 0);
        let t = Instant::now();
        loop {
            let r = self
                .kv
                .range(RangeRequest {
                    key: key.clone(),
                    range_end: end.clone(),
                    limit: self.a.limit,
                    revision,
                    ..Default::default()
                })
                .await
                .map_err(fail("list"))?
                .into_inner();
            rec.count("list_pages", 1);
            if revision == 0 {
                revision = r.header.map(|h| h.revision).unwrap_or(0);
            }
            match r.kvs.last() {
                Some(last) if r.more => {
                    let mut next = BytesMut::from(&last.key[..]);
                    next.extend_from_slice(b"\0");
                    key = next.freeze();
                }
                _ => break,
            }
        }
        rec.since("list", t);
        Ok(())
    }
}

impl Worker for K8sWorker {
    async fn op(&mut self, _seq: u64, rec: &mut Recorder) -> Result<(), Failed> {
        let x = self.rng.random_range(0..self.a.mix.total());
        match self.a.mix.pick(x) {
            0 => self.create(rec).await,
            1 => self.update(rec).await,
            2 => self.get(rec).await,
            _ => self.list(rec).await,
        }
    }
}

pub(crate) async fn run(a: &K8sArgs) -> anyhow::Result<Report> {
    let conns = Conns::open(&a.target).await?;
    let a = Arc::new(a.clone());
    // Pod ids continue after any earlier run's, so creates never meet an existing pod.
    let first_id = rand::rng().random_range(0..1u64 << 40) << 20;
    let batches = (a.pods as usize).div_ceil(PRELOAD_BATCH);
    let preloaded = for_each_parallel(batches, 8, |b| {
        let mut kv = conns.kv(b);
        let lo = (b * PRELOAD_BATCH) as u64;
        let keys: Vec<Bytes> = (lo..(lo + PRELOAD_BATCH as u64).min(a.pods))
            .map(|i| pod_key(first_id + i, a.namespaces))
            .collect();
        let val_size = a.val_size;
        async move {
            let rev = put_all(&mut kv, keys.iter().map(|k| (k.clone(), stamp(val_size)))).await?;
            Ok(keys.into_iter().map(|k| (k, rev)).collect::<Vec<_>>())
        }
    })
    .await?;
    let pool: Pool = Arc::new(Mutex::new(preloaded.into_iter().flatten().collect()));
    let now = conns
        .kv(0)
        .range(RangeRequest {
            key: Bytes::from_static(b"\0"),
            count_only: true,
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("reading the revision: {}", s.message()))?
        .into_inner()
        .header
        .map(|h| h.revision)
        .unwrap_or(0);
    let spec = WatchSpec {
        filter: Filter::All,
        key: Bytes::from_static(PREFIX.as_bytes()),
        range_end: prefix_end(PREFIX.as_bytes()),
        start_revision: now + 1,
        prev_kv: true,
    };
    let watchers = Watchers::start(&conns, 1, vec![spec; a.watchers], true).await?;
    let next_pod = Arc::new(AtomicU64::new(first_id + a.pods));
    let workers = (0..a.load.clients.max(1))
        .map(|i| K8sWorker {
            kv: conns.kv(i),
            a: a.clone(),
            pool: pool.clone(),
            next_pod: next_pod.clone(),
            rng: StdRng::from_rng(&mut rand::rng()),
            log: Vec::new(),
        })
        .collect();
    let start = Instant::now();
    let mut run = closed_loop("k8s", workers, Limit::from_load(&a.load)).await;
    let log: Vec<(u32, i64)> = run
        .workers
        .iter_mut()
        .flat_map(|w| std::mem::take(&mut w.log))
        .collect();
    let expect = Expectation::new(&log);
    let last = watchers
        .wait_for(watchers.expected_events(&expect), a.drain_timeout)
        .await;
    let window = last.unwrap_or_else(Instant::now).duration_since(start);
    let got = watchers.stop().await;
    let delivery = got.check(&expect);

    let mut r = Report {
        elapsed_s: run.elapsed.as_secs_f64(),
        ..Report::default()
    };
    r.add_ops(&run.rec, run.elapsed);
    r.add_op(got.rec.op_stats("event", window));
    r.figure("events_per_s", rate(delivery.delivered, window));
    r.figure(
        "update_conflicts",
        run.rec.counter("update_conflicts") as f64,
    );
    if let Some(lists) = run.rec.hist("list").map(|h| h.count()).filter(|&n| n > 0) {
        r.figure(
            "pages_per_list",
            run.rec.counter("list_pages") as f64 / lists as f64,
        );
    }
    delivery.report_into(&mut r);
    r.problems.extend(got.problems);
    for (what, n) in [
        ("creates met an existing pod", "create_conflicts"),
        ("gets found no pod", "missing_pods"),
    ] {
        let n = run.rec.counter(n);
        if n > 0 {
            r.problem(format!("{n} {what}"));
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_pick_by_weight() {
        let m = Mix::parse("create=1,update=2,list=1").unwrap();
        assert_eq!(m.total(), 4);
        let picks: Vec<_> = (0..4).map(|x| OPS[m.pick(x)]).collect();
        assert_eq!(picks, ["create", "update", "update", "list"]);
        assert!(Mix::parse("create=0").is_err());
        assert!(Mix::parse("delete=1").is_err());
        assert!(Mix::parse("get").is_err());
    }

    #[test]
    fn pod_keys_are_namespaced() {
        assert_eq!(&pod_key(12, 10)[..], b"/registry/pods/ns-2/pod-00000012");
    }
}
