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
//!   healthy member; a watch stream opened with it ends with the same error once its member has
//!   gone three election timeouts without a leader, and one opened without it stays open;
//! - a member killed while the others write past several snapshots (`--snapshot-count 100`)
//!   catches up from the leader's snapshot once restarted (the leader purged the entries it
//!   missed), and HashKV agrees on all three.

// Each test crate uses only some of the shared helpers.
#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use common::cluster::{connect_opts, converged, new_leader_soon, until, Cluster, ELECTION_MS};

/// Longer than a member's request deadline (etcd's: 5 s plus two election timeouts), so the
/// member's own error arrives rather than the client's.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Three members (not started) for these tests: members read their default log level, as
/// the snapshot test reads their logs.
fn cluster(extra: &[&str]) -> Cluster {
    let mut cl = Cluster::three().with_flags(extra);
    cl.keep_rust_log = false;
    cl
}

/// Puts the partition proxies between the members of `cl` (not started yet): each advertises
/// its proxy's URL and keeps listening on its own.
fn proxied(cl: &mut Cluster) -> Net {
    let (sides, _) = watch::channel([0; 3]);
    let pids = Arc::new(Mutex::new([None; 3]));
    for (to, m) in cl.members.iter_mut().enumerate() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        m.peer_url = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
        let l = tokio::net::TcpListener::from_std(l).unwrap();
        let real: SocketAddr = m.listen_peer_url["http://".len()..].parse().unwrap();
        tokio::spawn(proxy(l, to, real, sides.subscribe(), pids.clone()));
    }
    Net { sides, pids }
}

/// Starts all three (telling `net` their processes) and waits until they agree on a leader:
/// a client of each member and the index of the leader.
async fn start_all(cl: &mut Cluster, net: Option<&Net>) -> (Vec<Client>, usize) {
    for i in 0..3 {
        let pid = cl.start(i);
        if let Some(net) = net {
            net.pids.lock().unwrap()[i] = Some(pid);
        }
    }
    cl.led(CLIENT_TIMEOUT).await
}

