//! `nightcast-controller`: the central daemon (catalogue, training calendar, planner, chunk store,
//! signing key). Only its command line exists yet; the chunk-exchange and controller issues build it.

use clap::Parser;

/// The nightcast controller: holds the masters and the training calendar, and serves each site's
/// relay the chunks it lacks during the site's night window.
///
/// Not built yet: this release only has the master tools (`nightcast-image`). Running it prints
/// this help and exits with code 2.
#[derive(Debug, Parser)]
#[command(name = "nightcast-controller", version)]
struct Cli {}

fn main() {
    Cli::parse();
    eprintln!("nightcast-controller: not built yet (see --help); use nightcast-image for masters");
    std::process::exit(2);
}
