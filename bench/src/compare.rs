//! `compare`: the same workloads against a real etcd and a Keelson, in alternation.
//!
//! Both clusters are started once, side by side, with the same member count (`--members 3`
//! runs raft on both; see [`crate::members`] for readiness and for why the leader's endpoint
//! comes first); then, round after round, every workload runs against etcd and then against
//! Keelson. A workload that measures server memory (`watch-idle`) instead gets a freshly
//! started cluster for every run, stopped right after, and is told the members' pids (leader
//! first, like the endpoints): growth measured on a heap that earlier runs already grew would
//! understate the cost. Alternating etcd and Keelson run by run means slow drift of the
//! machine (other load, thermal state, page cache) touches both alike. Every run is appended to `--out` as one JSON line; at the end the median over rounds
//! of every figure is shown for each server with the Keelson/etcd ratio, and appended as a
//! final `summary` line.
//!
//! A ratio above 1 is better for Keelson on a rate (`_per_s`) and worse on a latency
//! (`_ms`, `_s`) or a memory figure (`_b`, `_mib`); the table says which. A run that failed its checks fails the comparison.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;

use crate::cli::parse_workload;
use crate::members::{Cluster, Kind};
use crate::stats::{fmt_num, higher_is_better, Report};

/// The comparison run when no --workload is given.
const DEFAULT_WORKLOADS: &[&str] = &[
    "put --clients 100 --conns 10 --total 20000",
    "put --clients 1 --total 5000",
    "range --consistency l --clients 100 --conns 10 --total 50000",
    "txn-cas --hot-keys 10 --clients 20 --total 5000",
    "watch --watchers 1000 --puts 1000 --conns 10 --streams 10 --clients 10",
];

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Members per cluster (both run raft when above 1).
    #[arg(long, default_value_t = 1)]
    pub members: usize,
    /// Rounds; each runs every workload against etcd, then Keelson.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The etcd binary (etcd 3.4 or later).
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// The keelson binary (default: next to this one, else target/{release,debug}/keelson).
    #[arg(long)]
    pub keelson_bin: Option<PathBuf>,
    /// A workload command line without --endpoints, e.g. "put --clients 100"; repeatable.
    #[arg(long = "workload")]
    pub workloads: Vec<String>,
    /// JSON lines file the runs and the summary are appended to.
    #[arg(long, default_value = "bench-results.jsonl")]
    pub out: PathBuf,
}

fn keelson_bin(given: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.clone());
    }
    let beside = std::env::current_exe()?.with_file_name("keelson");
    let candidates = [
        beside,
        "target/release/keelson".into(),
        "target/debug/keelson".into(),
    ];
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("no keelson binary found: build it (cargo build --release -p keelson) or pass --keelson-bin")
}

pub(crate) async fn run(a: CompareArgs) -> anyhow::Result<bool> {
    let lines: Vec<String> = if a.workloads.is_empty() {
        DEFAULT_WORKLOADS.iter().map(|s| s.to_string()).collect()
    } else {
        a.workloads.clone()
    };
    // Parse everything before starting anything, so a typo fails at once.
    let mut shared_needed = false;
    for l in &lines {
        shared_needed |= !parse_workload(l)?.fresh_server();
    }
    let keelson_bin = keelson_bin(&a.keelson_bin)?;
    let bin = |k: Kind| match k {
        Kind::Etcd => a.etcd_bin.clone(),
        Kind::Keelson => keelson_bin.clone(),
    };
    // The clusters every round reuses, [etcd, keelson]; none when every workload wants fresh ones.
    let mut shared = Vec::new();
    if shared_needed {
        let keelson = Cluster::start(Kind::Keelson, &bin(Kind::Keelson), a.members).await?;
        let etcd = Cluster::start(Kind::Etcd, &bin(Kind::Etcd), a.members).await?;
        for c in [&etcd, &keelson] {
            announce(c, a.members);
        }
        shared = vec![etcd, keelson];
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.out)
        .with_context(|| format!("opening {}", a.out.display()))?;
    // (workload line, kind) → one report per round
    let mut results: BTreeMap<(usize, Kind), Vec<Report>> = BTreeMap::new();
    let mut ok = true;
    for round in 1..=a.rounds {
        for (wi, line) in lines.iter().enumerate() {
            for kind in [Kind::Etcd, Kind::Keelson] {
                let mut w = parse_workload(line)?;
                let fresh = if w.fresh_server() {
                    let c = Cluster::start(kind, &bin(kind), a.members).await?;
                    announce(&c, a.members);
                    Some(c)
                } else {
                    None
                };
                let c = match &fresh {
                    Some(c) => c,
                    None => shared
                        .iter()
                        .find(|c| c.kind == kind)
                        .expect("shared clusters run when a workload needs them"),
                };
                w.target_mut().endpoints = c.endpoints();
                w.set_server_pids(c.pids());
                let report = match w.run().await {
                    Ok(r) => r,
                    Err(e) => Report {
                        workload: w.name().into(),
                        problems: vec![format!("{e:#}")],
                        ..Report::default()
                    },
                };
                if let Some(c) = fresh {
                    c.stop().await;
                }
                eprintln!(
                    "round {round} {:<8} {line}: {}",
                    kind.name(),
                    headline(&report)
                );
                ok &= report.ok;
                let rec = json!({"round": round, "target": kind.name(), "workload": line, "report": report});
                writeln!(out, "{rec}")?;
                results.entry((wi, kind)).or_default().push(report);
            }
        }
    }
    for c in shared {
        c.stop().await;
    }

    let rows = summarize(&lines, &results);
    print!("{}", table(&rows, a.rounds));
    writeln!(
        out,
        "{}",
        json!({ "summary": rows, "rounds": a.rounds, "members": a.members })
    )?;
    eprintln!("results appended to {}", a.out.display());
    if !ok {
        bail!("some runs failed their checks; see {}", a.out.display());
    }
    Ok(ok)
}

