//! # List-append: Elle's transactional checker
//!
//! Transactions append unique integers to lists stored under keys and read whole lists. Every
//! read then reveals the order of every append it contains, which lets the checker recover the
//! dependencies between transactions from the values alone (Kingsbury & Alvaro, "Elle").
//!
//! - **Version order** of a key: the longest list any committed read returned. Every other
//!   read of the key must be a prefix of it; two reads that are not prefixes of one another
//!   are an `incompatible-order` (the store forked the list).
//! - **ww**: the writer of each element precedes the writer of the next.
//! - **wr**: the writer of a read's last element precedes the reader.
//! - **rw** (anti-dependency): a reader that saw `n` elements precedes the writer of the
//!   `n+1`-th, whose append it did not see.
//!
//! A cycle in this graph is a serializability violation, named by Adya's phenomena: **G0**
//! (ww edges only: write cycle), **G1c** (ww and wr: circular information flow), **G2** (with
//! at least one rw: anti-dependency cycle; `G-single` when exactly one rw edge). Cycles are
//! found by Tarjan's SCCs, then a shortest cycle through an edge of the wanted kind in each
//! component (`graph.rs`).
//!
//! Without cycles, reads alone reveal: **G1a** aborted read (a value appended by a failed
//! txn), **G1b** intermediate read (a list ending in a value its writer followed with another
//! append to the same key), `garbage-read` (a value never appended), `duplicate-elements` (a
//! value twice in one list), `duplicate-append` (one value appended twice: the history breaks
//! the uniqueness the inference relies on) and `internal` (a txn's read that misses its own
//! earlier appends).
//!
//! Failed txns are not graph nodes; indeterminate txns are (their appends may be observed),
//! but their reads are unknown. Real-time order is not used: this checks serializability, not
//! strict serializability (that needs realtime edges; see the crate docs' gaps).

mod graph;

use std::collections::HashMap;

use serde_json::json;

use crate::history::{Func, History, MicroOp, Op, OpType};
use crate::result::{Anomaly, CheckResult, Report};
use graph::{Graph, Kind};

/// One committed read of a key, as the checker uses it.
struct Read<'h> {
    txn: usize,
    key: &'h str,
    list: &'h [i64],
    /// Read before the txn appended to this key itself, so it observes other txns only.
    external: bool,
}

pub fn check(history: &History) -> CheckResult {
    let mut report = Report::new("append");
    let ops = &history.ops;
    let txns: Vec<(&Op, &[MicroOp])> = ops
        .iter()
        .filter_map(|op| match &op.f {
            Func::Txn { ops: micro } => Some((op, micro.as_slice())),
            _ => None,
        })
        .collect();

    // Who appended what, and where in its txn.
    let mut writer: HashMap<(&str, i64), (usize, usize)> = HashMap::new();
    let mut appends_by_txn_key: HashMap<(usize, &str), Vec<i64>> = HashMap::new();
    for &(op, micro) in &txns {
        for (pos, m) in micro.iter().enumerate() {
            if let MicroOp::Append { key, value } = m {
                if let Some(&(first, _)) = writer.get(&(key.as_str(), *value)) {
                    report.add(Anomaly::new(
                        "duplicate-append",
                        format!("value {value} was appended to {key:?} more than once"),
                        vec![ops[first].clone(), op.clone()],
                    ));
                    continue;
                }
                writer.insert((key, *value), (op.index, pos));
                appends_by_txn_key
                    .entry((op.index, key))
                    .or_default()
                    .push(*value);
            }
        }
    }

    let reads = collect_reads(ops, &txns, &mut report);
    check_read_values(ops, &reads, &writer, &appends_by_txn_key, &mut report);
    let orders = version_orders(ops, &reads, &mut report);

    let mut g = Graph::default();
    let committed = |txn: usize| ops[txn].kind != OpType::Fail;
    for (&key, order) in &orders {
        for pair in order.windows(2) {
            let (Some(&(a, _)), Some(&(b, _))) =
                (writer.get(&(key, pair[0])), writer.get(&(key, pair[1])))
            else {
                continue;
            };
            if committed(a) && committed(b) {
                g.add(a, b, Kind::Ww, || {
                    format!("{key:?}: {} was appended right before {}", pair[0], pair[1])
                });
            }
        }
    }
    for read in reads.iter().filter(|r| r.external) {
        let order = &orders[read.key];
        if !order.starts_with(read.list) {
            continue; // already an incompatible-order anomaly; its position is unknown
        }
        if let Some(&last) = read.list.last() {
            if let Some(&(w, _)) = writer.get(&(read.key, last)).filter(|(w, _)| committed(*w)) {
                g.add(w, read.txn, Kind::Wr, || {
                    format!(
                        "{:?}: read {:?}, which ends with {last}",
                        read.key, read.list
                    )
                });
            }
        }
        if let Some(&next) = order.get(read.list.len()) {
            if let Some(&(w, _)) = writer.get(&(read.key, next)).filter(|(w, _)| committed(*w)) {
                g.add(read.txn, w, Kind::Rw, || {
                    format!(
                        "{:?}: read {:?}, missing the later append of {next}",
                        read.key, read.list
                    )
                });
            }
        }
    }
    report_cycles(ops, &g, &mut report);
    report.stats(json!({
        "txns": txns.len(),
        "keys": orders.len(),
        "edges": g.edges.len(),
    }));
    report.finish()
}

