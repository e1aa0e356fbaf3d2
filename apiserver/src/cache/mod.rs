//! The watch cache (upstream `storage/cacher`): one per resource type, holding the current
//! objects and a window of recent events, so that lists, gets and watches need not each go
//! to the store.
//!
//! ## How it is fed
//! One store watch per resource (`reflector`): a paged list at revision R, then an etcd
//! watch from R+1 with progress notifications; when the watch breaks the cache lists again
//! and every watcher of it is closed (clients re-watch or re-list). Everything goes through
//! the etcd v3 API, so the cache works the same on `keelson store` and on a real etcd.
//!
//! ## Invariants
//! - The cache's revision only grows while it is listed: every event at or below it has
//!   been applied and offered to every watcher. Events advance it; so do progress
//!   responses, but only when the store promises that a progress response follows every
//!   event at or below its revision.
//! - Which stores promise that is upstream's check (`etcdfeature` `RequestWatchProgress`):
//!   etcd ≥ 3.4.31, ≥ 3.5.13, or 3.6+ by `Status` version (keelson store reports 3.5.17).
//!   On an older store (Debian's etcd 3.4.23 answers a progress request ahead of pending
//!   events) only the periodic `progress_notify` of the watch itself, which travels with the
//!   events, advances the revision; consistent reads then go to the store as upstream does.
//! - An event at or below the cache's revision means the store broke that promise: the
//!   cache lists again rather than serve a state it cannot vouch for.
//! - Each event and each object is serialized once per watch-event form and shared as
//!   `Bytes` by every watcher (`event`); each watcher has a bounded queue and is closed when
//!   it cannot keep up (`watchers`).
//! - Reads follow upstream 1.32's `shouldDelegateList` and `Cacher.Get` (`read`): what the
//!   cache cannot answer exactly (continue, Exact, a legacy limit+resourceVersion) goes to
//!   the store; while a cache is not listed everything goes to the store.

mod event;
mod read;
mod reflector;
mod ring;
mod store;
mod watchers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};

pub(crate) use event::{Entry, Event, Kind};
pub(crate) use watchers::Msg;

use crate::error::{Error, Result};
use crate::etcd::Etcd;
use crate::keys;
use crate::resources::{self, ResourceDef};

/// How long a read waits for the cache to reach the revision it needs (`blockTimeout`).
const BLOCK_TIMEOUT: Duration = Duration::from_secs(3);
/// How often to ask for progress while someone waits (`ConditionalProgressRequester`).
const PROGRESS_WHILE_WAITING: Duration = Duration::from_millis(100);

/// The value of an exact `spec.nodeName=X` term in a pod field selector (upstream's
/// `RequiresExactMatch` on the index field); None for other resources or selectors.
pub(crate) fn exact_node_name(def: &ResourceDef, field_selector: Option<&str>) -> Option<String> {
    if def.resource != "pods" {
        return None;
    }
    field_selector?.split(',').find_map(|term| {
        if term.contains("!=") {
            return None;
        }
        let (f, v) = term.split_once("==").or_else(|| term.split_once('='))?;
        (f.trim() == "spec.nodeName").then(|| v.trim().to_string())
    })
}

/// Every resource's cache; dropping it stops them.
pub(crate) struct Caches {
    by_resource: HashMap<&'static str, Arc<Cacher>>,
    _stop: watch::Sender<bool>,
}

impl Caches {
    /// Starts a cache for every watchable resource.
    pub(crate) fn start(etcd: &Etcd) -> Caches {
        let (stop, stopped) = watch::channel(false);
        let reliable = Arc::new(AtomicBool::new(false));
        tokio::spawn(check_progress_support(
            etcd.clone(),
            reliable.clone(),
            stopped.clone(),
        ));
        let mut by_resource = HashMap::new();
        for def in resources::all()
            .iter()
            .filter(|d| d.verbs.contains(&"watch"))
        {
            by_resource.entry(def.resource).or_insert_with(|| {
                let c = Arc::new(Cacher::new(def.resource, reliable.clone()));
                tokio::spawn(reflector::run(c.clone(), etcd.clone(), stopped.clone()));
                c
            });
        }
        Caches {
            by_resource,
            _stop: stop,
        }
    }

