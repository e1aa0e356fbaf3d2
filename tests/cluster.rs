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
//! - a linearizable get on a follower sees a put acknowledged by the leader just before, every
//!   time (ReadIndex), also with `--experimental-lease-read`; a serializable get on a follower
//!   answers from its own state;
//! - a lease kept alive only through a follower (renewed by the leader, which keeps lease time)
//!   outlives three TTLs, TimeToLive through the follower reports the leader's clock, and once
//!   the keep-alives stop the lease expires and its key is deleted.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions, LeaseTimeToLiveOptions, PutOptions};
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
    /// Flags every member is started with, besides the cluster's.
    extra: Vec<String>,
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
            extra: Vec::new(),
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
            .args(&self.extra)
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

/// Starts three members and waits until they agree on a leader: the cluster, a client of each
/// member, and the index of the leader's client.
async fn started(extra: &[&str]) -> (Cluster, Vec<Client>, usize) {
    let mut cl = Cluster::new();
    cl.extra = extra.iter().map(|s| s.to_string()).collect();
    for i in 0..3 {
        cl.start(i);
    }
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(cl.client(i).await);
    }
    let mut ids = Vec::new();
    for c in clients.iter_mut() {
        ids.push(c.status().await.unwrap().header().unwrap().member_id());
    }
    let leader = until("a leader", || {
        let mut cs = clients.clone();
        async move { agreed_leader(&mut cs).await }
    })
    .await;
    let li = ids
        .iter()
        .position(|&id| id == leader)
        .expect("leader is a member");
    (cl, clients, li)
}

/// Puts through the leader, then reads through a follower at once: the follower must see it.
/// (Without the read barrier the follower, a heartbeat behind, answers the old value often.)
async fn reads_follow_writes(leader: &mut Client, follower: &mut Client, rounds: usize) {
    for i in 0..rounds {
        let v = format!("v{i}");
        let put = leader.put("rw", v.as_str(), None).await.unwrap();
        let rev = put.header().unwrap().revision();
        let got = follower.get("rw", None).await.unwrap();
        assert_eq!(
            got.kvs().first().map(|kv| kv.value()),
            Some(v.as_bytes()),
            "round {i}: a linearizable get on a follower missed the put acknowledged at \
             revision {rev} (it answered at revision {})",
            got.header().unwrap().revision()
        );
        assert!(got.header().unwrap().revision() >= rev);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_read_linearizably_and_keep_leases_alive() {
    let (cl, mut clients, li) = started(&[]).await;
    let fi = (li + 1) % 3;
    let (mut leader, mut follower) = (clients[li].clone(), clients[fi].clone());

    reads_follow_writes(&mut leader, &mut follower, 200).await;

    // Concurrent linearizable readers on a follower share read-index rounds and all see the
    // write acknowledged before they started.
    leader.put("shared", "x", None).await.unwrap();
    let readers: Vec<_> = (0..32)
        .map(|_| {
            let mut c = follower.clone();
            tokio::spawn(async move { c.get("shared", None).await.unwrap() })
        })
        .collect();
    for r in readers {
        assert_eq!(r.await.unwrap().kvs()[0].value(), b"x");
    }

    // A serializable get on a follower answers from what it has applied.
    let ser = follower
        .get("shared", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_eq!(ser.kvs()[0].value(), b"x");

    // A lease kept alive only through the follower.
    const TTL: i64 = 2;
    let lease = follower.lease_grant(TTL, None).await.unwrap().id();
    follower
        .put("leased", "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    let (mut keeper, mut acks) = follower.lease_keep_alive(lease).await.unwrap();
    let kept_until = Instant::now() + Duration::from_secs(3 * TTL as u64);
    while Instant::now() < kept_until {
        keeper.keep_alive().await.unwrap();
        let ack = acks.message().await.unwrap().expect("a keep-alive answer");
        assert_eq!((ack.id(), ack.ttl()), (lease, TTL), "renewed by the leader");
        // The keep-alive cadence is the point here: a third of the TTL, as clients do.
        tokio::time::sleep(Duration::from_millis(TTL as u64 * 1000 / 3)).await;
    }
    let ttl = follower
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), TTL);
    assert!(
        ttl.ttl() > 0 && ttl.ttl() <= TTL,
        "the leader's remaining TTL: {}",
        ttl.ttl()
    );
    assert_eq!(ttl.keys(), [b"leased".to_vec()]);
    for c in clients.iter_mut() {
        let got = c.get("leased", None).await.unwrap();
        assert_eq!(got.count(), 1, "the lease outlived 3 TTLs while kept alive");
    }

    // Unknown leases, through the follower: keep-alive TTL 0, TimeToLive -1 (as etcd).
    // (etcd-client turns the first answer's TTL 0 into this error.)
    match follower.lease_keep_alive(0x7eed).await {
        Err(etcd_client::Error::LeaseKeepAliveError(e)) => assert_eq!(e, "lease not found"),
        other => panic!("keep-alive of an unknown lease: {:?}", other.map(|_| ())),
    }
    assert_eq!(
        follower
            .lease_time_to_live(0x7eed, None)
            .await
            .unwrap()
            .ttl(),
        -1
    );

    // Once the keep-alives stop, the leader expires it and the key goes, on every member.
    drop((keeper, acks));
    for c in &clients {
        until("the lease to expire after its keep-alives stopped", || {
            let mut c = c.clone();
            async move { (c.get("leased", None).await.ok()?.count() == 0).then_some(()) }
        })
        .await;
    }
    assert_eq!(
        follower
            .lease_time_to_live(lease, None)
            .await
            .unwrap()
            .ttl(),
        -1
    );
    drop(cl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_read_mode_reads_linearizably_on_followers() {
    let (cl, clients, li) = started(&["--experimental-lease-read"]).await;
    let (mut leader, mut follower) = (clients[li].clone(), clients[(li + 1) % 3].clone());
    reads_follow_writes(&mut leader, &mut follower, 100).await;
    reads_follow_writes(&mut follower, &mut leader, 20).await;
    drop(cl);
}
