//! # Linearizability of per-key registers
//!
//! A history is linearizable if every operation can be given one instant between its
//! invocation and its completion such that, in the order of those instants, the operations are
//! a legal sequential run of the register (read / write / delete / compare-and-set).
//!
//! The search is Wing & Gong's as refined by Lowe and by porcupine:
//! - **P-compositionality**: a history is linearizable iff its restriction to each key is, so
//!   every key is checked alone ([`check`] partitions).
//! - The invocations and completions of a partition are sorted by time into one doubly linked
//!   list (a call sorts before a return at the same instant, so touching ops count as
//!   concurrent). The DFS walks it: at a call it tries to linearize that op now (the model
//!   accepts it from the current state) and lifts the op out of the list; at a return it has
//!   met an op that must already have been linearized, so it backtracks to the last choice.
//! - **Memoization**: the pair (set of linearized ops as a bitset, register state) fully
//!   determines the rest of the search, so a pair seen before is never explored again.
//!
//! Indeterminate ops (`info`, `invoke`) may take effect at any instant after their invocation
//! or never: their return sorts at +∞, and once every remaining op is indeterminate the search
//! succeeds, since leaving them all unapplied is legal. Failed ops and reads without a known
//! result took no effect and are dropped before the search.
//!
//! The search is exponential in the worst case; past the deadline the answer is `unknown`,
//! never a pass. On failure the result names, as porcupine does, the longest linearizable
//! prefix found and the op whose completion no linearization could reach.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::history::{Func, History, Op, OpType};
use crate::result::{Anomaly, CheckResult, Report};

/// Interned register value; [`ABSENT`] is the missing key.
type Value = u32;
const ABSENT: Value = 0;

#[derive(Clone, Copy, Debug)]
enum RegOp {
    Read(Value),
    Write(Value),
    Cas { expected: Value, new: Value },
}

impl RegOp {
    /// The state after applying the op to `state`, or `None` if the op cannot happen here.
    fn step(self, state: Value) -> Option<Value> {
        match self {
            RegOp::Read(v) => (v == state).then_some(state),
            RegOp::Write(v) => Some(v),
            RegOp::Cas { expected, new } => (expected == state).then_some(new),
        }
    }
}

/// Checks every key's register history, spending at most `timeout` in all.
pub fn check(history: &History, timeout: Duration) -> CheckResult {
    let deadline = Instant::now() + timeout;
    let mut partitions: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        if let Some(key) = op.key() {
            partitions.entry(key).or_default().push(op);
        }
    }
    let mut report = Report::new("linearizable");
    let (mut checked_ops, mut unknown_keys) = (0usize, Vec::new());
    for (key, ops) in &partitions {
        let partition = Partition::new(ops);
        checked_ops += partition.ops.len();
        match partition.search(deadline) {
            Outcome::Linearizable => {}
            Outcome::Timeout => unknown_keys.push(key.to_string()),
            Outcome::Illegal(failure) => report.add(partition.anomaly(key, &failure)),
        }
    }
    if !unknown_keys.is_empty() {
        report.unknown(format!(
            "search exceeded {timeout:?} on keys {unknown_keys:?}"
        ));
    }
    report.stats(json!({
        "keys": partitions.len(),
        "ops_checked": checked_ops,
        "unknown_keys": unknown_keys,
    }));
    report.finish()
}

enum Outcome {
    Linearizable,
    Illegal(Failure),
    Timeout,
}

/// The deepest dead end of the search.
struct Failure {
    /// Linearized ops (partition positions) in linearization order, and the state after them.
    prefix: Vec<usize>,
    state: Value,
    /// The op whose completion was reached with it still unlinearizable.
    blocking: usize,
    /// Ops still pending at that point (including `blocking`).
    pending: Vec<usize>,
}

/// One key's ops, ready for the search.
struct Partition<'h> {
    ops: Vec<&'h Op>,
    model: Vec<RegOp>,
    /// The instant by which each op must have taken effect; `u64::MAX` = maybe never.
    deadline: Vec<u64>,
    values: Vec<Option<String>>,
}

