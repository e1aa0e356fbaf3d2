//! # keelson-store: an etcd v3 member
//!
//! This crate is the store layer of Keelson: the MVCC revision layer, leases, alarms, the watch
//! hub and the etcd v3 gRPC services, over a durable backend.
//!
//! A write travels: gRPC service (validate, size and quota limits) → the member's [`Propose`]r
//! (a single member's group-commit thread, [`Store::open`]; or the raft log, installed by the
//! raft crate through [`Store::open_replicated`], whose committed entries come back through
//! [`Replica`]) → [`apply`] in log order (assign a revision, update the in-memory key index,
//! collect backend records) → one atomic backend batch with the applied log index, fsynced →
//! the revision is published to readers and the events to the watch hub → the proposer is
//! answered.
//!
//! Invariants the whole crate keeps:
//! - nothing is acknowledged or visible before it is durable;
//! - apply is deterministic, and the applied index is stored atomically with the data it made;
//! - every backend record carries a crc32 that is checked on every read (`keys.rs`);
//! - client-visible errors carry etcd's exact gRPC code and message (`error.rs`).

mod alarm;
mod apply;
mod auth;
mod backend;
mod cluster;
mod compactor;
mod config;
mod core;
mod error;
mod http;
mod keys;
mod lease;
mod metrics;
mod mvcc;
mod node;
mod replica;
mod server;
mod snapshot;
mod watch;

/// Handles on internals for the criterion benches in `store/benches/`. **Not a public API**:
/// hidden from the docs, unstable, for the benches only.
#[doc(hidden)]
pub mod bench_internals;

use std::net::SocketAddr;
use std::sync::Arc;

pub use apply::{Command, Response as ApplyResponse};
pub use backend::{Backend, MemBackend, SledBackend, WriteBatch};
pub use cluster::{added_member_id, member_id};
pub use config::{CompactionMode, StoreConfig};
pub use error::{Error, Result};
pub use lease::LeaseStatus;
pub use mvcc::Revision;
pub use node::{MemberChange, MemberInfo, Propose, RaftStatus};
pub use replica::Replica;
pub use snapshot::{restore_snapshot, RestoreOptions, RestoreSummary};

/// How long shutdown waits for open client streams before closing them.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A member opened by [`Store::open_replicated`]: its data is loaded and its URLs are bound, but
/// it has no proposer yet, so it cannot be written to or served.
pub struct UnstartedStore {
    store: Store,
}

impl UnstartedStore {
    /// The handle through which the replicated log applies its entries, restores snapshots and
    /// takes them. It keeps the store's state alive as long as it is held.
    pub fn replica(&self) -> Replica {
        Replica::new(self.store.core.clone())
    }

    /// The addresses the client URLs are bound to.
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.store.client_addrs()
    }

    /// This member's ID.
    pub fn member_id(&self) -> u64 {
        self.store.core.member_id
    }

    /// The cluster's ID.
    pub fn cluster_id(&self) -> u64 {
        self.store.core.cluster_id
    }

    /// Installs the member's proposer; the store can then be served.
    pub fn start(self, proposer: Arc<dyn Propose>) -> Store {
        self.store
            .core
            .install(proposer)
            .expect("an unstarted store has no proposer yet");
        self.store
    }
}

/// A running member.
pub struct Store {
    core: Arc<core::Core>,
    listeners: Vec<tokio::net::TcpListener>,
    metrics_listeners: Vec<tokio::net::TcpListener>,
}

impl Store {
    /// Opens the member's data (or an in-memory store without `data_dir`) and binds its client
    /// URLs. Must be called inside a tokio runtime.
    pub async fn open(cfg: StoreConfig) -> Result<Store> {
        let listeners = server::bind(&cfg.listen_client_urls).await?;
        let metrics_listeners = server::bind(&cfg.listen_metrics_urls).await?;
        compactor::Policy::from_config(&cfg)?;
        let core = core::Core::open(cfg)?;
        Ok(Store {
            core,
            listeners,
            metrics_listeners,
        })
    }

    /// Opens a member whose writes go through a replicated log: as [`Store::open`], but without
    /// a proposer. The raft crate builds its state machine over [`UnstartedStore::replica`],
    /// then installs its proposer with [`UnstartedStore::start`] before serving. Must be called
    /// inside a tokio runtime.
    pub async fn open_replicated(cfg: StoreConfig) -> Result<UnstartedStore> {
        Self::open_replicated_as(cfg, None).await
    }

    /// As [`Store::open_replicated`], with this member's ID and the cluster's ID as
    /// `(member, cluster)` when they are not the ones derived from `--initial-cluster` (a
    /// member added to a running cluster learns them from the cluster, as etcd's does).
    pub async fn open_replicated_as(
        cfg: StoreConfig,
        ids: Option<(u64, u64)>,
    ) -> Result<UnstartedStore> {
        let listeners = server::bind(&cfg.listen_client_urls).await?;
        let metrics_listeners = server::bind(&cfg.listen_metrics_urls).await?;
        compactor::Policy::from_config(&cfg)?;
        let backend = core::Core::open_backend(&cfg)?;
        let core = core::Core::load_as(cfg, backend, ids)?;
        Ok(UnstartedStore {
            store: Store {
                core,
                listeners,
                metrics_listeners,
            },
        })
    }

    /// The addresses the client URLs are bound to.
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The addresses the metrics URLs are bound to.
    pub fn metrics_addrs(&self) -> Vec<SocketAddr> {
        self.metrics_listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        self.core.spawn_lease_expiry();
        compactor::spawn(&self.core)?;
        let (tx, _) = tokio::sync::broadcast::channel::<()>(1);
        let mut tasks = Vec::new();
        for l in self.listeners {
            let mut rx = tx.subscribe();
            let core = self.core.clone();
            tasks.push(tokio::spawn(server::serve(core, l, async move {
                let _ = rx.recv().await;
            })));
        }
        for l in self.metrics_listeners {
            let mut rx = tx.subscribe();
            tasks.push(tokio::spawn(server::serve_metrics(
                self.core.clone(),
                l,
                async move {
                    let _ = rx.recv().await;
                },
            )));
        }
        shutdown.await;
        let _ = tx.send(());
        // Graceful first: in-flight requests finish and open streams are told to stop. A client
        // that keeps a stream open (a lease keep-alive, a watch) must not hold the member up
        // forever, so after the grace period whatever is left is aborted and its connections
        // dropped, as etcd force-closes after its own grace period.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        let mut result = Ok(());
        for mut t in tasks {
            match tokio::time::timeout_at(deadline, &mut t).await {
                Ok(joined) => {
                    let r = joined.map_err(|e| Error::Io(e.to_string())).and_then(|r| r);
                    if result.is_ok() {
                        result = r;
                    }
                }
                Err(_) => {
                    tracing::warn!("streams still open after {SHUTDOWN_GRACE:?}; closing them");
                    t.abort();
                }
            }
        }
        result
    }
}
