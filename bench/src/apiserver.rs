//! `apiserver`: load on a running `keelson apiserver` through its HTTPS API (issue 6's
//! workloads): pod creates, lists of every pod (`list_rv0`: resourceVersion "0";
//! `list_latest`: consistent; `list_page`: a first page of 500) and of one node's pods
//! through the watch cache's index (`node_rv0`, `node_latest`), a watch fan-out to many
//! watchers while pods change, and pod updates.
//!
//! This crate's own client speaks only etcd's gRPC; for HTTPS it drives `curl` (HTTP/2,
//! `--parallel`): one curl process per phase runs every transfer of that phase over one
//! connection, and each transfer's status and total time come back through `--write-out`,
//! so latencies are curl's view of a request (TLS already established), and a phase's rate
//! is its transfers over its wall time.
//!
//! The fan-out phase starts every watcher from one resourceVersion, sends one marker update
//! and waits until every watcher has it (so all are connected), then sends `--updates`
//! updates and measures until every watcher has every event: the delivered events per
//! second and the lag from the last update's acknowledgement to its last delivery. A watcher
//! that ends early (the server closed it as too slow) or misses events fails the run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use crate::stats::{Recorder, Report};

/// curl's limit on `--parallel-max`.
const MAX_PARALLEL: usize = 300;

#[derive(Args, Debug, Clone)]
pub struct ApiserverArgs {
    /// The apiserver's data dir (admin.kubeconfig, ca.crt, admin.crt, admin.key).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Pods to create, then list, watch and update.
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    /// Nodes the pods are spread over (`spec.nodeName`).
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Transfers in flight during creates and updates.
    #[arg(long, default_value_t = 64)]
    pub parallel: usize,
    /// Requests of each kind of list.
    #[arg(long, default_value_t = 5)]
    pub lists: usize,
    /// Watchers of the fan-out phase (0: skip it).
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// Pod updates during the fan-out phase.
    #[arg(long, default_value_t = 200)]
    pub updates: usize,
    /// The namespace the run creates and deletes at the end.
    #[arg(long, default_value = "bench")]
    pub namespace: String,
    /// Where watch streams are written (default: /dev/shm, else the temp dir).
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    #[arg(long, default_value = "curl")]
    pub curl: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One HTTPS request for a curl config file.
struct Transfer {
    url: String,
    method: &'static str,
    content_type: &'static str,
    body: Option<String>,
    output: String,
}

/// A value inside double quotes in a curl config file.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

struct Client {
    server: String,
    dir: PathBuf,
    curl: PathBuf,
    scratch: tempfile::TempDir,
}

impl Client {
    fn new(args: &ApiserverArgs) -> anyhow::Result<Client> {
        let kc = std::fs::read_to_string(args.data_dir.join("admin.kubeconfig"))
            .context("reading admin.kubeconfig")?;
        let server = kc
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .context("no server in admin.kubeconfig")?
            .to_string();
        let base = args.scratch.clone().unwrap_or_else(|| {
            let shm = PathBuf::from("/dev/shm");
            if shm.is_dir() {
                shm
            } else {
                std::env::temp_dir()
            }
        });
        let scratch = tempfile::Builder::new()
            .prefix("keelson-bench-apiserver-")
            .tempdir_in(base)?;
        Ok(Client {
            server,
            dir: args.data_dir.clone(),
            curl: args.curl.clone(),
            scratch,
        })
    }

