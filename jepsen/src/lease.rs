//! # Leases: keys vanish only when their lease is gone, and stay gone
//!
//! A key put with a lease must stay until the lease is revoked or expires. Expiry cannot
//! happen while the lease is provably alive: a grant or keep-alive that completed ok took
//! effect after its invocation, so the lease lives at least until `invoke + TTL` of every ok
//! grant and keep-alive (the TTL the response granted). Client and server clocks run at
//! slightly different rates, so a configurable slack is allowed.
//!
//! - `lease-key-vanished-early`: an ok read saw the key absent although the last write before
//!   the read attached it to a lease that was neither revoked (no revoke invoked before the
//!   read completed) nor could have expired (the read completed before the lease's proven
//!   lifetime, minus slack). Reads where another write or delete of the key could interleave
//!   are skipped: they are the register checker's business.
//! - `lease-key-reappeared`: after an ok read saw a leased key absent, a later read saw a value
//!   that no write invoked in between (or concurrent with the absent read) could have put.
//! - `lease-key-outlived-revoke`: after a revoke completed ok, a read saw a value that only
//!   writes attached to the revoked lease had put.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::json;

use crate::history::{Func, History, Op, OpType};
use crate::result::{Anomaly, CheckResult, Report};

const NS_PER_SEC: u64 = 1_000_000_000;

#[derive(Default)]
struct Lease<'h> {
    /// Latest instant the lease is proven alive until, and the op proving it.
    alive_until: u64,
    proof: Option<&'h Op>,
    granted_ttl: Option<i64>,
    /// Earliest invocation of a revoke that may have taken effect.
    revoke_invoked: Option<&'h Op>,
    /// Earliest completion of an ok revoke.
    revoked: Option<&'h Op>,
}

/// Ops touching one key.
#[derive(Default)]
struct Key<'h> {
    /// Writes and deletes that may have taken effect.
    mutations: Vec<&'h Op>,
    reads: Vec<&'h Op>,
    leased: bool,
}

pub fn check(history: &History, slack: Duration) -> CheckResult {
    let slack = u64::try_from(slack.as_nanos()).unwrap_or(u64::MAX);
    let mut report = Report::new("lease");
    let leases = leases(history);
    let mut keys: BTreeMap<&str, Key> = BTreeMap::new();
    for op in history.ops.iter().filter(|op| op.kind != OpType::Fail) {
        match &op.f {
            Func::Write { key, lease, .. } => {
                let k = keys.entry(key).or_default();
                k.mutations.push(op);
                k.leased |= lease.is_some();
            }
            Func::Delete { key, .. } | Func::Cas { key, .. } => {
                keys.entry(key).or_default().mutations.push(op)
            }
            Func::Read { key, .. } if op.kind == OpType::Ok => {
                keys.entry(key).or_default().reads.push(op)
            }
            _ => {}
        }
    }
    for (key, k) in keys.iter().filter(|(_, k)| k.leased) {
        for &read in &k.reads {
            match &read.f {
                Func::Read { value: None, .. } => {
                    vanished_early(key, k, read, &leases, slack, &mut report);
                    reappeared(key, k, read, &mut report);
                }
                Func::Read { value: Some(v), .. } => {
                    outlived_revoke(key, k, read, v, &leases, &mut report)
                }
                _ => {}
            }
        }
    }
    report.stats(json!({ "leases": leases.len(), "leased_keys": keys.values().filter(|k| k.leased).count() }));
    report.finish()
}

fn leases(history: &History) -> HashMap<i64, Lease<'_>> {
    let mut leases: HashMap<i64, Lease> = HashMap::new();
    for op in &history.ops {
        let (id, ttl) = match (&op.f, op.kind) {
            (Func::LeaseGrant { lease, ttl }, OpType::Ok) => {
                leases.entry(*lease).or_default().granted_ttl = Some(*ttl);
                (*lease, Some(*ttl))
            }
            (Func::LeaseKeepAlive { lease, ttl }, OpType::Ok) => (*lease, *ttl),
            (Func::LeaseRevoke { lease }, kind) if kind != OpType::Fail => {
                let l = leases.entry(*lease).or_default();
                if l.revoke_invoked.is_none_or(|r| op.invoke_ns < r.invoke_ns) {
                    l.revoke_invoked = Some(op);
                }
                if kind == OpType::Ok
                    && l.revoked
                        .is_none_or(|r| op.effect_deadline() < r.effect_deadline())
                {
                    l.revoked = Some(op);
                }
                continue;
            }
            _ => continue,
        };
        let l = leases.entry(id).or_default();
        let ttl = ttl.or(l.granted_ttl).unwrap_or(0).max(0) as u64;
        let until = op.invoke_ns.saturating_add(ttl.saturating_mul(NS_PER_SEC));
        if until > l.alive_until {
            l.alive_until = until;
            l.proof = Some(op);
        }
    }
    leases
}

