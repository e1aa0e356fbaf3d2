//! The v3election service: Campaign, Proclaim, Leader, Observe, Resign.
//!
//! etcd 3.4 serves v3election by running `clientv3/concurrency.Election` against itself
//! (`etcdserver/api/v3election/election.go`); we run the same recipe in-process, on the queue
//! shared with v3lock (`lock.rs`), so candidates here and etcdctl's client-side `elect` see one
//! election:
//!
//! - a candidate's key is `name + "/" + lease as %x`, holding its value, attached to its lease
//!   (lease 0 grants a fresh 60 s lease, as `concurrency.NewSession` does — also in Proclaim
//!   and Resign, which etcd builds a session for too); the leader is the key with the lowest
//!   create revision under the prefix;
//! - Campaign creates the key (or finds it, and proclaims the new value if it differs), then
//!   waits until every older candidate is gone and answers `LeaderKey{name, key, rev = create
//!   revision, lease}` with the header of the creating txn. Unlike Lock, etcd does not re-check
//!   that the key survived the wait, and neither do we. A cancelled Campaign resigns;
//! - Proclaim and Resign are fenced on the key's create revision: Proclaim puts the value only
//!   if `create_revision(key) == rev`, else `election: not leader`; Resign deletes under the
//!   same compare and succeeds either way. Both need a `leader` (`"leader" field must be
//!   provided`);
//! - Leader answers the oldest key under the prefix (`election: no leader` if none);
//! - Observe first sends the current leader (or, with none, the first put under the prefix
//!   after the request, with header revision = its mod revision), then every later put to that
//!   key with header revision = the put's revision, and on its deletion starts over. It reads
//!   the key's history from the MVCC tree each time the published revision moves, so no put
//!   is missed while the client is slow (unless compacted away; the newest value is still
//!   sent). As with grpc-go, the call's response headers go out with the first message. The
//!   stream ends when the client goes away or the server stops.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use keelson_proto::etcdserverpb::request_op::Request as Op;
use keelson_proto::etcdserverpb::{RequestOp, ResponseHeader, TxnRequest};
use keelson_proto::mvccpb::KeyValue;
use keelson_proto::v3electionpb::election_server::Election;
use keelson_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::apply::Command;
use crate::core::Core;
use crate::error::Error;
use crate::server::lock::{
    create_revision_is, delete_req, first_kv, get_op, header_rev, oldest, prefix_end, put_op,
    queue_prefix, relayed, session_lease, txn, wait_deletes, waiter_key, Cleanup, Stopping,
};

pub(crate) struct ElectionService {
    pub(crate) core: Arc<Core>,
    pub(crate) stopping: Stopping,
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        req: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        self.run_campaign(req.into_inner())
            .await
            .map(Response::new)
            .map_err(relayed)
    }

    async fn proclaim(
        &self,
        req: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        self.run_proclaim(req.into_inner())
            .await
            .map(Response::new)
            .map_err(relayed)
    }

    async fn leader(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let pfx = queue_prefix(&req.get_ref().name);
        match oldest(&self.core, &pfx) {
            (Some(kv), current) => Ok(Response::new(LeaderResponse {
                header: self.core.header(current),
                kv: Some(kv),
            })),
            (None, _) => Err(relayed(Error::ElectionNoLeader.into())),
        }
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<ObserveStream>, Status> {
        let pfx = queue_prefix(&req.get_ref().name);
        let (core, stopping) = (self.core.clone(), self.stopping.clone());
        // etcd's Observe hands responses over an unbuffered channel; a small buffer is enough,
        // since the observer reads history from the tree rather than queueing events.
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(async move {
            tokio::select! {
                _ = observe(&core, &pfx, &tx) => {}
                _ = tx.closed() => {}
                _ = stopping.wait() => {}
            }
        });
        // grpc-go sends a stream's response headers with its first message, so against etcd
        // the call itself completes only once there is a leader; clients that await the
        // headers (tonic's) see the same here.
        // The observer ends before its first message only if the server is stopping.
        let first = rx
            .recv()
            .await
            .ok_or_else(|| relayed(Error::Stopped.into()))?;
        let rest = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(
            tokio_stream::once(first).chain(rest),
        )))
    }

    async fn resign(
        &self,
        req: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        self.run_resign(req.into_inner())
            .await
            .map(Response::new)
            .map_err(relayed)
    }
}

