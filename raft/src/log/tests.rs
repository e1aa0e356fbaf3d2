//! The log against openraft's conformance suite, and against the crashes and damage it must
//! survive or refuse.

use std::fs::{self, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use keelson_proto::etcdserverpb::PutRequest;
use keelson_store::Command;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::StorageError;
use tempfile::TempDir;

use super::wal::testing::{frame_offsets, segment_file, FRAME_HEADER};
use super::wal::{self, Record};
use super::{LogError, LogStore};
use crate::mem_store::MemStore;
use crate::state_machine::StateMachine;
use crate::types::{Entry, LogId, Member, Membership, Proposal, TypeConfig, Vote};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine<MemStore>, TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachine<MemStore>), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(dir.path()).await.expect("open log");
        let sm = StateMachine::new(Arc::new(MemStore::default()))
            .await
            .expect("state machine");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_openraft_storage_suite() {
    Suite::test_all(Builder).await.expect("suite passes");
}

fn log_id(term: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, 1, index)
}

fn put(term: u64, index: u64) -> Entry {
    let cmd = Command::Put(PutRequest {
        key: format!("key-{index}").into(),
        value: vec![b'v'; 40].into(),
        ..Default::default()
    });
    Entry::new_normal(log_id(term, index), Proposal::new(&cmd))
}

/// Appends and waits for the flush callback.
async fn append(log: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().expect("flushed");
}

async fn fill(dir: &Path, n: u64) {
    let mut log = LogStore::open(dir).await.unwrap();
    for i in 1..=n {
        append(&mut log, vec![put(1, i)]).await;
    }
}

async fn last_index(log: &mut LogStore) -> Option<u64> {
    log.get_log_state()
        .await
        .unwrap()
        .last_log_id
        .map(|id| id.index)
}

async fn indexes(log: &mut LogStore) -> Vec<u64> {
    let entries = log
        .get_log_reader()
        .await
        .try_get_log_entries(..)
        .await
        .unwrap();
    entries.iter().map(|e| e.log_id.index).collect()
}

#[tokio::test]
async fn reopen_restores_entries_vote_truncation_and_purge_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new_committed(2, 1);
    {
        let mut log = LogStore::open_with(dir.path(), 1024).await.unwrap();
        for i in 1..=60 {
            append(&mut log, vec![put(1, i)]).await;
        }
        log.save_vote(&vote).await.unwrap();
        log.truncate_after(Some(log_id(1, 50))).await.unwrap();
        append(&mut log, (51..=55).map(|i| put(2, i)).collect()).await;
        let before = log.segment_ids();
        assert!(before.len() > 3, "small segments roll: {before:?}");
        log.purge(log_id(1, 20)).await.unwrap();
        let after = log.segment_ids();
        assert!(after.len() < before.len(), "purge frees whole segments");
        assert_eq!(after.last(), before.last());
    }
    let mut log = LogStore::open_with(dir.path(), 1024).await.unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 20)));
    assert_eq!(state.last_log_id, Some(log_id(2, 55)));
    assert_eq!(indexes(&mut log).await, (21..=55).collect::<Vec<_>>());
    let mut reader = log.get_log_reader().await;
    assert_eq!(reader.read_vote().await.unwrap(), Some(vote));
    let e = reader.try_get_log_entries(50..52).await.unwrap();
    assert_eq!((e[0].log_id, e[1].log_id), (log_id(1, 50), log_id(2, 51)));
    assert_eq!(e[1], put(2, 51), "payload survives byte for byte");
}

