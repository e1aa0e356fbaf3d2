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
//! - m4, while a learner, reports `isLearner` in Status, serves a serializable Range, and
//!   refuses a put and a linearizable Range with etcd's `rpc not supported for learner`;
//! - a removed member (a follower, then the leader) stops by itself, as etcd's does, and the
//!   members left refuse its raft calls ("the member has been permanently removed");
//! - removing a follower, then the leader, leaves a cluster that keeps a leader and accepts
//!   writes; removing or updating an unknown member answers "member not found";
//! - every acknowledged write is readable on every remaining member and their HashKV agrees.

// Each test crate uses only some of the shared helpers.
#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use etcd_client::{Client, GetOptions};

use common::cluster::{
    agreed_leader, applied, connect_opts, has_all, log_tail, member_id, revision, until, Cluster,
    Load,
};

/// How long a removed member may take to notice and stop.
const REMOVED_EXIT: Duration = Duration::from_secs(10);

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

/// A raft Vote call with an empty payload to member `target` at `peer_url`, naming `from` as
/// its sender; the peer's refusal.
async fn raw_vote(peer_url: &str, target: u64, from: u64) -> tonic::Status {
    use keelson_proto::keelsonraftpb::raft_peer_client::RaftPeerClient;
    use keelson_proto::keelsonraftpb::RaftMessage;
    let mut c = RaftPeerClient::connect(peer_url.to_string()).await.unwrap();
    let mut req = tonic::Request::new(RaftMessage::default());
    let md = req.metadata_mut();
    md.insert(
        "keelson-raft-target",
        format!("{target:x}").parse().unwrap(),
    );
    md.insert("keelson-raft-from", format!("{from:x}").parse().unwrap());
    c.vote(req)
        .await
        .expect_err("a vote without a payload is refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_are_added_promoted_and_removed_under_load() {
    let mut cl = Cluster::new(&["m0", "m1", "m2", "m4"]);
    let names: Vec<String> = cl.members.iter().map(|m| m.name.clone()).collect();
    let i4 = cl.index("m4");
    let initial = cl.initial_cluster(0..3);
    for i in 0..3 {
        cl.start_with(i, &initial, Some("new"));
    }
    let mut clients: BTreeMap<String, Client> = BTreeMap::new();
    let mut ids: BTreeMap<String, u64> = BTreeMap::new();
    for (i, n) in names[..3].iter().enumerate() {
        let c = cl.client(i).await;
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
    let mut load = Load::default();
    let eps: Vec<String> = (0..3).map(|i| cl.endpoint(i)).collect();
    let c = Client::connect(eps, Some(connect_opts(Duration::from_secs(10))))
        .await
        .unwrap();
    load.writer(c, "");
    let progressed = |n: usize| {
        let from = load.count();
        load.reached("writes to go on", from + n)
    };
    progressed(50).await;

    // Add m4 as a learner, through a follower.
    let fep = cl.endpoint(cl.index(&follower));
    let m4_peer = cl.members[i4].peer_url.clone();
    let (ok, out, err) = etcdctl(
        &fep,
        &[
            "member",
            "add",
            "m4",
            "--learner",
            &format!("--peer-urls={}", m4_peer),
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
    assert_eq!(line("ETCD_INITIAL_ADVERTISE_PEER_URLS"), m4_peer);
    let initial_cluster = line("ETCD_INITIAL_CLUSTER");
    let mut want: Vec<String> = cl.members.iter().map(|m| m.initial_entry()).collect();
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
    // etcd 3.4 allows one learner at a time.
    let m5_peer = format!("http://127.0.0.1:{}", common::proc::free_port());
    let (ok, _, err) = etcdctl(
        &fep,
        &[
            "member",
            "add",
            "m5",
            "--learner",
            &format!("--peer-urls={m5_peer}"),
        ],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("etcdserver: too many learner members in cluster"),
        "{err}"
    );

    // m4 joins with what member add printed, learns its ID and catches up.
    cl.start_with(i4, &initial_cluster, Some("existing"));
    let c4 = cl.client(i4).await;
    assert_eq!(member_id(&c4).await, m4, "m4 has the ID member add gave it");
    ids.insert("m4".into(), m4);

    // A learner serves only Status and serializable ranges (etcd 3.4).
    until("m4 to report itself a learner", || {
        let mut c = c4.clone();
        async move { c.status().await.ok()?.is_learner().then_some(()) }
    })
    .await;
    let err = c4.clone().put("learner-put", "x", None).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("etcdserver: rpc not supported for learner"),
        "{err}"
    );
    let err = c4.clone().get("learner-get", None).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("etcdserver: rpc not supported for learner"),
        "{err}"
    );
    let (ok, _, err) = etcdctl(&cl.endpoint(i4), &["put", "learner-put", "x"]).await;
    assert!(!ok);
    assert!(
        err.contains("Error: etcdserver: rpc not supported for learner"),
        "{err}"
    );
    c4.clone()
        .get("learner-get", Some(GetOptions::new().with_serializable()))
        .await
        .expect("a serializable range on a learner");
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
        let url = cl.members[i4].client_url.clone();
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
    // The members left refuse raft calls from the removed one, as etcd's peers do; a call
    // from a current member gets past that check (to the decoding of its empty payload).
    let f = cl.index(&follower);
    let peer_url = cl.members[f].peer_url.clone();
    let refused = raw_vote(&peer_url, ids[&follower], ids[&gone]).await;
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert_eq!(
        refused.message(),
        "the member has been permanently removed from the cluster"
    );
    let passed = raw_vote(&peer_url, ids[&follower], ids[&leader_name]).await;
    assert_eq!(passed.code(), tonic::Code::InvalidArgument, "{passed:?}");
    let g = cl.index(&gone);
    assert!(
        cl.members[g].exits_within(REMOVED_EXIT).await.is_some(),
        "{gone} still runs {REMOVED_EXIT:?} after its removal:\n{}",
        log_tail(cl.log(g))
    );
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
    let l = cl.index(&leader_name);
    assert!(
        cl.members[l].exits_within(REMOVED_EXIT).await.is_some(),
        "{leader_name} still runs {REMOVED_EXIT:?} after its removal:\n{}",
        log_tail(cl.log(l))
    );
    let log = std::fs::read_to_string(cl.log(l)).unwrap();
    assert!(
        log.contains("the member has been permanently removed from the cluster"),
        "{}",
        log_tail(cl.log(l))
    );
    progressed(20).await;

    let (ok, out, err) = etcdctl(
        &fep,
        &[
            "member",
            "update",
            &format!("{m4:x}"),
            &format!("--peer-urls={}", m4_peer),
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

    let acked = load.stop().await;

    // Every acknowledged write on both members left; their HashKV agrees.
    applied(&survivors, "both members to apply the committed log").await;
    let rev = revision(&survivors[0]).await;
    let mut hashes = Vec::new();
    for c in &survivors {
        has_all(c, &acked).await;
        hashes.push(c.clone().hash_kv(rev).await.unwrap().hash());
    }
    assert!(acked.len() > 100, "{} writes acknowledged", acked.len());
    assert_eq!(hashes[0], hashes[1], "HashKV at revision {rev}");
}

/// `--experimental-initial-corrupt-check` on a consistent cluster: a member restarted with its
/// data compares its HashKV with both peers', finds them equal, and serves. (A mismatch cannot
/// be made without the store's internals; `keelson-raft`'s `corrupt.rs` unit-tests the
/// decision.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consistent_member_passes_the_initial_corrupt_check() {
    let mut cl = Cluster::three().with_flags(&["--experimental-initial-corrupt-check"]);
    cl.keep_rust_log = false;
    for i in 0..3 {
        cl.start(i);
    }
    let (clients, _) = cl.led(Duration::from_secs(5)).await;
    let mut c = clients[0].clone();
    for i in 0..20 {
        c.put(format!("k{i}"), "v", None).await.unwrap();
    }
    applied(&clients, "every member to apply the writes").await;
    cl.members[2].stop();
    cl.start(2);
    let mut c2 = cl.client(2).await;
    let got = c2
        .get("k19", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_eq!(got.kvs().len(), 1);
    let log = std::fs::read_to_string(cl.log(2)).unwrap();
    assert!(
        log.contains("initial corruption checking passed; no corruption"),
        "{}",
        log_tail(cl.log(2))
    );
    // Both peers answered (a check skipping every peer would pass too).
    assert!(
        !log.contains("cannot fetch hash"),
        "{}",
        log_tail(cl.log(2))
    );
    // The first start had no data, so it was not checked (as etcd's).
    assert_eq!(log.matches("starting initial corruption check").count(), 1);
}
