//! Differential compatibility test: the same etcdctl command lines against a
//! fresh real etcd 3.4 and a fresh `keelson store`, with identical output
//! required after normalization (see `common/normalize.rs`).
//!
//! Run:
//!
//! ```text
//! cargo test --test etcdctl_diff                         # etcd vs keelson
//! KEELSON_DIFF_SELF=1 cargo test --test etcdctl_diff     # etcd vs etcd (harness self-check)
//! cargo test --test etcdctl_diff -- --nocapture kv       # one scenario, with progress output
//! ```
//!
//! Needs `etcd` and `etcdctl` 3.4 (`apt-get install -y etcd-server
//! etcd-client`). Without them every scenario FAILS, unless
//! `KEELSON_SKIP_ETCD=1` is set (then it prints "SKIPPED" and passes).
//!
//! Each `#[test]` is one scenario on its own fresh pair of servers (the two
//! sides run concurrently). Every step records stdout, stderr and how the
//! process ended; after normalization each step must be identical on both
//! sides. On failure the message names every differing step with a line diff,
//! and full transcripts (normalized and raw) of both sides are written to
//! `target/tmp/etcdctl-diff/<scenario>.<side>.{norm,raw}.txt`.
//!
//! Other knobs: `KEELSON_KEEP_TMP=1` keeps the servers' temp dirs (data and
//! `server.log`), `KEELSON_ETCD_BIN` / `KEELSON_ETCDCTL_BIN` pick binaries.

// Each test crate uses only some of the shared helpers.
#[allow(dead_code)]
mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use common::etcdctl::{Etcdctl, DEFAULT_TIMEOUT};
use common::normalize::{normalize, NormCtx, Stream};
use common::proc::{End, LineMatch, Outcome, Running, StopAfter};
use common::server::{require_etcd_tools, Server, ServerKind};

/// Limit for a watch to print what it is expected to print.
const WATCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Time budget of one side of one scenario; remaining steps are skipped
/// (and reported) when a server is so slow that it is used up.
const SIDE_BUDGET: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------
// Scenario model
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Action {
    /// Run etcdctl to completion, optionally feeding stdin.
    Run {
        args: Vec<String>,
        stdin: Option<Vec<u8>>,
    },
    /// Run a never-ending command (watch) until `stop` is satisfied, it
    /// exits, or `timeout`.
    Stream {
        args: Vec<String>,
        stop: Option<StopAfter>,
        timeout: Duration,
    },
    /// Start a watch in the background; its output is compared at the
    /// matching `Collect` step.
    Spawn {
        name: String,
        args: Vec<String>,
        stop: Option<StopAfter>,
        timeout: Duration,
    },
    Collect {
        name: String,
    },
}

#[derive(Clone, Debug)]
struct Step {
    action: Action,
    /// Name for extra assertions on raw output (e.g. hashes).
    label: Option<&'static str>,
    /// Expected success (`Some(true)`) or failure (`Some(false)`) on the
    /// reference etcd; guards the scenario itself against drifting.
    expect_ok: Option<bool>,
}

struct Scenario {
    name: &'static str,
    steps: Vec<Step>,
}

/// Whole-line match for [`StopAfter`].
fn line(s: &str) -> LineMatch {
    LineMatch::Equals(s.to_string())
}

/// Substring match for [`StopAfter`].
fn has(s: &str) -> LineMatch {
    LineMatch::Contains(s.to_string())
}

impl Scenario {
    fn new(name: &'static str) -> Self {
        Scenario {
            name,
            steps: Vec::new(),
        }
    }

    fn push(&mut self, action: Action) -> &mut Self {
        self.steps.push(Step {
            action,
            label: None,
            expect_ok: None,
        });
        self
    }

    /// `etcdctl <cmdline>`; the line is split like a shell would (quotes
    /// `'…'` / `"…"`, no expansion). Templates: `{L1}`, `{L2}`… = the n-th
    /// lease ID seen on that side (as `%016x`), `{TMP}` = the side's temp dir.
    fn ctl(&mut self, cmdline: &str) -> &mut Self {
        self.push(Action::Run {
            args: split_cmdline(cmdline),
            stdin: None,
        })
    }

    /// [`Scenario::ctl`] that must succeed on the reference etcd.
    fn ctl_ok(&mut self, cmdline: &str) -> &mut Self {
        self.ctl(cmdline).ok()
    }

    /// [`Scenario::ctl`] that must fail on the reference etcd.
    fn ctl_err(&mut self, cmdline: &str) -> &mut Self {
        self.ctl(cmdline).err()
    }

    fn ctl_stdin(&mut self, cmdline: &str, stdin: impl AsRef<[u8]>) -> &mut Self {
        self.push(Action::Run {
            args: split_cmdline(cmdline),
            stdin: Some(stdin.as_ref().to_vec()),
        })
    }

    /// A watch that is stopped once a line matching `until` and then
    /// `extra` more lines were printed.
    fn watch(&mut self, cmdline: &str, until: LineMatch, extra: usize) -> &mut Self {
        self.push(Action::Stream {
            args: split_cmdline(cmdline),
            stop: Some(StopAfter {
                line: until,
                extra_lines: extra,
            }),
            timeout: WATCH_TIMEOUT,
        })
    }

    /// A watch that is expected to end by itself (e.g. canceled by the server).
    fn watch_to_exit(&mut self, cmdline: &str) -> &mut Self {
        self.push(Action::Stream {
            args: split_cmdline(cmdline),
            stop: None,
            timeout: WATCH_TIMEOUT,
        })
    }

    fn spawn_watch(
        &mut self,
        name: &str,
        cmdline: &str,
        until: LineMatch,
        extra: usize,
    ) -> &mut Self {
        self.push(Action::Spawn {
            name: name.to_string(),
            args: split_cmdline(cmdline),
            stop: Some(StopAfter {
                line: until,
                extra_lines: extra,
            }),
            timeout: WATCH_TIMEOUT * 2,
        })
    }

    fn collect(&mut self, name: &str) -> &mut Self {
        self.push(Action::Collect {
            name: name.to_string(),
        })
    }

    fn label(&mut self, label: &'static str) -> &mut Self {
        self.steps.last_mut().expect("a step").label = Some(label);
        self
    }

