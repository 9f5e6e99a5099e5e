//! `nightcast-relay`: thin wrapper over the library; all logic is in `lib.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use image_tools::clock::Clock;
use image_tools::wire::MasterRef;
use image_tools::NodeId;

/// The nightcast relay: sits on a site's VLAN, fetches the chunks its site lacks during the night
/// window, and serves them to the site's NUCs all day.
///
/// Install: enrol once (`enroll`), then run `run --config /etc/nightcast/relay.toml` as a service
/// (see relay/nightcast-relay.service). `plan` and `fetch` are for checking things by hand.
#[derive(Debug, Parser)]
#[command(name = "nightcast-relay", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay: fetch what the site lacks during its night windows, serve the site's NUCs at
    /// any hour. Stops cleanly on SIGTERM or Ctrl-C. Prints "serving the LAN on ADDR" once ready.
    Run {
        #[command(flatten)]
        files: image_tools::config::Files,
        /// The controller's address (instead of, or overriding, the config file's).
        #[arg(long)]
        controller: Option<SocketAddr>,
        /// Where the site's NUCs connect (overrides the config file's; default 0.0.0.0:4434).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Enrol this relay once, with a one-time token the DSI prints with
    /// `nightcast enroll --site SITE`.
    Enroll {
        /// The controller's address, e.g. 192.0.2.10:4433.
        #[arg(long)]
        controller: SocketAddr,
        /// The one-time token (nc1-...) from `nightcast enroll --site SITE`.
        #[arg(long)]
        token: String,
        /// A name for this relay, unique in its site (e.g. its host name).
        #[arg(long)]
        node_id: NodeId,
        /// The relay's data directory (its key, certificate and chunk cache), e.g.
        /// /var/lib/nightcast/relay.
        #[arg(long)]
        data: PathBuf,
    },
    /// Show this site's fetch plan from the controller: which master versions, by when, pinned until when.
    Plan {
        /// The controller's address, e.g. 192.0.2.10:4433.
        #[arg(long)]
        controller: SocketAddr,
        /// The relay's data directory (as given to `enroll`).
        #[arg(long)]
        data: PathBuf,
    },
    /// Fetch a master version into the site cache now (only the chunks it lacks), verifying every chunk.
    Fetch {
        /// The controller's address, e.g. 192.0.2.10:4433.
        #[arg(long)]
        controller: SocketAddr,
        /// The relay's data directory (as given to `enroll`).
        #[arg(long)]
        data: PathBuf,
        /// The master's name, e.g. win10.
        #[arg(long)]
        master: image_tools::MasterName,
        /// The master's version, e.g. 1.
        #[arg(long)]
        version: image_tools::MasterVersion,
        /// Cap on the WAN, in Mbit/s.
        #[arg(long)]
        rate_mbit: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    image_tools::cli::init_logging("info");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run {
                files,
                controller,
                listen,
            } => run(files, controller, listen).await,
            Command::Enroll {
                controller,
                token,
                node_id,
                data,
            } => nightcast_relay::enroll(controller, &token, &node_id, &data, Clock::from_env()?)
                .await
                .map(|id| {
                    println!(
                        "enrolled as {id}; identity saved in {}",
                        data.join("tls").display()
                    );
                }),
            Command::Plan { controller, data } => {
                nightcast_relay::plan(controller, &data, Clock::from_env()?)
                    .await
                    .map(|plan| {
                        let when = |t: i64| nightcast_relay::local_time::local(t, &plan.tz);
                        println!(
                            "windows {} ({}), WAN cap {} Mbit/s",
                            plan.windows.join(","),
                            plan.tz,
                            plan.cap_mbit
                        );
                        if plan.entries.is_empty() {
                            println!("nothing scheduled for this site");
                        }
                        for e in plan.entries {
                            println!(
                                "{} {}  by {}  pinned until {}{}",
                                e.master.name,
                                e.master.version,
                                when(e.deadline),
                                when(e.pin_until),
                                e.override_until
                                    .map(|u| format!(
                                        "  OVERRIDE: may fetch now, until {}",
                                        when(u)
                                    ))
                                    .unwrap_or_default()
                            );
                        }
                    })
            }
            Command::Fetch {
                controller,
                data,
                master,
                version,
                rate_mbit,
            } => {
                let master = MasterRef {
                    name: master,
                    version,
                };
                let bar = indicatif::ProgressBar::new(0);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "fetch [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                let logged = std::sync::atomic::AtomicU64::new(0);
                let update = |p: image_tools::exchange::Progress| {
                    bar.set_length(p.bytes_total);
                    bar.set_position(p.bytes);
                    bar.set_message(format!("{}/{} chunks", p.chunks, p.chunks_total));
                    // Also in the log, every tenth, for runs without a terminal.
                    let tenth = (p.bytes * 10).checked_div(p.bytes_total).unwrap_or(10);
                    if logged.fetch_max(tenth, std::sync::atomic::Ordering::Relaxed) < tenth {
                        tracing::info!(
                            chunks = p.chunks,
                            of = p.chunks_total,
                            bytes = p.bytes,
                            of_bytes = p.bytes_total,
                            "fetching"
                        );
                    }
                };
                let report = nightcast_relay::fetch(
                    controller,
                    &data,
                    &master,
                    rate_mbit,
                    &update,
                    Clock::from_env()?,
                )
                .await;
                bar.finish_and_clear();
                report.map(|r| {
                    println!(
                        "{} {}: {} chunks fetched ({} bytes), {} already cached, {} needed",
                        master.name,
                        master.version,
                        r.fetched,
                        r.fetched_bytes,
                        r.already_had,
                        r.needed
                    );
                })
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    files: image_tools::config::Files,
    controller: Option<SocketAddr>,
    listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    use nightcast_relay::config::Config;
    let mut cfg = match (files.config, controller) {
        (Some(path), _) => Config::load(&path)?,
        (None, Some(c)) => Config::new(c, PathBuf::from("/var/lib/nightcast/relay")),
        (None, None) => anyhow::bail!("give --config FILE, or at least --controller ADDR"),
    };
    cfg.controller = controller.unwrap_or(cfg.controller);
    cfg.data = files.data.unwrap_or(cfg.data);
    cfg.listen = listen.unwrap_or(cfg.listen);
    cfg.validate()?;
    let clock = Clock::for_daemon()?;
    let shutdown = image_tools::signals::cancel_on_signals();
    nightcast_relay::daemon::run(cfg, clock, shutdown, |lan, discovery, metrics| {
        // Whoever started us may have stopped reading: that must not stop the relay.
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "serving the LAN on {lan}");
        let _ = writeln!(out, "answering discovery on {discovery}");
        if let Some(metrics) = metrics {
            let _ = writeln!(out, "serving metrics on http://{metrics}/metrics");
        }
        let _ = out.flush();
    })
    .await
}
