//! Cluster control: real member processes of Keelson or etcd 3.4, started with etcd's cluster
//! flags, that the nemeses kill, pause, partition, replace and corrupt.
//!
//! A cluster has a fixed number of member *slots* `m0..`. A slot keeps its name, client URL,
//! peer URL, data directory and log file for the whole run, whatever happens to the process
//! in it: a killed member restarts on its data; a replaced one is removed through the Cluster
//! API, wiped, added back with the same peer URL (so under a new member ID) and started with
//! `--initial-cluster-state existing`. So [`Cluster::endpoints`] is stable, and clients never
//! need to learn about faults.
//!
//! Layout in the run folder: `cluster/m<i>/` data, `cluster/m<i>.log` the member's stdout and
//! stderr (appended across restarts, each start marked), `cluster/control.log` every action
//! the harness took, with its time since the cluster started.
//!
//! Invariants:
//! - Members die with the harness: killed on [`Cluster::shutdown`] and on drop, and SIGKILLed
//!   by the kernel if the harness dies first (`process.rs`).
//! - A slot's process state (running, paused, removed) changes only under the state lock, and
//!   a process is reaped only by the code that took it out of its slot, so a pid the harness
//!   signals is always its own child.
//! - The network (see [`crate::net`]) decides the slots' addresses once, at start; partitions
//!   change which links carry traffic, never the addresses.
//! - Everything awaited (a member serving, a leader, a membership change) is awaited through
//!   the members' own answers and bounded in time; a bound exceeded is a harness error naming
//!   what was awaited.

mod control;
pub(crate) mod disk;
mod members;
pub(crate) mod process;
mod rpc;

use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::HarnessError;
use crate::net::netns::Namespaces;
use crate::net::proxy::Proxies;
use crate::net::{may_use_namespaces, Cuts, Network};

pub use control::Restart;
pub use disk::{Corruption, Damage};

/// How long a fresh cluster may take until every member answers and one leader is agreed.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// What is under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Keelson,
    Etcd,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Keelson => "keelson",
            Target::Etcd => "etcd",
        }
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "keelson" => Ok(Target::Keelson),
            "etcd" => Ok(Target::Etcd),
            _ => Err(format!("unknown target {s:?} (keelson or etcd)")),
        }
    }
}

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOpts {
    pub target: Target,
    /// The run folder: member data and logs go under `dir/cluster`.
    pub dir: PathBuf,
    pub members: usize,
    /// The `keelson` binary (runs as `keelson store`).
    pub keelson_bin: PathBuf,
    pub etcd_bin: PathBuf,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_count: u64,
    /// How partitions are made.
    pub network: Network,
}

impl ClusterOpts {
    /// Three members, etcd's default timing, a snapshot every 10 000 entries, the network
    /// chosen automatically.
    pub fn new(target: Target, dir: impl Into<PathBuf>, keelson_bin: impl Into<PathBuf>) -> Self {
        ClusterOpts {
            target,
            dir: dir.into(),
            members: 3,
            keelson_bin: keelson_bin.into(),
            etcd_bin: PathBuf::from("/usr/bin/etcd"),
            heartbeat_ms: 100,
            election_timeout_ms: 1000,
            snapshot_count: 10_000,
            network: Network::Auto,
        }
    }

    fn bin(&self) -> &Path {
        match self.target {
            Target::Keelson => &self.keelson_bin,
            Target::Etcd => &self.etcd_bin,
        }
    }
}

/// What never changes about a member slot.
struct Slot {
    name: String,
    client_url: String,
    listen_peer_url: String,
    /// Advertised to peers (differs from the listen URL behind a proxy).
    peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
}

/// What the harness knows about a slot's process.
#[derive(Default)]
struct Proc {
    child: Option<Child>,
    paused: bool,
    /// Removed from the cluster and not yet added back.
    removed: bool,
    /// The member ID, once a member answered Status or MemberAdd named it.
    id: Option<u64>,
    initial_cluster: String,
    state: &'static str,
    /// Length of the log file when the current process started: its own output follows.
    log_from: u64,
}

enum Net {
    Namespaces(Namespaces),
    Proxy(Proxies),
}

/// Appends the harness's actions to `cluster/control.log`.
struct Journal {
    file: Mutex<File>,
    since: Instant,
}

impl Journal {
    fn note(&self, msg: &str) {
        let t = self.since.elapsed().as_secs_f64();
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(f, "[{t:9.3}s] {msg}");
    }
}

/// A running cluster (see the module docs). Shared as `Arc<Cluster>` between the clients
/// (which only need [`Cluster::endpoints`]) and the nemesis.
pub struct Cluster {
    opts: ClusterOpts,
    token: String,
    slots: Vec<Slot>,
    procs: Mutex<Vec<Proc>>,
    net: Net,
    cuts: Mutex<Cuts>,
    journal: Journal,
    closed: AtomicBool,
}

