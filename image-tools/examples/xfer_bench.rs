//! Whole-master transfer benchmark driver, used by `bench/xfer.sh`.
//!
//! ```text
//! xfer_bench prepare --dir D --image IMG
//! xfer_bench serve --dir D --listen ADDR [--cc cubic|newreno|bbr]
//! xfer_bench fetch --dir D --connect ADDR --out STOREDIR [--rate-mbit N] [--in-flight N] [--batch N]
//! xfer_bench delay-proxy --listen ADDR --to ADDR --delay-ms N [--loss-permille N]
//! ```
//!
//! `prepare` makes a CA, server (controller) and client (relay, site "bench") credentials, a signing
//! key, and imports IMG into D/store as master "bench" version "1" (manifest in D/master.manifest).
//! `serve` serves D/store to that client; it prints `listening ADDR` once bound and runs until
//! killed (the workspace's tokio has no `signal` feature, so SIGTERM/SIGINT end the process with
//! the default action: the server holds nothing that needs flushing). It also stops, through the
//! cancellation token, when a line `quit` arrives on stdin.
//! `fetch` connects, checks the manifest's signature and fetches every chunk (each one verified)
//! into a fresh store, then prints one JSON line with chunk and byte counts, wall time and the
//! process's user/system CPU seconds.
//! `delay-proxy` forwards UDP between one client at a time (the latest sender) and one server, adding a fixed one-way delay in
//! each direction (netem is not available on the bench machine), and dropping each datagram with
//! probability N/1000 (random loss, as on a satellite or 4G link; a fixed-seed generator, so runs
//! drop the same pattern). `serve --cc` picks the server's congestion controller (it sends the
//! chunks).

#![allow(clippy::disallowed_methods)] // a benchmark reads the wall clock

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use image_tools::clock::Clock;
use image_tools::exchange::{self, fetch_missing, Connection, FetchOptions, MemoryCatalog};
use image_tools::import::{import_file, ImportOptions};
use image_tools::trust::{
    Admit, Ca, Credentials, Expect, Identity, Revoked, Validity, DEFAULT_LIFETIME_SECS,
};
use image_tools::wire::{Hello, MasterRef, Role, PROTOCOL_VERSION};
use image_tools::{
    ChunkParams, LocalStore, NodeId, PublicKey, SigningKey, SiteId, VerifiedManifest,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const SITE: &str = "bench";
const NAME: &str = "bench";
const VERSION: &str = "1";

fn master() -> MasterRef {
    MasterRef::new(NAME, VERSION).expect("a valid name")
}

fn hello_for(id: &Identity) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        software_version: concat!("xfer-bench ", env!("CARGO_PKG_VERSION")).into(),
        role: id.role,
        node_id: id.node.to_string(),
        capabilities: vec![],
    }
}

/// `--flag value` pairs after the subcommand.
struct Args(HashMap<String, String>);

impl Args {
    fn parse(rest: &[String]) -> Result<Args> {
        let mut map = HashMap::new();
        let mut it = rest.iter();
        while let Some(flag) = it.next() {
            let key = flag
                .strip_prefix("--")
                .ok_or_else(|| anyhow!("expected --flag, got {flag:?}"))?;
            let value = it.next().ok_or_else(|| anyhow!("--{key} needs a value"))?;
            map.insert(key.to_owned(), value.clone());
        }
        Ok(Args(map))
    }

    fn get(&self, key: &str) -> Result<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("missing --{key}"))
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        self.get(key).map(PathBuf::from)
    }

    fn addr(&self, key: &str) -> Result<SocketAddr> {
        let v = self.get(key)?;
        v.parse().with_context(|| format!("--{key} {v:?}"))
    }

    fn num<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        self.0
            .get(key)
            .map(|v| v.parse::<T>().map_err(|e| anyhow!("--{key} {v:?}: {e}")))
            .transpose()
    }
}

const USAGE: &str = "usage: xfer_bench prepare --dir D --image IMG
       xfer_bench serve --dir D --listen ADDR [--cc cubic|newreno|bbr]
       xfer_bench fetch --dir D --connect ADDR --out STOREDIR [--rate-mbit N] [--in-flight N] [--batch N]
       xfer_bench delay-proxy --listen ADDR --to ADDR --delay-ms N [--loss-permille N]";

#[tokio::main]
async fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        bail!("{USAGE}");
    };
    let args = Args::parse(rest)?;
    match cmd.as_str() {
        "prepare" => prepare(&args.path("dir")?, &args.path("image")?),
        "serve" => {
            let cc = match args.0.get("cc") {
                None => exchange::Congestion::default(),
                Some(name) => exchange::Congestion::parse(name)
                    .ok_or_else(|| anyhow!("--cc {name:?}: cubic, newreno or bbr"))?,
            };
            serve(&args.path("dir")?, args.addr("listen")?, cc).await
        }
        "fetch" => fetch(&args).await,
        "delay-proxy" => {
            let delay = Duration::from_millis(args.num::<u64>("delay-ms")?.unwrap_or(0));
            let loss = args.num::<u32>("loss-permille")?.unwrap_or(0);
            delay_proxy(args.addr("listen")?, args.addr("to")?, delay, loss).await
        }
        _ => bail!("{USAGE}"),
    }
}

