//! Maintenance, Cluster, Auth and HTTP endpoints against a real server on 127.0.0.1:0, driven
//! by the `etcd-client` crate (and plain HTTP/1.1 for the HTTP endpoints).

use std::net::SocketAddr;
use std::path::Path;

use etcd_client::{
    AlarmAction, AlarmOptions, AlarmType, Client, Compare, CompareOp, GetOptions, Txn, TxnOp,
};
use keelson_store::{restore_snapshot, RestoreOptions, Store, StoreConfig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Running {
    addr: SocketAddr,
    metrics: Vec<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<keelson_store::Result<()>>>,
}

impl Running {
    async fn client(&self) -> Client {
        Client::connect([format!("http://{}", self.addr)], None)
            .await
            .expect("connect")
    }

    /// Stops the server and waits until it has let go of its data.
    async fn stop(mut self) {
        let _ = self.stop.take().expect("running").send(());
        self.task
            .take()
            .expect("running")
            .await
            .expect("join")
            .expect("serve");
    }
}

fn config() -> StoreConfig {
    StoreConfig {
        listen_client_urls: vec!["http://127.0.0.1:0".into()],
        advertise_client_urls: vec!["http://127.0.0.1:12379".into()],
        initial_advertise_peer_urls: vec!["http://127.0.0.1:12380".into()],
        initial_cluster: vec![("default".into(), "http://127.0.0.1:12380".into())],
        ..StoreConfig::default()
    }
}

async fn start(cfg: StoreConfig) -> Running {
    let store = Store::open(cfg).await.expect("open");
    let addr = store.client_addrs()[0];
    let metrics = store.metrics_addrs();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(store.serve(async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        metrics,
        stop: Some(tx),
        task: Some(task),
    }
}

/// The gRPC status message of a failed call.
fn message(e: etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// One plain HTTP/1.1 GET: (status code, body).
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

/// The same history on any store: puts, an overwrite, a delete, a txn and a compaction.
async fn history(c: &mut Client) {
    for i in 0..5 {
        c.put(format!("k{i}"), format!("v{i}"), None).await.unwrap();
    }
    c.put("k1", "again", None).await.unwrap();
    c.delete("k2", None).await.unwrap();
    let txn = Txn::new()
        .when([Compare::version("k3", CompareOp::Equal, 1)])
        .and_then([TxnOp::put("k3", "txn", None), TxnOp::put("k9", "new", None)]);
    c.txn(txn).await.unwrap();
}

#[tokio::test]
async fn status_reports_this_member_as_leader() {
    let s = start(config()).await;
    let mut c = s.client().await;
    c.put("a", "1", None).await.unwrap();
    c.put("b", "2", None).await.unwrap();
    let st = c.status().await.unwrap();
    let h = st.header().unwrap();
    assert_eq!(st.version(), "3.5.17");
    assert_eq!(st.leader(), h.member_id());
    assert_eq!(st.raft_term(), 2);
    assert_eq!(h.revision(), 3);
    assert!(st.raft_index() >= 2, "two puts were applied");
    assert_eq!(st.raft_index(), st.raft_applied_index());
    assert!(st.db_size() > 0 && st.raft_used_db_size() > 0);
    assert!(st.errors().is_empty());
    assert!(!st.is_learner());

    // MoveLeader to itself is a no-op; to anyone else it is etcd's refusal.
    c.move_leader(h.member_id()).await.unwrap();
    let (code, msg) = message(c.move_leader(1234).await.unwrap_err());
    assert_eq!(
        (code, msg.as_str()),
        (
            tonic::Code::FailedPrecondition,
            "etcdserver: bad leader transferee"
        )
    );
    c.defragment().await.unwrap();
    assert_eq!(c.get("a", None).await.unwrap().kvs()[0].value(), b"1");
    // etcd 3.4 has no Downgrade RPC: gRPC's own answer for an unknown method.
    let mut m = c.maintenance_client();
    let (code, msg) = message(
        m.downgrade(etcd_client::DowngradeOptions::Cancel)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (code, msg.as_str()),
        (
            tonic::Code::Unimplemented,
            "unknown method Downgrade for service etcdserverpb.Maintenance"
        )
    );
    s.stop().await;
}

#[tokio::test]
async fn periodic_auto_compaction_compacts_what_is_older_than_the_retention() {
    let cfg = StoreConfig {
        auto_compaction_mode: keelson_store::CompactionMode::Periodic,
        auto_compaction_retention: "500ms".into(),
        ..config()
    };
    let s = start(cfg).await;
    let mut c = s.client().await;
    for i in 0..5 {
        c.put("k", format!("v{i}"), None).await.unwrap();
    }
    // The compactor is timer-driven: wait (bounded) until it has compacted everything older
    // than the last write, which it does once that write is a retention old.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if c.hash_kv(0).await.unwrap().compact_version() == 6 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no auto compaction at 6 within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (code, _) = message(
        c.get("k", Some(GetOptions::new().with_revision(5)))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, tonic::Code::OutOfRange);
    assert_eq!(c.get("k", None).await.unwrap().kvs()[0].value(), b"v4");
    s.stop().await;
}

#[tokio::test]
async fn hash_kv_is_equal_for_equal_histories() {
    let (a, b) = (start(config()).await, start(config()).await);
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    history(&mut ca).await;
    history(&mut cb).await;
    let (ha, hb) = (ca.hash_kv(0).await.unwrap(), cb.hash_kv(0).await.unwrap());
    assert_eq!(ha.hash(), hb.hash());
    assert_eq!(ha.compact_version(), -1, "never compacted");
    assert_eq!(
        ca.hash_kv(4).await.unwrap().hash(),
        cb.hash_kv(4).await.unwrap().hash()
    );
    assert_ne!(
        ca.hash_kv(4).await.unwrap().hash(),
        ha.hash(),
        "a shorter history hashes differently"
    );

    ca.compact(5, None).await.unwrap();
    cb.compact(5, None).await.unwrap();
    let (ha2, hb2) = (ca.hash_kv(0).await.unwrap(), cb.hash_kv(0).await.unwrap());
    assert_eq!(ha2.hash(), hb2.hash());
    assert_eq!(ha2.compact_version(), 5);

    // Diverge: one more write on one side only.
    cb.put("extra", "x", None).await.unwrap();
    assert_ne!(
        ca.hash_kv(0).await.unwrap().hash(),
        cb.hash_kv(0).await.unwrap().hash()
    );

    let compacted = "etcdserver: mvcc: required revision has been compacted";
    for rev in [3, 5] {
        let (code, msg) = message(ca.hash_kv(rev).await.unwrap_err());
        assert_eq!((code, msg.as_str()), (tonic::Code::OutOfRange, compacted));
    }
    let (code, msg) = message(ca.hash_kv(1000).await.unwrap_err());
    assert_eq!(
        (code, msg.as_str()),
        (
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision"
        )
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn nospace_alarm_refuses_writes_until_disarmed() {
    // In memory the backend's size is its live data, so deleting and compacting frees space.
    let s = start(StoreConfig {
        quota_backend_bytes: 4096,
        ..config()
    })
    .await;
    let mut c = s.client().await;
    let big = vec![b'x'; 1000];
    let mut refused = None;
    for i in 0..10 {
        if let Err(e) = c.put(format!("big{i}"), big.clone(), None).await {
            refused = Some(message(e));
            break;
        }
    }
    let nospace = (
        tonic::Code::ResourceExhausted,
        "etcdserver: mvcc: database space exceeded".to_string(),
    );
    assert_eq!(refused, Some(nospace.clone()));

    let member = c.status().await.unwrap().header().unwrap().member_id();
    let alarms = c
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap();
    assert_eq!(alarms.alarms().len(), 1);
    assert_eq!(alarms.alarms()[0].member_id(), member);
    assert_eq!(alarms.alarms()[0].alarm(), AlarmType::Nospace);
    let st = c.status().await.unwrap();
    assert_eq!(st.errors(), [format!("memberID:{member} alarm:NOSPACE ")]);
    assert_eq!(
        http_get(s.addr, "/health").await,
        (503, "{\"health\":\"false\"}\n".into())
    );
    assert_eq!(http_get(s.addr, "/health?exclude=NOSPACE").await.0, 200);

    // Even a tiny write is refused while the alarm is raised; reads, deletes, compaction work.
    assert_eq!(
        c.put("tiny", "1", None).await.map_err(message).unwrap_err(),
        nospace
    );
    let grant = c.lease_grant(60, None).await.map_err(message).unwrap_err();
    assert_eq!(grant, nospace);
    assert_eq!(
        c.get("big0", None).await.unwrap().kvs()[0].value(),
        &big[..]
    );
    let rev = c
        .delete("big", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    c.compact(rev.header().unwrap().revision(), None)
        .await
        .unwrap();

    // Space is free but the alarm stays until disarmed, as in etcd.
    assert!(c.put("tiny", "1", None).await.is_err());
    let mut opts = AlarmOptions::new();
    opts.with_member(member);
    let disarmed = c
        .alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(opts))
        .await
        .unwrap();
    assert_eq!(disarmed.alarms().len(), 1);
    assert!(c
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap()
        .alarms()
        .is_empty());
    c.put("tiny", "1", None).await.unwrap();
    assert_eq!(http_get(s.addr, "/health").await.0, 200);
    s.stop().await;
}

/// Streams a snapshot through the Snapshot RPC into `path`, checking etcd's framing.
async fn save_snapshot(c: &mut Client, path: &Path) {
    let mut stream = c.snapshot().await.unwrap();
    let mut msgs = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        msgs.push((m.remaining_bytes(), m.blob().to_vec()));
    }
    let (last_remaining, sha) = msgs.pop().expect("a trailer");
    assert_eq!((last_remaining, sha.len()), (0, 32));
    let body: Vec<u8> = msgs.iter().flat_map(|(_, b)| b.clone()).collect();
    assert_eq!(
        msgs.last().unwrap().0,
        0,
        "remaining_bytes counts the body down to 0"
    );
    assert!(msgs.iter().all(|(_, b)| b.len() <= 32 * 1024));
    assert!(
        msgs.windows(2)
            .all(|w| w[0].0 == w[1].0 + w[1].1.len() as u64),
        "remaining_bytes counts down by each blob"
    );
    assert_eq!(Sha256::digest(&body).as_slice(), &sha[..]);
    assert_eq!(
        (body.len() + sha.len()) % 512,
        32,
        "etcdctl snapshot save's size check"
    );
    let mut file = body;
    file.extend_from_slice(&sha);
    std::fs::write(path, file).unwrap();
}

fn restore_opts(dir: &Path) -> RestoreOptions {
    let cfg = config();
    RestoreOptions {
        data_dir: dir.to_path_buf(),
        name: cfg.name,
        initial_cluster: cfg.initial_cluster,
        initial_cluster_token: cfg.initial_cluster_token,
        initial_advertise_peer_urls: cfg.initial_advertise_peer_urls,
    }
}

#[tokio::test]
async fn snapshot_saves_and_restores_into_a_serving_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(StoreConfig {
        data_dir: Some(tmp.path().join("orig")),
        ..config()
    })
    .await;
    let mut c = s.client().await;
    history(&mut c).await;
    c.compact(4, None).await.unwrap();
    // Big enough to span several 32 KiB chunks.
    c.put("big", vec![b'b'; 100 * 1024], None).await.unwrap();
    let lease = c.lease_grant(600, None).await.unwrap().id();
    c.put(
        "leased",
        "l",
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    let file = tmp.path().join("snap.db");
    save_snapshot(&mut c, &file).await;
    let want_all = c
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    let want_hash = c.hash_kv(0).await.unwrap().hash();
    s.stop().await;

    let dir = tmp.path().join("restored");
    let summary = restore_snapshot(&file, &restore_opts(&dir)).unwrap();
    assert_eq!(summary.revision, want_all.header().unwrap().revision());
    assert_eq!(summary.compact_revision, 4);

    let r = start(StoreConfig {
        data_dir: Some(dir),
        ..config()
    })
    .await;
    let mut c = r.client().await;
    let got_all = c
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    assert_eq!(
        got_all.header().unwrap().revision(),
        want_all.header().unwrap().revision()
    );
    type Flat = (Vec<u8>, Vec<u8>, i64, i64, i64, i64);
    let flat = |r: &etcd_client::GetResponse| -> Vec<Flat> {
        r.kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key().to_vec(),
                    kv.value().to_vec(),
                    kv.create_revision(),
                    kv.mod_revision(),
                    kv.version(),
                    kv.lease(),
                )
            })
            .collect()
    };
    assert_eq!(flat(&got_all), flat(&want_all));
    assert_eq!(got_all.kvs().len(), 7);
    assert_eq!(c.hash_kv(0).await.unwrap().hash(), want_hash);
    assert_eq!(c.hash_kv(0).await.unwrap().compact_version(), 4);
    let ttl = c.lease_time_to_live(lease, None).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 600, "leases are restored");
    // History before the compaction stays compacted; after it, it is readable.
    assert!(c
        .get("k0", Some(GetOptions::new().with_revision(3)))
        .await
        .is_err());
    assert_eq!(
        c.get("k1", Some(GetOptions::new().with_revision(6)))
            .await
            .unwrap()
            .kvs()[0]
            .value(),
        b"v1"
    );
    r.stop().await;
}

