//! `Core`: everything a member's services share, opened once at start.
//!
//! Writes go through the member's proposer ([`Propose`]): the single member's [`Node`] by
//! default, or the raft crate's, installed once before serving (`Store::open_replicated`).
//! Either way they are applied by the core's one [`Writer`]. The MVCC index, lessor, alarms and
//! auth store are shared as `Arc`s with the services and the watch hub; a restore
//! (`replica.rs`) replaces their contents in place, so every holder sees the new state.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use keelson_proto::etcdserverpb::alarm_request::AlarmAction;
use keelson_proto::etcdserverpb::{AlarmRequest, AlarmType, LeaseRevokeRequest, ResponseHeader};
use prost::Message;

use crate::alarm::Alarms;
use crate::apply::{Applier, Command, Response, Writer};
use crate::backend::{Backend, MemBackend, SledBackend};
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::lease::Lessor;
use crate::mvcc::Mvcc;
use crate::node::{Node, NotStarted, Propose};
use crate::watch::WatchHub;

pub(crate) struct Core {
    pub(crate) cfg: StoreConfig,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) mvcc: Arc<Mvcc>,
    pub(crate) lessor: Arc<Lessor>,
    pub(crate) alarms: Arc<Alarms>,
    pub(crate) hub: Arc<WatchHub>,
    /// The one writer: every group of commands and every restore goes through it.
    pub(crate) writer: Arc<Writer>,
    /// Set once, before serving.
    proposer: OnceLock<Arc<dyn Propose>>,
    pub(crate) member_id: u64,
    pub(crate) cluster_id: u64,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    pub(crate) auth: Arc<crate::auth::AuthStore>,
    /// The newest published revision, for tasks that wait for the store to move on (server-side
    /// locks and elections) without polling.
    pub(crate) revision: tokio::sync::watch::Receiver<i64>,
    /// etcd's request ID generator (`pkg/idutil`), used for server-chosen lease IDs.
    id_gen: std::sync::atomic::AtomicU64,
}

impl Core {
    /// Opens a single member: its data dir's backend (memory without one) and its [`Node`].
    pub(crate) fn open(cfg: StoreConfig) -> Result<Arc<Core>> {
        let backend = Self::open_backend(&cfg)?;
        Self::open_with(cfg, backend)
    }

    /// The backend of `cfg`'s data dir, or a memory backend without one.
    pub(crate) fn open_backend(cfg: &StoreConfig) -> Result<Arc<dyn Backend>> {
        Ok(match &cfg.data_dir {
            Some(dir) => Arc::new(SledBackend::open(
                &dir.join("member").join("snap").join("db"),
            )?),
            None => Arc::new(MemBackend::default()),
        })
    }

    /// Opens a single member over `backend`.
    pub(crate) fn open_with(cfg: StoreConfig, backend: Arc<dyn Backend>) -> Result<Arc<Core>> {
        let core = Self::load(cfg, backend)?;
        let node = Node::start(core.writer.clone())?;
        core.install(Arc::new(node))?;
        Ok(core)
    }

    /// Loads the state from `backend`, without a proposer yet ([`Core::install`]).
    pub(crate) fn load(cfg: StoreConfig, backend: Arc<dyn Backend>) -> Result<Arc<Core>> {
        Self::load_as(cfg, backend, None)
    }

    /// As [`Core::load`], with the member and cluster IDs given (a member that joined an
    /// existing cluster learned them from it) instead of derived from `cfg`.
    pub(crate) fn load_as(
        cfg: StoreConfig,
        backend: Arc<dyn Backend>,
        ids: Option<(u64, u64)>,
    ) -> Result<Arc<Core>> {
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let backend: Arc<dyn Backend> = Arc::new(crate::metrics::MeteredBackend::new(
            backend,
            metrics.clone(),
        ));
        let mvcc = Arc::new(Mvcc::open(&*backend)?);
        let lessor = Arc::new(Lessor::open(&*backend, cfg.min_lease_ttl())?);
        attach_leases(&mvcc, &lessor);
        let alarms = Arc::new(Alarms::open(&*backend)?);
        let auth = Arc::new(crate::auth::AuthStore::open(&*backend)?);
        let hub = WatchHub::new(mvcc.clone(), backend.clone());
        let applier = Arc::new(Applier {
            mvcc: mvcc.clone(),
            lessor: lessor.clone(),
            alarms: alarms.clone(),
            backend: backend.clone(),
            auth: auth.clone(),
        });
        let (rev_tx, revision) = tokio::sync::watch::channel(mvcc.current_revision());
        let writer = Arc::new(Writer::new(applier, hub.clone(), rev_tx));
        let (member_id, cluster_id) = ids.unwrap_or_else(|| crate::cluster::ids(&cfg));
        let id_gen =
            std::sync::atomic::AtomicU64::new(id_generator_start(std::time::SystemTime::now()));
        Ok(Arc::new(Core {
            cfg,
            backend,
            mvcc,
            lessor,
            alarms,
            hub,
            writer,
            proposer: OnceLock::new(),
            member_id,
            cluster_id,
            metrics,
            auth,
            revision,
            id_gen,
        }))
    }

