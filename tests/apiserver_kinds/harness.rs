//! The apiserver process and the kubectl runs `apiserver_kinds.rs` drives (as in
//! `apiserver_kubectl.rs`): a fresh data dir per apiserver, its `admin.kubeconfig`, and a
//! HOME of its own for kubectl's discovery cache.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::proc::{find_binary, free_port, run, ChildGuard, Outcome};
use crate::common::server::keelson_bin;

pub fn kubectl_bin(test: &str) -> Option<PathBuf> {
    if let Some(p) = find_binary("kubectl", "KEELSON_KUBECTL_BIN") {
        return Some(p);
    }
    if std::env::var("KEELSON_SKIP_KUBECTL").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED {test}: kubectl not found and KEELSON_SKIP_KUBECTL=1 is set");
        return None;
    }
    panic!(
        "{test} needs kubectl on PATH (or KEELSON_KUBECTL_BIN); set KEELSON_SKIP_KUBECTL=1 to skip"
    );
}

/// A running `keelson apiserver` and a kubectl pointed at it.
pub struct Apiserver {
    child: ChildGuard,
    dir: tempfile::TempDir,
    kubectl: PathBuf,
}

impl Apiserver {
    /// Starts the apiserver on `etcd` and waits until `/readyz` answers ok.
    pub fn start(kubectl: PathBuf, etcd: &str) -> Apiserver {
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("keelson-kinds-")
                .tempdir()
                .expect("tempdir");
            let log = File::create(dir.path().join("apiserver.log")).expect("log");
            let child = Command::new(keelson_bin())
                .args([
                    "apiserver",
                    "--etcd-servers",
                    etcd,
                    "--bind-address",
                    "127.0.0.1",
                ])
                .arg("--secure-port")
                .arg(free_port().to_string())
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().expect("log")))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn keelson apiserver");
            let mut a = Apiserver {
                child: ChildGuard::new(child),
                dir,
                kubectl: kubectl.clone(),
            };
            match a.wait_ready() {
                Ok(()) => return a,
                Err(e) if a.log().contains("Address already in use") => eprintln!("retrying: {e}"),
                Err(e) => panic!("{e}\n--- apiserver log ---\n{}", a.log()),
            }
        }
        panic!("the apiserver's port kept being taken");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("data").join("admin.kubeconfig")
    }

    /// Polls `/readyz` (the process is external: no event to await).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.child.exited() {
                return Err(format!("the apiserver exited ({status})"));
            }
            if self.kubeconfig().exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.success() && out.stdout_str() == "ok" {
                    return Ok(());
                }
                last = format!("{}{}", out.stdout_str(), out.stderr_str());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("the apiserver did not become ready: {last}"))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .env_remove("KUBECTL_EXTERNAL_DIFF");
        cmd
    }

    pub fn kubectl(&self, args: &[&str]) -> Outcome {
        run(&mut self.command(args), None, Duration::from_secs(30), None).expect("run kubectl")
    }

    /// Runs kubectl and insists it succeeds.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.success(),
            "kubectl {args:?}: {}\nstdout: {}\nstderr: {}\n--- apiserver log ---\n{}",
            out.end,
            out.stdout_str(),
            out.stderr_str(),
            self.log()
        );
        out.stdout_str()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts a never-ending kubectl (`get -w`) whose stdout is read line by line.
    pub fn watch(&self, args: &[&str]) -> Watch {
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kubectl -w");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Watch {
            _child: ChildGuard::new(child),
            lines,
        }
    }
}

/// A running `kubectl get -w`; killed on drop.
pub struct Watch {
    _child: ChildGuard,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    /// The next line kubectl prints (waiting up to 30 s for it).
    pub fn line(&mut self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("kubectl -w printed nothing more")
    }
}

/// Normalizes what varies between runs: AGE-like cells (`5s`, `2y3d`) → `<age>`, RFC 3339
/// words → `<timestamp>`, uid/creationTimestamp/resourceVersion YAML values, and runs of
/// blanks (tabwriter padding) → one space.
pub fn normalize(s: &str) -> String {
    s.lines()
        .map(|l| {
            let t = l.trim_start();
            let indent = &l[..l.len() - t.len()];
            if let Some((k, _)) = t.split_once(": ") {
                if ["uid", "creationTimestamp", "resourceVersion"].contains(&k) {
                    return format!("{indent}{k}: <{k}>");
                }
            }
            let words: Vec<&str> = t
                .split_whitespace()
                .map(|w| {
                    let units = "smhdy";
                    let age = w.len() > 1
                        && w.starts_with(|c: char| c.is_ascii_digit())
                        && w.chars().all(|c| c.is_ascii_digit() || units.contains(c))
                        && w.ends_with(|c: char| units.contains(c));
                    let stamp = w.len() == 20 && w.as_bytes()[10] == b'T' && w.ends_with('Z');
                    if age {
                        "<age>"
                    } else if stamp {
                        "<timestamp>"
                    } else {
                        w
                    }
                })
                .collect();
            format!("{indent}{}", words.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