#[tokio::test]
async fn corrupt_snapshot_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(config()).await;
    let mut c = s.client().await;
    history(&mut c).await;
    let file = tmp.path().join("snap.db");
    save_snapshot(&mut c, &file).await;
    s.stop().await;

    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let dir = tmp.path().join("restored");
    let err = restore_snapshot(&file, &restore_opts(&dir))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sha256"), "{err}");
    assert!(!dir.exists(), "nothing is created for a corrupt file");

    std::fs::write(&file, &bytes[..bytes.len() - 1]).unwrap();
    let err = restore_snapshot(&file, &restore_opts(&dir))
        .unwrap_err()
        .to_string();
    assert!(err.contains("512-byte blocks"), "{err}");
}

#[tokio::test]
async fn member_list_describes_the_single_member() {
    // The peer URL of a real etcd 3.4 run, which reported member 9b75884f75d5467f in cluster
    // 17517672543240932065 (default name and token).
    let peer = "http://127.0.0.1:36382".to_string();
    let cfg = StoreConfig {
        initial_advertise_peer_urls: vec![peer.clone()],
        initial_cluster: vec![("default".into(), peer.clone())],
        ..config()
    };
    let s = start(cfg).await;
    let mut c = s.client().await;
    let list = c.member_list().await.unwrap();
    let h = list.header().unwrap();
    assert_eq!(h.revision(), 0, "etcd's cluster headers carry no revision");
    assert_eq!(list.members().len(), 1);
    let m = &list.members()[0];
    assert_eq!(m.id(), h.member_id());
    assert_eq!(m.name(), "default");
    assert_eq!(m.peer_urls(), std::slice::from_ref(&peer));
    assert_eq!(m.client_urls(), ["http://127.0.0.1:12379"]);
    assert!(!m.is_learner());
    assert_eq!(format!("{:x}", m.id()), "9b75884f75d5467f");
    assert_eq!(h.cluster_id(), 17517672543240932065);

    let (code, msg) = message(c.member_promote(m.id()).await.unwrap_err());
    assert_eq!(
        (code, msg.as_str()),
        (
            tonic::Code::FailedPrecondition,
            "etcdserver: can only promote a learner member"
        )
    );
    let (code, msg) = message(c.member_remove(42).await.unwrap_err());
    assert_eq!(
        (code, msg.as_str()),
        (tonic::Code::NotFound, "etcdserver: member not found")
    );
    let (_, msg) = message(c.member_add([peer.as_str()], None).await.unwrap_err());
    assert_eq!(msg, "etcdserver: Peer URLs already exists");
    let (_, msg) = message(
        c.member_add(["http://127.0.0.1:22380"], None)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        msg,
        "etcdserver: re-configuration failed due to not enough started members"
    );
    s.stop().await;
}

