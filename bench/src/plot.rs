//! `plot`: watch fan-out throughput and p99 put→event latency against the watcher count, etcd
//! and Keelson on the same axes, drawn from the JSON lines `compare` writes.
//!
//! A sweep is a `compare` run with one `watch` workload per watcher count (see
//! docs/benchmarks.md); every run record of a `watch` workload in the input becomes a point,
//! keyed by server and `--watchers`, and the median over the runs of a key is drawn. Records of
//! other workloads and `summary` lines are skipped; a run that failed its checks is left out
//! (its rate says nothing about a server that lost events) and counted on stderr. All runs in
//! the file are pooled, so a sweep should write to a file of its own.
//!
//! Besides the SVG, the medians are printed as a Markdown table with the Keelson/etcd ratios,
//! ready for docs/benchmarks.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;

use crate::cli::{parse_workload, Workload};
use crate::compare::median;
use crate::stats::Report;
use crate::svg::{render, Panel, Series};

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// JSON lines written by `compare --out`.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// The SVG file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// The title above the charts.
    #[arg(long, default_value = "Watch fan-out, etcd 3.4 vs Keelson")]
    pub title: String,
}

/// One run record of `compare`'s output.
#[derive(Deserialize)]
struct Record {
    target: String,
    workload: String,
    report: Report,
}

/// Median events/s and p99 put→event (ms) per (server, watchers).
pub(crate) type Medians = BTreeMap<(String, usize), (f64, f64)>;

/// Collects the watch runs of a JSON lines text; returns their medians and how many failed
/// runs were left out.
pub(crate) fn watch_points(jsonl: &str) -> anyhow::Result<(Medians, usize)> {
    let mut runs: BTreeMap<(String, usize), Vec<(f64, f64)>> = BTreeMap::new();
    let mut failed = 0;
    for (n, line) in jsonl.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("line {}: not JSON", n + 1))?;
        if v.get("report").is_none() {
            continue;
        }
        let rec: Record =
            serde_json::from_value(v).with_context(|| format!("line {}: not a run", n + 1))?;
        let Ok(Workload::Watch(w)) = parse_workload(&rec.workload) else {
            continue;
        };
        if !rec.report.ok {
            failed += 1;
            continue;
        }
        let rate = rec.report.figures.get("events_per_s").copied();
        let p99 = rec.report.ops.iter().find(|o| o.name == "event");
        if let (Some(rate), Some(p99)) = (rate, p99) {
            runs.entry((rec.target, w.set.watchers))
                .or_default()
                .push((rate, p99.latency.p99_ms));
        }
    }
    let medians = runs
        .into_iter()
        .map(|(k, v)| {
            let rate = median(v.iter().map(|p| p.0).collect());
            let p99 = median(v.iter().map(|p| p.1).collect());
            (k, (rate, p99))
        })
        .collect();
    Ok((medians, failed))
}

fn color(target: &str) -> &'static str {
    match target {
        "etcd" => "#4e79a7",
        "keelson" => "#e15759",
        _ => "#59a14f",
    }
}

/// The two panels: events/s and p99 latency, one series per server.
pub(crate) fn panels(m: &Medians) -> [Panel; 2] {
    let mut servers: Vec<&str> = m.keys().map(|(t, _)| t.as_str()).collect();
    servers.dedup();
    let series = |pick: fn(&(f64, f64)) -> f64| -> Vec<Series> {
        servers
            .iter()
            .map(|&t| Series {
                name: t.to_string(),
                color: color(t),
                points: m
                    .iter()
                    .filter(|((s, _), _)| s == t)
                    .map(|((_, w), v)| (*w as f64, pick(v)))
                    .collect(),
            })
            .collect()
    };
    [
        Panel {
            title: "Events delivered per second".into(),
            x_label: "watchers".into(),
            y_label: "events/s".into(),
            series: series(|v| v.0),
        },
        Panel {
            title: "p99 put → event latency".into(),
            x_label: "watchers".into(),
            y_label: "p99 latency, ms".into(),
            series: series(|v| v.1),
        },
    ]
}

