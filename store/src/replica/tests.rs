//! Replica: batches are durable with their blob, snapshots restore into equal stores, watchers
//! go on across a restore, failures stop the store, and a replicated `Store` serves clients.

use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use keelson_proto::authpb::Role;
use keelson_proto::etcdserverpb::alarm_request::AlarmAction;
use keelson_proto::etcdserverpb::{
    request_op, AlarmRequest, AlarmType, AuthRoleAddRequest, CompactionRequest, DeleteRangeRequest,
    LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader, TxnRequest,
    WatchCreateRequest, WatchResponse,
};
use keelson_proto::mvccpb::event::EventType;
use parking_lot::Mutex;

use super::*;
use crate::auth::AuthCommand;
use crate::backend::Pair;
use crate::config::StoreConfig;
use crate::node::Propose;
use crate::server::maintenance::hash_kv;

fn put(k: &str, v: &str) -> Command {
    put_lease(k, v, 0)
}

fn put_lease(k: &str, v: &str, lease: i64) -> Command {
    Command::Put(PutRequest {
        key: k.to_string().into(),
        value: v.to_string().into(),
        lease,
        ..Default::default()
    })
}

fn del(k: &str) -> Command {
    Command::DeleteRange(DeleteRangeRequest {
        key: k.to_string().into(),
        ..Default::default()
    })
}

fn grant(id: i64, ttl: i64) -> Command {
    Command::LeaseGrant(LeaseGrantRequest { ttl, id })
}

/// Numbers `cmds` from `first` on.
fn indexed(first: u64, cmds: Vec<Command>) -> Vec<(u64, Command)> {
    (first..).zip(cmds).collect()
}

fn mem_core() -> Arc<Core> {
    Core::load(StoreConfig::default(), Arc::new(MemBackend::default())).unwrap()
}

/// Every live key at the current revision.
fn live(core: &Core) -> Vec<KeyValue> {
    let st = core.mvcc.state.read();
    let all = RangeRequest {
        key: vec![0].into(),
        range_end: vec![0].into(),
        ..Default::default()
    };
    st.range(&all, st.current).unwrap().kvs
}

/// Everything a member's clients could observe, for comparing two stores.
fn observable(core: &Core) -> String {
    let (hash, compacted, current) = hash_kv(core, 0).unwrap();
    let mut leases: Vec<_> = core
        .lessor
        .leases()
        .into_iter()
        .map(|id| {
            let l = core.lessor.time_to_live(id).unwrap();
            (id, l.granted, l.keys)
        })
        .collect();
    leases.sort();
    format!(
        "hash={hash} compacted={compacted} current={current}\nlive={:?}\nleases={leases:?}\n\
         alarms={:?}\nroles={:?} auth_rev={}\napplied={}",
        live(core),
        core.alarms.list(),
        core.auth.role_names(),
        core.auth.revision(),
        core.applied_index(),
    )
}

#[test]
fn a_batch_and_its_blob_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let open = || {
        let core = Core::load(cfg.clone(), Core::open_backend(&cfg).unwrap()).unwrap();
        (core.clone(), Replica::new(core))
    };
    let (core, replica) = open();
    assert_eq!(
        replica.raft_applied().unwrap(),
        None,
        "a new store has no blob"
    );
    let results = replica
        .apply_batch(
            indexed(
                1,
                vec![
                    grant(7, 100),
                    put("a", "1"),
                    put_lease("b", "2", 7),
                    del("a"),
                ],
            ),
            b"blob-4".to_vec(),
        )
        .unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    match &results[3] {
        Ok(Response::DeleteRange(d)) => assert_eq!(d.deleted, 1),
        r => panic!("unexpected {r:?}"),
    }
    assert_eq!(core.mvcc.current_revision(), 4, "put, put, delete");
    assert_eq!(*core.revision.borrow(), 4, "the revision is published");
    let before = observable(&core);
    drop((core, replica));

    let (core, replica) = open();
    assert_eq!(replica.raft_applied().unwrap(), Some(b"blob-4".to_vec()));
    assert_eq!(replica.applied_index(), 4);
    assert_eq!(observable(&core), before, "the reopened store is the same");
    assert_eq!(
        core.lessor.time_to_live(7).unwrap().keys,
        vec![bytes::Bytes::from("b")],
        "lease attachments are rebuilt"
    );
}

#[test]
fn an_empty_batch_stores_only_the_blob() {
    let core = mem_core();
    let replica = Replica::new(core.clone());
    replica
        .apply_batch(indexed(1, vec![put("a", "1")]), b"one".to_vec())
        .unwrap();
    let results = replica.apply_batch(vec![], b"two".to_vec()).unwrap();
    assert!(results.is_empty());
    assert_eq!(replica.raft_applied().unwrap(), Some(b"two".to_vec()));
    assert_eq!(
        replica.applied_index(),
        1,
        "no command, no new applied index"
    );
    assert_eq!(core.mvcc.current_revision(), 2, "no new revision");
}