    fn ok(&mut self) -> &mut Self {
        self.steps.last_mut().expect("a step").expect_ok = Some(true);
        self
    }

    fn err(&mut self) -> &mut Self {
        self.steps.last_mut().expect("a step").expect_ok = Some(false);
        self
    }
}

/// Minimal shell-like split: whitespace separates, `'…'` and `"…"` quote
/// (so `''` is an empty argument), `\` escapes inside `"…"` and outside.
fn split_cmdline(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => cur.extend(chars.next()),
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

// ---------------------------------------------------------------------------
// Running one side
// ---------------------------------------------------------------------------

struct StepRecord {
    /// Arguments as run (templates filled in).
    args: Vec<String>,
    stdin_len: Option<usize>,
    /// Small UTF-8 stdin (e.g. a txn), shown in reports and transcripts.
    stdin_text: Option<String>,
    /// `None` for a background start.
    outcome: Option<Outcome>,
    label: Option<&'static str>,
}

#[derive(PartialEq, Eq)]
struct Normalized {
    stdout: String,
    stderr: String,
    end: String,
}

struct SideRun {
    who: String,
    ctx: NormCtx,
    records: Vec<StepRecord>,
    /// Set when the server died or could not be queried mid-scenario.
    aborted: Option<String>,
    /// `(path, size)` of every `snapshot save` target after the step.
    snapshots: Vec<(String, Option<u64>)>,
    log_tail: String,
}

impl SideRun {
    fn normalized(&self, i: usize) -> Option<Normalized> {
        let r = self.records.get(i)?;
        // The arguments as run select the command-specific rules; lease IDs
        // and paths filled into them do not matter for that.
        Some(match &r.outcome {
            None => Normalized {
                stdout: String::new(),
                stderr: String::new(),
                end: "started in background".into(),
            },
            Some(o) => Normalized {
                stdout: normalize(&r.args, Stream::Stdout, &o.stdout_str(), &self.ctx),
                stderr: normalize(&r.args, Stream::Stderr, &o.stderr_str(), &self.ctx),
                end: o.end.to_string(),
            },
        })
    }

    fn shown(&self, i: usize) -> String {
        match self.records.get(i) {
            Some(r) => show_cmd(&r.args, r.stdin_len),
            None => "(not run)".into(),
        }
    }

    fn by_label(&self, label: &str) -> Option<&StepRecord> {
        self.records.iter().find(|r| r.label == Some(label))
    }
}

fn show_cmd(args: &[String], stdin_len: Option<usize>) -> String {
    let mut s = String::from("etcdctl");
    for a in args {
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
            let _ = write!(s, " '{}'", a.replace('\'', "'\\''"));
        } else {
            let _ = write!(s, " {a}");
        }
    }
    if let Some(n) = stdin_len {
        let _ = write!(s, "  <stdin: {n} bytes>");
    }
    s
}

fn fill_templates(args: &[String], ctx: &NormCtx, tmp: &str) -> Vec<String> {
    args.iter()
        .map(|a| {
            let mut a = a.replace("{TMP}", tmp);
            let mut n = 1;
            while a.contains('{') && n <= 20 {
                let key = format!("{{L{n}}}");
                if a.contains(&key) {
                    let v = match ctx.leases.get(n - 1) {
                        Some(id) => format!("{id:016x}"),
                        None => format!("MISSING-LEASE-{n}"),
                    };
                    a = a.replace(&key, &v);
                }
                n += 1;
            }
            a
        })
        .collect()
}

/// Learn member and cluster ID from `endpoint status -w json`, falling back
/// to `member list -w json`.
fn learn_ids(ctl: &Etcdctl, ctx: &mut NormCtx) {
    let nonzero = |v: &serde_json::Value| v.as_u64().filter(|&x| x != 0);
    let o = ctl.run(&["endpoint", "status", "-w", "json"]);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&o.stdout) {
        let h = &v[0]["Status"]["header"];
        ctx.member_id = nonzero(&h["member_id"]);
        ctx.cluster_id = nonzero(&h["cluster_id"]);
    }
    if ctx.member_id.is_none() || ctx.cluster_id.is_none() {
        let o = ctl.run(&["member", "list", "-w", "json"]);
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&o.stdout) {
            let h = &v["header"];
            ctx.member_id = ctx.member_id.or_else(|| nonzero(&h["member_id"]));
            ctx.cluster_id = ctx.cluster_id.or_else(|| nonzero(&h["cluster_id"]));
        }
    }
}

