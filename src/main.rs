//! `nightcast`: the DSI's command. `demo` runs on its own; every other command talks to the
//! controller's admin API (`nightcast-controller serve --api`), with the admin token.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod admin;
mod client;
mod demo;
mod local_time;
mod push_words;

/// nightcast distributes training-room masters (VM disk images) to mini-PC fleets: chunked,
/// deduplicated and signed at the controller, fetched by each site's relay at night, swapped in by
/// each NUC at a session boundary.
#[derive(Debug, Parser)]
#[command(name = "nightcast", version)]
struct Cli {
    /// The controller's admin API.
    #[arg(
        long,
        global = true,
        env = "NIGHTCAST_API",
        default_value = "http://127.0.0.1:8644"
    )]
    api: String,
    /// File holding the admin token (the controller's DATA/admin.token). NIGHTCAST_TOKEN may hold
    /// the token itself instead.
    #[arg(long, global = true, env = "NIGHTCAST_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Print results as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds the admin API may stay silent while answering before the command gives up (an
    /// import waits up to 4 hours).
    #[arg(long, global = true, default_value_t = 60)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show a whole fleet at work on this machine, through one accelerated night: a controller,
    /// two site relays and three NUCs per site as real processes on loopback. Needs no root and no
    /// network, only `qemu-img` (package qemu-utils) for the NUCs' session disks; cleans up after
    /// itself, even on Ctrl-C.
    Demo {
        /// Keep the demo's files (data directories, logs) here instead of a temp dir.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Size of the generated master, in MiB.
        #[arg(long, default_value_t = 64)]
        size_mib: u64,
        /// Boot a real workstation instead: one site, one NUC whose agent runs QEMU, and a
        /// bootable Debian master; the demo says when its guest is up. Give a raw disk image to
        /// use, or nothing to build one (needs root, network and mmdebstrap; a few minutes).
        /// Needs qemu-system-x86_64 and ovmf.
        #[arg(long, value_name = "IMAGE", num_args = 0..=1, default_missing_value = "")]
        real_vm: Option<PathBuf>,
        /// With --real-vm: kvm (fast, needs /dev/kvm), tcg (emulated, slow but works anywhere),
        /// or auto (KVM, and TCG when KVM cannot run the guest, reported).
        #[arg(long, default_value = "auto", value_parser = ["auto", "kvm", "tcg"], requires = "real_vm")]
        accel: String,
    },
    #[command(flatten)]
    Admin(admin::Admin),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    image_tools::cli::init_logging("warn");
    let result = match cli.command {
        Command::Demo {
            dir,
            real_vm: Some(image),
            accel,
            ..
        } => {
            let image = (!image.as_os_str().is_empty()).then_some(image);
            demo::run_real_vm(dir, image, &accel)
        }
        Command::Demo { dir, size_mib, .. } => demo::run(dir, size_mib),
        Command::Admin(cmd) => admin::token(cli.token_file.as_deref())
            .and_then(|token| {
                client::Client::new(&cli.api, token, Duration::from_secs(cli.timeout))
            })
            .and_then(|client| admin::run(&client, cmd, cli.json)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
