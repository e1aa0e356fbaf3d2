//! Starting the servers under test: a real etcd or `keelson store`, in a throwaway directory.
//!
//! Both are started the same way — separate processes with etcd's own cluster flags, loopback
//! only, free ports picked by the kernel (distinct client and peer ports for every member), each
//! member's data in its own subdirectory of one temporary directory, output in a log file there.
//! With more than one member, `keelson store` runs raft exactly as etcd does.
//!
//! A cluster is ready once every member answers a range *and* Maintenance.Status on every member
//! names the same leader, which is one of the members: only then has an election finished
//! everywhere, so the first measured requests do not pay for it (or fail with "no leader").
//! Both waits are bounded ([`READY`]) and a failure shows the tail of the member's log.
//!
//! [`Cluster::endpoints`] lists the leader's endpoint first, for either kind, so a workload on
//! one connection (the single-client latency run) talks to the leader of both, and a workload
//! on many connections spreads them over the members in the same way on both.
//!
//! A [`Cluster`] kills its processes and removes its directory when dropped, so an aborted
//! comparison leaves nothing running.
//!
//! Ports are found by binding port 0 and releasing it just before the server binds it; another
//! process could take one in between, in which case the server fails to start and says so.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use keelson_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keelson_proto::etcdserverpb::{RangeRequest, StatusRequest};
use tokio::process::{Child, Command};

use crate::cli::Target;
use crate::conn::{endpoint_url, Conns};

/// Bound on starting a cluster: every member answering, then one leader agreed by all.
const READY: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Etcd,
    Keelson,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Etcd => "etcd",
            Kind::Keelson => "keelson",
        }
    }
}

/// Running members of one kind.
pub(crate) struct Cluster {
    pub(crate) kind: Kind,
    /// Client endpoints (host:port), one per member, in member order (m0, m1, …).
    members: Vec<String>,
    /// Index in `members` of the leader all members agreed on when the cluster became ready.
    pub(crate) leader: usize,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    // All bound at once, so the n ports are distinct.
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(ls
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

impl Cluster {
    /// Starts `members` members of `kind` from the binary `bin`.
    pub(crate) async fn start(kind: Kind, bin: &Path, members: usize) -> anyhow::Result<Cluster> {
        if members == 0 {
            bail!("--members must be at least 1");
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("keelson-bench-{}-", kind.name()))
            .tempdir()?;
        let ports = free_ports(2 * members)?;
        let url = |p: u16| format!("http://127.0.0.1:{p}");
        let cluster = (0..members)
            .map(|i| format!("m{i}={}", url(ports[2 * i + 1])))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            kind,
            members: Vec::new(),
            leader: 0,
            children: Vec::new(),
            dir,
        };
        for i in 0..members {
            let (client, peer) = (url(ports[2 * i]), url(ports[2 * i + 1]));
            let mut cmd = Command::new(bin);
            if kind == Kind::Keelson {
                cmd.arg("store");
            }
            let data = c.dir.path().join(format!("m{i}"));
            cmd.arg("--name")
                .arg(format!("m{i}"))
                .arg("--data-dir")
                .arg(&data)
                .args([
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                ])
                .args([
                    "--initial-cluster",
                    &cluster,
                    "--initial-cluster-state",
                    "new",
                ])
                .args(["--initial-cluster-token", "keelson-bench"]);
            let log = std::fs::File::create(c.log(i))?;
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true);
            let child = cmd
                .spawn()
                .with_context(|| format!("starting {} ({})", kind.name(), bin.display()))?;
            c.children.push(child);
            c.members.push(format!("127.0.0.1:{}", ports[2 * i]));
        }
        c.wait_ready().await?;
        Ok(c)
    }

