//! Flood benchmark (security findings 4 and 7): does a server keep its memory bounded, and its
//! honest peers served, while hostile clients flood it?
//!
//! ```text
//! flood [--size 64M] [--limits relay|controller] [--flooders 200] [--slow-conns 8] [--seconds 30]
//! flood serve --dir D --limits relay|controller
//! ```
//!
//! The first form prepares a temporary directory (a CA, certificates, a signing key, a master of
//! `--size` imported into a store), starts the second form as a child process (a real server:
//! `exchange::serve_with` over that store, with an enroller, as the controller runs it), and then:
//! 1. fetches the whole master as an honest enrolled agent, alone, and takes the server's peak RSS
//!    (VmHWM from /proc; reset through /proc/PID/clear_refs before each phase);
//! 2. floods it: `--flooders` tasks each keep a connection *without a certificate* open and open
//!    every stream they are allowed, each announcing a 512 MiB manifest frame and then sending its
//!    body; a closed or refused connection is made again at once. Meanwhile one enrolled peer opens
//!    `--slow-conns` connections of 64 streams asking for the whole master and reads 4 KiB per
//!    stream every 100 ms. After 5 s of that, the honest agent fetches the master again (fresh
//!    store), and the flood goes on until `--seconds` have passed;
//! 3. prints a markdown table: the server's peak RSS and the honest fetch time, alone and under
//!    the flood, and what the flood managed.
//!
//! A server whose RSS passes 3 GiB is killed (the machine is shared); the table then says so.

#![allow(clippy::disallowed_methods)] // a benchmark reads the wall clock

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use image_tools::clock::Clock;
use image_tools::exchange::{self, fetch_missing, Connection, FetchOptions, MemoryCatalog};
use image_tools::exchange::{EnrolAsk, EnrolDecision, EnrolPolicy, Issued};
use image_tools::import::{import_reader, ImportOptions};
use image_tools::trust::{
    enrol_client_config, Admit, Ca, Credentials, Expect, Identity, Revoked, Token, Validity,
    DEFAULT_LIFETIME_SECS,
};
use image_tools::wire::{self, Control, Frame, Hello, MasterRef, Role, PROTOCOL_VERSION};
use image_tools::{
    testimage, ChunkId, ChunkParams, LocalStore, NodeId, PublicKey, SigningKey, SiteId,
    VerifiedManifest,
};
use tokio_util::sync::CancellationToken;

const SITE: &str = "lyon";
/// The server's clock for tokens, and the time tokens are issued at.
/// Past this the server is killed.
const KILL_AT: u64 = 3 << 30;

fn master() -> MasterRef {
    MasterRef::new("flood", "1").expect("a valid name")
}

fn id(role: Role, site: &str, node: &str) -> Result<Identity> {
    Ok(Identity {
        role,
        site: SiteId::new(site)?,
        node: NodeId::new(node)?,
    })
}

fn hello_for(id: &Identity) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        software_version: "flood-bench".into(),
        role: id.role,
        node_id: id.node.to_string(),
        capabilities: vec![],
    }
}

struct Opts {
    size: u64,
    limits: String,
    flooders: usize,
    slow_conns: usize,
    seconds: u64,
}

fn parse_size(s: &str) -> Result<u64> {
    let (n, mult) = match s.as_bytes().last() {
        Some(b'K') => (&s[..s.len() - 1], 1 << 10),
        Some(b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    Ok(n.parse::<u64>().with_context(|| format!("size {s:?}"))? * mult)
}

#[tokio::main]
async fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .cloned()
    };
    let limits = flag("--limits").unwrap_or_else(|| "relay".into());
    if argv.first().map(String::as_str) == Some("serve") {
        let dir = flag("--dir").ok_or_else(|| anyhow!("serve needs --dir"))?;
        return serve(Path::new(&dir), &limits).await;
    }
    let opts = Opts {
        size: parse_size(&flag("--size").unwrap_or_else(|| "64M".into()))?,
        limits,
        flooders: flag("--flooders").map_or(Ok(200), |v| v.parse())?,
        slow_conns: flag("--slow-conns").map_or(Ok(8), |v| v.parse())?,
        seconds: flag("--seconds").map_or(Ok(30), |v| v.parse())?,
    };
    run(opts).await
}

