//! Starting the servers under test: a real etcd or `keelson store`, in a throwaway directory.
//!
//! Both are started the same way — separate processes, loopback only, free ports picked by the
//! kernel, data in a temporary directory, output in a log file there — and are ready once a
//! range request succeeds. A [`Cluster`] kills its processes and removes its directory when
//! dropped, so an aborted comparison leaves nothing running.
//!
//! Ports are found by binding port 0 and releasing it just before the server binds it; another
//! process could take one in between, in which case the server fails to start and says so.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use keelson_proto::etcdserverpb::RangeRequest;
use tokio::process::{Child, Command};

use crate::cli::Target;
use crate::conn::Conns;

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
    /// Client endpoints (host:port), one per member.
    pub(crate) endpoints: Vec<String>,
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
        if kind == Kind::Keelson && members > 1 {
            bail!(
                "keelson has no replication yet: a {members}-member keelson cluster cannot be \
                 started; compare with --members 1"
            );
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
            endpoints: Vec::new(),
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
            c.endpoints.push(format!("127.0.0.1:{}", ports[2 * i]));
        }
        c.wait_ready().await?;
        Ok(c)
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}.log"))
    }

    /// Waits until every member answers a range, or fails with the tail of its log.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..self.endpoints.len() {
            loop {
                if let Some(status) = self.children[i].try_wait()? {
                    bail!(
                        "{} member m{i} exited ({status}):\n{}",
                        self.kind.name(),
                        self.log_tail(i)
                    );
                }
                if self.answers(i).await {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} member m{i} not ready in 30 s:\n{}",
                        self.kind.name(),
                        self.log_tail(i)
                    );
                }
                // Polling is the only way to learn that another process has started listening.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    async fn answers(&self, i: usize) -> bool {
        let target = Target {
            endpoints: vec![self.endpoints[i].clone()],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_replicated_keelson_is_refused_until_replication_exists() {
        let e = Cluster::start(Kind::Keelson, Path::new("/nonexistent/keelson"), 3)
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("no replication yet"), "{e}");
    }

    #[test]
    fn free_ports_are_distinct() {
        let mut p = free_ports(6).unwrap();
        p.sort_unstable();
        p.dedup();
        assert_eq!(p.len(), 6);
    }
}
