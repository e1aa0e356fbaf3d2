//! Clusters of real `keelson store` processes on loopback, driven with etcd-client.
//!
//! A [`Member`] is one named member: its client URL, the peer URL it advertises (which the
//! faults test points at a proxy) and the one it listens on, its data dir and its log file
//! (stdout and stderr, appended across restarts so a crash leaves its trace). Its process is
//! killed with SIGKILL when the member is dropped or [`Member::kill9`]ed; restarting it reuses
//! the data dir. A [`Cluster`] is a temp dir holding members named `m0`.. (data in
//! `<dir>/<name>`, log in `<dir>/<name>.log`) with the same timing flags for all.
//!
//! Everything awaited is awaited through the members' answers (Status has no push form, so
//! polling it is the event to await), each bounded by [`PATIENCE`] so a hang fails the test
//! instead of blocking the suite.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::proc::{free_ports, ChildGuard};

pub const ELECTION_MS: u64 = 500;
pub const HEARTBEAT_MS: u64 = 50;
/// Bound on anything a test waits for, so a hang fails instead of blocking the suite.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// etcd-client options: a short connect timeout (a member may still be starting) and
/// `timeout` per request.
pub fn connect_opts(timeout: Duration) -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(timeout)
}

/// The last 30 lines of a log file (empty if there is none yet).
pub fn log_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// What a member must answer before [`Member::ready`] hands out its client.
#[derive(Clone, Copy, Debug)]
pub enum Probe {
    /// Maintenance.Status (raft is up; a cluster member may not have a leader yet).
    Status,
    /// A range read of a key nobody writes (the KV service serves).
    Get,
}

/// Why [`Member::ready`] gave up.
#[derive(Debug)]
pub enum NotReady {
    /// The process exited (its status); the log says why.
    Exited(ExitStatus),
    /// It was still running but did not answer within [`PATIENCE`].
    TimedOut,
}

/// One `keelson store` member (see the module docs).
pub struct Member {
    pub name: String,
    pub client_url: String,
    /// The peer URL in `--initial-advertise-peer-urls` and the initial cluster.
    pub peer_url: String,
    /// The peer URL in `--listen-peer-urls`.
    pub listen_peer_url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    proc: Option<ChildGuard>,
}

impl Member {
    /// A member (not started) on two fresh loopback ports.
    pub fn new(name: &str, data_dir: &Path, log: &Path) -> Member {
        let p = free_ports(2);
        let peer_url = format!("http://127.0.0.1:{}", p[1]);
        Member {
            name: name.to_string(),
            client_url: format!("http://127.0.0.1:{}", p[0]),
            listen_peer_url: peer_url.clone(),
            peer_url,
            data_dir: data_dir.to_path_buf(),
            log: log.to_path_buf(),
            proc: None,
        }
    }

    /// `127.0.0.1:<client port>`, as etcd-client and etcdctl take it.
    pub fn endpoint(&self) -> String {
        self.client_url.trim_start_matches("http://").to_string()
    }

    /// `<name>=<advertised peer URL>`, an `--initial-cluster` entry.
    pub fn initial_entry(&self) -> String {
        format!("{}={}", self.name, self.peer_url)
    }

