//! A member's configuration, with etcd's flag names and defaults.

use std::path::PathBuf;
use std::time::Duration;

/// How automatic compaction chooses what to compact (etcd's `--auto-compaction-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionMode {
    Periodic,
    Revision,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `--name`
    pub name: String,
    /// `--data-dir`; `None` keeps everything in memory (tests).
    pub data_dir: Option<PathBuf>,
    /// `--listen-client-urls` (http://host:port; port 0 picks a free one)
    pub listen_client_urls: Vec<String>,
    /// `--advertise-client-urls`
    pub advertise_client_urls: Vec<String>,
    /// `--listen-peer-urls`
    pub listen_peer_urls: Vec<String>,
    /// `--initial-advertise-peer-urls`
    pub initial_advertise_peer_urls: Vec<String>,
    /// `--initial-cluster` as (name, peer URL) pairs
    pub initial_cluster: Vec<(String, String)>,
    /// `--initial-cluster-state` (`new` or `existing`)
    pub initial_cluster_state: String,
    /// `--initial-cluster-token`
    pub initial_cluster_token: String,
    /// `--max-request-bytes`
    pub max_request_bytes: usize,
    /// `--max-txn-ops`
    pub max_txn_ops: usize,
    /// `--quota-backend-bytes` (0 = the 2 GiB default)
    pub quota_backend_bytes: u64,
    /// `--auto-compaction-mode`
    pub auto_compaction_mode: CompactionMode,
    /// `--auto-compaction-retention` as given ("0" = off; hours or a duration in periodic mode,
    /// a revision count in revision mode)
    pub auto_compaction_retention: String,
    /// `--listen-metrics-urls`
    pub listen_metrics_urls: Vec<String>,
    /// `--election-timeout`
    pub election_timeout: Duration,
    /// `--heartbeat-interval`
    pub heartbeat_interval: Duration,
    /// `--snapshot-count`: committed entries between two raft snapshots
    pub snapshot_count: u64,
    /// `--experimental-lease-read`: the leader answers linearizable reads from its leader lease
    /// (no quorum round while a quorum acknowledged it within the lease) instead of ReadIndex.
    /// Faster, but correct only while clocks run at about the same rate on every member.
    pub experimental_lease_read: bool,
    /// `--experimental-initial-corrupt-check`: a replicated member with data compares its
    /// HashKV with its peers' before serving, and refuses to start on a mismatch.
    pub experimental_initial_corrupt_check: bool,
}

/// etcd's default quota when `--quota-backend-bytes` is 0.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            name: "default".into(),
            data_dir: None,
            listen_client_urls: vec!["http://localhost:2379".into()],
            advertise_client_urls: vec!["http://localhost:2379".into()],
            listen_peer_urls: vec!["http://localhost:2380".into()],
            initial_advertise_peer_urls: vec!["http://localhost:2380".into()],
            initial_cluster: vec![("default".into(), "http://localhost:2380".into())],
            initial_cluster_state: "new".into(),
            initial_cluster_token: "etcd-cluster".into(),
            max_request_bytes: 1572864,
            max_txn_ops: 128,
            quota_backend_bytes: 0,
            auto_compaction_mode: CompactionMode::Periodic,
            auto_compaction_retention: "0".into(),
            listen_metrics_urls: vec![],
            election_timeout: Duration::from_millis(1000),
            heartbeat_interval: Duration::from_millis(100),
            snapshot_count: 100_000,
            experimental_lease_read: false,
            experimental_initial_corrupt_check: false,
        }
    }
}

impl StoreConfig {
    /// The effective backend quota.
    pub fn quota(&self) -> u64 {
        if self.quota_backend_bytes == 0 {
            DEFAULT_QUOTA_BYTES
        } else {
            self.quota_backend_bytes
        }
    }

    /// etcd's minimum lease TTL: ceil(1.5 × election timeout) in seconds.
    pub fn min_lease_ttl(&self) -> i64 {
        let ms = self.election_timeout.as_millis() as i64;
        (3 * ms + 1999) / 2000
    }
}
