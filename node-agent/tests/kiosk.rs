//! The NUC's screen as a kiosk, with a real X server (Xvfb, 1440 x 800) and the real Debian test
//! master (`guest/`) under TCG, shown by QEMU's SDL display (the `kiosk` profile display) while
//! the agent's kiosk (`kiosk::x11`) manages the screen:
//!
//! 1. between sessions the screen is the status page (the seat, the next session, "Ready"): its
//!    background over most of the screen, its letters in their colours, nothing of a console;
//!    the kiosk is the screen's only window manager (a second one is refused);
//! 2. the VM boots (a new master checked between sessions): its window is laid out full screen
//!    at once, but the page stays on top;
//! 3. the session: the guest paints its console red on the left half, blue on the right; the
//!    screen (X's own picture of it) is the guest's screen filling the display, compared cell by
//!    cell with the guest's QMP `screendump` of the same moment; a request to make QEMU's window
//!    smaller (what its hotkey to leave full screen sends) leaves it full screen;
//! 4. the session ends (ACPI power-off): the status page again, unlike the guest's last screen.
//!
//! Screenshots go to `<target>/kiosk-screenshots/` (printed); timings and memory to stderr.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod guest;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::civil::date;
use nightcast_agent::health::Health;
use nightcast_agent::hypervisor::{host_facts, Hypervisor, Machine, Qemu, QemuConfig};
use nightcast_agent::kiosk::x11::{screenshot, Kiosk, KioskError, Rgb, BACKGROUND};
use nightcast_agent::kiosk::{screen, Facts, Screen};
use nightcast_agent::profile::{
    Accel, Amount, DiskModel, Display, Firmware, HealthCheck, Network, NicModel, Profile, Seat,
};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConfigureWindowAux, ConnectionExt as _};

#[allow(clippy::disallowed_methods)] // a test measures wall time
fn now() -> Instant {
    Instant::now()
}

/// An X server without a screen, on a display number it picks itself.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start(width: u32, height: u32) -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", "1", "-nolisten", "tcp", "-screen", "0"])
            .arg(format!("{width}x{height}x24"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run Xvfb (package xvfb, see .ci/run)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let n: u32 = line.trim().parse().expect("Xvfb gave no display number");
        Xvfb {
            child,
            display: format!(":{n}"),
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn artefacts() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.ancestors().nth(3).unwrap().join("kiosk-screenshots");
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn save_png(img: &Rgb, path: &Path) {
    let f = fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), img.width, img.height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()
        .unwrap()
        .write_image_data(&img.data)
        .unwrap();
}

/// `img` at half its size (each pixel the average of four), for the copies in docs/.
fn half(img: &Rgb) -> Rgb {
    let (w, h) = (img.width / 2, img.height / 2);
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            for k in 0..3 {
                let at = |dx: u32, dy: u32| {
                    u32::from(img.data[(((2 * y + dy) * img.width + 2 * x + dx) * 3 + k) as usize])
                };
                data.push(((at(0, 0) + at(1, 0) + at(0, 1) + at(1, 1)) / 4) as u8);
            }
        }
    }
    Rgb {
        width: w,
        height: h,
        data,
    }
}

/// A P6 PPM file, as QEMU's `screendump` writes it.
fn read_ppm(path: &Path) -> Rgb {
    let bytes = fs::read(path).unwrap();
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        fields.push(String::from_utf8_lossy(&bytes[start..at]).into_owned());
    }
    assert_eq!(fields[0], "P6");
    let (w, h): (u32, u32) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let data = bytes[at + 1..].to_vec();
    assert_eq!(data.len(), (w * h * 3) as usize);
    Rgb {
        width: w,
        height: h,
        data,
    }
}