fn limits_named(name: &str) -> Result<exchange::Limits> {
    match name {
        "relay" => Ok(exchange::Limits::RELAY),
        "controller" => Ok(exchange::Limits::CONTROLLER),
        other => bail!("--limits relay|controller, not {other:?}"),
    }
}

/// The server process: serves `dir`'s store and enrols with its CA, within `limits`.
async fn serve(dir: &Path, limits: &str) -> Result<()> {
    let limits = limits_named(limits)?;
    let creds = Credentials::load(&dir.join("server"))?;
    let me = creds.identity().ok_or_else(|| anyhow!("no identity"))?;
    let store = Arc::new(LocalStore::open(&dir.join("store"))?);
    let catalog = Arc::new(MemoryCatalog::default());
    catalog.add_manifest(master(), std::fs::read(dir.join("master.manifest"))?);
    catalog.schedule(SITE, vec![master()]);
    let tls = creds.server_config(Admit::RelaysAndAgents, Revoked::default(), Clock::system())?;
    let endpoint = exchange::server_endpoint(([127, 0, 0, 1], 0).into(), tls)?;
    let ca = Ca::load(&dir.join("ca"))?;
    let signing_key = PublicKey::load(&dir.join("signing.key.pub"))?;
    let service = Arc::new(exchange::Service {
        hello: hello_for(&me),
        store,
        catalog,
        enroller: Some(exchange::Enroller {
            ca,
            signing_key,
            bridge: Vec::new(),
            lifetime_secs: DEFAULT_LIFETIME_SECS,
            clock: Clock::system(),
            policy: Box::new(Strangers),
        }),
        forward_enroll: None,
        on_report: Box::new(|_, _| {}),
        revoked: Revoked::default(),
        served: Default::default(),
    });
    println!("listening {}", endpoint.local_addr()?);
    exchange::serve_with(endpoint, service, limits, CancellationToken::new()).await;
    Ok(())
}

/// The flood is strangers: each enrolment request waits for the DSI.
struct Strangers;

impl EnrolPolicy for Strangers {
    fn decide(&self, _: &EnrolAsk, _: i64) -> EnrolDecision {
        EnrolDecision::Pending("a stranger waits for the DSI".into())
    }
    fn issued(&self, _: &Issued<'_>) -> Result<(), String> {
        Ok(())
    }
}

fn valid() -> Validity {
    Validity::starting(Clock::system().now(), DEFAULT_LIFETIME_SECS)
}

struct Prepared {
    dir: tempfile::TempDir,
    honest: Credentials,
    slow: Credentials,
    token: image_tools::trust::Token,
    public: PublicKey,
    ids: Vec<ChunkId>,
    stored_bytes: u64,
}

fn prepare(size: u64) -> Result<Prepared> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::generate(Validity::ca(Clock::system().now()))?;
    ca.issue(&id(Role::Controller, "central", "controller")?, valid())?
        .save(&dir.path().join("server"))?;
    std::fs::create_dir_all(dir.path().join("ca"))?;
    ca.save(&dir.path().join("ca"))?;
    let key = SigningKey::generate()?;
    key.save(&dir.path().join("signing.key"))?;
    let store = LocalStore::open(&dir.path().join("store"))?;
    let image = testimage::image_bytes(size, 7);
    let opts = ImportOptions {
        name: "flood".parse()?,
        version: "1".parse()?,
        params: ChunkParams::DEFAULT,
        threads: 2,
    };
    let report = import_reader(&image[..], 0, &store, &key, &opts, &|_, _| {})?;
    std::fs::write(dir.path().join("master.manifest"), report.manifest.bytes())?;
    let token = Token::generate(ca.fingerprint())?;
    Ok(Prepared {
        honest: ca.issue(&id(Role::Agent, SITE, "nuc-1")?, valid())?,
        slow: ca.issue(&id(Role::Agent, SITE, "nuc-slow")?, valid())?,
        token,
        public: key.public(),
        ids: report
            .manifest
            .unique_chunks()
            .iter()
            .map(|c| c.id)
            .collect(),
        stored_bytes: report.new_stored_bytes,
        dir,
    })
}