    /// Starts the process with etcd's flags for this member, `--initial-cluster
    /// initial_cluster`, `--initial-cluster-state state` if given, then `flags`. The
    /// environment's `ETCD_*` variables (which etcd reads as flags) are removed, and
    /// `RUST_LOG` too unless `keep_rust_log` (a test that reads the log needs its default
    /// level). Returns the process ID.
    pub fn start(
        &mut self,
        initial_cluster: &str,
        state: Option<&str>,
        flags: &[String],
        keep_rust_log: bool,
    ) -> u32 {
        assert!(self.proc.is_none(), "{} is already running", self.name);
        let out = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keelson"));
        cmd.arg("store")
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.listen_peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", initial_cluster]);
        if let Some(state) = state {
            cmd.args(["--initial-cluster-state", state]);
        }
        cmd.args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") || (!keep_rust_log && k == "RUST_LOG") {
                cmd.env_remove(k);
            }
        }
        let child = cmd.spawn().expect("spawn keelson store");
        let pid = child.id();
        self.proc = Some(ChildGuard::new(child));
        pid
    }

    /// SIGKILL and reap; the member must be running.
    pub fn kill9(&mut self) {
        let mut p = self.proc.take().expect("member running");
        assert!(p.id().is_some(), "{} was already reaped", self.name);
        p.kill();
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the running process.
    pub fn signal(&self, signal: &str) {
        let pid = self
            .proc
            .as_ref()
            .and_then(|p| p.id())
            .expect("member running");
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} {pid}");
    }

    /// The process's exit status once it exits by itself within `patience` (polled every
    /// 20 ms: a child's exit is not an event tokio can await on a std process); `None` if it
    /// still runs then.
    pub async fn exits_within(&mut self, patience: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.proc.as_mut().and_then(|p| p.exited()) {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the process if it runs (as dropping the member does).
    pub fn stop(&mut self) {
        drop(self.proc.take());
    }

    /// A client of this member alone (`timeout` per request) once it answers `probe`, retrying
    /// every 20 ms for up to [`PATIENCE`]; gives up at once if the process exited.
    pub async fn ready(&mut self, timeout: Duration, probe: Probe) -> Result<Client, NotReady> {
        let deadline = Instant::now() + PATIENCE;
        let opts = connect_opts(timeout);
        loop {
            if let Some(status) = self.proc.as_mut().and_then(|p| p.exited()) {
                return Err(NotReady::Exited(status));
            }
            if let Ok(mut c) = Client::connect([self.endpoint()], Some(opts.clone())).await {
                let answered = match probe {
                    Probe::Status => c.status().await.is_ok(),
                    Probe::Get => c.get("readiness-probe", None).await.is_ok(),
                };
                if answered {
                    return Ok(c);
                }
            }
            if Instant::now() >= deadline {
                return Err(NotReady::TimedOut);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Members `m0`.. in one temp dir, all started with the same timing flags (see the module docs).
pub struct Cluster {
    dir: tempfile::TempDir,
    pub members: Vec<Member>,
    /// Flags every member is started with, after the cluster's and the timing flags.
    pub extra: Vec<String>,
    /// Keep the environment's `RUST_LOG` for the members (see [`Member::start`]).
    pub keep_rust_log: bool,
}

impl Cluster {
    /// Members with these names (not started), each on fresh ports.
    pub fn new(names: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let members = names
            .iter()
            .map(|n| {
                let data = dir.path().join(n);
                Member::new(n, &data, &dir.path().join(format!("{n}.log")))
            })
            .collect();
        Cluster {
            dir,
            members,
            extra: Vec::new(),
            keep_rust_log: true,
        }
    }

    /// `m0`, `m1`, `m2`.
    pub fn three() -> Cluster {
        Cluster::new(&["m0", "m1", "m2"])
    }

    /// Adds flags every member is started with.
    pub fn with_flags(mut self, flags: &[&str]) -> Cluster {
        self.extra.extend(flags.iter().map(|s| s.to_string()));
        self
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The index of the member named `name`.
    pub fn index(&self, name: &str) -> usize {
        self.members
            .iter()
            .position(|m| m.name == name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].endpoint()
    }

    pub fn log(&self, i: usize) -> &Path {
        &self.members[i].log
    }

    /// The `--initial-cluster` value listing the members at `idx`.
    pub fn initial_cluster(&self, idx: impl IntoIterator<Item = usize>) -> String {
        idx.into_iter()
            .map(|i| self.members[i].initial_entry())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `i` of a new cluster of all members (`--initial-cluster-state` left at
    /// its default); returns the process ID.
    pub fn start(&mut self, i: usize) -> u32 {
        let initial = self.initial_cluster(0..self.members.len());
        self.start_with(i, &initial, None)
    }

    /// Starts member `i` with this initial cluster and state; returns the process ID.
    pub fn start_with(&mut self, i: usize, initial_cluster: &str, state: Option<&str>) -> u32 {
        let mut flags = vec![
            "--heartbeat-interval".to_string(),
            HEARTBEAT_MS.to_string(),
            "--election-timeout".to_string(),
            ELECTION_MS.to_string(),
        ];
        flags.extend(self.extra.iter().cloned());
        let keep = self.keep_rust_log;
        self.members[i].start(initial_cluster, state, &flags, keep)
    }

    pub fn kill9(&mut self, i: usize) {
        self.members[i].kill9();
    }

    /// The tail of every member's log, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {}:\n{}", m.name, log_tail(&m.log)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A client of member `i` alone (10 s per request), once it answers Status; panics with
    /// the logs if it exits or does not answer in time.
    pub async fn client(&mut self, i: usize) -> Client {
        self.client_with(i, Duration::from_secs(10)).await
    }

    /// [`Cluster::client`] with `timeout` per request.
    pub async fn client_with(&mut self, i: usize, timeout: Duration) -> Client {
        match self.members[i].ready(timeout, Probe::Status).await {
            Ok(c) => c,
            Err(NotReady::Exited(status)) => {
                panic!(
                    "{} exited ({status}):\n{}",
                    self.members[i].name,
                    self.logs()
                )
            }
            Err(NotReady::TimedOut) => {
                panic!("{} not up:\n{}", self.members[i].name, self.logs())
            }
        }
    }

    /// Clients of all members (see [`Cluster::client_with`]) once they agree on a leader, and
    /// the index of the leader.
    pub async fn led(&mut self, timeout: Duration) -> (Vec<Client>, usize) {
        let mut clients = Vec::new();
        for i in 0..self.members.len() {
            clients.push(self.client_with(i, timeout).await);
        }
        let leader = until("a leader", || {
            let cs = clients.clone();
            async move { agreed_leader(&cs).await }
        })
        .await;
        let li = index_of(&clients, leader).await;
        (clients, li)
    }
}

/// Polls `f` until it yields a value, for up to [`PATIENCE`].
pub async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The leader all of `clients` agree on.
pub async fn agreed_leader(clients: &[Client]) -> Option<u64> {
    let mut leader = None;
    for c in clients {
        let l = c.clone().status().await.ok()?.leader();
        if l == 0 || leader.is_some_and(|x| x != l) {
            return None;
        }
        leader = Some(l);
    }
    leader
}

/// Waits until `clients` agree on a leader other than `old` and asserts that took less than
/// three election timeouts since `since` (the moment of `event`); returns the new leader.
pub async fn new_leader_soon(clients: &[Client], old: u64, since: Instant, event: &str) -> u64 {
    let new_leader = until("a new leader", || {
        let cs = clients.to_vec();
        async move { agreed_leader(&cs).await.filter(|&l| l != old) }
    })
    .await;
    let took = since.elapsed();
    eprintln!("new leader {new_leader:x} {took:?} after {event}");
    assert!(
        took < Duration::from_millis(3 * ELECTION_MS),
        "new leader {new_leader:x} after {took:?}, more than three election timeouts"
    );
    new_leader
}

/// The ID of the member behind `c`.
pub async fn member_id(c: &Client) -> u64 {
    c.clone()
        .status()
        .await
        .unwrap()
        .header()
        .unwrap()
        .member_id()
}

/// Which client's member has ID `id`.
pub async fn index_of(clients: &[Client], id: u64) -> usize {
    for (i, c) in clients.iter().enumerate() {
        if member_id(c).await == id {
            return i;
        }
    }
    panic!("{id:x} is not a member");
}

/// The revision `c`'s member answers a read at.
pub async fn revision(c: &Client) -> i64 {
    c.clone()
        .get("probe", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

/// Waits until every client's member applied what the first one's has committed.
pub async fn applied(clients: &[Client], what: &str) {
    let commit = clients[0].clone().status().await.unwrap().raft_index();
    for c in clients {
        until(what, || {
            let mut c = c.clone();
            async move { (c.status().await.ok()?.raft_applied_index() >= commit).then_some(()) }
        })
        .await;
    }
}

/// Waits until every client's member applied what the first one's has committed, then checks
/// they are all at the same revision and their HashKV agrees there.
pub async fn converged(clients: &[Client]) {
    applied(clients, "members to apply the committed log").await;
    let rev = revision(&clients[0]).await;
    let mut hashes = Vec::new();
    for c in clients {
        let r = revision(c).await;
        assert_eq!(r, rev, "every member is at revision {rev}");
        hashes.push(c.clone().hash_kv(rev).await.unwrap().hash());
    }
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "HashKV at revision {rev} differs: {hashes:?}"
    );
}

/// Writers putting keys of their own until stopped, remembering what was acknowledged.
#[derive(Default)]
pub struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
    count: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// A writer through `c` putting `w<tag>-<i>` = `v<tag>-<i>` for i = 0, 1, ...
    pub fn writer(&mut self, mut c: Client, tag: &str) {
        let (stop, acked, count) = (self.stop.clone(), self.acked.clone(), self.count.clone());
        let tag = tag.to_string();
        self.tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (k, v) = (format!("w{tag}-{i}"), format!("v{tag}-{i}"));
                i += 1;
                match c.put(k.clone(), v.clone(), None).await {
                    Ok(_) => {
                        acked.lock().await.insert(k, v);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    // Not acknowledged: it may or may not be there; nothing is asserted on it.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }));
    }

    /// How many writes were acknowledged so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until `n` writes in all were acknowledged.
    pub async fn reached(&self, what: &str, n: usize) {
        until(what, || {
            let c = self.count();
            async move { (c >= n).then_some(()) }
        })
        .await
    }

    /// Stops the writers and returns every acknowledged write, key -> value.
    pub async fn stop(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let acked = self.acked.lock().await.clone();
        acked
    }
}

/// Asserts every write in `acked` reads back with its value through `c`.
pub async fn has_all(c: &Client, acked: &BTreeMap<String, String>) {
    let mut c = c.clone();
    for (k, v) in acked {
        let got = c.get(k.as_str(), None).await.unwrap();
        assert_eq!(
            got.kvs().first().map(|kv| kv.value()),
            Some(v.as_bytes()),
            "acknowledged {k} missing"
        );
    }
}