/// The picture as a `cols` x `rows` grid of average colours (the picture scaled down).
fn cells(img: &Rgb, cols: u32, rows: u32) -> Vec<[f64; 3]> {
    let mut out = Vec::new();
    for r in 0..rows {
        for c in 0..cols {
            let (x0, x1) = (c * img.width / cols, (c + 1) * img.width / cols);
            let (y0, y1) = (r * img.height / rows, (r + 1) * img.height / rows);
            let mut sum = [0f64; 3];
            for y in y0..y1 {
                for x in x0..x1 {
                    let i = ((y * img.width + x) * 3) as usize;
                    for (k, total) in sum.iter_mut().enumerate() {
                        *total += f64::from(img.data[i + k]);
                    }
                }
            }
            let n = f64::from((x1 - x0) * (y1 - y0));
            out.push(sum.map(|v| v / n));
        }
    }
    out
}

/// Mean absolute difference of two grids, per channel, 0-255.
fn difference(a: &[[f64; 3]], b: &[[f64; 3]]) -> f64 {
    let total: f64 = a
        .iter()
        .zip(b)
        .map(|(p, q)| (0..3).map(|k| (p[k] - q[k]).abs()).sum::<f64>())
        .sum();
    total / (a.len() as f64 * 3.0)
}

/// The share of pixels within 8 of `colour` on every channel.
fn share_of(img: &Rgb, colour: (u8, u8, u8)) -> f64 {
    let c = [colour.0, colour.1, colour.2];
    let n = img
        .data
        .chunks_exact(3)
        .filter(|p| (0..3).all(|k| p[k].abs_diff(c[k]) <= 8))
        .count();
    n as f64 / f64::from(img.width * img.height)
}

/// The share of pixels that are near black (a console's background).
fn share_black(img: &Rgb) -> f64 {
    let n = img
        .data
        .chunks_exact(3)
        .filter(|p| p.iter().all(|&v| v < 24))
        .count();
    n as f64 / f64::from(img.width * img.height)
}