#[test]
fn a_rejected_command_changes_nothing_and_the_others_apply() {
    let core = mem_core();
    let replica = Replica::new(core.clone());
    let results = replica
        .apply_batch(
            indexed(
                10,
                vec![put("a", "1"), put_lease("b", "2", 99), put("c", "3")],
            ),
            b"blob".to_vec(),
        )
        .unwrap();
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok());
    assert_eq!(results[1], Err(Error::LeaseNotFound));
    match &results[2] {
        Ok(Response::Put(p)) => assert_eq!(p.header.as_ref().unwrap().revision, 3),
        r => panic!("unexpected {r:?}"),
    }
    let keys: Vec<_> = live(&core).into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, vec![bytes::Bytes::from("a"), bytes::Bytes::from("c")]);
    assert_eq!(
        core.mvcc.current_revision(),
        3,
        "the rejected put took no revision"
    );
    assert_eq!(
        replica.applied_index(),
        12,
        "the batch's last index, rejected or not"
    );
}

/// A history with every kind of state: revisions, a compaction, leases with keys, an alarm
/// and an auth role.
fn history() -> Vec<Vec<Command>> {
    let mut txn = TxnRequest::default();
    for k in ["t1", "t2"] {
        txn.success.push(RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: k.to_string().into(),
                value: "tx".into(),
                ..Default::default()
            })),
        });
    }
    vec![
        vec![
            grant(5, 60),
            put("a", "1"),
            put("b", "1"),
            put_lease("l", "x", 5),
        ],
        vec![put("a", "2"), del("b"), Command::Txn(txn)],
        vec![
            Command::Compact(CompactionRequest {
                revision: 4,
                physical: false,
            }),
            Command::Alarm(AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: 1,
                alarm: AlarmType::Nospace as i32,
            }),
            Command::Auth(AuthCommand::RoleAdd(AuthRoleAddRequest {
                name: "r".into(),
            })),
            put("c", "1"),
        ],
    ]
}

/// Applies `batches` from log index `first` on; returns the next index.
fn apply_all(replica: &Replica, first: u64, batches: Vec<Vec<Command>>) -> u64 {
    let mut next = first;
    for b in batches {
        let n = b.len() as u64;
        for r in replica
            .apply_batch(
                indexed(next, b),
                format!("blob {}", next + n - 1).into_bytes(),
            )
            .unwrap()
        {
            r.unwrap();
        }
        next += n;
    }
    next
}

#[test]
fn a_snapshot_restores_into_an_equal_store() {
    let source = mem_core();
    let src = Replica::new(source.clone());
    let next = apply_all(&src, 1, history());
    let (blob, data) = src.snapshot().unwrap();
    assert_eq!(blob, Some(format!("blob {}", next - 1).into_bytes()));
    assert_eq!(
        (data.len() - 32) % 512,
        0,
        "the snapshot file format, sha256 trailer included"
    );

    // The target holds unrelated state that the restore must remove.
    let target = mem_core();
    let tgt = Replica::new(target.clone());
    apply_all(
        &tgt,
        1,
        vec![vec![grant(9, 30), put_lease("zzz", "old", 9)]],
    );
    tgt.restore(&data).unwrap();
    assert_eq!(observable(&target), observable(&source));
    assert_eq!(tgt.raft_applied().unwrap(), blob);
    assert_eq!(*target.revision.borrow(), source.mvcc.current_revision());
    assert!(
        target.lessor.time_to_live(9).is_err(),
        "the old lease is gone"
    );
    assert_eq!(
        target.auth.role("r").unwrap(),
        Role {
            name: "r".into(),
            ..Default::default()
        }
    );
    let pairs = |c: &Core| -> Vec<Pair> {
        let (s, e) = keys::keyspace_bounds();
        c.backend.scan(&s, &e).map(|p| p.unwrap()).collect()
    };
    assert_eq!(
        pairs(&target),
        pairs(&source),
        "the backends hold the same records"
    );

    // Both go on identically from there.
    let more = vec![vec![put("a", "3"), del("l"), put_lease("d", "1", 5)]];
    apply_all(&src, next, more.clone());
    apply_all(&tgt, next, more);
    assert_eq!(observable(&target), observable(&source));
}

