//! # The latency and throughput plot
//!
//! One SVG, drawn as Jepsen's `latency-raw` and `rate` graphs are, one above the other on the
//! same time axis (seconds since the test started):
//! - **latency**: one point per completed operation at (invoke time, latency), on a log scale,
//!   coloured by outcome (ok / info / fail), so a fault shows as a column of timeouts;
//! - **throughput**: completed operations per second of each outcome, as lines;
//! - **nemesis**: every fault interval shaded across both panels, one colour per kind, named
//!   in the legend.
//!
//! Watch ops are streams that last many seconds, not requests: they are left out. Ops that
//! never completed have no latency and are left out too. Past [`MAX_POINTS`] operations the
//! latency panel draws an evenly spaced sample (the throughput panel always counts them all).
//! Hand-written SVG: no plotting dependency, and the file opens in any browser.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::history::{Func, Op, OpType};

/// At most this many latency points are drawn.
pub const MAX_POINTS: usize = 20_000;

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const LAT_H: f64 = 330.0;
const GAP: f64 = 50.0;
const RATE_H: f64 = 180.0;
const BOTTOM: f64 = 45.0;

/// A fault interval to shade.
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    pub start_ns: u64,
    pub end_ns: u64,
    /// The nemesis kind (the legend and the colour).
    pub kind: String,
}

fn type_colour(t: OpType) -> &'static str {
    match t {
        OpType::Ok => "#2f7ed8",
        OpType::Info => "#f0a30a",
        OpType::Fail => "#d8322f",
        OpType::Invoke => "#888888",
    }
}

const NEMESIS_COLOURS: [&str; 6] = [
    "#ff9896", "#98df8a", "#c5b0d5", "#ffbb78", "#9edae5", "#dbdb8d",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `v` without floating-point dust, for tick labels.
fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A round tick step giving about `n` ticks over `span`.
fn tick_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag)
}

