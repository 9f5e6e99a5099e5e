//! `nightcast-controller`: thin wrapper over the library; all logic is in `lib.rs`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use image_tools::wire::Role;
use image_tools::SiteId;
use nightcast_controller::{self as controller, DataDir};
use tokio_util::sync::CancellationToken;

/// The nightcast controller: holds the masters and the training calendar, and serves each site's
/// relay the chunks it lacks during the site's night window.
///
/// This release has the trust anchor and the chunk server: `init`, `token` to enrol relays, and
/// `serve`. The calendar and the planner come next.
#[derive(Debug, Parser)]
#[command(name = "nightcast-controller", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a controller data directory: certificate authority, manifest-signing key, chunk store.
    Init {
        #[arg(long)]
        data: PathBuf,
    },
    /// Print a one-time token that enrols one relay (or agent) of a site. Give it to whoever installs it.
    Token {
        #[arg(long)]
        data: PathBuf,
        /// relay or agent
        #[arg(long, value_parser = ["relay", "agent"])]
        role: String,
        /// The site the node belongs to, e.g. `lyon-mairie`.
        #[arg(long)]
        site: SiteId,
        /// How long the token stays valid, in hours.
        #[arg(long, default_value_t = 24)]
        ttl_hours: u64,
    },
    /// Serve relays: enrolment, manifests and chunks of what `schedule.txt` allows each site.
    Serve {
        #[arg(long)]
        data: PathBuf,
        /// Address to listen on (UDP, QUIC).
        #[arg(long, default_value = "0.0.0.0:4433")]
        listen: SocketAddr,
    },
}

/// The one place this program reads the wall clock.
#[allow(clippy::disallowed_methods)]
fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    image_tools::cli::init_logging("info");
    let result = match cli.command {
        Command::Init { data } => controller::init(&DataDir(data.clone())).map(|fp| {
            println!("controller initialised in {}", data.display());
            println!("CA fingerprint: {}", image_tools::ids::hex(&fp));
            println!(
                "next: import masters with `nightcast-image build --store {0}/store --key {0}/signing.key ... -o {0}/manifests/NAME-VERSION.manifest`",
                data.display()
            );
        }),
        Command::Token {
            data,
            role,
            site,
            ttl_hours,
        } => {
            let role = if role == "relay" { Role::Relay } else { Role::Agent };
            controller::issue_token(&DataDir(data), role, site, now_unix(), ttl_hours * 3600).map(|t| println!("{t}"))
        }
        Command::Serve { data, listen } => serve(DataDir(data), listen),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(data: DataDir, listen: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            tracing::info!("shutting down");
            stop.cancel();
        });
        controller::serve(
            &data,
            listen,
            now_unix,
            |addr| {
                println!("listening on {addr}");
                let _ = std::io::stdout().flush();
            },
            shutdown,
        )
        .await
    })
}