#[tokio::test]
async fn auth_rpcs_behave_as_etcd_with_auth_disabled() {
    let s = start(config()).await;
    let mut c = s.client().await;
    let (code, msg) = message(c.auth_enable().await.unwrap_err());
    assert_eq!(
        (code, msg.as_str()),
        (
            tonic::Code::FailedPrecondition,
            "etcdserver: root user does not exist"
        )
    );
    c.auth_disable().await.unwrap();
    c.user_add("root", "pw", None).await.unwrap();
    let (_, msg) = message(c.user_add("root", "pw", None).await.unwrap_err());
    assert_eq!(msg, "etcdserver: user name already exists");
    let (_, msg) = message(c.auth_enable().await.unwrap_err());
    assert_eq!(msg, "etcdserver: root user does not have root role");
    c.role_add("r1").await.unwrap();
    c.role_grant_permission("r1", etcd_client::Permission::read_write("foo"))
        .await
        .unwrap();
    c.user_grant_role("root", "r1").await.unwrap();
    assert_eq!(c.user_get("root").await.unwrap().roles(), ["r1"]);
    assert_eq!(c.user_list().await.unwrap().users(), ["root"]);
    assert_eq!(c.role_get("r1").await.unwrap().permissions().len(), 1);
    let (code, msg) = message(c.user_get("nobody").await.unwrap_err());
    assert_eq!(
        (code, msg.as_str()),
        (
            tonic::Code::FailedPrecondition,
            "etcdserver: user name not found"
        )
    );
    c.role_delete("r1").await.unwrap();
    assert!(c.user_get("root").await.unwrap().roles().is_empty());
    let (code, msg) = message(
        Client::connect(
            [format!("http://{}", s.addr)],
            Some(etcd_client::ConnectOptions::new().with_user("root", "pw")),
        )
        .await
        .map(|_| ())
        .unwrap_err(),
    );
    assert_eq!(
        (code, msg.as_str()),
        (
            tonic::Code::FailedPrecondition,
            "etcdserver: authentication is not enabled"
        )
    );
    s.stop().await;
}

