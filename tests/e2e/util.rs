//! Shared by the end-to-end tests: finding the workspace's binaries, and running a controller.
//!
//! Finding the workspace's binaries from an end-to-end test. Cargo only exposes the test's own
//! package's binaries (`CARGO_BIN_EXE_*`); the others are built next to it by `cargo test --workspace`.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The path of workspace binary `name`, or a panic that says how to build it.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so every binary is built",
        path.display()
    );
    path
}

/// `nightcast-controller init` of the data directory `DIR/controller`; returns its path.
pub fn init_controller(dir: &Path) -> PathBuf {
    let data = dir.join("controller");
    let status = Command::new(workspace_bin("nightcast-controller"))
        .args(["init", "--data", data.to_str().expect("utf-8 path")])
        .status()
        .expect("run nightcast-controller init");
    assert!(status.success(), "nightcast-controller init failed");
    data
}

/// Builds `image` into the controller's store (data directory `controller`) as master `name`
/// `version`, signed with its key, and writes the manifest to `out`.
pub fn build_master(controller: &Path, image: &Path, name: &str, version: &str, out: &Path) {
    let c = controller.to_str().expect("utf-8 path");
    let status = Command::new(workspace_bin("nightcast-image"))
        .args(["build", "--store", &format!("{c}/store")])
        .args(["--key", &format!("{c}/signing.key")])
        .args(["--name", name, "--version", version])
        .arg(image)
        .arg("-o")
        .arg(out)
        .stdout(Stdio::null())
        .status()
        .expect("run nightcast-image");
    assert!(status.success(), "nightcast-image build failed");
}

/// A `nightcast-controller serve` on loopback ports, killed when dropped (a test that fails half-way
/// leaves no process behind).
#[derive(Debug)]
pub struct Controller {
    pub child: Child,
    /// Where relays connect (QUIC).
    pub quic: String,
    /// The admin API, `http://...`.
    pub api: String,
}

impl Controller {
    /// Serves the data directory `data` (already initialised) and waits for both addresses.
    pub fn start(data: &Path) -> Controller {
        Controller::start_with(data, &[])
    }

    /// The same with extra environment variables (e.g. `NIGHTCAST_CLOCK`).
    pub fn start_with(data: &Path, env: &[(&str, &str)]) -> Controller {
        Controller::start_full(data, env, None)
    }

