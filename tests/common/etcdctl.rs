//! Running etcdctl (API v3) against one endpoint.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::proc::{find_binary, run, spawn, Outcome, Running, StopAfter};

/// Default limit for one etcdctl invocation (its own --command-timeout is 5s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The etcdctl binary, if installed (`KEELSON_ETCDCTL_BIN` overrides PATH).
pub fn etcdctl_bin() -> Option<PathBuf> {
    find_binary("etcdctl", "KEELSON_ETCDCTL_BIN")
}

/// etcdctl bound to one endpoint: `ETCDCTL_API=3 etcdctl
/// --endpoints=<ep> --command-timeout=5s <global...> <args...>`. Other
/// `ETCDCTL_*` variables of the environment are removed.
#[derive(Clone, Debug)]
pub struct Etcdctl {
    pub bin: PathBuf,
    pub endpoint: String,
    pub global: Vec<String>,
}

impl Etcdctl {
    /// Panics if etcdctl is not installed (gate with
    /// [`super::server::require_etcd_tools`] first).
    pub fn new(endpoint: &str) -> Self {
        Etcdctl {
            bin: etcdctl_bin().expect("etcdctl not found on PATH"),
            endpoint: endpoint.to_string(),
            global: vec![
                format!("--endpoints={endpoint}"),
                "--command-timeout=5s".to_string(),
            ],
        }
    }

    /// Extra global flags; a later flag of the same name wins in etcdctl.
    pub fn with_global(mut self, flags: &[&str]) -> Self {
        self.global.extend(flags.iter().map(|s| s.to_string()));
        self
    }

    pub fn command<S: AsRef<str>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.bin);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCDCTL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("ETCDCTL_API", "3");
        cmd.args(&self.global);
        cmd.args(args.iter().map(|a| a.as_ref()));
        cmd
    }

    /// Run to completion (30 s limit), no stdin.
    pub fn run<S: AsRef<str>>(&self, args: &[S]) -> Outcome {
        self.run_with(args, None, DEFAULT_TIMEOUT, None)
    }

    pub fn run_with<S: AsRef<str>>(
        &self,
        args: &[S],
        stdin: Option<Vec<u8>>,
        timeout: Duration,
        stop: Option<&StopAfter>,
    ) -> Outcome {
        run(&mut self.command(args), stdin, timeout, stop)
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()))
    }

    /// Start in the background (e.g. a watch); finish with
    /// [`Running::finish`].
    pub fn spawn<S: AsRef<str>>(&self, args: &[S], stdin: Option<Vec<u8>>) -> Running {
        spawn(&mut self.command(args), stdin)
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()))
    }

    /// `etcdctl version` output's first line, for diagnostics.
    pub fn version(&self) -> String {
        let o = self.run(&["version"]);
        o.stdout_str().lines().next().unwrap_or("").to_string()
    }
}
