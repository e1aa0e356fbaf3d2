//! Metrics: the counters and gauges `/metrics` exposes, under etcd's names where etcd has one.
//!
//! Counters are plain atomics bumped on the request path; gauges are read from the live state
//! when `/metrics` is scraped, so they can never drift from what they describe. The text is
//! Prometheus exposition format 0.0.4, which `etcdctl check datascale` and every Prometheus
//! scraper read.
//!
//! [`MeteredBackend`] wraps the member's backend. Besides timing commits (etcd's
//! `etcd_disk_backend_commit_duration_seconds`), it counts backend writes started and
//! finished: a reader that sees the same count before and after a scan knows no write landed
//! in between, which is how a snapshot gets a consistent copy of a backend that has no
//! snapshot reads of its own (`snapshot.rs`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::backend::{Backend, Pair, WriteBatch};
use crate::core::Core;
use crate::error::Result;
use crate::server::maintenance::{CLUSTER_VERSION, SERVER_VERSION};

/// Upper bounds of etcd's commit-duration buckets: 1 ms doubling up to 8.192 s.
const COMMIT_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) puts: AtomicU64,
    pub(crate) ranges: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) txns: AtomicU64,
    pub(crate) proposals_failed: AtomicU64,
    writes_started: AtomicU64,
    writes_finished: AtomicU64,
    /// Time spent in `write` since the last `flush`: a commit is write + flush.
    unflushed_nanos: AtomicU64,
    commit_buckets: [AtomicU64; COMMIT_BUCKETS.len()],
    commit_count: AtomicU64,
    commit_sum_nanos: AtomicU64,
}

impl Metrics {
    /// Counts a range served (etcd counts every range, including those inside txns).
    pub(crate) fn record_range(&self) {
        self.ranges.fetch_add(1, Ordering::Relaxed);
    }

    /// (backend writes started, finished). Read started first: if both are equal no write was
    /// in flight, and a later equal `started` proves none began since.
    pub(crate) fn write_epoch(&self) -> (u64, u64) {
        let started = self.writes_started.load(Ordering::SeqCst);
        let finished = self.writes_finished.load(Ordering::SeqCst);
        (started, finished)
    }

    pub(crate) fn writes_started(&self) -> u64 {
        self.writes_started.load(Ordering::SeqCst)
    }

    fn observe_commit(&self, nanos: u64) {
        let secs = nanos as f64 / 1e9;
        for (i, le) in COMMIT_BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.commit_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.commit_count.fetch_add(1, Ordering::Relaxed);
        self.commit_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// A [`Backend`] that counts and times what passes through it; see the module docs.
pub(crate) struct MeteredBackend {
    inner: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
}

impl MeteredBackend {
    pub(crate) fn new(inner: Arc<dyn Backend>, metrics: Arc<Metrics>) -> MeteredBackend {
        MeteredBackend { inner, metrics }
    }
}

impl Backend for MeteredBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }

    fn scan(&self, start: &[u8], end: &[u8]) -> Box<dyn Iterator<Item = Result<Pair>> + Send + '_> {
        self.inner.scan(start, end)
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.metrics.writes_started.fetch_add(1, Ordering::SeqCst);
        let t = Instant::now();
        let r = self.inner.write(batch);
        self.metrics
            .unflushed_nanos
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.metrics.writes_finished.fetch_add(1, Ordering::SeqCst);
        r
    }

    fn flush(&self) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.flush();
        let nanos =
            t.elapsed().as_nanos() as u64 + self.metrics.unflushed_nanos.swap(0, Ordering::Relaxed);
        self.metrics.observe_commit(nanos);
        r
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn size_in_use(&self) -> u64 {
        self.inner.size_in_use()
    }

    fn defragment(&self) -> Result<()> {
        self.inner.defragment()
    }
}

/// One metric family in exposition format.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn gauge(&mut self, name: &str, help: &str, v: impl std::fmt::Display) {
        self.head(name, "gauge", help);
        let _ = writeln!(self.out, "{name} {v}");
    }

    fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.head(name, "counter", help);
        let _ = writeln!(self.out, "{name} {v}");
    }
}

