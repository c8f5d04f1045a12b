//! Locating the workspace binaries.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;

static BUILT: Once = Once::new();

/// Path of workspace binary `name` (`railgate`, `upstream-mock`). The first call in a test
/// process brings the workspace's binaries up to date (`cargo build --workspace --bins`, the
/// build `tests/run` makes first, so a no-op after it), so that a suite never runs a binary
/// older than the sources: `cargo test -p railgate-tests` alone does not rebuild the other
/// packages' binaries. (The whole workspace, not one package: a build of one package unifies
/// its dependencies' features differently, and the two builds would undo each other.)
///
/// Looks next to the running test executable's profile dir (`target/<profile>/`), so
/// `cargo test --release` uses release binaries.
pub fn path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test-exe>
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    BUILT.call_once(|| {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "--quiet", "--workspace", "--bins"]);
        // Without what cargo set for this test process: a dependency's build script that
        // watches one of them (ring's, `CARGO_MANIFEST_DIR`) would rebuild everything above it.
        const SET_FOR_TESTS: [&str; 7] = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "OUT_DIR",
        ];
        for (key, _) in std::env::vars_os() {
            if SET_FOR_TESTS
                .iter()
                .any(|p| key.to_string_lossy().starts_with(p))
            {
                cmd.env_remove(&key);
            }
        }
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building the workspace's binaries failed");
    });
    profile_dir.join(name)
}
