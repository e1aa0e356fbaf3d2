//! A snapshot on the wire: cut into checked chunks by the leader, reassembled and verified by
//! the follower before openraft sees any of it.
//!
//! The stream is one `InstallSnapshot` call (client streaming): the leader sends
//! 1. a first chunk with the leader's vote, the snapshot's metadata, its total size and crc32,
//!    and where the transfer starts (0, or the offset a resumed transfer goes on from), and no
//!    data;
//! 2. data chunks in order, each with its offset and the crc32 of its data;
//! 3. the final chunk (`last`), which also carries the crc32 of the whole snapshot. For an empty
//!    snapshot the first chunk is the final one.
//!
//! The receiver ([`Assembler`]) refuses the transfer, with an error that says which check failed,
//! if a chunk's crc does not match its data, a chunk is not at the next offset, the data would
//! exceed the announced size or the configured bound, the stream ends without its final chunk,
//! the received size differs from the announced one, or the whole-snapshot checksum differs; and
//! [`receive`] refuses it if it takes longer than the configured time. Nothing reaches the state
//! machine unless every check passed, so a snapshot damaged in transit can never be installed
//! (openraft panics on a snapshot inconsistent with its log, and the store would diverge).
//!
//! **Resuming.** A transfer that broke off (the stream failed or took too long) leaves what was
//! received and checked so far as a [`Partial`], named by the snapshot's [`Key`] (last log id,
//! size, crc32). When openraft sends the snapshot again, the sender first asks for the offset
//! the receiver holds for that key (`SnapshotResume`) and starts there; the receiver goes on
//! from its partial only if the key and offset match, and otherwise refuses, after which the
//! next attempt starts from 0. A transfer refused for corrupt or inconsistent data keeps
//! nothing. The whole-snapshot checksum still covers every byte, old and new.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use keelson_proto::keelsonraftpb::SnapshotChunk;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tonic::Status;

use super::codec;
use crate::types::{LogId, TypeConfig, Vote};

/// Which snapshot a transfer carries, for resuming it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Key {
    pub(crate) last_log_id: Option<LogId>,
    pub(crate) total_size: u64,
    pub(crate) total_crc32: u32,
}

impl Key {
    pub(crate) fn of(meta: &Meta, data: &[u8]) -> Key {
        Key {
            last_log_id: meta.last_log_id,
            total_size: data.len() as u64,
            total_crc32: crc32fast::hash(data),
        }
    }
}

/// What an interrupted transfer received: checked bytes from offset 0.
pub(crate) struct Partial {
    key: Key,
    data: BytesMut,
    crc: crc32fast::Hasher,
}

/// The receiver's kept partial transfer (at most one; a newer one replaces it).
pub(crate) type Kept = Mutex<Option<Partial>>;

/// The offset a transfer of `key` may resume from (0: from the start).
pub(crate) fn resume_offset(kept: &Kept, key: &Key) -> u64 {
    match &*kept.lock() {
        Some(p) if p.key == *key => p.data.len() as u64,
        _ => 0,
    }
}

/// openraft's snapshot metadata for our type configuration.
pub(crate) type Meta = openraft::alias::SnapshotMetaOf<TypeConfig>;

/// Why a received snapshot was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error(
        "snapshot chunk at offset {offset} is corrupt: crc32 of its {len} bytes is \
         {actual:#010x}, the sender's is {expected:#010x}"
    )]
    CorruptChunk {
        offset: u64,
        len: usize,
        actual: u32,
        expected: u32,
    },
    #[error("snapshot corrupt: crc32 of its {size} bytes is {actual:#010x}, the sender's is {expected:#010x}")]
    CorruptSnapshot {
        size: u64,
        actual: u32,
        expected: u32,
    },
    #[error(
        "snapshot chunk at offset {got}, expected offset {expected}: chunks lost or reordered"
    )]
    OutOfOrder { got: u64, expected: u64 },
    #[error("snapshot of {size} bytes refused: over the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("snapshot data exceeds its announced size of {announced} bytes")]
    OverAnnounced { announced: u64 },
    #[error("snapshot stream ended after {received} of {announced} bytes, without its last chunk")]
    Truncated { received: u64, announced: u64 },
    #[error("snapshot is {received} bytes, its first chunk announced {announced}")]
    SizeMismatch { received: u64, announced: u64 },
    #[error("snapshot transfer refused: not complete within {0:?}")]
    TooSlow(Duration),
    #[error("malformed snapshot stream: {0}")]
    Malformed(String),
    #[error("snapshot stream broke off: {0}")]
    Interrupted(Status),
}

