//! Membership changes on a cluster of real `keelson store` processes, driven with etcdctl (API
//! v3) as an operator would, while a writer keeps writing.
//!
//! What must hold:
//! - `etcdctl member add m4 --learner` answers etcd's lines (`Member <id> added to cluster
//!   <cid>`, then `ETCD_NAME` / `ETCD_INITIAL_CLUSTER` / `ETCD_INITIAL_CLUSTER_STATE="existing"`),
//!   and every member lists m4 as an unstarted learner (no name, no client URLs);
//! - promoting it before it has caught up is refused with etcd's error, as is promoting a voter;
//! - m4 started with the printed flags learns the ID MemberAdd gave it, catches up, and is
//!   promoted; it then lists as a voter with its name and client URLs;
//! - removing a follower, then the leader, leaves a cluster that keeps a leader and accepts
//!   writes; removing or updating an unknown member answers "member not found";
//! - every acknowledged write is readable on every remaining member and their HashKV agrees.

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
/// Bound on anything the test waits for, so a hang fails instead of blocking the suite.
const PATIENCE: Duration = Duration::from_secs(30);

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

/// Members by name (`m0`..); a member's client and peer URL.
struct Cluster {
    dir: tempfile::TempDir,
    clients: BTreeMap<String, String>,
    peers: BTreeMap<String, String>,
    procs: BTreeMap<String, Proc>,
}

impl Cluster {
    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    fn endpoint(&self, name: &str) -> String {
        self.clients[name].trim_start_matches("http://").to_string()
    }

