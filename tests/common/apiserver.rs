//! `keelson apiserver` as a child process, and the machine's kubectl pointed at it, for the
//! kubectl-driven apiserver tests.
//!
//! [`Options`] starts the apiserver on a given etcd endpoint (a `keelson store` or a real
//! etcd) on a free loopback port, with a fresh temp dir holding its data dir (`data/`, where
//! it writes `admin.kubeconfig`), its log (`apiserver.log`), and the HOME kubectl uses for
//! its discovery cache. Start returns once `kubectl get --raw /readyz` answers `ok` (polled
//! with a deadline: the process is external, there is no event to await); a port taken in
//! the meantime is retried. The process is killed when the [`Apiserver`] is dropped.
//!
//! kubectl runs with `KUBECONFIG` set to the admin kubeconfig, HOME set to the temp dir, and
//! `KUBECTL_EXTERNAL_DIFF` removed (so `kubectl diff` prints its own unified diff).
//!
//! Environment: `KEELSON_KUBECTL_BIN` (default: `kubectl` on PATH); `KEELSON_SKIP_KUBECTL=1`
//! makes tests that need kubectl pass with a note when it is missing (otherwise they fail).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::proc::{find_binary, free_port, run, ChildGuard, End, Outcome};
use super::server::keelson_bin;

/// kubectl's path, or None (the test is skipped) when it is missing and
/// `KEELSON_SKIP_KUBECTL=1` is set; panics when it is missing otherwise.
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

/// A readiness check other than kubectl's `/readyz`: None while it cannot be asked yet,
/// then Ok once ready or Err with what it saw.
type Probe = dyn Fn(&Apiserver) -> Option<Result<(), String>>;

/// How to start an apiserver: the temp dir's name prefix, extra flags, extra environment,
/// and how to tell that it is ready.
pub struct Options {
    prefix: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    ready: Option<Box<Probe>>,
}

impl Options {
    /// Options with the temp dir named `<prefix>XXXXXX` and no extra flags or environment.
    pub fn new(prefix: &str) -> Options {
        Options {
            prefix: prefix.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            ready: None,
        }
    }

    /// Adds a command-line argument after the standard ones.
    pub fn arg(mut self, arg: &str) -> Options {
        self.args.push(arg.to_string());
        self
    }

    /// Adds command-line arguments after the standard ones.
    pub fn args(mut self, args: &[&str]) -> Options {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Replaces the readiness check (default: `kubectl get --raw /readyz` with the admin
    /// kubeconfig answers `ok`); `probe` is polled until it answers Some(Ok(())).
    pub fn ready_when(
        mut self,
        probe: impl Fn(&Apiserver) -> Option<Result<(), String>> + 'static,
    ) -> Options {
        self.ready = Some(Box::new(probe));
        self
    }

    /// Sets an environment variable for the apiserver process.
    pub fn env(mut self, key: &str, value: &str) -> Options {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts the apiserver on `etcd` for a test that drives it without kubectl: ready once it
    /// has bound its port and written its kubeconfig (unless `ready_when` says otherwise).
    pub fn start_bound(self, etcd: &str) -> Apiserver {
        let opts = match self.ready {
            Some(_) => self,
            None => self.ready_when(|a| a.kubeconfig().exists().then_some(Ok(()))),
        };
        opts.start(Path::new("kubectl"), etcd)
    }

    /// Starts the apiserver on `etcd` and waits until `/readyz` answers ok.
    pub fn start(&self, kubectl: &Path, etcd: &str) -> Apiserver {
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix(&self.prefix)
                .tempdir()
                .expect("tempdir");
            let log = File::create(dir.path().join("apiserver.log")).expect("log");
            let port = free_port();
            let child = Command::new(keelson_bin())
                .args([
                    "apiserver",
                    "--etcd-servers",
                    etcd,
                    "--bind-address",
                    "127.0.0.1",
                ])
                .arg("--secure-port")
                .arg(port.to_string())
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .args(&self.args)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().expect("log")))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn keelson apiserver");
            let mut a = Apiserver {
                child: ChildGuard::new(child),
                dir,
                port,
                kubectl: kubectl.to_path_buf(),
            };
            match a.wait_ready(self.ready.as_deref()) {
                Ok(()) => return a,
                Err(e) if a.log().contains("Address already in use") => eprintln!("retrying: {e}"),
                Err(e) => panic!("{e}\n--- apiserver log ---\n{}", a.log()),
            }
        }
        panic!("the apiserver's port kept being taken");
    }
}

/// A running `keelson apiserver` and a kubectl pointed at it.
pub struct Apiserver {
    child: ChildGuard,
    dir: tempfile::TempDir,
    port: u16,
    kubectl: PathBuf,
}

impl Apiserver {
    /// What the apiserver has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    /// The test's temp dir (data dir, log, kubectl's HOME).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `https://127.0.0.1:<secure port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The apiserver's `--data-dir`.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The admin kubeconfig the apiserver wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data().join("admin.kubeconfig")
    }

    /// `name` in the test's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Polls `probe`, by default `kubectl get --raw /readyz` (the process is external: no
    /// event to await).
    fn wait_ready(&mut self, probe: Option<&Probe>) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.child.exited() {
                return Err(format!("the apiserver exited ({status})"));
            }
            if let Some(probe) = probe {
                match probe(self) {
                    Some(Ok(())) => return Ok(()),
                    Some(Err(e)) => last = e,
                    None => {}
                }
            } else if self.kubeconfig().exists() {
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

    /// A kubectl command with the admin kubeconfig and its own HOME (its discovery cache).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .env_remove("KUBECTL_EXTERNAL_DIFF");
        cmd
    }

    /// Runs kubectl (30 s at most).
    pub fn kubectl(&self, args: &[&str]) -> Outcome {
        run(&mut self.command(args), None, Duration::from_secs(30), None).expect("run kubectl")
    }

    /// Runs kubectl and insists it succeeds; returns the whole outcome.
    pub fn checked(&self, args: &[&str]) -> Outcome {
        let out = self.kubectl(args);
        assert!(
            out.success(),
            "kubectl {args:?}: {}\nstdout: {}\nstderr: {}\n--- apiserver log ---\n{}",
            out.end,
            out.stdout_str(),
            out.stderr_str(),
            self.log()
        );
        out
    }

    /// Runs kubectl and insists it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.checked(args).stdout_str()
    }

    /// Runs kubectl expecting exit 1; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert_eq!(
            out.end,
            End::Exited(1),
            "kubectl {args:?} should fail: {}",
            out.stdout_str()
        );
        out.stderr_str()
    }

    /// Runs kubectl, insists it succeeds, and parses its stdout as JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("kubectl printed JSON")
    }

    /// Writes `text` to `name` in the test's temp dir; returns the path as kubectl is given it.
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write file");
        p.to_str().expect("utf-8 path").to_string()
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
