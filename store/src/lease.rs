//! Leases: etcd's lessor.
//!
//! Granting and revoking a lease are log commands applied in order on every member, so the
//! set of leases and the keys attached to them are replicated state. Expiry is not: only the
//! leader keeps deadlines, and when a lease runs out it *proposes* a revoke, which then deletes
//! the attached keys through the same path as a client's revoke (one revision for all of them).
//!
//! A lease record in the backend holds its granted TTL. After a restart every lease gets a
//! fresh deadline of its full TTL, as etcd's `Promote` does, so a restart never expires a lease
//! early; with replication a member that becomes leader does the same ([`Lessor::lead`], plus
//! an election timeout) before it answers a keep-alive, since keep-alives renewed only the old
//! leader's deadlines.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::backend::{Backend, WriteBatch};
use crate::error::{Error, Result};
use crate::keys;

/// etcd's `MaxLeaseTTL`.
pub(crate) const MAX_LEASE_TTL: i64 = 9_000_000_000;

#[derive(Debug, Clone)]
pub(crate) struct Lease {
    pub(crate) ttl: i64,
    /// When it runs out, if this member is the one keeping time (the leader).
    pub(crate) deadline: Option<Instant>,
    pub(crate) keys: BTreeSet<Bytes>,
}

/// What `TimeToLive` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    /// Seconds left before the lease expires, by the clock of the member keeping lease time.
    pub remaining: i64,
    /// The TTL granted.
    pub granted: i64,
    /// The keys attached, sorted.
    pub keys: Vec<Bytes>,
}

pub(crate) struct Lessor {
    leases: Mutex<HashMap<i64, Lease>>,
    /// The smallest TTL granted (etcd: ceil(1.5 × election timeout)).
    min_ttl: i64,
    /// The raft term in which this member last made its deadlines fresh as leader (0: it does
    /// not keep lease time): see [`Lessor::lead`]. Changed only under the `leases` lock.
    primary: AtomicU64,
}

impl Lessor {
    /// Loads persisted leases; each gets a fresh deadline of its full TTL.
    pub(crate) fn open(backend: &dyn Backend, min_ttl: i64) -> Result<Lessor> {
        let mut leases = HashMap::new();
        let now = Instant::now();
        for item in backend.scan(&[keys::LEASE_PREFIX], &keys::space_end(keys::LEASE_PREFIX)) {
            let (k, v) = item?;
            let id = keys::decode_lease_key(&k)?;
            let ttl = keys::unframe_i64(&format!("lease {id:x}"), &v)?;
            leases.insert(
                id,
                Lease {
                    ttl,
                    deadline: Some(deadline(now, ttl)),
                    keys: BTreeSet::new(),
                },
            );
        }
        Ok(Lessor {
            leases: Mutex::new(leases),
            min_ttl,
            primary: AtomicU64::new(0),
        })
    }

    /// Takes `fresh`'s leases (with their attachments and deadlines) in place (a restore), so
    /// every holder sees them.
    pub(crate) fn replace(&self, fresh: Lessor) {
        *self.leases.lock() = fresh.leases.into_inner();
    }

    /// Applies a grant. Returns the TTL actually granted.
    pub(crate) fn grant(&self, id: i64, ttl: i64, batch: &mut WriteBatch) -> Result<i64> {
        if ttl > MAX_LEASE_TTL {
            return Err(Error::LeaseTtlTooLarge);
        }
        let mut leases = self.leases.lock();
        if leases.contains_key(&id) {
            return Err(Error::LeaseExists);
        }
        let ttl = ttl.max(self.min_ttl);
        leases.insert(
            id,
            Lease {
                ttl,
                deadline: Some(deadline(Instant::now(), ttl)),
                keys: BTreeSet::new(),
            },
        );
        batch.put(keys::lease_key(id), keys::frame_i64(ttl));
        Ok(ttl)
    }

    /// Applies a revoke: forgets the lease and returns its keys (sorted) for the caller to
    /// delete in the same revision.
    pub(crate) fn revoke(&self, id: i64, batch: &mut WriteBatch) -> Result<Vec<Bytes>> {
        let lease = self.leases.lock().remove(&id).ok_or(Error::LeaseNotFound)?;
        batch.delete(keys::lease_key(id));
        Ok(lease.keys.into_iter().collect())
    }

    pub(crate) fn exists(&self, id: i64) -> bool {
        self.leases.lock().contains_key(&id)
    }

    /// Moves `key` from lease `old` to lease `new` (0 = none).
    pub(crate) fn reattach(&self, key: &Bytes, old: i64, new: i64) {
        if old == new {
            return;
        }
        let mut leases = self.leases.lock();
        if old != 0 {
            if let Some(l) = leases.get_mut(&old) {
                l.keys.remove(key);
            }
        }
        if new != 0 {
            if let Some(l) = leases.get_mut(&new) {
                l.keys.insert(key.clone());
            }
        }
    }

    /// Renews a lease's deadline (KeepAlive). Returns its TTL. A lease whose deadline has
    /// passed is not revived (its revoke is on its way through the log): it answers
    /// `LeaseNotFound`, which KeepAlive reports as TTL 0, as etcd's `Renew` does.
    pub(crate) fn renew(&self, id: i64) -> Result<i64> {
        let mut leases = self.leases.lock();
        let l = leases.get_mut(&id).ok_or(Error::LeaseNotFound)?;
        let now = Instant::now();
        if l.deadline.is_some_and(|d| d <= now) {
            return Err(Error::LeaseNotFound);
        }
        l.deadline = Some(deadline(now, l.ttl));
        Ok(l.ttl)
    }

