//! The Python `kubernetes` client (PyPI) against `keelson apiserver`, on `keelson store` and
//! on a real etcd 3.4: `tests/python/client_semantics.py` creates, lists with limit and
//! continue, watches from a resourceVersion with bookmarks, and expects a 409 on a stale
//! update; it exits non-zero naming the first mismatch.
//!
//! Environment: `KEELSON_PYTHON_BIN` (default: `python3` on PATH); `KEELSON_SKIP_PYTHON=1`
//! makes the tests pass with a note when Python or its `kubernetes` package is missing
//! (otherwise they fail; `bash .ci/test` installs the package).

#[allow(dead_code)]
mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::proc::{find_binary, free_port, run, ChildGuard};
use common::server::{keelson_bin, require_etcd_tools, Server, ServerKind};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python/client_semantics.py"
);

/// python3 with the `kubernetes` package importable, or None (skip) when allowed.
fn python(test: &str) -> Option<PathBuf> {
    let skip = std::env::var("KEELSON_SKIP_PYTHON").is_ok_and(|v| v == "1");
    let missing = |what: &str| -> Option<PathBuf> {
        if skip {
            eprintln!("SKIPPED {test}: {what} and KEELSON_SKIP_PYTHON=1 is set");
            return None;
        }
        panic!(
            "{test} needs {what}: install it with `python3 -m pip install kubernetes` (bash \
             .ci/test does), or set KEELSON_SKIP_PYTHON=1 to skip"
        );
    };
    let Some(py) = find_binary("python3", "KEELSON_PYTHON_BIN") else {
        return missing("python3 (or KEELSON_PYTHON_BIN)");
    };
    let import = Command::new(&py)
        .args(["-c", "import kubernetes"])
        .output()
        .expect("run python3");
    if !import.status.success() {
        return missing("the Python kubernetes package");
    }
    Some(py)
}

/// A running `keelson apiserver`, killed on drop.
struct Apiserver {
    child: ChildGuard,
    dir: tempfile::TempDir,
}

impl Apiserver {
    /// Starts it on `etcd` and waits until it has bound its port (the kubeconfig is written
    /// then); readiness is the script's to wait for.
    fn start(etcd: &str) -> Apiserver {
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("keelson-apiserver-")
                .tempdir()
                .expect("tempdir");
            let log = File::create(dir.path().join("apiserver.log")).expect("log");
            let child = Command::new(keelson_bin())
                .args(["apiserver", "--etcd-servers", etcd])
                .args(["--bind-address", "127.0.0.1"])
                .args(["--secure-port", &free_port().to_string()])
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
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if a.kubeconfig().exists() {
                    return a;
                }
                if a.child.exited().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let log = a.log();
            assert!(
                log.contains("Address already in use"),
                "the apiserver did not start:\n{log}"
            );
        }
        panic!("the apiserver's port kept being taken");
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("data").join("admin.kubeconfig")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }
}

fn client_semantics(python: &Path, kind: ServerKind) {
    let server = Server::start(kind, &[]).expect("start the store");
    let apiserver = Apiserver::start(&server.client_url());
    let mut cmd = Command::new(python);
    cmd.arg(SCRIPT)
        .arg(apiserver.kubeconfig())
        .env("HOME", apiserver.dir.path());
    let out = run(&mut cmd, None, Duration::from_secs(180), None).expect("run python3");
    assert!(
        out.success(),
        "client_semantics.py on {kind}: {}\nstdout: {}\nstderr: {}\n--- apiserver log ---\n{}",
        out.end,
        out.stdout_str(),
        out.stderr_str(),
        apiserver.log()
    );
    assert!(out.stdout_str().starts_with("ok:"), "{}", out.stdout_str());
}

#[test]
fn python_client_on_keelson_store() {
    let Some(py) = python("python_client_on_keelson_store") else {
        return;
    };
    client_semantics(&py, ServerKind::Keelson);
}

#[test]
fn python_client_on_etcd() {
    let Some(py) = python("python_client_on_etcd") else {
        return;
    };
    if !require_etcd_tools("python_client_on_etcd") {
        return;
    }
    client_semantics(&py, ServerKind::Etcd);
}
