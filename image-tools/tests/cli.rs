//! `nightcast-image` driven as a DSI would: real files, real processes, exit codes and messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use image_tools::testimage;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nightcast-image"))
}

/// Runs the CLI in `dir`; returns the output (never panics on a non-zero exit).
fn run(dir: &Path, args: &[&str]) -> Output {
    let out = bin()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("start nightcast-image");
    assert_ne!(out.status.code(), Some(101), "panicked: {}", stderr(&out));
    out
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(out.status.success(), "{args:?} failed: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn json(dir: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(dir, args)).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A work dir with a key and a two-version master (v2 evolved from v1).
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(size: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let v1 = testimage::image_bytes(size, 1);
        let v2 = testimage::evolve(&v1, 0.05, 1);
        testimage::write_sparse(&dir.path().join("v1.img"), &v1).unwrap();
        testimage::write_sparse(&dir.path().join("v2.img"), &v2).unwrap();
        let f = Fixture { dir };
        ok(f.path(), &["keygen", "--out", "key"]);
        f
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn build(&self, image: &str, version: &str, manifest: &str) -> Value {
        self.build_into("files", image, version, manifest)
    }

    /// `build`, creating the store in `format` if there is none yet.
    fn build_into(&self, format: &str, image: &str, version: &str, manifest: &str) -> Value {
        json(
            self.path(),
            &[
                "build",
                "--store",
                "store",
                "--store-format",
                format,
                "--key",
                "key",
                "--name",
                "demo",
                "--version",
                version,
                image,
                "-o",
                manifest,
                "--json",
            ],
        )
    }

    fn chunk_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for fanout in fs::read_dir(self.path().join("store/chunks")).unwrap() {
            for f in fs::read_dir(fanout.unwrap().path()).unwrap() {
                files.push(f.unwrap().path());
            }
        }
        files.sort();
        files
    }
}

/// (data start, data end) extents, from SEEK_DATA/SEEK_HOLE.
fn data_extents(path: &Path) -> Vec<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let file = fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len();
    let mut extents = Vec::new();
    let mut at = 0u64;
    while at < len {
        let Ok(start) = seek(&file, SeekFrom::Data(at)) else {
            break;
        };
        let end = seek(&file, SeekFrom::Hole(start)).unwrap();
        extents.push((start, end));
        at = end;
    }
    extents
}

#[test]
fn round_trip_gives_identical_bytes_and_identical_holes() {
    let f = Fixture::new(24 << 20);
    let built = f.build("v1.img", "1", "v1.m");
    assert!(
        built["summary"]["holes"].as_u64().unwrap() > 0,
        "test image has no holes"
    );
    let verified = ok(
        f.path(),
        &["verify", "--store", "store", "--pubkey", "key.pub", "v1.m"],
    );
    assert!(verified.starts_with("ok:"), "{verified}");
    ok(
        f.path(),
        &[
            "assemble", "--store", "store", "--pubkey", "key.pub", "v1.m", "out.img",
        ],
    );
    let (a, b) = (f.path().join("v1.img"), f.path().join("out.img"));
    assert!(
        fs::read(&a).unwrap() == fs::read(&b).unwrap(),
        "assembled bytes differ"
    );
    assert_eq!(data_extents(&a), data_extents(&b), "holes differ");
    assert_eq!(
        fs::metadata(&a).unwrap().blocks(),
        fs::metadata(&b).unwrap().blocks()
    );
    // The same image again costs nothing.
    let again = f.build("v1.img", "1-again", "v1b.m");
    assert_eq!(again["new_chunks"], 0);
}