/// A client of member `i` whose requests carry `hasleader: true`.
async fn require_leader_client(cl: &Cluster, i: usize) -> Client {
    Client::connect(
        [cl.endpoint(i)],
        Some(connect_opts(CLIENT_TIMEOUT).with_require_leader(true)),
    )
    .await
    .unwrap()
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

/// A linearizable get and a put on a cut-off member.
type Doomed = (
    Timed<etcd_client::GetResponse>,
    Timed<etcd_client::PutResponse>,
);

/// A linearizable get and a put on a cut-off member, started now.
fn doomed_requests(c: &Client, tag: &'static str) -> Doomed {
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

/// While member `i` (`who`, `the` in the requests' messages) is cut off: hasleader requests
/// fail on it at once and succeed on member `h` (`healthy`), and the `doomed` requests
/// started on it fail with Unavailable.
async fn serves_nothing_while_cut_off(
    cl: &Cluster,
    (i, who, the): (usize, &str, &str),
    (h, healthy): (usize, &str),
    (get, put): Doomed,
) {
    fails_fast_without_leader(&require_leader_client(cl, i).await, who).await;
    let mut ok = require_leader_client(cl, h).await;
    ok.get("k0", None)
        .await
        .unwrap_or_else(|e| panic!("hasleader get on {healthy}: {e:?}"));
    let (g, took_g) = get.await.unwrap();
    let (p, took_p) = put.await.unwrap();
    eprintln!("{who}: get {g:?} after {took_g:?}, put {p:?} after {took_p:?}");
    unavailable(&format!("linearizable get on {the}"), g);
    unavailable(&format!("put on {the}"), p);
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
    let mut cl = cluster(&[]);
    let net = proxied(&mut cl);
    let (mut clients, li) = start_all(&mut cl, Some(&net)).await;
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
    converged(&clients).await;
    // Watch streams open on the member before it is cut off: the one that asked for a leader
    // ends once the member has gone three election timeouts without one; the other stays.
    let mut led_watch = require_leader_client(&cl, fi)
        .await
        .watch("w", None)
        .await
        .unwrap();
    let mut plain_watch = clients[fi].clone().watch("w", None).await.unwrap();
    for w in [&mut led_watch, &mut plain_watch] {
        assert!(w.message().await.unwrap().unwrap().created());
    }
    net.isolate(fi);
    let cut = Instant::now();
    let doomed = doomed_requests(&clients[fi], "from-isolated-follower");
    let ended = tokio::time::timeout(Duration::from_secs(30), led_watch.message())
        .await
        .expect("the hasleader watch ends while its member has no leader");
    no_leader(
        "hasleader watch on the isolated follower",
        ended.unwrap_err(),
    );
    assert!(
        cut.elapsed() >= Duration::from_millis(3 * ELECTION_MS),
        "hasleader watch ended after {:?}, before three election timeouts",
        cut.elapsed()
    );
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
    serves_nothing_while_cut_off(
        &cl,
        (fi, "isolated follower", "the isolated follower"),
        (li, "the leader"),
        doomed,
    )
    .await;
    assert!(
        cut.elapsed() < Duration::from_secs(20),
        "the isolated member's requests must end at its request deadline"
    );

    net.heal();
    converged(&clients).await;
    clients[li].put("w", "after", None).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(30), plain_watch.message())
        .await
        .expect("the plain watch delivers the put made after healing")
        .expect("the plain watch stayed open through the partition")
        .expect("an event, not the end of the stream");
    assert_eq!(event.events()[0].kv().unwrap().value(), b"after");
    let got = clients[fi].get("a-19", None).await.unwrap();
    assert_eq!(
        got.kvs()[0].value(),
        b"v19",
        "the healed follower caught up"
    );

    // --- The leader cut off.
    let lease = clients[li].lease_grant(30, None).await.unwrap().id();
    net.isolate(li);
    let cut = Instant::now();
    let doomed = doomed_requests(&clients[li], "from-isolated-leader");
    let majority = vec![clients[fi].clone(), clients[oi].clone()];
    let new_leader = new_leader_soon(&majority, leader_id, cut, "the cut").await;
    majority_serves(&mut majority[0].clone(), &mut majority[1].clone(), "b").await;
    // The cut-off old leader still believes it leads, but it must not renew leases any more:
    // the new leader keeps lease time now, and never hears of such a renewal.
    let renewal = tokio::time::timeout(Duration::from_secs(30), async {
        let (mut keeper, mut acks) = clients[li].clone().lease_keep_alive(lease).await?;
        keeper.keep_alive().await?;
        acks.message().await
    })
    .await
    .expect("a keep-alive through the cut-off leader never ended");
    match renewal {
        Ok(Some(ack)) => assert!(
            ack.ttl() <= 0,
            "the cut-off old leader renewed lease {lease:x}: {ack:?}"
        ),
        other => eprintln!("keep-alive through the cut-off leader: {other:?}"),
    }
    serves_nothing_while_cut_off(
        &cl,
        (li, "isolated leader", "the isolated old leader"),
        (fi, "the majority"),
        doomed,
    )
    .await;

    net.heal();
    until("the old leader to follow the new one", || {
        let mut c = clients[li].clone();
        async move { (c.status().await.ok()?.leader() == new_leader).then_some(()) }
    })
    .await;
    converged(&clients).await;
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
    let mut cl = cluster(&["--snapshot-count", "100"]);
    let (mut clients, li) = start_all(&mut cl, None).await;
    let fi = (li + 1) % 3;
    clients[li].put("k", "first", None).await.unwrap();
    converged(&clients).await;
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
    let leader_log = cl.log(li).to_path_buf();
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
    clients[fi] = cl.client_with(fi, CLIENT_TIMEOUT).await;
    converged(&clients).await;
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
