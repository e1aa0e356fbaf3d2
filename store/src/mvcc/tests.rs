//! Tests of the revision layer on its own, against both backends.
//!
//! The main one is a model check: random write transactions (puts and range deletes, several
//! per revision), compactions and restarts are applied both to [`Mvcc`] and to a model that
//! simply keeps a copy of the whole keyspace after every revision. After every step every
//! readable revision must read exactly like the model, the events must match, revisions below
//! the compaction and above the head must be refused, the backend must hold exactly the
//! versions the index holds, and a restart must rebuild the identical index. Seeds are fixed;
//! `KEELSON_MVCC_SEED=N` runs one more.
//!
//! The state-machine level behaviours (Range options, Txn, leases) are covered by the scripts
//! in `apply/testdata`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use keelson_proto::etcdserverpb::RangeRequest;
use keelson_proto::mvccpb::{Event, KeyValue};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{delete_event, put_event, Mvcc, Revision, RevisionEvents, WriteTxn};
use crate::backend::{Backend, WriteBatch};
use crate::error::{Error, Result};
use crate::keys;

use crate::backend::{Disk, Kind};

/// A backend and the revision layer over it, with the applier's commit steps.
struct Db {
    disk: Disk,
    backend: Arc<dyn Backend>,
    mvcc: Mvcc,
}

impl Db {
    fn new(kind: Kind) -> Db {
        let disk = Disk::new(kind);
        Db::open(disk).expect("a fresh store opens")
    }

    fn open(disk: Disk) -> Result<Db> {
        let backend = disk.open()?;
        let mvcc = Mvcc::open(&*backend)?;
        Ok(Db {
            disk,
            backend,
            mvcc,
        })
    }

    /// Restarts: everything in memory is dropped, the backend closed and opened again.
    fn reopen(self) -> Result<Db> {
        let Db {
            disk,
            backend,
            mvcc,
        } = self;
        drop(mvcc);
        drop(backend);
        Db::open(disk)
    }

    /// One write transaction, committed and published as the applier does.
    fn write(&self, f: impl FnOnce(&mut WriteTxn<'_>)) -> Option<RevisionEvents> {
        let mut batch = WriteBatch::default();
        let mut txn = self.mvcc.write();
        f(&mut txn);
        let ev = txn.finish(&mut batch);
        self.backend.write(batch).unwrap();
        self.backend.flush().unwrap();
        self.mvcc.publish();
        ev
    }

    fn compact(&self, rev: i64) -> Result<()> {
        let mut batch = WriteBatch::default();
        for k in self.mvcc.compact(rev)? {
            batch.delete(k);
        }
        batch.put(keys::meta_key(keys::META_COMPACTED), keys::frame_i64(rev));
        self.backend.write(batch).unwrap();
        self.backend.flush().unwrap();
        Ok(())
    }

    /// A read as the KV service serves it: at the durable head.
    fn range(&self, key: &[u8], end: &[u8], rev: i64) -> Result<Vec<KeyValue>> {
        let st = self.mvcc.state.read();
        let r = RangeRequest {
            key: key.to_vec().into(),
            range_end: end.to_vec().into(),
            revision: rev,
            ..Default::default()
        };
        let rr = st.range(&r, st.current)?;
        assert_eq!(
            rr.count as usize,
            rr.kvs.len(),
            "no limit, so count is the number read"
        );
        Ok(rr.kvs)
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// The model

#[derive(Debug, Clone)]
enum Op {
    Put(Bytes, Bytes),
    /// `[key, end)` with etcd's conventions: empty end = one key, `\0` = to the end.
    Del(Bytes, Bytes),
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    match end {
        [] => k == key,
        [0] => k >= key,
        _ => k >= key && k < end,
    }
}

struct Model {
    /// The keyspace after each revision, oldest first, starting with the empty store at 1.
    history: Vec<(i64, BTreeMap<Bytes, KeyValue>)>,
    compacted: i64,
}

impl Model {
    fn new() -> Model {
        Model {
            history: vec![(1, BTreeMap::new())],
            // Never compacted is -1, as etcd's compactMainRev.
            compacted: -1,
        }
    }

    fn current(&self) -> i64 {
        self.history.last().unwrap().0
    }

    fn at(&self, rev: i64) -> &BTreeMap<Bytes, KeyValue> {
        &self
            .history
            .iter()
            .rev()
            .find(|(r, _)| *r <= rev)
            .unwrap()
            .1
    }

    /// Applies ops as one revision; returns the events it should produce (none: no revision).
    fn apply(&mut self, ops: &[Op]) -> Vec<Event> {
        let rev = self.current() + 1;
        let mut live = self.at(rev - 1).clone();
        let mut events = Vec::new();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    let prev = live.get(k).cloned();
                    let kv = KeyValue {
                        key: k.clone(),
                        create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                        mod_revision: rev,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                        value: v.clone(),
                        lease: 0,
                    };
                    live.insert(k.clone(), kv.clone());
                    events.push(put_event(kv, prev));
                }
                Op::Del(key, end) => {
                    let doomed: Vec<Bytes> = live
                        .keys()
                        .filter(|k| in_range(k, key, end))
                        .cloned()
                        .collect();
                    for k in doomed {
                        let prev = live.remove(&k);
                        events.push(delete_event(k, rev, prev));
                    }
                }
            }
        }
        if !events.is_empty() {
            self.history.push((rev, live));
        }
        events
    }
}