/// `n` distinct free loopback ports (bound together, then released for the members to bind).
fn free_ports(n: usize) -> Result<Vec<u16>, HarnessError> {
    let ls = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HarnessError::io("finding free ports", e))?;
    ls.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| HarnessError::io("finding free ports", e))
}

impl Cluster {
    /// Starts a fresh cluster; returns once every member answers and they agree on a leader.
    pub async fn start(opts: ClusterOpts) -> Result<Arc<Cluster>, HarnessError> {
        if opts.members == 0 {
            return Err(HarnessError::Config("a cluster needs members".into()));
        }
        if !opts.bin().is_file() {
            return Err(HarnessError::Config(format!(
                "no {} binary at {}",
                opts.target.name(),
                opts.bin().display()
            )));
        }
        let cdir = opts.dir.join("cluster");
        std::fs::create_dir_all(&cdir)
            .map_err(|e| HarnessError::io(format!("creating {}", cdir.display()), e))?;
        let control = cdir.join("control.log");
        let journal = Journal {
            file: Mutex::new(
                File::options()
                    .create(true)
                    .append(true)
                    .open(&control)
                    .map_err(|e| HarnessError::io(format!("opening {}", control.display()), e))?,
            ),
            since: Instant::now(),
        };
        let n = opts.members;
        let namespaces = match opts.network {
            Network::Proxy => None,
            Network::Namespaces => Some(Namespaces::create(n)?),
            Network::Auto if may_use_namespaces() => match Namespaces::create(n) {
                Ok(ns) => Some(ns),
                Err(e) => {
                    journal.note(&format!("no network namespaces ({e}); using proxies"));
                    None
                }
            },
            Network::Auto => None,
        };
        let slot = |i: usize, client: String, listen_peer: String, peer: String| Slot {
            name: format!("m{i}"),
            client_url: client,
            listen_peer_url: listen_peer,
            peer_url: peer,
            data_dir: cdir.join(format!("m{i}")),
            log: cdir.join(format!("m{i}.log")),
        };
        let (slots, net) = match namespaces {
            Some(ns) => {
                let slots: Vec<Slot> = (0..n)
                    .map(|i| {
                        let a = ns.addr(i);
                        let peer = format!("http://{a}:2380");
                        slot(i, format!("http://{a}:2379"), peer.clone(), peer)
                    })
                    .collect();
                (slots, Net::Namespaces(ns))
            }
            None => {
                let ports = free_ports(2 * n)?;
                let real: Vec<SocketAddr> = (0..n)
                    .map(|i| SocketAddr::from(([127, 0, 0, 1], ports[2 * n - 1 - i])))
                    .collect();
                let proxies = Proxies::start(real.clone()).await?;
                let slots: Vec<Slot> = (0..n)
                    .map(|i| {
                        slot(
                            i,
                            format!("http://127.0.0.1:{}", ports[i]),
                            format!("http://{}", real[i]),
                            format!("http://127.0.0.1:{}", proxies.port(i)),
                        )
                    })
                    .collect();
                (slots, Net::Proxy(proxies))
            }
        };
        let initial: Vec<String> = slots
            .iter()
            .map(|s| format!("{}={}", s.name, s.peer_url))
            .collect();
        let procs = (0..n)
            .map(|_| Proc {
                initial_cluster: initial.join(","),
                state: "new",
                ..Proc::default()
            })
            .collect();
        let cluster = Cluster {
            token: format!("jepsen-{}-{}", std::process::id(), now_nanos()),
            opts,
            slots,
            procs: Mutex::new(procs),
            net,
            cuts: Mutex::new(Cuts::none()),
            journal,
            closed: AtomicBool::new(false),
        };
        cluster.journal.note(&format!(
            "starting {} members of {} ({}): {}",
            n,
            cluster.opts.target.name(),
            match cluster.net {
                Net::Namespaces(_) => "network namespaces",
                Net::Proxy(_) => "partition proxies",
            },
            cluster.endpoints().join(" ")
        ));
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster.wait_ready().await?;
        Ok(Arc::new(cluster))
    }