#[test]
fn a_bad_snapshot_is_refused_and_changes_nothing() {
    let source = mem_core();
    let src = Replica::new(source.clone());
    apply_all(&src, 1, history());
    let (_, mut data) = src.snapshot().unwrap();
    let target = mem_core();
    let tgt = Replica::new(target.clone());
    apply_all(&tgt, 1, vec![vec![put("mine", "1")]]);
    let before = observable(&target);
    data[40] ^= 1;
    let err = tgt.restore(&data).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert_eq!(observable(&target), before);
    // The store is still usable.
    apply_all(&tgt, 2, vec![vec![put("mine", "2")]]);
}

/// The frames of `stream` up to the answer to a progress request, as responses.
async fn until_progress(
    handle: &crate::watch::StreamHandle,
    stream: &mut crate::watch::WatchStream,
) -> Vec<WatchResponse> {
    handle.request_progress();
    let mut out = Vec::new();
    loop {
        let r = stream.next().await.unwrap().unwrap().to_response();
        if r.watch_id == -1 && !r.created && r.events.is_empty() {
            return out;
        }
        out.push(r);
    }
}

#[tokio::test]
async fn a_synced_watcher_goes_on_across_a_restore() {
    let source = mem_core();
    let target = mem_core();
    let (src, tgt) = (Replica::new(source.clone()), Replica::new(target.clone()));
    let first = vec![vec![put("a", "1"), put("b", "1")]];
    apply_all(&src, 1, first.clone());
    let next = apply_all(&tgt, 1, first);

    let (handle, mut stream) = target
        .hub
        .open_stream(ResponseHeader::default(), usize::MAX);
    handle.create(&WatchCreateRequest {
        key: vec![0].into(),
        range_end: vec![0].into(),
        prev_kv: true,
        ..Default::default()
    });
    let created = until_progress(&handle, &mut stream).await;
    assert!(created.len() == 1 && created[0].created, "{created:?}");

    // The source moves on; the target catches up by snapshot.
    let next = apply_all(
        &src,
        next,
        vec![vec![put("a", "2"), del("b"), put("c", "1")]],
    );
    tgt.restore(&src.snapshot().unwrap().1).unwrap();
    let both = vec![vec![put("d", "1")]];
    apply_all(&src, next, both.clone());
    apply_all(&tgt, next, both);

    let got: Vec<(i64, i32, String, Option<String>)> = until_progress(&handle, &mut stream)
        .await
        .into_iter()
        .flat_map(|r| r.events)
        .map(|e| {
            let kv = e.kv.unwrap();
            let key = String::from_utf8(kv.key.to_vec()).unwrap();
            let prev = e
                .prev_kv
                .map(|p| String::from_utf8(p.value.to_vec()).unwrap());
            (kv.mod_revision, e.r#type, key, prev)
        })
        .collect();
    let (put_t, del_t) = (EventType::Put as i32, EventType::Delete as i32);
    assert_eq!(
        got,
        vec![
            (4, put_t, "a".into(), Some("1".into())),
            (5, del_t, "b".into(), Some("1".into())),
            (6, put_t, "c".into(), None),
            (7, put_t, "d".into(), None),
        ],
        "each revision exactly once, in order, with prev_kv"
    );
}

#[tokio::test]
async fn a_synced_watcher_behind_the_restored_compaction_is_cancelled() {
    let source = mem_core();
    let target = mem_core();
    let (src, tgt) = (Replica::new(source.clone()), Replica::new(target.clone()));
    let first = vec![vec![put("a", "1"), put("b", "1")]];
    apply_all(&src, 1, first.clone());
    let next = apply_all(&tgt, 1, first);
    let (handle, mut stream) = target
        .hub
        .open_stream(ResponseHeader::default(), usize::MAX);
    handle.create(&WatchCreateRequest {
        key: vec![0].into(),
        range_end: vec![0].into(),
        ..Default::default()
    });
    until_progress(&handle, &mut stream).await;
    let compact = Command::Compact(CompactionRequest {
        revision: 6,
        physical: false,
    });
    apply_all(
        &src,
        next,
        vec![vec![put("a", "2"), put("a", "3"), put("a", "4"), compact]],
    );
    tgt.restore(&src.snapshot().unwrap().1).unwrap();
    let got = until_progress(&handle, &mut stream).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].canceled && got[0].compact_revision == 6 && got[0].events.is_empty(),
        "{got:?}"
    );
}

/// A memory backend whose writes fail while `fail` is set.
#[derive(Default)]
struct Flaky {
    inner: MemBackend,
    fail: AtomicBool,
}

impl Backend for Flaky {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn scan(&self, start: &[u8], end: &[u8]) -> Box<dyn Iterator<Item = Result<Pair>> + Send + '_> {
        self.inner.scan(start, end)
    }
    fn write(&self, batch: WriteBatch) -> Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::Io("injected write failure".into()));
        }
        self.inner.write(batch)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn size_in_use(&self) -> u64 {
        self.inner.size_in_use()
    }
    fn defragment(&self) -> Result<()> {
        Ok(())
    }
}

