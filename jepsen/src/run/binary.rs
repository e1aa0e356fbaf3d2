//! Finding the `keelson` binary to test: `--keelson-bin`, else the one next to the running
//! `jepsen` (cargo puts every binary of a profile in one directory), else built with cargo in
//! the workspace, in jepsen's own profile.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::HarnessError;

/// The directory cargo put the running executable's sibling binaries in (a test binary lives
/// one level down, in `deps/`).
fn profile_dir(exe: &Path) -> Option<PathBuf> {
    let dir = exe.parent()?;
    Some(if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent()?.to_path_buf()
    } else {
        dir.to_path_buf()
    })
}

/// The keelson binary to run, building it if there is none.
pub(crate) fn keelson(explicit: Option<&Path>) -> Result<PathBuf, HarnessError> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(HarnessError::Config(format!(
                "--keelson-bin {}: no such file",
                path.display()
            )))
        };
    }
    let exe = std::env::current_exe().map_err(|e| HarnessError::io("finding jepsen's path", e))?;
    let sibling = profile_dir(&exe).map(|d| d.join("keelson"));
    if let Some(path) = sibling.as_ref().filter(|p| p.is_file()) {
        return Ok(path.clone());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("jepsen lives in the workspace")
        .to_path_buf();
    let release = !cfg!(debug_assertions);
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .args(["build", "--bin", "keelson"])
        .current_dir(&workspace);
    if release {
        build.arg("--release");
    }
    eprintln!("jepsen: building keelson: {build:?}");
    let status = build
        .status()
        .map_err(|e| HarnessError::io("running cargo build --bin keelson", e))?;
    if !status.success() {
        return Err(HarnessError::Config(format!(
            "cargo build --bin keelson failed ({status})"
        )));
    }
    let built = workspace
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("keelson");
    sibling
        .into_iter()
        .chain([built])
        .find(|p| p.is_file())
        .ok_or_else(|| {
            HarnessError::Config("cargo built keelson, but it is not where expected".into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_of_test_binaries_are_one_level_up() {
        assert_eq!(
            profile_dir(Path::new("/t/debug/deps/jepsen-abc")).unwrap(),
            Path::new("/t/debug")
        );
        assert_eq!(
            profile_dir(Path::new("/t/release/jepsen")).unwrap(),
            Path::new("/t/release")
        );
    }

    #[test]
    fn an_explicit_binary_must_exist() {
        let err = keelson(Some(Path::new("/nonexistent/keelson"))).unwrap_err();
        assert!(err.to_string().contains("no such file"), "{err}");
        let this = std::env::current_exe().unwrap();
        assert_eq!(keelson(Some(&this)).unwrap(), this);
    }
}