fn prepare(dir: &Path, image: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let ca = Ca::generate(Validity::ca(Clock::system().now()))?;
    let server = Identity {
        role: Role::Controller,
        site: SiteId::new("central")?,
        node: NodeId::new("controller")?,
    };
    let client = Identity {
        role: Role::Relay,
        site: SiteId::new(SITE)?,
        node: NodeId::new("relay-bench")?,
    };
    ca.issue(
        &server,
        Validity::starting(Clock::system().now(), DEFAULT_LIFETIME_SECS),
    )?
    .save(&dir.join("server"))?;
    ca.issue(
        &client,
        Validity::starting(Clock::system().now(), DEFAULT_LIFETIME_SECS),
    )?
    .save(&dir.join("client"))?;
    std::fs::create_dir_all(dir.join("ca"))?;
    ca.save(&dir.join("ca"))?;

    let key = SigningKey::generate()?;
    let key_path = dir.join("signing.key");
    let _ = std::fs::remove_file(&key_path);
    let _ = std::fs::remove_file(dir.join("signing.key.pub"));
    let pub_path = key.save(&key_path)?;

    let store = LocalStore::open(&dir.join("store"))?;
    let opts = ImportOptions {
        name: NAME.parse()?,
        version: VERSION.parse()?,
        params: ChunkParams::DEFAULT,
        threads: 0,
    };
    let t = Instant::now();
    let report = import_file(image, None, &store, &key, &opts, &|_, _| {})?;
    let manifest_path = dir.join("master.manifest");
    std::fs::write(&manifest_path, report.manifest.bytes())?;
    let summary = report.manifest.summary();
    println!(
        "{}",
        serde_json::json!({
            "image_bytes": report.bytes_read,
            "new_chunks": report.new_chunks,
            "stored_bytes": report.new_stored_bytes,
            "import_s": t.elapsed().as_secs_f64(),
            "manifest": manifest_path,
            "public_key": pub_path,
            "summary": format!("{summary:?}"),
        })
    );
    Ok(())
}

async fn serve(dir: &Path, listen: SocketAddr, cc: exchange::Congestion) -> Result<()> {
    let creds = Credentials::load(&dir.join("server"))?;
    let me = creds
        .identity()
        .ok_or_else(|| anyhow!("server certificate has no identity"))?;
    let store = Arc::new(LocalStore::open(&dir.join("store"))?);
    let manifest = std::fs::read(dir.join("master.manifest"))?;
    let catalog = Arc::new(MemoryCatalog::default());
    catalog.add_manifest(master(), manifest);
    catalog.schedule(SITE, vec![master()]);
    let endpoint = exchange::server_endpoint_with(
        listen,
        creds.server_config(Admit::RelaysAndAgents, Revoked::default(), Clock::system())?,
        cc,
    )?;
    let bound = endpoint.local_addr()?;
    let service = Arc::new(exchange::Service {
        hello: hello_for(&me),
        store,
        catalog,
        enroller: None,
        forward_enroll: None,
        on_report: Box::new(|_, _| {}),
        revoked: Default::default(),
        served: Default::default(),
    });
    let shutdown = CancellationToken::new();
    {
        // `quit` on stdin cancels; EOF is ignored (the script may start us with </dev/null).
        let shutdown = shutdown.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {
                if line.trim() == "quit" {
                    shutdown.cancel();
                    return;
                }
                line.clear();
            }
        });
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {bound}")?;
        out.flush()?;
    }
    exchange::serve(endpoint, service, shutdown).await;
    Ok(())
}

/// This process's (user, system) CPU seconds, all threads, from /proc/self/stat (clock ticks of
/// 1/100 s, the Linux USER_HZ): the same numbers getrusage(RUSAGE_SELF) reports, without libc.
fn cpu_seconds() -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("odd /proc/self/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // after ")" : state(3) ppid(4) ... utime(14) stime(15) -> indices 11 and 12 here.
    let tick = |i: usize| -> Result<f64> {
        let v: u64 = fields
            .get(i)
            .ok_or_else(|| anyhow!("short /proc/self/stat"))?
            .parse()?;
        Ok(v as f64 / 100.0)
    };
    Ok((tick(11)?, tick(12)?))
}

