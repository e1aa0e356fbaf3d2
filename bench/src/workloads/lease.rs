//! `lease-keepalive`: `--leases` leases kept alive over `--clients` keep-alive streams.
//!
//! The leases are granted first (unmeasured) and dealt over the streams; each stream then
//! renews its leases in turn, one request in flight, as etcd's client keeps a lease alive. A
//! keep-alive answered with TTL ≤ 0 means the lease was lost, which fails the run. The leases
//! are revoked at the end so repeated runs do not pile them up.

use std::time::Instant;

use clap::Args;
use keelson_proto::etcdserverpb::{
    lease_client::LeaseClient, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseRevokeRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use crate::cli::{Load, Target};
use crate::conn::Conns;
use crate::driver::{closed_loop, fail, for_each_parallel, Failed, Limit, Worker};
use crate::stats::{Recorder, Report};

#[derive(Args, Debug, Clone)]
pub struct LeaseArgs {
    #[command(flatten)]
    pub target: Target,
    /// --clients is the number of keep-alive streams.
    #[command(flatten)]
    pub load: Load,
    /// Leases granted and kept alive.
    #[arg(long, default_value_t = 1000)]
    pub leases: usize,
    /// TTL of each lease, in seconds.
    #[arg(long, default_value_t = 60)]
    pub ttl: i64,
}

struct KeepAliver {
    client: LeaseClient<Channel>,
    leases: Vec<i64>,
    stream: Option<(
        mpsc::Sender<LeaseKeepAliveRequest>,
        Streaming<LeaseKeepAliveResponse>,
    )>,
}

impl KeepAliver {
    async fn keep_alive(&mut self, id: i64) -> Result<LeaseKeepAliveResponse, Status> {
        let req = LeaseKeepAliveRequest { id };
        if self.stream.is_none() {
            // Queued before the call: the server sends its headers with its first answer.
            let (tx, rx) = mpsc::channel(4);
            let _ = tx.send(req).await;
            let rs = self
                .client
                .lease_keep_alive(ReceiverStream::new(rx))
                .await?
                .into_inner();
            self.stream = Some((tx, rs));
        } else if let Some((tx, _)) = &self.stream {
            tx.send(req)
                .await
                .map_err(|_| Status::unavailable("keep-alive stream closed"))?;
        }
        let (_, rs) = self.stream.as_mut().expect("opened above");
        match rs.message().await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => {
                self.stream = None;
                Err(Status::unavailable(
                    "the server ended the keep-alive stream",
                ))
            }
            Err(s) => {
                self.stream = None;
                Err(s)
            }
        }
    }
}

impl Worker for KeepAliver {
    async fn op(&mut self, seq: u64, rec: &mut Recorder) -> Result<(), Failed> {
        if self.leases.is_empty() {
            return Ok(());
        }
        let id = self.leases[seq as usize % self.leases.len()];
        let t = Instant::now();
        let r = self.keep_alive(id).await.map_err(fail("keepalive"))?;
        rec.since("keepalive", t);
        if r.id != id || r.ttl <= 0 {
            rec.count("lost_leases", 1);
        }
        Ok(())
    }
}

pub(crate) async fn run(a: &LeaseArgs) -> anyhow::Result<Report> {
    let conns = Conns::open(&a.target).await?;
    let ids = for_each_parallel(a.leases, 16, |i| {
        let mut c = conns.lease(i);
        let ttl = a.ttl;
        async move {
            let r = c
                .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                .await
                .map_err(|s| anyhow::anyhow!("granting a lease: {}", s.message()))?;
            Ok(r.into_inner().id)
        }
    })
    .await?;
    let streams = a.load.clients.max(1);
    let workers = (0..streams)
        .map(|s| KeepAliver {
            client: conns.lease(s),
            leases: ids.iter().skip(s).step_by(streams).copied().collect(),
            stream: None,
        })
        .collect();
    let run = closed_loop("keepalive", workers, Limit::from_load(&a.load)).await;
    for_each_parallel(ids.len(), 16, |i| {
        let mut c = conns.lease(i);
        let id = ids[i];
        async move {
            // Best effort: a lease that expired already is as good as revoked.
            let _ = c.lease_revoke(LeaseRevokeRequest { id }).await;
            Ok(())
        }
    })
    .await?;
    let mut r = Report {
        elapsed_s: run.elapsed.as_secs_f64(),
        ..Report::default()
    };
    r.add_ops(&run.rec, run.elapsed);
    let lost = run.rec.counter("lost_leases");
    if lost > 0 {
        r.problem(format!(
            "{lost} keep-alives answered that the lease was gone"
        ));
    }
    Ok(r)
}
