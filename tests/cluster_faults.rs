//! Faults in a three-member cluster of real `keelson store` processes: network partitions,
//! a member catching up by snapshot, and etcd's `hasleader` metadata.
//!
//! Partitions without root: every member advertises (in `--initial-cluster`, so the member IDs
//! derive from it) a peer URL that is a proxy listener in this test process, forwarding to the
//! member's real `--listen-peer-urls`. The proxy learns which member dialled each connection
//! from the kernel (`/proc/net/tcp` gives the dialling socket's inode, `/proc/PID/fd` the
//! process holding it), so every *directed* link can be cut: a cut closes the link's open
//! connections and holds new ones open without forwarding a byte (a partition, not a refused
//! connection), until the link heals and they are closed so the dialler reconnects.
//!
//! What must hold:
//! - a follower cut off from the other two can complete neither a linearizable read nor a
//!   write (Unavailable, `request timed out` or `no leader`, at the request deadline), while
//!   the majority reads and writes; a serializable read on it still answers (stale allowed);
//!   after healing it catches up (HashKV equal at a common revision);
//! - a leader cut off: the majority elects a new leader within three election timeouts and
//!   writes; the old leader can neither write nor read linearizably; after healing it follows
//!   the new leader and everything converges;
//! - a request carrying `hasleader: true` on a member without a live leader fails at once with
//!   Unavailable `etcdserver: no leader` (etcd's `v3rpc/interceptor.go`), and succeeds on a
//!   healthy member;
//! - a member killed while the others write past several snapshots (`--snapshot-count 100`)
//!   catches up from the leader's snapshot once restarted (the leader purged the entries it
//!   missed), and HashKV agrees on all three.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

const ELECTION_MS: u64 = 500;
const HEARTBEAT_MS: u64 = 50;
/// Bound on anything the test waits for, so a hang fails instead of blocking the suite.
const PATIENCE: Duration = Duration::from_secs(30);
/// Longer than a member's request deadline (etcd's: 5 s plus two election timeouts), so the
/// member's own error arrives rather than the client's.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which side of a partition each member is on; members on the same side reach each other.
type Sides = [u8; 3];

/// The proxies between members (see the module docs).
struct Net {
    sides: watch::Sender<Sides>,
    /// The process of each member, to tell who dialled a connection.
    pids: Arc<Mutex<[Option<u32>; 3]>>,
}

impl Net {
    /// Cuts member `i` off from the other two, both ways.
    fn isolate(&self, i: usize) {
        let mut s = [0; 3];
        s[i] = 1;
        self.sides.send_replace(s);
    }

    fn heal(&self) {
        self.sides.send_replace([0; 3]);
    }
}

/// Whether `from` (None: not known) reaches `to`.
fn linked(s: &Sides, from: Option<usize>, to: usize) -> bool {
    match from {
        Some(f) => s[f] == s[to],
        None => s.iter().all(|&x| x == s[0]),
    }
}

/// The member whose process holds the local end of the connection that reached the proxy
/// listening on `proxy_port` from `peer_port` (both on 127.0.0.1).
fn dialler(peer_port: u16, proxy_port: u16, pids: &[Option<u32>; 3]) -> Option<usize> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("0100007F:{peer_port:04X}");
    let remote = format!("0100007F:{proxy_port:04X}");
    let inode = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == local && f[2] == remote).then(|| f[9].to_string())
    })?;
    let want = format!("socket:[{inode}]");
    pids.iter().position(|pid| {
        let Some(pid) = pid else { return false };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == want.as_str())
        })
    })
}