/// Every read of a committed txn, checking reads that follow the txn's own appends.
fn collect_reads<'h>(
    ops: &[Op],
    txns: &[(&'h Op, &'h [MicroOp])],
    report: &mut Report,
) -> Vec<Read<'h>> {
    let mut reads = Vec::new();
    for &(op, micro) in txns {
        if op.kind != OpType::Ok {
            continue;
        }
        let mut own: HashMap<&str, Vec<i64>> = HashMap::new();
        for m in micro {
            match m {
                MicroOp::Append { key, value } => own.entry(key).or_default().push(*value),
                MicroOp::R {
                    key,
                    value: Some(list),
                } => {
                    let mine = own.get(key.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                    if !list.ends_with(mine) {
                        report.add(Anomaly::new(
                            "internal",
                            format!(
                                "{key:?}: read {list:?} after the txn itself appended {mine:?}"
                            ),
                            vec![ops[op.index].clone()],
                        ));
                    }
                    reads.push(Read {
                        txn: op.index,
                        key,
                        list,
                        external: mine.is_empty(),
                    });
                }
                MicroOp::R { value: None, .. } => {}
            }
        }
    }
    reads
}

/// G1a, G1b, garbage reads and duplicated elements: what single reads reveal.
fn check_read_values(
    ops: &[Op],
    reads: &[Read],
    writer: &HashMap<(&str, i64), (usize, usize)>,
    appends: &HashMap<(usize, &str), Vec<i64>>,
    report: &mut Report,
) {
    for read in reads {
        let mut seen = std::collections::HashSet::new();
        for &v in read.list {
            if !seen.insert(v) {
                report.add(Anomaly::new(
                    "duplicate-elements",
                    format!("{:?}: read {:?} holds {v} twice", read.key, read.list),
                    vec![ops[read.txn].clone()],
                ));
            }
            match writer.get(&(read.key, v)) {
                None => report.add(Anomaly::new(
                    "garbage-read",
                    format!(
                        "{:?}: read {:?} holds {v}, which no txn appended",
                        read.key, read.list
                    ),
                    vec![ops[read.txn].clone()],
                )),
                Some(&(w, _)) if ops[w].kind == OpType::Fail => report.add(Anomaly::new(
                    "G1a",
                    format!(
                        "{:?}: read {:?} holds {v}, appended by a txn that failed",
                        read.key, read.list
                    ),
                    vec![ops[w].clone(), ops[read.txn].clone()],
                )),
                Some(_) => {}
            }
        }
        let Some(&last) = read.list.last() else {
            continue;
        };
        let Some(&(w, _)) = writer.get(&(read.key, last)) else {
            continue;
        };
        let theirs = &appends[&(w, read.key)];
        if w != read.txn && theirs.last() != Some(&last) {
            report.add(Anomaly::new(
                "G1b",
                format!(
                    "{:?}: read {:?} ends with {last}, but its txn then appended {:?} too",
                    read.key,
                    read.list,
                    &theirs[theirs.iter().position(|&x| x == last).map_or(0, |p| p + 1)..]
                ),
                vec![ops[w].clone(), ops[read.txn].clone()],
            ));
        }
    }
}

/// The longest read of each key, after checking every read is a prefix of it.
fn version_orders<'h>(
    ops: &[Op],
    reads: &[Read<'h>],
    report: &mut Report,
) -> HashMap<&'h str, &'h [i64]> {
    let mut longest: HashMap<&str, &Read> = HashMap::new();
    for read in reads {
        let best = longest.entry(read.key).or_insert(read);
        if read.list.len() > best.list.len() {
            *best = read;
        }
    }
    for read in reads {
        let best = longest[read.key];
        if !best.list.starts_with(read.list) {
            report.add(
                Anomaly::new(
                    "incompatible-order",
                    format!(
                        "{:?}: read {:?} is not a prefix of the longer read {:?}",
                        read.key, read.list, best.list
                    ),
                    vec![ops[read.txn].clone(), ops[best.txn].clone()],
                )
                .with_detail(json!({ "key": read.key, "read": read.list, "longest": best.list })),
            );
        }
    }
    longest.into_iter().map(|(k, r)| (k, r.list)).collect()
}

fn report_cycles(ops: &[Op], g: &Graph, report: &mut Report) {
    use Kind::{Rw, Wr, Ww};
    // Weakest graph first, so each cycle is named by the strongest phenomenon it shows.
    for (kinds, through) in [
        (&[Ww][..], Ww),
        (&[Ww, Wr][..], Wr),
        (&[Ww, Wr, Rw][..], Rw),
    ] {
        for component in g.components(kinds) {
            let Some(cycle) = g.cycle_through(&component, through, kinds) else {
                continue;
            };
            let rw = cycle.iter().filter(|&&e| g.edges[e].kind == Rw).count();
            let name = match through {
                Ww => "G0",
                Wr => "G1c",
                Rw => "G2",
            };
            let steps: Vec<_> = cycle
                .iter()
                .map(|&e| {
                    let edge = &g.edges[e];
                    json!({ "from": edge.from, "to": edge.to, "kind": edge.kind.name(), "why": edge.why })
                })
                .collect();
            let path: Vec<String> = cycle
                .iter()
                .map(|&e| format!("T{} -{}->", g.edges[e].from, g.edges[e].kind.name()))
                .collect();
            let mut detail = json!({ "cycle": steps, "component_size": component.len() });
            if through == Rw {
                detail["subtype"] = json!(if rw == 1 { "G-single" } else { "G2-item" });
            }
            report.add(
                Anomaly::new(
                    name,
                    format!(
                        "dependency cycle {} T{}",
                        path.join(" "),
                        g.edges[cycle[0]].from
                    ),
                    cycle
                        .iter()
                        .map(|&e| ops[g.edges[e].from].clone())
                        .collect(),
                )
                .with_detail(detail),
            );
        }
    }
}

#[cfg(test)]
mod tests;