/// Renders every metric of this member.
pub(crate) fn render(core: &Core) -> String {
    let m = &core.metrics;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (current, compacted, keys) = {
        let st = core.mvcc.state.read();
        let live = st.tree.values().filter(|ki| ki.latest().is_some()).count();
        (st.current, st.compacted, live)
    };
    let applied = core.applied_index();
    let mut out = String::with_capacity(8192);
    let mut f = Family { out: &mut out };
    f.gauge(
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        1,
    );
    f.gauge(
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        1,
    );
    f.counter(
        "etcd_server_leader_changes_seen_total",
        "The number of leader changes seen.",
        1,
    );
    f.head(
        "etcd_server_id",
        "gauge",
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
    );
    let _ = writeln!(
        f.out,
        "etcd_server_id{{server_id=\"{:x}\"}} 1",
        core.member_id
    );
    f.head(
        "etcd_server_version",
        "gauge",
        "Which version is running. 1 for 'server_version' label with current version.",
    );
    let _ = writeln!(
        f.out,
        "etcd_server_version{{server_version=\"{SERVER_VERSION}\"}} 1"
    );
    f.head(
        "etcd_cluster_version",
        "gauge",
        "Which version is running. 1 for 'cluster_version' label with current cluster version",
    );
    let cluster_minor = CLUSTER_VERSION
        .rsplit_once('.')
        .map_or(CLUSTER_VERSION, |(mm, _)| mm);
    let _ = writeln!(
        f.out,
        "etcd_cluster_version{{cluster_version=\"{cluster_minor}\"}} 1"
    );
    f.gauge(
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed.",
        applied,
    );
    f.gauge(
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied.",
        applied,
    );
    f.gauge(
        "etcd_server_proposals_pending",
        "The current number of pending proposals to commit.",
        0,
    );
    f.counter(
        "etcd_server_proposals_failed_total",
        "The total number of failed proposals seen.",
        load(&m.proposals_failed),
    );
    f.gauge(
        "etcd_server_quota_backend_bytes",
        "Current backend storage quota size in bytes.",
        core.cfg.quota(),
    );
    f.gauge(
        "etcd_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes.",
        core.backend.size(),
    );
    f.gauge(
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "Total size of the underlying database logically in use in bytes.",
        core.backend.size_in_use(),
    );
    f.gauge(
        "etcd_debugging_mvcc_current_revision",
        "The current revision of store.",
        current,
    );
    f.gauge(
        "etcd_debugging_mvcc_compact_revision",
        "The revision of the last compaction in store.",
        compacted,
    );
    f.gauge(
        "etcd_debugging_mvcc_keys_total",
        "Total number of keys.",
        keys,
    );
    f.counter(
        "etcd_mvcc_put_total",
        "Total number of puts seen by this member.",
        load(&m.puts),
    );
    f.counter(
        "etcd_mvcc_range_total",
        "Total number of ranges seen by this member.",
        load(&m.ranges),
    );
    f.counter(
        "etcd_mvcc_delete_total",
        "Total number of deletes seen by this member.",
        load(&m.deletes),
    );
    f.counter(
        "etcd_mvcc_txn_total",
        "Total number of txns seen by this member.",
        load(&m.txns),
    );
    f.head(
        "etcd_disk_backend_commit_duration_seconds",
        "histogram",
        "The latency distributions of commit called by backend.",
    );
    for (i, le) in COMMIT_BUCKETS.iter().enumerate() {
        let _ = writeln!(
            f.out,
            "etcd_disk_backend_commit_duration_seconds_bucket{{le=\"{le}\"}} {}",
            load(&m.commit_buckets[i])
        );
    }
    let count = load(&m.commit_count);
    let _ = writeln!(
        f.out,
        "etcd_disk_backend_commit_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        f.out,
        "etcd_disk_backend_commit_duration_seconds_sum {}",
        load(&m.commit_sum_nanos) as f64 / 1e9
    );
    let _ = writeln!(
        f.out,
        "etcd_disk_backend_commit_duration_seconds_count {count}"
    );
    if let Some((rss, vsz)) = process_memory() {
        f.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            rss,
        );
        f.gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            vsz,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        f.gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            fds.count(),
        );
    }
    out
}

/// (resident, virtual) bytes from /proc/self/status, where the kernel reports them in kB.
fn process_memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmSize:")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemBackend;

    #[test]
    fn metered_backend_counts_writes_and_times_commits() {
        let m = Arc::new(Metrics::default());
        let b = MeteredBackend::new(Arc::new(MemBackend::default()), m.clone());
        assert_eq!(m.write_epoch(), (0, 0));
        let mut batch = WriteBatch::default();
        batch.put(b"k".to_vec(), b"v".to_vec());
        b.write(batch).unwrap();
        b.flush().unwrap();
        assert_eq!(m.write_epoch(), (1, 1));
        assert_eq!(m.commit_count.load(Ordering::Relaxed), 1);
        // A commit on an in-memory backend is far below the 8 s bucket.
        assert_eq!(
            m.commit_buckets[COMMIT_BUCKETS.len() - 1].load(Ordering::Relaxed),
            1
        );
        assert_eq!(b.get(b"k").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn process_memory_is_read_from_proc() {
        let (rss, vsz) = process_memory().expect("linux exposes /proc/self/status");
        assert!(rss > 0 && vsz >= rss);
    }
}