/// The medians as a Markdown table, with Keelson/etcd ratios where both ran.
pub(crate) fn table(m: &Medians) -> String {
    let mut counts: Vec<usize> = m.keys().map(|(_, w)| *w).collect();
    counts.sort_unstable();
    counts.dedup();
    let mut s = String::from(
        "| watchers | etcd events/s | keelson events/s | ratio | etcd p99 ms | keelson p99 ms | ratio |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let get = |t: &str, w: usize| m.get(&(t.to_string(), w)).copied();
    for w in counts {
        let (e, k) = (get("etcd", w), get("keelson", w));
        let cell = |v: Option<f64>, digits: usize| {
            v.map_or("–".to_string(), |v| format!("{v:.digits$}"))
        };
        let ratio = |f: fn((f64, f64)) -> f64| match (e, k) {
            (Some(e), Some(k)) if f(e) != 0.0 => format!("{:.2}×", f(k) / f(e)),
            _ => "–".to_string(),
        };
        let _ = writeln!(
            s,
            "| {w} | {} | {} | {} | {} | {} | {} |",
            cell(e.map(|v| v.0), 0),
            cell(k.map(|v| v.0), 0),
            ratio(|v| v.0),
            cell(e.map(|v| v.1), 1),
            cell(k.map(|v| v.1), 1),
            ratio(|v| v.1),
        );
    }
    s
}

pub(crate) fn run(a: &PlotArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.input)
        .with_context(|| format!("reading {}", a.input.display()))?;
    let (m, failed) = watch_points(&text)?;
    if m.is_empty() {
        anyhow::bail!("no passing watch runs in {}", a.input.display());
    }
    if failed > 0 {
        eprintln!("{failed} watch runs failed their checks and are left out");
    }
    std::fs::write(&a.out, render(&a.title, &panels(&m)))
        .with_context(|| format!("writing {}", a.out.display()))?;
    print!("{}", table(&m));
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Latency, OpStats};
    use serde_json::json;

    fn run_line(target: &str, watchers: usize, rate: f64, p99: f64, ok: bool) -> String {
        let report = Report {
            workload: "watch".into(),
            ok,
            ops: vec![OpStats {
                name: "event".into(),
                count: 1,
                errors: 0,
                per_sec: rate,
                latency: Latency {
                    p99_ms: p99,
                    ..Latency::default()
                },
            }],
            figures: [("events_per_s".to_string(), rate)].into(),
            ..Report::default()
        };
        let workload = format!("watch --watchers {watchers} --puts 100");
        json!({"round": 1, "target": target, "workload": workload, "report": report}).to_string()
    }

    #[test]
    fn runs_become_medians_per_server_and_watcher_count() {
        let lines = [
            run_line("etcd", 10, 100.0, 4.0, true),
            run_line("etcd", 10, 300.0, 8.0, true),
            run_line("keelson", 10, 400.0, 2.0, true),
            run_line("keelson", 10, 9e9, 0.1, false),
            run_line("etcd", 100, 1000.0, 9.0, true),
            json!({"round": 1, "target": "etcd", "workload": "put --total 5",
                   "report": Report::default()})
            .to_string(),
            json!({"summary": [], "rounds": 1}).to_string(),
        ]
        .join("\n");
        let (m, failed) = watch_points(&lines).unwrap();
        assert_eq!(failed, 1);
        assert_eq!(m[&("etcd".to_string(), 10)], (200.0, 6.0));
        assert_eq!(m[&("keelson".to_string(), 10)], (400.0, 2.0));
        assert_eq!(m.len(), 3, "the put run and the summary are not points");

        let t = table(&m);
        assert!(
            t.contains("| 10 | 200 | 400 | 2.00× | 6.0 | 2.0 | 0.33× |"),
            "{t}"
        );
        assert!(t.contains("| 100 | 1000 | – | – |"), "{t}");

        let [rate, p99] = panels(&m);
        assert_eq!(rate.series.len(), 2);
        assert_eq!(rate.series[0].points, [(10.0, 200.0), (100.0, 1000.0)]);
        assert_eq!(p99.series[1].points, [(10.0, 2.0)]);
        let svg = render("t", &[rate, p99]);
        crate::svg::tests::well_formed(&svg).unwrap();
    }

    #[test]
    fn a_broken_line_is_an_error() {
        assert!(watch_points("{not json").is_err());
        assert!(watch_points("").unwrap().0.is_empty());
    }

    #[test]
    fn the_plot_command_parses() {
        use clap::Parser;
        let cli = crate::Cli::try_parse_from([
            "keelson-bench",
            "plot",
            "--in",
            "r.jsonl",
            "--out",
            "docs/x.svg",
        ])
        .unwrap();
        let crate::Command::Plot(a) = cli.command else {
            panic!("not plot")
        };
        assert_eq!(a.input, PathBuf::from("r.jsonl"));
        assert_eq!(a.out, PathBuf::from("docs/x.svg"));
    }
}
