//! Shared event batches, the recent-history ring, and the frames a stream sends.
//!
//! Fan-out without copies: each revision's events are wrapped once in an `Arc<RevBatch>`;
//! every watcher that gets them holds the same `Arc` plus a selection of indexes
//! ([`Delivery`]). Each event is protobuf-encoded at most twice in its life (with and without
//! `prev_kv`), lazily, by the first stream that sends it, and the encoded bytes are shared by
//! every later sender. A [`Frame`] is a `WatchResponse` without events followed by those
//! pre-encoded events; the gRPC codec writes it as one message (field 11, `events`, is the last
//! field, so the bytes are what prost would produce for the whole response).
//!
//! The [`Ring`] keeps the newest revisions' batches so slow watchers catch up from memory;
//! older history comes from the backend (`history.rs`).

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes};
use keelson_proto::etcdserverpb::{ResponseHeader, WatchResponse};
use keelson_proto::mvccpb::{event::EventType, Event};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;

use crate::mvcc::RevisionEvents;

/// `WatchResponse.events` field number.
const EVENTS_FIELD: u32 = 11;

/// The events of one revision, shared by every watcher and stream that sends them.
pub(crate) struct RevBatch {
    pub(crate) revision: i64,
    pub(crate) events: Vec<Event>,
    /// Per event: its encoding with `prev_kv` (index 0) and without (index 1).
    encoded: Vec<[OnceLock<Bytes>; 2]>,
    /// Rough memory cost, for the ring's budget.
    pub(crate) weight: usize,
}

impl RevBatch {
    pub(crate) fn new(re: RevisionEvents) -> RevBatch {
        let kv_len = |kv: &Option<keelson_proto::mvccpb::KeyValue>| {
            kv.as_ref()
                .map_or(0, |kv| kv.key.len() + kv.value.len() + 48)
        };
        // Values are shared with the store (Bytes), so count what the encodings will add.
        let weight = re
            .events
            .iter()
            .map(|e| 2 * (kv_len(&e.kv) + kv_len(&e.prev_kv)) + 64)
            .sum();
        let encoded = re.events.iter().map(|_| Default::default()).collect();
        RevBatch {
            revision: re.revision,
            events: re.events,
            encoded,
            weight,
        }
    }

    pub(crate) fn is_put(&self, i: usize) -> bool {
        self.events[i].r#type == EventType::Put as i32
    }

    pub(crate) fn key(&self, i: usize) -> &[u8] {
        self.events[i]
            .kv
            .as_ref()
            .map_or(&[][..], |kv| kv.key.as_ref())
    }

    /// Event `i` encoded as an `mvccpb.Event` message, with or without its `prev_kv`.
    pub(crate) fn encoded(&self, i: usize, with_prev: bool) -> &Bytes {
        let ev = &self.events[i];
        if with_prev || ev.prev_kv.is_none() {
            return self.encoded[i][0].get_or_init(|| ev.encode_to_vec().into());
        }
        self.encoded[i][1].get_or_init(|| {
            let bare = Event {
                r#type: ev.r#type,
                kv: ev.kv.clone(),
                prev_kv: None,
            };
            bare.encode_to_vec().into()
        })
    }
}

/// Which events of a batch a watcher gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sel {
    All,
    Some(Vec<u32>),
}

impl Sel {
    /// The selected event indexes of `b`.
    fn indexes<'a>(&'a self, b: &RevBatch) -> impl Iterator<Item = usize> + 'a {
        let (all, some) = match self {
            Sel::All => (0..b.events.len(), &[][..]),
            Sel::Some(ix) => (0..0, &ix[..]),
        };
        all.chain(some.iter().map(|&i| i as usize))
    }
}

/// The revisions of one delivery: one (what `publish` hands out, without an allocation) or
/// several (a catch-up step).
pub(crate) enum Parts {
    One(Arc<RevBatch>, Sel),
    Many(Vec<(Arc<RevBatch>, Sel)>),
}