    /// Installs the member's proposer. Only once.
    pub(crate) fn install(&self, proposer: Arc<dyn Propose>) -> Result<()> {
        self.proposer
            .set(proposer)
            .map_err(|_| Error::InvalidArgument("the store already has a proposer".into()))
    }

    /// The member's proposer; before one is installed, one that answers `NoLeader`.
    pub(crate) fn proposer(&self) -> &dyn Propose {
        match self.proposer.get() {
            Some(p) => &**p,
            None => &NotStarted,
        }
    }

    /// Whether this member leads (keeps lease time, compacts).
    pub(crate) fn is_leader(&self) -> bool {
        self.proposer().is_leader()
    }

    /// The next ID from etcd's generator: the member ID's low 16 bits, then 40 bits of the
    /// start time in milliseconds and an 8-bit counter that carries into them. Lease IDs look
    /// like etcd's (`694d7e8f1c3a1a0b` on member `8e9e05c52164694d`) and never repeat.
    pub(crate) fn next_id(&self) -> u64 {
        const SUFFIX_BITS: u32 = 48;
        let suffix = self
            .id_gen
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        ((self.member_id & 0xffff) << SUFFIX_BITS) | (suffix & ((1 << SUFFIX_BITS) - 1))
    }

    /// A response header at `revision` (0 = the current revision).
    pub(crate) fn header(&self, revision: i64) -> Option<ResponseHeader> {
        let revision = if revision == 0 {
            self.mvcc.current_revision()
        } else {
            revision
        };
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            // A single member wins the election of term 2, as a fresh etcd member does.
            raft_term: self.proposer().status().map_or(2, |s| s.term),
        })
    }

    /// Fills a response header's member fields in place (apply sets only the revision).
    pub(crate) fn fill(&self, h: &mut Option<ResponseHeader>) {
        let rev = h.as_ref().map_or(0, |h| h.revision);
        *h = self.header(rev);
    }

    /// Validates size and quota, then proposes.
    ///
    /// The quota check is etcd's (`etcdserver/quota.go`): a Put, Txn or LeaseGrant is refused,
    /// and the NOSPACE alarm raised, once `backend size + cost >= quota`, where cost is 256 +
    /// key + value per put (a txn costs its costlier branch) and 64 per lease. While NOSPACE is
    /// raised, anything that adds data is refused (etcd's capped applier); reads, deletes,
    /// compaction and disarming go on, so space can be freed.
    pub(crate) async fn propose(&self, cmd: Command) -> Result<Response> {
        let size = cmd.encoded_len();
        if size > self.cfg.max_request_bytes {
            return Err(Error::RequestTooLarge);
        }
        if cmd.grows_data() && self.alarms.is_raised(AlarmType::Nospace) {
            return Err(Error::NoSpace);
        }
        if let Some(cost) = cmd.quota_cost() {
            if self.backend.size() + cost >= self.cfg.quota() {
                let raise = Command::Alarm(AlarmRequest {
                    action: AlarmAction::Activate as i32,
                    member_id: self.member_id,
                    alarm: AlarmType::Nospace as i32,
                });
                self.proposer().propose(raise).await?;
                return Err(Error::NoSpace);
            }
        }
        let counter = match &cmd {
            Command::Put(_) => Some(&self.metrics.puts),
            Command::DeleteRange(_) => Some(&self.metrics.deletes),
            Command::Txn(_) => Some(&self.metrics.txns),
            _ => None,
        };
        if let Some(c) = counter {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let r = self.proposer().propose(cmd).await;
        if matches!(r, Err(Error::Stopped)) {
            self.metrics
                .proposals_failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    /// The log index of the last applied (and durable) command: Status's raft index.
    pub(crate) fn applied_index(&self) -> u64 {
        use crate::keys::{meta_key, unframe_i64, META_CONSISTENT_INDEX};
        match self.backend.get(&meta_key(META_CONSISTENT_INDEX)) {
            Ok(Some(v)) => unframe_i64(&META_CONSISTENT_INDEX, &v).map_or(0, |i| i as u64),
            _ => 0,
        }
    }

    /// The raft term this member knows (1 for the single member, which always leads).
    pub(crate) fn raft_term(&self) -> u64 {
        self.proposer().status().map_or(1, |s| s.term)
    }

    /// This member leads: its lessor keeps lease time in the current term ([`Lessor::lead`]).
    /// Returns the term.
    pub(crate) fn lead_leases(&self) -> u64 {
        let term = self.raft_term();
        self.lessor.lead(self.cfg.election_timeout, term);
        term
    }

    /// Revokes expired leases through the log, every 500 ms while this member leads, until the
    /// core is dropped. A member that becomes leader first gives every lease a fresh deadline of
    /// its full TTL (etcd's `Promote`): the old leader's deadlines were never seen here.
    pub(crate) fn spawn_lease_expiry(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(core) = weak.upgrade() else { return };
                if !core.is_leader() {
                    core.lessor.follow();
                    continue;
                }
                let term = core.lead_leases();
                if core.lessor.expired(std::time::Instant::now()).is_empty() {
                    continue;
                }
                // A leader paused or cut off may still believe it leads while another member
                // kept lease time (etcd #15247): before revoking, confirm leadership with a
                // read-index round (a quorum acknowledges it now), in the same term, then
                // revoke only here, never forwarding a stale decision to another leader.
                if core.proposer().read_barrier().await.is_err() || core.raft_term() != term {
                    continue;
                }
                for id in core.lessor.expired(std::time::Instant::now()) {
                    tracing::debug!("lease {id:x} expired: revoking it as leader in term {term}");
                    match core
                        .proposer()
                        .propose_as_leader(Command::LeaseRevoke(LeaseRevokeRequest { id }))
                        .await
                    {
                        Ok(_) | Err(Error::LeaseNotFound) => {}
                        Err(e) => tracing::warn!("revoking expired lease {id:x}: {e}"),
                    }
                }
            }
        });
    }
}

