//! A small SVG line chart, written by hand: panels side by side, each with log-scaled axes
//! (decade ticks and grid), one polyline with point markers per series, and a shared legend.
//!
//! Written out as text rather than through a plotting crate: what the benchmarks need is two
//! panels of a few points, and the output must be a plain, diffable file that a browser or a
//! Markdown viewer shows as it is. Every piece of text is XML-escaped ([`escape`]); points that
//! a log scale cannot show (zero, negative, not finite) are left out rather than drawn at a
//! made-up place. Each marker carries a `<title>`, so hovering shows the exact value.

use std::fmt::Write as _;

/// One line of a panel.
#[derive(Clone, Debug)]
pub(crate) struct Series {
    pub(crate) name: String,
    /// A CSS colour.
    pub(crate) color: &'static str,
    /// (x, y), drawn in x order.
    pub(crate) points: Vec<(f64, f64)>,
}

/// One chart: axes, labels and its series.
#[derive(Clone, Debug)]
pub(crate) struct Panel {
    pub(crate) title: String,
    pub(crate) x_label: String,
    pub(crate) y_label: String,
    pub(crate) series: Vec<Series>,
}

const PANEL_W: f64 = 460.0;
const PANEL_H: f64 = 340.0;
/// Plot area margins inside a panel: left (tick labels), right, top (title), bottom (axis label).
const ML: f64 = 72.0;
const MR: f64 = 16.0;
const MT: f64 = 36.0;
const MB: f64 = 52.0;
/// Above the panels: the title and the legend.
const HEAD: f64 = 64.0;

/// Escapes text for use in XML content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A log10 axis covering whole decades: [10^lo, 10^hi].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LogAxis {
    lo: i32,
    hi: i32,
}

impl LogAxis {
    /// The smallest whole-decade range holding every value (positive, finite ones only);
    /// `None` if there is none.
    pub(crate) fn covering(values: impl IntoIterator<Item = f64>) -> Option<LogAxis> {
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.into_iter().filter(|v| drawable(*v)) {
            min = min.min(v);
            max = max.max(v);
        }
        if min > max {
            return None;
        }
        let lo = min.log10().floor() as i32;
        let hi = (max.log10().ceil() as i32).max(lo + 1);
        Some(LogAxis { lo, hi })
    }

    /// Where `v` falls, from 0 (10^lo) to 1 (10^hi).
    pub(crate) fn fraction(&self, v: f64) -> f64 {
        (v.log10() - self.lo as f64) / (self.hi - self.lo) as f64
    }

    fn decades(&self) -> impl Iterator<Item = i32> {
        self.lo..=self.hi
    }
}

fn drawable(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

/// 10^e as a short label: 1, 10, 100, 1k … 100M, 1G; 0.1, 0.01 below one.
pub(crate) fn decade_label(e: i32) -> String {
    match e {
        e if e < 0 => format!("{}", 10f64.powi(e)),
        0..=2 => format!("{}", 10u64.pow(e as u32)),
        3..=5 => format!("{}k", 10u64.pow(e as u32 - 3)),
        6..=8 => format!("{}M", 10u64.pow(e as u32 - 6)),
        _ => format!("{}G", 10u64.pow(e as u32 - 9)),
    }
}

/// The whole picture: `title` above, a legend of every series name, then the panels in a row.
pub(crate) fn render(title: &str, panels: &[Panel]) -> String {
    let width = PANEL_W * panels.len().max(1) as f64;
    let height = HEAD + PANEL_H;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    legend(&mut s, panels, width);
    for (i, p) in panels.iter().enumerate() {
        panel(&mut s, p, i as f64 * PANEL_W, HEAD);
    }
    s.push_str("</svg>\n");
    s
}

fn legend(s: &mut String, panels: &[Panel], width: f64) {
    let mut names: Vec<(&str, &str)> = Vec::new();
    for ser in panels.iter().flat_map(|p| &p.series) {
        if !names.iter().any(|(n, _)| *n == ser.name) {
            names.push((&ser.name, ser.color));
        }
    }
    let step = 140.0;
    let mut x = width / 2.0 - step * names.len() as f64 / 2.0;
    for (name, color) in names {
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="44" x2="{}" y2="44" stroke="{color}" stroke-width="2.5"/><circle cx="{}" cy="44" r="3.5" fill="{color}"/><text x="{}" y="48">{}</text>"#,
            x + 28.0,
            x + 14.0,
            x + 34.0,
            escape(name)
        );
        x += step;
    }
}

