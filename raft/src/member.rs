//! Starting a replicated member: the store's [`Replica`] as openraft's state machine, the
//! durable log, the peer server and the proposer, wired together from etcd's flags.
//!
//! - Member IDs are etcd's (`keelson_store::member_id`: sha1 of the member's peer URLs and the
//!   cluster token), so every member derives the same IDs from the same `--initial-cluster`.
//! - A member added to a running cluster (`--initial-cluster-state existing`) learns its ID
//!   from the cluster before it starts (`join.rs`), never initializes raft, and waits for the
//!   leader to replicate to it.
//! - Bootstrap: with `--initial-cluster-state new`, a member whose log is empty initializes
//!   raft with the whole initial membership. Every member does so with the *same* membership
//!   (names and peer URLs only; client URLs are published later by each member), which
//!   openraft allows: identical initial configs cannot split the cluster. A member whose log
//!   already holds entries (a restart) does nothing: the log knows the membership.
//! - Data layout, as etcd's: `DIR/member/snap/db` the store, `DIR/member/wal` the raft log.
//! - Timing follows etcd's flags: heartbeats every `--heartbeat-interval`, elections after a
//!   random timeout in `[--election-timeout, 1.5 × --election-timeout)` (see `start`), pre-vote on (so a
//!   partitioned member rejoining does not depose a healthy leader), a snapshot every
//!   `--snapshot-count` entries keeping the last 5000 (etcd's catch-up entries) for slow
//!   followers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keelson_store::{ApplyResponse, Command, Propose, Replica, Store, UnstartedStore};
use openraft::{Config, Raft, SnapshotPolicy};
use tokio::net::TcpListener;

use crate::leader::LeaseClock;
use crate::log::LogStore;
use crate::network::{PeerConfig, PeerNetwork};
use crate::peer_service::{serve_peers, PeerService};
use crate::proposer::{RaftProposer, ReadOptions};
use crate::state_machine::{Apply, StateMachine};
use crate::types::{Member, TypeConfig};

/// The raft of a member whose state machine is the store.
pub type StoreRaft = Raft<TypeConfig, StateMachine<Replica>>;

/// Entries kept in the log after a snapshot, so a briefly lagging follower catches up from the
/// log rather than by a whole snapshot (etcd's `SnapshotCatchUpEntries`).
const CATCH_UP_ENTRIES: u64 = 5000;

impl Apply for Replica {
    fn apply(
        &self,
        commands: Vec<(u64, Command)>,
        applied: Vec<u8>,
    ) -> keelson_store::Result<Vec<keelson_store::Result<ApplyResponse>>> {
        self.apply_batch(commands, applied)
    }

    fn applied(&self) -> keelson_store::Result<Option<Vec<u8>>> {
        self.raft_applied()
    }

    fn snapshot(&self) -> keelson_store::Result<(Option<Vec<u8>>, Vec<u8>)> {
        Replica::snapshot(self)
    }

    fn restore(&self, snapshot: &[u8]) -> keelson_store::Result<()> {
        Replica::restore(self, snapshot)
    }

    fn flush(&self) -> keelson_store::Result<()> {
        Replica::flush(self)
    }
}

impl LeaseClock for Replica {
    fn renew(&self, id: i64) -> keelson_store::Result<i64> {
        self.renew_lease(id)
    }

    fn time_to_live(&self, id: i64) -> keelson_store::Result<keelson_store::LeaseStatus> {
        self.lease_time_to_live(id)
    }
}

/// What a replicated member is started with (etcd's flags).
pub struct MemberOptions {
    /// `--name`
    pub name: String,
    /// `--data-dir`
    pub data_dir: PathBuf,
    /// `--initial-cluster` as (name, peer URL) pairs.
    pub initial_cluster: Vec<(String, String)>,
    /// `--initial-cluster-state new`
    pub new_cluster: bool,
    /// `--initial-cluster-token`
    pub token: String,
    /// `--listen-peer-urls`
    pub listen_peer_urls: Vec<String>,
    /// `--advertise-client-urls`
    pub advertise_client_urls: Vec<String>,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    /// `--snapshot-count`
    pub snapshot_count: u64,
    /// `--max-request-bytes`: the largest command, which a raft message must hold.
    pub max_request_bytes: usize,
    /// `--experimental-lease-read`
    pub lease_read: bool,
    /// `--experimental-initial-corrupt-check` (`corrupt.rs`)
    pub initial_corrupt_check: bool,
}

