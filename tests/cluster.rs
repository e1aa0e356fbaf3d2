//! A three-member cluster of real `keelson store` processes (raft over loopback), driven with
//! etcd-client.
//!
//! What must hold:
//! - a write sent to a follower succeeds (forwarded to the leader) and the follower then reads
//!   it back itself;
//! - after the leader is killed with SIGKILL under a steady write load, the survivors elect a
//!   new leader within three election timeouts (seen through Maintenance.Status, whose
//!   `leader` is the raft leader), and writes resume;
//! - every acknowledged write is readable on both survivors, and their HashKV agrees at a
//!   common revision;
//! - the killed member, restarted on its data dir, catches up: HashKV equal on all three;
//! - MemberList lists all three members with their client URLs, on every member.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use tokio::sync::Mutex;

const ELECTION_MS: u64 = 500;
const HEARTBEAT_MS: u64 = 50;
const WRITERS: usize = 4;
/// Bound on anything the test waits for, so a hang fails instead of blocking the suite.
const PATIENCE: Duration = Duration::from_secs(30);

struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    clients: Vec<String>,
    peers: Vec<String>,
    procs: Vec<Option<Proc>>,
}

fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind :0"))
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

fn log_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl Cluster {
    fn new() -> Cluster {
        let p = free_ports(6);
        Cluster {
            dir: tempfile::tempdir().unwrap(),
            clients: (0..3)
                .map(|i| format!("http://127.0.0.1:{}", p[i]))
                .collect(),
            peers: (0..3)
                .map(|i| format!("http://127.0.0.1:{}", p[3 + i]))
                .collect(),
            procs: vec![None, None, None],
        }
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}.log"))
    }

    fn endpoint(&self, i: usize) -> String {
        self.clients[i].trim_start_matches("http://").to_string()
    }

    fn start(&mut self, i: usize) {
        let initial: Vec<String> = (0..3).map(|j| format!("m{j}={}", self.peers[j])).collect();
        let out = File::options()
            .create(true)
            .append(true)
            .open(self.log(i))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keelson"));
        cmd.arg("store")
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("m{i}")))
            .args(["--listen-client-urls", &self.clients[i]])
            .args(["--advertise-client-urls", &self.clients[i]])
            .args(["--listen-peer-urls", &self.peers[i]])
            .args(["--initial-advertise-peer-urls", &self.peers[i]])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_MS.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        self.procs[i] = Some(Proc {
            child: cmd.spawn().expect("spawn keelson store"),
        });
    }

    fn kill9(&mut self, i: usize) {
        let mut p = self.procs[i].take().expect("member running");
        p.child.kill().expect("SIGKILL");
        p.child.wait().expect("reap");
    }

    fn logs(&self) -> String {
        (0..3)
            .map(|i| format!("--- m{i}:\n{}", log_tail(&self.log(i))))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A client of member `i` alone, once it answers.
    async fn client(&mut self, i: usize) -> Client {
        let deadline = Instant::now() + PATIENCE;
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(10));
        loop {
            if let Some(p) = self.procs[i].as_mut() {
                if let Some(status) = p.child.try_wait().unwrap() {
                    panic!("m{i} exited ({status}):\n{}", self.logs());
                }
            }
            if let Ok(mut c) = Client::connect([self.endpoint(i)], Some(opts.clone())).await {
                if c.status().await.is_ok() {
                    return c;
                }
            }
            assert!(Instant::now() < deadline, "m{i} not up:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Polls `f` until it yields a value; Status has no push form, so this is the event to await.
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
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
async fn agreed_leader(clients: &mut [Client]) -> Option<u64> {
    let mut leader = None;
    for c in clients.iter_mut() {
        let l = c.status().await.ok()?.leader();
        if l == 0 || leader.is_some_and(|x| x != l) {
            return None;
        }
        leader = Some(l);
    }
    leader
}

/// Waits until every client's member applied what is committed, then checks their HashKV
/// agrees at the newest revision.
async fn converged(clients: &mut [Client]) {
    let commit = clients[0].status().await.unwrap().raft_index();
    for c in clients.iter_mut() {
        let mut c = c.clone();
        until("members to apply the committed log", || {
            let mut c = c.clone();
            async move { (c.status().await.ok()?.raft_applied_index() >= commit).then_some(()) }
        })
        .await;
        let _ = c.status().await;
    }
    let rev = clients[0]
        .get("probe", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut hashes = Vec::new();
    for c in clients.iter_mut() {
        let r = c
            .get("probe", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        assert_eq!(r, rev, "every member is at revision {rev}");
        hashes.push(c.hash_kv(rev).await.unwrap().hash());
    }
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "HashKV at revision {rev} differs: {hashes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_survive_the_leader_being_killed() {
    let mut cl = Cluster::new();
    for i in 0..3 {
        cl.start(i);
    }
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(cl.client(i).await);
    }
    let ids: Vec<u64> = {
        let mut v = Vec::new();
        for c in clients.iter_mut() {
            v.push(c.status().await.unwrap().header().unwrap().member_id());
        }
        v
    };
    let leader = until("a leader", || {
        let mut cs = clients.clone();
        async move { agreed_leader(&mut cs).await }
    })
    .await;
    let li = ids
        .iter()
        .position(|&id| id == leader)
        .expect("leader is a member");
    let fi = (li + 1) % 3;

    // A write through a follower, read back from that follower.
    clients[fi].put("via-follower", "v", None).await.unwrap();
    let got = clients[fi].get("via-follower", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"v");

    // MemberList: all three, with their client URLs (each member publishes its own).
    until("every member to list all three with client URLs", || {
        let mut cs = clients.clone();
        let want = cl.clients.clone();
        async move {
            for c in cs.iter_mut() {
                let ms = c.member_list().await.ok()?;
                let mut urls: Vec<String> = ms
                    .members()
                    .iter()
                    .flat_map(|m| m.client_urls().to_vec())
                    .collect();
                urls.sort();
                let mut want = want.clone();
                want.sort();
                if urls != want {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;

    // Steady load over all endpoints while the leader is killed.
    let all: Vec<String> = (0..3).map(|i| cl.endpoint(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeMap::<String, String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(10));
        let mut c = Client::connect(all.clone(), Some(opts)).await.unwrap();
        let (stop, acked, count) = (stop.clone(), acked.clone(), count.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (k, v) = (format!("w{w}-{i}"), format!("v{w}-{i}"));
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
    until("the load to get going", || {
        let n = count.load(Ordering::Relaxed);
        async move { (n >= 50).then_some(()) }
    })
    .await;

    cl.kill9(li);
    let killed = Instant::now();
    let mut survivors: Vec<Client> = (0..3)
        .filter(|&i| i != li)
        .map(|i| clients[i].clone())
        .collect();
    let new_leader = until("a new leader", || {
        let mut cs = survivors.clone();
        async move { agreed_leader(&mut cs).await.filter(|&l| l != leader) }
    })
    .await;
    let took = killed.elapsed();
    eprintln!("new leader {new_leader:x} {took:?} after the kill");
    assert!(
        took < Duration::from_millis(3 * ELECTION_MS),
        "new leader {new_leader:x} after {took:?}, more than three election timeouts"
    );

    let resumed_from = count.load(Ordering::Relaxed);
    until("writes to resume", || {
        let n = count.load(Ordering::Relaxed);
        async move { (n >= resumed_from + 50).then_some(()) }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    let acked = acked.lock().await.clone();
    converged(&mut survivors).await;
    for c in survivors.iter_mut() {
        for (k, v) in &acked {
            let got = c.get(k.as_str(), None).await.unwrap();
            assert_eq!(
                got.kvs().first().map(|kv| kv.value()),
                Some(v.as_bytes()),
                "acknowledged {k} missing"
            );
        }
    }

    // The killed member comes back on its data dir and catches up.
    cl.start(li);
    clients[li] = cl.client(li).await;
    survivors.push(clients[li].clone());
    converged(&mut survivors).await;
    let got = clients[li].get("via-follower", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"v");
}