fn panel(s: &mut String, p: &Panel, left: f64, top: f64) {
    let (x0, y0) = (left + ML, top + MT);
    let (w, h) = (PANEL_W - ML - MR, PANEL_H - MT - MB);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="13" font-weight="bold">{}</text>"#,
        x0 + w / 2.0,
        top + 20.0,
        escape(&p.title)
    );
    let all = || p.series.iter().flat_map(|ser| ser.points.iter());
    let (Some(xa), Some(ya)) = (
        LogAxis::covering(all().map(|pt| pt.0)),
        LogAxis::covering(all().map(|pt| pt.1)),
    ) else {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">no data</text>"#,
            x0 + w / 2.0,
            y0 + h / 2.0
        );
        return;
    };
    let px = |v: f64| x0 + xa.fraction(v) * w;
    let py = |v: f64| y0 + h - ya.fraction(v) * h;
    for e in xa.decades() {
        let x = px(10f64.powi(e));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            y0 + h,
            y0 + h + 16.0,
            decade_label(e)
        );
    }
    for e in ya.decades() {
        let y = py(10f64.powi(e));
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + w,
            x0 - 6.0,
            y + 4.0,
            decade_label(e)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        x0 + w / 2.0,
        y0 + h + 38.0,
        escape(&p.x_label)
    );
    let (lx, ly) = (left + 16.0, y0 + h / 2.0);
    let _ = writeln!(
        s,
        r#"<text x="{lx}" y="{ly}" text-anchor="middle" transform="rotate(-90 {lx} {ly})">{}</text>"#,
        escape(&p.y_label)
    );
    for ser in &p.series {
        let mut pts: Vec<(f64, f64)> = ser
            .points
            .iter()
            .copied()
            .filter(|&(x, y)| drawable(x) && drawable(y))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let line: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2.5"/>"#,
            line.join(" "),
            ser.color
        );
        for &(x, y) in &pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"><title>{}</title></circle>"#,
                px(x),
                py(y),
                ser.color,
                escape(&format!("{}: {x} → {y:.3}", ser.name))
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Checks that `xml` is well-formed enough for any XML parser: one root element, every
    /// tag closed in order, attributes quoted, and no bare `<` or `&` in text or values.
    pub(crate) fn well_formed(xml: &str) -> Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut roots = 0;
        let mut rest = xml;
        while !rest.is_empty() {
            let Some(open) = rest.find('<') else {
                check_text(rest)?;
                break;
            };
            check_text(&rest[..open])?;
            if !rest[..open].trim().is_empty() && stack.is_empty() {
                return Err("text outside the root".into());
            }
            let close = rest[open..].find('>').ok_or("unclosed tag")? + open;
            let tag = &rest[open + 1..close];
            rest = &rest[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                match stack.pop() {
                    Some(top) if top == name => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
                continue;
            }
            let (body, self_closing) = match tag.strip_suffix('/') {
                Some(b) => (b, true),
                None => (tag, false),
            };
            let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
            let name = &body[..name_end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("bad tag name in <{tag}>"));
            }
            check_attributes(&body[name_end..])?;
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(name.to_string());
            }
        }
        match (roots, stack.is_empty()) {
            (1, true) => Ok(()),
            (n, true) => Err(format!("{n} root elements")),
            (_, false) => Err(format!("unclosed: {stack:?}")),
        }
    }

    fn check_text(t: &str) -> Result<(), String> {
        if t.contains('<') || t.contains('>') {
            return Err(format!("bare angle bracket in {t:?}"));
        }
        let mut parts = t.split('&').skip(1);
        parts.try_for_each(|p| {
            let ent = p.split(';').next().unwrap_or("");
            let known = ["amp", "lt", "gt", "quot", "apos"].contains(&ent);
            if p.contains(';') && (known || ent.starts_with('#')) {
                Ok(())
            } else {
                Err(format!("bare & in {t:?}"))
            }
        })
    }

    fn check_attributes(mut a: &str) -> Result<(), String> {
        loop {
            a = a.trim_start();
            if a.is_empty() {
                return Ok(());
            }
            let eq = a
                .find('=')
                .ok_or(format!("attribute without value: {a:?}"))?;
            let name = &a[..eq];
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':')
            {
                return Err(format!("bad attribute name {name:?}"));
            }
            let v = a[eq + 1..]
                .strip_prefix('"')
                .ok_or(format!("unquoted value of {name}"))?;
            let end = v.find('"').ok_or(format!("unterminated value of {name}"))?;
            check_text(&v[..end])?;
            a = &v[end + 1..];
        }
    }

    #[test]
    fn the_checker_catches_what_it_is_for() {
        assert!(well_formed(r#"<svg a="1"><g><t>x &amp; y</t></g></svg>"#).is_ok());
        assert!(well_formed("<svg><g></svg></g>").is_err(), "crossed tags");
        assert!(well_formed("<svg><g></svg>").is_err(), "unclosed");
        assert!(well_formed("<svg>a & b</svg>").is_err(), "bare ampersand");
        assert!(well_formed("<svg a=1/>").is_err(), "unquoted");
        assert!(well_formed("<svg/><svg/>").is_err(), "two roots");
    }

    fn panel_of(points: Vec<(f64, f64)>) -> Panel {
        Panel {
            title: "events/s <& \"quoted\">".into(),
            x_label: "watchers".into(),
            y_label: "p99 ms".into(),
            series: vec![
                Series {
                    name: "etcd".into(),
                    color: "#4e79a7",
                    points: points.clone(),
                },
                Series {
                    name: "keelson".into(),
                    color: "#e15759",
                    points: points.iter().map(|&(x, y)| (x, y * 3.0)).collect(),
                },
            ],
        }
    }

    #[test]
    fn a_chart_is_well_formed_and_draws_every_point() {
        let pts = vec![(10.0, 5e3), (100.0, 5e4), (1000.0, 4e5), (10000.0, 6e5)];
        let svg = render(
            "Watch <fan-out> & more",
            &[panel_of(pts.clone()), panel_of(pts)],
        );
        well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert_eq!(
            svg.matches("<polyline").count(),
            4,
            "two series in two panels"
        );
        // 16 points, plus one marker per series in the legend.
        assert_eq!(svg.matches("<circle").count(), 16 + 2);
        assert!(svg.contains("Watch &lt;fan-out&gt; &amp; more"));
        assert!(
            svg.contains(">10k<") && svg.contains(">1M<"),
            "decade labels"
        );
    }

    #[test]
    fn undrawable_points_are_left_out() {
        let svg = render(
            "t",
            &[panel_of(vec![
                (10.0, 0.0),
                (100.0, f64::NAN),
                (1000.0, 5.0),
            ])],
        );
        well_formed(&svg).unwrap();
        assert_eq!(svg.matches("<circle").count(), 2 + 2);
        let empty = render("t", &[panel_of(vec![])]);
        well_formed(&empty).unwrap();
        assert!(empty.contains("no data"));
    }

    #[test]
    fn log_axes_cover_whole_decades() {
        let a = LogAxis::covering([12.0, 950.0, 0.0, -1.0]).unwrap();
        assert_eq!(a, LogAxis { lo: 1, hi: 3 });
        assert_eq!(a.fraction(10.0), 0.0);
        assert_eq!(a.fraction(1000.0), 1.0);
        assert!((a.fraction(100.0) - 0.5).abs() < 1e-12);
        assert_eq!(
            LogAxis::covering([100.0]).unwrap(),
            LogAxis { lo: 2, hi: 3 }
        );
        assert_eq!(LogAxis::covering([f64::NAN]), None);
        let labels: Vec<String> = [-1, 0, 2, 3, 5, 6, 9]
            .iter()
            .map(|&e| decade_label(e))
            .collect();
        assert_eq!(labels, ["0.1", "1", "100", "1k", "100k", "1M", "1G"]);
    }
}