impl From<Refused> for Status {
    fn from(r: Refused) -> Status {
        let msg = r.to_string();
        match r {
            Refused::CorruptChunk { .. } | Refused::CorruptSnapshot { .. } => {
                Status::data_loss(msg)
            }
            Refused::TooLarge { .. } => Status::resource_exhausted(msg),
            Refused::TooSlow(_) => Status::deadline_exceeded(msg),
            Refused::Interrupted(s) => Status::new(s.code(), msg),
            _ => Status::invalid_argument(msg),
        }
    }
}

/// Cuts a snapshot into chunks of at most `chunk_size` data bytes (see the module essay).
/// The chunks share `data`'s buffer.
#[cfg(test)]
pub(crate) fn chunks(
    vote: &Vote,
    meta: &Meta,
    data: &Bytes,
    chunk_size: usize,
) -> Result<Vec<SnapshotChunk>, String> {
    chunks_from(vote, meta, data, chunk_size, &Key::of(meta, data), 0)
}

/// The chunks of a transfer of `data` (whose key is `key`) starting at byte `start`.
pub(crate) fn chunks_from(
    vote: &Vote,
    meta: &Meta,
    data: &Bytes,
    chunk_size: usize,
    key: &Key,
    start: u64,
) -> Result<Vec<SnapshotChunk>, String> {
    let chunk_size = chunk_size.max(1);
    let start = (start as usize).min(data.len());
    let mut out = vec![SnapshotChunk {
        meta: codec::encode(&(vote, meta))?,
        total_size: data.len() as u64,
        total_crc32: key.total_crc32,
        offset: start as u64,
        crc32: crc32fast::hash(&[]),
        ..Default::default()
    }];
    let mut offset = start;
    while offset < data.len() {
        let end = (offset + chunk_size).min(data.len());
        let piece = data.slice(offset..end);
        out.push(SnapshotChunk {
            offset: offset as u64,
            crc32: crc32fast::hash(&piece),
            data: piece,
            ..Default::default()
        });
        offset = end;
    }
    if let Some(final_chunk) = out.last_mut() {
        final_chunk.last = true;
        final_chunk.total_crc32 = key.total_crc32;
    }
    Ok(out)
}

/// Reassembles one snapshot stream, checking every chunk as it arrives.
pub(crate) struct Assembler {
    max_bytes: u64,
    /// A partial transfer this one may resume.
    kept: Option<Partial>,
    /// The snapshot's key, from the first chunk.
    key: Option<Key>,
    head: Option<(Vote, Meta, u64)>,
    data: BytesMut,
    crc: crc32fast::Hasher,
    /// The whole-snapshot checksum, once the final chunk arrived.
    total_crc32: Option<u32>,
}

/// A verified snapshot: the leader's vote, the metadata and the data.
pub(crate) type Received = (Vote, Meta, Bytes);

impl Assembler {
    #[cfg(test)]
    pub(crate) fn new(max_bytes: u64) -> Assembler {
        Assembler::resuming(max_bytes, None)
    }

    /// An assembler that may go on from `kept`, if the stream resumes that transfer.
    pub(crate) fn resuming(max_bytes: u64, kept: Option<Partial>) -> Assembler {
        Assembler {
            max_bytes,
            kept,
            key: None,
            head: None,
            data: BytesMut::new(),
            crc: crc32fast::Hasher::new(),
            total_crc32: None,
        }
    }

    /// Checks and keeps one chunk.
    pub(crate) fn push(&mut self, chunk: SnapshotChunk) -> Result<(), Refused> {
        if self.total_crc32.is_some() {
            return Err(Refused::Malformed("a chunk after the last one".into()));
        }
        let announced = match &self.head {
            None => self.start(&chunk)?,
            Some(_) if !chunk.meta.is_empty() => {
                return Err(Refused::Malformed(
                    "metadata in a chunk other than the first".into(),
                ))
            }
            Some((_, _, announced)) => *announced,
        };
        let received = self.data.len() as u64;
        if chunk.offset != received {
            return Err(Refused::OutOfOrder {
                got: chunk.offset,
                expected: received,
            });
        }
        let actual = crc32fast::hash(&chunk.data);
        if actual != chunk.crc32 {
            return Err(Refused::CorruptChunk {
                offset: chunk.offset,
                len: chunk.data.len(),
                actual,
                expected: chunk.crc32,
            });
        }
        if received + chunk.data.len() as u64 > announced {
            return Err(Refused::OverAnnounced { announced });
        }
        self.crc.update(&chunk.data);
        self.data.extend_from_slice(&chunk.data);
        if chunk.last {
            self.total_crc32 = Some(chunk.total_crc32);
        }
        Ok(())
    }