#[test]
fn a_flipped_byte_in_the_store_fails_verify_and_assemble_naming_the_chunk() {
    let f = Fixture::new(8 << 20);
    f.build("v1.img", "1", "v1.m");
    let victim = f.chunk_files()[0].clone();
    let id = victim.file_name().unwrap().to_str().unwrap().to_owned();
    let mut bytes = fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&victim, bytes).unwrap();

    let out = run(
        f.path(),
        &["verify", "--store", "store", "--pubkey", "key.pub", "v1.m"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&id) && err.contains("offset"), "{err}");

    let out = run(
        f.path(),
        &[
            "assemble", "--store", "store", "--pubkey", "key.pub", "v1.m", "out.img",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(&id), "{}", stderr(&out));
    assert!(
        !f.path().join("out.img").exists(),
        "a partial image was left"
    );
    let leftovers: Vec<_> = fs::read_dir(f.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".nc-tmp-")
        })
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");

    // scrub --repair drops it; the same import puts it back.
    let out = run(f.path(), &["scrub", "--store", "store"]);
    assert_eq!(out.status.code(), Some(3));
    ok(f.path(), &["scrub", "--store", "store", "--repair"]);
    f.build("v1.img", "1", "v1.m");
    ok(
        f.path(),
        &["verify", "--store", "store", "--pubkey", "key.pub", "v1.m"],
    );
}