impl Parts {
    pub(crate) fn from_vec(mut v: Vec<(Arc<RevBatch>, Sel)>) -> Parts {
        if v.len() == 1 {
            let (b, s) = v.pop().expect("one part");
            Parts::One(b, s)
        } else {
            Parts::Many(v)
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&Arc<RevBatch>, &Sel)> {
        let (one, many) = match self {
            Parts::One(b, s) => (Some((b, s)), &[][..]),
            Parts::Many(v) => (None, &v[..]),
        };
        one.into_iter().chain(many.iter().map(|(b, s)| (b, s)))
    }
}

/// One watcher's share of one or more revisions: becomes one response (or its fragments).
pub(crate) struct Delivery {
    pub(crate) watch_id: i64,
    pub(crate) header_rev: i64,
    pub(crate) prev_kv: bool,
    pub(crate) fragment: bool,
    pub(crate) parts: Parts,
}

/// A watch response ready for the wire: `head` carries every field but `events`.
pub(crate) struct Frame {
    pub(crate) head: WatchResponse,
    events: FrameEvents,
}

/// A frame's events, already encoded.
enum FrameEvents {
    /// Listed one by one (control frames have none; fragments and catch-up responses).
    Listed(Vec<Bytes>),
    /// The selected events of one batch, in its shared encodings: the common case, one
    /// revision to one watcher, costs no allocation and no reference count per event.
    Batch {
        batch: Arc<RevBatch>,
        sel: Sel,
        with_prev: bool,
    },
}

fn event_field_len(e: &Bytes) -> usize {
    1 + encoded_len_varint(e.len() as u64) + e.len()
}

impl Frame {
    pub(crate) fn control(head: WatchResponse) -> Frame {
        Frame {
            head,
            events: FrameEvents::Listed(Vec::new()),
        }
    }

    /// Calls `f` with each encoded event, in order.
    fn for_each_event(&self, mut f: impl FnMut(&Bytes)) {
        match &self.events {
            FrameEvents::Listed(v) => v.iter().for_each(f),
            FrameEvents::Batch {
                batch,
                sel,
                with_prev,
            } => sel
                .indexes(batch)
                .for_each(|i| f(batch.encoded(i, *with_prev))),
        }
    }

    #[cfg(test)]
    pub(crate) fn events(&self) -> Vec<Bytes> {
        let mut v = Vec::new();
        self.for_each_event(|e| v.push(e.clone()));
        v
    }

    pub(crate) fn encoded_len(&self) -> usize {
        let mut n = self.head.encoded_len();
        self.for_each_event(|e| n += event_field_len(e));
        n
    }

    /// Writes the frame as one `WatchResponse` message.
    pub(crate) fn encode(&self, buf: &mut impl BufMut) {
        self.head.encode_raw(buf);
        self.for_each_event(|e| {
            encode_key(EVENTS_FIELD, WireType::LengthDelimited, buf);
            encode_varint(e.len() as u64, buf);
            buf.put_slice(e);
        });
    }

