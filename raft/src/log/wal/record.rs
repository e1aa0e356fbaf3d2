//! The payload of a WAL frame: one [`Record`], as a kind byte and fixed-width big-endian
//! fields. Membership entries (rare, small, and with a nested map) are json; a normal entry's
//! command is stored as the bytes the store encoded, untouched.

use bytes::Bytes;

use crate::types::{Entry, LogId, Membership, Proposal, Vote};

/// One record of the log.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    /// The state a reader of the following segments needs from earlier ones.
    Checkpoint {
        vote: Option<Vote>,
        purged: Option<LogId>,
    },
    Entry(Entry),
    Vote(Vote),
    /// Entries after this log id (all, for `None`) are gone.
    TruncateAfter(Option<LogId>),
    /// Entries up to and including this log id are gone.
    Purge(LogId),
}

// Record kinds and entry payload kinds. Never reuse a number.
const CHECKPOINT: u8 = 1;
const ENTRY: u8 = 2;
const VOTE: u8 = 3;
const TRUNCATE_AFTER: u8 = 4;
const PURGE: u8 = 5;
const BLANK: u8 = 0;
const NORMAL: u8 = 1;
const MEMBERSHIP: u8 = 2;

pub(super) fn encode(rec: &Record, out: &mut Vec<u8>) {
    match rec {
        Record::Checkpoint { vote, purged } => {
            out.push(CHECKPOINT);
            put_opt(out, vote.as_ref(), put_vote);
            put_opt(out, purged.as_ref(), put_log_id);
        }
        Record::Entry(e) => {
            out.push(ENTRY);
            put_log_id(out, &e.log_id);
            match &e.payload {
                openraft::EntryPayload::Blank => out.push(BLANK),
                openraft::EntryPayload::Normal(p) => {
                    out.push(NORMAL);
                    out.extend_from_slice(p.as_bytes());
                }
                openraft::EntryPayload::Membership(m) => {
                    out.push(MEMBERSHIP);
                    serde_json::to_writer(out, m).expect("a membership serializes to json");
                }
            }
        }
        Record::Vote(v) => {
            out.push(VOTE);
            put_vote(out, v);
        }
        Record::TruncateAfter(id) => {
            out.push(TRUNCATE_AFTER);
            put_opt(out, id.as_ref(), put_log_id);
        }
        Record::Purge(id) => {
            out.push(PURGE);
            put_log_id(out, id);
        }
    }
}

pub(super) fn decode(mut buf: &[u8]) -> Result<Record, String> {
    let b = &mut buf;
    let rec = match take_u8(b)? {
        CHECKPOINT => Record::Checkpoint {
            vote: take_opt(b, take_vote)?,
            purged: take_opt(b, take_log_id)?,
        },
        ENTRY => {
            let log_id = take_log_id(b)?;
            let payload = match take_u8(b)? {
                BLANK => openraft::EntryPayload::Blank,
                NORMAL => openraft::EntryPayload::Normal(Proposal::from_bytes(
                    Bytes::copy_from_slice(std::mem::take(b)),
                )),
                MEMBERSHIP => {
                    let m: Membership = serde_json::from_slice(std::mem::take(b))
                        .map_err(|e| format!("membership entry: {e}"))?;
                    openraft::EntryPayload::Membership(m)
                }
                k => return Err(format!("unknown entry payload kind {k}")),
            };
            Record::Entry(Entry { log_id, payload })
        }
        VOTE => Record::Vote(take_vote(b)?),
        TRUNCATE_AFTER => Record::TruncateAfter(take_opt(b, take_log_id)?),
        PURGE => Record::Purge(take_log_id(b)?),
        k => return Err(format!("unknown record kind {k}")),
    };
    if !b.is_empty() {
        return Err(format!("{} stray bytes after the record", b.len()));
    }
    Ok(rec)
}

fn put_log_id(out: &mut Vec<u8>, id: &LogId) {
    out.extend_from_slice(&id.leader_id.term.to_be_bytes());
    out.extend_from_slice(&id.leader_id.node_id.to_be_bytes());
    out.extend_from_slice(&id.index.to_be_bytes());
}

fn put_vote(out: &mut Vec<u8>, v: &Vote) {
    out.extend_from_slice(&v.leader_id.term.to_be_bytes());
    out.extend_from_slice(&v.leader_id.node_id.to_be_bytes());
    out.push(u8::from(v.committed));
}

fn put_opt<T>(out: &mut Vec<u8>, v: Option<&T>, put: fn(&mut Vec<u8>, &T)) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put(out, v);
        }
    }
}

fn take_u8(b: &mut &[u8]) -> Result<u8, String> {
    let (&v, rest) = b.split_first().ok_or("record ends early")?;
    *b = rest;
    Ok(v)
}

fn take_u64(b: &mut &[u8]) -> Result<u64, String> {
    let (head, rest) = b.split_first_chunk::<8>().ok_or("record ends early")?;
    *b = rest;
    Ok(u64::from_be_bytes(*head))
}

fn take_log_id(b: &mut &[u8]) -> Result<LogId, String> {
    let (term, node_id, index) = (take_u64(b)?, take_u64(b)?, take_u64(b)?);
    Ok(LogId::new(
        openraft::impls::leader_id_adv::LeaderId { term, node_id },
        index,
    ))
}

fn take_vote(b: &mut &[u8]) -> Result<Vote, String> {
    let (term, node_id) = (take_u64(b)?, take_u64(b)?);
    let committed = match take_u8(b)? {
        0 => false,
        1 => true,
        c => return Err(format!("bad vote committed flag {c}")),
    };
    Ok(Vote {
        leader_id: openraft::impls::leader_id_adv::LeaderId { term, node_id },
        committed,
    })
}

fn take_opt<T>(
    b: &mut &[u8],
    take: fn(&mut &[u8]) -> Result<T, String>,
) -> Result<Option<T>, String> {
    match take_u8(b)? {
        0 => Ok(None),
        1 => take(b).map(Some),
        f => Err(format!("bad option flag {f}")),
    }
}