    fn logs(&self) -> String {
        self.procs
            .keys()
            .map(|n| format!("--- {n}:\n{}", log_tail(&self.log(n))))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn start(&mut self, name: &str, initial_cluster: &str, state: &str) {
        let out = File::options()
            .create(true)
            .append(true)
            .open(self.log(name))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keelson"));
        cmd.arg("store")
            .args(["--name", name])
            .arg("--data-dir")
            .arg(self.dir.path().join(name))
            .args(["--listen-client-urls", &self.clients[name]])
            .args(["--advertise-client-urls", &self.clients[name]])
            .args(["--listen-peer-urls", &self.peers[name]])
            .args(["--initial-advertise-peer-urls", &self.peers[name]])
            .args(["--initial-cluster", initial_cluster])
            .args(["--initial-cluster-state", state])
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
        let child = cmd.spawn().expect("spawn keelson store");
        self.procs.insert(name.to_string(), Proc(child));
    }

    /// A client of member `name` alone, once it answers Status.
    async fn client(&mut self, name: &str) -> Client {
        let deadline = Instant::now() + PATIENCE;
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(10));
        loop {
            if let Some(p) = self.procs.get_mut(name) {
                if let Some(status) = p.0.try_wait().unwrap() {
                    panic!("{name} exited ({status}):\n{}", self.logs());
                }
            }
            if let Ok(mut c) = Client::connect([self.endpoint(name)], Some(opts.clone())).await {
                if c.status().await.is_ok() {
                    return c;
                }
            }
            assert!(Instant::now() < deadline, "{name} not up:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `ETCDCTL_API=3 etcdctl --endpoints=<endpoint> <args>`: (success, stdout, stderr).
async fn etcdctl(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new("etcdctl");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ETCDCTL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run etcdctl"))
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader all of `clients` agree on.
async fn agreed_leader(clients: &[Client]) -> Option<u64> {
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

async fn member_id(c: &Client) -> u64 {
    c.clone()
        .status()
        .await
        .unwrap()
        .header()
        .unwrap()
        .member_id()
}

/// The member IDs `c`'s MemberList shows, with (name, learner, client URLs).
async fn listed(c: &Client) -> BTreeMap<u64, (String, bool, Vec<String>)> {
    let r = c.clone().member_list().await.unwrap();
    r.members()
        .iter()
        .map(|m| {
            (
                m.id(),
                (
                    m.name().to_string(),
                    m.is_learner(),
                    m.client_urls().to_vec(),
                ),
            )
        })
        .collect()
}

/// `etcdctl member <verb> <id>` until it succeeds (retrying only while `retry_while` is in
/// its error), returning its stdout.
async fn member_cmd(endpoint: &str, verb: &str, id: u64, retry_while: Option<&str>) -> String {
    let hex = format!("{id:x}");
    until(&format!("member {verb} {hex}"), || async {
        let (ok, out, err) = etcdctl(endpoint, &["member", verb, &hex]).await;
        if ok {
            return Some(out);
        }
        match retry_while {
            Some(e) if err.contains(e) => None,
            _ => panic!("member {verb} {hex} failed: {err}"),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_are_added_promoted_and_removed_under_load() {
    let p = free_ports(8);
    let names: Vec<String> = ["m0", "m1", "m2", "m4"].map(String::from).to_vec();
    let mut cl = Cluster {
        dir: tempfile::tempdir().unwrap(),
        clients: names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), format!("http://127.0.0.1:{}", p[i])))
            .collect(),
        peers: names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), format!("http://127.0.0.1:{}", p[4 + i])))
            .collect(),
        procs: BTreeMap::new(),
    };
    let initial: Vec<String> = names[..3]
        .iter()
        .map(|n| format!("{n}={}", cl.peers[n]))
        .collect();
    for n in &names[..3] {
        cl.start(n, &initial.join(","), "new");
    }
    let mut clients: BTreeMap<String, Client> = BTreeMap::new();
    let mut ids: BTreeMap<String, u64> = BTreeMap::new();
    for n in &names[..3] {
        let c = cl.client(n).await;
        ids.insert(n.clone(), member_id(&c).await);
        clients.insert(n.clone(), c);
    }
    let leader = until("a leader", || {
        let cs: Vec<Client> = clients.values().cloned().collect();
        async move { agreed_leader(&cs).await }
    })
    .await;
    let name_of = |id: u64, ids: &BTreeMap<String, u64>| {
        ids.iter()
            .find(|(_, &v)| v == id)
            .map(|(n, _)| n.clone())
            .expect("a known member")
    };
    let leader_name = name_of(leader, &ids);
    let follower = names[..3]
        .iter()
        .find(|n| **n != leader_name)
        .unwrap()
        .clone();

    // A writer through the three original members, throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeMap::<String, String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let writer = {
        let eps: Vec<String> = names[..3].iter().map(|n| cl.endpoint(n)).collect();
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(10));
        let mut c = Client::connect(eps, Some(opts)).await.unwrap();
        let (stop, acked, count) = (stop.clone(), acked.clone(), count.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (k, v) = (format!("w-{i}"), format!("v-{i}"));
                i += 1;
                match c.put(k.clone(), v.clone(), None).await {
                    Ok(_) => {
                        acked.lock().await.insert(k, v);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    // Not acknowledged: nothing is asserted on it.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        })
    };
    let progressed = |n: usize| {
        let count = count.clone();
        async move {
            let from = count.load(Ordering::Relaxed);
            until("writes to go on", || {
                let c = count.load(Ordering::Relaxed);
                async move { (c >= from + n).then_some(()) }
            })
            .await
        }
    };
    progressed(50).await;

    // Add m4 as a learner, through a follower.
    let fep = cl.endpoint(&follower);
    let (ok, out, err) = etcdctl(
        &fep,
        &[
            "member",
            "add",
            "m4",
            "--learner",
            &format!("--peer-urls={}", cl.peers["m4"]),
        ],
    )
    .await;
    assert!(ok, "member add failed: {err}");
    let first: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(&first[..1], ["Member"], "{out}");
    assert_eq!(&first[2..5], ["added", "to", "cluster"], "{out}");
    let m4 = u64::from_str_radix(first[1], 16).unwrap();
    let cluster_id = clients[&follower]
        .clone()
        .status()
        .await
        .unwrap()
        .header()
        .unwrap()
        .cluster_id();
    assert_eq!(first[5], format!("{cluster_id:x}"), "{out}");
    let line = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {out}"))
            .trim_matches('"')
            .to_string()
    };
    assert_eq!(line("ETCD_NAME"), "m4");
    assert_eq!(line("ETCD_INITIAL_CLUSTER_STATE"), "existing");
    assert_eq!(line("ETCD_INITIAL_ADVERTISE_PEER_URLS"), cl.peers["m4"]);
    let initial_cluster = line("ETCD_INITIAL_CLUSTER");
    let mut want: Vec<String> = names
        .iter()
        .map(|n| format!("{n}={}", cl.peers[n]))
        .collect();
    let mut got: Vec<String> = initial_cluster.split(',').map(String::from).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "ETCD_INITIAL_CLUSTER");

    // Every member lists it as an unstarted learner.
    for (n, c) in &clients {
        let ms = listed(c).await;
        assert_eq!(ms.len(), 4, "{n}: {ms:?}");
        assert_eq!(ms[&m4], (String::new(), true, vec![]), "{n}");
    }

    // Not running yet, so far behind: promotion is refused, as is promoting a voter.
    let (ok, _, err) = etcdctl(&fep, &["member", "promote", &format!("{m4:x}")]).await;
    assert!(!ok);
    assert!(
        err.contains("etcdserver: can only promote a learner member which is in sync with leader"),
        "{err}"
    );
    let (ok, _, err) = etcdctl(&fep, &["member", "promote", &format!("{leader:x}")]).await;
    assert!(!ok);
    assert!(
        err.contains("Error: etcdserver: can only promote a learner member\n"),
        "{err}"
    );

    // m4 joins with what member add printed, learns its ID and catches up.
    cl.start("m4", &initial_cluster, "existing");
    let c4 = cl.client("m4").await;
    assert_eq!(member_id(&c4).await, m4, "m4 has the ID member add gave it");
    ids.insert("m4".into(), m4);
    progressed(20).await;
    let commit = clients[&leader_name]
        .clone()
        .status()
        .await
        .unwrap()
        .raft_index();
    until("m4 to catch up", || {
        let mut c = c4.clone();
        async move { (c.status().await.ok()?.raft_applied_index() >= commit).then_some(()) }
    })
    .await;
    let out = member_cmd(&fep, "promote", m4, Some("which is in sync with leader")).await;
    assert_eq!(
        out.trim(),
        format!("Member {m4:16x} promoted in cluster {cluster_id:16x}")
    );
    clients.insert("m4".into(), c4.clone());
    until("m4 listed as a started voter everywhere", || {
        let cs: Vec<Client> = clients.values().cloned().collect();
        let url = cl.clients["m4"].clone();
        async move {
            for c in &cs {
                let ms = listed(c).await;
                if ms.get(&m4) != Some(&("m4".to_string(), false, vec![url.clone()])) {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    progressed(20).await;

    // Remove a follower of the original three, then the leader.
    let gone = names[..3]
        .iter()
        .find(|n| **n != leader_name && **n != follower)
        .unwrap()
        .clone();
    let out = member_cmd(&fep, "remove", ids[&gone], None).await;
    assert_eq!(
        out.trim(),
        format!(
            "Member {:16x} removed from cluster {cluster_id:16x}",
            ids[&gone]
        )
    );
    clients.remove(&gone);
    for c in clients.values() {
        let ms = listed(c).await;
        assert!(!ms.contains_key(&ids[&gone]), "{ms:?}");
        assert_eq!(ms.len(), 3);
    }
    drop(cl.procs.remove(&gone));
    progressed(20).await;

    member_cmd(&fep, "remove", leader, None).await;
    clients.remove(&leader_name);
    let survivors: Vec<Client> = clients.values().cloned().collect();
    let new_leader = until("a leader among the two left", || {
        let cs = survivors.clone();
        async move { agreed_leader(&cs).await.filter(|&l| l != leader) }
    })
    .await;
    assert!([ids[&follower], m4].contains(&new_leader));
    for c in &survivors {
        let ms = listed(c).await;
        assert_eq!(
            ms.keys().copied().collect::<Vec<_>>(),
            {
                let mut v = vec![ids[&follower], m4];
                v.sort();
                v
            },
            "only the two left are listed"
        );
    }
    drop(cl.procs.remove(&leader_name));
    progressed(20).await;

    let (ok, out, err) = etcdctl(
        &fep,
        &[
            "member",
            "update",
            &format!("{m4:x}"),
            &format!("--peer-urls={}", cl.peers["m4"]),
        ],
    )
    .await;
    assert!(ok, "member update: {err}");
    assert_eq!(
        out.trim(),
        format!("Member {m4:16x} updated in cluster {cluster_id:16x}")
    );
    let (ok, _, err) = etcdctl(
        &fep,
        &["member", "update", "1234", "--peer-urls=http://127.0.0.1:1"],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("Error: etcdserver: member not found"), "{err}");
    let (ok, _, err) = etcdctl(&fep, &["member", "remove", "1234"]).await;
    assert!(!ok);
    assert!(err.contains("Error: etcdserver: member not found"), "{err}");

    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    // Every acknowledged write on both members left; their HashKV agrees.
    let acked = acked.lock().await.clone();
    let commit = survivors[0].clone().status().await.unwrap().raft_index();
    for c in &survivors {
        until("both members to apply the committed log", || {
            let mut c = c.clone();
            async move { (c.status().await.ok()?.raft_applied_index() >= commit).then_some(()) }
        })
        .await;
    }
    let rev = survivors[0]
        .clone()
        .get("probe", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut hashes = Vec::new();
    for c in &survivors {
        let mut c = c.clone();
        for (k, v) in &acked {
            let got = c.get(k.as_str(), None).await.unwrap();
            assert_eq!(
                got.kvs().first().map(|kv| kv.value()),
                Some(v.as_bytes()),
                "acknowledged {k} missing"
            );
        }
        hashes.push(c.hash_kv(rev).await.unwrap().hash());
    }
    assert!(acked.len() > 100, "{} writes acknowledged", acked.len());
    assert_eq!(hashes[0], hashes[1], "HashKV at revision {rev}");
}