    /// One client URL (`http://IP:PORT`) per member slot, in slot order, stable for the run.
    pub fn endpoints(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.client_url.clone()).collect()
    }

    /// Heals the network, continues paused members, kills all members and waits for them to
    /// exit, then removes namespaces or proxies. Idempotent.
    pub async fn shutdown(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.partition(&Cuts::none());
        let children: Vec<Child> = {
            let mut procs = self.lock();
            procs.iter_mut().filter_map(|p| p.child.take()).collect()
        };
        for c in children {
            let _ = process::signal(c.id(), libc::SIGCONT);
            process::kill(c).await;
        }
        match &self.net {
            Net::Namespaces(ns) => ns.teardown(),
            Net::Proxy(p) => p.teardown(),
        }
        self.journal.note("shut down");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Proc>> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts slot `i`'s process with its current launch flags.
    fn spawn(&self, i: usize) -> Result<(), HarnessError> {
        let s = &self.slots[i];
        let mut procs = self.lock();
        let p = &mut procs[i];
        if p.child.is_some() {
            return Err(HarnessError::Config(format!(
                "{} is already running",
                s.name
            )));
        }
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&s.log)
            .map_err(|e| HarnessError::io(format!("opening {}", s.log.display()), e))?;
        let _ = writeln!(
            log,
            "=== jepsen: starting {} (--initial-cluster-state {}) ===",
            s.name, p.state
        );
        p.log_from = log.metadata().map(|m| m.len()).unwrap_or(0);
        let out = log
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating a log file", e))?;
        let mut cmd = self.command(s, &p.initial_cluster, p.state);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(log));
        let ns_file = match &self.net {
            Net::Namespaces(ns) => Some(ns.ns_file(i)?),
            Net::Proxy(_) => None,
        };
        let child = process::spawn(cmd, ns_file.as_ref().map(|f| f.as_raw_fd()))
            .map_err(|e| HarnessError::io(format!("starting {}", s.name), e))?;
        drop(ns_file);
        if let Net::Proxy(proxies) = &self.net {
            proxies.set_pid(i, Some(child.id()));
        }
        self.journal.note(&format!(
            "started {} (pid {}, state {})",
            s.name,
            child.id(),
            p.state
        ));
        p.child = Some(child);
        p.paused = false;
        Ok(())
    }

    /// The command line of a member: etcd's flags for both targets.
    fn command(&self, s: &Slot, initial_cluster: &str, state: &str) -> Command {
        let o = &self.opts;
        let mut cmd = Command::new(o.bin());
        if o.target == Target::Keelson {
            cmd.arg("store");
        }
        cmd.args(["--name", &s.name])
            .arg("--data-dir")
            .arg(&s.data_dir)
            .args(["--listen-client-urls", &s.client_url])
            .args(["--advertise-client-urls", &s.client_url])
            .args(["--listen-peer-urls", &s.listen_peer_url])
            .args(["--initial-advertise-peer-urls", &s.peer_url])
            .args(["--initial-cluster", initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", &o.heartbeat_ms.to_string()])
            .args(["--election-timeout", &o.election_timeout_ms.to_string()])
            .args(["--snapshot-count", &o.snapshot_count.to_string()]);
        // Logs are files: no colour codes in them (tracing-subscriber honours NO_COLOR).
        cmd.env("NO_COLOR", "1");
        // etcd reads ETCD_* variables as flags, and so does `keelson store`.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        if o.target == Target::Etcd {
            if let Some(arch) = unsupported_etcd_arch(std::env::consts::ARCH) {
                cmd.env("ETCD_UNSUPPORTED_ARCH", arch);
            }
        }
        cmd
    }

    /// Waits until every member answers Status and all name the same member as leader.
    async fn wait_ready(&self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            for i in 0..self.slots.len() {
                self.check_alive(i)?;
            }
            let seen = self.statuses().await;
            if let Some(l) = control::agreed_leader(&seen) {
                self.journal
                    .note(&format!("ready; {} leads", self.slots[l].name));
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::timeout(
                    format!(
                        "{} members to agree on a leader (member id, leader) per member: {seen:?}",
                        self.opts.target.name()
                    ),
                    START_PATIENCE,
                ));
            }
            // An election is observable only by asking.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let procs = self.procs.get_mut().unwrap_or_else(|e| e.into_inner());
        for p in procs.iter_mut() {
            if let Some(c) = p.child.take() {
                process::kill_now(c);
            }
        }
        // The namespaces or proxies go when `net` drops.
    }
}

/// What `ETCD_UNSUPPORTED_ARCH` must say for etcd 3.4 to start on `arch` (Rust's name), if
/// anything: it runs unasked only on amd64, arm64 and ppc64le.
fn unsupported_etcd_arch(arch: &str) -> Option<&str> {
    match arch {
        "x86_64" | "aarch64" | "powerpc64" => None,
        "x86" => Some("386"),
        "s390x" => Some("s390x"),
        other => Some(other),
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_needs_the_unsupported_arch_variable_only_off_its_platforms() {
        assert_eq!(unsupported_etcd_arch("x86_64"), None);
        assert_eq!(unsupported_etcd_arch("aarch64"), None);
        assert_eq!(unsupported_etcd_arch("riscv64"), Some("riscv64"));
        assert_eq!(unsupported_etcd_arch("x86"), Some("386"));
    }

    #[test]
    fn targets_parse_from_their_names() {
        assert_eq!("etcd".parse::<Target>(), Ok(Target::Etcd));
        assert_eq!("keelson".parse::<Target>(), Ok(Target::Keelson));
        assert!("zookeeper".parse::<Target>().is_err());
    }
}
