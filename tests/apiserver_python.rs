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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::apiserver::{Apiserver, Options};
use common::proc::{find_binary, run};
use common::server::{require_etcd_tools, Server, ServerKind};

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

/// A `keelson apiserver` on `etcd`, killed on drop, once it has bound its port (the
/// kubeconfig is written then); readiness is the script's to wait for.
fn start_apiserver(etcd: &str) -> Apiserver {
    Options::new("keelson-apiserver-").start_bound(etcd)
}

fn client_semantics(python: &Path, kind: ServerKind) {
    let server = Server::start(kind, &[]).expect("start the store");
    let apiserver = start_apiserver(&server.client_url());
    let mut cmd = Command::new(python);
    cmd.arg(SCRIPT)
        .arg(apiserver.kubeconfig())
        .env("HOME", apiserver.dir());
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