    /// Reads the first chunk's header; returns the announced size.
    fn start(&mut self, first: &SnapshotChunk) -> Result<u64, Refused> {
        if first.meta.is_empty() {
            return Err(Refused::Malformed(
                "the first chunk carries no metadata".into(),
            ));
        }
        if first.total_size > self.max_bytes {
            return Err(Refused::TooLarge {
                size: first.total_size,
                limit: self.max_bytes,
            });
        }
        let (vote, meta): (Vote, Meta) =
            codec::decode(&first.meta, "snapshot metadata").map_err(Refused::Malformed)?;
        let key = Key {
            last_log_id: meta.last_log_id,
            total_size: first.total_size,
            total_crc32: first.total_crc32,
        };
        if first.offset > 0 {
            match self.kept.take() {
                Some(p) if p.key == key && p.data.len() as u64 == first.offset => {
                    self.data = p.data;
                    self.crc = p.crc;
                }
                _ => {
                    return Err(Refused::Malformed(format!(
                        "the transfer resumes at offset {}, but no partial transfer of that \
                         snapshot ends there",
                        first.offset
                    )))
                }
            }
        }
        self.key = Some(key);
        // Reserve what was announced (already bounded), but not all of a huge one up front.
        self.data.reserve(first.total_size.min(64 << 20) as usize);
        self.head = Some((vote, meta, first.total_size));
        Ok(first.total_size)
    }

    /// What this transfer received, to resume it later (`None` if it had not started).
    pub(crate) fn into_partial(self) -> Option<Partial> {
        let key = self.key?;
        (!self.data.is_empty()).then_some(Partial {
            key,
            data: self.data,
            crc: self.crc,
        })
    }

    /// The snapshot, once the stream has ended: complete, of the announced size, and matching
    /// the whole-snapshot checksum.
    pub(crate) fn finish(self) -> Result<Received, Refused> {
        let Some((vote, meta, announced)) = self.head else {
            return Err(Refused::Malformed("an empty snapshot stream".into()));
        };
        let received = self.data.len() as u64;
        let Some(expected) = self.total_crc32 else {
            return Err(Refused::Truncated {
                received,
                announced,
            });
        };
        if received != announced {
            return Err(Refused::SizeMismatch {
                received,
                announced,
            });
        }
        let actual = self.crc.finalize();
        if actual != expected {
            return Err(Refused::CorruptSnapshot {
                size: received,
                actual,
                expected,
            });
        }
        Ok((vote, meta, self.data.freeze()))
    }
}

