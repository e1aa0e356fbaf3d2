//! # The run folder
//!
//! Every run leaves one folder, by default `jepsen/store/<target>-<workloads>-<nemesis>-<UTC
//! timestamp>/` (with `jepsen/store/latest` pointing at the newest), or exactly `--out`:
//!
//! | file | what |
//! |---|---|
//! | `history.jsonl` | every operation, one JSON object per line, ordered by invocation |
//! | `history-<workload>.jsonl` | with several workloads: each one's ops, as its checker saw them |
//! | `results-<checker>.json` | the checker's verdict, anomaly counts and each anomaly with its ops |
//! | `nemesis.json` | the faults injected: start/end (ns since the test start), kind, detail |
//! | `summary.json` | options, seed, op counts by workload/function/outcome, verdicts |
//! | `latency.svg` | latency and throughput over time, nemesis intervals shaded |
//! | `cluster/` | the members' data directories and logs |
//!
//! Op indices in a results file refer to the history file it names (`"history"`).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::HarnessError;
use crate::history::History;

pub(crate) const HISTORY: &str = "history.jsonl";
pub(crate) const NEMESIS: &str = "nemesis.json";
pub(crate) const SUMMARY: &str = "summary.json";
pub(crate) const PLOT: &str = "latency.svg";

pub(crate) fn results_file(checker: &str) -> String {
    format!("results-{checker}.json")
}

pub(crate) fn workload_history_file(workload: &str) -> String {
    format!("history-{workload}.jsonl")
}

/// Where runs go when no `--out` is given.
pub(crate) fn default_store() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("store")
}

#[derive(Debug)]
pub(crate) struct RunFolder {
    dir: PathBuf,
}

impl RunFolder {
    /// Creates `out`, or `<store>/<name>-<timestamp>` and the store's `latest` link.
    pub(crate) fn create(
        out: Option<&Path>,
        store: &Path,
        name: &str,
    ) -> Result<RunFolder, HarnessError> {
        let dir = match out {
            Some(out) => out.to_path_buf(),
            None => store.join(format!("{name}-{}", timestamp(SystemTime::now()))),
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| HarnessError::io(format!("creating {}", dir.display()), e))?;
        if out.is_none() {
            // A convenience only: a run must not fail because the link could not be made.
            let latest = store.join("latest");
            let _ = std::fs::remove_file(&latest);
            if let Some(target) = dir.file_name() {
                #[cfg(unix)]
                let _ = std::os::unix::fs::symlink(target, &latest);
            }
        }
        Ok(RunFolder { dir })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub(crate) fn write_json(
        &self,
        file: &str,
        value: &impl Serialize,
    ) -> Result<(), HarnessError> {
        let json = serde_json::to_string_pretty(value).expect("run files serialize");
        self.write_text(file, &(json + "\n"))
    }

    pub(crate) fn write_text(&self, file: &str, text: &str) -> Result<(), HarnessError> {
        let path = self.path(file);
        std::fs::write(&path, text)
            .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
    }

    pub(crate) fn write_history(&self, file: &str, history: &History) -> Result<(), HarnessError> {
        let path = self.path(file);
        history.save(&path).map_err(|e| {
            HarnessError::io(
                format!("writing {}", path.display()),
                std::io::Error::other(e.to_string()),
            )
        })
    }
}

/// `20250102T030405.678Z`: sortable, and safe in a file name.
pub(crate) fn timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_and_sortable() {
        assert_eq!(timestamp(UNIX_EPOCH), "19700101T000000.000Z");
        // 2024-02-29 12:34:56.789 UTC, a leap day.
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(timestamp(t), "20240229T123456.789Z");
        let later = t + Duration::from_secs(86_400 * 400);
        assert!(timestamp(later) > timestamp(t));
    }

    #[test]
    fn a_default_folder_is_named_and_linked_as_latest() {
        let store = tempfile::tempdir().unwrap();
        let folder = RunFolder::create(None, store.path(), "keelson-register-kill").unwrap();
        let name = folder
            .dir()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(name.starts_with("keelson-register-kill-2"), "{name}");
        assert!(folder.dir().is_dir());
        let latest = std::fs::read_link(store.path().join("latest")).unwrap();
        assert_eq!(latest, Path::new(&name));

        folder.write_text(PLOT, "<svg/>").unwrap();
        folder
            .write_json(SUMMARY, &serde_json::json!({"a": 1}))
            .unwrap();
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(folder.path(SUMMARY)).unwrap()).unwrap();
        assert_eq!(back["a"], 1);
    }

    #[test]
    fn out_is_used_as_given() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("my-run");
        let folder = RunFolder::create(Some(&out), tmp.path(), "ignored").unwrap();
        assert_eq!(folder.dir(), out);
        assert!(out.is_dir());
        assert!(!tmp.path().join("latest").exists());
        assert_eq!(results_file("linearizable"), "results-linearizable.json");
        assert_eq!(workload_history_file("watch"), "history-watch.jsonl");
    }
}
