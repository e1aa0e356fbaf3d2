//! Fresh single-member servers for tests: the real etcd (reference) or
//! `keelson store`, both started with etcd's own flags on free loopback
//! ports, each in its own temp dir, killed on drop.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use super::etcdctl::{etcdctl_bin, Etcdctl};
use super::proc::{find_binary, free_ports, ChildGuard};

/// Which server implementation to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// The real etcd (`etcd` on PATH or `KEELSON_ETCD_BIN`).
    Etcd,
    /// `keelson store` built from this package.
    Keelson,
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerKind::Etcd => "etcd",
            ServerKind::Keelson => "keelson",
        })
    }
}

/// The real etcd binary, if installed.
pub fn etcd_bin() -> Option<PathBuf> {
    find_binary("etcd", "KEELSON_ETCD_BIN")
}

/// The keelson binary built by cargo for this test run.
pub fn keelson_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_keelson"))
}

/// Gate for tests that need the real etcd and etcdctl.
///
/// Returns `true` when both are installed. When one is missing: with
/// `KEELSON_SKIP_ETCD=1` prints a skip message and returns `false` (the
/// caller should return early, the test passes); otherwise panics with
/// install instructions, so a missing reference never passes silently.
pub fn require_etcd_tools(test: &str) -> bool {
    let missing: Vec<&str> = [
        ("etcd", etcd_bin().is_none()),
        ("etcdctl", etcdctl_bin().is_none()),
    ]
    .into_iter()
    .filter_map(|(n, m)| m.then_some(n))
    .collect();
    if missing.is_empty() {
        return true;
    }
    let what = missing.join(" and ");
    if std::env::var("KEELSON_SKIP_ETCD").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED {test}: {what} not found on PATH and KEELSON_SKIP_ETCD=1 is set");
        return false;
    }
    panic!(
        "{test} needs the real etcd 3.4 and etcdctl, but {what} was not found on PATH \
         (or via KEELSON_ETCD_BIN / KEELSON_ETCDCTL_BIN).\n\
         Install them with `apt-get install -y etcd-server etcd-client`, \
         or set KEELSON_SKIP_ETCD=1 to skip this test explicitly."
    );
}

/// A running single-member server. Killed (SIGKILL) when dropped; its temp
/// dir (data dir `data/`, log `server.log`) is removed unless
/// `KEELSON_KEEP_TMP=1`.
pub struct Server {
    pub kind: ServerKind,
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    child: ChildGuard,
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
}

impl Server {
    /// Start a fresh server of `kind` with `extra_args` appended to the
    /// standard flags and wait until `etcdctl endpoint health` succeeds.
    /// Retries with new ports (3 times) if the ports were taken meanwhile.
    pub fn start(kind: ServerKind, extra_args: &[String]) -> Result<Server, String> {
        let mut last_err = String::new();
        for _ in 0..3 {
            let mut s = Self::spawn(kind, extra_args)?;
            match s.wait_ready(60) {
                Ok(()) => return Ok(s),
                Err(e) => {
                    let log = s.log_tail(200);
                    if log.to_lowercase().contains("address already in use") {
                        last_err = e;
                        continue;
                    }
                    return Err(format!(
                        "{e}\n--- last lines of {kind} log ---\n{}",
                        s.log_tail(40)
                    ));
                }
            }
        }
        Err(format!("{kind}: ports kept being taken: {last_err}"))
    }

    /// Spawn without waiting for readiness.
    pub fn spawn(kind: ServerKind, extra_args: &[String]) -> Result<Server, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("keelson-test-{kind}-"))
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let dir_path = dir.path().to_path_buf();
        let ports = free_ports(2);
        let (client_port, peer_port) = (ports[0], ports[1]);
        let name = "default".to_string();
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let data_dir = dir_path.join("data");
        let log_path = dir_path.join("server.log");
        let log = File::create(&log_path).map_err(|e| format!("create log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("clone log: {e}"))?;

        let mut cmd = match kind {
            ServerKind::Etcd => Command::new(etcd_bin().ok_or("etcd not found on PATH")?),
            ServerKind::Keelson => {
                let mut c = Command::new(keelson_bin());
                c.arg("store");
                c
            }
        };
        cmd.arg("--name")
            .arg(&name)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("{name}={peer_url}"))
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg("keelson-test")
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        // etcd reads ETCD_* env vars as flags; keep the environment neutral.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd.spawn().map_err(|e| format!("spawn {kind}: {e}"))?;
        let keep = std::env::var("KEELSON_KEEP_TMP").is_ok_and(|v| v == "1");
        let dir = if keep {
            eprintln!("KEELSON_KEEP_TMP=1: keeping {}", dir_path.display());
            let _ = dir.keep();
            None
        } else {
            Some(dir)
        };
        Ok(Server {
            kind,
            name,
            client_port,
            peer_port,
            child: ChildGuard::new(child),
            dir,
            dir_path,
        })
    }

    /// Poll `etcdctl endpoint health` up to `attempts` times (100 ms apart),
    /// failing early if the process exits.
    pub fn wait_ready(&mut self, attempts: u32) -> Result<(), String> {
        let ctl = Etcdctl::new(&self.endpoint())
            .with_global(&["--dial-timeout=1s", "--command-timeout=2s"]);
        let mut last = String::new();
        for _ in 0..attempts {
            if let Some(status) = self.child.exited() {
                return Err(format!(
                    "{} exited before becoming healthy ({status})",
                    self.kind
                ));
            }
            let out = ctl.run(&["endpoint", "health"]);
            if out.success() {
                return Ok(());
            }
            last = format!("{}{}", out.stdout_str(), out.stderr_str());
            thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "{} on {} did not become healthy after {attempts} attempts; last etcdctl output:\n{last}",
            self.kind,
            self.endpoint()
        ))
    }

    /// `127.0.0.1:<client port>` (etcdctl's --endpoints form).
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
    /// The server's temp dir (holds `data/` and `server.log`; tests may put
    /// their own files here, e.g. snapshots).
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }
    pub fn data_dir(&self) -> PathBuf {
        self.dir_path.join("data")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir_path.join("server.log")
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read(self.log_path()).unwrap_or_default();
        let text = strip_ansi(&String::from_utf8_lossy(&text));
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `Some(description)` if the server process has exited.
    pub fn exited(&mut self) -> Option<String> {
        self.child.exited().map(|s| s.to_string())
    }

    /// Kill the server now (also done on drop).
    pub fn kill(&mut self) {
        self.child.kill();
    }
}

/// Remove ANSI color sequences (`ESC [ … letter`), e.g. from tracing logs.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Server {
    fn drop(&mut self) {
        // Kill before the temp dir is removed.
        self.child.kill();
        drop(self.dir.take());
    }
}
