//! `keelson up` as a user runs it: the README's command starts the store and the apiserver
//! in one foreground process, prints `export KUBECONFIG=…` once the API is ready, serves the
//! machine's kubectl with that kubeconfig (namespaces, `get cs`), and exits 0 on SIGTERM.
//!
//! Environment: `KEELSON_KUBECTL_BIN` (default: `kubectl` on PATH); `KEELSON_SKIP_KUBECTL=1`
//! makes the tests pass with a note when kubectl is missing (otherwise they fail).

#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::apiserver::kubectl_bin;
use common::proc::{free_port, run, ChildGuard, End, Outcome};
use common::server::keelson_bin;

/// A running `keelson up` whose stdout said the API is ready.
struct Up {
    child: ChildGuard,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    secure_port: u16,
    kubectl: PathBuf,
}

/// A client port `base` with `base + 1` (its peer port) and, for three members, `base + 10`,
/// `+ 11`, `+ 20`, `+ 21` all free right now.
fn free_member_ports(members: u16) -> u16 {
    loop {
        let base = free_port();
        if base > u16::MAX - 30 {
            continue;
        }
        let offsets: &[u16] = if members == 3 {
            &[0, 1, 10, 11, 20, 21]
        } else {
            &[0, 1]
        };
        let all: Vec<_> = offsets
            .iter()
            .map(|o| std::net::TcpListener::bind(("127.0.0.1", base + o)))
            .collect();
        if all.iter().all(|l| l.is_ok()) {
            return base;
        }
    }
}

impl Up {
    /// Starts `keelson up` on free ports and waits for its `export KUBECONFIG=` line (retrying
    /// with new ports when one was taken meanwhile and the process exited).
    fn start(kubectl: PathBuf, members: u16) -> Up {
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("keelson-up-")
                .tempdir()
                .expect("tempdir");
            let client_port = free_member_ports(members);
            let secure_port = free_port();
            let log = std::fs::File::create(dir.path().join("up.log")).expect("log");
            let mut child = Command::new(keelson_bin())
                .arg("up")
                .arg("--data-dir")
                .arg(dir.path().join("up"))
                .args(["--store-members", &members.to_string()])
                .args(["--client-port", &client_port.to_string()])
                .args(["--secure-port", &secure_port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn keelson up");
            let stdout = child.stdout.take().expect("piped stdout");
            let child = ChildGuard::new(child);
            let (tx, lines) = mpsc::channel();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            let mut up = Up {
                child,
                dir,
                kubeconfig: PathBuf::new(),
                secure_port,
                kubectl: kubectl.clone(),
            };
            match up.wait_for_kubeconfig(&lines) {
                Ok(path) => {
                    up.kubeconfig = path;
                    return up;
                }
                Err(e) if up.log().contains("Address already in use") => {
                    eprintln!("retrying with new ports: {e}")
                }
                Err(e) => panic!("{e}\n--- keelson up log ---\n{}", up.log()),
            }
        }
        panic!("keelson up's ports kept being taken");
    }

    /// Reads stdout until the `export KUBECONFIG=` line (the process is external: a deadline
    /// bounds the wait, each line is an event).
    fn wait_for_kubeconfig(&mut self, lines: &mpsc::Receiver<String>) -> Result<PathBuf, String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no export KUBECONFIG line; stdout so far: {seen:?}"
                ));
            }
            match lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(path) = line.strip_prefix("export KUBECONFIG=") {
                        return Ok(PathBuf::from(path));
                    }
                    seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = self.child.exited() {
                        return Err(format!("keelson up exited ({status}); stdout: {seen:?}"));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("keelson up closed stdout; stdout: {seen:?}"));
                }
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    /// Runs kubectl with the printed kubeconfig and its own HOME (its discovery cache).
    fn kubectl(&self, args: &[&str]) -> Outcome {
        let mut cmd = Command::new(&self.kubectl);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .env_remove("KUBECTL_EXTERNAL_DIFF");
        run(&mut cmd, None, Duration::from_secs(60), None).expect("run kubectl")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.success(),
            "kubectl {args:?}: {}\nstdout: {}\nstderr: {}\n--- keelson up log ---\n{}",
            out.end,
            out.stdout_str(),
            out.stderr_str(),
            self.log()
        );
        out.stdout_str()
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; returns its exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let kill = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -TERM {pid}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "keelson up did not stop within 60 s of SIGTERM\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The first column of each row of kubectl's table output, header excluded.
fn names(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// `kubectl get cs` as upstream prints it when the scheduler and controller-manager are not
/// running: the store healthy, the other two unhealthy with the HTTP probe's error as message.
fn component_statuses(up: &Up) {
    let out = up.kubectl(&["get", "cs"]);
    assert!(out.success(), "kubectl get cs: {}", out.stderr_str());
    assert_eq!(
        out.stderr_str(),
        "Warning: v1 ComponentStatus is deprecated in v1.19+\n"
    );
    let text = out.stdout_str();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "STATUS", "MESSAGE", "ERROR"], "{text}");
    let row = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("no {name} row in\n{text}"))
            .join(" ")
    };
    assert_eq!(row("etcd-0"), "etcd-0 Healthy ok");
    for (name, port) in [("scheduler", 10259), ("controller-manager", 10257)] {
        if listening(port) {
            eprintln!("something listens on 127.0.0.1:{port}; not checking the {name} row");
            continue;
        }
        assert_eq!(
            row(name),
            format!(
                "{name} Unhealthy Get \"https://127.0.0.1:{port}/healthz\": dial tcp \
                 127.0.0.1:{port}: connect: connection refused"
            )
        );
    }
    assert_eq!(rows.len(), 4, "{text}");

    let json: serde_json::Value =
        serde_json::from_str(&up.ok(&["get", "componentstatuses", "etcd-0", "-o", "json"]))
            .expect("json");
    assert_eq!(
        json,
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "ComponentStatus",
            "metadata": {"creationTimestamp": null, "name": "etcd-0"},
            "conditions": [{"type": "Healthy", "status": "True", "message": "ok"}],
        })
    );
    let missing = up.kubectl(&["get", "cs", "nope"]);
    assert_eq!(missing.end, End::Exited(1));
    assert!(
        missing.stderr_str().ends_with(
            "Error from server (InternalError): Internal error occurred: Component not found: nope\n"
        ),
        "{}",
        missing.stderr_str()
    );
    // Read-only: there is nothing to create or delete.
    let delete = up.kubectl(&["delete", "cs", "etcd-0"]);
    assert_eq!(delete.end, End::Exited(1));
    assert!(
        delete.stderr_str().contains("MethodNotAllowed"),
        "{}",
        delete.stderr_str()
    );
}