#[test]
fn an_io_failure_stops_the_store_and_publishes_nothing() {
    let backend = Arc::new(Flaky::default());
    let core = Core::load(StoreConfig::default(), backend.clone()).unwrap();
    let replica = Replica::new(core.clone());
    apply_all(&replica, 1, vec![vec![put("a", "1")]]);
    let (_, snap) = replica.snapshot().unwrap();
    backend.fail.store(true, Ordering::SeqCst);
    let err = replica
        .apply_batch(indexed(2, vec![put("b", "1")]), b"x".to_vec())
        .unwrap_err();
    assert!(!err.is_deterministic(), "{err:?}");
    assert_eq!(
        core.mvcc.current_revision(),
        2,
        "nothing undurable is visible"
    );
    backend.fail.store(false, Ordering::SeqCst);
    for r in [
        replica
            .apply_batch(indexed(3, vec![put("c", "1")]), b"y".to_vec())
            .map(|_| ()),
        replica.restore(&snap),
    ] {
        let e = r.unwrap_err();
        assert!(
            e.to_string().contains("stopped after an earlier failure"),
            "{e}"
        );
    }
    assert_eq!(replica.raft_applied().unwrap(), Some(b"blob 1".to_vec()));
}

#[tokio::test]
async fn the_single_member_answers_an_io_failure_then_stops() {
    let backend = Arc::new(Flaky::default());
    let core = Core::open_with(StoreConfig::default(), backend.clone()).unwrap();
    core.propose(put("a", "1")).await.unwrap();
    backend.fail.store(true, Ordering::SeqCst);
    let err = core.propose(put("b", "1")).await.unwrap_err();
    assert_eq!(err, Error::Io("injected write failure".into()));
    backend.fail.store(false, Ordering::SeqCst);
    assert_eq!(
        core.propose(put("c", "1")).await.unwrap_err(),
        Error::Stopped
    );
    assert_eq!(core.mvcc.current_revision(), 2);
}

#[test]
fn responses_round_trip() {
    let core = mem_core();
    let replica = Replica::new(core);
    let results = replica
        .apply_batch(indexed(1, history().concat()), vec![])
        .unwrap();
    for r in results {
        let r = r.unwrap();
        assert_eq!(Response::decode(&r.encode()).unwrap(), r);
    }
    assert!(Response::decode(&[]).is_err());
    assert!(Response::decode(&[8, 1]).is_err(), "Auth has no body");
    assert!(Response::decode(&[42]).is_err());
}

/// A stand-in for the raft proposer: a log of one member that applies each command through the
/// replica as its own batch, in index order.
struct LocalLog {
    replica: Replica,
    last: Arc<Mutex<u64>>,
}

impl Propose for LocalLog {
    fn propose(&self, cmd: Command) -> BoxFuture<'static, Result<Response>> {
        let (replica, last) = (self.replica.clone(), self.last.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut last = last.lock();
                *last += 1;
                let blob = last.to_be_bytes().to_vec();
                let mut results = replica.apply_batch(vec![(*last, cmd)], blob)?;
                results.pop().expect("one result per command")
            })
            .await
            .map_err(|e| Error::Io(e.to_string()))?
        })
    }

    fn is_leader(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_replicated_store_serves_through_its_proposer() {
    let cfg = StoreConfig {
        listen_client_urls: vec!["http://127.0.0.1:0".into()],
        ..Default::default()
    };
    let unstarted = crate::Store::open_replicated(cfg).await.unwrap();
    let replica = unstarted.replica();
    let addr = unstarted.client_addrs()[0];
    let log = LocalLog {
        replica: replica.clone(),
        last: Arc::default(),
    };
    let store = unstarted.start(Arc::new(log));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(store.serve(async {
        let _ = stopped.await;
    }));
    let mut client = etcd_client::Client::connect([format!("http://{addr}")], None)
        .await
        .unwrap();
    client.put("k", "v", None).await.unwrap();
    let lease = client.lease_grant(60, None).await.unwrap();
    let err = client
        .put(
            "k2",
            "v",
            Some(etcd_client::PutOptions::new().with_lease(lease.id() + 1)),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("requested lease not found"),
        "{err}"
    );
    let got = client.get("k", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"v");
    assert_eq!(got.header().unwrap().revision(), 2);
    assert_eq!(replica.applied_index(), 3, "put, grant, rejected put");
    assert_eq!(
        replica.raft_applied().unwrap(),
        Some(3u64.to_be_bytes().to_vec())
    );
    drop(client);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