    pub(crate) fn get(&self, def: &ResourceDef) -> Option<&Arc<Cacher>> {
        self.by_resource.get(def.resource)
    }

    /// Every cache has been listed.
    pub(crate) fn ready(&self) -> bool {
        self.by_resource.values().all(|c| c.is_ready())
    }
}

/// Asks every endpoint for its version until it answers (upstream
/// `DefaultFeatureSupportChecker`); until then progress responses are not trusted.
async fn check_progress_support(
    etcd: Etcd,
    reliable: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match etcd.server_versions().await {
            Ok(versions) => {
                let ok = !versions.is_empty() && versions.iter().all(|v| supports_progress(v));
                reliable.store(ok, Ordering::Release);
                tracing::info!(
                    "store versions {versions:?}: consistent reads from the watch cache {}",
                    if ok { "enabled" } else { "disabled" }
                );
                return;
            }
            Err(e) => tracing::debug!("store version check: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// etcd versions whose progress responses follow every earlier event: 3.4.31+, 3.5.13+,
/// 3.6+ (the versions kube-apiserver's `RequestWatchProgress` check demands).
fn supports_progress(version: &str) -> bool {
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    match (major, minor) {
        (3, 4) => patch >= 31,
        (3, 5) => patch >= 13,
        (3, m) => m >= 6,
        (m, _) => m > 3,
    }
}

/// The mutable part of a cache, behind one lock.
pub(crate) struct State {
    pub(crate) ready: bool,
    pub(crate) rev: i64,
    /// `rev` came from a progress response, not an event.
    pub(crate) rev_from_progress: bool,
    pub(crate) store: store::Store,
    pub(crate) ring: ring::Ring<Arc<Event>>,
    pub(crate) watchers: watchers::Watchers,
}

/// The cache of one resource.
pub(crate) struct Cacher {
    pub(crate) resource: &'static str,
    /// `/registry/<resource>/`.
    pub(crate) prefix: String,
    state: RwLock<State>,
    /// The cache's revision, for readers waiting for it to grow.
    rev: watch::Sender<i64>,
    /// Readers waiting for freshness; while any, the reflector asks for progress.
    waiting: AtomicUsize,
    progress_wanted: Notify,
    reliable: Arc<AtomicBool>,
}

impl Cacher {
    fn new(resource: &'static str, reliable: Arc<AtomicBool>) -> Cacher {
        Cacher {
            resource,
            prefix: keys::list_prefix(resource, None),
            state: RwLock::new(State {
                ready: false,
                rev: 0,
                rev_from_progress: false,
                store: store::Store::default(),
                ring: ring::Ring::new(),
                watchers: watchers::Watchers::default(),
            }),
            rev: watch::channel(0).0,
            waiting: AtomicUsize::new(0),
            progress_wanted: Notify::new(),
            reliable,
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The store's progress responses can be trusted (see the module doc).
    pub(crate) fn reliable(&self) -> bool {
        self.reliable.load(Ordering::Acquire)
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.read().ready
    }

    /// The cache's revision.
    pub(crate) fn revision(&self) -> i64 {
        *self.rev.borrow()
    }

    fn publish(&self, rev: i64) {
        self.rev.send_replace(rev);
    }

    /// Waits (up to 3 s, asking the store for progress) until the cache has reached `min`;
    /// then "Too large resource version" (upstream `waitUntilFreshAndBlock`).
    pub(crate) async fn wait_fresh(&self, min: i64) -> Result<()> {
        let mut rx = self.rev.subscribe();
        if *rx.borrow() >= min {
            return Ok(());
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.progress_wanted.notify_one();
        let r = tokio::time::timeout(BLOCK_TIMEOUT, rx.wait_for(|r| *r >= min)).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match r {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::TooLargeResourceVersion {
                requested: min,
                current: self.revision(),
            }),
        }
    }

    /// The revision below which a watch cannot be served from history.
    pub(crate) fn floor(&self) -> i64 {
        self.read().ring.floor()
    }

    /// Registers a watcher. `after`: None to start from the current state (the returned
    /// objects), Some(rv) for the events after rv. None when the cache is not listed.
    pub(crate) fn register(self: &Arc<Self>, want: &Want<'_>) -> Result<Option<Registration>> {
        let mut st = self.write();
        if !st.ready {
            return Ok(None);
        }
        let index: Option<Arc<str>> = want.node.map(Arc::from);
        let (initial, from_rev) = match want.after {
            None => {
                let objects: Vec<Arc<Entry>> = match &index {
                    Some(v) => st.store.indexed(v, want.prefix).cloned().collect(),
                    None => st.store.with_prefix(want.prefix).cloned().collect(),
                };
                (Initial::Objects(objects), st.rev)
            }
            Some(rv) => {
                let events = st.ring.since(rv).map_err(|floor| Error::Expired {
                    message: format!("too old resource version: {rv} ({floor})"),
                    continue_token: None,
                })?;
                (Initial::Events(events), rv.max(st.rev))
            }
        };
        let queue =
            watchers::queue_size(st.ring.capacity(), self.resource == "pods", index.is_some());
        let id = st.watchers.next_id();
        let (w, rx) = watchers::Watcher::new(
            id,
            index.clone(),
            from_rev,
            queue,
            want.bookmarks,
            want.deadline,
        );
        st.watchers.add(Arc::new(w));
        Ok(Some(Registration {
            initial,
            snapshot_rev: st.rev,
            from_rev,
            rx,
            _guard: Guard {
                cacher: self.clone(),
                id,
                index,
            },
        }))
    }
}

/// What a watch asks of the cache.
pub(crate) struct Want<'a> {
    /// Key prefix (the resource's, or one namespace's).
    pub(crate) prefix: &'a str,
    /// An exact `spec.nodeName` (pods only).
    pub(crate) node: Option<&'a str>,
    pub(crate) after: Option<i64>,
    pub(crate) bookmarks: bool,
    pub(crate) deadline: tokio::time::Instant,
}

/// What a watcher sends before its queue.
pub(crate) enum Initial {
    /// The current objects (to be sent as ADDED).
    Objects(Vec<Arc<Entry>>),
    /// The history after the requested revision.
    Events(Vec<Arc<Event>>),
}

/// A registered watcher; dropping it unregisters.
pub(crate) struct Registration {
    pub(crate) initial: Initial,
    /// The cache's revision when the initial state was taken.
    pub(crate) snapshot_rev: i64,
    /// Queued events at or below this were already covered by `initial`.
    pub(crate) from_rev: i64,
    pub(crate) rx: mpsc::Receiver<Msg>,
    _guard: Guard,
}

struct Guard {
    cacher: Arc<Cacher>,
    id: u64,
    index: Option<Arc<str>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.cacher
            .write()
            .watchers
            .remove(self.id, self.index.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_support_by_version() {
        for (v, ok) in [
            ("3.4.23", false),
            ("3.4.31", true),
            ("3.5.12", false),
            ("3.5.13", true),
            ("3.5.17", true),
            ("3.6.0", true),
            ("3.3.25", false),
            ("junk", false),
        ] {
            assert_eq!(supports_progress(v), ok, "{v}");
        }
    }

    #[test]
    fn exact_node_names() {
        let pods = resources::find("", "v1", "pods").unwrap();
        let cms = resources::find("", "v1", "configmaps").unwrap();
        let n = |d, s| exact_node_name(d, Some(s));
        assert_eq!(n(pods, "spec.nodeName=n1").as_deref(), Some("n1"));
        assert_eq!(
            n(pods, "status.phase=Running,spec.nodeName==n2").as_deref(),
            Some("n2")
        );
        assert_eq!(n(pods, "spec.nodeName=").as_deref(), Some(""));
        assert_eq!(n(pods, "spec.nodeName!=n1"), None);
        assert_eq!(n(pods, "metadata.name=x"), None);
        assert_eq!(n(cms, "spec.nodeName=n1"), None);
        assert_eq!(exact_node_name(pods, None), None);
    }
}
