//! `nightcast-controller`: thin wrapper over the library; all logic is in `lib.rs`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use image_tools::wire::Role;
use image_tools::SiteId;
use nightcast_controller::{self as controller, DataDir};

/// The nightcast controller: holds the masters and the training calendar, and serves each site's
/// relay the chunks it lacks during the site's night window.
///
/// Run on the controller host: `init` once, then `serve`. The DSI then works with the `nightcast`
/// command (sites, rooms, masters, calendar, plan, fleet, overrides, enrolment tokens) through the
/// admin API; `token` and `master-add` also work here, on the data directory directly.
#[derive(Debug, Parser)]
#[command(name = "nightcast-controller", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a controller data directory: certificate authority, manifest-signing key, catalogue
    /// (the chunk store is made by the first start, in the format of `[store] format`).
    Init {
        /// The controller's data directory to create (CA, signing key, catalogue, admin token),
        /// e.g. /var/lib/nightcast/controller.
        #[arg(long)]
        data: PathBuf,
    },
    /// Print a one-time token that enrols one relay (or agent) of a site. Give it to whoever installs it.
    Token {
        /// The controller's data directory (as given to `init`).
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
    /// The web console's users (docs/CONSOLE.md): add one (or reset their password), remove one,
    /// list them.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Register a master version built into DATA/store (its manifest must verify and all its chunks be there).
    MasterAdd {
        /// The controller's data directory (as given to `init` and `serve`).
        #[arg(long)]
        data: PathBuf,
        /// The manifest file `nightcast-image build` wrote.
        manifest: PathBuf,
    },
    /// Serve relays: enrolment, and the manifests and chunks their sites' upcoming sessions need;
    /// and the admin API the `nightcast` command uses.
    Serve {
        /// A TOML configuration (see controller/controller.example.toml); flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The controller's data directory (as given to `init`; `data` in the configuration).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Address to listen on for relays (UDP, QUIC). Default 0.0.0.0:4433.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Address of the admin API (HTTP); keep it on localhost. Default 127.0.0.1:8644.
        #[arg(long)]
        api: Option<SocketAddr>,
    },
    /// Replace the manifest-signing key (stop the controller first): the old key stays accepted
    /// by relays and NUCs until it is retired, and every manifest is signed again with the new
    /// one. Relays and NUCs learn the new key with their next plan.
    RotateSigningKey {
        /// The controller's data directory (as given to `init`).
        #[arg(long)]
        data: PathBuf,
    },
    /// Stop accepting a previous manifest-signing key (stop the controller first): relays and
    /// NUCs drop it when its endorsement runs out (90 days at most).
    RetireSigningKey {
        /// The controller's data directory (as given to `init`).
        #[arg(long)]
        data: PathBuf,
        /// The key, as `signing-keys` prints it (16 hex digits or more).
        key: String,
    },
    /// The manifest-signing keys in force: the current one first.
    SigningKeys {
        /// The controller's data directory (as given to `init`).
        #[arg(long)]
        data: PathBuf,
    },
    /// Replace the certificate authority (stop the controller first). The old CA stays trusted,
    /// bridged to the new one, until you retire it; relays and NUCs renew their certificate
    /// with the new CA at their next plan, with nobody on site.
    RotateCa {
        /// The controller's data directory (as given to `init`).
        #[arg(long)]
        data: PathBuf,
        /// How long the bridge between the two CAs lasts: a relay or NUC that stays off for
        /// longer must be enrolled again.
        #[arg(long, default_value_t = 30)]
        overlap_days: u32,
    },
    /// Stop trusting the previous CA (stop the controller first). Refuses while a relay or NUC
    /// still holds a certificate from it, and names them.
    RetireCa {
        /// The controller's data directory (as given to `init`).
        #[arg(long)]
        data: PathBuf,
        /// Retire anyway: the nodes named must then be enrolled again.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a console user, or replace an existing one's role, sites and password. The password
    /// is read from standard input (asked twice, not shown, on a terminal); 10 characters at least.
    Add {
        /// The controller's data directory (its catalogue.db keeps the users).
        #[arg(long)]
        data: PathBuf,
        /// The name typed at the login, e.g. `alice` or `alice@example.org`.
        name: String,
        /// admin (every site, every action), operator (acts at its sites) or readonly (sees its
        /// sites, changes nothing).
        #[arg(long)]
        role: controller::console::users::Role,
        /// The sites an operator or a readonly user sees, comma-separated (default: every site).
        #[arg(long, value_delimiter = ',')]
        sites: Vec<SiteId>,
    },
    /// Remove a console user (their open sessions end at their next request).
    Remove {
        /// The controller's data directory (its catalogue.db keeps the users).
        #[arg(long)]
        data: PathBuf,
        /// The user's name.
        name: String,
    },
    /// List the console's users with their role and sites.
    List {
        /// The controller's data directory (its catalogue.db keeps the users).
        #[arg(long)]
        data: PathBuf,
    },
}

/// The clock this program runs on: the real one, or `NIGHTCAST_CLOCK`'s (tests, the demo).
static CLOCK: std::sync::OnceLock<image_tools::clock::Clock> = std::sync::OnceLock::new();

fn now_unix() -> u64 {
    CLOCK
        .get_or_init(image_tools::clock::Clock::system)
        .now()
        .max(0) as u64
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    image_tools::cli::init_logging("info");
    match image_tools::clock::Clock::for_daemon() {
        Ok(clock) => {
            let _ = CLOCK.set(clock);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let result = match cli.command {
        Command::Init { data } => controller::init(&DataDir(data.clone()), now_unix() as i64).map(|fp| {
            println!("controller initialised in {}", data.display());
            println!("CA fingerprint: {}", image_tools::ids::hex(&fp));
            println!(
                "next: start it with `nightcast-controller serve --data {0}`, then, with `export NIGHTCAST_TOKEN_FILE={0}/admin.token`, `nightcast site add ...` and `nightcast master import ...` (see the README)",
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
            controller::issue_token(&DataDir(data), role, site, now_unix(), ttl_hours.saturating_mul(3600)).map(|t| println!("{t}"))
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
        Command::RotateSigningKey { data } => {
            controller::signing::rotate(&DataDir(data)).map(|(old, new)| {
                println!("new manifest-signing key {}; {} stays accepted until you retire it", new.short(), old.short());
                println!("every manifest is now signed by {}; relays and NUCs learn the new key with their next plan", new.short());
            })
        }
        Command::RetireSigningKey { data, key } => {
            controller::signing::retire(&DataDir(data), &key).map(|k| {
                println!("{} retired: relays and NUCs stop accepting it when its endorsement runs out", k.short());
            })
        }
        Command::SigningKeys { data } => controller::signing::accepted_keys(&DataDir(data)).map(|keys| {
            for (i, k) in keys.iter().enumerate() {
                println!("{}{}", k.short(), if i == 0 { "  (current: signs new manifests)" } else { "  (previous: still accepted)" });
            }
        }),
        Command::RotateCa { data, overlap_days } => {
            controller::authority::rotate(&DataDir(data), now_unix() as i64, overlap_days).map(|(old, new)| {
                let (old, new) = (image_tools::ids::hex(&old), image_tools::ids::hex(&new));
                println!("new CA {new}: it issues every certificate from now on");
                println!("the previous CA {old} stays trusted for {overlap_days} days at most; relays and NUCs move to {new} at their next plan");
                println!("new enrolment tokens name {new}; retire {old} with `nightcast-controller retire-ca` once every node has moved");
            })
        }
        Command::RetireCa { data, force } => {
            controller::authority::retire(&DataDir(data), now_unix() as i64, force).map(|old| {
                println!("CA {} retired: relays and NUCs stop trusting it with their next plan", image_tools::ids::hex(&old));
            })
        }
        Command::User { command } => user(command),
        Command::MasterAdd { data, manifest } => {
            controller::add_master(&DataDir(data), &manifest, now_unix() as i64).map(|m| {
                println!("registered {} {}", m.name, m.version);
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(cfg: controller::config::Config) -> anyhow::Result<()> {
    let data = DataDir(cfg.data.clone());
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let shutdown = image_tools::signals::cancel_on_signals();
        controller::serve(
            &data,
            cfg.listen,
            Some(cfg.api),
            cfg.settings(),
            *CLOCK.get_or_init(image_tools::clock::Clock::system),
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

fn user(command: UserCommand) -> anyhow::Result<()> {
    use controller::console::users;
    use controller::db::Db;
    let open = |data: &PathBuf| Db::open(&DataDir(data.clone()).database());
    match command {
        UserCommand::Add {
            data,
            name,
            role,
            sites,
        } => {
            let db = open(&data)?;
            let password = read_password(&name)?;
            let existed = users::add(&db, &name, role, &sites, &password, now_unix() as i64)?;
            let sites = if sites.is_empty() || role == users::Role::Admin {
                "every site".to_owned()
            } else {
                sites
                    .iter()
                    .map(SiteId::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "{} {name}: {} of {sites}",
                if existed { "changed" } else { "added" },
                role.as_str()
            );
            if existed {
                println!("their open console sessions end at their next request");
            }
            Ok(())
        }
        UserCommand::Remove { data, name } => {
            if !open(&data)?.remove_user(&name)? {
                anyhow::bail!("no console user {name:?} (see `nightcast-controller user list`)");
            }
            println!("removed {name}");
            Ok(())
        }
        UserCommand::List { data } => {
            for (name, role, sites) in open(&data)?.users()? {
                let sites = if sites.is_empty() {
                    "every site".to_owned()
                } else {
                    sites
                };
                println!("{name}  {role}  {sites}");
            }
            Ok(())
        }
    }
}

/// A new password from standard input: asked twice without echo on a terminal, else the first
/// line (for scripts: `printf '%s\n' "$PW" | nightcast-controller user add ...`).
fn read_password(name: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    let line = |prompt: &str| -> anyhow::Result<String> {
        if stdin.is_terminal() {
            eprint!("{prompt}");
            let _ = std::io::stderr().flush();
        }
        let mut l = String::new();
        stdin.lock().read_line(&mut l)?;
        if stdin.is_terminal() {
            eprintln!();
        }
        Ok(l.trim_end_matches(['\r', '\n']).to_owned())
    };
    if !stdin.is_terminal() {
        return line("");
    }
    let fd = std::io::stdin();
    let before = rustix::termios::tcgetattr(&fd)?;
    let mut quiet = before.clone();
    quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
    rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &quiet)?;
    let first = line(&format!("password for {name}: "));
    let second = line("again: ");
    rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &before)?;
    let (first, second) = (first?, second?);
    if first != second {
        anyhow::bail!("the two passwords differ: nothing changed");
    }
    Ok(first)
}
