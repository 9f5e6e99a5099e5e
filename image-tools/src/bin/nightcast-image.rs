//! `nightcast-image`: build, verify and assemble masters. All logic is in `image_tools::cli`.

use std::process::ExitCode;

use clap::Parser;
use image_tools::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    cli::init_logging(level);
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}
