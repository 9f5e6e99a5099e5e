//! `nightcast-agent`: runs on each NUC. Only its command line exists yet; the agent issue builds it.

use clap::Parser;

/// The nightcast node agent: keeps the NUC's master current (fetched from the site relay, verified,
/// swapped in between sessions) and resets the workstation after every session.
///
/// Not built yet: this release only has the master tools (`nightcast-image`). Running it prints
/// this help and exits with code 2.
#[derive(Debug, Parser)]
#[command(name = "nightcast-agent", version)]
struct Cli {}

fn main() {
    Cli::parse();
    eprintln!("nightcast-agent: not built yet (see --help)");
    std::process::exit(2);
}
