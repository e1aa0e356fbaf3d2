//! `Core`: everything a member's services share, opened once at start.

use std::sync::Arc;
use std::time::Duration;

use keelson_proto::etcdserverpb::alarm_request::AlarmAction;
use keelson_proto::etcdserverpb::{AlarmRequest, AlarmType, LeaseRevokeRequest, ResponseHeader};
use prost::Message;

use crate::alarm::Alarms;
use crate::apply::{Applier, Command, Response};
use crate::backend::{Backend, MemBackend, SledBackend};
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::lease::Lessor;
use crate::mvcc::Mvcc;
use crate::node::Node;
use crate::watch::WatchHub;

pub(crate) struct Core {
    pub(crate) cfg: StoreConfig,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) mvcc: Arc<Mvcc>,
    pub(crate) lessor: Arc<Lessor>,
    pub(crate) alarms: Arc<Alarms>,
    pub(crate) hub: Arc<WatchHub>,
    pub(crate) node: Node,
    pub(crate) member_id: u64,
    pub(crate) cluster_id: u64,
}

impl Core {
    pub(crate) fn open(cfg: StoreConfig) -> Result<Arc<Core>> {
        let backend: Arc<dyn Backend> = match &cfg.data_dir {
            Some(dir) => Arc::new(SledBackend::open(&dir.join("member").join("snap").join("db"))?),
            None => Arc::new(MemBackend::default()),
        };
        Self::open_with(cfg, backend)
    }

    pub(crate) fn open_with(cfg: StoreConfig, backend: Arc<dyn Backend>) -> Result<Arc<Core>> {
        let mvcc = Arc::new(Mvcc::open(&*backend)?);
        let lessor = Arc::new(Lessor::open(&*backend, cfg.min_lease_ttl())?);
        // Rebuild lease attachments from the live keys.
        {
            let st = mvcc.state.read();
            for (k, ki) in st.tree.iter() {
                if let Some(kv) = ki.latest() {
                    if kv.lease != 0 {
                        lessor.reattach(k, 0, kv.lease);
                    }
                }
            }
        }
        let alarms = Arc::new(Alarms::open(&*backend)?);
        let hub = WatchHub::new(mvcc.clone(), backend.clone());
        let applier = Arc::new(Applier {
            mvcc: mvcc.clone(),
            lessor: lessor.clone(),
            alarms: alarms.clone(),
            backend: backend.clone(),
        });
        let h = hub.clone();
        let node = Node::start(applier, Arc::new(move |evs| h.publish(evs)))?;
        let (member_id, cluster_id) = crate::cluster::ids(&cfg);
        Ok(Arc::new(Core { cfg, backend, mvcc, lessor, alarms, hub, node, member_id, cluster_id }))
    }

    /// A response header at `revision` (0 = the current revision).
    pub(crate) fn header(&self, revision: i64) -> Option<ResponseHeader> {
        let revision = if revision == 0 { self.mvcc.current_revision() } else { revision };
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            // A single member wins the election of term 2, as a fresh etcd member does.
            raft_term: 2,
        })
    }

    /// Fills a response header's member fields in place (apply sets only the revision).
    pub(crate) fn fill(&self, h: &mut Option<ResponseHeader>) {
        let rev = h.as_ref().map_or(0, |h| h.revision);
        *h = self.header(rev);
    }

    /// Validates size and quota, then proposes.
    pub(crate) async fn propose(&self, cmd: Command) -> Result<Response> {
        let size = cmd.encoded_len();
        if size > self.cfg.max_request_bytes {
            return Err(Error::RequestTooLarge);
        }
        if cmd.grows_data() {
            if self.alarms.is_raised(AlarmType::Nospace) {
                return Err(Error::NoSpace);
            }
            if self.backend.size() + size as u64 > self.cfg.quota() {
                let raise = Command::Alarm(AlarmRequest {
                    action: AlarmAction::Activate as i32,
                    member_id: self.member_id,
                    alarm: AlarmType::Nospace as i32,
                });
                self.node.propose(raise).await?;
                return Err(Error::NoSpace);
            }
        }
        self.node.propose(cmd).await
    }

    /// Revokes expired leases through the log, every 500 ms, until the core is dropped.
    pub(crate) fn spawn_lease_expiry(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(core) = weak.upgrade() else { return };
                for id in core.lessor.expired(std::time::Instant::now()) {
                    match core.node.propose(Command::LeaseRevoke(LeaseRevokeRequest { id })).await {
                        Ok(_) | Err(Error::LeaseNotFound) => {}
                        Err(e) => tracing::warn!("revoking expired lease {id:x}: {e}"),
                    }
                }
            }
        });
    }
}

impl Command {
    fn encoded_len(&self) -> usize {
        match self {
            Command::Put(r) => r.encoded_len(),
            Command::DeleteRange(r) => r.encoded_len(),
            Command::Txn(r) => r.encoded_len(),
            Command::Compact(r) => r.encoded_len(),
            Command::LeaseGrant(r) => r.encoded_len(),
            Command::LeaseRevoke(r) => r.encoded_len(),
            Command::Alarm(r) => r.encoded_len(),
        }
    }
}