/// Receives a whole snapshot stream, verified, within `max_time`, resuming the transfer in
/// `kept` if the stream says so; a transfer that breaks off or takes too long is left in `kept`.
pub(crate) async fn receive<S>(
    stream: S,
    max_bytes: u64,
    max_time: Duration,
    kept: &Kept,
) -> Result<Received, Refused>
where
    S: Stream<Item = Result<SnapshotChunk, Status>> + Unpin,
{
    let mut asm = Assembler::resuming(max_bytes, kept.lock().take());
    let assemble = async {
        let mut stream = stream;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => asm.push(chunk)?,
                Err(status) => return Err(Refused::Interrupted(status)),
            }
        }
        Ok(())
    };
    let outcome = match tokio::time::timeout(max_time, assemble).await {
        Ok(r) => r,
        Err(_) => Err(Refused::TooSlow(max_time)),
    };
    match outcome {
        Ok(()) => asm.finish(),
        Err(e @ (Refused::Interrupted(_) | Refused::TooSlow(_))) => {
            if let Some(p) = asm.into_partial() {
                *kept.lock() = Some(p);
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use futures::stream;
    use openraft::storage::SnapshotMeta;

    use super::*;
    use crate::types::StoredMembership;

    fn meta() -> Meta {
        SnapshotMeta {
            last_log_id: Some(openraft::testing::log_id::<TypeConfig>(2, 1, 40)),
            last_membership: StoredMembership::default(),
        }
    }

    fn snapshot_bytes(n: usize) -> Bytes {
        (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into()
    }

    fn assemble(chunks: Vec<SnapshotChunk>, max_bytes: u64) -> Result<Received, Refused> {
        let mut asm = Assembler::new(max_bytes);
        for c in chunks {
            asm.push(c)?;
        }
        asm.finish()
    }

    #[test]
    fn chunks_reassemble_into_the_snapshot() {
        let vote = Vote::new(2, 1);
        for size in [0, 1, 999, 1000, 1001, 10_000] {
            let data = snapshot_bytes(size);
            let chunks = chunks(&vote, &meta(), &data, 1000).unwrap();
            assert_eq!(chunks.len(), 1 + size.div_ceil(1000));
            assert!(chunks.iter().all(|c| c.data.len() <= 1000));
            assert_eq!(chunks.iter().filter(|c| c.last).count(), 1);
            let (v, m, d) = assemble(chunks, 1 << 20).unwrap();
            assert_eq!((v, m, d), (vote, meta(), data));
        }
    }

    fn sent(size: usize) -> Vec<SnapshotChunk> {
        chunks(&Vote::new(2, 1), &meta(), &snapshot_bytes(size), 100).unwrap()
    }

    #[test]
    fn a_corrupted_chunk_is_refused() {
        let mut chunks = sent(1000);
        let mut data = chunks[3].data.to_vec();
        data[17] ^= 0x40;
        chunks[3].data = data.into();
        let err = assemble(chunks, 1 << 20).unwrap_err();
        assert!(
            matches!(
                err,
                Refused::CorruptChunk {
                    offset: 200,
                    len: 100,
                    ..
                }
            ),
            "{err}"
        );
        let status = Status::from(err);
        assert_eq!(status.code(), tonic::Code::DataLoss);
        assert!(
            status
                .message()
                .starts_with("snapshot chunk at offset 200 is corrupt"),
            "{status:?}"
        );
    }

    #[test]
    fn consistent_chunks_with_a_wrong_whole_checksum_are_refused() {
        let mut chunks = sent(1000);
        chunks.last_mut().unwrap().total_crc32 ^= 1;
        let err = assemble(chunks, 1 << 20).unwrap_err();
        assert!(
            matches!(err, Refused::CorruptSnapshot { size: 1000, .. }),
            "{err}"
        );
    }

    #[test]
    fn lost_reordered_or_extra_chunks_are_refused() {
        let mut lost = sent(1000);
        lost.remove(4);
        assert!(matches!(
            assemble(lost, 1 << 20).unwrap_err(),
            Refused::OutOfOrder {
                got: 400,
                expected: 300
            }
        ));

        let mut truncated = sent(1000);
        truncated.pop();
        let err = assemble(truncated, 1 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "snapshot stream ended after 900 of 1000 bytes, without its last chunk"
        );

        let mut under = sent(1000);
        under[0].total_size = 2000;
        assert!(matches!(
            assemble(under, 1 << 20).unwrap_err(),
            Refused::SizeMismatch {
                received: 1000,
                announced: 2000
            }
        ));

        let mut over = sent(1000);
        over[0].total_size = 500;
        assert!(matches!(
            assemble(over, 1 << 20).unwrap_err(),
            Refused::OverAnnounced { announced: 500 }
        ));

        let mut no_meta = sent(10);
        no_meta[0].meta = Bytes::new();
        assert!(matches!(
            assemble(no_meta, 1 << 20).unwrap_err(),
            Refused::Malformed(_)
        ));
    }

    #[test]
    fn a_snapshot_over_the_bound_is_refused_from_its_first_chunk() {
        let mut asm = Assembler::new(999);
        let err = asm.push(sent(1000).remove(0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "snapshot of 1000 bytes refused: over the limit of 999 bytes"
        );
        assert_eq!(Status::from(err).code(), tonic::Code::ResourceExhausted);
    }

    #[tokio::test(start_paused = true)]
    async fn a_transfer_that_takes_too_long_is_refused() {
        let first = sent(1000).remove(0);
        // The sender goes silent after the first chunk.
        let stalled = stream::iter([Ok(first)]).chain(stream::pending());
        let kept = Kept::default();
        let err = receive(Box::pin(stalled), 1 << 20, Duration::from_secs(60), &kept)
            .await
            .unwrap_err();
        assert!(matches!(err, Refused::TooSlow(_)), "{err}");
        assert_eq!(Status::from(err).code(), tonic::Code::DeadlineExceeded);

        let whole = stream::iter(sent(1000).into_iter().map(Ok));
        let (_, _, data) = receive(whole, 1 << 20, Duration::from_secs(60), &kept)
            .await
            .unwrap();
        assert_eq!(data, snapshot_bytes(1000));
    }

    /// A transfer of `data` from `start`, broken off after `n` chunks (all when `None`).
    fn transfer(data: &Bytes, start: u64, n: Option<usize>) -> Vec<Result<SnapshotChunk, Status>> {
        let key = Key::of(&meta(), data);
        let all = chunks_from(&Vote::new(2, 1), &meta(), data, 100, &key, start).unwrap();
        let cut = n.unwrap_or(all.len());
        let mut out: Vec<_> = all.into_iter().take(cut).map(Ok).collect();
        if n.is_some() {
            out.push(Err(Status::cancelled("connection reset")));
        }
        out
    }

    #[tokio::test]
    async fn an_interrupted_transfer_resumes_where_it_broke_off() {
        let data = snapshot_bytes(1000);
        let key = Key::of(&meta(), &data);
        let kept = Kept::default();
        let limit = Duration::from_secs(60);
        assert_eq!(resume_offset(&kept, &key), 0);

        // Header and four data chunks arrive, then the connection breaks.
        let err = receive(
            stream::iter(transfer(&data, 0, Some(5))),
            1 << 20,
            limit,
            &kept,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Refused::Interrupted(_)), "{err}");
        assert_eq!(resume_offset(&kept, &key), 400);
        // Another snapshot (another key) does not resume it.
        let other = Key::of(&meta(), &snapshot_bytes(999));
        assert_eq!(resume_offset(&kept, &other), 0);

        // The next transfer starts at 400; the result is the whole snapshot, checksum included.
        let resumed = transfer(&data, 400, None);
        assert_eq!(resumed[0].as_ref().unwrap().offset, 400);
        assert_eq!(resumed.len(), 1 + 6, "header and the six chunks left");
        let (_, m, got) = receive(stream::iter(resumed), 1 << 20, limit, &kept)
            .await
            .unwrap();
        assert_eq!((m, got), (meta(), data.clone()));
        assert_eq!(
            resume_offset(&kept, &key),
            0,
            "a finished transfer keeps nothing"
        );

        // Everything but the final chunk arrived: the resumed transfer is its final chunk alone.
        receive(
            stream::iter(transfer(&data, 0, Some(10))),
            1 << 20,
            limit,
            &kept,
        )
        .await
        .unwrap_err();
        assert_eq!(resume_offset(&kept, &key), 900);
        let (_, _, got) = receive(
            stream::iter(transfer(&data, 900, None)),
            1 << 20,
            limit,
            &kept,
        )
        .await
        .unwrap();
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn a_resume_that_matches_no_partial_transfer_is_refused_and_restarts_from_zero() {
        let data = snapshot_bytes(1000);
        let key = Key::of(&meta(), &data);
        let kept = Kept::default();
        let limit = Duration::from_secs(60);
        receive(
            stream::iter(transfer(&data, 0, Some(3))),
            1 << 20,
            limit,
            &kept,
        )
        .await
        .unwrap_err();
        assert_eq!(resume_offset(&kept, &key), 200);
        // The sender resumes at an offset the receiver does not hold.
        let err = receive(
            stream::iter(transfer(&data, 300, None)),
            1 << 20,
            limit,
            &kept,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("resumes at offset 300"), "{err}");
        assert_eq!(
            resume_offset(&kept, &key),
            0,
            "the next attempt starts over"
        );
        receive(
            stream::iter(transfer(&data, 0, None)),
            1 << 20,
            limit,
            &kept,
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_transfer_refused_for_corrupt_data_keeps_nothing() {
        let data = snapshot_bytes(1000);
        let key = Key::of(&meta(), &data);
        let kept = Kept::default();
        let mut chunks = transfer(&data, 0, None);
        let mut bad = chunks[4].as_ref().unwrap().clone();
        bad.crc32 ^= 1;
        chunks[4] = Ok(bad);
        let err = receive(
            stream::iter(chunks),
            1 << 20,
            Duration::from_secs(60),
            &kept,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Refused::CorruptChunk { .. }), "{err}");
        assert_eq!(resume_offset(&kept, &key), 0);
    }
}