    /// The frame as a decoded response (tests and the in-process paths).
    #[cfg(test)]
    pub(crate) fn to_response(&self) -> WatchResponse {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        WatchResponse::decode(&buf[..]).expect("a frame decodes as a WatchResponse")
    }
}

impl Delivery {
    /// Appends the frames for this delivery to `out`: one, or, when the watcher asked for fragments and the
    /// response is at least `limit` bytes with two or more events, etcd's `sendFragments` split
    /// (every part but the last has `fragment = true`; a part grows until adding an event
    /// would reach `limit`, and always holds at least one event).
    ///
    /// `compacted` is the store's compacted revision at send time: like etcd, which reads
    /// `prev_kv` at `mod_revision - 1` when it sends, a previous value whose revision has been
    /// compacted away is left out.
    pub(crate) fn push_frames(
        self,
        header: &ResponseHeader,
        limit: usize,
        compacted: i64,
        out: &mut VecDeque<Frame>,
    ) {
        let head = WatchResponse {
            header: Some(ResponseHeader {
                revision: self.header_rev,
                ..*header
            }),
            watch_id: self.watch_id,
            ..Default::default()
        };
        // etcd reads prev_kv at mod_revision - 1, which fails once that is below the compaction.
        let with_prev = |b: &RevBatch| self.prev_kv && b.revision > compacted;
        if !self.fragment {
            if let Parts::One(batch, sel) = self.parts {
                let with_prev = with_prev(&batch);
                out.push_back(Frame {
                    head,
                    events: FrameEvents::Batch {
                        batch,
                        sel,
                        with_prev,
                    },
                });
                return;
            }
        }
        let mut events = Vec::new();
        for (b, sel) in self.parts.iter() {
            let w = with_prev(b);
            events.extend(sel.indexes(b).map(|i| b.encoded(i, w).clone()));
        }
        let whole = Frame {
            head,
            events: FrameEvents::Listed(events),
        };
        if !self.fragment || whole.event_count() < 2 || whole.encoded_len() < limit {
            out.push_back(whole);
            return;
        }
        let FrameEvents::Listed(events) = whole.events else {
            unreachable!("built as a list above")
        };
        let mut head = whole.head;
        head.fragment = true;
        let head_len = head.encoded_len();
        let mut cur: Vec<Bytes> = Vec::new();
        let mut size = head_len;
        for e in events {
            let n = event_field_len(&e);
            if !cur.is_empty() && size + n >= limit {
                out.push_back(Frame {
                    head: head.clone(),
                    events: FrameEvents::Listed(std::mem::take(&mut cur)),
                });
                size = head_len;
            }
            size += n;
            cur.push(e);
        }
        head.fragment = false;
        out.push_back(Frame {
            head,
            events: FrameEvents::Listed(cur),
        });
    }

    /// [`Delivery::push_frames`] into a new list.
    #[cfg(test)]
    pub(crate) fn into_frames(
        self,
        header: &ResponseHeader,
        limit: usize,
        compacted: i64,
    ) -> Vec<Frame> {
        let mut out = VecDeque::new();
        self.push_frames(header, limit, compacted, &mut out);
        out.into()
    }
}

impl Frame {
    pub(crate) fn event_count(&self) -> usize {
        match &self.events {
            FrameEvents::Listed(v) => v.len(),
            FrameEvents::Batch { batch, sel, .. } => match sel {
                Sel::All => batch.events.len(),
                Sel::Some(ix) => ix.len(),
            },
        }
    }
}

/// The newest revisions' batches, bounded by count and by weight.
pub(crate) struct Ring {
    q: VecDeque<Arc<RevBatch>>,
    weight: usize,
    max_revs: usize,
    max_weight: usize,
}

impl Ring {
    pub(crate) fn new(max_revs: usize, max_weight: usize) -> Ring {
        Ring {
            q: VecDeque::new(),
            weight: 0,
            max_revs,
            max_weight,
        }
    }

    pub(crate) fn push(&mut self, b: Arc<RevBatch>) {
        self.weight += b.weight;
        self.q.push_back(b);
        while self.q.len() > self.max_revs || (self.weight > self.max_weight && self.q.len() > 1) {
            let old = self.q.pop_front().expect("non-empty");
            self.weight -= old.weight;
        }
    }

    /// Forgets every revision held.
    pub(crate) fn clear(&mut self) {
        self.q.clear();
        self.weight = 0;
    }

    /// The oldest revision held, or `None` if empty.
    pub(crate) fn first_rev(&self) -> Option<i64> {
        self.q.front().map(|b| b.revision)
    }

