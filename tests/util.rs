//! Finding the workspace's binaries from an end-to-end test. Cargo only exposes the test's own
//! package's binaries (`CARGO_BIN_EXE_*`); the others are built next to it by `cargo test --workspace`.

use std::path::PathBuf;

/// The path of workspace binary `name`, or a panic that says how to build it.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so every binary is built",
        path.display()
    );
    path
}
