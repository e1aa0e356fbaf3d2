//! `put`: puts of random keys from a key space, as fast as `--clients` workers can go.
//!
//! The write path end to end: each put is acknowledged only once durable, so on one member
//! this measures group commit (how many puts share an fsync) as much as anything else.

use std::time::Instant;

use bytes::Bytes;
use clap::Args;
use keelson_proto::etcdserverpb::{kv_client::KvClient, PutRequest};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tonic::transport::Channel;

use crate::cli::{Load, Target};
use crate::conn::Conns;
use crate::driver::{closed_loop, fail, Failed, Limit, Worker};
use crate::keys::KeySpace;
use crate::stats::{Recorder, Report};

#[derive(Args, Debug, Clone)]
pub struct PutArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub load: Load,
    /// Key size in bytes ("put/" and a zero-padded index).
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Each put picks one of this many keys at random.
    #[arg(long, default_value_t = 100_000)]
    pub key_space: u64,
}

struct PutWorker {
    kv: KvClient<Channel>,
    keys: KeySpace,
    value: Bytes,
    rng: StdRng,
}

impl Worker for PutWorker {
    async fn op(&mut self, _seq: u64, rec: &mut Recorder) -> Result<(), Failed> {
        let key = self.keys.random(&mut self.rng);
        let t = Instant::now();
        self.kv
            .put(PutRequest {
                key,
                value: self.value.clone(),
                ..Default::default()
            })
            .await
            .map_err(fail("put"))?;
        rec.since("put", t);
        Ok(())
    }
}

pub(crate) async fn run(a: &PutArgs) -> anyhow::Result<Report> {
    let conns = Conns::open(&a.target).await?;
    let keys = KeySpace::new("put/", a.key_size, a.key_space)?;
    let value = Bytes::from(vec![b'v'; a.val_size]);
    let workers = (0..a.load.clients.max(1))
        .map(|i| PutWorker {
            kv: conns.kv(i),
            keys: keys.clone(),
            value: value.clone(),
            rng: StdRng::from_rng(&mut rand::rng()),
        })
        .collect();
    let run = closed_loop("put", workers, Limit::from_load(&a.load)).await;
    let mut r = Report {
        elapsed_s: run.elapsed.as_secs_f64(),
        ..Report::default()
    };
    r.add_ops(&run.rec, run.elapsed);
    Ok(r)
}
