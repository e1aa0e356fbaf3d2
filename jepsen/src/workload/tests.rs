//! Op generation, request shapes and response conversion; then every workload against a real
//! single-member etcd 3.4, whose histories the checkers must pass.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicI64;

use keelson_proto::etcdserverpb::{compare, request_op, ResponseHeader};
use keelson_proto::mvccpb::{Event, KeyValue};
use rand::SeedableRng;

use super::*;
use crate::history::{EventKind, Func, MicroOp, OpType};

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

#[test]
fn workload_lists_parse() {
    assert_eq!(
        WorkloadKind::parse_list("all").unwrap(),
        WorkloadKind::ALL.to_vec()
    );
    assert_eq!(
        WorkloadKind::parse_list("watch,register,watch").unwrap(),
        vec![WorkloadKind::Register, WorkloadKind::Watch]
    );
    assert!(WorkloadKind::parse_list("register,bank").is_err());
    assert_eq!(
        "serializable".parse::<ReadMode>(),
        Ok(ReadMode::Serializable)
    );
}

#[test]
fn process_ids_stay_in_their_workload_and_renew_after_info() {
    let mut p = Process::new(WorkloadKind::Watch, 2, 6);
    assert_eq!(p.id(), 2 * PROCESS_SPAN + 2);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..(PROCESS_SPAN / 6 + 10) {
        assert_eq!(WorkloadKind::of_process(p.id()), Some(WorkloadKind::Watch));
        seen.insert(p.id());
        p.crashed();
    }
    assert!(seen.len() > 1000, "ids are renewed");
    assert_eq!(WorkloadKind::of_process(4 * PROCESS_SPAN), None);
}

#[test]
fn key_windows_slide_and_stay_small() {
    let w = KeyWindow {
        active: 5,
        per_key: 100,
    };
    let mut r = rng(1);
    for n in [0u64, 99, 100, 12_345] {
        for _ in 0..50 {
            let k = w.key(n, &mut r);
            assert!((n / 100..n / 100 + 5).contains(&k), "{n} -> {k}");
        }
    }
}

#[test]
fn seeds_reproduce_generators_and_clients_differ() {
    let (tx, rx) = signal::channel(Phase::Running);
    drop(tx);
    let ctx = Ctx {
        endpoints: vec!["a".into()],
        clock: Clock::new(Instant::now()),
        phase: rx,
        seed: 42,
        timeout: Duration::from_secs(1),
        read_mode: ReadMode::Linearizable,
        watch_progress: true,
    };
    let draw = |kind, i| ctx.rng(kind, i).random::<u64>();
    assert_eq!(
        draw(WorkloadKind::Register, 0),
        draw(WorkloadKind::Register, 0)
    );
    assert_ne!(
        draw(WorkloadKind::Register, 0),
        draw(WorkloadKind::Register, 1)
    );
    assert_ne!(
        draw(WorkloadKind::Register, 0),
        draw(WorkloadKind::Append, 0)
    );
}

#[test]
fn register_mixes_reads_writes_and_cas_from_the_last_seen_value() {
    let mut r = rng(7);
    let seen = Some(Some("3.1".to_string()));
    let mut counts = BTreeMap::new();
    for i in 0..4000 {
        let op = register::plan(&mut r, seen.as_ref(), format!("v{i}"));
        if let register::Planned::Cas { expected, .. } = &op {
            assert_eq!(expected.as_deref(), Some("3.1"));
        }
        let name = match op {
            register::Planned::Read => "read",
            register::Planned::Write(_) => "write",
            register::Planned::Cas { .. } => "cas",
        };
        *counts.entry(name).or_insert(0) += 1;
    }
    assert!((1800..2200).contains(&counts["read"]), "{counts:?}");
    assert!((800..1200).contains(&counts["write"]), "{counts:?}");
    assert!((800..1200).contains(&counts["cas"]), "{counts:?}");
    // Never seen: CAS from absent.
    let mut r = rng(8);
    let cas = std::iter::repeat_with(|| register::plan(&mut r, None, "v".into()))
        .find(|p| matches!(p, register::Planned::Cas { .. }))
        .unwrap();
    assert_eq!(
        cas,
        register::Planned::Cas {
            expected: None,
            value: "v".into()
        }
    );
}