/// Kilobytes of a `/proc/PID/status` line (`VmHWM`, `VmRSS`).
fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resets the peak RSS (VmHWM) of `pid` to its current RSS.
fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("clear_refs")
}

/// Starts the server process and waits for its address.
fn start_server(dir: &Path, limits: &str) -> Result<(Child, SocketAddr)> {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["serve", "--dir"])
        .arg(dir)
        .args(["--limits", limits])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .ok_or_else(|| anyhow!("server said {line:?}"))?
        .parse()?;
    Ok((child, addr))
}

fn client_config(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    // The flood's own memory: it queues at most 1 MiB per connection.
    let mut t = quinn::TransportConfig::default();
    t.send_window(1 << 20);
    config.transport_config(Arc::new(t));
    Ok(config)
}

/// The honest agent's whole fetch into a fresh store: seconds, or `None` if not done in `limit`.
async fn honest_fetch(
    p: &Prepared,
    addr: SocketAddr,
    out: PathBuf,
    limit: Duration,
) -> Option<f64> {
    let started = Instant::now();
    let fetch = async {
        let endpoint = exchange::client_endpoint()?;
        let conn = Connection::connect(
            &endpoint,
            addr,
            p.honest
                .client_config(Expect::Controller, Clock::system())?,
        )
        .await?;
        conn.hello(hello_for(
            &p.honest.identity().ok_or_else(|| anyhow!("id"))?,
        ))
        .await?;
        let manifest = VerifiedManifest::open(conn.manifest(&master()).await?, &p.public)?;
        let store = Arc::new(LocalStore::open(&out)?);
        let report = fetch_missing(
            &conn,
            store,
            &manifest,
            FetchOptions::default(),
            None,
            &|_| {},
        )
        .await?;
        if report.fetched != report.needed {
            bail!("fetched {} of {}", report.fetched, report.needed);
        }
        conn.close();
        Ok::<_, anyhow::Error>(())
    };
    match tokio::time::timeout(limit, fetch).await {
        Ok(Ok(())) => Some(started.elapsed().as_secs_f64()),
        Ok(Err(e)) => {
            eprintln!("honest fetch failed: {e:#}");
            None
        }
        Err(_) => None,
    }
}

#[derive(Default)]
struct FloodStats {
    accepted: AtomicU64,
    turned_away: AtomicU64,
    streams: AtomicU64,
    bytes_sent: AtomicU64,
    slow_bytes_read: AtomicU64,
}