/// Renders the plot of `ops` with the `nemesis` intervals shaded.
pub fn render(title: &str, ops: &[Op], nemesis: &[Interval]) -> String {
    let points: Vec<(f64, f64, OpType)> = ops
        .iter()
        .filter(|op| !matches!(op.f, Func::Watch { .. }) && op.kind != OpType::Invoke)
        .filter_map(|op| {
            let complete = op.complete_ns?;
            let latency_ms = complete.saturating_sub(op.invoke_ns) as f64 / 1e6;
            Some((op.invoke_ns as f64 / 1e9, latency_ms.max(0.01), op.kind))
        })
        .collect();
    let end_s = ops
        .iter()
        .filter_map(|op| op.complete_ns)
        .map(|ns| ns as f64 / 1e9)
        .chain(points.iter().map(|p| p.0))
        .chain(nemesis.iter().map(|i| i.end_ns as f64 / 1e9))
        .fold(1.0f64, f64::max);
    let plot_w = WIDTH - LEFT - RIGHT;
    let height = TOP + LAT_H + GAP + RATE_H + BOTTOM;
    let x = |s: f64| LEFT + s / end_s * plot_w;

    // Latency axis: decades covering every point.
    let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let (lo_dec, hi_dec) = if points.is_empty() {
        (-1.0, 4.0)
    } else {
        (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        )
    };
    let lat_y = |ms: f64| TOP + LAT_H - (ms.log10() - lo_dec) / (hi_dec - lo_dec) * LAT_H;

    // Throughput: completions per bucket, per outcome.
    let bucket_s = tick_step(end_s, 120.0).max(1.0);
    let buckets = (end_s / bucket_s).ceil().max(1.0) as usize;
    let mut rates: BTreeMap<&str, (OpType, Vec<f64>)> = BTreeMap::new();
    for op in ops.iter().filter(|op| !matches!(op.f, Func::Watch { .. })) {
        let Some(complete) = op.complete_ns else {
            continue;
        };
        let b = ((complete as f64 / 1e9) / bucket_s) as usize;
        let name = match op.kind {
            OpType::Ok => "ok",
            OpType::Info => "info",
            OpType::Fail => "fail",
            OpType::Invoke => continue,
        };
        let series = &mut rates.entry(name).or_insert((op.kind, vec![0.0; buckets])).1;
        if let Some(slot) = series.get_mut(b.min(buckets - 1)) {
            *slot += 1.0 / bucket_s;
        }
    }
    let max_rate = rates
        .values()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(1.0f64, f64::max);
    let rate_step = tick_step(max_rate, 4.0);
    let rate_top = (max_rate / rate_step).ceil() * rate_step;
    let rate_base = TOP + LAT_H + GAP + RATE_H;
    let rate_y = |r: f64| rate_base - r / rate_top * RATE_H;

    let mut svg = String::new();
    let w = &mut svg;
    let _ = writeln!(
        w,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        w,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        w,
        r#"<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );

    // Nemesis shading, under everything else.
    let mut kinds: Vec<&str> = Vec::new();
    for i in nemesis {
        if !kinds.contains(&i.kind.as_str()) {
            kinds.push(&i.kind);
        }
    }
    let colour = |kind: &str| {
        let k = kinds.iter().position(|&x| x == kind).unwrap_or(0);
        NEMESIS_COLOURS[k % NEMESIS_COLOURS.len()]
    };
    for i in nemesis {
        let (x0, x1) = (
            x(i.start_ns as f64 / 1e9),
            x(i.end_ns.max(i.start_ns) as f64 / 1e9),
        );
        for (y, h) in [(TOP, LAT_H), (TOP + LAT_H + GAP, RATE_H)] {
            let _ = writeln!(
                w,
                r#"<rect class="nemesis" x="{x0:.1}" y="{y}" width="{:.1}" height="{h}" fill="{}" fill-opacity="0.35"><title>{}</title></rect>"#,
                (x1 - x0).max(1.0),
                colour(&i.kind),
                escape(&i.kind)
            );
        }
    }

    // Axes and grid.
    let x_step = tick_step(end_s, 10.0);
    for k in 0..=(end_s / x_step + 1e-9) as usize {
        let t = round(k as f64 * x_step);
        let _ = writeln!(
            w,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{rate_base}" stroke="#e5e5e5"/><text x="{0:.1}" y="{1}" text-anchor="middle">{2}</text>"##,
            x(t),
            rate_base + 15.0,
            t
        );
    }
    let _ = writeln!(
        w,
        r#"<text x="{}" y="{}" text-anchor="middle">time since start (s)</text>"#,
        LEFT + plot_w / 2.0,
        rate_base + 32.0
    );
    for k in 0..=(hi_dec - lo_dec) as usize {
        let d = lo_dec + k as f64;
        let y = lat_y(10f64.powf(d));
        let _ = writeln!(
            w,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            round(10f64.powf(d))
        );
    }
    for k in 0..=(rate_top / rate_step + 1e-9) as usize {
        let r = round(k as f64 * rate_step);
        let y = rate_y(r);
        let _ = writeln!(
            w,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            r
        );
    }
    for (y, h, label) in [
        (TOP, LAT_H, "latency (ms)"),
        (TOP + LAT_H + GAP, RATE_H, "throughput (ops/s)"),
    ] {
        let _ = writeln!(
            w,
            r#"<rect x="{LEFT}" y="{y}" width="{plot_w}" height="{h}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            w,
            r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{label}</text>"#,
            y + h / 2.0
        );
    }

    // Latency points.
    let stride = points.len().div_ceil(MAX_POINTS).max(1);
    let _ = writeln!(w, r#"<g class="latency" fill-opacity="0.6">"#);
    for &(s, ms, kind) in points.iter().step_by(stride) {
        let _ = writeln!(
            w,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="{}"/>"#,
            x(s),
            lat_y(ms),
            type_colour(kind)
        );
    }
    let _ = writeln!(w, "</g>");

    // Throughput lines.
    for (name, (kind, series)) in &rates {
        let pts: Vec<String> = series
            .iter()
            .enumerate()
            .map(|(b, &r)| {
                let mid = ((b as f64 + 0.5) * bucket_s).min(end_s);
                format!("{:.1},{:.1}", x(mid), rate_y(r))
            })
            .collect();
        let _ = writeln!(
            w,
            r#"<polyline class="rate-{name}" fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            type_colour(*kind),
            pts.join(" ")
        );
    }

    // Legend.
    let lx = LEFT + plot_w + 15.0;
    let mut ly = TOP + 10.0;
    for (name, kind) in [
        ("ok", OpType::Ok),
        ("info", OpType::Info),
        ("fail", OpType::Fail),
    ] {
        let _ = writeln!(
            w,
            r#"<circle cx="{lx}" cy="{ly}" r="4" fill="{}"/><text x="{}" y="{}">{name}</text>"#,
            type_colour(kind),
            lx + 10.0,
            ly + 4.0
        );
        ly += 18.0;
    }
    for kind in &kinds {
        let _ = writeln!(
            w,
            r#"<rect x="{}" y="{}" width="12" height="10" fill="{}" fill-opacity="0.6"/><text x="{}" y="{}">{}</text>"#,
            lx - 6.0,
            ly - 5.0,
            colour(kind),
            lx + 10.0,
            ly + 4.0,
            escape(kind)
        );
        ly += 18.0;
    }
    let _ = writeln!(w, "</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that tags nest and close and that every attribute value is quoted: enough of
    /// XML's well-formedness for what `render` writes.
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let close = rest[open..].find('>').expect("every tag closes") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "nested '<' in {tag:?}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
            } else {
                let self_closing = tag.ends_with('/');
                let body = tag.trim_end_matches('/');
                let name = body.split_whitespace().next().expect("a tag name");
                assert_eq!(
                    body.matches('"').count() % 2,
                    0,
                    "unbalanced quotes in {tag:?}"
                );
                for attr in body.split_whitespace().skip(1).filter(|a| a.contains('=')) {
                    let value = attr.split_once('=').unwrap().1;
                    assert!(value.starts_with('"'), "unquoted attribute in {tag:?}");
                }
                if !self_closing {
                    stack.push(name.to_string());
                }
            }
            rest = &rest[close + 1..];
            let text = &rest[..rest.find('<').unwrap_or(rest.len())];
            for (at, _) in text.match_indices('&') {
                let entity = ["&amp;", "&lt;", "&gt;", "&quot;"];
                assert!(
                    entity.iter().any(|e| text[at..].starts_with(e)),
                    "raw & in {text:?}"
                );
            }
        }
        assert!(stack.is_empty(), "unclosed tags {stack:?}");
    }

    fn op(kind: OpType, invoke_ms: u64, latency_ms: u64) -> Op {
        Op::new(
            1,
            kind,
            Func::Read {
                key: "k".into(),
                value: None,
            },
            invoke_ms * 1_000_000,
            (invoke_ms + latency_ms) * 1_000_000,
        )
    }

    #[test]
    fn draws_every_op_the_nemesis_and_the_legend() {
        let ops = vec![
            op(OpType::Ok, 0, 2),
            op(OpType::Ok, 1500, 3),
            op(OpType::Info, 2000, 2000),
            op(OpType::Fail, 4000, 1),
        ];
        let nemesis = vec![Interval {
            start_ns: 1_000_000_000,
            end_ns: 3_000_000_000,
            kind: "partition <majority>".into(),
        }];
        let svg = render("keelson & friends", &ops, &nemesis);
        assert_well_formed(&svg);
        assert!(svg.starts_with("<svg"));
        assert_eq!(
            svg.matches("<circle cx").count(),
            4 + 3,
            "four points, three legend dots"
        );
        assert_eq!(
            svg.matches(r#"class="nemesis""#).count(),
            2,
            "one band per panel"
        );
        assert!(svg.contains("partition &lt;majority&gt;"));
        assert!(svg.contains("keelson &amp; friends"));
        for series in ["rate-ok", "rate-info", "rate-fail"] {
            assert!(svg.contains(series), "{series}");
        }
        // The info op's 2 s latency sits above the ok ops' few milliseconds.
        let ys: Vec<f64> = svg
            .lines()
            .filter(|l| l.starts_with("<circle cx") && l.contains("r=\"1.6\""))
            .map(|l| {
                l.split("cy=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(ys[2] < ys[0] && ys[2] < ys[1], "{ys:?}");
    }

    #[test]
    fn an_empty_history_still_draws_axes() {
        let svg = render("nothing", &[], &[]);
        assert_well_formed(&svg);
        assert!(svg.contains("latency (ms)") && svg.contains("throughput (ops/s)"));
    }

    #[test]
    fn large_histories_are_sampled() {
        let ops: Vec<Op> = (0..(MAX_POINTS as u64 * 3))
            .map(|i| op(OpType::Ok, i / 10, 1))
            .collect();
        let svg = render("big", &ops, &[]);
        let points = svg.matches(r#"r="1.6""#).count();
        assert!((MAX_POINTS / 2..=MAX_POINTS).contains(&points), "{points}");
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(60.0, 10.0), 10.0);
        assert_eq!(tick_step(300.0, 10.0), 50.0);
        assert_eq!(tick_step(7.0, 4.0), 2.0);
    }
}
