//! Cluster control against real processes: three-member clusters of `keelson store` (and of
//! etcd 3.4, the reference) that are killed, paused, partitioned, replaced and corrupted, and
//! must serve writes again after healing.
//!
//! What must hold:
//! - killing the leader gets the others a new leader that takes writes; the old one restarts
//!   on its data and serves;
//! - a paused member completes nothing while the other two do; continued, it serves;
//! - a member cut off by a partition cannot complete a write, while a write through the
//!   majority completes — with whichever mechanism the machine offers (namespaces as root),
//!   and with the harness's proxies when forced;
//! - a member removed, wiped and added back serves under a new member ID with all earlier data;
//! - a member whose log was damaged either serves again (etcd repairs what looks like a torn
//!   write) or refuses to start saying its log is corrupt (Keelson, for any record whose bytes
//!   are wrong, the last one included), and is then replaced; either way the cluster serves
//!   every earlier write;
//! - a nemesis run records its faults and leaves every member serving.
//!
//! The `keelson` binary is built (`cargo build --bin keelson`) when the target directory has
//! none.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use jepsen::cluster::{Cluster, ClusterOpts, Damage, Restart, Target};
use jepsen::nemesis::{self, NemesisKind, Timing};
use jepsen::net::{Cuts, Network, Shape};
use keelson_proto::etcdserverpb::kv_client::KvClient;
use keelson_proto::etcdserverpb::{PutRequest, RangeRequest};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tonic::transport::Endpoint;

/// Bound on anything awaited, so a hang fails the test.
const PATIENCE: Duration = Duration::from_secs(30);
/// Long enough for a healthy write, far shorter than a member's own request deadline.
const WRITE: Duration = Duration::from_secs(3);

fn keelson_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(|t| root.join(t))
            .unwrap_or_else(|| root.join("target"));
        let bin = target.join("debug").join("keelson");
        if !bin.is_file() {
            let ok = Command::new(env!("CARGO"))
                .args(["build", "--bin", "keelson"])
                .current_dir(root)
                .status()
                .expect("running cargo build --bin keelson")
                .success();
            assert!(ok, "cargo build --bin keelson failed");
        }
        bin
    })
    .clone()
}

fn opts(target: Target, dir: &Path, network: Network) -> ClusterOpts {
    let mut o = ClusterOpts::new(target, dir, keelson_bin());
    o.heartbeat_ms = 50;
    o.election_timeout_ms = 500;
    o.network = network;
    o
}

async fn kv(ep: &str) -> Result<KvClient<tonic::transport::Channel>, String> {
    let ch = Endpoint::from_shared(ep.to_string())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .map_err(|e| format!("connect {ep}: {e}"))?;
    Ok(KvClient::new(ch))
}

/// A put through `ep` that must complete within `within`.
async fn put(ep: &str, key: &str, value: &str, within: Duration) -> Result<(), String> {
    let mut c = kv(ep).await?;
    let req = PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ..Default::default()
    };
    match tokio::time::timeout(within, c.put(req)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(format!("put {key} via {ep}: {s:?}")),
        Err(_) => Err(format!("put {key} via {ep}: no answer within {within:?}")),
    }
}

/// A linearizable get through `ep`.
async fn get(ep: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
    let mut c = kv(ep).await?;
    let req = RangeRequest {
        key: key.as_bytes().to_vec().into(),
        ..Default::default()
    };
    match tokio::time::timeout(WRITE, c.range(req)).await {
        Ok(Ok(r)) => Ok(r.into_inner().kvs.first().map(|kv| kv.value.to_vec())),
        Ok(Err(s)) => Err(format!("get {key} via {ep}: {s:?}")),
        Err(_) => Err(format!("get {key} via {ep}: no answer")),
    }
}