#[tokio::test]
async fn http_endpoints_share_the_client_port() {
    let s = start(StoreConfig {
        listen_metrics_urls: vec!["http://127.0.0.1:0".into()],
        ..config()
    })
    .await;
    let mut c = s.client().await;
    c.put("a", "1", None).await.unwrap();
    c.put("b", "2", None).await.unwrap();
    c.get("a", None).await.unwrap();

    assert_eq!(
        http_get(s.addr, "/health").await,
        (200, r#"{"health":"true"}"#.into())
    );
    let (code, body) = http_get(s.addr, "/version").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["etcdserver"], "3.5.17");
    assert_eq!(v["etcdcluster"], "3.5.0");
    assert!(v["keelson"].is_string());
    assert_eq!(http_get(s.addr, "/nothing").await.0, 404);

    let (code, body) = http_get(s.addr, "/metrics").await;
    assert_eq!(code, 200);
    let value = |name: &str| -> f64 {
        let line = body
            .lines()
            .find(|l| l.split(' ').next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("etcd_mvcc_put_total"), 2.0);
    assert_eq!(value("etcd_mvcc_range_total"), 1.0);
    assert_eq!(value("etcd_debugging_mvcc_current_revision"), 3.0);
    assert_eq!(value("etcd_debugging_mvcc_keys_total"), 2.0);
    assert_eq!(value("etcd_server_has_leader"), 1.0);
    assert_eq!(value("etcd_server_quota_backend_bytes"), 2147483648.0);
    assert!(value("process_resident_memory_bytes") > 0.0);
    assert!(value("etcd_disk_backend_commit_duration_seconds_count") >= 2.0);
    assert!(value("etcd_mvcc_db_total_size_in_bytes") > 0.0);

    // The same endpoints on --listen-metrics-urls.
    let (code, body) = http_get(s.metrics[0], "/metrics").await;
    assert_eq!(code, 200);
    assert!(body.contains("etcd_server_is_leader 1"));
    assert_eq!(http_get(s.metrics[0], "/health").await.0, 200);
    s.stop().await;
}
