//! `nightcast`: the DSI's command. For now it has `demo`; the admin commands (sites, calendar, plan,
//! fleet) arrive with the controller.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;

/// nightcast distributes training-room masters (VM disk images) to mini-PC fleets: chunked,
/// deduplicated and signed at the controller, fetched by each site's relay at night, swapped in by
/// each NUC at a session boundary.
#[derive(Debug, Parser)]
#[command(name = "nightcast", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show nightcast at work on this machine: build a master and its next version from generated
    /// images, verify them, and assemble them as a NUC would. Needs nothing but a temp directory.
    Demo {
        /// Keep the demo's files in this directory instead of a temp dir removed at the end.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Size of the generated master, in MiB.
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    image_tools::cli::init_logging("warn");
    let result = match cli.command {
        Command::Demo { dir, size_mib } => demo::run(dir, size_mib),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