    fn config(&self, transfers: &[Transfer]) -> String {
        let mut cfg = String::new();
        for (i, t) in transfers.iter().enumerate() {
            if i > 0 {
                cfg.push_str("next\n");
            }
            for (k, v) in [
                ("url", format!("{}{}", self.server, t.url)),
                ("request", t.method.to_string()),
                ("cacert", self.dir.join("ca.crt").display().to_string()),
                ("cert", self.dir.join("admin.crt").display().to_string()),
                ("key", self.dir.join("admin.key").display().to_string()),
                ("header", format!("Content-Type: {}", t.content_type)),
                ("output", t.output.clone()),
                ("write-out", "%{http_code} %{time_total}\\n".to_string()),
            ] {
                cfg.push_str(&format!("{k} = {}\n", quote(&v)));
            }
            if let Some(b) = &t.body {
                cfg.push_str(&format!("data-binary = {}\n", quote(b)));
            }
            // Per transfer (`next` resets it): a watch stream's lines reach its file as
            // they arrive, not when the transfer ends.
            cfg.push_str("no-buffer\nhttp2\n");
        }
        cfg
    }

    /// Starts curl on `transfers`, `parallel` at a time.
    fn spawn(
        &self,
        transfers: &[Transfer],
        parallel: usize,
    ) -> anyhow::Result<tokio::process::Child> {
        let path = self
            .scratch
            .path()
            .join(format!("cfg-{}", rand::random::<u64>()));
        std::fs::File::create(&path)?.write_all(self.config(transfers).as_bytes())?;
        let mut cmd = tokio::process::Command::new(&self.curl);
        cmd.arg("-sS");
        if parallel > 1 {
            let parallel = parallel.min(MAX_PARALLEL).to_string();
            cmd.args(["-Z", "--parallel-max", &parallel]);
        }
        cmd.arg("-K")
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd.spawn().context("running curl")
    }

