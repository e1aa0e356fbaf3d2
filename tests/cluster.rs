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
//!   the keep-alives stop the lease expires and its key is deleted;
//! - `etcdctl move-leader` against the leader makes the target lead (every member agrees); a
//!   follower refuses MoveLeader (`not leader`), as does the leader for an unknown target;
//! - `keelson up --store-members 3` runs the three in one process: etcdctl's
//!   `endpoint status --cluster` shows three members, one leader, equal raft indexes, and
//!   SIGTERM stops the process cleanly.

// Each test crate uses only some of the shared helpers.
#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, LeaseTimeToLiveOptions, PutOptions};

use common::cluster::{
    agreed_leader, connect_opts, converged, has_all, member_id, new_leader_soon, until, Cluster,
    Load,
};

const WRITERS: usize = 4;
/// Per-request deadline of the test's clients.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_survive_the_leader_being_killed() {
    let mut cl = Cluster::three();
    for i in 0..3 {
        cl.start(i);
    }
    let (mut clients, li) = cl.led(CLIENT_TIMEOUT).await;
    let leader = member_id(&clients[li]).await;
    let fi = (li + 1) % 3;

    // A write through a follower, read back from that follower.
    clients[fi].put("via-follower", "v", None).await.unwrap();
    let got = clients[fi].get("via-follower", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"v");

    // MemberList: all three, with their client URLs (each member publishes its own).
    until("every member to list all three with client URLs", || {
        let mut cs = clients.clone();
        let want: Vec<String> = cl.members.iter().map(|m| m.client_url.clone()).collect();
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

    // A lease kept alive through a follower outlives its TTL, and must outlive the leader: the
    // new leader never saw the keep-alives (they renew the leader's deadlines), so it must give
    // the lease a fresh TTL when it takes over (etcd's Promote), not revoke it at once.
    let lease = clients[fi].lease_grant(2, None).await.unwrap().id();
    clients[fi]
        .put("leased", "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    let mut kc = clients[fi].clone();
    let keep_alive = tokio::spawn(async move {
        // Keep-alives may fail while there is no leader (the stream then ends); they are sent
        // again on a new stream. A lease the leader no longer knows answers TTL 0.
        loop {
            if let Ok((mut keeper, mut acks)) = kc.lease_keep_alive(lease).await {
                while keeper.keep_alive().await.is_ok() {
                    let Ok(Some(ack)) = acks.message().await else {
                        break;
                    };
                    assert!(ack.ttl() > 0, "lease {lease:x} expired while kept alive");
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Let the grant's own deadline (2 s) pass on every member while the lease is kept alive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !keep_alive.is_finished(),
        "keep-alive failed: {:?}",
        keep_alive.await
    );

    // Steady load over all endpoints while the leader is killed.
    let all: Vec<String> = (0..3).map(|i| cl.endpoint(i)).collect();
    let mut load = Load::default();
    for w in 0..WRITERS {
        let c = Client::connect(all.clone(), Some(connect_opts(CLIENT_TIMEOUT)))
            .await
            .unwrap();
        load.writer(c, &w.to_string());
    }
    load.reached("the load to get going", 50).await;

    cl.kill9(li);
    let killed = Instant::now();
    let mut survivors: Vec<Client> = (0..3)
        .filter(|&i| i != li)
        .map(|i| clients[i].clone())
        .collect();
    new_leader_soon(&survivors, leader, killed, "the kill").await;

    let resumed_from = load.count();
    load.reached("writes to resume", resumed_from + 50).await;
    let acked = load.stop().await;
    converged(&survivors).await;
    for c in &survivors {
        has_all(c, &acked).await;
    }
    // Well past the new leader's first expiry round (500 ms): the kept-alive lease lives on.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !keep_alive.is_finished(),
        "keep-alive through the new leader failed: {:?}",
        keep_alive.await
    );
    for c in survivors.iter_mut() {
        let got = c.get("leased", None).await.unwrap();
        assert_eq!(
            got.count(),
            1,
            "the kept-alive lease's key vanished after the leader change"
        );
    }
    keep_alive.abort();

    // The killed member comes back on its data dir and catches up. Its store is fsynced
    // lazily (the log is the durable record), so it serves only once it has applied what was
    // committed: even a serializable read, its first answer, has every acknowledged write.
    cl.start(li);
    clients[li] = cl.client(li).await;
    for (k, v) in &acked {
        let got = clients[li]
            .get(k.as_str(), Some(GetOptions::new().with_serializable()))
            .await
            .unwrap();
        assert_eq!(
            got.kvs().first().map(|kv| kv.value()),
            Some(v.as_bytes()),
            "the restarted member answered a serializable get of {k} without it"
        );
    }
    survivors.push(clients[li].clone());
    converged(&survivors).await;
    let got = clients[li].get("via-follower", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"v");
}

/// A leader paused (SIGSTOP) while a follower keeps a lease alive through the new leader must
/// not revoke that lease when it resumes: its own deadlines went stale while it slept, and it
/// may believe it still leads for a moment (etcd 3.4's #15247). It revokes only after a
/// read-index round confirms it leads, and never forwards the revoke to the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_leader_does_not_revoke_leases_kept_alive_elsewhere() {
    let mut cl = Cluster::three();
    for i in 0..3 {
        cl.start(i);
    }
    let (clients, li) = cl.led(CLIENT_TIMEOUT).await;
    let leader = member_id(&clients[li]).await;
    let fi = (li + 1) % 3;
    let mut fc = clients[fi].clone();
    let lease = fc.lease_grant(2, None).await.unwrap().id();
    fc.put(
        "paused-leased",
        "v",
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    let mut kc = fc.clone();
    let keep_alive = tokio::spawn(async move {
        loop {
            if let Ok((mut keeper, mut acks)) = kc.lease_keep_alive(lease).await {
                while keeper.keep_alive().await.is_ok() {
                    let Ok(Some(ack)) = acks.message().await else {
                        break;
                    };
                    assert!(ack.ttl() > 0, "lease {lease:x} expired while kept alive");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    cl.members[li].signal("STOP");
    let paused = Instant::now();
    let others: Vec<Client> = (0..3)
        .filter(|&i| i != li)
        .map(|i| clients[i].clone())
        .collect();
    new_leader_soon(&others, leader, paused, "the pause").await;
    // Longer than the lease's TTL: every deadline the paused leader holds has passed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cl.members[li].signal("CONT");
    // It rejoins as a follower; by then its expiry loop has run (every 500 ms) several times.
    until("the old leader to follow the new one", || {
        let mut c = clients[li].clone();
        async move {
            let s = c.status().await.ok()?;
            (s.leader() != leader).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    if keep_alive.is_finished() {
        panic!("keep-alive failed: {:?}\n{}", keep_alive.await, cl.logs());
    }
    for mut c in clients {
        let got = c
            .get("paused-leased", Some(GetOptions::new().with_serializable()))
            .await
            .unwrap();
        assert_eq!(
            got.count(),
            1,
            "the resumed old leader revoked a kept-alive lease"
        );
    }
    keep_alive.abort();
}

/// Starts three members and waits until they agree on a leader: the cluster, a client of each
/// member, and the index of the leader's client.
async fn started(extra: &[&str]) -> (Cluster, Vec<Client>, usize) {
    let mut cl = Cluster::three().with_flags(extra);
    for i in 0..3 {
        cl.start(i);
    }
    let (clients, li) = cl.led(CLIENT_TIMEOUT).await;
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

/// `etcdctl move-leader` against the leader hands leadership to the member named; a follower
/// refuses MoveLeader and an unknown target is refused, with etcd's errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn move_leader_hands_leadership_to_the_target() {
    let (cl, mut clients, li) = started(&[]).await;
    let fi = (li + 1) % 3;
    let target = member_id(&clients[fi]).await;

    // Only the leader accepts it (etcdctl finds the leader itself; a raw client may not).
    let e = clients[fi].move_leader(target).await.unwrap_err();
    assert!(e.to_string().contains("etcdserver: not leader"), "{e}");
    let e = clients[li].move_leader(0x1234).await.unwrap_err();
    assert!(
        e.to_string().contains("etcdserver: bad leader transferee"),
        "{e}"
    );

    let endpoint = cl.endpoint(li);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &endpoint,
                "move-leader",
                &format!("{target:x}"),
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "etcdctl move-leader: {stdout}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cl.logs()
    );
    assert!(
        stdout.contains("Leadership transferred from") && stdout.contains(&format!("{target:x}")),
        "{stdout}"
    );
    // The old leader answered once it saw the target lead: all three agree now or soon.
    until("every member to see the target lead", || {
        let cs = clients.clone();
        async move { (agreed_leader(&cs).await? == target).then_some(()) }
    })
    .await;
    // Writes go on under the new leader.
    clients[li].put("after-move", "v", None).await.unwrap();
    drop(cl);
}

/// Client ports `base`, `base + 10`, `base + 20` and the peer ports one above each, all free
/// right now (bound and released).
fn free_up_ports() -> u16 {
    loop {
        let base = common::proc::free_port();
        if base > u16::MAX - 30 {
            continue;
        }
        let all =
            [0, 1, 10, 11, 20, 21].map(|o| std::net::TcpListener::bind(("127.0.0.1", base + o)));
        if all.iter().all(|l| l.is_ok()) {
            return base;
        }
    }
}

/// `etcdctl endpoint status --cluster -w table` against `endpoint`: per member row,
/// (is leader, raft index).
fn status_table(endpoint: &str) -> Option<Vec<(bool, u64)>> {
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            endpoint,
            "endpoint",
            "status",
            "--cluster",
            "-w",
            "table",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // | ENDPOINT | ID | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | ...
    text.lines()
        .filter(|l| l.starts_with("| http"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            Some((cells[5] == "true", cells[8].parse().ok()?))
        })
        .collect()
}

/// `keelson up --store-members 3` runs a three-member cluster in one process: etcdctl sees
/// three members, one leader, equal raft indexes once writes stop; SIGTERM stops it promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_runs_three_members_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut attempt = 0;
    let (mut up, endpoint) = loop {
        attempt += 1;
        let base = free_up_ports();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args([
                "up",
                "--store-members",
                "3",
                "--client-port",
                &base.to_string(),
                "--secure-port",
                &common::proc::free_port().to_string(),
            ])
            .arg("--data-dir")
            .arg(dir.path().join(format!("try{attempt}")))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("up.log")).unwrap())
            .spawn()
            .unwrap();
        let mut up = common::proc::ChildGuard::new(child);
        let endpoint = format!("http://127.0.0.1:{base}");
        // Up once a write goes through; a port taken meanwhile makes it exit: try new ports.
        let started = until("keelson up to serve (or exit)", || {
            let exited = up.exited();
            let endpoint = endpoint.clone();
            async move {
                if exited.is_some() {
                    return Some(false);
                }
                let put = tokio::task::spawn_blocking(move || {
                    std::process::Command::new("etcdctl")
                        .env("ETCDCTL_API", "3")
                        .args(["--endpoints", &endpoint, "put", "up", "v"])
                        .output()
                        .unwrap()
                })
                .await
                .unwrap();
                put.status.success().then_some(true)
            }
        })
        .await;
        if started {
            break (up, endpoint);
        }
        assert!(
            attempt < 5,
            "keelson up exited:\n{}",
            common::cluster::log_tail(&dir.path().join("up.log"))
        );
    };

    // Three members, exactly one leader, and (writes stopped) every raft index equal.
    let e = endpoint.clone();
    let rows = until("three members, one leader, equal raft indexes", || {
        let e = e.clone();
        async move {
            let rows = tokio::task::spawn_blocking(move || status_table(&e))
                .await
                .unwrap()?;
            let leaders = rows.iter().filter(|r| r.0).count();
            let equal = rows.windows(2).all(|w| w[0].1 == w[1].1);
            (rows.len() == 3 && leaders == 1 && equal).then_some(rows)
        }
    })
    .await;
    eprintln!("endpoint status: {rows:?}");

    // SIGTERM stops all three, cleanly, within a bounded time.
    let pid = up.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = until("keelson up to stop after SIGTERM", || {
        let s = up.exited();
        async move { s }
    })
    .await;
    assert!(
        status.success(),
        "keelson up stopped with {status}:\n{}",
        common::cluster::log_tail(&dir.path().join("up.log"))
    );
}