/// The ok write that last completed before `read` began, if no other mutation of the key
/// could have landed between it and the read.
fn attaching_write<'h>(k: &Key<'h>, read: &Op) -> Option<&'h Op> {
    let w = k
        .mutations
        .iter()
        .filter(|m| m.kind == OpType::Ok && matches!(m.f, Func::Write { .. }) && m.precedes(read))
        .max_by_key(|m| m.effect_deadline())?;
    let interleaves = |m: &&&Op| {
        m.index != w.index
            && m.effect_deadline() >= w.invoke_ns
            && m.invoke_ns < read.effect_deadline()
    };
    (!k.mutations.iter().any(|m| interleaves(&m))).then_some(*w)
}

fn vanished_early(
    key: &str,
    k: &Key,
    read: &Op,
    leases: &HashMap<i64, Lease>,
    slack: u64,
    report: &mut Report,
) {
    let Some(write) = attaching_write(k, read) else {
        return;
    };
    let Func::Write {
        lease: Some(id), ..
    } = write.f
    else {
        return;
    };
    let Some(lease) = leases.get(&id) else { return };
    if lease
        .revoke_invoked
        .is_some_and(|r| r.invoke_ns < read.effect_deadline())
    {
        return;
    }
    if read.effect_deadline().saturating_add(slack) < lease.alive_until {
        let mut ops = vec![write.clone(), read.clone()];
        ops.extend(lease.proof.cloned());
        let early_ms = (lease.alive_until - read.effect_deadline()) / 1_000_000;
        report.add(
            Anomaly::new(
                "lease-key-vanished-early",
                format!(
                    "{key:?}, attached to lease {id} by op {}, was read absent by op {} at least {early_ms} ms \
                     before the lease could have expired (op {} kept it alive) and with no revoke",
                    write.index,
                    read.index,
                    lease.proof.map_or(0, |p| p.index),
                ),
                ops,
            )
            .with_detail(json!({ "key": key, "lease": id, "early_ms": early_ms })),
        );
    }
}

/// Whether some mutation of the key could have put `value` after `after` began and before
/// `read` ended.
fn explained(k: &Key, value: &str, after: &Op, read: &Op) -> bool {
    k.mutations.iter().any(|m| {
        let puts = match &m.f {
            Func::Write { value: v, .. } | Func::Cas { value: v, .. } => v == value,
            _ => false,
        };
        puts && m.effect_deadline() >= after.invoke_ns && m.invoke_ns < read.effect_deadline()
    })
}

fn reappeared(key: &str, k: &Key, absent: &Op, report: &mut Report) {
    for &later in k.reads.iter().filter(|r| absent.precedes(r)) {
        let Func::Read { value: Some(v), .. } = &later.f else {
            continue;
        };
        if !explained(k, v, absent, later) {
            report.add(Anomaly::new(
                "lease-key-reappeared",
                format!(
                    "{key:?} was read absent by op {} and then {v:?} by op {}, which no write in between put",
                    absent.index, later.index
                ),
                vec![absent.clone(), later.clone()],
            ));
        }
    }
}

fn outlived_revoke(
    key: &str,
    k: &Key,
    read: &Op,
    value: &str,
    leases: &HashMap<i64, Lease>,
    report: &mut Report,
) {
    let sources: Vec<&&Op> = k
        .mutations
        .iter()
        .filter(|m| matches!(&m.f, Func::Write { value: v, .. } | Func::Cas { value: v, .. } if v == value))
        .filter(|m| m.invoke_ns < read.effect_deadline())
        .collect();
    let Some(Func::Write {
        lease: Some(id), ..
    }) = sources.first().map(|m| &m.f)
    else {
        return;
    };
    let same_lease = sources
        .iter()
        .all(|m| matches!(m.f, Func::Write { lease: Some(l), .. } if l == *id));
    let Some(revoke) = leases.get(id).and_then(|l| l.revoked) else {
        return;
    };
    if same_lease && revoke.precedes(read) {
        report.add(Anomaly::new(
            "lease-key-outlived-revoke",
            format!(
                "{key:?}, put only under lease {id}, was read as {value:?} by op {} after the revoke (op {}) completed",
                read.index, revoke.index
            ),
            vec![revoke.clone(), read.clone()],
        ));
    }
}

#[cfg(test)]
mod tests;
