//! Shared by the end-to-end tests: finding the workspace's binaries, and running a controller.
//!
//! Finding the workspace's binaries from an end-to-end test. Cargo only exposes the test's own
//! package's binaries (`CARGO_BIN_EXE_*`); the others are built next to it by `cargo test --workspace`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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

/// A `nightcast-controller serve` on loopback ports, killed when dropped (a test that fails half-way
/// leaves no process behind).
#[derive(Debug)]
#[allow(dead_code)] // not every test file uses it
pub struct Controller {
    pub child: Child,
    /// Where relays connect (QUIC).
    pub quic: String,
    /// The admin API, `http://...`.
    pub api: String,
}

#[allow(dead_code)]
impl Controller {
    /// Serves the data directory `data` (already initialised) and waits for both addresses.
    pub fn start(data: &Path) -> Controller {
        let mut child = Command::new(workspace_bin("nightcast-controller"))
            .args(["serve", "--data", data.to_str().expect("utf-8 path")])
            .args(["--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nightcast-controller");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = |prefix: &str| {
            let mut l = String::new();
            out.read_line(&mut l).expect("controller output");
            l.trim()
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{l:?}"))
                .to_owned()
        };
        let quic = line("listening on ");
        let api = line("admin API on ");
        Controller { child, quic, api }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