const KEYS: &[&str] = &["a", "ab", "b", "c", "d", "e"];

fn random_key(rng: &mut StdRng) -> Bytes {
    b(KEYS[rng.random_range(0..KEYS.len())])
}

fn random_ops(rng: &mut StdRng, n: usize) -> Vec<Op> {
    (0..n)
        .map(|_| {
            if rng.random_bool(0.7) {
                Op::Put(
                    random_key(rng),
                    Bytes::from(format!("v{}", rng.random_range(0..1000))),
                )
            } else {
                let key = random_key(rng);
                let end = match rng.random_range(0..4) {
                    0 => Bytes::new(),
                    1 => Bytes::from_static(b"\0"),
                    // Sometimes below the key: an empty range.
                    _ => random_key(rng),
                };
                Op::Del(key, end)
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Checks

/// Every revision from below the compaction to above the head reads like the model.
fn check_reads(db: &Db, m: &Model, rng: &mut StdRng) {
    let (current, compacted) = {
        let st = db.mvcc.state.read();
        (st.current, st.compacted)
    };
    assert_eq!(current, m.current(), "head revision");
    assert_eq!(compacted, m.compacted, "compacted revision");
    for rev in (compacted - 2).max(-1)..=current + 2 {
        let got = db.range(b"\0", b"\0", rev);
        let at = if rev <= 0 { current } else { rev };
        if rev > current {
            assert_eq!(got, Err(Error::FutureRev), "rev {rev} > head {current}");
        } else if at < compacted {
            assert_eq!(
                got,
                Err(Error::Compacted),
                "rev {rev} < compacted {compacted}"
            );
        } else {
            let want: Vec<KeyValue> = m.at(at).values().cloned().collect();
            assert_eq!(got.unwrap(), want, "everything at rev {rev}");
            // And one random sub-range of it.
            let key = random_key(rng);
            let end = match rng.random_range(0..3) {
                0 => Bytes::new(),
                1 => Bytes::from_static(b"\0"),
                _ => random_key(rng),
            };
            let want: Vec<KeyValue> = m
                .at(at)
                .values()
                .filter(|kv| in_range(&kv.key, &key, &end))
                .cloned()
                .collect();
            assert_eq!(
                db.range(&key, &end, rev).unwrap(),
                want,
                "[{key:?}, {end:?}) at rev {rev}"
            );
        }
    }
}

/// The backend holds exactly the versions the index holds, each decoding to the same value,
/// and the index holds no history compaction should have dropped.
fn check_backend_matches_index(db: &Db) {
    let st = db.mvcc.state.read();
    let mut in_index = BTreeMap::new();
    for (key, ki) in &st.tree {
        for g in &ki.generations {
            for v in &g.revs {
                let kv = v.kv.clone().unwrap_or_else(|| KeyValue {
                    key: key.clone(),
                    mod_revision: v.rev.main,
                    ..Default::default()
                });
                in_index.insert(keys::rev_key(v.rev, v.kv.is_none()), kv);
            }
        }
    }
    // Compaction keeps, per key, at most the newest version at or below the compacted
    // revision: a put, or a tombstone exactly at the compacted revision (kept so a watch
    // starting there still sees the delete); a key deleted before it has no history left.
    for (key, ki) in &st.tree {
        let old: Vec<_> = ki
            .generations
            .iter()
            .flat_map(|g| &g.revs)
            .filter(|v| v.rev.main <= st.compacted)
            .collect();
        assert!(
            old.iter().filter(|v| v.kv.is_some()).count() <= 1
                && old
                    .iter()
                    .all(|v| v.kv.is_some() || v.rev.main == st.compacted),
            "{key:?} keeps compacted history {old:?}"
        );
    }
    let mut in_backend = BTreeMap::new();
    for item in db.backend.scan(&[keys::REV_PREFIX], &keys::rev_space_end()) {
        let (k, v) = item.unwrap();
        let kv = KeyValue::decode(keys::unframe(&"test", &v).unwrap()).unwrap();
        in_backend.insert(k, kv);
    }
    assert_eq!(in_backend, in_index, "backend records vs index versions");
}

fn tree_dump(db: &Db) -> String {
    let st = db.mvcc.state.read();
    format!(
        "current={} pending={} compacted={} tree={:?}",
        st.current, st.pending, st.compacted, st.tree
    )
}

fn model_check(kind: Kind, seed: u64, steps: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut db = Db::new(kind);
    let mut m = Model::new();
    for step in 0..steps {
        let ctx = format!("seed {seed} step {step} ({kind:?})");
        match rng.random_range(0..100) {
            0..85 => {
                let n = rng.random_range(1..=4);
                let ops = random_ops(&mut rng, n);
                let before = m.current();
                let want = m.apply(&ops);
                let got = db.write(|txn| {
                    for op in &ops {
                        match op {
                            Op::Put(k, v) => {
                                txn.put(k.clone(), v.clone(), 0);
                            }
                            Op::Del(k, e) => {
                                txn.delete_range(k, e);
                            }
                        }
                    }
                });
                match got {
                    None => assert!(
                        want.is_empty(),
                        "{ctx}: {ops:?} changed nothing, model says {want:?}"
                    ),
                    Some(ev) => {
                        assert_eq!(
                            ev.revision,
                            before + 1,
                            "{ctx}: one main revision per write txn"
                        );
                        assert_eq!(ev.events, want, "{ctx}: events of {ops:?}");
                    }
                }
            }
            85..91 => {
                let (compacted, current) = (m.compacted, m.current());
                // Mostly valid revisions, sometimes ones that must be refused.
                let rev = rng.random_range(compacted - 1..=current + 1);
                let got = db.compact(rev);
                if rev <= compacted {
                    assert_eq!(
                        got,
                        Err(Error::Compacted),
                        "{ctx}: compact {rev} at compacted {compacted}"
                    );
                } else if rev > current {
                    assert_eq!(
                        got,
                        Err(Error::FutureRev),
                        "{ctx}: compact {rev} at head {current}"
                    );
                } else {
                    assert_eq!(got, Ok(()), "{ctx}: compact {rev}");
                    m.compacted = rev;
                }
                check_backend_matches_index(&db);
            }
            91..96 => {
                let before = tree_dump(&db);
                db = db.reopen().unwrap();
                assert_eq!(
                    tree_dump(&db),
                    before,
                    "{ctx}: a restart rebuilds the identical index"
                );
                check_backend_matches_index(&db);
            }
            _ => {}
        }
        check_reads(&db, &m, &mut rng);
    }
    check_backend_matches_index(&db);
    if std::env::var_os("KEELSON_MVCC_STATS").is_some() {
        eprintln!(
            "seed {seed} ({kind:?}): {steps} steps, head {} compacted {}",
            m.current(),
            m.compacted
        );
    }
}

fn seeds() -> Vec<u64> {
    let mut s = vec![1, 2, 3, 4];
    if let Some(extra) = std::env::var("KEELSON_MVCC_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        s.push(extra);
    }
    s
}

#[test]
fn model_check_memory() {
    for seed in seeds() {
        model_check(Kind::Mem, seed, 500);
    }
}

#[test]
fn model_check_sled() {
    for seed in seeds() {
        model_check(Kind::Sled, seed, 250);
    }
}

// ---------------------------------------------------------------------------------------------
// Targeted cases

fn both(f: impl Fn(Kind)) {
    f(Kind::Mem);
    f(Kind::Sled);
}

fn put(db: &Db, k: &str, v: &str) -> i64 {
    db.write(|t| {
        t.put(b(k), b(v), 0);
    })
    .unwrap()
    .revision
}

#[test]
fn first_write_is_revision_two() {
    both(|kind| {
        let db = Db::new(kind);
        assert_eq!(db.mvcc.current_revision(), 1);
        assert_eq!(db.range(b"a", b"", 0).unwrap(), vec![]);
        assert_eq!(db.range(b"a", b"", 1).unwrap(), vec![]);
        assert_eq!(db.range(b"a", b"", 2), Err(Error::FutureRev));
        assert_eq!(put(&db, "a", "1"), 2);
        let db = db.reopen().unwrap();
        assert_eq!(
            put(&db, "b", "1"),
            3,
            "{kind:?}: counting resumes after a restart"
        );
    });
}

#[test]
fn writes_are_invisible_until_published() {
    both(|kind| {
        let db = Db::new(kind);
        put(&db, "a", "1");
        let mut batch = WriteBatch::default();
        let mut txn = db.mvcc.write();
        txn.put(b("a"), b("2"), 0);
        txn.put(b("b"), b("1"), 0);
        // Inside the txn its own writes are visible, at the revision it is writing.
        assert_eq!(txn.get(b"a").unwrap().value, b("2"));
        assert_eq!(txn.header_revision(), 3);
        assert_eq!(txn.begin_revision(), 2);
        txn.finish(&mut batch).unwrap();
        // Applied, not yet durable: readers stay at the durable head.
        assert_eq!(db.mvcc.current_revision(), 2);
        assert_eq!(db.range(b"a", b"c", 0).unwrap().len(), 1);
        assert_eq!(db.range(b"a", b"", 0).unwrap()[0].value, b("1"));
        assert_eq!(db.range(b"a", b"", 3), Err(Error::FutureRev));
        db.backend.write(batch).unwrap();
        db.backend.flush().unwrap();
        assert_eq!(db.mvcc.publish(), 3);
        assert_eq!(db.range(b"a", b"c", 0).unwrap().len(), 2);
    });
}

#[test]
fn empty_and_inverted_ranges_read_nothing() {
    both(|kind| {
        let db = Db::new(kind);
        for k in ["a", "b", "c"] {
            put(&db, k, "1");
        }
        let cases: &[(&[u8], &[u8], usize)] = &[
            (b"b", b"", 1),
            (b"b", b"b", 0),
            (b"c", b"a", 0),
            (b"\xff", b"\x01", 0),
            (b"zz", b"\0", 0),
            (b"\0", b"\0", 3),
            (b"a", b"\xff", 3),
            (b"b", b"b\0", 1),
        ];
        for (key, end, n) in cases {
            assert_eq!(
                db.range(key, end, 0).unwrap().len(),
                *n,
                "{kind:?} [{key:?}, {end:?})"
            );
        }
        // A delete of an empty or inverted range changes nothing and uses no revision.
        assert!(db
            .write(|t| assert!(t.delete_range(b"c", b"a").is_empty()))
            .is_none());
        assert!(db
            .write(|t| assert!(t.delete_range(b"b", b"b").is_empty()))
            .is_none());
        assert_eq!(db.mvcc.current_revision(), 4);
    });
}

#[test]
fn compaction_keeps_the_revision_it_compacted_at_readable() {
    both(|kind| {
        let db = Db::new(kind);
        put(&db, "a", "1"); // 2
        put(&db, "a", "2"); // 3
        put(&db, "a", "3"); // 4
        db.compact(3).unwrap();
        assert_eq!(db.range(b"a", b"", 2), Err(Error::Compacted));
        assert_eq!(db.range(b"a", b"", 3).unwrap()[0].value, b("2"));
        assert_eq!(db.compact(3), Err(Error::Compacted));
        assert_eq!(db.compact(5), Err(Error::FutureRev));
        let db = db.reopen().unwrap();
        assert_eq!(db.mvcc.compacted_revision(), 3);
        assert_eq!(db.range(b"a", b"", 3).unwrap()[0].value, b("2"));
        assert_eq!(db.range(b"a", b"", 2), Err(Error::Compacted));
        check_backend_matches_index(&db);
    });
}

#[test]
#[should_panic(expected = "unfinished changes")]
fn dropping_a_write_with_changes_is_loud() {
    let db = Db::new(Kind::Mem);
    let mut txn = db.mvcc.write();
    txn.put(b("a"), b("1"), 0);
    drop(txn);
}

// ---------------------------------------------------------------------------------------------
// Corruption is refused at open

/// Replaces (or with `None` deletes) one backend record, bypassing every check.
fn poke(db: &Db, key: Vec<u8>, value: Option<Vec<u8>>) {
    let mut batch = WriteBatch::default();
    match value {
        Some(v) => batch.put(key, v),
        None => batch.delete(key),
    }
    db.backend.write(batch).unwrap();
    db.backend.flush().unwrap();
}

fn flip_last_byte(db: &Db, key: Vec<u8>) {
    let mut v = db
        .backend
        .get(&key)
        .unwrap()
        .unwrap_or_else(|| panic!("no record {key:?}"));
    *v.last_mut().unwrap() ^= 0x01;
    poke(db, key, Some(v));
}

fn assert_corrupt(r: Result<Db>, what: &str) {
    match r {
        Err(Error::Corrupt(msg)) => assert!(!msg.is_empty()),
        Err(e) => panic!("{what}: expected Corrupt, got {e:?}"),
        Ok(_) => panic!("{what}: a corrupt store opened"),
    }
}

#[test]
fn corrupt_records_refuse_to_open() {
    type Damage = fn(&Db);
    let cases: Vec<(&str, Damage)> = vec![
        ("flipped put", |db| {
            flip_last_byte(db, keys::rev_key(Revision { main: 2, sub: 0 }, false))
        }),
        ("flipped tombstone", |db| {
            flip_last_byte(db, keys::rev_key(Revision { main: 4, sub: 0 }, true))
        }),
        ("flipped crc", |db| {
            let k = keys::rev_key(Revision { main: 3, sub: 0 }, false);
            let mut v = db.backend.get(&k).unwrap().unwrap();
            v[0] ^= 0x80;
            poke(db, k, Some(v));
        }),
        ("truncated record", |db| {
            poke(
                db,
                keys::rev_key(Revision { main: 3, sub: 0 }, false),
                Some(vec![1, 2]),
            )
        }),
        ("valid crc, not a KeyValue", |db| {
            poke(
                db,
                keys::rev_key(Revision { main: 3, sub: 0 }, false),
                Some(keys::frame(&[0xff, 0xff, 0xff])),
            )
        }),
        ("malformed revision key", |db| {
            poke(db, b"kgarbage".to_vec(), Some(keys::frame(b"")))
        }),
        ("flipped current revision", |db| {
            flip_last_byte(db, keys::meta_key(keys::META_CURRENT_REV))
        }),
        ("flipped compacted revision", |db| {
            flip_last_byte(db, keys::meta_key(keys::META_COMPACTED))
        }),
    ];
    for kind in [Kind::Mem, Kind::Sled] {
        for (what, damage) in &cases {
            let db = Db::new(kind);
            put(&db, "a", "1"); // 2
            put(&db, "b", "1"); // 3
            db.write(|t| {
                t.delete_range(b"a", b"");
            }); // 4
            db.compact(2).unwrap();
            let db = db.reopen().expect("the undamaged store reopens");
            damage(&db);
            assert_corrupt(db.reopen(), &format!("{kind:?} {what}"));
        }
    }
}

#[test]
fn every_version_is_written_once_and_deleted_by_compaction() {
    both(|kind| {
        let db = Db::new(kind);
        for i in 0..5 {
            put(&db, "a", &i.to_string());
        }
        db.write(|t| {
            t.delete_range(b"a", b"\0");
        });
        put(&db, "a", "again");
        check_backend_matches_index(&db);
        let revs = |db: &Db| -> BTreeSet<Vec<u8>> {
            db.backend
                .scan(&[keys::REV_PREFIX], &keys::rev_space_end())
                .map(|r| r.unwrap().0)
                .collect()
        };
        assert_eq!(revs(&db).len(), 7);
        db.compact(7).unwrap();
        // The first generation ended at the compaction revision: its puts go, its tombstone
        // stays until the next compaction.
        assert_eq!(revs(&db).len(), 2);
        check_backend_matches_index(&db);
        db.compact(8).unwrap();
        assert_eq!(revs(&db).len(), 1);
        check_backend_matches_index(&db);
    });
}

/// etcd 3.4 starts `compactMainRev` at -1, so the first `Compact(0)` on a store succeeds (and a
/// second one is refused as compacted); `etcdctl compaction 0` prints "compacted revision 0".
#[test]
fn first_compaction_at_zero_is_accepted_as_etcd_does() {
    both(|kind| {
        let db = Db::new(kind);
        assert_eq!(db.mvcc.compacted_revision(), -1, "never compacted");
        assert_eq!(db.compact(0), Ok(()));
        assert_eq!(db.compact(0), Err(Error::Compacted));
        let db = db.reopen().unwrap();
        assert_eq!(
            db.mvcc.compacted_revision(),
            0,
            "a compaction at 0 is remembered"
        );
        assert_eq!(db.compact(0), Err(Error::Compacted));
        assert_eq!(db.range(b"a", b"", 0).unwrap(), vec![]);
    });
}