fn default_namespaces(up: &Up) {
    let ns = up.ok(&["get", "ns"]);
    assert_eq!(
        names(&ns),
        ["default", "kube-node-lease", "kube-public", "kube-system"],
        "{ns}"
    );
    assert!(ns.lines().skip(1).all(|l| l.contains(" Active ")), "{ns}");
}

fn stops_cleanly(mut up: Up) {
    let status = up.terminate();
    assert!(
        status.success(),
        "keelson up stopped with {status}\n{}",
        up.log()
    );
    // The apiserver released its port with the process.
    assert!(!listening(up.secure_port));
    assert!(up.log().contains("default namespaces are in place"));
}

#[test]
fn up_serves_kubectl_and_stops_on_sigterm() {
    let Some(kubectl) = kubectl_bin("up_serves_kubectl_and_stops_on_sigterm") else {
        return;
    };
    let up = Up::start(kubectl, 1);
    // The printed path is absolute and is the apiserver's kubeconfig inside --data-dir.
    let expected: &Path = &std::fs::canonicalize(up.dir.path())
        .unwrap()
        .join("up/apiserver/admin.kubeconfig");
    assert_eq!(up.kubeconfig, expected);
    default_namespaces(&up);
    component_statuses(&up);
    stops_cleanly(up);
}

#[test]
fn up_with_three_members_serves_the_api() {
    let Some(kubectl) = kubectl_bin("up_with_three_members_serves_the_api") else {
        return;
    };
    let up = Up::start(kubectl, 3);
    default_namespaces(&up);
    up.ok(&["create", "configmap", "c", "--from-literal=a=b"]);
    assert_eq!(up.ok(&["get", "cm", "c", "-o", "jsonpath={.data.a}"]), "b");
    stops_cleanly(up);
}
