//! The `nightcast-image` command line: build, verify, assemble, compare and maintain masters.
//!
//! Exit codes (documented in `--help`): 0 success; 1 an operational error (a file that cannot be read
//! or written, a full disk, a busy store); 2 a usage error; 3 an integrity failure (a bad signature, a
//! forged or truncated manifest, a corrupt or missing chunk): the thing checked must not be used.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::assemble::{self, Seed};
use crate::chunker::ChunkParams;
use crate::durable;
use crate::ids::{MasterName, MasterVersion};
use crate::import::{self, ImageFormat, ImportError, ImportOptions};
use crate::keys::{self, PublicKey, SigningKey};
use crate::manifest::{self, Manifest, VerifiedManifest};
use crate::store::{open_disk_store, Format};

mod maintain;

const EXIT_CODES: &str = "Exit codes: 0 success; 1 operational error (unreadable file, full disk, busy store); \
2 usage error; 3 integrity failure (bad signature, forged or truncated manifest, corrupt or missing chunk, \
an image that refers to other files).";

/// Build, check and assemble nightcast masters: disk images cut into deduplicated, compressed chunks
/// and described by a signed manifest.
#[derive(Debug, Parser)]
#[command(name = "nightcast-image", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Log more (repeat for debug output). NIGHTCAST_LOG=... overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a manifest-signing key: KEY (secret, mode 0600) and KEY.pub (to give to relays and NUCs).
    Keygen {
        /// Where to write the secret key; the public key goes to the same path plus `.pub`.
        #[arg(long)]
        out: PathBuf,
    },
    /// Import a disk image as a master version: new chunks go into the store, a signed manifest is written.
    ///
    /// Raw images are read directly; qcow2, VMDK, VHD, VHDX and VDI are converted first with
    /// `qemu-img` (Debian package qemu-utils). Only the image itself is read: one with a backing
    /// file, an external data file or VMDK extents in other files is refused (exit code 3). Chunks
    /// the store already holds cost nothing once they verify; corrupt ones are replaced.
    Build {
        #[command(flatten)]
        store: StoreArg,
        /// The secret signing key (from `keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Master name, e.g. `win10-bureautique` (letters, digits, `.`, `_`, `-`).
        #[arg(long)]
        name: MasterName,
        /// Version label, e.g. `2026-11`.
        #[arg(long)]
        version: MasterVersion,
        /// The disk image to import.
        image: PathBuf,
        /// The image's format: raw, qcow2, vmdk, vhdx, vpc (VHD) or vdi. Without it, it is detected
        /// from the first bytes (then pass `--format raw` for a raw disk that a guest made look
        /// like another format).
        #[arg(long)]
        format: Option<ImageFormat>,
        /// Where to write the signed manifest.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Average chunk size in KiB (min is a quarter, max four times); without it, nightcast's
        /// default (64 KiB, see docs/BENCHMARKS.md). Masters share chunks only at the same size.
        #[arg(long)]
        avg_chunk_kib: Option<u32>,
        /// How a store this command creates keeps its chunks: "files" (one file per chunk, what
        /// relays and NUCs read today) or "packs" (chunks appended to a few large pack files: a
        /// faster import, see docs/BENCHMARKS.md). An existing store keeps its own format.
        #[arg(long, default_value = "files", value_name = "FORMAT")]
        store_format: Format,
        #[command(flatten)]
        common: Common,
    },
    /// Check a manifest's signature and every chunk it needs in the store.
    Verify {
        #[command(flatten)]
        store: StoreArg,
        /// The controller's public key (KEY.pub).
        #[arg(long)]
        pubkey: PathBuf,
        /// The manifest file (`.m`) to check.
        manifest: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Write the disk image a manifest describes: verified, sparse, and renamed into place only when complete.
    Assemble {
        #[command(flatten)]
        store: StoreArg,
        /// The controller's public key (KEY.pub).
        #[arg(long)]
        pubkey: PathBuf,
        /// The manifest file (`.m`) of the master version to write.
        manifest: PathBuf,
        /// The image file to write.
        out: PathBuf,
        /// An older image to take chunks from first (only the rest is read from the store).
        #[arg(long, requires = "seed_manifest")]
        seed: Option<PathBuf>,
        /// The manifest of the --seed image.
        #[arg(long, requires = "seed")]
        seed_manifest: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// What NEW needs beyond OLD: the chunks and bytes a site holding OLD would download.
    Diff {
        /// The manifest of the version the site holds.
        old: PathBuf,
        /// The manifest of the version it would get.
        new: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what a manifest describes: master, version, size, chunks, holes, signer.
    Inspect {
        /// The manifest file (`.m`).
        manifest: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove every chunk that none of the kept manifests uses. Refuses to run while anything writes
    /// to the store (an import, a running relay or agent).
    Gc {
        #[command(flatten)]
        store: StoreArg,
        /// A manifest whose chunks must stay (repeat for each master version to keep).
        #[arg(long = "keep", required = true, num_args = 1..)]
        keep: Vec<PathBuf>,
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read every chunk in a store and report the corrupt ones (with --repair, remove them so they are fetched again).
    Scrub {
        #[command(flatten)]
        store: StoreArg,
        /// Remove the corrupt chunks (a relay or NUC fetches them again; on the controller,
        /// import the master again).
        #[arg(long)]
        repair: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compress the store's chunks again, slowly and harder, so that sites download fewer bytes.
    /// Only chunks not done before are worked on (run it after each import); chunks keep their
    /// ids and stay readable by every nightcast version; imports and transfers go on meanwhile.
    Tighten {
        #[command(flatten)]
        store: StoreArg,
        /// zstd level, 1 to 22: higher is smaller and slower (imports use 1).
        #[arg(long, default_value_t = crate::chunk::TIGHT_LEVEL,
              value_parser = clap::value_parser!(i32).range(1..=22))]
        level: i32,
        /// Worker threads (0 = one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Convert a store in place to the other way of keeping chunks on disk ("files" or "packs").
    /// Every chunk is checked on the way; corrupt ones are left behind and reported. Needs free
    /// space for a second copy of the store meanwhile, and nothing else using the store (stop the
    /// relay or agent first). An interrupted conversion leaves a working store: the old one, or
    /// the converted one if it got that far.
    Convert {
        #[command(flatten)]
        store: StoreArg,
        /// The format to convert to: "files" (one file per chunk) or "packs" (pack files).
        #[arg(long, value_name = "FORMAT")]
        to: Format,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct StoreArg {
    /// The chunk store directory (created on first use).
    #[arg(long = "store")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct Common {
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Sends logs to stderr at `default` level (`error`..`trace`); `NIGHTCAST_LOG` (an env-filter
/// directive such as `info,image_tools=debug`) overrides it. Every nightcast binary calls this once.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NIGHTCAST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// A failed command: what to print and which exit code to return.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure {
            code: 1,
            error: e.into(),
        }
    }
}

fn integrity(error: anyhow::Error) -> Failure {
    Failure { code: 3, error }
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Keygen { out } => {
            let key = SigningKey::generate()?;
            let pub_path = key.save(&out)?;
            println!(
                "secret key: {} (keep it on the controller only)",
                out.display()
            );
            println!(
                "public key: {} ({})",
                pub_path.display(),
                key.public().short()
            );
            Ok(())
        }
        Command::Build {
            store,
            key,
            name,
            version,
            image,
            format,
            output,
            avg_chunk_kib,
            store_format,
            common,
        } => build(
            (&store.dir, store_format),
            &key,
            name,
            version,
            (&image, format),
            &output,
            avg_chunk_kib,
            &common,
        ),
        Command::Verify {
            store,
            pubkey,
            manifest,
            common,
        } => verify(&store.dir, &pubkey, &manifest, &common),
        Command::Assemble {
            store,
            pubkey,
            manifest,
            out,
            seed,
            seed_manifest,
            common,
        } => assemble_cmd(
            &store.dir,
            &pubkey,
            &manifest,
            &out,
            seed.zip(seed_manifest),
            &common,
        ),
        Command::Diff { old, new, json } => diff(&old, &new, json),
        Command::Inspect { manifest, json } => inspect(&manifest, json),
        Command::Gc {
            store,
            keep,
            dry_run,
            json,
        } => maintain::gc(&store.dir, &keep, dry_run, json),
        Command::Scrub {
            store,
            repair,
            json,
        } => maintain::scrub(&store.dir, repair, json),
        Command::Tighten {
            store,
            level,
            threads,
            json,
        } => maintain::tighten(&store.dir, level, threads, json),
        Command::Convert { store, to, json } => maintain::convert(&store.dir, to, json),
    }
}

/// A progress bar on a terminal, nothing otherwise; `update(done, total)` feeds it.
fn progress_bar(what: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:10} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

fn update(bar: &ProgressBar) -> impl Fn(u64, u64) + Sync + '_ {
    move |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    }
}

/// Reads a manifest file, refusing absurd sizes before reading.
fn read_manifest_bytes(path: &Path) -> Result<Vec<u8>, Failure> {
    let file =
        fs::File::open(path).with_context(|| format!("cannot open manifest {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > manifest::MAX_MANIFEST_BYTES {
        return Err(integrity(anyhow!(
            "{} is {len} bytes: too large to be a manifest",
            path.display()
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(manifest::MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read manifest {}", path.display()))?;
    Ok(bytes)
}

fn open_verified(path: &Path, pubkey: &Path) -> Result<VerifiedManifest, Failure> {
    let key = PublicKey::load(pubkey)?;
    let bytes = read_manifest_bytes(path)?;
    VerifiedManifest::open(bytes, &key)
        .with_context(|| format!("refusing manifest {}", path.display()))
        .map_err(integrity)
}

fn open_unverified(path: &Path) -> Result<manifest::Unverified, Failure> {
    let bytes = read_manifest_bytes(path)?;
    Manifest::decode_unverified(&bytes)
        .with_context(|| format!("refusing manifest {}", path.display()))
        .map_err(integrity)
}

fn print_json(value: &impl Serialize) -> Result<(), Failure> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Bytes for people: `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

#[allow(clippy::too_many_arguments)]
fn build(
    (store_dir, store_format): (&Path, Format),
    key: &Path,
    name: MasterName,
    version: MasterVersion,
    (image, format): (&Path, Option<ImageFormat>),
    output: &Path,
    avg_chunk_kib: Option<u32>,
    common: &Common,
) -> Result<(), Failure> {
    let key = SigningKey::load(key)?;
    let params = match avg_chunk_kib {
        None => ChunkParams::DEFAULT,
        Some(kib) => {
            let params = ChunkParams::with_avg(kib.saturating_mul(1024));
            params
                .validate()
                .map_err(|e| anyhow!("--avg-chunk-kib {kib}: {e}"))?;
            params
        }
    };
    let store = open_disk_store(store_dir, store_format)?;
    let opts = ImportOptions {
        name,
        version,
        params,
        threads: common.threads,
    };
    let bar = progress_bar("import");
    let result = import::import_file(image, format, &*store, &key, &opts, &update(&bar));
    bar.finish_and_clear();
    let report = result.map_err(|e| match e {
        ImportError::Refused { .. } => integrity(e.into()),
        other => other.into(),
    })?;
    durable::write_file(output, report.manifest.bytes(), 0o644)
        .with_context(|| format!("cannot write manifest {}", output.display()))?;
    let s = report.manifest.summary();
    tracing::info!(master = %opts.name, version = %opts.version, new_chunks = report.new_chunks, "imported");
    if common.json {
        #[derive(Serialize)]
        struct Out<'a> {
            manifest: String,
            name: &'a str,
            version: &'a str,
            size: u64,
            converted_from: Option<&'a str>,
            new_chunks: u64,
            new_stored_bytes: u64,
            reused_chunks: u64,
            replaced_chunks: u64,
            summary: manifest::Summary,
        }
        return print_json(&Out {
            manifest: output.display().to_string(),
            name: opts.name.as_str(),
            version: opts.version.as_str(),
            size: report.bytes_read,
            converted_from: report.converted_from.map(ImageFormat::as_str),
            new_chunks: report.new_chunks,
            new_stored_bytes: report.new_stored_bytes,
            reused_chunks: report.reused_chunks,
            replaced_chunks: report.replaced_chunks,
            summary: s,
        });
    }
    println!(
        "{} {}: {} image, {} chunks ({} distinct), {} in {} holes",
        opts.name,
        opts.version,
        human(report.bytes_read),
        s.chunks,
        s.unique_chunks,
        human(s.hole_bytes),
        s.holes
    );
    println!(
        "store: {} new chunks, {} added; {} chunks were already there",
        report.new_chunks,
        human(report.new_stored_bytes),
        report.reused_chunks
    );
    if report.replaced_chunks > 0 {
        println!(
            "store: {} corrupt chunk files were replaced by the image's bytes (run scrub to check the rest)",
            report.replaced_chunks
        );
    }
    println!("manifest: {}", output.display());
    Ok(())
}

fn verify(
    store_dir: &Path,
    pubkey: &Path,
    manifest_path: &Path,
    common: &Common,
) -> Result<(), Failure> {
    let manifest = open_verified(manifest_path, pubkey)?;
    let store = open_disk_store(store_dir, Format::Files)?;
    let bar = progress_bar("verify");
    let report = assemble::verify(&manifest, &*store, common.threads, &update(&bar));
    bar.finish_and_clear();
    if common.json {
        #[derive(Serialize)]
        struct Fault {
            chunk: String,
            offset: u64,
            error: String,
        }
        #[derive(Serialize)]
        struct Out {
            ok: bool,
            chunks_checked: u64,
            bytes_checked: u64,
            faults: Vec<Fault>,
        }
        print_json(&Out {
            ok: report.faults.is_empty(),
            chunks_checked: report.chunks_checked,
            bytes_checked: report.bytes_checked,
            faults: report
                .faults
                .iter()
                .map(|f| Fault {
                    chunk: f.id.to_string(),
                    offset: f.offset,
                    error: f.error.to_string(),
                })
                .collect(),
        })?;
    } else {
        for f in &report.faults {
            eprintln!(
                "bad chunk {} at offset {} of the image: {}",
                f.id, f.offset, f.error
            );
        }
    }
    if report.faults.is_empty() {
        if !common.json {
            println!(
                "ok: {} {} signed by {}, {} chunks ({}) verified",
                manifest.name,
                manifest.version,
                manifest.signer().short(),
                report.chunks_checked,
                human(report.bytes_checked)
            );
        }
        Ok(())
    } else {
        Err(integrity(anyhow!(
            "verify failed: {} of {} chunks of {} {} are missing or corrupt",
            report.faults.len(),
            report.chunks_checked,
            manifest.name,
            manifest.version
        )))
    }
}

fn assemble_cmd(
    store_dir: &Path,
    pubkey: &Path,
    manifest_path: &Path,
    out: &Path,
    seed: Option<(PathBuf, PathBuf)>,
    common: &Common,
) -> Result<(), Failure> {
    let manifest = open_verified(manifest_path, pubkey)?;
    let store = open_disk_store(store_dir, Format::Files)?;
    // The seed's manifest needs no signature: every chunk read from the seed is hashed.
    let seed_manifest = match &seed {
        Some((_, m)) => Some(open_unverified(m)?.manifest),
        None => None,
    };
    let seed = seed
        .as_ref()
        .zip(seed_manifest.as_ref())
        .map(|((image, _), manifest)| Seed {
            image: image.as_path(),
            manifest,
        });
    let bar = progress_bar("assemble");
    let result = assemble::assemble(
        &manifest,
        &*store,
        out,
        seed.as_slice(),
        common.threads,
        &update(&bar),
    );
    bar.finish_and_clear();
    let report = result.map_err(|e| match e {
        assemble::AssembleError::Chunk { .. } => integrity(anyhow!(e).context(format!(
            "assembly of {} stopped; {} was not written",
            manifest_path.display(),
            out.display()
        ))),
        other => other.into(),
    })?;
    if common.json {
        return print_json(&report);
    }
    println!(
        "{}: {} {} ({}), {} chunks from the seed, {} from the store, {} holes left sparse",
        out.display(),
        manifest.name,
        manifest.version,
        human(report.bytes),
        report.from_seed,
        report.from_store,
        report.holes
    );
    Ok(())
}

/// The download NEW costs a site that holds OLD.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct DiffReport {
    pub old: String,
    pub new: String,
    /// Distinct chunks of NEW that OLD lacks.
    pub new_chunks: u64,
    pub new_raw_bytes: u64,
    /// What would cross the network (stored, compressed form).
    pub new_stored_bytes: u64,
    /// Distinct chunks of NEW that OLD already has.
    pub shared_chunks: u64,
    pub shared_raw_bytes: u64,
    pub new_image_size: u64,
    /// NEW's manifest, whole.
    pub manifest_bytes: u64,
    /// NEW's manifest as a delta to OLD's (what a relay holding OLD receives: the delta and
    /// OLD's hash, `GetManifestAgainst`).
    pub manifest_delta_bytes: u64,
}

pub fn diff_manifests(old: &Manifest, new: &Manifest) -> DiffReport {
    let have: std::collections::HashSet<_> = old.chunks().map(|c| c.id).collect();
    let mut r = DiffReport {
        old: format!("{} {}", old.name, old.version),
        new: format!("{} {}", new.name, new.version),
        new_chunks: 0,
        new_raw_bytes: 0,
        new_stored_bytes: 0,
        shared_chunks: 0,
        shared_raw_bytes: 0,
        new_image_size: new.size,
        manifest_bytes: 0,
        manifest_delta_bytes: 0,
    };
    for c in new.unique_chunks() {
        if have.contains(&c.id) {
            r.shared_chunks += 1;
            r.shared_raw_bytes += u64::from(c.len);
        } else {
            r.new_chunks += 1;
            r.new_raw_bytes += u64::from(c.len);
            r.new_stored_bytes += u64::from(c.stored_len);
        }
    }
    r
}

fn diff(old: &Path, new: &Path, json: bool) -> Result<(), Failure> {
    let (old_bytes, new_bytes) = (read_manifest_bytes(old)?, read_manifest_bytes(new)?);
    let (old, new) = (
        open_unverified(old)?.manifest,
        open_unverified(new)?.manifest,
    );
    let mut r = diff_manifests(&old, &new);
    r.manifest_bytes = new_bytes.len() as u64;
    r.manifest_delta_bytes = crate::manifest_delta::encode(&old_bytes, &new_bytes)
        .map(|d| d.len() as u64 + 32)
        .map_err(|e| anyhow::anyhow!("cannot make the manifest delta: {e}"))?;
    if json {
        return print_json(&r);
    }
    println!("{} -> {}", r.old, r.new);
    println!(
        "to download: {} chunks, {} ({} uncompressed)",
        r.new_chunks,
        human(r.new_stored_bytes),
        human(r.new_raw_bytes)
    );
    println!(
        "already there: {} chunks ({} uncompressed); holes cost nothing",
        r.shared_chunks,
        human(r.shared_raw_bytes)
    );
    println!(
        "manifest: {}, as a delta to OLD's {}",
        human(r.manifest_bytes),
        human(r.manifest_delta_bytes)
    );
    Ok(())
}

fn inspect(path: &Path, json: bool) -> Result<(), Failure> {
    let u = open_unverified(path)?;
    let m = &u.manifest;
    let s = m.summary();
    let signer = crate::ids::hex(&u.signer);
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            name: &'a str,
            version: &'a str,
            size: u64,
            format_version: u16,
            chunk_min: u32,
            chunk_avg: u32,
            chunk_max: u32,
            hole_min: u32,
            root: String,
            signer: String,
            summary: manifest::Summary,
        }
        return print_json(&Out {
            name: m.name.as_str(),
            version: m.version.as_str(),
            size: m.size,
            format_version: manifest::FORMAT_VERSION,
            chunk_min: m.params.min,
            chunk_avg: m.params.avg,
            chunk_max: m.params.max,
            hole_min: m.params.hole_min,
            root: crate::ids::hex(&u.root),
            signer,
            summary: s,
        });
    }
    println!("master:   {} {}", m.name, m.version);
    println!("size:     {} ({} bytes)", human(m.size), m.size);
    println!(
        "chunks:   {} ({} distinct), {} data; avg target {}",
        s.chunks,
        s.unique_chunks,
        human(s.data_bytes),
        human(u64::from(m.params.avg))
    );
    println!("holes:    {} ({})", s.holes, human(s.hole_bytes));
    println!(
        "download: {} compressed for a site that has none of it",
        human(s.unique_stored_bytes)
    );
    println!("root:     {}", crate::ids::hex(&u.root));
    println!("signer:   {signer} (not checked here: use verify --pubkey)");
    Ok(())
}

/// The public key path that `keygen --out KEY` writes.
pub fn public_key_path(key: &Path) -> PathBuf {
    keys::public_path(key)
}
