//! `nightcast-agent`: runs on each NUC. Only local commands exist yet; the agent issue builds the
//! rest (enrolment, fetching, sessions) on the `nightcast_agent` library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The nightcast node agent: keeps the NUC's master current (fetched from the site relay, verified,
/// swapped in between sessions) and resets the workstation after every session.
///
/// Run it as a service: `nightcast-agent run` (see node-agent/nightcast-agent.service). With no
/// configuration it finds its site's relay on the network and enrols through it by itself.
#[derive(Debug, Parser)]
#[command(name = "nightcast-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: get the seat's masters from the relay, run the sessions, reset after each.
    /// Stops cleanly on SIGTERM or Ctrl-C. No configuration file is needed.
    Run {
        #[command(flatten)]
        files: image_tools::config::Files,
        /// The relay's address (overrides the config file's; default: ask the network).
        #[arg(long)]
        relay: Option<std::net::SocketAddr>,
    },
    /// Go back to the previous master (the agent must be stopped). The version left is marked bad
    /// on this NUC: not swapped in again until the DSI republishes it. The agent also does this by
    /// itself when a new master does not come up.
    Rollback {
        #[arg(long, default_value = "/var/lib/nightcast/agent")]
        data: PathBuf,
    },
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
    image_tools::cli::init_logging("info");
    match cli.command {
        None => {
            eprintln!("nightcast-agent: give a command (see --help)");
            ExitCode::from(2)
        }
        Some(Command::Run { files, relay }) => match run(files, relay) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("nightcast-agent: {e:#}");
                ExitCode::from(1)
            }
        },
        Some(Command::Rollback { data }) => match rollback(&data) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("nightcast-agent: {e:#}");
                ExitCode::from(1)
            }
        },
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

fn run(
    files: image_tools::config::Files,
    relay: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    use nightcast_agent::config::Config;
    let mut cfg = match files.config {
        Some(path) => Config::load(&path)?,
        None => Config::default(),
    };
    cfg.data = files.data.unwrap_or(cfg.data);
    cfg.relay = relay.or(cfg.relay);
    cfg.validate()?;
    let clock = image_tools::clock::Clock::for_daemon()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = image_tools::signals::cancel_on_signals();
        nightcast_agent::daemon::run(cfg, clock, shutdown).await
    })
}

fn rollback(data: &std::path::Path) -> anyhow::Result<()> {
    use nightcast_agent::slots::{SlotName, Slots};
    use nightcast_agent::verdicts::{manifest_hash, BadMaster, Verdicts};
    let clock = image_tools::clock::Clock::from_env()?;
    let now = clock.now();
    let (mut slots, _) = Slots::open(data, now.max(0) as u64)?;
    let text = |slots: &Slots, slot| {
        slots
            .table()
            .get(slot)
            .map(|h| format!("{} {}", h.name, h.version))
            .unwrap_or_default()
    };
    let bad = slots.table().get(SlotName::Current).cloned();
    let manifest = slots
        .manifest_path(SlotName::Current)
        .and_then(|p| std::fs::read(p).ok())
        .map(|b| manifest_hash(&b))
        .unwrap_or_default();
    slots.rollback(now.max(0) as u64)?;
    // The version left is not swapped in again here until the DSI republishes it, as when the
    // agent rolls back by itself.
    if let Some(h) = bad {
        let mut verdicts = Verdicts::load(data).unwrap_or_else(|e| {
            eprintln!("nightcast-agent: {e}: starting a new record");
            Verdicts::default()
        });
        verdicts.trial = None;
        verdicts.mark_bad(BadMaster {
            master: image_tools::wire::MasterRef {
                name: h.name.clone(),
                version: h.version.clone(),
            },
            manifest,
            why: "rolled back by hand (nightcast-agent rollback)".into(),
            when: now,
        });
        verdicts.save(data)?;
        println!("marked bad on this NUC: {} {}", h.name, h.version);
    }
    println!(
        "rolled back: current is now {}",
        text(&slots, SlotName::Current)
    );
    Ok(())
}