    /// The batches with revisions in `[from, to]`.
    pub(crate) fn range(&self, from: i64, to: i64) -> Vec<Arc<RevBatch>> {
        let start = self.q.partition_point(|b| b.revision < from);
        self.q
            .range(start..)
            .take_while(|b| b.revision <= to)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{delete_event, put_event};
    use keelson_proto::mvccpb::KeyValue;

    fn kv(key: &str, value: &[u8], rev: i64) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value),
            mod_revision: rev,
            create_revision: rev,
            version: 1,
            lease: 0,
        }
    }

    fn batch(rev: i64, n: usize, value_len: usize) -> Arc<RevBatch> {
        let events = (0..n)
            .map(|i| {
                put_event(
                    kv(&format!("k{i}"), &vec![b'v'; value_len], rev),
                    Some(kv("old", b"p", 1)),
                )
            })
            .collect();
        Arc::new(RevBatch::new(RevisionEvents {
            revision: rev,
            events,
        }))
    }

    #[test]
    fn frame_bytes_equal_prost_encoding_of_the_whole_response() {
        let b = batch(7, 3, 10);
        let d = Delivery {
            watch_id: 4,
            header_rev: 7,
            prev_kv: false,
            fragment: false,
            parts: Parts::One(b.clone(), Sel::Some(vec![0, 2])),
        };
        let header = ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 0,
            raft_term: 3,
        };
        let frames = d.into_frames(&header, 1 << 20, -1);
        assert_eq!(frames.len(), 1);
        let mut events: Vec<Event> = vec![b.events[0].clone(), b.events[2].clone()];
        events.iter_mut().for_each(|e| e.prev_kv = None);
        let want = WatchResponse {
            header: Some(ResponseHeader {
                revision: 7,
                ..header
            }),
            watch_id: 4,
            events,
            ..Default::default()
        };
        let mut got = Vec::new();
        frames[0].encode(&mut got);
        assert_eq!(got, want.encode_to_vec());
        assert_eq!(frames[0].encoded_len(), got.len());
        // With prev_kv the shared encoding keeps it.
        let d = Delivery {
            watch_id: 4,
            header_rev: 7,
            prev_kv: true,
            fragment: false,
            parts: Parts::One(b, Sel::All),
        };
        let r = d.into_frames(&header, 1 << 20, -1)[0].to_response();
        assert!(r
            .events
            .iter()
            .all(|e| e.prev_kv.as_ref().unwrap().key.as_ref() == b"old"));
    }

    #[test]
    fn fragments_follow_etcd_send_fragments() {
        let b = batch(9, 10, 100);
        let header = ResponseHeader::default();
        let mk = |fragment| Delivery {
            watch_id: 1,
            header_rev: 9,
            prev_kv: false,
            fragment,
            parts: Parts::One(b.clone(), Sel::All),
        };
        assert_eq!(
            mk(false).into_frames(&header, 300, -1).len(),
            1,
            "no fragments unless asked"
        );
        let frames = mk(true).into_frames(&header, 300, -1);
        assert!(frames.len() > 1);
        let (last, rest) = frames.split_last().unwrap();
        assert!(rest
            .iter()
            .all(|f| f.head.fragment && f.encoded_len() < 300));
        assert!(!last.head.fragment);
        let n: usize = frames.iter().map(|f| f.event_count()).sum();
        assert_eq!(n, 10, "every event exactly once");
        // A single huge event is never split.
        let big = batch(10, 1, 1000);
        let d = Delivery {
            watch_id: 1,
            header_rev: 10,
            prev_kv: false,
            fragment: true,
            parts: Parts::One(big, Sel::All),
        };
        assert_eq!(d.into_frames(&header, 300, -1).len(), 1);
    }

    #[test]
    fn ring_is_bounded_and_ranges_by_revision() {
        let mut ring = Ring::new(3, usize::MAX);
        for r in 2..=6 {
            ring.push(batch(r, 1, 1));
        }
        assert_eq!(ring.first_rev(), Some(4));
        let revs: Vec<i64> = ring.range(5, 10).iter().map(|b| b.revision).collect();
        assert_eq!(revs, vec![5, 6]);
        let mut ring = Ring::new(100, 1);
        ring.push(batch(2, 1, 1));
        ring.push(batch(3, 1, 1));
        assert_eq!(
            ring.first_rev(),
            Some(3),
            "weight bound keeps at least the newest"
        );
        let d = delete_event(Bytes::from_static(b"k"), 4, None);
        let b = RevBatch::new(RevisionEvents {
            revision: 4,
            events: vec![d],
        });
        assert!(!b.is_put(0));
        assert_eq!(b.key(0), b"k");
    }
}