    /// Client endpoints, the leader's first, then the others in member order.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        leader_first(&self.members, self.leader)
    }

    /// The members' process ids, in the order of [`Cluster::endpoints`] (the leader's first).
    pub(crate) fn pids(&self) -> Vec<u32> {
        let ids: Vec<u32> = self.children.iter().map(|c| c.id().unwrap_or(0)).collect();
        leader_first(&ids, self.leader)
    }

    /// "m1 of 3" — which member led when the cluster became ready.
    pub(crate) fn leader_name(&self) -> String {
        format!("m{} of {}", self.leader, self.members.len())
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}.log"))
    }

    /// Waits until every member answers a range and all name the same leader, or fails with
    /// the tail of a log.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY;
        for i in 0..self.members.len() {
            loop {
                self.check_alive(i)?;
                if self.answers(i).await {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} member m{i} not answering after {READY:?}:\n{}",
                        self.kind.name(),
                        self.log_tail(i)
                    );
                }
                // Polling is the only way to learn that another process has started listening.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        loop {
            let mut seen = Vec::with_capacity(self.members.len());
            for i in 0..self.members.len() {
                self.check_alive(i)?;
                seen.push(self.status(i).await);
            }
            if let Some(leader) = agreed_leader(&seen) {
                self.leader = leader;
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = (0..self.members.len())
                    .map(|i| format!("--- m{i}:\n{}", self.log_tail(i)))
                    .collect();
                bail!(
                    "{} members did not agree on a leader in {READY:?} \
                     ((member id, leader) per member: {seen:?}):\n{}",
                    self.kind.name(),
                    logs.join("\n")
                );
            }
            // An election is only observable by asking; it takes a few heartbeats at most.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn check_alive(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(status) = self.children[i].try_wait()? {
            bail!(
                "{} member m{i} exited ({status}):\n{}",
                self.kind.name(),
                self.log_tail(i)
            );
        }
        Ok(())
    }

    /// Member `i`'s (own member id, leader it names), or None if Status failed.
    async fn status(&self, i: usize) -> Option<(u64, u64)> {
        let ch = tonic::transport::Endpoint::from_shared(endpoint_url(&self.members[i]))
            .ok()?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .ok()?;
        let mut client = MaintenanceClient::new(ch);
        let call = client.status(StatusRequest {});
        let r = tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .ok()?
            .ok()?
            .into_inner();
        Some((r.header?.member_id, r.leader))
    }

    async fn answers(&self, i: usize) -> bool {
        let target = Target {
            endpoints: vec![self.members[i].clone()],
            conns: 1,
            json: false,
        };
        let Ok(conns) = Conns::open(&target).await else {
            return false;
        };
        let req = RangeRequest {
            key: "health".into(),
            ..Default::default()
        };
        tokio::time::timeout(Duration::from_secs(2), conns.kv(0).range(req))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn log_tail(&self, i: usize) -> String {
        let s = std::fs::read_to_string(self.log(i)).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kills the members and waits for them to exit (the directory goes when dropped).
    pub(crate) async fn stop(mut self) {
        for c in &mut self.children {
            let _ = c.kill().await;
        }
    }
}

/// The index of the member that every member names as leader, given each member's
/// (own id, leader id) — or None while any member is silent, names no leader (0) or names
/// another one, or the named leader is not among the members.
fn agreed_leader(seen: &[Option<(u64, u64)>]) -> Option<usize> {
    let first = (*seen.first()?)?.1;
    if first == 0 || !seen.iter().all(|s| s.is_some_and(|(_, l)| l == first)) {
        return None;
    }
    seen.iter()
        .position(|s| s.is_some_and(|(id, _)| id == first))
}

fn leader_first<T: Clone>(members: &[T], leader: usize) -> Vec<T> {
    let mut v = vec![members[leader].clone()];
    v.extend(
        members
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != leader)
            .map(|(_, e)| e.clone()),
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_counts_only_once_every_member_names_the_same_member() {
        let all = |l: u64| vec![Some((10, l)), Some((20, l)), Some((30, l))];
        assert_eq!(agreed_leader(&all(20)), Some(1));
        assert_eq!(agreed_leader(&all(0)), None, "no leader yet");
        assert_eq!(
            agreed_leader(&all(99)),
            None,
            "a leader that is not a member"
        );
        let split = vec![Some((10, 10)), Some((20, 20)), Some((30, 20))];
        assert_eq!(agreed_leader(&split), None, "m0 still thinks it leads");
        let silent = vec![Some((10, 30)), None, Some((30, 30))];
        assert_eq!(agreed_leader(&silent), None, "m1 did not answer");
        assert_eq!(
            agreed_leader(&[Some((7, 7))]),
            Some(0),
            "a single member leads itself"
        );
        assert_eq!(agreed_leader(&[]), None);
    }

    #[test]
    fn the_leader_endpoint_comes_first() {
        let m: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(leader_first(&m, 0), ["a", "b", "c"]);
        assert_eq!(leader_first(&m, 2), ["c", "a", "b"]);
    }

    #[test]
    fn free_ports_are_distinct() {
        let mut p = free_ports(6).unwrap();
        p.sort_unstable();
        p.dedup();
        assert_eq!(p.len(), 6);
    }
}