#[tokio::test]
async fn a_flipped_byte_in_the_middle_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 10).await;
    let path = segment_file(dir.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let offsets = frame_offsets(&bytes);
    assert_eq!(offsets.len(), 11, "a checkpoint and ten entries");
    let victim = offsets[5];
    bytes[victim + FRAME_HEADER + 30] ^= 0x01;
    fs::write(&path, &bytes).unwrap();

    match LogStore::open(dir.path()).await {
        Err(e @ LogError::Corrupt { offset, .. }) => {
            assert_eq!(offset, victim as u64);
            let msg = e.to_string();
            assert!(msg.contains("payload crc mismatch"), "{msg}");
            assert!(msg.contains("refusing to start"), "{msg}");
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("a corrupt log opened"),
    }
}

#[tokio::test]
async fn a_damaged_length_in_the_middle_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 10).await;
    let path = segment_file(dir.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let victim = frame_offsets(&bytes)[3];
    // A bigger length would otherwise look like a record running past the end: a torn tail.
    bytes[victim + 2] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        LogStore::open(dir.path()).await,
        Err(LogError::Corrupt { offset, .. }) if offset == victim as u64
    ));
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 10).await;
    let path = segment_file(dir.path(), 1);
    let len = fs::metadata(&path).unwrap().len();
    let last = *frame_offsets(&fs::read(&path).unwrap()).last().unwrap() as u64;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(last + FRAME_HEADER as u64 + 5)
        .unwrap();
    assert!(last + (FRAME_HEADER as u64) + 5 < len);

    let mut log = LogStore::open(dir.path()).await.unwrap();
    assert_eq!(
        last_index(&mut log).await,
        Some(9),
        "the torn entry is gone"
    );
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        last,
        "and cut from the file"
    );
    append(&mut log, vec![put(3, 10)]).await;
    drop(log);

    let mut log = LogStore::open(dir.path()).await.unwrap();
    assert_eq!(indexes(&mut log).await, (1..=10).collect::<Vec<_>>());
    let e = log
        .get_log_reader()
        .await
        .try_get_log_entries(10..11)
        .await
        .unwrap();
    assert_eq!(e[0].log_id, log_id(3, 10));
}

#[tokio::test]
async fn a_zeroed_tail_is_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 3).await;
    let path = segment_file(dir.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    // The file grew but the last batch's data never reached the disk.
    bytes.extend_from_slice(&[0u8; 300]);
    fs::write(&path, &bytes).unwrap();
    let mut log = LogStore::open(dir.path()).await.unwrap();
    assert_eq!(indexes(&mut log).await, vec![1, 2, 3]);
}

#[tokio::test]
async fn a_torn_older_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open_with(dir.path(), 1024).await.unwrap();
        for i in 1..=40 {
            append(&mut log, vec![put(1, i)]).await;
        }
        assert!(log.segment_ids().len() > 2);
    }
    // Segment 1 was fsynced whole before segment 2 was created: a short one is damage.
    let path = segment_file(dir.path(), 1);
    let len = fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    assert!(matches!(
        LogStore::open_with(dir.path(), 1024).await,
        Err(LogError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn a_purge_interrupted_while_deleting_segments_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let first = segment_file(dir.path(), 1);
    let saved = {
        let mut log = LogStore::open_with(dir.path(), 1024).await.unwrap();
        for i in 1..=40 {
            append(&mut log, vec![put(1, i)]).await;
        }
        let saved = fs::read(&first).unwrap();
        log.purge(log_id(1, 30)).await.unwrap();
        assert!(log.segment_ids()[0] > 2, "purge removed several segments");
        saved
    };
    // The oldest segment's deletion never reached the disk.
    fs::write(&first, saved).unwrap();
    let mut log = LogStore::open_with(dir.path(), 1024).await.unwrap();
    assert_eq!(indexes(&mut log).await, (31..=40).collect::<Vec<_>>());
    assert_eq!(
        log.get_log_state().await.unwrap().last_purged_log_id,
        Some(log_id(1, 30))
    );
    assert!(!first.exists(), "the leftover is deleted");
}

#[tokio::test]
async fn a_lost_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open_with(dir.path(), 1024).await.unwrap();
        for i in 1..=40 {
            append(&mut log, vec![put(1, i)]).await;
        }
        assert!(log.segment_ids().len() > 3);
    }
    for lost in [2, 1] {
        fs::remove_file(segment_file(dir.path(), lost)).unwrap();
        let err = LogStore::open_with(dir.path(), 1024)
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("is missing"), "{err}");
    }
    assert!(
        segment_file(dir.path(), 3).exists(),
        "a refused open deletes nothing"
    );
}

#[tokio::test]
async fn entries_are_readable_before_their_flush_and_flushes_complete_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogStore::open(dir.path()).await.unwrap();
    let mut reader = log.get_log_reader().await;
    let mut pending = Vec::new();
    for i in 1..=200 {
        let (tx, rx) = TypeConfig::oneshot();
        log.append(vec![put(1, i)], IOFlushed::signal(tx))
            .await
            .unwrap();
        assert_eq!(reader.try_get_log_entries(i..=i).await.unwrap().len(), 1);
        pending.push(rx);
    }
    for rx in pending {
        rx.await.unwrap().expect("flushed");
    }
    drop(log);
    let mut log = LogStore::open(dir.path()).await.unwrap();
    assert_eq!(last_index(&mut log).await, Some(200));
}

