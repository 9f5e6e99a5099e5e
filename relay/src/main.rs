//! `nightcast-relay`: the per-site cache. Only its command line exists yet; the relay issue builds it.

use clap::Parser;

/// The nightcast relay: sits on a site's VLAN, fetches the chunks its site lacks during the night
/// window, and serves them to the site's NUCs all day.
///
/// Not built yet: this release only has the master tools (`nightcast-image`). Running it prints
/// this help and exits with code 2.
#[derive(Debug, Parser)]
#[command(name = "nightcast-relay", version)]
struct Cli {}

fn main() {
    Cli::parse();
    eprintln!("nightcast-relay: not built yet (see --help)");
    std::process::exit(2);
}
