//! Snapshot format, restore and consistency tests.

use super::*;
use crate::apply::Command;
use crate::backend::MemBackend;
use keelson_proto::etcdserverpb::{PutRequest, RangeRequest};

fn write_file(path: &Path, body: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(body).unwrap();
    f.write_all(&digest(body)).unwrap();
}

fn opts(dir: &Path) -> RestoreOptions {
    let cfg = StoreConfig::default();
    RestoreOptions {
        data_dir: dir.to_path_buf(),
        name: cfg.name,
        initial_cluster: cfg.initial_cluster,
        initial_cluster_token: cfg.initial_cluster_token,
        initial_advertise_peer_urls: cfg.initial_advertise_peer_urls,
    }
}

fn pairs() -> Vec<Pair> {
    vec![
        (b"a1".to_vec(), keys::frame(b"x")),
        (b"k2".to_vec(), keys::frame(&[7; 700])),
    ]
}

#[test]
fn body_is_block_aligned_and_reads_back() {
    let body = encode(&pairs());
    assert_eq!(body.len() % ALIGN, 0);
    assert_eq!((body.len() + SHA_LEN) % 512, 32, "etcdctl's size check");
    let mut r = RecordReader::new(&body[..]).unwrap();
    let mut got = Vec::new();
    while let Some(p) = r.next_pair().unwrap() {
        got.push(p);
    }
    assert_eq!(got, pairs());
    assert_eq!(encode(&[]).len(), ALIGN);
}

#[test]
fn corrupt_files_are_refused_before_anything_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("snap");
    let dir = tmp.path().join("data");
    let body = encode(&pairs());

    // A flipped bit anywhere fails the sha256.
    let mut bad = body.clone();
    bad[40] ^= 1;
    let mut f = File::create(&file).unwrap();
    f.write_all(&bad).unwrap();
    f.write_all(&digest(&body)).unwrap();
    drop(f);
    let err = restore_snapshot(&file, &opts(&dir))
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected sha256"), "{err}");
    assert!(!dir.exists());

    // A record whose crc does not match (with a matching sha256: a writer bug) is refused.
    write_file(&file, &bad);
    let err = restore_snapshot(&file, &opts(&dir))
        .unwrap_err()
        .to_string();
    assert!(err.contains("crc32"), "{err}");
    assert!(!dir.join("member").exists());

    // Not a snapshot at all.
    std::fs::write(&file, b"hello").unwrap();
    let err = restore_snapshot(&file, &opts(&dir))
        .unwrap_err()
        .to_string();
    assert!(err.contains("512-byte blocks"), "{err}");
}

/// Snapshots taken while commits land must each be the state after some whole commit.
/// The writer toggles an alarm, one command per commit, so the alarm record (first in key
/// order) is present exactly when the applied index (a meta record, near the end) is odd
/// past the fill; the scan spans several pages of the in-memory backend, so a commit
/// landing mid-scan would break the relation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_taken_under_writes_are_consistent() {
    use keelson_proto::etcdserverpb::alarm_request::AlarmAction;
    use keelson_proto::etcdserverpb::{AlarmRequest, AlarmType};
    let core = Core::open_with(StoreConfig::default(), Arc::new(MemBackend::default())).unwrap();
    const FILL: u64 = 5000;
    for i in 0..FILL {
        let put = PutRequest {
            key: format!("fill{i:05}").into(),
            value: "v".into(),
            ..Default::default()
        };
        core.propose(Command::Put(put)).await.unwrap();
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Snapshots taken so far: the writer goes on until several were taken during its writes
    // (on a busy machine the checker thread may not run at all during a fixed number).
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let checker = {
        let (core, done, taken) = (core.clone(), done.clone(), taken.clone());
        tokio::task::spawn_blocking(move || {
            let mut checked = 0;
            let applied_key = keys::meta_key(keys::META_CONSISTENT_INDEX);
            while !done.load(std::sync::atomic::Ordering::SeqCst) || checked == 0 {
                let pairs = consistent_pairs(&core).unwrap();
                let alarmed = pairs.iter().any(|(k, _)| k[0] == keys::ALARM_PREFIX);
                let applied = pairs
                    .iter()
                    .find(|(k, _)| *k == applied_key)
                    .map(|(_, v)| keys::unframe_i64(&"applied", v).unwrap() as u64)
                    .unwrap();
                assert_eq!(
                    alarmed,
                    (applied - FILL) % 2 == 1,
                    "a snapshot mixed two commits at {applied}"
                );
                checked += 1;
                taken.store(checked, std::sync::atomic::Ordering::SeqCst);
            }
            checked
        })
    };
    let mut i = 0;
    while i < 2000 || taken.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(i < 1_000_000, "the snapshot checker never ran");
        let action = if i % 2 == 0 {
            AlarmAction::Activate
        } else {
            AlarmAction::Deactivate
        };
        let alarm = AlarmRequest {
            action: action as i32,
            member_id: 1,
            alarm: AlarmType::Nospace as i32,
        };
        core.propose(Command::Alarm(alarm)).await.unwrap();
        i += 1;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let checked = checker.await.unwrap();
    assert!(checked >= 3, "only {checked} snapshots were taken");
}

#[tokio::test]
async fn restore_builds_a_data_dir_with_the_same_keys_and_revisions() {
    let core = Core::open_with(StoreConfig::default(), Arc::new(MemBackend::default())).unwrap();
    for i in 0..5 {
        let put = PutRequest {
            key: format!("k{i}").into(),
            value: "v".into(),
            ..Default::default()
        };
        core.propose(Command::Put(put)).await.unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("snap");
    save(&core, &file).unwrap();
    let len = std::fs::metadata(&file).unwrap().len();
    assert_eq!(len % 512, 32);

    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let summary = restore_snapshot(&file, &opts(&dir)).unwrap();
    assert_eq!(summary.revision, 6);
    assert_eq!(summary.compact_revision, -1, "never compacted");
    assert_eq!(summary.member_id, core.member_id);

    // A second restore into the same (now non-empty) dir is refused.
    let err = restore_snapshot(&file, &opts(&dir))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not empty"), "{err}");

    let cfg = StoreConfig {
        data_dir: Some(dir.clone()),
        ..Default::default()
    };
    let restored = Core::open(cfg).unwrap();
    assert_eq!(restored.mvcc.current_revision(), 6);
    assert_eq!(
        restored.applied_index(),
        0,
        "a restored member starts a new log"
    );
    let st = restored.mvcc.state.read();
    let all = RangeRequest {
        key: "k".into(),
        range_end: "l".into(),
        ..Default::default()
    };
    let rr = st.range(&all, st.current).unwrap();
    assert_eq!(rr.count, 5);
    assert_eq!(rr.kvs[4].mod_revision, 6);
}
