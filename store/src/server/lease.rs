//! The Lease service. Grant and Revoke go through the log. KeepAlive renews the deadline kept
//! by the leader, and TimeToLive reports it: on a member that does not lead, both reach the
//! leader's lessor through the proposer (etcd's followers forward them to the leader too), so
//! a client kept alive through any member keeps its lease. Leases lists this member's lessor.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use keelson_proto::etcdserverpb::lease_server::Lease;
use keelson_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::apply::{Command, Response as Applied};
use crate::core::Core;
use crate::error::Error;
use crate::server::kv::unexpected;

pub(crate) struct LeaseService {
    pub(crate) core: Arc<Core>,
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let mut r = req.into_inner();
        if r.id == 0 {
            // Chosen before proposing so apply stays deterministic; positive, as etcd's are.
            r.id = (self.core.next_id() & (i64::MAX as u64)) as i64;
        }
        match self.core.propose(Command::LeaseGrant(r)).await? {
            Applied::LeaseGrant(mut resp) => {
                self.core.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        match self
            .core
            .propose(Command::LeaseRevoke(req.into_inner()))
            .await?
        {
            Applied::LeaseRevoke(mut resp) => {
                self.core.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(other)),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let core = self.core.clone();
        let mut input = req.into_inner();
        let output = async_stream_from(move |tx| async move {
            while let Some(item) = input.next().await {
                let r = match item {
                    Ok(r) => r,
                    Err(_) => return,
                };
                // An unknown lease answers TTL 0, not an error (etcd's v3rpc/lease.go).
                let ttl = match renew(&core, r.id).await {
                    Ok(ttl) => ttl,
                    Err(Error::LeaseNotFound) => 0,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let resp = LeaseKeepAliveResponse {
                    header: core.header(0),
                    id: r.id,
                    ttl,
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(output))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let r = req.into_inner();
        let status = match self.core.proposer().lease_time_to_live(r.id) {
            Some(on_leader) => on_leader.await,
            None => self.core.lessor.time_to_live(r.id),
        };
        let resp = match status {
            Ok(s) => LeaseTimeToLiveResponse {
                header: self.core.header(0),
                id: r.id,
                ttl: s.remaining,
                granted_ttl: s.granted,
                keys: if r.keys { s.keys } else { Vec::new() },
            },
            Err(Error::LeaseNotFound) => LeaseTimeToLiveResponse {
                header: self.core.header(0),
                id: r.id,
                ttl: -1,
                ..Default::default()
            },
            Err(e) => return Err(e.into()),
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let leases = self
            .core
            .lessor
            .leases()
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: self.core.header(0),
            leases,
        }))
    }
}

/// Renews lease `id` where lease time is kept: here on the leader (or the single member),
/// else on the leader through the proposer.
async fn renew(core: &Core, id: i64) -> Result<i64, Error> {
    match core.proposer().renew_lease(id) {
        Some(on_leader) => on_leader.await,
        None => core.lessor.renew(id),
    }
}

/// A response stream fed by a task through a bounded channel.
pub(crate) fn async_stream_from<T, F, Fut>(f: F) -> Pin<Box<dyn Stream<Item = T> + Send>>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