/// Retries a put (through a cluster changing leaders) until it completes.
async fn put_eventually(ep: &str, key: &str, value: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match put(ep, key, value, WRITE).await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn new_leader(c: &Cluster, old: usize) -> usize {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(l) = c.leader().await.filter(|&l| l != old) {
            return l;
        }
        assert!(Instant::now() < deadline, "no new leader after m{old}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Cuts member `iso` off; a write through it cannot complete while one through the majority
/// does; healed, it serves again and has the majority's write.
async fn partition_blocks_the_isolated_member(c: &Cluster, iso: usize, tag: &str) {
    let eps = c.endpoints();
    c.partition(&Shape::Isolate(iso).cuts(c.len())).unwrap();
    let doomed = put(&eps[iso], &format!("{tag}-lost"), "x", WRITE).await;
    assert!(
        doomed.is_err(),
        "a write through isolated m{iso} completed ({:?})",
        c.network()
    );
    let other = (iso + 1) % c.len();
    put_eventually(&eps[other], &format!("{tag}-majority"), "ok").await;
    c.partition(&Cuts::none()).unwrap();
    c.wait_healthy(PATIENCE).await.unwrap();
    put(&eps[iso], &format!("{tag}-after"), "ok", WRITE)
        .await
        .unwrap();
    assert_eq!(
        get(&eps[iso], &format!("{tag}-majority")).await.unwrap(),
        Some(b"ok".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keelson_members_are_killed_paused_and_partitioned() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(opts(Target::Keelson, dir.path(), Network::Auto))
        .await
        .unwrap();
    let eps = c.endpoints();
    assert_eq!(eps.len(), 3);
    eprintln!("network: {:?}, endpoints {eps:?}", c.network());
    for (i, ep) in eps.iter().enumerate() {
        put(ep, &format!("k{i}"), "v", WRITE).await.unwrap();
    }

    // Kill the leader: the other two elect one and take writes; it comes back on its data.
    let l = c.leader().await.expect("a leader");
    c.kill(l).await;
    assert!(!c.is_running(l));
    let l2 = new_leader(&c, l).await;
    put_eventually(&eps[l2], "after-kill", "v").await;
    c.restart(l).unwrap();
    c.wait_serving(l, PATIENCE).await.unwrap();
    assert_eq!(
        get(&eps[l], "after-kill").await.unwrap(),
        Some(b"v".to_vec())
    );

    // Pause a follower: it answers nothing, the others go on.
    let l = c.leader().await.expect("a leader");
    let f = (l + 1) % 3;
    c.pause(f).unwrap();
    assert!(put(&eps[f], "via-paused", "v", Duration::from_secs(1))
        .await
        .is_err());
    put(&eps[l], "while-paused", "v", WRITE).await.unwrap();
    c.resume(f).unwrap();
    c.wait_serving(f, PATIENCE).await.unwrap();
    assert_eq!(
        get(&eps[f], "while-paused").await.unwrap(),
        Some(b"v".to_vec())
    );

    // Cut a follower off.
    let l = c.leader().await.expect("a leader");
    partition_blocks_the_isolated_member(&c, (l + 2) % 3, "iso").await;

    let log = std::fs::read_to_string(dir.path().join("cluster/control.log")).unwrap();
    assert!(log.contains("kill -9") && log.contains("SIGSTOP") && log.contains("cut m"));
    c.shutdown().await;
    assert!((0..3).all(|i| !c.is_running(i)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_partition_when_forced() {
    for target in [Target::Keelson, Target::Etcd] {
        let dir = tempfile::tempdir().unwrap();
        let c = Cluster::start(opts(target, dir.path(), Network::Proxy))
            .await
            .unwrap();
        assert_eq!(c.network(), Network::Proxy);
        // Isolate the leader: the majority must elect another to take the write.
        let l = c.leader().await.expect("a leader");
        partition_blocks_the_isolated_member(&c, l, "proxied").await;
        c.shutdown().await;
    }
}

/// Damages member `i`'s log and restarts it: it must serve (Keelson: only after damage to its
/// last record) or refuse saying its log is corrupt, and is then replaced. Returns whether it
/// refused.
async fn corrupt_and_recover(c: &Cluster, i: usize, seed: u64, damage: Damage) -> bool {
    let mut rng = StdRng::seed_from_u64(seed);
    c.kill(i).await;
    let snapshot = damage == Damage::Snapshot;
    let damage = c
        .corrupt(i, damage, &mut rng)
        .unwrap()
        .expect("a file to damage");
    if snapshot {
        assert!(damage.file.to_string_lossy().ends_with(".snap"), "{damage}");
    }
    let how = c.restart_checked(i, PATIENCE).await.unwrap();
    eprintln!("{:?} m{i}: {damage}: {how:?}", c.target());
    let refused = match how {
        Restart::Serving => {
            // etcd (the reference) repairs what looks like a torn write anywhere in its last
            // file; Keelson never starts on a record whose bytes are wrong.
            assert_ne!(
                c.target(),
                Target::Keelson,
                "started on damaged acknowledged data: {damage}"
            );
            false
        }
        Restart::Exited { why, .. } => {
            // A damaged snapshot may make etcd fail in several ways; a damaged log must be named.
            let why = why.to_lowercase();
            assert!(
                snapshot
                    || why.contains("corrupt")
                    || why.contains("crc")
                    || why.contains("checksum"),
                "{why}"
            );
            c.replace_member(i).await.unwrap();
            true
        }
        Restart::NotServing => panic!("m{i} neither served nor refused"),
    };
    c.wait_serving(i, PATIENCE).await.unwrap();
    refused
}

/// How many of the damaged members refused to start.
async fn replace_and_corrupt(target: Target, damages: &[Damage]) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(target, dir.path(), Network::Auto);
    // etcd writes a snapshot file every 100 entries, so there is one to damage.
    o.snapshot_count = 100;
    let c = Cluster::start(o).await.unwrap();
    let eps = c.endpoints();
    let writes = if target == Target::Etcd { 150 } else { 20 };
    for k in 0..writes {
        put(&eps[k % 3], &format!("before-{k}"), "v", WRITE)
            .await
            .unwrap();
    }
    let l = c.leader().await.expect("a leader");
    let f = (l + 1) % 3;
    let old_id = c.member_id(f).expect("known member ID");
    c.replace_member(f).await.unwrap();
    c.wait_serving(f, PATIENCE).await.unwrap();
    assert_ne!(c.member_id(f), Some(old_id), "added back as a new member");
    assert_eq!(
        get(&eps[f], &format!("before-{}", writes - 1))
            .await
            .unwrap(),
        Some(b"v".to_vec())
    );
    put(&eps[f], "after-replace", "v", WRITE).await.unwrap();

    let mut refusals = 0;
    for (seed, &damage) in damages.iter().enumerate() {
        let victim = (l + 2) % 3;
        refusals += corrupt_and_recover(&c, victim, seed as u64, damage).await as usize;
        put(&eps[victim], &format!("after-corrupt-{seed}"), "v", WRITE)
            .await
            .unwrap();
        for ep in &eps {
            assert_eq!(get(ep, "before-0").await.unwrap(), Some(b"v".to_vec()));
        }
    }
    eprintln!(
        "{target:?}: {refusals} of {} damaged members refused to start",
        damages.len()
    );
    c.shutdown().await;
    refusals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keelson_members_are_replaced_and_survive_corruption() {
    // A record whose bytes are wrong, the last one included, may have been acknowledged:
    // Keelson must refuse to start on it (only a record torn by a crash is dropped).
    let damages = [
        Damage::LogRecord { from_end: 2 },
        Damage::LogRecord { from_end: 1 },
        Damage::LogRecord { from_end: 0 },
    ];
    let refused = replace_and_corrupt(Target::Keelson, &damages).await;
    assert_eq!(refused, damages.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_members_are_partitioned_replaced_and_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(opts(Target::Etcd, dir.path(), Network::Auto))
        .await
        .unwrap();
    let l = c.leader().await.expect("a leader");
    partition_blocks_the_isolated_member(&c, (l + 1) % 3, "etcd").await;
    c.shutdown().await;
    drop(dir);
    let damages = [Damage::LogTail, Damage::LogTail, Damage::Snapshot];
    let _ = replace_and_corrupt(Target::Etcd, &damages).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nemesis_run_records_its_faults_and_heals() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(opts(Target::Keelson, dir.path(), Network::Auto))
        .await
        .unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let timing = Timing {
        fault: Duration::from_secs(1)..Duration::from_secs(2),
        healthy: Duration::from_millis(500)..Duration::from_secs(1),
    };
    let run = tokio::spawn(nemesis::run_with(
        NemesisKind::All,
        Arc::clone(&c),
        42,
        start,
        rx,
        timing,
    ));
    tokio::time::sleep(Duration::from_secs(15)).await;
    stop.send_replace(true);
    let events = run.await.unwrap().unwrap();
    eprintln!("{events:#?}");
    assert!(!events.is_empty());
    for e in &events {
        assert!(e.start_ns < e.end_ns, "{e:?}");
        assert!(
            ["kill", "pause", "partition", "member", "corrupt"].contains(&e.kind.as_str()),
            "{e:?}"
        );
    }
    assert!(events.windows(2).all(|w| w[0].end_ns <= w[1].start_ns));
    // Healed: every member serves and takes writes.
    for (i, ep) in c.endpoints().iter().enumerate() {
        put(ep, &format!("after-nemesis-{i}"), "v", WRITE)
            .await
            .unwrap();
    }
    c.shutdown().await;
}