/// One flooder: a connection without a certificate, every stream it may open announcing a
/// 512 MiB manifest frame and sending its body; made again whenever it is closed or refused.
async fn flooder(
    addr: SocketAddr,
    tls: rustls::ClientConfig,
    stats: Arc<FloodStats>,
    stop: CancellationToken,
) {
    let Ok(endpoint) = exchange::client_endpoint() else {
        return;
    };
    let Ok(config) = client_config(tls) else {
        return;
    };
    while !stop.is_cancelled() {
        let connecting = match endpoint.connect_with(config.clone(), addr, "nightcast") {
            Ok(c) => c,
            Err(_) => return,
        };
        let conn = match tokio::time::timeout(Duration::from_secs(5), connecting).await {
            Ok(Ok(conn)) => conn,
            _ => {
                stats.turned_away.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let mut opened = 0;
        let mut header = wire::MAX_MANIFEST_FRAME.to_le_bytes().to_vec();
        header.push(3);
        for _ in 0..64 {
            let open = tokio::select! {
                s = conn.open_bi() => s,
                // No more streams granted: keep those open.
                _ = tokio::time::sleep(Duration::from_millis(500)) => break,
                _ = stop.cancelled() => break,
            };
            let Ok((mut send, _recv)) = open else { break };
            opened += 1;
            stats.streams.fetch_add(1, Ordering::Relaxed);
            let (stats, stop, header) = (stats.clone(), stop.clone(), header.clone());
            tokio::spawn(async move {
                let _recv = _recv;
                if send.write_all(&header).await.is_err() {
                    return;
                }
                let block = vec![0u8; 64 << 10];
                while !stop.is_cancelled() {
                    if send.write_all(&block).await.is_err() {
                        return;
                    }
                    stats
                        .bytes_sent
                        .fetch_add(block.len() as u64, Ordering::Relaxed);
                }
            });
        }
        // A connection the server closed before it could open a stream was turned away.
        let counter = if opened == 0 {
            &stats.turned_away
        } else {
            &stats.accepted
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            _ = conn.closed() => {}
            _ = stop.cancelled() => conn.close(0u32.into(), b"done"),
        }
        if !stop.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An enrolled peer that asks for the whole master on 64 streams and reads 4 KiB per stream every
/// 100 ms.
async fn slow_reader(p: Arc<PreparedNet>, stats: Arc<FloodStats>, stop: CancellationToken) {
    let run = async {
        let endpoint = exchange::client_endpoint()?;
        let conn = endpoint
            .connect_with(client_config(p.slow_tls.clone())?, p.addr, "nightcast")?
            .await?;
        let request = |c: Control| async {
            let (mut send, recv) = conn.open_bi().await?;
            send.write_all(&wire::encode_to_vec(&Frame::Control(c))?)
                .await?;
            send.finish()?;
            Ok::<_, anyhow::Error>(recv)
        };
        let mut hello = request(Control::Hello(p.slow_hello.clone())).await?;
        let _ = exchange::FrameReader::default().next(&mut hello).await?;
        // Each stream read on its own, so that one without data yet does not hold up the rest.
        let mut readers = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let mut recv = request(Control::GetChunks(p.ids.clone())).await?;
            let (stats, stop) = (stats.clone(), stop.clone());
            readers.spawn(async move {
                let mut buf = vec![0u8; 4096];
                while !stop.is_cancelled() {
                    match recv.read(&mut buf).await {
                        Ok(Some(n)) => stats.slow_bytes_read.fetch_add(n as u64, Ordering::Relaxed),
                        _ => return,
                    };
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
        stop.cancelled().await;
        readers.abort_all();
        Ok::<_, anyhow::Error>(())
    };
    if let Err(e) = run.await {
        eprintln!("slow reader: {e:#}");
    }
}

/// What the slow readers need, shared between their tasks.
struct PreparedNet {
    addr: SocketAddr,
    slow_tls: rustls::ClientConfig,
    slow_hello: Hello,
    ids: Vec<ChunkId>,
}

async fn run(opts: Opts) -> Result<()> {
    limits_named(&opts.limits)?;
    eprintln!("preparing a {} MiB master...", opts.size >> 20);
    let p = prepare(opts.size)?;
    let (mut child, addr) = start_server(p.dir.path(), &opts.limits)?;
    let pid = child.id();
    let killed = Arc::new(AtomicBool::new(false));
    let watch = {
        let killed = killed.clone();
        let stop = CancellationToken::new();
        let s = stop.clone();
        let handle = tokio::spawn(async move {
            while !s.is_cancelled() {
                if status_kb(pid, "VmRSS:").unwrap_or(0) * 1024 > KILL_AT {
                    killed.store(true, Ordering::SeqCst);
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        (stop, handle)
    };
    let idle_kb = status_kb(pid, "VmRSS:").unwrap_or(0);

    eprintln!("honest fetch alone...");
    reset_peak(pid)?;
    let alone = honest_fetch(
        &p,
        addr,
        p.dir.path().join("alone"),
        Duration::from_secs(300),
    )
    .await;
    let alone_hwm = status_kb(pid, "VmHWM:").unwrap_or(0);

    eprintln!(
        "flood: {} flooders, {} slow connections...",
        opts.flooders, opts.slow_conns
    );
    reset_peak(pid)?;
    let stats = Arc::new(FloodStats::default());
    let stop = CancellationToken::new();
    let tls = enrol_client_config(&p.token, Clock::system())?;
    let net = Arc::new(PreparedNet {
        addr,
        slow_tls: p.slow.client_config(Expect::Controller, Clock::system())?,
        slow_hello: hello_for(&p.slow.identity().ok_or_else(|| anyhow!("id"))?),
        ids: p.ids.clone(),
    });
    let mut tasks = Vec::new();
    for _ in 0..opts.slow_conns {
        tasks.push(tokio::spawn(slow_reader(
            net.clone(),
            stats.clone(),
            stop.clone(),
        )));
    }
    for _ in 0..opts.flooders {
        tasks.push(tokio::spawn(flooder(
            addr,
            tls.clone(),
            stats.clone(),
            stop.clone(),
        )));
    }
    let flood_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    eprintln!("honest fetch under the flood...");
    let limit = Duration::from_secs(opts.seconds.max(60) * 2);
    let flooded = honest_fetch(&p, addr, p.dir.path().join("flooded"), limit).await;
    let rest = Duration::from_secs(opts.seconds).saturating_sub(flood_started.elapsed());
    tokio::time::sleep(rest).await;
    let flood_s = flood_started.elapsed().as_secs_f64();
    let flood_hwm = status_kb(pid, "VmHWM:").unwrap_or(0);
    stop.cancel();
    for t in tasks {
        t.abort();
    }
    watch.0.cancel();
    let _ = watch.1.await;
    let was_killed = killed.load(Ordering::SeqCst);
    let _ = child.kill();
    let _ = child.wait();

    let secs = |t: Option<f64>| t.map_or("not done".to_owned(), |s| format!("{s:.2}"));
    let mib = |kb: u64| format!("{:.1}", kb as f64 / 1024.0);
    let budget = if opts.limits == "relay" { 64 } else { 256 };
    println!(
        "#### Flood: server with `Limits::{}` (budget {budget} MiB), {} MiB master ({} stored bytes, {} chunks)\n",
        opts.limits.to_uppercase(),
        opts.size >> 20,
        p.stored_bytes,
        p.ids.len()
    );
    println!("| phase | honest fetch s | server peak RSS MiB (VmHWM) | within budget |");
    println!("|---|---:|---:|---|");
    println!("| idle (after start) | - | {} | |", mib(idle_kb));
    println!(
        "| honest agent alone | {} | {} | {} |",
        secs(alone),
        mib(alone_hwm),
        if alone_hwm <= budget << 10 {
            "yes"
        } else {
            "**no**"
        }
    );
    let flooded_rss = if was_killed {
        format!("> {} (killed)", KILL_AT >> 20)
    } else {
        mib(flood_hwm)
    };
    println!(
        "| under the flood ({flood_s:.0} s) | {} | {flooded_rss} | {} |",
        secs(flooded),
        if !was_killed && flood_hwm <= budget << 10 {
            "yes"
        } else {
            "**no**"
        }
    );
    let ratio = match (alone, flooded) {
        (Some(a), Some(f)) => format!("{:.2}", f / a),
        _ => "-".into(),
    };
    println!(
        "\nhonest fetch under flood / alone: **{ratio}**. Flood: {} flooders without a certificate \
         made {} connections ({} turned away: refused, closed or timed out), opened {} streams and \
         got {} MiB accepted by QUIC; {} enrolled slow connections of one identity tried (the server \
         admits `per_node` of them), 64 streams each, and read {} KiB.",
        opts.flooders,
        stats.accepted.load(Ordering::Relaxed) + stats.turned_away.load(Ordering::Relaxed),
        stats.turned_away.load(Ordering::Relaxed),
        stats.streams.load(Ordering::Relaxed),
        stats.bytes_sent.load(Ordering::Relaxed) >> 20,
        opts.slow_conns,
        stats.slow_bytes_read.load(Ordering::Relaxed) >> 10,
    );
    Ok(())
}