/// Waits (up to `limit`) for a screenshot of `display` that `ok` accepts; the last one.
fn wait_for_screen(display: &str, limit: Duration, ok: impl Fn(&Rgb) -> bool) -> (Rgb, bool) {
    let since = now();
    loop {
        let img = screenshot(display).unwrap();
        if ok(&img) || since.elapsed() > limit {
            let good = ok(&img);
            return (img, good);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn facts(waiting_for: Option<&str>, guest_running: bool) -> Facts {
    Facts {
        seat: Some(("salle-1".into(), "poste-05".into())),
        node: "nuc-5".into(),
        now: date(2026, 12, 2).at(12, 40, 0, 0),
        guest_running,
        next: Some((date(2026, 12, 2).at(14, 0, 0, 0), "debian 1".into())),
        waiting_for: waiting_for.map(str::to_owned),
    }
}

/// The page's colours as the page draws them: its background over most of the screen, some
/// letters, and no console (black) anywhere much.
fn looks_like_the_page(img: &Rgb) -> bool {
    share_of(img, BACKGROUND) > 0.8
        && share_of(img, (0xf2, 0xf2, 0xf2)) > 0.002
        && share_black(img) < 0.01
}

#[test]
fn the_guest_fills_the_screen_during_its_session_and_the_status_page_shows_between() {
    let master = guest::debian();
    let out = artefacts();
    eprintln!("kiosk screenshots: {}", out.display());
    // A screen of another shape than QEMU's default mode (1280 x 800) and than the VGA text
    // console (720 x 400): the guest takes its size from the EDID, or there are bars.
    let (width, height) = (1280, 1024);
    let x = Xvfb::start(width, height);
    let me = std::process::id();
    let rss_before = rss_kib(me);

    // 1. Between sessions: the status page.
    let mut kiosk = Kiosk::start(&x.display).unwrap();
    let rss_kiosk = rss_kib(me).saturating_sub(rss_before);
    kiosk.show(screen(&facts(None, false)));
    let (page, ok) = wait_for_screen(&x.display, Duration::from_secs(10), looks_like_the_page);
    save_png(&page, &out.join("page-ready.png"));
    assert!(
        ok,
        "no status page: background {:.2}, letters {:.4}, black {:.2}",
        share_of(&page, BACKGROUND),
        share_of(&page, (0xf2, 0xf2, 0xf2)),
        share_black(&page)
    );
    // "Ready" in green.
    assert!(
        share_of(&page, (0x5c, 0xd6, 0x7a)) > 0.002,
        "no green Ready"
    );
    assert!(matches!(
        Kiosk::start(&x.display),
        Err(KioskError::OtherWindowManager { .. })
    ));

    // 2. The VM boots between sessions (a new master checked): full screen, under the page.
    kiosk.show(screen(&facts(
        Some("booting the new master once to check it"),
        false,
    )));
    let dir = tempfile::tempdir().unwrap();
    let seat = Seat::derive("lyon", "salle-1", "poste-05").unwrap();
    let profile = Profile {
        firmware: Firmware::Bios,
        accel: Accel::Tcg,
        disk: DiskModel::Virtio,
        nic: Some(NicModel::Virtio),
        memory: Amount::Fixed(1024),
        vcpus: Amount::Fixed(2),
        display: Display::Kiosk,
        health: HealthCheck {
            serial_marker: true,
            guest_agent: true,
            within_secs: 400,
        },
        ..Profile::default()
    };
    let machine = Machine {
        profile,
        seat: seat.clone(),
        host: host_facts(Network::Nat),
    };
    let mut config =
        QemuConfig::with_machine("poste-05", &dir.path().join("overlay.qcow2"), machine);
    config.powerdown_grace = Duration::from_secs(120);
    config.x_display = Some(x.display.clone());
    let mut vm = Qemu::new(config).unwrap();
    let t0 = now();
    vm.start(&master).unwrap();
    while kiosk.guest_windows() == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "QEMU's window never came"
        );
        assert_eq!(
            vm.status().unwrap(),
            nightcast_agent::hypervisor::VmStatus::Running
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let window_after = t0.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let (under, ok) = wait_for_screen(&x.display, Duration::from_secs(5), |img| {
        looks_like_the_page(img) && share_of(img, (0xff, 0xc1, 0x4d)) > 0.002
    });
    save_png(&under, &out.join("page-waiting.png"));
    assert!(ok, "the VM's window came over the status page");

    assert_eq!(
        vm.wait_healthy().unwrap(),
        Health::Healthy,
        "serial log:\n{}",
        String::from_utf8_lossy(&vm.serial_log().unwrap())
    );
    let healthy_after = t0.elapsed();

    // 3. The session: the guest's console painted red on the left, blue on the right.
    let mut qga = vm.guest_agent(Duration::from_secs(10)).unwrap();
    // Every row of the console, whatever its size: the left half red, the right half blue.
    let paint = "systemctl stop getty@tty1.service; setterm --blank 0 --cursor off >/dev/tty1 2>/dev/null; \
                 set -- $(stty size </dev/tty1); rows=$1; cols=$2; left=$((cols / 2)); right=$((cols - left)); \
                 printf '\\033[H\\033[2J' >/dev/tty1; i=0; while [ $i -lt $rows ]; do \
                 printf \"\\033[41m%${left}s\\033[44m%${right}s\" '' ''; i=$((i+1)); done >/dev/tty1; \
                 printf '\\033[2;3H\\033[1;37;41mthe guest: Debian, its console\\033[2;%dH\\033[1;37;44mpainted red and blue' $((left + 3)) >/dev/tty1";
    let done = qga
        .exec("/bin/sh", &["-c", paint], Duration::from_millis(200), 100)
        .unwrap();
    assert_eq!(
        done.code,
        Some(0),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    drop(qga);
    let t1 = now();
    kiosk.show(screen(&facts(None, true)));
    assert_eq!(screen(&facts(None, true)), Screen::Guest);
    let halves = |img: &Rgb| {
        let g = cells(img, 2, 1);
        g[0][0] > 120.0 && g[0][2] < 60.0 && g[1][2] > 120.0 && g[1][0] < 60.0
    };
    let (shown, ok) = wait_for_screen(&x.display, Duration::from_secs(20), halves);
    let show_after = t1.elapsed();
    let qmp_dump = dir.path().join("guest.ppm");
    vm.qmp(Duration::from_secs(5))
        .unwrap()
        .screendump(&qmp_dump)
        .unwrap();
    let guest_screen = read_ppm(&qmp_dump);
    // The guest's screen is the display's own size: nothing scaled, no bars.
    assert_eq!(
        (guest_screen.width, guest_screen.height),
        (width, height),
        "the guest did not take the screen's size"
    );
    save_png(&shown, &out.join("guest-on-screen.png"));
    save_png(&half(&shown), &out.join("guest-on-screen-half.png"));
    save_png(&guest_screen, &out.join("guest-screendump.png"));
    assert!(
        ok,
        "the screen does not show the guest's red and blue halves"
    );
    // The display is the guest's screen scaled to fill it: cell by cell the same colours,
    // including along every edge (no border, no black band, nothing else on the screen).
    let (ours, theirs) = (cells(&shown, 16, 12), cells(&guest_screen, 16, 12));
    let diff = difference(&ours, &theirs);
    assert!(
        diff < 12.0,
        "the screen differs from the guest's screendump by {diff:.1} on average"
    );
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        let (c, r) = (i % 16, i / 16);
        if c == 0 || c == 15 || r == 0 || r == 11 {
            let d: f64 = (0..3).map(|k| (a[k] - b[k]).abs()).sum::<f64>() / 3.0;
            assert!(
                d < 40.0,
                "edge cell ({c}, {r}) differs by {d:.0}: {a:?} vs {b:?}"
            );
        }
    }

    // Leaving full screen (QEMU's hotkey asks the window manager for a smaller window): refused.
    let (conn, n) = x11rb::connect(Some(&x.display)).unwrap();
    let root = conn.setup().roots[n].root;
    let children = conn.query_tree(root).unwrap().reply().unwrap().children;
    for w in children {
        let attrs = conn.get_window_attributes(w).unwrap().reply().unwrap();
        if attrs.map_state == x11rb::protocol::xproto::MapState::VIEWABLE {
            conn.configure_window(
                w,
                &ConfigureWindowAux::new()
                    .x(100)
                    .y(80)
                    .width(640)
                    .height(400),
            )
            .unwrap();
        }
    }
    conn.flush().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let after = screenshot(&x.display).unwrap();
    let d = difference(&cells(&after, 16, 12), &theirs);
    assert!(
        d < 12.0,
        "the guest no longer fills the screen after a resize request ({d:.1})"
    );
    drop(conn);
    let qemu_rss = vm.pid().map(rss_kib).unwrap_or(0);

    // 4. The session ends: ACPI power-off, the status page again.
    vm.reset().unwrap();
    kiosk.show(screen(&facts(None, false)));
    let (page_again, ok) =
        wait_for_screen(&x.display, Duration::from_secs(10), looks_like_the_page);
    save_png(&page_again, &out.join("page-after-session.png"));
    save_png(&half(&under), &out.join("page-waiting-half.png"));
    assert!(ok, "no status page after the session");
    let d = difference(&cells(&page_again, 16, 12), &theirs);
    assert!(d > 40.0, "the page looks like the guest's screen ({d:.1})");
    assert_eq!(kiosk.guest_windows(), 0, "QEMU's window is still there");
    drop(kiosk);

    eprintln!(
        "kiosk: QEMU's window full screen {:.2} s after the start; guest healthy after {:.1} s; \
         guest on screen {:.2} s after the session showed; screen vs screendump {diff:.1}/255; \
         kiosk memory in the agent {} KiB; QEMU with the SDL display {} MiB RSS",
        window_after.as_secs_f64(),
        healthy_after.as_secs_f64(),
        show_after.as_secs_f64(),
        rss_kiosk,
        qemu_rss / 1024
    );
}
