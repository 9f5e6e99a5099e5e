//! `nightcast master import` refuses before any work: a name and version that exist already (not
//! after chunking the whole image into the store), and a file that is no disk (a 6-byte text file,
//! random bytes), unless the DSI insists with `--force`.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::util::{init_controller, nightcast, Controller};

/// `nightcast master import FILE --name win10 --version VERSION EXTRA...`.
fn import(c: &Controller, data: &Path, file: &Path, version: &str, extra: &[&str]) -> Output {
    let f = file.to_str().unwrap();
    let args = [
        &[
            "master",
            "import",
            f,
            "--name",
            "win10",
            "--version",
            version,
        ][..],
        extra,
    ];
    nightcast(c, data, &args.concat())
}

/// An 8 MiB disk image (an MBR at its start) at `path`, its bytes drawn from `seed`.
fn disk(path: PathBuf, seed: u64) -> PathBuf {
    image_tools::testimage::write_sparse(&path, &image_tools::testimage::disk_bytes(8 << 20, seed))
        .unwrap();
    path
}

/// Chunks in the controller's store.
fn stored(data: &Path) -> usize {
    std::fs::read_dir(data.join("store/chunks"))
        .map(|dirs| {
            dirs.map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_master_import_refuses_an_existing_version_and_a_file_that_is_no_disk_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = init_controller(dir.path());
    let c = Controller::start(&data);
    let import =
        |file: &Path, version: &str, extra: &[&str]| import(&c, &data, file, version, extra);
    let refused = |out: Output| {
        assert!(!out.status.success(), "{out:?}");
        String::from_utf8(out.stderr).unwrap()
    };

    // A 6-byte text file: too small to be a disk.
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello\n").unwrap();
    let e = refused(import(&text, "1", &[]));
    assert!(
        e.contains("notes.txt is 6 bytes: too small to be a disk image") && e.contains("--force"),
        "{e}"
    );
    // 2 MiB of random bytes: no partition table, no file system.
    let noise = dir.path().join("noise.bin");
    let mut bytes = vec![0u8; 2 << 20];
    image_tools::testimage::Rng::new(7).fill(&mut bytes);
    std::fs::write(&noise, &bytes).unwrap();
    let e = refused(import(&noise, "1", &[]));
    assert!(e.contains("noise.bin is not a disk image"), "{e}");
    let e = refused(import(&noise, "1", &["--format", "raw"]));
    assert!(e.contains("not a disk image"), "{e}");
    assert_eq!(stored(&data), 0, "a refused import wrote chunks");

    // A disk (an MBR at its start) imports; the same version again is refused at once, naming
    // what to do, and nothing of the second image reaches the store.
    let win10 = disk(dir.path().join("win10.img"), 2);
    assert!(import(&win10, "1", &[]).status.success());
    let before = stored(&data);
    let other = disk(dir.path().join("win10-new.img"), 9);
    let e = refused(import(&other, "1", &[]));
    assert!(
        e.contains("master win10 1 already exists")
            && e.contains("nightcast master rm win10 1")
            && !e.contains("UNIQUE"),
        "{e}"
    );
    assert_eq!(
        stored(&data),
        before,
        "the refused import chunked the image anyway"
    );

    // The DSI insists: the text file is imported as a (tiny) raw master.
    let out = import(&text, "2", &["--force"]);
    assert!(out.status.success(), "{out:?}");
    let list = String::from_utf8(nightcast(&c, &data, &["master", "list"]).stdout).unwrap();
    assert!(
        list.lines().filter(|l| l.starts_with("win10")).count() == 2,
        "{list}"
    );
}

#[test]
fn a_controller_configured_for_packs_imports_through_the_admin_api_into_a_pack_store() {
    use image_tools::store::{open_disk_store, Format};
    let dir = tempfile::tempdir().unwrap();
    let data = init_controller(dir.path());
    let config = dir.path().join("controller.toml");
    std::fs::write(&config, "[store]\nformat = \"packs\"\ntighten_level = 0\n").unwrap();
    let c = Controller::start_full(&data, &[], Some(&config));
    // The import's chunks are checked through the daemon's own store handle before the
    // catalogue records the master.
    let out = import(&c, &data, &disk(dir.path().join("win10.img"), 2), "1", &[]);
    assert!(out.status.success(), "{out:?}");
    let store = data.join("store");
    assert_eq!(Format::of(&store).unwrap(), Some(Format::Packs));
    assert!(!store.join("chunks").exists());
    let chunks = open_disk_store(&store, Format::Files)
        .unwrap()
        .size()
        .unwrap()
        .chunks;
    assert!(chunks > 0, "no chunk in the pack store");
}