impl ElectionService {
    /// `concurrency.Election.Campaign` with the request's session.
    async fn run_campaign(&self, r: CampaignRequest) -> Result<CampaignResponse, Status> {
        let core = &self.core;
        let lease = session_lease(core, r.lease).await?;
        let pfx = queue_prefix(&r.name);
        let key = waiter_key(&pfx, lease);
        let resp = txn(
            core,
            TxnRequest {
                compare: vec![create_revision_is(&key, 0)],
                success: vec![put_op(&key, r.value.clone(), lease)],
                failure: vec![get_op(&key)],
            },
        )
        .await?;
        let mut rev = header_rev(&resp);
        if !resp.succeeded {
            // Campaigning again with the same lease keeps our place; only the value changes.
            let kv = first_kv(&resp)?;
            rev = kv.create_revision;
            if kv.value != r.value {
                if let Err(e) = proclaim(core, &key, rev, lease, r.value.clone()).await {
                    let _ = txn(core, resign_txn(&key, rev)).await;
                    return Err(e);
                }
            }
        }
        let cleanup = Cleanup::new(core, Command::Txn(resign_txn(&key, rev)));
        wait_deletes(core, &self.stopping, &pfx, rev - 1).await?;
        cleanup.disarm();
        let leader = LeaderKey {
            name: r.name,
            key,
            rev,
            lease,
        };
        Ok(CampaignResponse {
            header: resp.header,
            leader: Some(leader),
        })
    }

    async fn run_proclaim(&self, r: ProclaimRequest) -> Result<ProclaimResponse, Status> {
        let leader = r.leader.ok_or(Error::MissingLeaderKey)?;
        let lease = session_lease(&self.core, leader.lease).await?;
        let header = proclaim(&self.core, &leader.key, leader.rev, lease, r.value).await?;
        Ok(ProclaimResponse { header })
    }

    async fn run_resign(&self, r: ResignRequest) -> Result<ResignResponse, Status> {
        let leader = r.leader.ok_or(Error::MissingLeaderKey)?;
        session_lease(&self.core, leader.lease).await?;
        let resp = txn(&self.core, resign_txn(&leader.key, leader.rev)).await?;
        Ok(ResignResponse {
            header: resp.header,
        })
    }
}

/// `Election.Proclaim`: rewrites the value only while `key` is still the incarnation created
/// at `rev`.
async fn proclaim(
    core: &Core,
    key: &Bytes,
    rev: i64,
    lease: i64,
    value: Bytes,
) -> Result<Option<ResponseHeader>, Status> {
    let (compare, success) = (
        vec![create_revision_is(key, rev)],
        vec![put_op(key, value, lease)],
    );
    let t = TxnRequest {
        compare,
        success,
        failure: vec![],
    };
    let resp = txn(core, t).await?;
    if !resp.succeeded {
        return Err(Error::ElectionNotLeader.into());
    }
    Ok(resp.header)
}

/// `Election.Resign`: deletes `key` only if it is still the incarnation created at `rev`.
fn resign_txn(key: &Bytes, rev: i64) -> TxnRequest {
    let delete = RequestOp {
        request: Some(Op::RequestDeleteRange(delete_req(key))),
    };
    TxnRequest {
        compare: vec![create_revision_is(key, rev)],
        success: vec![delete],
        failure: vec![],
    }
}