/// Lease attachments are not stored: they are rebuilt from the live keys.
pub(crate) fn attach_leases(mvcc: &Mvcc, lessor: &Lessor) {
    let st = mvcc.state.read();
    for (k, ki) in st.tree.iter() {
        if let Some(kv) = ki.latest() {
            if kv.lease != 0 {
                lessor.reattach(k, 0, kv.lease);
            }
        }
    }
}

fn id_generator_start(now: std::time::SystemTime) -> u64 {
    let ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    (ms & ((1 << 40) - 1)) << 8
}

impl Command {
    /// etcd's quota cost (`quota.go`), for the commands the quota applies to.
    fn quota_cost(&self) -> Option<u64> {
        use keelson_proto::etcdserverpb::{request_op::Request, PutRequest, RequestOp};
        const KV_OVERHEAD: u64 = 256;
        const LEASE_OVERHEAD: u64 = 64;
        let put = |p: &PutRequest| KV_OVERHEAD + (p.key.len() + p.value.len()) as u64;
        let branch = |ops: &[RequestOp]| -> u64 {
            ops.iter()
                .map(|op| match &op.request {
                    Some(Request::RequestPut(p)) => put(p),
                    _ => 0,
                })
                .sum()
        };
        match self {
            Command::Put(p) => Some(put(p)),
            Command::Txn(t) => Some(branch(&t.success).max(branch(&t.failure))),
            Command::LeaseGrant(_) => Some(LEASE_OVERHEAD),
            _ => None,
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            Command::Put(r) => r.encoded_len(),
            Command::DeleteRange(r) => r.encoded_len(),
            Command::Txn(r) => r.encoded_len(),
            Command::Compact(r) => r.encoded_len(),
            Command::LeaseGrant(r) => r.encoded_len(),
            Command::LeaseRevoke(r) => r.encoded_len(),
            Command::Alarm(r) => r.encoded_len(),
            Command::Auth(c) => c.encoded_len(),
        }
    }
}
