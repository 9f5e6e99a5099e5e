//! Many NUC agents fetching a master from a relay at once, for `bench/relay.sh`.
//!
//! ```text
//! lan_agents enroll --controller ADDR --tokens FILE --out DIR [--prefix nuc-]
//! lan_agents fetch --relay ADDR --agents DIR --n N --master NAME --version V --stores DIR
//!                  [--in-flight N] [--batch N]
//! ```
//!
//! `enroll` enrols one agent per line of FILE (tokens from `nightcast enroll --role agent --site S`)
//! with the controller, as nodes `nuc-01`, `nuc-02`, ..., and saves each identity and the pinned
//! signing key in `DIR/nuc-NN` (the layout `nightcast-relay enroll` uses).
//!
//! `fetch` starts N agents together (the first N of DIR, in name order), each with its own UDP
//! socket and QUIC connection to the relay and its own fresh store `STORES/nuc-NN/store`: hello,
//! the manifest (checked against the agent's pinned key), then every chunk, each verified, and the
//! store made durable. It prints one JSON line: per agent its connect time (connection, hello and
//! manifest) and done time, both from the common start, and its bytes; in total the time until the
//! last agent is done, all bytes, and this process's CPU seconds (every agent's verification and
//! writing runs in this one process). Exits 1 if any agent fails or lacks a chunk.

use image_tools::clock::Clock;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use image_tools::exchange::{self, Connection, FetchOptions};
use image_tools::trust;
use image_tools::wire::{Hello, MasterRef, Role, PROTOCOL_VERSION};
use image_tools::{LocalStore, VerifiedManifest};

/// Agents enrolled with a controller, fetching from a relay all at once.
#[derive(Debug, Parser)]
#[command(name = "lan_agents")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enrol one agent per token with the controller and save each identity under OUT.
    Enroll {
        /// The controller's QUIC address.
        #[arg(long)]
        controller: SocketAddr,
        /// A file of agent tokens, one a line.
        #[arg(long)]
        tokens: PathBuf,
        /// Where the agents' identities go (one directory per agent).
        #[arg(long)]
        out: PathBuf,
        /// Node ids are this prefix and a two-digit number.
        #[arg(long, default_value = "nuc-")]
        prefix: String,
    },
    /// Fetch a master from the relay with N agents at once, into fresh stores.
    Fetch {
        /// The relay's LAN address.
        #[arg(long)]
        relay: SocketAddr,
        /// The directory `enroll` filled.
        #[arg(long)]
        agents: PathBuf,
        /// How many agents fetch at once.
        #[arg(long)]
        n: usize,
        #[arg(long)]
        master: image_tools::MasterName,
        #[arg(long)]
        version: image_tools::MasterVersion,
        /// Where each agent's fresh store goes (STORES/NODE/store; must not exist yet).
        #[arg(long)]
        stores: PathBuf,
        /// Requests each agent keeps in flight (default: the exchange's default).
        #[arg(long)]
        in_flight: Option<usize>,
        /// Chunk ids per request (default: the exchange's default).
        #[arg(long)]
        batch: Option<usize>,
    },
}

/// The one reading of the clock in this program.
#[allow(clippy::disallowed_methods)] // a benchmark measures wall time
fn clock() -> Instant {
    Instant::now()
}

/// This process's (user, system) CPU seconds, all threads, from /proc/self/stat (USER_HZ = 100).
fn cpu_seconds() -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("odd /proc/self/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| -> Result<f64> {
        let v: u64 = fields
            .get(i)
            .ok_or_else(|| anyhow!("short /proc/self/stat"))?
            .parse()?;
        Ok(v as f64 / 100.0)
    };
    Ok((tick(11)?, tick(12)?))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            Command::Enroll {
                controller,
                tokens,
                out,
                prefix,
            } => enroll(controller, &tokens, &out, &prefix).await,
            Command::Fetch {
                relay,
                agents,
                n,
                master,
                version,
                stores,
                in_flight,
                batch,
            } => {
                let master = MasterRef {
                    name: master,
                    version,
                };
                let mut opts = FetchOptions::default();
                opts.in_flight = in_flight.unwrap_or(opts.in_flight);
                opts.batch = batch.unwrap_or(opts.batch);
                fetch(relay, &agents, n, &master, &stores, opts).await
            }
        }
    })
}

async fn enroll(controller: SocketAddr, tokens: &Path, out: &Path, prefix: &str) -> Result<()> {
    let text = std::fs::read_to_string(tokens)
        .with_context(|| format!("cannot read {}", tokens.display()))?;
    let mut n = 0;
    for (i, token) in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let node = format!("{prefix}{:02}", i + 1);
        let (creds, key) =
            exchange::enroll(controller, token, Role::Agent, &node, Clock::from_env()?)
                .await
                .with_context(|| format!("enrolling {node}"))?;
        trust::save_enrolment(&out.join(&node), &creds, &key)?;
        n += 1;
    }
    println!("enrolled {n} agents in {}", out.display());
    Ok(())
}