/// `Election.observe`, until the store stops or a send fails (the observer went away).
async fn observe(
    core: &Core,
    pfx: &Bytes,
    tx: &mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Option<()> {
    let mut published = core.revision.clone();
    loop {
        published.borrow_and_update();
        let (leader, current) = oldest(core, pfx);
        let (kv, mut seen) = match leader {
            Some(kv) => (kv, current),
            None => {
                // No leader: the first put under the prefix after `current` is reported next.
                let mut after = current;
                loop {
                    published.changed().await.ok()?;
                    published.borrow_and_update();
                    let (put, now) = first_put_since(core, pfx, after);
                    if let Some(kv) = put {
                        let rev = kv.mod_revision;
                        break (kv, rev);
                    }
                    after = now;
                }
            }
        };
        let key = kv.key.clone();
        tx.send(Ok(LeaderResponse {
            header: core.header(seen),
            kv: Some(kv),
        }))
        .await
        .ok()?;
        // Follow the leader key until it is deleted, reporting every put to it.
        'follow: loop {
            published.borrow_and_update();
            let (changes, now) = key_changes_since(core, &key, seen);
            for change in changes {
                let Some(kv) = change else { break 'follow };
                let rev = kv.mod_revision;
                tx.send(Ok(LeaderResponse {
                    header: core.header(rev),
                    kv: Some(kv),
                }))
                .await
                .ok()?;
            }
            seen = now;
            published.changed().await.ok()?;
        }
    }
}

/// The oldest put (by revision) to any key under `pfx` in `(after, current]`, and `current`.
fn first_put_since(core: &Core, pfx: &Bytes, after: i64) -> (Option<KeyValue>, i64) {
    let st = core.mvcc.state.read();
    let current = st.current;
    let put = st
        .tree
        .range(pfx.clone()..prefix_end(pfx))
        .flat_map(|(_, ki)| ki.versions_since(after))
        .filter(|v| v.rev.main <= current && v.kv.is_some())
        .min_by_key(|v| v.rev)
        .and_then(|v| v.kv.clone());
    (put, current)
}

/// The changes to `key` in `(after, current]`, oldest first (`None` = deleted), and `current`.
/// A deletion whose tombstone was compacted away still shows as `None`.
fn key_changes_since(core: &Core, key: &Bytes, after: i64) -> (Vec<Option<KeyValue>>, i64) {
    let st = core.mvcc.state.read();
    let current = st.current;
    let mut changes: Vec<Option<KeyValue>> = match st.tree.get(key) {
        Some(ki) => ki
            .versions_since(after)
            .take_while(|v| v.rev.main <= current)
            .map(|v| v.kv.clone())
            .collect(),
        None => Vec::new(),
    };
    let deleted = changes.iter().any(Option::is_none);
    if !deleted && st.live_at(key, &[], current).next().is_none() {
        changes.push(None);
    }
    (changes, current)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use etcd_client::{Client, LeaderKey, ObserveStream, ProclaimOptions, ResignOptions};
    use tonic::Code;

    use crate::server::lock::tests::{assert_waits, client, lease, status, unique};

    /// The next observed leader value and its header revision.
    async fn observed(obs: &mut ObserveStream) -> (Vec<u8>, i64) {
        let next = tokio::time::timeout(Duration::from_secs(10), obs.message()).await;
        let m = next
            .expect("observe delivers")
            .unwrap()
            .expect("stream open");
        (
            m.kv().unwrap().value().to_vec(),
            m.header().unwrap().revision(),
        )
    }

    fn campaign(
        c: &Client,
        name: &str,
        value: &str,
        lease: i64,
    ) -> tokio::task::JoinHandle<LeaderKey> {
        let (mut c, name, value) = (c.clone(), name.to_string(), value.to_string());
        tokio::spawn(async move {
            c.campaign(name, value, lease)
                .await
                .unwrap()
                .leader()
                .unwrap()
                .clone()
        })
    }

    fn with(leader: &LeaderKey) -> Option<ProclaimOptions> {
        Some(ProclaimOptions::new().with_leader(leader.clone()))
    }

    #[tokio::test]
    async fn campaign_proclaim_observe_resign_round_trip() {
        let mut c = client().await;
        let name = unique("elect");
        let (l1, l2) = (lease(&mut c).await, lease(&mut c).await);
        let no_leader = (Code::Unknown, "election: no leader".to_string());
        assert_eq!(
            status(c.leader(name.as_str()).await.unwrap_err()),
            no_leader
        );
        // As with etcd, Observe answers (sends headers) only once there is a leader.
        let (mut oc, oname) = (c.clone(), name.clone());
        let mut observer = tokio::spawn(async move { oc.observe(oname).await.unwrap() });
        assert_waits(&mut observer).await;

        let won = c.campaign(name.as_str(), "alpha", l1).await.unwrap();
        let mut obs = observer.await.unwrap();
        let leader = won.leader().unwrap().clone();
        assert_eq!(leader.name(), name.as_bytes());
        assert_eq!(leader.key(), format!("{name}/{l1:x}").as_bytes());
        assert_eq!(leader.lease(), l1);
        assert_eq!(leader.rev(), won.header().unwrap().revision());
        // Observing before anyone campaigned reports the first put, at its revision.
        assert_eq!(observed(&mut obs).await, (b"alpha".to_vec(), leader.rev()));
        let current = c.leader(name.as_str()).await.unwrap();
        assert_eq!(current.kv().unwrap().value(), b"alpha");
        assert_eq!(current.kv().unwrap().create_revision(), leader.rev());

        let proclaimed = c.proclaim("beta", with(&leader)).await.unwrap();
        assert_eq!(
            observed(&mut obs).await,
            (b"beta".to_vec(), proclaimed.header().unwrap().revision())
        );

        // A second candidate queues behind the leader and cannot proclaim.
        let mut second = campaign(&c, &name, "gamma", l2);
        assert_waits(&mut second).await;
        let pretender = LeaderKey::new()
            .with_name(name.as_str())
            .with_key(format!("{name}/{l2:x}"))
            .with_rev(leader.rev())
            .with_lease(l2);
        let not_leader = (Code::Unknown, "election: not leader".to_string());
        assert_eq!(
            status(c.proclaim("x", with(&pretender)).await.unwrap_err()),
            not_leader
        );

        // Resigning hands over leadership; observers follow.
        c.resign(Some(ResignOptions::new().with_leader(leader.clone())))
            .await
            .unwrap();
        let next = second.await.unwrap();
        assert_eq!(next.key(), format!("{name}/{l2:x}").as_bytes());
        assert_eq!(observed(&mut obs).await.0, b"gamma");
        assert_eq!(
            c.leader(name.as_str()).await.unwrap().kv().unwrap().value(),
            b"gamma"
        );
        // The old leader key is fenced off; resigning it again is harmless.
        assert_eq!(
            status(c.proclaim("delta", with(&leader)).await.unwrap_err()),
            not_leader
        );
        c.resign(Some(ResignOptions::new().with_leader(leader)))
            .await
            .unwrap();
        assert_eq!(
            c.leader(name.as_str()).await.unwrap().kv().unwrap().value(),
            b"gamma"
        );

        // Losing the lease ends leadership too.
        c.lease_revoke(l2).await.unwrap();
        assert_eq!(
            status(c.leader(name.as_str()).await.unwrap_err()),
            no_leader
        );
    }

    #[tokio::test]
    async fn campaigning_again_keeps_the_place_and_updates_the_value() {
        let mut c = client().await;
        let name = unique("elect");
        let l1 = lease(&mut c).await;
        let first = c
            .campaign(name.as_str(), "one", l1)
            .await
            .unwrap()
            .leader()
            .unwrap()
            .clone();
        let again = c
            .campaign(name.as_str(), "two", l1)
            .await
            .unwrap()
            .leader()
            .unwrap()
            .clone();
        assert_eq!((again.key(), again.rev()), (first.key(), first.rev()));
        assert_eq!(
            c.leader(name.as_str()).await.unwrap().kv().unwrap().value(),
            b"two"
        );
    }

    #[tokio::test]
    async fn a_cancelled_candidate_resigns() {
        let mut c = client().await;
        let name = unique("elect");
        let (l1, l2, l3) = (
            lease(&mut c).await,
            lease(&mut c).await,
            lease(&mut c).await,
        );
        let leader = c
            .campaign(name.as_str(), "a", l1)
            .await
            .unwrap()
            .leader()
            .unwrap()
            .clone();
        let mut second = campaign(&c, &name, "b", l2);
        assert_waits(&mut second).await;
        second.abort();
        let mut third = campaign(&c, &name, "c", l3);
        assert_waits(&mut third).await;
        c.resign(Some(ResignOptions::new().with_leader(leader)))
            .await
            .unwrap();
        // The third only wins if the cancelled second withdrew.
        let won = tokio::time::timeout(Duration::from_secs(10), third)
            .await
            .expect("third wins")
            .unwrap();
        assert_eq!(won.key(), format!("{name}/{l3:x}").as_bytes());
    }

    #[tokio::test]
    async fn election_errors_match_etcd() {
        let mut c = client().await;
        let name = unique("elect");
        let missing = (
            Code::Unknown,
            "\"leader\" field must be provided".to_string(),
        );
        assert_eq!(status(c.proclaim("v", None).await.unwrap_err()), missing);
        assert_eq!(status(c.resign(None).await.unwrap_err()), missing);
        let err = c.campaign(name.as_str(), "v", 0x1234).await.unwrap_err();
        assert_eq!(
            status(err),
            (
                Code::Unknown,
                "etcdserver: requested lease not found".into()
            )
        );
        // Without a lease the server grants a 60 s one.
        let won = c
            .campaign(name.as_str(), "v", 0)
            .await
            .unwrap()
            .leader()
            .unwrap()
            .clone();
        assert_ne!(won.lease(), 0);
        assert_eq!(
            c.lease_time_to_live(won.lease(), None)
                .await
                .unwrap()
                .granted_ttl(),
            60
        );
    }

    #[tokio::test]
    async fn shutdown_ends_waiting_calls() {
        let cfg = crate::config::StoreConfig {
            listen_client_urls: vec!["http://127.0.0.1:0".into()],
            data_dir: None,
            ..Default::default()
        };
        let store = crate::Store::open(cfg).await.unwrap();
        let addr = store.client_addrs()[0];
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(store.serve(async move {
            let _ = stopped.await;
        }));
        let mut c = Client::connect([format!("http://{addr}")], None)
            .await
            .unwrap();
        let (l1, l2) = (lease(&mut c).await, lease(&mut c).await);
        c.campaign("e", "a", l1).await.unwrap();
        let (mut cc, mut oc) = (c.clone(), c.clone());
        let mut waiting = tokio::spawn(async move { cc.campaign("e", "b", l2).await.map(|_| ()) });
        let mut observer = tokio::spawn(async move { oc.observe("nobody").await.map(|_| ()) });
        assert_waits(&mut waiting).await;
        assert_waits(&mut observer).await;
        stop.send(()).unwrap();
        // Graceful shutdown waits for open calls, so it finishes only if these end.
        tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
        let stopped = (Code::Unknown, "etcdserver: server stopped".to_string());
        assert_eq!(status(waiting.await.unwrap().unwrap_err()), stopped);
        assert_eq!(status(observer.await.unwrap().unwrap_err()), stopped);
    }
}