#[test]
fn forged_truncated_and_absurd_manifests_are_refused_without_panic() {
    let f = Fixture::new(4 << 20);
    f.build("v1.img", "1", "v1.m");
    let good = fs::read(f.path().join("v1.m")).unwrap();
    ok(f.path(), &["keygen", "--out", "other"]);

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut changed = good.clone();
    // The first entry's id starts 9 bytes into the entry list; entries start after the header.
    let header = 4 + 2 + 2 + 1 + 4 + 1 + 1 + 8 + 16 + 8;
    changed[header + 9] ^= 0xff;
    cases.push(("changed chunk list", changed));
    cases.push(("truncated tail", good[..good.len() - 40].to_vec()));
    cases.push(("truncated body", good[..good.len() / 2].to_vec()));
    let mut absurd = good.clone();
    absurd[header - 8..header].copy_from_slice(&u64::MAX.to_le_bytes());
    cases.push(("absurd count", absurd));
    let mut trailing = good.clone();
    trailing.extend(b"extra");
    cases.push(("trailing bytes", trailing));
    cases.push(("empty", Vec::new()));
    cases.push(("not a manifest", b"#!/bin/sh\nrm -rf /\n".to_vec()));

    for (what, bytes) in cases {
        fs::write(f.path().join("bad.m"), &bytes).unwrap();
        for args in [
            &["verify", "--store", "store", "--pubkey", "key.pub", "bad.m"][..],
            &[
                "assemble", "--store", "store", "--pubkey", "key.pub", "bad.m", "out.img",
            ][..],
        ] {
            let out = run(f.path(), args);
            assert_eq!(out.status.code(), Some(3), "{what}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("manifest"),
                "{what}: {}",
                stderr(&out)
            );
        }
        assert!(!f.path().join("out.img").exists());
    }
    // A genuine manifest checked against another key.
    let out = run(
        f.path(),
        &[
            "verify",
            "--store",
            "store",
            "--pubkey",
            "other.pub",
            "v1.m",
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("not by the pinned key"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn kill_9_during_build_leaves_a_store_that_verifies() {
    let f = Fixture::new(1 << 20);
    // Incompressible data keeps the build busy long enough to be killed in the middle.
    let mut big = vec![0u8; 160 << 20];
    testimage::Rng::new(42).fill(&mut big);
    fs::write(f.path().join("big.img"), &big).unwrap();
    let mut child = bin()
        .current_dir(f.path())
        .args([
            "build",
            "--store",
            "store",
            "--key",
            "key",
            "--name",
            "big",
            "--version",
            "1",
        ])
        .args(["big.img", "-o", "big.m", "--threads", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until chunks are being written, then kill.
    let tmp = f.path().join("store/tmp");
    let mut killed_mid_way = false;
    for _ in 0..2000 {
        let writing = fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) > 20;
        if writing && child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed_mid_way = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait().unwrap();
    assert!(killed_mid_way, "build finished before it could be killed");
    assert!(
        !f.path().join("big.m").exists(),
        "a manifest was written by a killed build"
    );
    // Every chunk under a real name is whole; opening the store removes the temp files.
    let scrub = json(f.path(), &["scrub", "--store", "store", "--json"]);
    assert_eq!(scrub["corrupt"], Value::Array(vec![]));
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    // The import resumes and completes.
    let done = f.build("big.img", "1", "big.m");
    assert_eq!(done["size"], 160 << 20);
    ok(
        f.path(),
        &["verify", "--store", "store", "--pubkey", "key.pub", "big.m"],
    );
}

#[test]
fn a_seeded_assemble_reads_only_what_the_seed_lacks() {
    let f = Fixture::new(16 << 20);
    f.build("v1.img", "1", "v1.m");
    f.build("v2.img", "2", "v2.m");
    ok(
        f.path(),
        &[
            "assemble", "--store", "store", "--pubkey", "key.pub", "v1.m", "cur.img",
        ],
    );
    let diff = json(f.path(), &["diff", "v1.m", "v2.m", "--json"]);
    let missing = diff["new_chunks"].as_u64().unwrap();
    assert!(missing > 0 && diff["shared_chunks"].as_u64().unwrap() > missing);
    let report = json(
        f.path(),
        &[
            "assemble",
            "--store",
            "store",
            "--pubkey",
            "key.pub",
            "v2.m",
            "next.img",
            "--seed",
            "cur.img",
            "--seed-manifest",
            "v1.m",
            "--json",
        ],
    );
    assert_eq!(report["from_store"].as_u64().unwrap(), missing);
    assert_eq!(report["from_seed"], diff["shared_chunks"]);
    assert!(
        fs::read(f.path().join("v2.img")).unwrap() == fs::read(f.path().join("next.img")).unwrap()
    );
}

#[test]
fn diff_counts_what_a_site_would_download() {
    let f = Fixture::new(16 << 20);
    f.build("v1.img", "1", "v1.m");
    let v2 = f.build("v2.img", "2", "v2.m");
    let diff = json(f.path(), &["diff", "v1.m", "v2.m", "--json"]);
    // What v2's import added to the store is exactly what a site holding v1 lacks.
    assert_eq!(diff["new_chunks"], v2["new_chunks"]);
    assert_eq!(diff["new_stored_bytes"], v2["new_stored_bytes"]);
    // And v2's manifest, whole and as the delta to v1's a relay holding v1 receives.
    let manifest = fs::metadata(f.path().join("v2.m")).unwrap().len();
    let delta = diff["manifest_delta_bytes"].as_u64().unwrap();
    assert_eq!(diff["manifest_bytes"].as_u64().unwrap(), manifest);
    assert!(delta > 32 && delta < manifest, "{diff}");
    let same = json(f.path(), &["diff", "v1.m", "v1.m", "--json"]);
    assert_eq!(same["new_chunks"], 0);
    assert!(
        same["manifest_delta_bytes"].as_u64().unwrap() < delta,
        "{same}"
    );
    let text = ok(f.path(), &["diff", "v1.m", "v2.m"]);
    assert!(text.contains("to download"), "{text}");
    assert!(text.contains("as a delta to OLD's"), "{text}");
}

#[test]
fn gc_removes_exactly_the_unreachable_chunks() {
    let f = Fixture::new(16 << 20);
    f.build("v1.img", "1", "v1.m");
    f.build("v2.img", "2", "v2.m");
    let before = f.chunk_files().len() as u64;
    // Chunks of v1 that v2 lacks are the unreachable ones once only v2 is kept.
    let only_v1 = json(f.path(), &["diff", "v2.m", "v1.m", "--json"])["new_chunks"]
        .as_u64()
        .unwrap();
    assert!(only_v1 > 0);
    let dry = json(
        f.path(),
        &[
            "gc",
            "--store",
            "store",
            "--keep",
            "v2.m",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(dry["removed"].as_u64().unwrap(), only_v1);
    assert_eq!(f.chunk_files().len() as u64, before);
    let done = json(
        f.path(),
        &["gc", "--store", "store", "--keep", "v2.m", "--json"],
    );
    assert_eq!(done["removed"].as_u64().unwrap(), only_v1);
    assert_eq!(f.chunk_files().len() as u64, before - only_v1);
    ok(
        f.path(),
        &["verify", "--store", "store", "--pubkey", "key.pub", "v2.m"],
    );
    let out = run(
        f.path(),
        &["verify", "--store", "store", "--pubkey", "key.pub", "v1.m"],
    );
    assert_eq!(out.status.code(), Some(3));
    // Keeping both again removes nothing more.
    let none = json(
        f.path(),
        &["gc", "--store", "store", "--keep", "v2.m", "v1.m", "--json"],
    );
    assert_eq!(none["removed"], 0);
    assert_eq!(none["missing"].as_u64().unwrap(), only_v1);
}

#[test]
fn qcow2_images_import_like_their_raw_bytes() {
    let f = Fixture::new(8 << 20);
    let status = Command::new("qemu-img")
        .current_dir(f.path())
        .args(["convert", "-f", "raw", "-O", "qcow2", "v1.img", "v1.qcow2"])
        .status()
        .unwrap();
    assert!(status.success());
    f.build("v1.img", "1", "raw.m");
    let from_qcow2 = f.build("v1.qcow2", "1", "qcow2.m");
    assert_eq!(from_qcow2["converted_from"], "qcow2");
    assert_eq!(from_qcow2["new_chunks"], 0);
    assert!(
        fs::read(f.path().join("raw.m")).unwrap() == fs::read(f.path().join("qcow2.m")).unwrap()
    );
    // Without qemu-img on PATH, the error says what to install.
    let out = bin()
        .current_dir(f.path())
        .env("PATH", "/nonexistent")
        .args([
            "build",
            "--store",
            "store",
            "--key",
            "key",
            "--name",
            "d",
            "--version",
            "1",
        ])
        .args(["v1.qcow2", "-o", "x.m"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("qemu-utils"), "{}", stderr(&out));
}

#[test]
fn every_subcommand_explains_itself() {
    let dir = tempfile::tempdir().unwrap();
    let top = ok(dir.path(), &["--help"]);
    assert!(top.contains("Exit codes"), "{top}");
    for sub in [
        "keygen", "build", "verify", "assemble", "diff", "inspect", "gc", "scrub",
    ] {
        assert!(top.contains(sub), "{sub} missing from --help");
        let help = ok(dir.path(), &[sub, "--help"]);
        assert!(help.len() > 100, "{sub} --help is too thin: {help}");
    }
    let out = run(dir.path(), &["build"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(
        dir.path(),
        &["verify", "--store", "s", "--pubkey", "missing.pub", "m"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("missing.pub"), "{}", stderr(&out));
}

#[test]
fn keygen_never_overwrites_a_key() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["keygen", "--out", "k"]);
    let first = fs::read(dir.path().join("k")).unwrap();
    let out = run(dir.path(), &["keygen", "--out", "k"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(fs::read(dir.path().join("k")).unwrap(), first);
    assert_eq!(
        fs::metadata(dir.path().join("k")).unwrap().mode() & 0o777,
        0o600
    );
}

#[test]
fn a_build_under_a_low_open_file_limit_succeeds() {
    // A group commit spans up to 64 MiB of chunks: far more than 128 files, which must not stay open.
    let f = Fixture::new(1 << 20);
    let mut data = vec![0u8; 40 << 20];
    testimage::Rng::new(7).fill(&mut data);
    fs::write(f.path().join("rand.img"), &data).unwrap();
    let script = format!(
        "ulimit -n 128 && exec {} build --store store --key key --name r --version 1 rand.img -o r.m",
        env!("CARGO_BIN_EXE_nightcast-image")
    );
    let out = Command::new("bash")
        .current_dir(f.path())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    ok(
        f.path(),
        &["verify", "--store", "store", "--pubkey", "key.pub", "r.m"],
    );
}

#[test]
fn a_build_without_chunk_options_records_the_default_parameters() {
    let f = Fixture::new(2 << 20);
    f.build("v1.img", "1", "v1.m");
    let inspect = json(f.path(), &["inspect", "v1.m", "--json"]);
    let d = image_tools::ChunkParams::DEFAULT;
    assert_eq!(inspect["chunk_min"], d.min);
    assert_eq!(inspect["chunk_avg"], d.avg);
    assert_eq!(inspect["chunk_max"], d.max);
    assert_eq!(inspect["hole_min"], d.hole_min);
    // An explicit size uses the documented shape: min a quarter, max four times.
    json(
        f.path(),
        &[
            "build",
            "--store",
            "store",
            "--key",
            "key",
            "--name",
            "demo",
            "--version",
            "s",
            "v1.img",
            "-o",
            "s.m",
            "--avg-chunk-kib",
            "16",
            "--json",
        ],
    );
    let small = json(f.path(), &["inspect", "s.m", "--json"]);
    assert_eq!(
        (small["chunk_min"].as_u64(), small["chunk_max"].as_u64()),
        (Some(4096), Some(65536))
    );
}

/// Runs `qemu-img ARGS` in `dir` and insists that it worked (qemu-img is a test requirement).
fn qemu_img(dir: &Path, args: &[&str]) {
    let out = Command::new("qemu-img")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("qemu-img must be installed to run these tests (Debian package qemu-utils)");
    assert!(out.status.success(), "qemu-img {args:?}: {}", stderr(&out));
}

/// `build` of IMAGE with EXTRA arguments into the fixture's store, writing `bad.m`.
fn build_image(f: &Fixture, image: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "build",
        "--store",
        "store",
        "--key",
        "key",
        "--name",
        "x",
        "--version",
        "1",
        image,
        "-o",
        "bad.m",
    ];
    args.extend_from_slice(extra);
    run(f.path(), &args)
}

/// A file standing for a host secret (the controller's signing key, /etc/passwd): 1 MiB of random
/// bytes, so that any of it in a chunk is recognisable.
fn write_secret(path: &Path) -> Vec<u8> {
    let mut secret = vec![0u8; 1 << 20];
    testimage::Rng::new(99).fill(&mut secret);
    fs::write(path, &secret).unwrap();
    secret
}

/// How many of 64 windows of 64 bytes spread over `secret` appear in some chunk of the store.
fn secret_windows_in_store(f: &Fixture, secret: &[u8]) -> usize {
    let windows: Vec<&[u8]> = (0..64)
        .map(|i| &secret[i * (secret.len() / 64)..][..64])
        .collect();
    let mut found = 0;
    for file in f.chunk_files() {
        let id: image_tools::ChunkId = file.file_name().unwrap().to_str().unwrap().parse().unwrap();
        let Ok(chunk) = image_tools::VerifiedChunk::from_stored(id, &fs::read(&file).unwrap())
        else {
            continue;
        };
        found += windows
            .iter()
            .filter(|w| chunk.raw().windows(64).any(|c| c == **w))
            .count();
    }
    found
}

fn assert_refused(out: &Output, what: &str, names: &str) {
    assert_eq!(out.status.code(), Some(3), "{what}: {}", stderr(out));
    let err = stderr(out);
    assert!(
        err.contains(names),
        "{what}: message does not name {names}: {err}"
    );
}

#[test]
fn a_qcow2_backed_by_a_host_file_is_refused_and_none_of_the_file_reaches_the_store() {
    let f = Fixture::new(1 << 20);
    let secret_path = f.path().join("signing.key");
    let secret = write_secret(&secret_path);
    let backing = secret_path.to_str().unwrap();
    qemu_img(
        f.path(),
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            backing,
            "-F",
            "raw",
            "evil.qcow2",
        ],
    );
    for extra in [&[][..], &["--format", "qcow2"][..]] {
        let out = build_image(&f, "evil.qcow2", extra);
        assert_refused(&out, &format!("{extra:?}"), "signing.key");
        assert!(stderr(&out).contains("evil.qcow2"), "{}", stderr(&out));
        assert!(!f.path().join("bad.m").exists(), "a manifest was written");
        assert_eq!(
            secret_windows_in_store(&f, &secret),
            0,
            "the secret is in the store"
        );
    }
}

#[test]
fn a_qcow2_with_an_external_data_file_is_refused() {
    let f = Fixture::new(1 << 20);
    let secret = write_secret(&f.path().join("passwd"));
    let data_file = format!("data_file={}", f.path().join("passwd").display());
    qemu_img(
        f.path(),
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &data_file,
            "ext.qcow2",
            "1M",
        ],
    );
    // qemu-img create empties the data file: put the secret back.
    fs::write(f.path().join("passwd"), &secret).unwrap();
    let out = build_image(&f, "ext.qcow2", &[]);
    assert_refused(&out, "data file", "passwd");
    assert!(!f.path().join("bad.m").exists());
    assert_eq!(secret_windows_in_store(&f, &secret), 0);
}

#[test]
fn a_vmdk_whose_extents_are_host_files_is_refused() {
    let f = Fixture::new(1 << 20);
    let secret = write_secret(&f.path().join("passwd"));
    let passwd = f.path().join("passwd");
    let descriptor = format!(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW 2048 FLAT \"{}\" 0\n",
        passwd.display()
    );
    fs::write(f.path().join("text.vmdk"), &descriptor).unwrap();
    // The same descriptor embedded in a binary VMDK whose header gives no capacity: qemu then
    // opens the embedded descriptor's extents.
    let mut embedded = Vec::new();
    embedded.extend_from_slice(b"KDMV");
    for v in [1u32, 3] {
        embedded.extend_from_slice(&v.to_le_bytes());
    }
    for v in [0u64, 128, 1, 20] {
        embedded.extend_from_slice(&v.to_le_bytes()); // capacity 0, granularity, descriptor at sector 1, 20 sectors
    }
    embedded.resize(512, 0);
    embedded.extend_from_slice(descriptor.as_bytes());
    embedded.resize(21 * 512, 0);
    fs::write(f.path().join("embedded.vmdk"), &embedded).unwrap();
    for (image, extra) in [
        ("text.vmdk", &[][..]),
        ("text.vmdk", &["--format", "vmdk"][..]),
        ("embedded.vmdk", &[][..]),
        ("embedded.vmdk", &["--format", "vmdk"][..]),
    ] {
        let out = build_image(&f, image, extra);
        assert_refused(&out, &format!("{image} {extra:?}"), "passwd");
        assert!(stderr(&out).contains(image), "{}", stderr(&out));
        assert!(!f.path().join("bad.m").exists());
        assert_eq!(secret_windows_in_store(&f, &secret), 0, "{image}");
    }
    // Formats outside the list are refused by name.
    let out = build_image(&f, "text.vmdk", &["--format", "qed"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_raw_disk_that_starts_with_a_qcow2_header_is_refused_unless_stated_raw() {
    let f = Fixture::new(4 << 20);
    let secret = write_secret(&f.path().join("signing.key"));
    let backing = f.path().join("signing.key");
    qemu_img(
        f.path(),
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            backing.to_str().unwrap(),
            "-F",
            "raw",
            "h.qcow2",
        ],
    );
    // A guest wrote a qcow2 header at the start of its raw disk.
    let mut disk = fs::read(f.path().join("v1.img")).unwrap();
    let header = fs::read(f.path().join("h.qcow2")).unwrap();
    disk[..header.len()].copy_from_slice(&header);
    fs::write(f.path().join("guest.img"), &disk).unwrap();

    let out = build_image(&f, "guest.img", &[]);
    assert_refused(&out, "detected", "signing.key");
    assert!(stderr(&out).contains("--format raw"), "{}", stderr(&out));
    assert!(!f.path().join("bad.m").exists());
    assert_eq!(secret_windows_in_store(&f, &secret), 0);

    let out = build_image(&f, "guest.img", &["--format", "raw"]);
    assert!(out.status.success(), "{}", stderr(&out));
    ok(
        f.path(),
        &[
            "assemble", "--store", "store", "--pubkey", "key.pub", "bad.m", "out.img",
        ],
    );
    assert!(
        fs::read(f.path().join("out.img")).unwrap() == disk,
        "assembled bytes differ"
    );
}

#[test]
fn empty_oversized_and_corrupt_chunk_files_are_replaced_not_signed_over() {
    let f = Fixture::new(8 << 20);
    f.build("v1.img", "1", "v1.m");
    let files = f.chunk_files();
    assert!(files.len() >= 3);
    // An empty file, one far above the largest legal chunk, one of the right size but corrupt.
    fs::write(&files[0], b"").unwrap();
    let mut big = fs::read(&files[1]).unwrap();
    big.resize(big.len() + (17 << 20), 0x5a);
    fs::write(&files[1], &big).unwrap();
    let mut flipped = fs::read(&files[2]).unwrap();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    fs::write(&files[2], &flipped).unwrap();

    let again = f.build("v1.img", "1", "v1b.m");
    assert_eq!(again["new_chunks"], 3, "{again}");
    ok(
        f.path(),
        &["verify", "--store", "store", "--pubkey", "key.pub", "v1b.m"],
    );
    ok(f.path(), &["scrub", "--store", "store"]);
    ok(
        f.path(),
        &[
            "assemble", "--store", "store", "--pubkey", "key.pub", "v1b.m", "out.img",
        ],
    );
    assert!(
        fs::read(f.path().join("v1.img")).unwrap() == fs::read(f.path().join("out.img")).unwrap(),
        "assembled bytes differ"
    );
    // The manifest records the stored length of what is really there.
    let inspect = json(f.path(), &["inspect", "v1b.m", "--json"]);
    let on_disk: u64 = f
        .chunk_files()
        .iter()
        .map(|p| fs::metadata(p).unwrap().len() - 5)
        .sum();
    assert_eq!(inspect["summary"]["unique_stored_bytes"], on_disk);
}

fn pack_bytes(store: &Path) -> u64 {
    fs::read_dir(store.join("packs"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
                .map(|e| e.metadata().unwrap().len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn kill_9_during_a_build_into_a_pack_store_leaves_whole_chunks_and_the_build_resumes() {
    let f = Fixture::new(1 << 20);
    let mut big = vec![0u8; 160 << 20];
    testimage::Rng::new(7).fill(&mut big);
    fs::write(f.path().join("big.img"), &big).unwrap();
    let mut child = bin()
        .current_dir(f.path())
        .args(["build", "--store", "store", "--store-format", "packs"])
        .args(["--key", "key", "--name", "big", "--version", "1"])
        .args(["big.img", "-o", "big.m", "--threads", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let store = f.path().join("store");
    let mut killed_mid_way = false;
    for _ in 0..4000 {
        if pack_bytes(&store) > 8 << 20 && child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL, in the middle of appending to the pack
            killed_mid_way = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait().unwrap();
    assert!(killed_mid_way, "build finished before it could be killed");
    assert!(!f.path().join("big.m").exists());
    // What the pack holds is whole (a torn tail is cut at open), and readable as a store.
    let scrub = json(f.path(), &["scrub", "--store", "store", "--json"]);
    assert_eq!(scrub["corrupt"], Value::Array(vec![]));
    let done = f.build("big.img", "1", "big.m");
    assert_eq!(done["size"], 160 << 20);
    assert!(
        done["reused_chunks"].as_u64().unwrap() > 0,
        "the chunks written before the kill were not kept: {done}"
    );
    ok(
        f.path(),
        &["verify", "--store", "store", "--pubkey", "key.pub", "big.m"],
    );
}

#[test]
fn a_pack_store_imports_assembles_and_collects_like_a_file_store() {
    let f = Fixture::new(16 << 20);
    let build = |image, version, manifest| f.build_into("packs", image, version, manifest);
    build("v1.img", "1", "v1.m");
    build("v2.img", "2", "v2.m");
    assert!(!f.path().join("store/chunks").exists());
    ok(
        f.path(),
        &[
            "assemble", "--store", "store", "--pubkey", "key.pub", "v2.m", "v2.out",
        ],
    );
    assert!(
        fs::read(f.path().join("v2.img")).unwrap() == fs::read(f.path().join("v2.out")).unwrap()
    );
    let only_v1 = json(f.path(), &["diff", "v2.m", "v1.m", "--json"])["new_chunks"]
        .as_u64()
        .unwrap();
    let done = json(
        f.path(),
        &["gc", "--store", "store", "--keep", "v2.m", "--json"],
    );
    assert_eq!(done["removed"].as_u64().unwrap(), only_v1);
    // Removed for good: a second pass finds nothing more, v1 no longer verifies, v2 does.
    let again = json(
        f.path(),
        &["gc", "--store", "store", "--keep", "v2.m", "--json"],
    );
    assert_eq!(again["removed"], 0);
    ok(
        f.path(),
        &["verify", "--store", "store", "--pubkey", "key.pub", "v2.m"],
    );
    let out = run(
        f.path(),
        &["verify", "--store", "store", "--pubkey", "key.pub", "v1.m"],
    );
    assert_eq!(out.status.code(), Some(3));
    // An unrelated master, then collected: its pack goes whole.
    let base = pack_bytes(&f.path().join("store"));
    let other = testimage::image_bytes(16 << 20, 99);
    testimage::write_sparse(&f.path().join("other.img"), &other).unwrap();
    build("other.img", "3", "other.m");
    let grown = pack_bytes(&f.path().join("store"));
    json(
        f.path(),
        &["gc", "--store", "store", "--keep", "v2.m", "--json"],
    );
    let after = pack_bytes(&f.path().join("store"));
    assert!(
        after < base + (grown - base) / 10,
        "{base} -> {grown} -> {after}"
    );
    ok(
        f.path(),
        &["verify", "--store", "store", "--pubkey", "key.pub", "v2.m"],
    );
}

#[test]
fn convert_moves_a_store_between_formats_leaving_corrupt_chunks_behind() {
    let f = Fixture::new(16 << 20);
    f.build("v1.img", "1", "v1.m");
    let files = f.chunk_files();
    let mut rotten = fs::read(&files[0]).unwrap();
    let last = rotten.len() - 1;
    rotten[last] ^= 0x40;
    fs::write(&files[0], rotten).unwrap();
    // What needs a file store says how to get one from a pack store, and the reverse.
    let r = json(
        f.path(),
        &["convert", "--store", "store", "--to", "packs", "--json"],
    );
    assert_eq!(r["from"], "files");
    assert_eq!(r["chunks"].as_u64().unwrap(), files.len() as u64 - 1);
    assert_eq!(r["corrupt"].as_array().unwrap().len(), 1);
    assert!(f.path().join("store/packs").is_dir());
    assert!(!f.path().join("store/chunks").exists());
    assert!(!f.path().join(".store.nc-convert").exists());
    // The second compression pass works on a pack store as on a file store.
    let t = json(f.path(), &["tighten", "--store", "store", "--json"]);
    assert!(t["tightened"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(t["chunks"].as_u64().unwrap(), files.len() as u64 - 1);
    // The corrupt chunk counts as missing; importing again repairs it.
    let out = run(
        f.path(),
        &["verify", "--store", "store", "--pubkey", "key.pub", "v1.m"],
    );
    assert_eq!(out.status.code(), Some(3));
    f.build("v1.img", "1", "v1.m");
    let back = json(
        f.path(),
        &["convert", "--store", "store", "--to", "files", "--json"],
    );
    assert_eq!(back["chunks"].as_u64().unwrap(), files.len() as u64);
    assert_eq!(f.chunk_files().len(), files.len());
    ok(
        f.path(),
        &["verify", "--store", "store", "--pubkey", "key.pub", "v1.m"],
    );
    let same = ok(f.path(), &["convert", "--store", "store", "--to", "files"]);
    assert!(same.contains("already"), "{same}");
}