/// Proxies connections to member `to`'s proxy listener through to `real`, obeying `sides`.
async fn proxy(
    listener: tokio::net::TcpListener,
    to: usize,
    real: SocketAddr,
    sides: watch::Receiver<Sides>,
    pids: Arc<Mutex<[Option<u32>; 3]>>,
) {
    let proxy_port = listener.local_addr().unwrap().port();
    while let Ok((mut conn, peer)) = listener.accept().await {
        let snapshot = *pids.lock().unwrap();
        let from = dialler(peer.port(), proxy_port, &snapshot);
        if from.is_none() {
            eprintln!("proxy to m{to}: could not tell who dialled from {peer}");
        }
        let mut sides = sides.clone();
        tokio::spawn(async move {
            let up = |s: &Sides| linked(s, from, to);
            if !up(&sides.borrow_and_update()) {
                // Blackholed: read and drop whatever arrives until the link heals.
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    tokio::select! {
                        n = conn.read(&mut buf) => if !matches!(n, Ok(n) if n > 0) { return },
                        _ = sides.wait_for(up) => return,
                    }
                }
            }
            let Ok(mut upstream) = tokio::net::TcpStream::connect(real).await else {
                return;
            };
            let _ = conn.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream) => {}
                _ = sides.wait_for(|s| !up(s)) => {}
            }
        });
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    clients: Vec<String>,
    /// The peer URLs members advertise (the proxies', when proxied).
    peers: Vec<String>,
    /// The peer URLs members listen on.
    listen: Vec<String>,
    procs: Vec<Option<Proc>>,
    extra: Vec<String>,
    net: Option<Net>,
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
    /// Three members (not started); `proxied` puts the partition proxies between them.
    fn new(proxied: bool, extra: &[&str]) -> Cluster {
        let p = free_ports(6);
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        let listen: Vec<String> = (3..6).map(|i| url(p[i])).collect();
        let (peers, net) = if proxied {
            let (sides, _) = watch::channel([0; 3]);
            let pids = Arc::new(Mutex::new([None; 3]));
            let mut peers = Vec::new();
            for (to, real) in p[3..6].iter().enumerate() {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                l.set_nonblocking(true).unwrap();
                peers.push(url(l.local_addr().unwrap().port()));
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                let real: SocketAddr = format!("127.0.0.1:{real}").parse().unwrap();
                tokio::spawn(proxy(l, to, real, sides.subscribe(), pids.clone()));
            }
            (peers, Some(Net { sides, pids }))
        } else {
            (listen.clone(), None)
        };
        Cluster {
            dir: tempfile::tempdir().unwrap(),
            clients: (0..3).map(|i| url(p[i])).collect(),
            peers,
            listen,
            procs: vec![None, None, None],
            extra: extra.iter().map(|s| s.to_string()).collect(),
            net,
        }
    }

    fn net(&self) -> &Net {
        self.net.as_ref().expect("a proxied cluster")
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
            .args(["--listen-peer-urls", &self.listen[i]])
            .args(["--initial-advertise-peer-urls", &self.peers[i]])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_MS.to_string()])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        let child = cmd.spawn().expect("spawn keelson store");
        if let Some(net) = &self.net {
            net.pids.lock().unwrap()[i] = Some(child.id());
        }
        self.procs[i] = Some(Proc { child });
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

    fn opts() -> ConnectOptions {
        ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(CLIENT_TIMEOUT)
    }

    /// A client of member `i` alone, once it answers.
    async fn client(&mut self, i: usize) -> Client {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(p) = self.procs[i].as_mut() {
                if let Some(status) = p.child.try_wait().unwrap() {
                    panic!("m{i} exited ({status}):\n{}", self.logs());
                }
            }
            if let Ok(mut c) = Client::connect([self.endpoint(i)], Some(Self::opts())).await {
                if c.status().await.is_ok() {
                    return c;
                }
            }
            assert!(Instant::now() < deadline, "m{i} not up:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A client of member `i` whose requests carry `hasleader: true`.
    async fn require_leader_client(&self, i: usize) -> Client {
        Client::connect(
            [self.endpoint(i)],
            Some(Self::opts().with_require_leader(true)),
        )
        .await
        .unwrap()
    }

    /// Starts all three and waits until they agree on a leader: a client of each member and
    /// the index of the leader.
    async fn start_all(&mut self) -> (Vec<Client>, usize) {
        for i in 0..3 {
            self.start(i);
        }
        let mut clients = Vec::new();
        for i in 0..3 {
            clients.push(self.client(i).await);
        }
        let leader = until("a leader", || {
            let mut cs = clients.clone();
            async move { agreed_leader(&mut cs).await }
        })
        .await;
        let li = index_of(&mut clients, leader).await;
        (clients, li)
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

/// Which client's member has ID `id`.
async fn index_of(clients: &mut [Client], id: u64) -> usize {
    for (i, c) in clients.iter_mut().enumerate() {
        if c.status().await.unwrap().header().unwrap().member_id() == id {
            return i;
        }
    }
    panic!("{id:x} is not a member");
}

/// Waits until every client's member applied what the first one's has committed, then checks
/// their HashKV agrees at the newest revision.
async fn converged(clients: &mut [Client]) {
    let commit = clients[0].status().await.unwrap().raft_index();
    for c in clients.iter_mut() {
        let c = c.clone();
        until("members to apply the committed log", || {
            let mut c = c.clone();
            async move { (c.status().await.ok()?.raft_applied_index() >= commit).then_some(()) }
        })
        .await;
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

/// Asserts `r` is the error of a request a member without a usable leader gave up on.
fn unavailable<T: std::fmt::Debug>(what: &str, r: Result<T, etcd_client::Error>) {
    match r {
        Err(etcd_client::Error::GRpcStatus(s)) => {
            assert_eq!(s.code(), tonic::Code::Unavailable, "{what}: {s:?}");
            assert!(
                ["etcdserver: request timed out", "etcdserver: no leader"].contains(&s.message()),
                "{what}: {s:?}"
            );
        }
        other => panic!("{what} must fail with Unavailable, got {other:?}"),
    }
}

/// A request's result and how long it took.
type Timed<T> = tokio::task::JoinHandle<(Result<T, etcd_client::Error>, Duration)>;

/// A linearizable get and a put on a cut-off member, started now.
fn doomed_requests(
    c: &Client,
    tag: &'static str,
) -> (
    Timed<etcd_client::GetResponse>,
    Timed<etcd_client::PutResponse>,
) {
    let (mut g, mut p) = (c.clone(), c.clone());
    let get = tokio::spawn(async move {
        let t = Instant::now();
        (g.get("k0", None).await, t.elapsed())
    });
    let put = tokio::spawn(async move {
        let t = Instant::now();
        (p.put(tag, "lost", None).await, t.elapsed())
    });
    (get, put)
}

/// The member behind `c` (a client sending `hasleader: true`), once cut off for an election
/// timeout, fails such requests at once with etcd's `no leader`.
async fn fails_fast_without_leader(c: &Client, what: &str) {
    // Serializable gets answer at once while the member still trusts its leader, so they probe
    // for the moment it stops (one election timeout, plus jitter, after the cut).
    let e = until(&format!("{what} to refuse hasleader requests"), || {
        let mut c = c.clone();
        async move {
            let ser = Some(GetOptions::new().with_serializable());
            c.get("k0", ser).await.err()
        }
    })
    .await;
    no_leader(what, e);
    // A linearizable get, which would otherwise wait for the request deadline.
    let t = Instant::now();
    let e = c.clone().get("k0", None).await.expect_err("hasleader get");
    let took = t.elapsed();
    no_leader(what, e);
    assert!(
        took < Duration::from_millis(ELECTION_MS),
        "{what}: hasleader get took {took:?} to fail, not at once"
    );
}

fn no_leader(what: &str, e: etcd_client::Error) {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            assert_eq!(s.code(), tonic::Code::Unavailable, "{what}: {s:?}");
            assert_eq!(s.message(), "etcdserver: no leader", "{what}");
        }
        other => panic!("{what}: hasleader get failed with {other:?}"),
    }
}

async fn majority_serves(a: &mut Client, b: &mut Client, tag: &str) {
    for i in 0..20 {
        let (k, v) = (format!("{tag}-{i}"), format!("v{i}"));
        let w = if i % 2 == 0 { &mut *a } else { &mut *b };
        w.put(k.as_str(), v.as_str(), None).await.unwrap();
        for r in [&mut *a, &mut *b] {
            let got = r.get(k.as_str(), None).await.unwrap();
            assert_eq!(got.kvs()[0].value(), v.as_bytes(), "majority read of {k}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_members_cannot_serve_and_the_majority_can() {
    let mut cl = Cluster::new(true, &[]);
    let (mut clients, li) = cl.start_all().await;
    for i in 0..10 {
        clients[li]
            .put(format!("k{i}"), "before", None)
            .await
            .unwrap();
    }
    let leader_id = clients[li].status().await.unwrap().leader();

    // --- A follower cut off.
    let fi = (li + 1) % 3;
    let oi = (li + 2) % 3;
    converged(&mut clients).await;
    cl.net().isolate(fi);
    let cut = Instant::now();
    let (get, put) = doomed_requests(&clients[fi], "from-isolated-follower");
    majority_serves(&mut clients[li].clone(), &mut clients[oi].clone(), "a").await;
    // A serializable get answers from what the cut-off member has (stale allowed).
    let ser = clients[fi]
        .get("k0", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_eq!(ser.kvs()[0].value(), b"before");
    assert_eq!(
        clients[fi]
            .get("a-0", Some(GetOptions::new().with_serializable()))
            .await
            .unwrap()
            .count(),
        0,
        "the cut-off member cannot have the majority's writes"
    );
    fails_fast_without_leader(&cl.require_leader_client(fi).await, "isolated follower").await;
    let mut healthy = cl.require_leader_client(li).await;
    healthy
        .get("k0", None)
        .await
        .expect("hasleader get on the leader");
    let (g, took_g) = get.await.unwrap();
    let (p, took_p) = put.await.unwrap();
    eprintln!("isolated follower: get {g:?} after {took_g:?}, put {p:?} after {took_p:?}");
    unavailable("linearizable get on the isolated follower", g);
    unavailable("put on the isolated follower", p);
    assert!(
        cut.elapsed() < Duration::from_secs(20),
        "the isolated member's requests must end at its request deadline"
    );

    cl.net().heal();
    converged(&mut clients).await;
    let got = clients[fi].get("a-19", None).await.unwrap();
    assert_eq!(
        got.kvs()[0].value(),
        b"v19",
        "the healed follower caught up"
    );

    // --- The leader cut off.
    cl.net().isolate(li);
    let cut = Instant::now();
    let (get, put) = doomed_requests(&clients[li], "from-isolated-leader");
    let majority = vec![clients[fi].clone(), clients[oi].clone()];
    let new_leader = until("the majority to elect a new leader", || {
        let mut cs = majority.clone();
        async move { agreed_leader(&mut cs).await.filter(|&l| l != leader_id) }
    })
    .await;
    let took = cut.elapsed();
    eprintln!("new leader {new_leader:x} {took:?} after the cut");
    assert!(
        took < Duration::from_millis(3 * ELECTION_MS),
        "new leader {new_leader:x} after {took:?}, more than three election timeouts"
    );
    majority_serves(&mut majority[0].clone(), &mut majority[1].clone(), "b").await;
    fails_fast_without_leader(&cl.require_leader_client(li).await, "isolated leader").await;
    let mut healthy = cl.require_leader_client(fi).await;
    healthy
        .get("k0", None)
        .await
        .expect("hasleader get on the majority");
    let (g, took_g) = get.await.unwrap();
    let (p, took_p) = put.await.unwrap();
    eprintln!("isolated leader: get {g:?} after {took_g:?}, put {p:?} after {took_p:?}");
    unavailable("linearizable get on the isolated old leader", g);
    unavailable("put on the isolated old leader", p);

    cl.net().heal();
    until("the old leader to follow the new one", || {
        let mut c = clients[li].clone();
        async move { (c.status().await.ok()?.leader() == new_leader).then_some(()) }
    })
    .await;
    converged(&mut clients).await;
    for c in clients.iter_mut() {
        assert_eq!(c.get("b-19", None).await.unwrap().kvs()[0].value(), b"v19");
        for tag in ["from-isolated-follower", "from-isolated-leader"] {
            // Neither was acknowledged; whether it committed is not asserted, but every
            // member must agree (HashKV above), so only log it.
            let n = c.get(tag, None).await.unwrap().count();
            eprintln!("{tag}: {n}");
        }
    }
    drop(cl);
}

/// The highest index openraft's log lines say this member purged its log up to.
fn purged_upto(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("purge log, last_purged"))
        .filter_map(|l| {
            let idx = l.rsplit_once("purge_upto: ")?.1.rsplit_once('.')?.1;
            let digits: String = idx.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_far_behind_catches_up_from_a_snapshot() {
    let mut cl = Cluster::new(false, &["--snapshot-count", "100"]);
    let (mut clients, li) = cl.start_all().await;
    let fi = (li + 1) % 3;
    clients[li].put("k", "first", None).await.unwrap();
    converged(&mut clients).await;
    cl.kill9(fi);

    // Enough entries for several snapshots. The leader purges its log only while no
    // replication to the dead member is in flight over the range (openraft), so writes go on
    // until it has purged past what that member has, and catching up needs a snapshot.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut c = clients[li].clone();
        let (stop, written) = (stop.clone(), written.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while i < 100 || !stop.load(Ordering::Relaxed) {
                c.put(format!("w{w}-{i}"), format!("v{i}"), None)
                    .await
                    .unwrap();
                written.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            i
        }));
    }
    let leader_log = cl.log(li);
    until("the leader to purge its log past index 200", || {
        let s = std::fs::read_to_string(&leader_log).unwrap_or_default();
        std::future::ready((purged_upto(&s) > 200).then_some(()))
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut last = Vec::new();
    for w in writers {
        last.push(w.await.unwrap());
    }

    cl.start(fi);
    clients[fi] = cl.client(fi).await;
    converged(&mut clients).await;
    let log = std::fs::read_to_string(cl.log(fi)).unwrap();
    assert!(
        log.contains("install full snapshot"),
        "m{fi} caught up without a snapshot:\n{}",
        cl.logs()
    );
    let total = written.load(Ordering::Relaxed) as i64;
    for c in clients.iter_mut() {
        let key = format!("w3-{}", last[3] - 1);
        let got = c.get(key.as_str(), None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), format!("v{}", last[3] - 1).as_bytes());
        assert_eq!(
            c.get("w", Some(GetOptions::new().with_prefix().with_count_only()))
                .await
                .unwrap()
                .count(),
            total
        );
    }
    drop(cl);
}
