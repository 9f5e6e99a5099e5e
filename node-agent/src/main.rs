//! `nightcast-agent`: runs on each NUC. Only local commands exist yet; the agent issue builds the
//! rest (enrolment, fetching, sessions) on the `nightcast_agent` library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The nightcast node agent: keeps the NUC's master current (fetched from the site relay, verified,
/// swapped in between sessions) and resets the workstation after every session.
///
/// Not built yet: only `identity` works. Running it without a command prints a notice and exits
/// with code 2.
#[derive(Debug, Parser)]
#[command(name = "nightcast-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print this machine's hardware id (the node id it enrols with), its source, and the MAC
    /// addresses of its network interfaces. Exits 1 when no usable id is found.
    Identity {
        /// Read the machine's files under this root instead of `/` (for tests and rescue media).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => {
            eprintln!("nightcast-agent: not built yet (see --help)");
            ExitCode::from(2)
        }
        Some(Command::Identity { root }) => match identity(&root) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("nightcast-agent: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

fn identity(root: &std::path::Path) -> anyhow::Result<()> {
    let id = nightcast_agent::identity::hardware_id(root)?;
    println!("id: {}", id.id);
    println!("source: {}", id.source);
    // The MACs are a convenience for Wake-on-LAN; their absence does not make the id wrong.
    for m in nightcast_agent::identity::interface_macs(root).unwrap_or_default() {
        let kind = if m.physical { "physical" } else { "virtual" };
        println!("mac: {} {} {kind}", m.interface, m.mac);
    }
    Ok(())
}