/// A started member's raft side: what must be stopped after the store stops serving.
pub struct RaftHandle {
    pub raft: StoreRaft,
    /// This member's ID.
    pub id: u64,
    cluster_id: u64,
    peer_stop: tokio::sync::watch::Sender<bool>,
    peer_servers: Vec<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    /// The store, fsynced once raft has stopped.
    replica: keelson_store::Replica,
}

impl RaftHandle {
    /// Resolves once this member has been removed from the cluster (`removed.rs`); never if
    /// raft stops first.
    pub fn removed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        crate::removed::removed(self.raft.clone(), self.id, self.cluster_id)
    }

    /// Stops raft and the peer servers (after the store stopped serving clients).
    pub async fn shutdown(self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        // The applied state is fsynced lazily (the log is the durable record); a member that
        // stops cleanly leaves it complete, so it restarts with nothing to re-apply.
        let replica = self.replica;
        match tokio::task::spawn_blocking(move || replica.flush()).await {
            Ok(Err(e)) => tracing::warn!("fsyncing the store at shutdown: {e}"),
            Err(e) => tracing::warn!("fsyncing the store at shutdown: {e}"),
            Ok(Ok(())) => {}
        }
        let _ = self.peer_stop.send(true);
        for s in self.peer_servers {
            let _ = s.await;
        }
    }
}