fn announce(c: &Cluster, members: usize) {
    eprintln!(
        "{} ready: {members} members, leader {}, endpoints {} (leader first)",
        c.kind.name(),
        c.leader_name(),
        c.endpoints().join(",")
    );
}

fn headline(r: &Report) -> String {
    let main = r.ops.first().map(|o| {
        format!(
            "{} {:.0}/s p99 {:.2} ms",
            o.name, o.per_sec, o.latency.p99_ms
        )
    });
    let status = if r.ok {
        "ok".to_string()
    } else {
        format!("FAILED {:?}", r.problems)
    };
    format!("{} {status}", main.unwrap_or_default())
}

/// One figure of one workload: the median over rounds on each side, and their ratio.
#[derive(serde::Serialize, Debug, PartialEq)]
pub(crate) struct Row {
    workload: String,
    figure: String,
    etcd: f64,
    keelson: f64,
    /// keelson / etcd (NaN when etcd's figure is 0).
    ratio: f64,
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn summarize(lines: &[String], results: &BTreeMap<(usize, Kind), Vec<Report>>) -> Vec<Row> {
    let mut rows = Vec::new();
    for (wi, line) in lines.iter().enumerate() {
        let side = |k: Kind| -> Vec<Vec<(String, f64)>> {
            results
                .get(&(wi, k))
                .map(|rs| rs.iter().map(Report::flat).collect())
                .unwrap_or_default()
        };
        let (e, k) = (side(Kind::Etcd), side(Kind::Keelson));
        let names: Vec<String> = e
            .first()
            .map(|f| f.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default();
        let values = |runs: &[Vec<(String, f64)>], name: &str| -> Vec<f64> {
            runs.iter()
                .filter_map(|f| f.iter().find(|(n, _)| n == name).map(|(_, v)| *v))
                .collect()
        };
        for name in names {
            let (ev, kv) = (median(values(&e, &name)), median(values(&k, &name)));
            rows.push(Row {
                workload: line.clone(),
                figure: name,
                etcd: ev,
                keelson: kv,
                ratio: if ev == 0.0 { f64::NAN } else { kv / ev },
            });
        }
    }
    rows
}

fn table(rows: &[Row], rounds: usize) -> String {
    let mut s = format!(
        "\nmedians of {rounds} rounds\n{:<30} {:>12} {:>12} {:>13}\n",
        "figure", "etcd", "keelson", "keelson/etcd"
    );
    let mut last = "";
    for r in rows {
        if r.workload != last {
            s += &format!("{}\n", r.workload);
            last = &r.workload;
        }
        let verdict = match higher_is_better(&r.figure) {
            _ if !r.ratio.is_finite() => "",
            Some(true) if r.ratio > 1.0 => "better",
            Some(false) if r.ratio < 1.0 => "better",
            Some(_) => "worse",
            None => "",
        };
        s += &format!(
            "  {:<28} {:>12} {:>12} {:>12.2}x {verdict}\n",
            r.figure,
            fmt_num(r.etcd),
            fmt_num(r.keelson),
            r.ratio
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Latency, OpStats};

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    fn report(rate: f64, p99: f64) -> Report {
        Report {
            ops: vec![OpStats {
                name: "put".into(),
                count: 1,
                errors: 0,
                per_sec: rate,
                latency: Latency {
                    p99_ms: p99,
                    ..Latency::default()
                },
            }],
            ..Report::default()
        }
    }

    #[test]
    fn ratios_are_keelson_over_etcd_medians() {
        let lines = vec!["put".to_string()];
        let mut res = BTreeMap::new();
        res.insert(
            (0, Kind::Etcd),
            vec![report(100.0, 2.0), report(300.0, 4.0), report(200.0, 3.0)],
        );
        res.insert(
            (0, Kind::Keelson),
            vec![report(400.0, 1.0), report(500.0, 1.5), report(450.0, 1.2)],
        );
        let rows = summarize(&lines, &res);
        let rate = rows.iter().find(|r| r.figure == "put.ops_per_s").unwrap();
        assert_eq!((rate.etcd, rate.keelson, rate.ratio), (200.0, 450.0, 2.25));
        let p99 = rows.iter().find(|r| r.figure == "put.p99_ms").unwrap();
        assert!((p99.ratio - 0.4).abs() < 1e-12, "{p99:?}");
        let t = table(&rows, 3);
        assert!(
            t.contains("put.ops_per_s") && t.contains("2.25x better"),
            "{t}"
        );
        assert!(t.contains("0.40x better"), "{t}");
    }
}