    /// Runs `transfers`; records each one's time under `op` (a status other than `ok` is
    /// an error). Returns the wall time.
    async fn run(
        &self,
        transfers: &[Transfer],
        parallel: usize,
        op: &'static str,
        ok: &[u16],
        rec: &mut Recorder,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let out = self.spawn(transfers, parallel)?.wait_with_output().await?;
        let elapsed = start.elapsed();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut seen = 0;
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let code: u16 = f.next().and_then(|c| c.parse().ok()).unwrap_or(0);
            let secs: f64 = f.next().and_then(|c| c.parse().ok()).unwrap_or(0.0);
            seen += 1;
            if ok.contains(&code) {
                rec.record(op, Duration::from_secs_f64(secs));
            } else {
                rec.error(op, format!("HTTP {code}"));
            }
        }
        if seen != transfers.len() {
            rec.error(
                op,
                format!(
                    "curl reported {seen} of {} transfers: {}",
                    transfers.len(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            );
        }
        Ok(elapsed)
    }

    fn scratch_file(&self, name: &str) -> String {
        self.scratch.path().join(name).display().to_string()
    }
}

fn pod(ns: &str, i: usize, nodes: usize) -> String {
    format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{{\"name\":\"p{i}\",\"namespace\":\"{ns}\",\
         \"labels\":{{\"app\":\"bench\",\"shard\":\"s{}\"}}}},\"spec\":{{\"nodeName\":\"node-{}\",\
         \"containers\":[{{\"name\":\"c\",\"image\":\"registry.k8s.io/pause:3.9\"}}]}}}}",
        i % 10,
        i % nodes.max(1)
    )
}

fn post(url: String, body: String) -> Transfer {
    Transfer {
        url,
        method: "POST",
        content_type: "application/json",
        body: Some(body),
        output: "/dev/null".into(),
    }
}

fn patch(ns: &str, name: &str, tick: usize) -> Transfer {
    Transfer {
        url: format!("/api/v1/namespaces/{ns}/pods/{name}"),
        method: "PATCH",
        content_type: "application/merge-patch+json",
        body: Some(format!(
            "{{\"metadata\":{{\"labels\":{{\"tick\":\"t{tick}\"}}}}}}"
        )),
        output: "/dev/null".into(),
    }
}

fn get(url: String, output: String) -> Transfer {
    Transfer {
        url,
        method: "GET",
        content_type: "application/json",
        body: None,
        output,
    }
}

/// Lines (events) written so far to each file, read incrementally.
struct Tails {
    files: Vec<(PathBuf, u64, usize)>,
}

impl Tails {
    fn new(paths: Vec<PathBuf>) -> Tails {
        Tails {
            files: paths.into_iter().map(|p| (p, 0, 0)).collect(),
        }
    }

    /// Reads what is new; returns the smallest line count.
    fn poll(&mut self) -> anyhow::Result<usize> {
        use std::io::{Read, Seek, SeekFrom};
        let mut min = usize::MAX;
        let mut buf = Vec::new();
        for (path, offset, lines) in &mut self.files {
            if let Ok(mut f) = std::fs::File::open(&*path) {
                f.seek(SeekFrom::Start(*offset))?;
                buf.clear();
                f.read_to_end(&mut buf)?;
                *offset += buf.len() as u64;
                *lines += buf.iter().filter(|b| **b == b'\n').count();
            }
            min = min.min(*lines);
        }
        Ok(min)
    }

    /// Polls until every file has `n` lines or `deadline`; returns when that happened.
    async fn wait_for(&mut self, n: usize, deadline: Instant) -> anyhow::Result<Option<Instant>> {
        loop {
            if self.poll()? >= n {
                return Ok(Some(Instant::now()));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The `resourceVersion` of a list reply.
fn list_rv(path: &Path) -> anyhow::Result<String> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
    v.pointer("/metadata/resourceVersion")
        .and_then(|r| r.as_str())
        .map(str::to_string)
        .context("no resourceVersion in the list")
}

pub async fn run(args: ApiserverArgs) -> anyhow::Result<bool> {
    if args.pods == 0 {
        bail!("--pods must be at least 1");
    }
    let c = Client::new(&args)?;
    let ns = args.namespace.as_str();
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    let mut rec = Recorder::default();
    // Each op's rate is over the wall time of its own phase.
    let mut phase: std::collections::HashMap<&'static str, Duration> = Default::default();
    let mut report = Report {
        workload: "apiserver".into(),
        ..Report::default()
    };
    let started = Instant::now();
    let ns_body = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{{\"name\":\"{ns}\"}}}}"
    );
    c.run(
        &[post("/api/v1/namespaces".into(), ns_body)],
        1,
        "namespace",
        &[201, 409],
        &mut Recorder::default(),
    )
    .await?;

    // Creates, in batches of 10 000 transfers per curl.
    let mut create_time = Duration::ZERO;
    for chunk in (0..args.pods).collect::<Vec<_>>().chunks(10_000) {
        let batch: Vec<Transfer> = chunk
            .iter()
            .map(|i| post(pods.clone(), pod(ns, *i, args.nodes)))
            .collect();
        create_time += c
            .run(&batch, args.parallel, "create", &[201], &mut rec)
            .await?;
    }
    phase.insert("create", create_time);

    // Lists, one at a time.
    let listed = c.scratch_file("list.json");
    for (op, query) in [
        ("list_rv0", "resourceVersion=0"),
        ("list_latest", ""),
        ("list_page", "limit=500"),
        (
            "node_rv0",
            "fieldSelector=spec.nodeName%3Dnode-0&resourceVersion=0",
        ),
        ("node_latest", "fieldSelector=spec.nodeName%3Dnode-0"),
    ] {
        let batch: Vec<Transfer> = (0..args.lists)
            .map(|_| get(format!("{pods}?{query}"), listed.clone()))
            .collect();
        phase.insert(op, c.run(&batch, 1, op, &[200], &mut rec).await?);
        let bytes = std::fs::metadata(&listed).map(|m| m.len()).unwrap_or(0);
        report.figure(&format!("{op}_mib"), bytes as f64 / (1 << 20) as f64);
    }

    let fanned = if args.watchers > 0 {
        fanout(&c, &args, &pods, &mut rec, &mut report).await
    } else {
        Ok(Duration::ZERO)
    };

    let del = Transfer {
        url: format!("/api/v1/namespaces/{ns}"),
        method: "DELETE",
        content_type: "application/json",
        body: None,
        output: "/dev/null".into(),
    };
    c.run(&[del], 1, "namespace", &[200], &mut Recorder::default())
        .await?;
    phase.insert("update", fanned?);
    let elapsed = started.elapsed();
    report.elapsed_s = elapsed.as_secs_f64();
    report.add_ops(&rec, elapsed);
    for o in &mut report.ops {
        if let Some(t) = phase.get(o.name.as_str()) {
            o.per_sec = o.count as f64 / t.as_secs_f64();
        }
    }
    report.finish();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(report.ok)
}

async fn fanout(
    c: &Client,
    args: &ApiserverArgs,
    pods: &str,
    rec: &mut Recorder,
    report: &mut Report,
) -> anyhow::Result<Duration> {
    let ns = args.namespace.as_str();
    let probe = c.scratch_file("rv.json");
    c.run(
        &[get(format!("{pods}?limit=1"), probe.clone())],
        1,
        "get",
        &[200],
        &mut Recorder::default(),
    )
    .await?;
    let rv = list_rv(Path::new(&probe))?;
    let files: Vec<PathBuf> = (0..args.watchers)
        .map(|i| c.scratch.path().join(format!("w{i}")))
        .collect();
    let watches: Vec<Transfer> = files
        .iter()
        .map(|f| {
            get(
                format!("{pods}?watch=1&resourceVersion={rv}&timeoutSeconds=600"),
                f.display().to_string(),
            )
        })
        .collect();
    // curl runs at most 300 transfers at once: one process per 300 watchers.
    let mut watchers = Vec::new();
    for chunk in watches.chunks(MAX_PARALLEL) {
        watchers.push(c.spawn(chunk, chunk.len())?);
    }
    let mut tails = Tails::new(files);
    // A marker update: once every watcher has it, every watcher is connected.
    let connect = Instant::now();
    c.run(
        &[patch(ns, "p0", 0)],
        1,
        "update",
        &[200],
        &mut Recorder::default(),
    )
    .await?;
    let Some(connected) = tails
        .wait_for(1, connect + Duration::from_secs(120))
        .await?
    else {
        bail!("not every watcher saw the marker within 120 s");
    };
    report.figure("watchers_connected_s", (connected - connect).as_secs_f64());

    let updates: Vec<Transfer> = (0..args.updates)
        .map(|i| patch(ns, &format!("p{}", i % args.pods), i + 1))
        .collect();
    let start = Instant::now();
    let update_time = c
        .run(&updates, args.parallel, "update", &[200], rec)
        .await?;
    let acked = Instant::now();
    let deadline = acked + Duration::from_secs(300);
    match tails.wait_for(1 + args.updates, deadline).await? {
        Some(done) => {
            let events = (args.watchers * args.updates) as f64;
            report.figure("fanout_events_per_s", events / (done - start).as_secs_f64());
            report.figure(
                "fanout_lag_after_last_ack_ms",
                (done - acked).as_secs_f64() * 1e3,
            );
        }
        None => report.problem(format!(
            "some watcher got fewer than {} events within 300 s (closed as too slow?)",
            1 + args.updates
        )),
    }
    for w in &mut watchers {
        if let Ok(Some(status)) = w.try_wait() {
            report.problem(format!("a watchers' curl ended early: {status}"));
        }
        let _ = w.kill().await;
    }
    Ok(update_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_are_quoted() {
        assert_eq!(quote(r#"{"a":"b\c"}"#), r#""{\"a\":\"b\\c\"}""#);
        let p: serde_json::Value = serde_json::from_str(&pod("ns", 7, 3)).unwrap();
        assert_eq!(p["spec"]["nodeName"], "node-1");
        assert_eq!(p["metadata"]["labels"]["shard"], "s7");
    }
}