/// Waits until this member, restarted on its data, has applied everything committed before it
/// came back: a read index from the leader, applied here. Its store is fsynced lazily, so after a
/// crash it may be behind what it served before; as etcd's member serves clients only once its
/// own log has caught up (its publish is applied), this one serves only from here on. Retries
/// while there is no leader, for as long as that lasts (etcd's member waits too).
async fn caught_up<P: Propose>(proposer: &P) {
    let started = tokio::time::Instant::now();
    let mut warned = false;
    loop {
        match proposer.read_barrier().await {
            Ok(()) => return,
            Err(e) => {
                if !warned && started.elapsed() > std::time::Duration::from_secs(10) {
                    tracing::warn!("not serving clients yet: catching up with the cluster: {e}");
                    warned = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// The initial membership from `--initial-cluster`: IDs derived as etcd derives them.
pub fn initial_members(cluster: &[(String, String)], token: &str) -> BTreeMap<u64, Member> {
    let mut by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, url) in cluster {
        by_name.entry(name).or_default().push(url.clone());
    }
    by_name
        .into_iter()
        .map(|(name, peer_urls)| {
            let id = keelson_store::member_id(&peer_urls, token);
            let member = Member {
                name: name.to_string(),
                peer_urls,
                client_urls: Vec::new(),
            };
            (id, member)
        })
        .collect()
}

/// Binds `http://host:port` peer URLs.
async fn bind_peers(urls: &[String]) -> std::io::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for u in urls {
        let addr = u
            .strip_prefix("http://")
            .ok_or_else(|| {
                std::io::Error::other(format!("peer URL {u}: only http:// is supported"))
            })?
            .trim_end_matches('/');
        out.push(
            TcpListener::bind(addr)
                .await
                .map_err(|e| std::io::Error::other(format!("binding peer URL {u}: {e}")))?,
        );
    }
    Ok(out)
}

/// Starts raft over `unstarted`'s store, serves the peer URLs, bootstraps a new cluster and
/// installs the proposer. The returned store is ready to serve clients.
pub async fn start(
    unstarted: UnstartedStore,
    opts: MemberOptions,
) -> Result<(Store, RaftHandle), Box<dyn std::error::Error + Send + Sync>> {
    let members = initial_members(&opts.initial_cluster, &opts.token);
    if !members.values().any(|m| m.name == opts.name) {
        return Err(format!("--name {} is not in --initial-cluster", opts.name).into());
    }
    // Derived from `--initial-cluster`, or learned from the cluster by a member added to it
    // (`join.rs`); the store was opened with it.
    let id = unstarted.member_id();
    let cluster_id = unstarted.cluster_id();
    let et = opts.election_timeout.as_millis() as u64;
    let config = Config {
        cluster_name: "keelson".into(),
        heartbeat_interval: opts.heartbeat_interval.as_millis() as u64,
        election_timeout_min: et,
        // Not etcd's [t, 2t): openraft's followers refuse votes until `election_timeout_max`
        // after the last heartbeat (its leader lease), so the first candidate, timing out
        // before that, is usually refused and the election takes a second timeout. With
        // [t, 1.25t) a leader's failure is repaired within about 2.5t (two timeouts), inside
        // etcd's bound of three election timeouts with room for a loaded machine; the quarter-t
        // spread, with pre-vote, still keeps split votes rare among a handful of members.
        election_timeout_max: et + (et / 4).max(1),
        install_snapshot_timeout: 60_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_count.max(1)),
        max_in_snapshot_log_to_keep: CATCH_UP_ENTRIES.min(opts.snapshot_count),
        enable_pre_vote: Some(true),
        // A follower whose disk lost acknowledged entries (it refuses to start on a damaged
        // record, but a disk can lie about fsync) is brought back in line by the leader, as
        // etcd's leader does by lowering its next index, rather than stopping the leader.
        allow_log_reversion: Some(true),
        ..Default::default()
    };
    let config = Arc::new(config.validate()?);
    let peer = PeerConfig {
        max_message_bytes: (64usize << 20).max(2 * opts.max_request_bytes + (64 << 10)),
        snapshot_timeout: Duration::from_secs(300),
        ..Default::default()
    };
    let listeners = bind_peers(&opts.listen_peer_urls).await?;
    let log = LogStore::open(opts.data_dir.join("member").join("wal")).await?;
    let replica = Arc::new(unstarted.replica());
    let hashes = unstarted.replica();
    let flusher = unstarted.replica();
    let leases: Arc<dyn LeaseClock> = replica.clone();
    let sm = StateMachine::new(replica).await?;
    let applied = sm.applied_index();
    let removed = sm.removed_members();
    let raft = Raft::new(id, config, PeerNetwork::new(id, peer.clone()), log, sm).await?;
    let had_data = raft.is_initialized().await?;

    // Before this member serves peers or clients, as etcd's (only a member with data).
    if opts.initial_corrupt_check && raft.is_initialized().await? {
        if let Err(e) = crate::corrupt::check(&raft, hashes, id).await {
            let _ = raft.shutdown().await;
            return Err(e.into());
        }
    }

    let (peer_stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut peer_servers = Vec::new();
    for l in listeners {
        tracing::info!(member = %format!("{id:x}"), "serving peer requests on {:?}", l.local_addr());
        let service = PeerService::new(raft.clone(), id, peer.clone())
            .with_leases(leases.clone())
            .with_removed(removed.clone())
            .with_cluster_id(cluster_id);
        let mut rx = stop_rx.clone();
        peer_servers.push(tokio::spawn(serve_peers(service, l, async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })));
    }

    if opts.new_cluster && !raft.is_initialized().await? {
        tracing::info!(
            "bootstrapping a new cluster of {} members: {:x?}",
            members.len(),
            members.keys().collect::<Vec<_>>()
        );
        if let Err(e) = raft.initialize(members).await {
            // Another member's identical initialization reached us first.
            tracing::info!("initialize: {e}");
        }
    }

    let proposer = RaftProposer::new(
        raft.clone(),
        applied,
        id,
        peer,
        opts.election_timeout,
        opts.heartbeat_interval,
        ReadOptions {
            leases,
            lease_read: opts.lease_read,
        },
    );
    let me = Member {
        name: opts.name.clone(),
        peer_urls: opts
            .initial_cluster
            .iter()
            .filter(|(n, _)| *n == opts.name)
            .map(|(_, u)| u.clone())
            .collect(),
        client_urls: opts.advertise_client_urls.clone(),
    };
    let publisher = proposer.clone();
    tokio::spawn(async move { publisher.publish(me).await });
    if had_data {
        // A member removed meanwhile never catches up (its peers refuse it): it goes on to
        // serve nothing and stop, as the caller does once `RaftHandle::removed` resolves.
        tokio::select! {
            _ = caught_up(&proposer) => {}
            _ = crate::removed::removed(raft.clone(), id, cluster_id) => {}
        }
    }
    let store = unstarted.start(Arc::new(proposer));
    Ok((
        store,
        RaftHandle {
            raft,
            id,
            cluster_id,
            peer_stop,
            peer_servers,
            replica: flusher,
        },
    ))
}