#[tokio::test]
async fn writes_that_arrive_during_an_fsync_share_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogStore::open(dir.path()).await.unwrap();
    let shared = Arc::clone(&log.shared);
    // Pretend a flush is running, so the waiters queue up behind it.
    shared.flush.lock().running = true;
    let mut waiting = Vec::new();
    for i in 1..=3 {
        let (seq, _) = shared
            .wal
            .lock()
            .write(&[Record::Entry(put(1, i))])
            .unwrap();
        let (tx, rx) = TypeConfig::oneshot();
        shared.when_durable(seq, IOFlushed::signal(tx));
        waiting.push(rx);
    }
    let before = shared.fsyncs();
    // The running flush comes round again: one fsync answers all three.
    tokio::task::spawn_blocking(move || shared.flush_loop())
        .await
        .unwrap();
    for rx in waiting {
        rx.await.unwrap().expect("flushed");
    }
    assert_eq!(log.shared.fsyncs() - before, 1);
    assert!(!log.shared.flush.lock().running, "the flush thread exited");
}

#[tokio::test]
async fn after_an_io_error_every_write_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogStore::open(dir.path()).await.unwrap();
    append(&mut log, vec![put(1, 1)]).await;
    log.shared.fail(&std::io::Error::other("disk on fire"));
    let (tx, rx) = TypeConfig::oneshot();
    assert!(log
        .append(vec![put(1, 2)], IOFlushed::signal(tx))
        .await
        .is_err());
    drop(rx);
    let err = log.save_vote(&Vote::new(3, 1)).await.unwrap_err();
    assert!(err.to_string().contains("disk on fire"), "{err}");
    assert!(log.truncate_after(None).await.is_err());
}

#[test]
fn every_record_kind_round_trips() {
    let member = |n: u64| Member {
        name: format!("m{n}"),
        peer_urls: vec![format!("http://10.0.0.{n}:2380")],
        client_urls: vec![format!("http://10.0.0.{n}:2379")],
    };
    let with_learner = Membership::new(
        vec![[1u64, 2].into()],
        (1..=3)
            .map(|n| (n, member(n)))
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
    .unwrap();
    let records = [
        Record::Checkpoint {
            vote: None,
            purged: None,
        },
        Record::Checkpoint {
            vote: Some(Vote::new_committed(4, 2)),
            purged: Some(log_id(3, 9)),
        },
        Record::Entry(Entry::new_blank(log_id(1, 1))),
        Record::Entry(put(2, 2)),
        Record::Entry(Entry::new_membership(log_id(2, 3), with_learner)),
        Record::Vote(Vote::new(5, 3)),
        Record::TruncateAfter(None),
        Record::TruncateAfter(Some(log_id(2, 2))),
        Record::Purge(log_id(2, 2)),
    ];
    for r in &records {
        assert_eq!(&wal::testing::round_trip(r), r);
    }
}

#[tokio::test]
async fn a_damaged_complete_last_record_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 10).await;
    let path = segment_file(dir.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let last = *frame_offsets(&bytes).last().unwrap();
    // One bit of the last record's payload flips: the record is whole, so it was written and
    // may have been acknowledged; dropping it would lose an acknowledged entry.
    let n = bytes.len();
    bytes[n - 3] ^= 0x10;
    fs::write(&path, &bytes).unwrap();
    match LogStore::open(dir.path()).await {
        Err(LogError::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, last as u64);
            assert!(reason.contains("payload crc mismatch"), "{reason}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a log with a damaged acknowledged record opened"),
    }
    assert_eq!(fs::read(&path).unwrap(), bytes, "nothing changed on disk");
}

#[tokio::test]
async fn a_last_record_with_a_zeroed_sector_is_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 10).await;
    let path = segment_file(dir.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let last = *frame_offsets(&bytes).last().unwrap();
    // The last record's tail sector never reached the disk: zeros where its data was.
    let n = bytes.len();
    let from = (n - 1) / 512 * 512;
    let from = from.max(last + FRAME_HEADER);
    bytes[from..].iter_mut().for_each(|b| *b = 0);
    fs::write(&path, &bytes).unwrap();
    let mut log = LogStore::open(dir.path()).await.unwrap();
    assert_eq!(
        last_index(&mut log).await,
        Some(9),
        "the torn entry is gone"
    );
}