    /// The same with a configuration file; the log goes to `DATA.log`.
    pub fn start_full(data: &Path, env: &[(&str, &str)], config: Option<&Path>) -> Controller {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .expect("controller log");
        let mut cmd = Command::new(workspace_bin("nightcast-controller"));
        cmd.envs(env.iter().copied()).arg("serve");
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        let mut child = cmd
            .args(["--data", data.to_str().expect("utf-8 path")])
            .args(["--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start nightcast-controller");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = |prefix: &str| {
            let mut l = String::new();
            out.read_line(&mut l).expect("controller output");
            l.trim()
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{l:?}"))
                .to_owned()
        };
        let quic = line("listening on ");
        let api = line("admin API on ");
        Controller { child, quic, api }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The forwarder's clients, each with its own socket towards upstream.
type Clients = Vec<(SocketAddr, Arc<UdpSocket>)>;

/// A datagram held back until `due`: (due, socket, bytes, destination).
type Held = (Instant, Arc<UdpSocket>, Vec<u8>, SocketAddr);

/// A UDP forwarder between a client and `upstream` that counts every byte it carries (both ways),
/// can cut the link (drop everything) for a while, and can add a fixed delay each way (the
/// kernel here has no `netem`): the "other end" of a relay's WAN counters, or the WAN's latency.
#[derive(Debug)]
pub struct UdpCounter {
    pub addr: SocketAddr,
    pub bytes: Arc<AtomicU64>,
    pub cut: Arc<AtomicBool>,
    upstream: Arc<Mutex<SocketAddr>>,
    stop: Arc<AtomicBool>,
}

/// Moves the calling thread into network namespace `ns` (made by `ip netns add`); the sockets it
/// opens afterwards, and the threads it starts, belong to that namespace.
pub fn enter_netns(ns: &str) {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&file),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap_or_else(|e| panic!("setns {ns}: {e}"));
}

impl UdpCounter {
    pub fn start(upstream: SocketAddr) -> UdpCounter {
        UdpCounter::start_with(None, "127.0.0.1:0", upstream, Duration::ZERO)
    }

    /// Listens on `listen`, inside network namespace `netns` if given, and delays each datagram
    /// by `one_way` in each direction.
    pub fn start_with(
        netns: Option<&str>,
        listen: &str,
        upstream: SocketAddr,
        one_way: Duration,
    ) -> UdpCounter {
        let (bytes, cut, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let upstream = Arc::new(Mutex::new(upstream));
        let (netns, listen) = (netns.map(str::to_owned), listen.to_owned());
        let (b, c, s, up) = (bytes.clone(), cut.clone(), stop.clone(), upstream.clone());
        let (ready, bound) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            if let Some(ns) = &netns {
                enter_netns(ns);
            }
            let front = UdpSocket::bind(&listen).expect("bind the forwarder");
            front
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            ready
                .send(front.local_addr().expect("address"))
                .expect("send");
            let front = Arc::new(front);
            let send = delayed_sender(one_way, s.clone());
            let mut clients: Clients = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = front.recv_from(&mut buf) else {
                    continue;
                };
                if c.load(Ordering::Relaxed) {
                    continue;
                }
                b.fetch_add(n as u64, Ordering::Relaxed);
                let back = match clients.iter().find(|(a, _)| *a == from) {
                    Some((_, sock)) => sock.clone(),
                    None => {
                        let sock = Arc::new(UdpSocket::bind("0.0.0.0:0").expect("bind"));
                        sock.set_read_timeout(Some(Duration::from_millis(100)))
                            .expect("timeout");
                        clients.push((from, sock.clone()));
                        let (front, sock2, b, c, s, send) = (
                            front.clone(),
                            sock.clone(),
                            b.clone(),
                            c.clone(),
                            s.clone(),
                            send.clone(),
                        );
                        std::thread::spawn(move || {
                            let mut buf = vec![0u8; 65536];
                            while !s.load(Ordering::Relaxed) {
                                let Ok(n) = sock2.recv(&mut buf) else {
                                    continue;
                                };
                                if c.load(Ordering::Relaxed) {
                                    continue;
                                }
                                b.fetch_add(n as u64, Ordering::Relaxed);
                                send(&front, &buf[..n], from);
                            }
                        });
                        sock
                    }
                };
                let to = *up.lock().expect("upstream");
                send(&back, &buf[..n], to);
            }
        });
        let addr = bound.recv().expect("the forwarder's address");
        UdpCounter {
            addr,
            bytes,
            cut,
            upstream,
            stop,
        }
    }

    /// Forwards to another address from now on (a restarted server on a new port).
    pub fn set_upstream(&self, to: SocketAddr) {
        *self.upstream.lock().expect("upstream") = to;
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for UdpCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends at once with no delay; else hands datagrams to one thread that sends each `one_way`
/// after it was handed over (a FIFO, since the delay is the same for all).
#[allow(clippy::type_complexity, clippy::disallowed_methods)] // a link's delay is real time
fn delayed_sender(
    one_way: Duration,
    stop: Arc<AtomicBool>,
) -> Arc<dyn Fn(&Arc<UdpSocket>, &[u8], SocketAddr) + Send + Sync> {
    if one_way.is_zero() {
        return Arc::new(|sock: &Arc<UdpSocket>, data: &[u8], to: SocketAddr| {
            let _ = sock.send_to(data, to);
        });
    }
    let (tx, rx) = std::sync::mpsc::channel::<Held>();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((due, sock, data, to)) = rx.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let _ = sock.send_to(&data, to);
        }
    });
    let tx = Mutex::new(tx);
    Arc::new(move |sock: &Arc<UdpSocket>, data: &[u8], to: SocketAddr| {
        if let Ok(tx) = tx.lock() {
            let _ = tx.send((Instant::now() + one_way, sock.clone(), data.to_vec(), to));
        }
    })
}

/// `nightcast ARGS` against the controller `c` with the admin token of its data directory `data`:
/// its output, whatever the exit code (a panic fails the test).
pub fn nightcast(c: &Controller, data: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_nightcast"))
        .args([
            "--api",
            &c.api,
            "--token-file",
            data.join("admin.token").to_str().expect("utf-8 path"),
        ])
        .args(args)
        .env_remove("NIGHTCAST_TOKEN")
        .output()
        .expect("run nightcast");
    assert_ne!(
        out.status.code(),
        Some(101),
        "nightcast {args:?} panicked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `nightcast`, which must succeed: its stdout.
pub fn nightcast_ok(c: &Controller, data: &Path, args: &[&str]) -> String {
    let out = nightcast(c, data, args);
    assert!(
        out.status.success(),
        "nightcast {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}