    pub(crate) fn time_to_live(&self, id: i64) -> Result<LeaseStatus> {
        let leases = self.leases.lock();
        let l = leases.get(&id).ok_or(Error::LeaseNotFound)?;
        let remaining = match l.deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).as_secs() as i64,
            None => l.ttl,
        };
        Ok(LeaseStatus {
            remaining,
            granted: l.ttl,
            keys: l.keys.iter().cloned().collect(),
        })
    }

    /// All lease IDs, soonest deadline first (etcd sorts `Leases` by expiry).
    pub(crate) fn leases(&self) -> Vec<i64> {
        let leases = self.leases.lock();
        let mut v: Vec<(Option<Instant>, i64)> =
            leases.iter().map(|(id, l)| (l.deadline, *id)).collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// This member leads, in raft term `term`: unless it already kept lease time in that term,
    /// every lease gets a fresh deadline of its full TTL plus `extend` (etcd's `Promote`, with
    /// the election timeout as `extend`), whatever its old one — a follower's deadlines were set
    /// when it applied the grants and never renewed, and a member leading again in a later term
    /// did not see the keep-alives that went to the leaders in between. Called before the
    /// leader answers any keep-alive or TimeToLive, and by the expiry loop.
    pub(crate) fn lead(&self, extend: Duration, term: u64) {
        let mut leases = self.leases.lock();
        if self.primary.swap(term, Ordering::SeqCst) != term {
            let now = Instant::now();
            for l in leases.values_mut() {
                l.deadline = Some(deadline(now, l.ttl) + extend);
            }
        }
    }

    /// This member does not lead: its deadlines go stale from now on ([`Lessor::lead`]).
    pub(crate) fn follow(&self) {
        let _leases = self.leases.lock();
        self.primary.store(0, Ordering::SeqCst);
    }

    /// Leases whose deadline has passed, for the leader to revoke.
    pub(crate) fn expired(&self, now: Instant) -> Vec<i64> {
        let leases = self.leases.lock();
        let mut v: Vec<i64> = leases
            .iter()
            .filter(|(_, l)| l.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        v.sort();
        v
    }
}

fn deadline(now: Instant, ttl: i64) -> Instant {
    now + Duration::from_secs(ttl.clamp(0, MAX_LEASE_TTL) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemBackend;

    #[test]
    fn a_new_leader_gives_every_lease_its_full_ttl_again() {
        let b = MemBackend::default();
        let l = Lessor::open(&b, 1).unwrap();
        let mut batch = WriteBatch::default();
        l.grant(7, 10, &mut batch).unwrap();
        // A follower's deadline, set when it applied the grant, has passed: keep-alives were
        // renewing the old leader's. Renewing cannot revive it...
        l.leases.lock().get_mut(&7).unwrap().deadline =
            Some(Instant::now() - Duration::from_secs(1));
        assert_eq!(l.renew(7), Err(Error::LeaseNotFound));
        assert_eq!(l.expired(Instant::now()), vec![7]);
        // ...taking over as leader does: the full TTL plus the extension, from now.
        l.lead(Duration::from_secs(1), 3);
        let now = Instant::now();
        assert!(l.expired(now + Duration::from_millis(10_500)).is_empty());
        assert_eq!(l.expired(now + Duration::from_secs(12)), vec![7]);
        // Leading on in the same term changes nothing; leading again in a later term (other
        // leaders kept time in between) starts over, as does following then leading.
        l.leases.lock().get_mut(&7).unwrap().deadline = Some(now);
        l.lead(Duration::from_secs(1), 3);
        assert_eq!(l.expired(now + Duration::from_millis(1)), vec![7]);
        l.lead(Duration::from_secs(1), 5);
        assert!(l.expired(now + Duration::from_secs(10)).is_empty());
        l.leases.lock().get_mut(&7).unwrap().deadline = Some(now);
        l.follow();
        l.lead(Duration::from_secs(1), 5);
        assert!(l.expired(now + Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn grant_revoke_and_reload() {
        let b = MemBackend::default();
        let l = Lessor::open(&b, 2).unwrap();
        let mut batch = WriteBatch::default();
        assert_eq!(
            l.grant(7, 1, &mut batch).unwrap(),
            2,
            "TTL raised to the minimum"
        );
        assert_eq!(l.grant(7, 10, &mut batch), Err(Error::LeaseExists));
        assert_eq!(
            l.grant(8, MAX_LEASE_TTL + 1, &mut batch),
            Err(Error::LeaseTtlTooLarge)
        );
        l.grant(9, 100, &mut batch).unwrap();
        let k: Bytes = "a".into();
        l.reattach(&k, 0, 9);
        assert_eq!(l.time_to_live(9).unwrap().keys, vec![k.clone()]);
        l.reattach(&k, 9, 7);
        assert!(l.time_to_live(9).unwrap().keys.is_empty());
        b.write(batch).unwrap();
        let reloaded = Lessor::open(&b, 2).unwrap();
        assert_eq!(reloaded.time_to_live(9).unwrap().granted, 100);
        let mut batch = WriteBatch::default();
        assert_eq!(l.revoke(7, &mut batch).unwrap(), vec![k]);
        assert_eq!(l.revoke(7, &mut batch), Err(Error::LeaseNotFound));
        assert_eq!(l.renew(7), Err(Error::LeaseNotFound));
        assert!(l.expired(Instant::now()).is_empty());
        assert_eq!(
            l.expired(Instant::now() + Duration::from_secs(101)),
            vec![9]
        );
        // A lease past its deadline is not revived by a late keep-alive.
        let past = Instant::now() - Duration::from_secs(1);
        l.leases.lock().get_mut(&9).unwrap().deadline = Some(past);
        assert_eq!(l.renew(9), Err(Error::LeaseNotFound));
        assert_eq!(
            l.expired(Instant::now()),
            vec![9],
            "still waiting for its revoke"
        );
    }
}