/// What one agent did, in seconds from the common start.
#[derive(Debug, serde::Serialize)]
struct AgentRun {
    node: String,
    connect_s: f64,
    done_s: f64,
    chunks: u64,
    bytes: u64,
}

async fn fetch_one(
    dir: PathBuf,
    relay: SocketAddr,
    master: MasterRef,
    store_dir: PathBuf,
    opts: FetchOptions,
    start: Instant,
) -> Result<AgentRun> {
    let (creds, key) = trust::load_enrolment(&dir)
        .with_context(|| format!("no agent identity in {}", dir.display()))?;
    let me = creds
        .identity()
        .ok_or_else(|| anyhow!("{}: the certificate names no identity", dir.display()))?;
    let node = me.node.to_string();
    let endpoint = exchange::client_endpoint()?;
    let tls = creds.client_config(trust::Expect::RelayOf(me.site.clone()), Clock::from_env()?)?;
    let conn = Connection::connect(&endpoint, relay, tls)
        .await
        .with_context(|| format!("{node}: connecting to {relay}"))?;
    conn.hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        software_version: concat!("lan-agents ", env!("CARGO_PKG_VERSION")).into(),
        role: Role::Agent,
        node_id: node.clone(),
        capabilities: vec![],
    })
    .await?;
    let bytes = conn
        .manifest(&master)
        .await
        .with_context(|| format!("{node}: manifest"))?;
    let manifest = VerifiedManifest::open_with(bytes, &key.accepted(Clock::from_env()?.now()))?;
    let connect_s = start.elapsed().as_secs_f64();
    let store = Arc::new(LocalStore::open(&store_dir)?);
    let report = exchange::fetch_missing(&conn, store, &manifest, opts, None, &|_| {})
        .await
        .with_context(|| format!("{node}: fetching"))?;
    let done_s = start.elapsed().as_secs_f64();
    conn.close();
    endpoint.wait_idle().await;
    if !report.lacking.is_empty() || report.fetched + report.already_had != report.needed {
        bail!(
            "{node}: the relay lacks {} chunk(s); fetched {} of {}",
            report.lacking.len(),
            report.fetched,
            report.needed
        );
    }
    Ok(AgentRun {
        node,
        connect_s,
        done_s,
        chunks: report.fetched,
        bytes: report.fetched_bytes,
    })
}

async fn fetch(
    relay: SocketAddr,
    agents: &Path,
    n: usize,
    master: &MasterRef,
    stores: &Path,
    opts: FetchOptions,
) -> Result<()> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(agents)
        .with_context(|| format!("cannot read {}", agents.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("tls").is_dir())
        .collect();
    dirs.sort();
    if dirs.len() < n {
        bail!(
            "{} agents enrolled in {}, {n} asked for",
            dirs.len(),
            agents.display()
        );
    }
    dirs.truncate(n);
    let mut store_dirs = Vec::new();
    for d in &dirs {
        let name = d
            .file_name()
            .ok_or_else(|| anyhow!("odd agent directory {}", d.display()))?;
        let s = stores.join(name).join("store");
        if s.exists() {
            bail!("{} exists: the agents' stores must be fresh", s.display());
        }
        store_dirs.push(s);
    }
    let (user0, sys0) = cpu_seconds()?;
    let start = clock();
    let tasks: Vec<_> = dirs
        .into_iter()
        .zip(store_dirs)
        .map(|(d, s)| {
            let opts = opts.clone();
            tokio::spawn(fetch_one(d, relay, master.clone(), s, opts, start))
        })
        .collect();
    let mut runs = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(r)) => runs.push(r),
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let total_s = start.elapsed().as_secs_f64();
    let (user1, sys1) = cpu_seconds()?;
    if !errors.is_empty() {
        bail!("{} agent(s) failed: {}", errors.len(), errors.join("; "));
    }
    let mut done: Vec<f64> = runs.iter().map(|r| r.done_s).collect();
    done.sort_by(f64::total_cmp);
    let median = done.get(done.len() / 2).copied().unwrap_or(0.0);
    let first = done.first().copied().unwrap_or(0.0);
    let last = done.last().copied().unwrap_or(0.0);
    let bytes: u64 = runs.iter().map(|r| r.bytes).sum();
    println!(
        "{}",
        serde_json::json!({
            "agents": n,
            "master": format!("{} {}", master.name, master.version),
            "total_s": total_s,
            "first_done_s": first,
            "median_done_s": median,
            "last_done_s": last,
            "bytes": bytes,
            "mbit_per_s": bytes as f64 * 8.0 / last.max(1e-9) / 1e6,
            "in_flight": opts.in_flight,
            "batch": opts.batch,
            "user_s": user1 - user0,
            "sys_s": sys1 - sys0,
            "per_agent": runs,
        })
    );
    Ok(())
}