impl<'h> Partition<'h> {
    fn new(all: &[&'h Op]) -> Partition<'h> {
        let mut interned: HashMap<Option<&'h str>, Value> = HashMap::from([(None, ABSENT)]);
        let mut values = vec![None];
        let mut intern = |v: Option<&'h str>| {
            *interned.entry(v).or_insert_with(|| {
                values.push(v.map(str::to_string));
                (values.len() - 1) as Value
            })
        };
        let (mut ops, mut model) = (Vec::new(), Vec::new());
        for &op in all {
            if op.kind == OpType::Fail {
                continue;
            }
            let reg = match &op.f {
                Func::Read { value, .. } if op.kind == OpType::Ok => {
                    RegOp::Read(intern(value.as_deref()))
                }
                Func::Read { .. } => continue,
                Func::Write { value, .. } => RegOp::Write(intern(Some(value))),
                Func::Delete { .. } => RegOp::Write(ABSENT),
                Func::Cas {
                    expected, value, ..
                } => RegOp::Cas {
                    expected: intern(expected.as_deref()),
                    new: intern(Some(value)),
                },
                _ => continue,
            };
            ops.push(op);
            model.push(reg);
        }
        let deadline = ops.iter().map(|op| op.effect_deadline()).collect();
        let mut partition = Partition {
            ops,
            model,
            deadline,
            values,
        };
        partition.bound_indeterminate_writes();
        partition
    }

    /// Indeterminate writes stay pending to the end of the search and multiply its states;
    /// two sound reductions remove most of them before it starts:
    /// - a write whose value nobody observes (no read returns it, no CAS expects it) is
    ///   dropped: in any linearization that applies it, the value it leaves is only ever
    ///   overwritten blindly, so the same linearization without it is legal too;
    /// - a write that is the only one producing its value, which some determinate op
    ///   observed, must have applied before the earliest such observer completed: that
    ///   becomes its deadline, and the op is searched like a determinate one.
    fn bound_indeterminate_writes(&mut self) {
        let produced = |op: &RegOp| match *op {
            RegOp::Write(v) | RegOp::Cas { new: v, .. } => Some(v),
            RegOp::Read(_) => None,
        };
        let mut writers: HashMap<Value, usize> = HashMap::new();
        let mut observed: HashSet<Value> = HashSet::new();
        let mut observed_by: HashMap<Value, u64> = HashMap::new();
        for (i, op) in self.model.iter().enumerate() {
            if let Some(v) = produced(op) {
                *writers.entry(v).or_default() += 1;
            }
            if let RegOp::Read(v) | RegOp::Cas { expected: v, .. } = *op {
                observed.insert(v);
                if self.deadline[i] != u64::MAX {
                    let by = observed_by.entry(v).or_insert(u64::MAX);
                    *by = (*by).min(self.deadline[i]);
                }
            }
        }
        let mut keep = vec![true; self.ops.len()];
        for (i, keep) in keep.iter_mut().enumerate() {
            let Some(v) = produced(&self.model[i]) else {
                continue;
            };
            if self.deadline[i] != u64::MAX || v == ABSENT {
                continue;
            }
            if !observed.contains(&v) {
                *keep = false;
            } else if let (Some(&by), Some(1)) = (observed_by.get(&v), writers.get(&v)) {
                self.deadline[i] = by.max(self.ops[i].invoke_ns);
            }
        }
        retain_marked(&mut self.ops, &keep);
        retain_marked(&mut self.model, &keep);
        retain_marked(&mut self.deadline, &keep);
    }

    fn search(&self, deadline: Instant) -> Outcome {
        let n = self.ops.len();
        let mut list = List::new(&self.ops, &self.deadline);
        let mut linearized = vec![0u64; n.div_ceil(64)];
        let mut seen: HashSet<(Vec<u64>, Value)> = HashSet::new();
        // (call node, state before it): the choices made so far, in linearization order.
        let mut calls: Vec<(usize, Value)> = Vec::new();
        let mut state = ABSENT;
        let mut failure: Option<Failure> = None;
        let mut entry = list.next[HEAD];
        let mut steps = 0u64;
        while entry != NIL {
            steps += 1;
            if steps.is_multiple_of(1024) && Instant::now() > deadline {
                return Outcome::Timeout;
            }
            let op = list.op[entry];
            if list.is_call[entry] {
                if let Some(next_state) = self.model[op].step(state) {
                    linearized[op / 64] |= 1 << (op % 64);
                    if seen.insert((linearized.clone(), next_state)) {
                        calls.push((entry, state));
                        state = next_state;
                        list.lift(entry);
                        entry = list.next[HEAD];
                        continue;
                    }
                    linearized[op / 64] &= !(1 << (op % 64));
                }
                entry = list.next[entry];
            } else if self.deadline[op] == u64::MAX {
                // Returns at +∞ sort last: every op left is indeterminate and may never apply.
                return Outcome::Linearizable;
            } else {
                if failure
                    .as_ref()
                    .is_none_or(|f| calls.len() > f.prefix.len())
                {
                    failure = Some(Failure {
                        prefix: calls.iter().map(|&(node, _)| list.op[node]).collect(),
                        state,
                        blocking: op,
                        pending: list.pending_before(entry),
                    });
                }
                let Some((node, before)) = calls.pop() else {
                    return Outcome::Illegal(failure.expect("a dead end was recorded"));
                };
                let undone = list.op[node];
                linearized[undone / 64] &= !(1 << (undone % 64));
                state = before;
                list.unlift(node);
                entry = list.next[node];
            }
        }
        Outcome::Linearizable
    }

    fn anomaly(&self, key: &str, failure: &Failure) -> Anomaly {
        let show = |v: Value| self.values[v as usize].clone();
        // The tail of the prefix is what the blocking op contradicts; the whole prefix is in
        // the detail as history indices.
        let tail = failure.prefix.len().saturating_sub(8);
        let mut ops: Vec<Op> = failure.prefix[tail..]
            .iter()
            .map(|&i| self.ops[i].clone())
            .collect();
        ops.extend(failure.pending.iter().map(|&i| self.ops[i].clone()));
        let blocking = self.ops[failure.blocking];
        Anomaly::new(
            "nonlinearizable",
            format!(
                "key {key:?}: op {} ({:?}) cannot be linearized after the longest linearizable \
                 prefix of {} ops, which leaves the value {:?}",
                blocking.index,
                blocking.f,
                failure.prefix.len(),
                show(failure.state),
            ),
            ops,
        )
        .with_detail(json!({
            "key": key,
            "blocking_op": blocking.index,
            "longest_prefix": failure.prefix.iter().map(|&i| self.ops[i].index).collect::<Vec<_>>(),
            "value_after_prefix": show(failure.state),
            "pending_ops": failure.pending.iter().map(|&i| self.ops[i].index).collect::<Vec<_>>(),
        }))
    }
}

fn retain_marked<T>(items: &mut Vec<T>, keep: &[bool]) {
    let mut marks = keep.iter();
    items.retain(|_| *marks.next().expect("one mark per item"));
}

const HEAD: usize = 0;
const NIL: usize = usize::MAX;

/// The time-ordered call/return entries as a doubly linked list over indices, so that
/// lifting an op out and putting it back (dancing links) are O(1).
struct List {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Partition position of each node's op.
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// For a call node, its return node.
    ret: Vec<usize>,
}

impl List {
    fn new(ops: &[&Op], deadline: &[u64]) -> List {
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            events.push((op.invoke_ns, true, i));
            events.push((deadline[i].max(op.invoke_ns), false, i));
        }
        // Calls first at equal times (`!is_call` sorts false first): touching ops overlap.
        events.sort_by_key(|&(t, is_call, i)| (t, !is_call, i));
        let len = events.len() + 1;
        let mut list = List {
            next: (1..=len).map(|i| if i == len { NIL } else { i }).collect(),
            prev: (0..len).map(|i| if i == 0 { NIL } else { i - 1 }).collect(),
            op: vec![NIL; len],
            is_call: vec![false; len],
            ret: vec![NIL; len],
        };
        let mut call_node = vec![NIL; ops.len()];
        for (pos, &(_, is_call, i)) in events.iter().enumerate() {
            let node = pos + 1;
            list.op[node] = i;
            list.is_call[node] = is_call;
            if is_call {
                call_node[i] = node;
            } else {
                list.ret[call_node[i]] = node;
            }
        }
        list
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.ret[call]);
    }

    /// Exactly undoes the matching `lift`; lifts must be undone in reverse order.
    fn unlift(&mut self, call: usize) {
        self.relink(self.ret[call]);
        self.relink(call);
    }

    /// Ops whose calls precede `node` in the list, plus `node`'s own op.
    fn pending_before(&self, node: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut e = self.next[HEAD];
        while e != node && e != NIL {
            if self.is_call[e] {
                out.push(self.op[e]);
            }
            e = self.next[e];
        }
        if !out.contains(&self.op[node]) {
            out.push(self.op[node]);
        }
        out
    }
}

#[cfg(test)]
mod tests;