/// Remember lease IDs printed by `lease grant` (simple or json) and new ones
/// listed by `lease list` (e.g. the session lease of `etcdctl lock`).
fn capture_leases(args: &[String], o: &Outcome, ctx: &mut NormCtx) {
    let out = o.stdout_str();
    let mut found: Vec<i64> = Vec::new();
    if args.starts_with(&["lease".into(), "grant".into()]) {
        for l in out.lines() {
            if let Some(rest) = l.strip_prefix("lease ") {
                if let Some(hex) = rest.split_whitespace().next() {
                    found.extend(i64::from_str_radix(hex, 16));
                }
            }
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(out.trim()) {
            found.extend(v["ID"].as_i64());
        }
    } else if args.starts_with(&["lease".into(), "list".into()]) {
        if out.starts_with("found ") {
            for l in out.lines().skip(1) {
                found.extend(i64::from_str_radix(l.trim(), 16));
            }
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(out.trim()) {
            if let Some(a) = v["leases"].as_array() {
                found.extend(a.iter().filter_map(|e| e["id"].as_i64()));
            }
        }
        // Several unknown leases at once would be numbered by value, which
        // need not match the other side; scenarios avoid that.
        found.sort_unstable();
    }
    for id in found {
        if id != 0 {
            ctx.add_lease(id);
        }
    }
}

fn run_side(kind: ServerKind, who: &str, sc: &Scenario) -> Result<SideRun, String> {
    let mut server = Server::start(kind, &[]).map_err(|e| format!("{who} did not start: {e}"))?;
    let ctl = Etcdctl::new(&server.endpoint());
    let tmp = server.dir().to_string_lossy().into_owned();
    let mut ctx = NormCtx::for_server(&server.endpoint(), &server.peer_url(), &tmp);
    learn_ids(&ctl, &mut ctx);
    let mut run = SideRun {
        who: who.to_string(),
        ctx,
        records: Vec::new(),
        aborted: None,
        snapshots: Vec::new(),
        log_tail: String::new(),
    };
    let mut background: HashMap<String, (Running, Option<StopAfter>, Duration, Vec<String>)> =
        HashMap::new();
    let started = std::time::Instant::now();
    for (i, step) in sc.steps.iter().enumerate() {
        if started.elapsed() > SIDE_BUDGET {
            run.aborted = Some(format!(
                "{who}: time budget of {SIDE_BUDGET:?} used up before step {}",
                i + 1
            ));
            break;
        }
        let stdin_text = match &step.action {
            Action::Run { stdin: Some(b), .. } if b.len() <= 2048 => {
                String::from_utf8(b.clone()).ok()
            }
            _ => None,
        };
        let (args, stdin_len, outcome) = match &step.action {
            Action::Run { args, stdin } => {
                let a = fill_templates(args, &run.ctx, &tmp);
                let o = ctl.run_with(&a, stdin.clone(), DEFAULT_TIMEOUT, None);
                (a, stdin.as_ref().map(Vec::len), Some(o))
            }
            Action::Stream {
                args,
                stop,
                timeout,
            } => {
                let a = fill_templates(args, &run.ctx, &tmp);
                let o = ctl.run_with(&a, None, *timeout, stop.as_ref());
                (a, None, Some(o))
            }
            Action::Spawn {
                name,
                args,
                stop,
                timeout,
            } => {
                let a = fill_templates(args, &run.ctx, &tmp);
                let r = ctl.spawn(&a, None);
                background.insert(name.clone(), (r, stop.clone(), *timeout, a.clone()));
                (a, None, None)
            }
            Action::Collect { name } => {
                let (r, stop, timeout, a) = background.remove(name).unwrap_or_else(|| {
                    panic!("scenario {}: collect of unknown watch {name}", sc.name)
                });
                let o = r.finish(timeout, stop.as_ref());
                (a, None, Some(o))
            }
        };
        if let Some(o) = &outcome {
            capture_leases(&args, o, &mut run.ctx);
            if args.starts_with(&["snapshot".into(), "save".into()]) {
                if let Some(p) = args.get(2) {
                    run.snapshots
                        .push((p.clone(), std::fs::metadata(p).ok().map(|m| m.len())));
                }
            }
        }
        run.records.push(StepRecord {
            args,
            stdin_len,
            stdin_text,
            outcome,
            label: step.label,
        });
        if let Some(status) = server.exited() {
            run.aborted = Some(format!("{who} exited ({status}) during step {}", i + 1));
            break;
        }
    }
    for (_, (r, ..)) in background {
        r.kill();
    }
    run.log_tail = server.log_tail(60);
    server.kill();
    Ok(run)
}

// ---------------------------------------------------------------------------
// Comparing the two sides
// ---------------------------------------------------------------------------

/// The side compared against the reference etcd: keelson, or a second etcd
/// with `KEELSON_DIFF_SELF=1`.
fn other_side() -> (ServerKind, &'static str) {
    if std::env::var("KEELSON_DIFF_SELF").is_ok_and(|v| v == "1") {
        (ServerKind::Etcd, "etcd#2")
    } else {
        (ServerKind::Keelson, "keelson")
    }
}

fn self_check() -> bool {
    other_side().0 == ServerKind::Etcd
}

/// Result of running one scenario on both sides.
struct Pair {
    name: &'static str,
    reference: SideRun,
    other: SideRun,
    problems: Vec<String>,
}

impl Pair {
    /// Panic with every collected problem, or report success.
    fn finish(self) {
        if self.problems.is_empty() {
            eprintln!(
                "[{}] {} steps identical: {} vs {}",
                self.name,
                self.reference.records.len(),
                self.reference.who,
                self.other.who
            );
            return;
        }
        let mut msg = format!(
            "[{}] {} problem(s), {} vs {} (transcripts: {}):\n\n",
            self.name,
            self.problems.len(),
            self.reference.who,
            self.other.who,
            transcript_dir().display()
        );
        for p in &self.problems {
            msg.push_str(p);
            msg.push('\n');
        }
        if !self.other.log_tail.is_empty() {
            let _ = write!(
                msg,
                "--- last lines of the {} server log ---\n{}\n",
                self.other.who, self.other.log_tail
            );
        }
        panic!("{msg}");
    }
}

fn transcript_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("etcdctl-diff")
}

fn write_transcripts(sc: &Scenario, side: &SideRun) {
    let dir = transcript_dir();
    let _ = std::fs::create_dir_all(&dir);
    let who = side.who.replace('#', "");
    let mut norm = String::new();
    let mut raw = String::new();
    for i in 0..side.records.len() {
        let r = &side.records[i];
        let n = side.normalized(i).expect("record");
        let stdin = match &r.stdin_text {
            Some(t) => format!("--- stdin\n{t}"),
            None => String::new(),
        };
        let _ = write!(
            norm,
            "### step {}: {}\n{stdin}--- stdout\n{}\n--- stderr\n{}\n--- {}\n\n",
            i + 1,
            side.shown(i),
            n.stdout,
            n.stderr,
            n.end
        );
        match &r.outcome {
            Some(o) => {
                let _ = write!(
                    raw,
                    "### step {}: {}\n{stdin}--- stdout\n{}\n--- stderr\n{}\n--- {}\n\n",
                    i + 1,
                    side.shown(i),
                    o.stdout_str(),
                    o.stderr_str(),
                    o.end
                );
            }
            None => {
                let _ = write!(
                    raw,
                    "### step {}: {}\n--- started in background\n\n",
                    i + 1,
                    side.shown(i)
                );
            }
        }
    }
    if let Some(a) = &side.aborted {
        let _ = writeln!(norm, "### ABORTED: {a}");
        let _ = writeln!(raw, "### ABORTED: {a}");
    }
    let _ = std::fs::write(dir.join(format!("{}.{who}.norm.txt", sc.name)), norm);
    let _ = std::fs::write(dir.join(format!("{}.{who}.raw.txt", sc.name)), raw);
}

const MAX_LINE: usize = 300;

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Shorten a long line to a window starting near byte `focus` (where it
/// differs from its counterpart).
fn clip(l: &str, focus: usize) -> String {
    if l.len() <= MAX_LINE {
        return l.to_string();
    }
    let start = floor_boundary(l, focus.saturating_sub(80));
    let end = floor_boundary(l, start + MAX_LINE);
    format!(
        "{}{}{} ({} bytes)",
        if start > 0 { "…" } else { "" },
        &l[start..end],
        if end < l.len() { "…" } else { "" },
        l.len()
    )
}

fn first_difference(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

/// Line diff (LCS) of `a` (reference, `-`) and `b` (other, `+`), context
/// lines prefixed with two spaces; long unchanged runs are elided, long
/// lines are shown around their first difference.
fn line_diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.split('\n').collect();
    let b: Vec<&str> = b.split('\n').collect();
    let (n, m) = (a.len(), b.len());
    if n * m > 4_000_000 {
        return format!("    (outputs too large to diff: {n} vs {m} lines)\n");
    }
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    // Focus of each changed line: where it first differs from the line it
    // replaces (k-th '-' of a run paired with the k-th '+').
    let mut focus = vec![0usize; ops.len()];
    let mut k = 0;
    while k < ops.len() {
        let mut minus = Vec::new();
        while k < ops.len() && ops[k].0 == '-' {
            minus.push(k);
            k += 1;
        }
        let mut plus = Vec::new();
        while k < ops.len() && ops[k].0 == '+' {
            plus.push(k);
            k += 1;
        }
        for (x, y) in minus.iter().zip(&plus) {
            let f = first_difference(ops[*x].1, ops[*y].1);
            focus[*x] = f;
            focus[*y] = f;
        }
        if minus.is_empty() && plus.is_empty() {
            k += 1;
        }
    }
    let near_change = |k: usize| {
        let lo = k.saturating_sub(2);
        let hi = (k + 3).min(ops.len());
        ops[lo..hi].iter().any(|(c, _)| *c != ' ')
    };
    let mut out = String::new();
    let mut elided = false;
    for (k, (c, l)) in ops.iter().enumerate() {
        if *c == ' ' && !near_change(k) {
            if !elided {
                out.push_str("    …\n");
                elided = true;
            }
            continue;
        }
        elided = false;
        let _ = writeln!(out, "  {c} {}", clip(l, focus[k]));
    }
    out
}

fn compare(sc: &Scenario, a: &SideRun, b: &SideRun) -> Vec<String> {
    let mut problems = Vec::new();
    for i in 0..sc.steps.len() {
        let (na, nb) = (a.normalized(i), b.normalized(i));
        if na == nb {
            continue;
        }
        let mut p = format!("step {}/{}: {}\n", i + 1, sc.steps.len(), a.shown(i));
        if let Some(t) = a.records.get(i).and_then(|r| r.stdin_text.as_ref()) {
            if t.len() <= 600 {
                p.push_str("  stdin:\n");
                for l in t.lines() {
                    let _ = writeln!(p, "    | {l}");
                }
            }
        }
        match (na, nb) {
            (Some(na), Some(nb)) => {
                // Commands differ only by filled-in lease IDs / paths, unless
                // a side could not fill in a template.
                let shown_a = normalize(&[], Stream::Stdout, &a.shown(i), &a.ctx);
                let shown_b = normalize(&[], Stream::Stdout, &b.shown(i), &b.ctx);
                if shown_a != shown_b {
                    let _ = writeln!(p, "  (on {}: {})", b.who, b.shown(i));
                }
                if na.end != nb.end {
                    let _ = writeln!(p, "  ended: {}: {} | {}: {}", a.who, na.end, b.who, nb.end);
                }
                for (what, x, y) in [
                    ("stdout", &na.stdout, &nb.stdout),
                    ("stderr", &na.stderr, &nb.stderr),
                ] {
                    if x != y {
                        let _ = writeln!(p, "  {what} (- {}, + {}):", a.who, b.who);
                        p.push_str(&line_diff(x, y));
                    }
                }
            }
            (Some(_), None) => {
                let _ = writeln!(
                    p,
                    "  not run on {}: {}",
                    b.who,
                    b.aborted.as_deref().unwrap_or("?")
                );
            }
            (None, Some(_)) => {
                let _ = writeln!(
                    p,
                    "  not run on {}: {}",
                    a.who,
                    a.aborted.as_deref().unwrap_or("?")
                );
            }
            (None, None) => unreachable!(),
        }
        problems.push(p);
    }
    problems
}

/// Sanity of the scenario on the reference side: expected successes and
/// failures, and watches that really printed what they wait for.
fn check_reference(sc: &Scenario, a: &SideRun) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(ab) = &a.aborted {
        problems.push(format!("reference aborted: {ab}"));
    }
    for (i, (step, rec)) in sc.steps.iter().zip(&a.records).enumerate() {
        let Some(o) = &rec.outcome else { continue };
        let has_stop = match &step.action {
            Action::Stream { stop, .. } => stop.is_some(),
            Action::Collect { name } => sc.steps.iter().any(
                |s| matches!(&s.action, Action::Spawn { name: n, stop: Some(_), .. } if n == name),
            ),
            _ => false,
        };
        let to_exit = matches!(&step.action, Action::Stream { stop: None, .. });
        if to_exit && !matches!(o.end, End::Exited(_)) {
            problems.push(format!(
                "scenario bug: step {} `{}` on the reference etcd was expected to exit by itself ({})",
                i + 1,
                a.shown(i),
                o.end
            ));
        }
        if has_stop && o.end != End::Stopped {
            problems.push(format!(
                "scenario bug: step {} `{}` on the reference etcd did not print its stop line ({})",
                i + 1,
                a.shown(i),
                o.end
            ));
        }
        if let Some(want) = step.expect_ok {
            if o.success() != want {
                problems.push(format!(
                    "scenario bug: step {} `{}` was expected to {} on the reference etcd but ended with {}:\n{}{}",
                    i + 1,
                    a.shown(i),
                    if want { "succeed" } else { "fail" },
                    o.end,
                    o.stdout_str(),
                    o.stderr_str()
                ));
            }
        }
    }
    problems
}

/// Run `sc` on a fresh reference etcd and a fresh other side (concurrently),
/// compare. `None` when skipped (etcd missing and `KEELSON_SKIP_ETCD=1`).
fn run_pair(sc: Scenario) -> Option<Pair> {
    if !require_etcd_tools(&format!("etcdctl_diff::{}", sc.name)) {
        return None;
    }
    let (kind, who) = other_side();
    eprintln!(
        "[{}] etcd vs {who}, {} steps; {}",
        sc.name,
        sc.steps.len(),
        Etcdctl::new("127.0.0.1:1").version()
    );
    let (ra, rb) = thread::scope(|s| {
        let ha = s.spawn(|| run_side(ServerKind::Etcd, "etcd", &sc));
        let hb = s.spawn(|| run_side(kind, who, &sc));
        (
            ha.join().expect("reference side panicked"),
            hb.join().expect("other side panicked"),
        )
    });
    let a = ra.unwrap_or_else(|e| panic!("[{}] reference etcd failed: {e}", sc.name));
    let b = rb.unwrap_or_else(|e| panic!("[{}] {e}", sc.name));
    write_transcripts(&sc, &a);
    write_transcripts(&sc, &b);
    let mut problems = check_reference(&sc, &a);
    problems.extend(compare(&sc, &a, &b));
    Some(Pair {
        name: sc.name,
        reference: a,
        other: b,
        problems,
    })
}

fn diff_test(sc: Scenario) {
    if let Some(p) = run_pair(sc) {
        p.finish();
    }
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

#[test]
fn kv() {
    let mut s = Scenario::new("kv");
    s.ctl_ok("put foo bar")
        .ctl("put foo baz --prev-kv")
        .ctl("put foo qux -w json")
        .ctl("put foo/a 1 -w fields")
        .ctl("put foo/b 2")
        .ctl("put foo/c 3")
        .ctl("put fop 4")
        .ctl("put zoo 5")
        .ctl("put a 6")
        .ctl("put foo/b 22 --prev-kv -w json")
        .ctl("put foo/b 222 --prev-kv -w fields")
        .ctl("put emptyval ''")
        .ctl_ok("put foo --ignore-value")
        .ctl("get emptyval -w json")
        // single key, formats
        .ctl("get foo")
        .ctl("get foo -w json")
        .ctl("get foo -w fields")
        .ctl("get foo --hex")
        .ctl("get foo --print-value-only")
        // prefix / range / from-key
        .ctl("get foo --prefix")
        .ctl("get foo --prefix -w json")
        .ctl("get foo/ --prefix --keys-only")
        .ctl("get foo/ --prefix --print-value-only")
        .ctl("get foo/a foo/c")
        .ctl("get foo/a foo/c -w json")
        .ctl("get foo/a foo/a")
        .ctl("get '' --from-key")
        .ctl("get fop --from-key --keys-only")
        .ctl("get '' --prefix --keys-only")
        // history
        .ctl("get foo --rev 2")
        .ctl("get foo --rev 3 -w json")
        .ctl("get foo/ --prefix --rev 7")
        .ctl("get foo --rev 1")
        .ctl("get foo --rev -1")
        // limit / more / count
        .ctl("get '' --from-key --limit 2")
        .ctl("get '' --from-key --limit 2 -w json")
        .ctl("get foo/ --prefix --limit 1 --keys-only -w fields")
        .ctl("get foo/ --prefix --limit 3 -w json")
        // sorting
        .ctl("get foo/ --prefix --sort-by=VALUE --order=DESCEND")
        .ctl("get '' --from-key --sort-by=MODIFY")
        .ctl("get '' --from-key --sort-by=MODIFY --order=DESCEND --limit 3")
        .ctl("get '' --from-key --sort-by=CREATE --order=DESCEND")
        .ctl("get '' --from-key --sort-by=VERSION --order=DESCEND --keys-only")
        .ctl("get '' --from-key --sort-by=VALUE --keys-only")
        .ctl("get '' --from-key --order=DESCEND --keys-only")
        .ctl("get '' --from-key --order=ASCEND --keys-only")
        .ctl("get foo/ --prefix --sort-by=KEY --order=DESCEND -w json")
        // serializable
        .ctl("get foo --consistency=s")
        .ctl("get foo/ --prefix --consistency=s -w fields")
        .ctl("get foo --consistency=s --rev 2 -w json")
        // count-only: unknown flag in etcdctl 3.4 (usage error on both
        // sides); compared for real when run with an etcdctl 3.5+.
        .ctl("get foo/ --prefix --count-only")
        // absent keys
        .ctl("get nokey")
        .ctl("get nokey -w json")
        .ctl("get nokey -w fields")
        // deletes
        .ctl("del nokey")
        .ctl("del nokey -w json")
        .ctl("del foo/a")
        .ctl("del foo/ --prefix --prev-kv")
        .ctl("del fop zoo --prev-kv -w json")
        .ctl("del zoo --prev-kv -w fields")
        .ctl("get '' --from-key -w json")
        .ctl("put foo again -w json")
        .ctl("get foo -w json")
        .ctl("del '' --from-key")
        .ctl("get '' --from-key -w json")
        .ctl("put foo reborn")
        .ctl("get foo -w json");
    diff_test(s);
}

/// stdin for `etcdctl txn`: compares, success ops, failure ops, each
/// section ended by an empty line.
fn txn_in(compares: &[&str], success: &[&str], failure: &[&str]) -> String {
    let mut s = String::new();
    for section in [compares, success, failure] {
        for l in section {
            s.push_str(l);
            s.push('\n');
        }
        s.push('\n');
    }
    s
}

#[test]
fn txn() {
    let mut s = Scenario::new("txn");
    s.ctl("put t1 v1")
        .ctl("put t2 v2")
        .ctl_stdin(
            "txn",
            txn_in(
                &[r#"value("t1") = "v1""#],
                &["put t1 v1b", "get t1", "del t2"],
                &["put failed x"],
            ),
        )
        .ok()
        .ctl("get t --prefix -w json")
        .ctl_stdin(
            "txn -w json",
            txn_in(
                &[r#"value("t1") = "nope""#],
                &["put t1 no"],
                &["get t1", "put t3 v3"],
            ),
        )
        .ok()
        .ctl_stdin(
            "txn -w fields",
            txn_in(
                &[
                    r#"ver("t1") = "2""#,
                    r#"c("t1") > "1""#,
                    r#"m("t1") < "100""#,
                ],
                &["get t --prefix", "put t4 x"],
                &[],
            ),
        )
        .ctl_stdin(
            "txn -w json",
            txn_in(
                &[r#"mod("t3") > "0""#, r#"val("t3") != "v3""#],
                &["del t --prefix"],
                &["get t3"],
            ),
        )
        // a missing key compares as zero; VALUE never matches a missing key
        .ctl_stdin(
            "txn",
            txn_in(
                &[r#"ver("missing") = "0""#, r#"create("missing") = "0""#],
                &["put m 1"],
                &[],
            ),
        )
        .ctl_stdin(
            "txn",
            txn_in(&[r#"value("missing2") = """#], &["put m 2"], &["put m 3"]),
        )
        // empty compare list → success branch
        .ctl_stdin("txn", txn_in(&[], &["put e 1", "put f 2"], &[]))
        .ctl_stdin("txn -w json", txn_in(&[], &[], &[]))
        // interactive mode prints prompts on stdout
        .ctl_stdin(
            "txn -i",
            txn_in(&[r#"ver("t1") = "2""#], &["put t1 a"], &["put t1 b"]),
        )
        .ctl_stdin(
            "txn -i -w json",
            txn_in(&[r#"ver("t1") = "2""#], &["put t1 c"], &["put t1 d"]),
        )
        // duplicate keys in one branch (also a put inside a deleted range)
        .ctl_stdin(
            "txn",
            txn_in(&[r#"mod("t1") > "0""#], &["put d 1", "put d 2"], &[]),
        )
        .err()
        .ctl_stdin("txn", txn_in(&[], &["del d --prefix", "put d1 z"], &[]))
        .err()
        .ctl_stdin(
            "txn",
            txn_in(
                &[r#"mod("t1") > "0""#],
                &["put d 1"],
                &["put x 1", "put x 2"],
            ),
        )
        .err()
        // the same key in different branches is fine, and get+put too
        .ctl_stdin(
            "txn",
            txn_in(&[r#"mod("t1") > "0""#], &["get d", "put d 1"], &["put d 2"]),
        )
        .ok()
        // client-side parse error
        .ctl_stdin("txn", txn_in(&["bogus"], &[], &[]))
        .err()
        .ctl("get '' --from-key -w json");
    diff_test(s);
}

#[test]
fn watch() {
    let mut s = Scenario::new("watch");
    s.ctl("put w/a 1") // rev 2
        .ctl("put w/b 2") // 3
        .ctl("put w/a 3") // 4
        .ctl("del w/b") // 5
        .ctl_stdin("txn", txn_in(&[], &["put w/c 4", "put w/d 5"], &[])) // 6: two events, one revision
        .ctl("put other x") // 7
        .ctl("put w/end END") // 8
        // history
        .watch("watch w/ --prefix --rev 1", line("END"), 0)
        .watch("watch w/ --prefix --rev 1 --prev-kv", line("END"), 0)
        .watch("watch --prefix --rev 4 w/", line("END"), 0)
        .watch("watch w/ --prefix --rev 4 -w json", has("\"RU5E\""), 0)
        .watch(
            "watch w/ --prefix --rev 2 --prev-kv -w json",
            has("\"RU5E\""),
            0,
        )
        .watch(
            "watch w/ --prefix --rev 5 -w fields",
            line("\"Value\" : \"END\""),
            1,
        )
        .watch("watch w/a w/c --rev 1", line("DELETE"), 2) // range [w/a, w/c)
        .watch("watch w/end --rev 8", line("END"), 0)
        .watch("watch w/c --rev 6 -w json", has("\"NA==\""), 0)
        .watch("watch '' --prefix --rev 7", line("END"), 0)
        // live: start at a future revision (10), so rev 9 is skipped
        .spawn_watch("live", "watch w/ --prefix --rev 10", line("END2"), 0)
        .spawn_watch(
            "live_prev",
            "watch w/ --prefix --rev 10 --prev-kv",
            line("END2"),
            0,
        )
        .spawn_watch("live_key", "watch w/a --rev 9", line("DELETE"), 2)
        .ctl("put w/a skipped") // 9
        .ctl("put w/a live") // 10
        .ctl_stdin(
            "txn",
            txn_in(&[], &["put w/x 1", "put w/y 2", "del w/c"], &[]),
        ) // 11
        .ctl("del w/ --prefix") // 12
        .ctl("put w/end2 END2") // 13
        .collect("live")
        .collect("live_prev")
        .collect("live_key")
        .ctl("get '' --from-key -w json");
    diff_test(s);
}

#[test]
fn lease() {
    let mut s = Scenario::new("lease");
    s.ctl_ok("lease grant 300") // {L1}
        .ctl_ok("lease grant 600 -w json") // {L2}
        .ctl("lease list")
        .ctl("lease list -w json")
        .ctl_ok("put l/a 1 --lease={L1}")
        .ctl("put l/b 2 --lease={L1} -w json")
        .ctl("put l/c 3 --lease={L2}")
        .ctl("get l/ --prefix -w json")
        .ctl("get l/a -w fields")
        .ctl("lease timetolive {L1}")
        .ctl("lease timetolive {L1} --keys")
        .ctl("lease timetolive {L1} --keys -w json")
        .ctl("lease timetolive {L2} -w fields")
        .ctl("lease timetolive {L2} --keys -w fields")
        .ctl_ok("lease keep-alive --once {L1}")
        .ctl("lease keep-alive --once {L2} -w json")
        .ctl_ok("lease revoke {L1}")
        .ctl("get l/ --prefix")
        .ctl("get l/ --prefix -w json")
        .ctl("lease timetolive {L1}")
        .ctl("lease timetolive {L1} --keys -w json")
        .ctl("lease list")
        .ctl_err("lease revoke {L1}")
        .ctl_err("lease revoke {L1} -w json")
        .ctl_err("lease keep-alive --once {L1}")
        .ctl_err("put l/d 4 --lease={L1}")
        .ctl_ok("put l/c 33 --ignore-lease")
        .ctl("get l/c -w json")
        // minimum TTL: 1 is raised to ceil(1.5 * election timeout) = 2s
        .ctl_ok("lease grant 1") // {L3}
        .ctl("put exp v --lease={L3}") // rev 7
        .ctl("get exp -w json")
        // expiry is observed as a DELETE event (no sleeping)
        .watch("watch exp --rev 7", line("DELETE"), 2)
        .ctl("lease timetolive {L3}")
        .ctl("get exp -w json")
        .ctl_ok("lease revoke {L2} -w json")
        .ctl("lease list -w json")
        .ctl_err("lease grant 9000000001")
        .ctl_ok("lease grant 0 -w json") // {L4}; expires in ~2s, not used after
        .ctl("get '' --from-key -w json");
    diff_test(s);
}

#[test]
fn compaction() {
    let mut s = Scenario::new("compaction");
    s.ctl("put c 1") // 2
        .ctl("put c 2") // 3
        .ctl("put c 3") // 4
        .ctl("put d x") // 5
        .ctl("put c 4") // 6
        .ctl("del d") // 7
        .ctl_ok("compaction 4")
        .ctl_err("get c --rev 3")
        .ctl_err("get c --rev 3 -w json")
        .ctl_err("get c --rev 3 --consistency=s")
        .ctl("get c --rev 4")
        .ctl("get c --rev 4 -w json")
        .ctl("get '' --from-key --rev 5 --keys-only")
        .ctl("get '' --from-key --rev 4 -w json")
        // watches below / at the compaction revision
        .watch_to_exit("watch c --rev 3")
        .watch_to_exit("watch c --rev 1 -w json")
        .watch_to_exit("watch c --rev 2 --prev-kv -w fields")
        .watch("watch c --rev 4", line("4"), 0)
        .watch("watch c --rev 4 --prev-kv", line("4"), 0) // prev of rev 4 is compacted
        .watch("watch c --rev 4 --prev-kv -w json", has("\"NA==\""), 0)
        // compaction errors
        .ctl_err("compaction 4")
        .ctl_err("compaction 3")
        .ctl_err("compaction 100")
        .ctl_ok("compaction 6 --physical")
        .ctl_err("get c --rev 5")
        .ctl("get c --rev 6 -w json")
        .ctl("endpoint hashkv -w json")
        .ctl_err("endpoint hashkv --rev 5")
        .ctl("endpoint hashkv --rev 6 -w json")
        .ctl("del c --prev-kv") // 8
        .watch("watch c --rev 6 --prev-kv", line("DELETE"), 4)
        .watch("watch c --rev 6 -w json", has("\"type\":1"), 0)
        .watch_to_exit("watch c --rev 5")
        .ctl("put c 5") // 9
        .ctl_ok("compaction 9")
        .ctl("get c -w json")
        .ctl_err("get c --rev 8")
        .ctl("get '' --from-key -w json");
    diff_test(s);
}

#[test]
fn maintenance() {
    let mut s = Scenario::new("maintenance");
    s.ctl("put m1 a") // 2
        .ctl("put m2 b") // 3
        .ctl_ok("member list")
        .ctl("member list -w json")
        .ctl("member list -w fields")
        .ctl("member list -w table")
        .ctl_ok("endpoint status")
        .ctl("endpoint status -w json")
        .ctl("endpoint status -w fields")
        .ctl("endpoint status -w table")
        // --cluster dials the advertised client URLs ("http://…"), which grpc-go sends as the
        // HTTP/2 :authority; the server must accept that as etcd's does.
        .ctl_ok("endpoint status --cluster -w table")
        .ctl_ok("endpoint health --cluster")
        .ctl_ok("endpoint health")
        .ctl("endpoint health -w json")
        .ctl("endpoint health -w table")
        .ctl_ok("endpoint hashkv")
        .label("hash_before_defrag")
        .ctl("endpoint hashkv -w json")
        .ctl("endpoint hashkv -w fields")
        .ctl("endpoint hashkv -w table")
        .ctl_ok("alarm list")
        .ctl("alarm list -w json")
        .ctl_ok("defrag")
        .ctl("endpoint hashkv")
        .label("hash_after_defrag")
        .ctl("endpoint hashkv --rev 3")
        .label("hash_rev3_first")
        .ctl("put m3 c") // 4
        .ctl("endpoint hashkv --rev 3")
        .label("hash_rev3_second")
        .ctl("endpoint hashkv")
        .label("hash_latest")
        .ctl("endpoint status -w json")
        // lock runs the command while holding mylock/<session lease>
        .ctl_ok("lock mylock echo hi") // 5 (lock), 6 (unlock)
        .ctl("get mylock --prefix -w json")
        .watch("watch mylock --prefix --rev 5", line("DELETE"), 2)
        .ctl("lease list") // the session lease outlives etcdctl → {L1}
        .ctl("lease timetolive {L1} --keys")
        .ctl_ok("snapshot save {TMP}/snap.db")
        .ctl("endpoint status")
        .ctl("get '' --from-key -w json");
    let Some(mut pair) = run_pair(s) else { return };

    // hashkv must be stable for equal histories (hashes themselves are
    // normalized away in the diff).
    let hash = |side: &SideRun, label: &str| -> Option<u64> {
        let r = side.by_label(label)?;
        let out = r.outcome.as_ref()?.stdout_str();
        out.trim().rsplit(", ").next()?.parse().ok()
    };
    for side in [&pair.reference, &pair.other] {
        let h = |l| hash(side, l);
        let mut bad = |what: &str| pair.problems.push(format!("{}: hashkv {what}", side.who));
        if h("hash_before_defrag").is_none()
            || h("hash_rev3_first").is_none()
            || h("hash_latest").is_none()
        {
            bad("did not print parsable hashes");
            continue;
        }
        if h("hash_before_defrag") != h("hash_after_defrag") {
            bad("changed across defrag without writes");
        }
        if h("hash_rev3_first") != h("hash_rev3_second") {
            bad("--rev 3 changed after a later write");
        }
        if h("hash_before_defrag") != h("hash_rev3_first") {
            bad("at the latest revision (3) differs from --rev 3");
        }
        if h("hash_rev3_second") == h("hash_latest") {
            bad("did not change after a write");
        }
    }
    let (ra, rb) = (
        hash(&pair.reference, "hash_rev3_first"),
        hash(&pair.other, "hash_rev3_first"),
    );
    if self_check() {
        // Two etcds with the same history (no leases yet) hash identically.
        if ra != rb {
            pair.problems.push(format!(
                "self-check: etcd hashes differ for equal histories: {ra:?} vs {rb:?}"
            ));
        }
    } else {
        eprintln!(
            "[maintenance] note: hashkv --rev 3: etcd {ra:?}, {} {rb:?} (equality not required)",
            pair.other.who
        );
    }
    // The snapshot file must exist and be non-empty on both sides.
    for side in [&pair.reference, &pair.other] {
        match side.snapshots.first() {
            Some((_, Some(size))) if *size > 0 => {
                if size % 512 != 32 {
                    eprintln!(
                        "[maintenance] note: {} snapshot is {size} bytes, not ≡ 32 mod 512 \
                         (bbolt pages + sha256); `etcdctl snapshot status/restore` would reject it",
                        side.who
                    );
                }
            }
            other => pair.problems.push(format!(
                "{}: snapshot save produced no file: {other:?}",
                side.who
            )),
        }
    }
    pair.finish();
}

#[test]
fn errors() {
    // ~1.5 MiB + 1 KiB: above --max-request-bytes (1.5 MiB) but below the
    // client's 2 MiB send limit, so the server must reject it.
    let too_large = vec![b'x'; 1536 * 1024 + 1024];
    let one_mib = vec![b'y'; 1024 * 1024];
    let puts = |n: usize| (0..n).map(|i| format!("put op{i} v")).collect::<Vec<_>>();
    let (ops_129, ops_128) = (puts(129), puts(128));
    let too_many_ops = txn_in(
        &[],
        &ops_129.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    let max_ops = txn_in(
        &[],
        &ops_128.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );

    let mut s = Scenario::new("errors");
    s.ctl("put foo bar") // 2
        // future revision
        .ctl_err("get foo --rev 100")
        .ctl_err("get foo --rev 3 --consistency=s")
        .ctl_err("get foo --prefix --rev 3 -w json")
        .ctl_err("compaction 100")
        .ctl_err("endpoint hashkv --rev 100")
        // empty key
        .ctl_err("put '' bar")
        .ctl_err("get ''")
        .ctl_err("del ''")
        .ctl_err("put '' bar -w json")
        // unknown lease
        .ctl_err("put foo bar --lease=1234abcd")
        .ctl_err("lease revoke 1234abcd")
        .ctl_ok("lease timetolive 1234abcd")
        .ctl_ok("lease timetolive 1234abcd --keys -w json")
        .ctl_err("lease keep-alive --once 1234abcd")
        .ctl_err("lease grant 9000000001")
        // ignore-value / ignore-lease on a missing key
        .ctl_err("put nokey --ignore-value")
        .ctl_stdin("put nokey --ignore-lease", "v")
        .err()
        // request too large (value from stdin)
        .ctl_stdin("put big", &too_large)
        .err()
        .ctl_stdin("put big -w json", &too_large)
        .err()
        .ctl_stdin("put big1m", &one_mib)
        .ok()
        .ctl("get big1m --keys-only -w json")
        // txn limits
        .ctl_stdin("txn", &too_many_ops)
        .err()
        .ctl_stdin("txn", &max_ops)
        .ok()
        .ctl("get op --prefix --keys-only --limit 3 -w json")
        // compacted
        // compaction 0 on a never-compacted store succeeds; afterwards
        // every revision <= the compacted one is rejected
        .ctl_ok("compaction 0")
        .ctl_err("compaction 0")
        .ctl_ok("compaction 3")
        .ctl_err("get foo --rev 2")
        .ctl_err("get foo --rev 2 --consistency=s -w json")
        .ctl_err("compaction 3")
        .ctl_err("compaction 2")
        .ctl_err("endpoint hashkv --rev 2")
        .watch_to_exit("watch foo --rev 2")
        .ctl("get foo -w json");
    diff_test(s);
}

// ---------------------------------------------------------------------------
// Tests of the harness itself (no servers needed)
// ---------------------------------------------------------------------------

#[test]
fn harness_split_cmdline() {
    assert_eq!(split_cmdline("put '' bar"), vec!["put", "", "bar"]);
    assert_eq!(
        split_cmdline("  get  a\\ b \"c \\\"d\"  "),
        vec!["get", "a b", "c \"d"]
    );
    assert_eq!(
        split_cmdline("watch \"\" --prefix"),
        vec!["watch", "", "--prefix"]
    );
    assert!(split_cmdline("   ").is_empty());
    assert_eq!(
        common::server::strip_ansi("\u{1b}[2mts\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x"),
        "ts  INFO x"
    );
}

#[test]
fn harness_templates_and_diff() {
    let mut ctx = NormCtx::default();
    ctx.add_lease(0x694d7e8f1c3a1a0b);
    let args = split_cmdline("put k v --lease={L1} {L2} {TMP}/x");
    assert_eq!(
        fill_templates(&args, &ctx, "/t"),
        vec![
            "put",
            "k",
            "v",
            "--lease=694d7e8f1c3a1a0b",
            "MISSING-LEASE-2",
            "/t/x"
        ]
    );
    let d = line_diff("a\nb\nc\n", "a\nB\nc\n");
    assert!(d.contains("  - b\n  + B\n"), "{d}");
    let long_a = format!("{}A{}", "x".repeat(500), "y".repeat(500));
    let long_b = format!("{}B{}", "x".repeat(500), "y".repeat(500));
    let d = line_diff(&long_a, &long_b);
    assert!(
        d.contains("xA") && d.contains("xB") && d.contains("(1001 bytes)"),
        "{d}"
    );
    assert_eq!(
        show_cmd(&split_cmdline("put '' 'a b'"), Some(3)),
        "etcdctl put '' 'a b'  <stdin: 3 bytes>"
    );
}
