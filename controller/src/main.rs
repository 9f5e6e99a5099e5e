//! `nightcast-controller`: thin wrapper over the library; all logic is in `lib.rs`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use image_tools::wire::Role;
use image_tools::SiteId;
use nightcast_controller::{self as controller, DataDir};
use tokio_util::sync::CancellationToken;

/// The nightcast controller: holds the masters and the training calendar, and serves each site's
/// relay the chunks it lacks during the site's night window.
///
/// Run on the controller host: `init` once, then describe sites and rooms, register masters built
/// with `nightcast-image build --store DATA/store --key DATA/signing.key`, import the training
/// calendar, check the `plan`, enrol relays with a `token`, and `serve`.
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
    /// Add a site (or change it): its time zone, night windows and WAN cap.
    SiteAdd {
        #[arg(long)]
        data: PathBuf,
        /// e.g. `lyon-mairie`
        name: SiteId,
        /// IANA time zone, e.g. Europe/Paris.
        #[arg(long)]
        tz: String,
        /// Night windows in local time, comma-separated, e.g. 22:00-06:00 or 20:00-07:00,12:00-14:00.
        #[arg(long, default_value = "22:00-06:00")]
        windows: String,
        /// WAN bandwidth the relay may use in its windows, in Mbit/s.
        #[arg(long)]
        cap_mbit: u64,
    },
    /// List the sites.
    SiteList {
        #[arg(long)]
        data: PathBuf,
    },
    /// Add a training room to a site.
    RoomAdd {
        #[arg(long)]
        data: PathBuf,
        site: String,
        room: String,
    },
    /// Register a master version built into DATA/store (its manifest must verify and all its chunks be there).
    MasterAdd {
        #[arg(long)]
        data: PathBuf,
        manifest: PathBuf,
    },
    /// Import a training calendar: CSV (header site,room,master,version,start,end) or iCalendar (.ics).
    /// A bad row imports nothing and is reported with its line number.
    CalendarImport {
        #[arg(long)]
        data: PathBuf,
        file: PathBuf,
    },
    /// Will every room have its master in time? Per site and session: bytes still to fetch and a verdict.
    Plan {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Serve relays: enrolment, and the manifests and chunks their sites' upcoming sessions need;
    /// and the admin API the `nightcast` command uses.
    Serve {
        /// A TOML configuration (see controller/controller.example.toml); flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data: Option<PathBuf>,
        /// Address to listen on for relays (UDP, QUIC). Default 0.0.0.0:4433.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Address of the admin API (HTTP); keep it on localhost. Default 127.0.0.1:8644.
        #[arg(long)]
        api: Option<SocketAddr>,
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
        Command::Serve {
            config,
            data,
            listen,
            api,
        } => config
            .map_or_else(|| Ok(controller::config::Config::default()), |p| controller::config::Config::load(&p))
            .and_then(|mut cfg| {
                cfg.data = data.unwrap_or(cfg.data);
                cfg.listen = listen.unwrap_or(cfg.listen);
                cfg.api = api.unwrap_or(cfg.api);
                cfg.validate()?;
                serve(cfg)
            }),
        Command::SiteAdd {
            data,
            name,
            tz,
            windows,
            cap_mbit,
        } => db(&data).and_then(|db| Ok(db.add_site(name.as_str(), &tz, &windows, cap_mbit)?)),
        Command::SiteList { data } => db(&data).and_then(|db| {
            println!("{:<20} {:<20} {:<24} {:>9}", "SITE", "TIME ZONE", "WINDOWS", "WAN Mbit");
            for s in db.sites()? {
                println!("{:<20} {:<20} {:<24} {:>9}", s.name, s.tz, s.windows, s.cap_mbit);
            }
            Ok(())
        }),
        Command::RoomAdd { data, site, room } => db(&data).and_then(|db| Ok(db.add_room(&site, &room)?)),
        Command::MasterAdd { data, manifest } => {
            controller::add_master(&DataDir(data), &manifest, now_unix() as i64).map(|m| {
                println!("registered {} {}", m.name, m.version);
            })
        }
        Command::CalendarImport { data, file } => calendar_import(&data, &file),
        Command::Plan { data, json } => plan(&data, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn db(data: &std::path::Path) -> anyhow::Result<controller::db::Db> {
    Ok(controller::db::Db::open(
        &DataDir(data.to_owned()).database(),
    )?)
}

fn calendar_import(data: &std::path::Path, file: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file.display().to_string();
    let mut db = db(data)?;
    let n = if name.to_ascii_lowercase().ends_with(".ics") {
        db.import_ics(&name, &text)?
    } else {
        db.import_csv(&name, &text)?
    };
    println!("{n} sessions imported from {name}");
    Ok(())
}

fn plan(data: &std::path::Path, json: bool) -> anyhow::Result<()> {
    use controller::plan::Verdict;
    let db = db(data)?;
    let now = now_unix() as i64;
    // Relay reports do not reach the database yet: every site is planned as holding nothing.
    let plan = db.plan(
        now,
        &controller::plan::Settings::default(),
        &Default::default(),
    )?;
    let tz_of: std::collections::HashMap<String, String> =
        db.sites()?.into_iter().map(|s| (s.name, s.tz)).collect();
    let local = |site: &str, t: i64| {
        let zone = jiff::tz::TimeZone::get(tz_of.get(site).map_or("UTC", String::as_str))
            .unwrap_or(jiff::tz::TimeZone::UTC);
        jiff::Timestamp::from_second(t)
            .map(|ts| zone.to_datetime(ts).strftime("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default()
    };
    let verdict = |v: &Verdict, site: &str| match v {
        Verdict::OnTime { night: Some(n), .. } => format!("on time (night of {n})"),
        Verdict::OnTime { night: None, .. } => "on time (already there)".to_owned(),
        Verdict::AtRisk {
            ready_at,
            slack_secs,
        } => {
            format!(
                "AT RISK: ready {} with {} min to spare",
                local(site, *ready_at),
                slack_secs / 60
            )
        }
        Verdict::Late { shortfall } => format!(
            "LATE: {} short; import earlier or push by override",
            image_tools::cli::human(*shortfall)
        ),
        Verdict::Unknown => "unknown master".to_owned(),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&controller::plan_json(&plan))?
        );
        return Ok(());
    }
    for (site, rows) in &plan {
        println!("{site}");
        if rows.is_empty() {
            println!("  no upcoming sessions");
        }
        for r in rows {
            println!(
                "  {}  {:<12} {:<24} {:>11} new  {}",
                local(site, r.session.start),
                r.session.room,
                format!("{} {}", r.session.master.0, r.session.master.1),
                image_tools::cli::human(r.new_bytes),
                verdict(&r.verdict, site)
            );
        }
    }
    Ok(())
}

fn serve(cfg: controller::config::Config) -> anyhow::Result<()> {
    let data = DataDir(cfg.data.clone());
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
            cfg.listen,
            Some(cfg.api),
            cfg.planner.settings(),
            now_unix,
            |addr, api| {
                println!("listening on {addr}");
                if let Some(api) = api {
                    println!("admin API on http://{api}");
                }
                let _ = std::io::stdout().flush();
            },
            shutdown,
        )
        .await
    })
}