#[test]
fn cas_compares_the_value_or_absence() {
    let t = register::cas_request("r/1", Some("a"), "b");
    assert_eq!(t.compare.len(), 1);
    assert_eq!(t.compare[0].target, compare::CompareTarget::Value as i32);
    assert_eq!(
        t.compare[0].target_union,
        Some(compare::TargetUnion::Value("a".into()))
    );
    assert!(matches!(
        &t.success[0].request,
        Some(request_op::Request::RequestPut(p)) if p.value == "b" && p.key == "r/1"
    ));
    // etcd fails a value compare on a missing key: absence is version 0.
    let t = register::cas_request("r/1", None, "b");
    assert_eq!(t.compare[0].target, compare::CompareTarget::Version as i32);
    assert_eq!(
        t.compare[0].target_union,
        Some(compare::TargetUnion::Version(0))
    );
}

#[test]
fn append_txns_use_unique_values_and_read_their_own_appends() {
    let values = AtomicI64::new(1);
    let mut r = rng(3);
    let mut all = std::collections::HashSet::new();
    for n in 0..500 {
        let micro = append::generate(&mut r, n, "a/", &values);
        assert!((1..=4).contains(&micro.len()));
        for m in &micro {
            match m {
                MicroOp::Append { key, value } => {
                    assert!(key.starts_with("a/"));
                    assert!(all.insert(*value), "value {value} appended twice");
                }
                MicroOp::R { value, .. } => assert_eq!(value, &None),
            }
        }
    }
    let micro = vec![
        MicroOp::R {
            key: "a/1".into(),
            value: None,
        },
        MicroOp::Append {
            key: "a/1".into(),
            value: 9,
        },
        MicroOp::R {
            key: "a/1".into(),
            value: None,
        },
        MicroOp::R {
            key: "a/2".into(),
            value: None,
        },
    ];
    assert_eq!(
        append::keys(&micro),
        vec!["a/1".to_string(), "a/2".to_string()]
    );
    let read = BTreeMap::from([("a/1".to_string(), vec![4, 5]), ("a/2".to_string(), vec![])]);
    let (done, written) = append::apply(&micro, read);
    let reads: Vec<_> = done
        .iter()
        .filter_map(|m| match m {
            MicroOp::R { value, .. } => value.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(reads, vec![vec![4, 5], vec![4, 5, 9], vec![]]);
    assert_eq!(
        written,
        BTreeMap::from([("a/1".to_string(), vec![4, 5, 9])])
    );

    // The guard names every key touched; the success branch writes the new lists.
    let revs = BTreeMap::from([("a/1".to_string(), 7), ("a/2".to_string(), 0)]);
    let t = append::write_request(&revs, &written);
    assert_eq!(t.compare.len(), 2);
    assert!(t
        .compare
        .iter()
        .all(|c| c.target == compare::CompareTarget::Mod as i32));
    assert_eq!(
        t.compare[1].target_union,
        Some(compare::TargetUnion::ModRevision(0))
    );
    assert!(matches!(
        &t.success[0].request,
        Some(request_op::Request::RequestPut(p)) if p.value == "4 5 9"
    ));
    assert_eq!(
        append::read_request(&["a/1".into(), "a/2".into()])
            .success
            .len(),
        2
    );
}

#[test]
fn lists_round_trip_and_garbage_is_visible() {
    assert_eq!(append::encode(&[1, 22, 3]), "1 22 3");
    assert_eq!(append::decode(b"1 22 3"), vec![1, 22, 3]);
    assert_eq!(append::decode(b""), Vec::<i64>::new());
    assert_eq!(append::decode(b"1 x"), vec![1, -1]);
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

#[test]
fn watch_responses_convert_as_etcd_defines_them() {
    let put = Event {
        r#type: 0,
        kv: Some(KeyValue {
            key: "w/1".into(),
            value: "v".into(),
            create_revision: 5,
            mod_revision: 7,
            ..Default::default()
        }),
        prev_kv: Some(KeyValue {
            value: "old".into(),
            ..Default::default()
        }),
    };
    let del = Event {
        r#type: 1,
        kv: Some(KeyValue {
            key: "w/2".into(),
            mod_revision: 8,
            ..Default::default()
        }),
        prev_kv: None,
    };
    let resp = keelson_proto::etcdserverpb::WatchResponse {
        header: header(8),
        events: vec![put, del],
        ..Default::default()
    };
    let r = watch::convert(&resp, 99);
    assert!(!r.progress_notify);
    assert_eq!(r.revision, 8);
    assert_eq!(r.time_ns, 99);
    assert_eq!(r.events[0].kind, EventKind::Put);
    assert_eq!(r.events[0].value.as_deref(), Some("v"));
    assert_eq!(r.events[0].prev_value.as_deref(), Some("old"));
    assert_eq!((r.events[0].revision, r.events[0].create_revision), (7, 5));
    assert_eq!(r.events[1].kind, EventKind::Delete);
    assert_eq!(r.events[1].value, None);

    let progress = keelson_proto::etcdserverpb::WatchResponse {
        header: header(12),
        ..Default::default()
    };
    assert!(watch::convert(&progress, 0).progress_notify);
    let created = keelson_proto::etcdserverpb::WatchResponse {
        header: header(3),
        created: true,
        ..Default::default()
    };
    assert!(!watch::convert(&created, 0).progress_notify);
}

#[test]
fn resumption_starts_after_what_a_stream_proved() {
    let created = |rev| crate::history::WatchResponse {
        created: true,
        revision: rev,
        ..Default::default()
    };
    let progress = |rev| crate::history::WatchResponse {
        progress_notify: true,
        revision: rev,
        ..Default::default()
    };
    let event = |rev| crate::history::WatchResponse {
        events: vec![crate::history::WatchEvent {
            kind: EventKind::Put,
            key: "w/1".into(),
            value: Some("v".into()),
            revision: rev,
            create_revision: rev,
            prev_value: None,
        }],
        revision: rev,
        ..Default::default()
    };
    // From "now": the creation revision is proven.
    assert_eq!(watch::proven(0, &[created(10)]), Some(10));
    // From a revision: the creation revision proves nothing.
    assert_eq!(watch::proven(4, &[created(10)]), None);
    assert_eq!(
        watch::proven(4, &[created(10), event(5), progress(12)]),
        Some(12)
    );
    // A progress behind an event does not move the proof back.
    assert_eq!(watch::proven(4, &[event(9), progress(8)]), Some(9));
    let r = watch::request(6);
    assert_eq!((r.key.as_str(), r.range_end.as_deref()), ("w/", Some("w0")));
    assert!(r.prev_kv && r.progress_notify && r.start_revision == 6);
    assert!(r.covers("w/anything") && !r.covers("x"));
}

#[test]
fn lease_ids_are_positive_and_unique() {
    let mut ids = std::collections::HashSet::new();
    for client in 0..4 {
        for cycle in 1..100 {
            let id = lease::lease_id(client, cycle);
            assert!(id > 0);
            assert!(ids.insert(id));
        }
    }
}

/// A single etcd 3.4 member on free ports, killed on drop.
struct Etcd {
    child: std::process::Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn etcd() -> Etcd {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
    let child = std::process::Command::new("/usr/bin/etcd")
        .args(["--name", "t", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("t={peer_url}")])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("real etcd 3.4 at /usr/bin/etcd (Debian's etcd-server), as CI installs it");
    let etcd = Etcd {
        child,
        endpoint,
        _dir: dir,
    };
    // Poll the member until it serves a linearizable read: the event to await.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = crate::client::Conn::new(&etcd.endpoint, Duration::from_secs(1));
    loop {
        let mut kv = conn.kv();
        let req = keelson_proto::etcdserverpb::RangeRequest {
            key: "probe".into(),
            ..Default::default()
        };
        if conn.call(kv.range(req)).await.is_ok() {
            return etcd;
        }
        assert!(Instant::now() < deadline, "etcd did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_records_a_history_its_checker_passes_on_real_etcd() {
    let etcd = etcd().await;
    let (phase_tx, phase_rx) = signal::channel(Phase::Running);
    let ctx = Ctx {
        endpoints: vec![etcd.endpoint.clone()],
        clock: Clock::new(Instant::now()),
        phase: phase_rx,
        seed: 5,
        timeout: Duration::from_secs(2),
        read_mode: ReadMode::Linearizable,
        // etcd 3.4.23 answers progress requests out of order (etcd-io/etcd#15220).
        watch_progress: false,
    };
    let tasks: Vec<_> = WorkloadKind::ALL
        .into_iter()
        .map(|w| (w, tokio::spawn(run(w, ctx.clone()))))
        .collect();
    tokio::time::sleep(Duration::from_secs(4)).await;
    phase_tx.send(Phase::Stopping).unwrap();
    phase_tx.send(Phase::Healed).unwrap();
    for (w, task) in tasks {
        let ops = tokio::time::timeout(Duration::from_secs(40), task)
            .await
            .unwrap_or_else(|_| panic!("{w} did not stop"))
            .unwrap();
        let ok = ops.iter().filter(|op| op.kind == OpType::Ok).count();
        assert!(ok >= 10, "{w}: only {ok} ok ops of {}", ops.len());
        for op in &ops {
            assert_eq!(WorkloadKind::of_process(op.process), Some(w), "{op:?}");
            assert!(op.complete_ns.is_some_and(|c| c >= op.invoke_ns), "{op:?}");
        }
        let history = crate::history::History::new(ops);
        let result = match w {
            WorkloadKind::Register => crate::linearizable::check(&history, Duration::from_secs(30)),
            WorkloadKind::Append => crate::append::check(&history),
            WorkloadKind::Watch => crate::watch::check(&history),
            WorkloadKind::Lease => crate::lease::check(&history, Duration::ZERO),
        };
        assert!(result.is_valid(), "{w}: {result:#?}");
        let has = |f: &dyn Fn(&Func) -> bool| {
            history
                .ops
                .iter()
                .any(|op| op.kind == OpType::Ok && f(&op.f))
        };
        match w {
            WorkloadKind::Register => {
                assert!(has(&|f| matches!(f, Func::Read { value: Some(_), .. })));
                assert!(
                    has(&|f| matches!(f, Func::Cas { .. })),
                    "some CAS succeeded"
                );
            }
            WorkloadKind::Append => {
                assert!(has(
                    &|f| matches!(f, Func::Txn { ops } if ops.iter().any(|m| matches!(m, MicroOp::R { value: Some(v), .. } if !v.is_empty())))
                ));
            }
            WorkloadKind::Watch => {
                let events: usize = history
                    .ops
                    .iter()
                    .filter_map(|op| match &op.f {
                        Func::Watch { responses, .. } => {
                            Some(responses.iter().map(|r| r.events.len()).sum::<usize>())
                        }
                        _ => None,
                    })
                    .sum();
                assert!(events > 10, "watchers saw {events} events");
                // Every observer followed the prefix to the sentinel written after the heal.
                let sentinel = history
                    .ops
                    .iter()
                    .find(|op| op.kind == OpType::Ok && op.key() == Some("w/final"))
                    .and_then(|op| op.revision)
                    .expect("the sentinel was written");
                let reached = history
                    .ops
                    .iter()
                    .filter(|op| match &op.f {
                        Func::Watch { responses, .. } => responses
                            .iter()
                            .any(|r| r.events.iter().any(|e| e.revision == sentinel)),
                        _ => false,
                    })
                    .count();
                assert_eq!(reached, 3, "observers that saw the sentinel");
            }
            WorkloadKind::Lease => {
                assert!(has(&|f| matches!(f, Func::LeaseGrant { .. })));
                assert!(has(&|f| matches!(f, Func::Write { lease: Some(_), .. })));
                let keepalives: Vec<_> = history
                    .ops
                    .iter()
                    .filter(|op| matches!(op.f, Func::LeaseKeepAlive { .. }))
                    .collect();
                assert!(
                    has(&|f| matches!(f, Func::LeaseKeepAlive { ttl: Some(_), .. })),
                    "{keepalives:#?}"
                );
            }
        }
    }
}