async fn fetch(args: &Args) -> Result<()> {
    let dir = args.path("dir")?;
    let addr = args.addr("connect")?;
    let out = args.path("out")?;
    let rate_mbit: Option<f64> = args.num("rate-mbit")?;
    let mut opts = FetchOptions::default();
    if let Some(n) = args.num("in-flight")? {
        opts.in_flight = n;
    }
    if let Some(n) = args.num("batch")? {
        opts.batch = n;
    }
    let creds = Credentials::load(&dir.join("client"))?;
    let me = creds
        .identity()
        .ok_or_else(|| anyhow!("client certificate has no identity"))?;
    let public = PublicKey::load(&dir.join("signing.key.pub"))?;
    let store = Arc::new(LocalStore::open(&out)?);

    let t0 = Instant::now();
    let endpoint = exchange::client_endpoint()?;
    let conn = Connection::connect(
        &endpoint,
        addr,
        creds.client_config(Expect::Controller, Clock::system())?,
    )
    .await?;
    conn.hello(hello_for(&me)).await?;
    let bytes = conn.manifest(&master()).await?;
    let manifest = VerifiedManifest::open(bytes, &public)?;
    let connect_s = t0.elapsed().as_secs_f64();
    let rate = rate_mbit.map(|m| Arc::new(exchange::RateLimit::new((m * 1e6) as u64)));
    let t1 = Instant::now();
    let report = fetch_missing(&conn, store, &manifest, opts.clone(), rate, &|_| {}).await?;
    let fetch_s = t1.elapsed().as_secs_f64();
    let wall_s = t0.elapsed().as_secs_f64();
    conn.close();
    endpoint.wait_idle().await;
    let (user_s, sys_s) = cpu_seconds()?;
    if !report.lacking.is_empty() {
        bail!("server lacks {} chunks", report.lacking.len());
    }
    println!(
        "{}",
        serde_json::json!({
            "chunks": report.fetched,
            "bytes": report.fetched_bytes,
            "needed": report.needed,
            "already_had": report.already_had,
            "corrupt": report.corrupt_received,
            "wall_s": wall_s,
            "connect_s": connect_s,
            "fetch_s": fetch_s,
            "user_s": user_s,
            "sys_s": sys_s,
            "in_flight": opts.in_flight,
            "batch": opts.batch,
            "rate_mbit": rate_mbit,
        })
    );
    Ok(())
}

/// One direction of the proxy: packets with the time they may leave, in arrival order. The delay
/// is constant, so arrival order is departure order and a FIFO is a time-ordered queue.
type Queue = mpsc::UnboundedSender<(tokio::time::Instant, Vec<u8>)>;

/// The proxy's client address, once it has sent something.
type ClientAddr = Arc<Mutex<Option<SocketAddr>>>;

async fn delay_proxy(
    listen: SocketAddr,
    to: SocketAddr,
    delay: Duration,
    loss_permille: u32,
) -> Result<()> {
    let front = Arc::new(UdpSocket::bind(listen).await?);
    let back_bind: SocketAddr = if to.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let back = Arc::new(UdpSocket::bind(back_bind).await?);
    back.connect(to).await?;
    // The client: whoever sent to the front socket last (one client at a time; a new fetch
    // process, with a new source port, takes over).
    let client: ClientAddr = Arc::new(Mutex::new(None));
    let (up_tx, mut up_rx) = mpsc::unbounded_channel();
    let (down_tx, mut down_rx) = mpsc::unbounded_channel();

    // Readers: stamp each datagram with its departure time, or drop it (random loss).
    let reader = |sock: Arc<UdpSocket>, tx: Queue, client: Option<ClientAddr>, seed: u64| async move {
        let mut buf = vec![0u8; 65_536];
        let mut rng = seed;
        loop {
            let (n, from) = sock.recv_from(&mut buf).await?;
            if let Some(client) = &client {
                if let Ok(mut c) = client.lock() {
                    *c = Some(from);
                }
            }
            // xorshift64: uniform enough for a loss rate, the same pattern every run.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            if (rng % 1000) < u64::from(loss_permille) {
                continue;
            }
            if tx
                .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    let r_up = tokio::spawn(reader(
        front.clone(),
        up_tx,
        Some(client.clone()),
        0x9e37_79b9,
    ));
    let r_down = tokio::spawn(reader(back.clone(), down_tx, None, 0x85eb_ca6b));

    let w_up = {
        let back = back.clone();
        tokio::spawn(async move {
            while let Some((at, pkt)) = up_rx.recv().await {
                if at > tokio::time::Instant::now() {
                    tokio::time::sleep_until(at).await;
                }
                // A send error (ICMP unreachable from an earlier packet) is not fatal: UDP.
                let _ = back.send(&pkt).await;
            }
        })
    };
    let w_down = {
        let (front, client) = (front.clone(), client.clone());
        tokio::spawn(async move {
            while let Some((at, pkt)) = down_rx.recv().await {
                if at > tokio::time::Instant::now() {
                    tokio::time::sleep_until(at).await;
                }
                let to = client.lock().ok().and_then(|c| *c);
                if let Some(to) = to {
                    let _ = front.send_to(&pkt, to).await;
                }
            }
        })
    };
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {}", front.local_addr()?)?;
        out.flush()?;
    }
    tokio::select! {
        r = r_up => r??,
        r = r_down => r??,
        _ = w_up => {},
        _ = w_down => {},
    }
    Ok(())
}
