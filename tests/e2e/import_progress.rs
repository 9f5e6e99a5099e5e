//! The DSI's complaint: "`master import` of a 60 GB master runs silently for minutes: is it
//! stuck?". The CLI draws how far the controller has read the image (bytes done of the total,
//! rate) while its import request waits, from `GET /v1/masters/imports`.
//!
//! Timing: the image (256 MiB, incompressible) takes the debug controller several seconds to
//! chunk and compress on the 2-core test machine, and the CLI samples at 0.2 s and then every
//! second; on a machine that imports it in under 0.2 s this test would fail, never pass
//! wrongly.

use std::io::Write;
use std::process::Command;

use crate::util::{nightcast, workspace_bin, Controller};

const SIZE: u64 = 256 << 20;

#[test]
fn a_long_import_shows_bytes_done_of_the_total_and_a_rate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("controller");
    assert!(Command::new(workspace_bin("nightcast-controller"))
        .args(["init", "--data", data.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    let c = Controller::start(&data);
    // A disk (an MBR) followed by bytes that neither compress nor repeat.
    let image = dir.path().join("big.img");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&image).unwrap());
    f.write_all(&image_tools::testimage::disk_bytes(1 << 20, 5))
        .unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 1..(SIZE >> 20) {
        for word in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    f.into_inner().unwrap().sync_all().unwrap();

    let out = nightcast(
        &c,
        &data,
        &[
            "master",
            "import",
            image.to_str().unwrap(),
            "--name",
            "big",
            "--version",
            "1",
        ],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("big 1 imported"), "{stdout}");
    // At least one line while it ran: bytes done of the total, the share, a rate.
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("importing big 1: "))
        .collect();
    assert!(!lines.is_empty(), "no progress shown: {stderr}");
    for l in &lines {
        assert!(l.contains(" of 256.00 MiB (") && l.contains(" %)"), "{l}");
    }
    assert!(lines.iter().any(|l| l.contains("/s")), "no rate: {stderr}");
    // Not a terminal: one line per percent at most, never a flood.
    assert!(lines.len() <= 101, "{}", lines.len());
}
