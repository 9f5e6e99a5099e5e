//! The NUC's screen as `nightcast-agent run` drives it (`screen = ":N"` in its config), with a
//! real X server (Xvfb), a real relay and controller, and the test hypervisor (no VM window): the
//! status page says "Ready" once the session's master is here, gives way to the (fake) guest
//! during the session (the screen is the bare X root, black: nothing of the page is left over),
//! and comes back when the session ends. Screenshots with `xwd`, as a DSI would take one.
//! The guest's own window on that screen is `node-agent/tests/kiosk.rs`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::fleet::*;

struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start() -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-nolisten",
                "tcp",
                "-screen",
                "0",
                "800x600x24",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run Xvfb (package xvfb, see .ci/run)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Xvfb {
            child,
            display: format!(":{}", line.trim()),
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The screen's pixels as RGB, from `xwd -root` (a ZPixmap of 32 bits a pixel, as Xvfb at depth
/// 24 gives).
fn screen_rgb(display: &str) -> Vec<[u8; 3]> {
    let out = Command::new("xwd")
        .args(["-root", "-silent", "-display", display])
        .output()
        .expect("cannot run xwd (package x11-apps, see .ci/run)");
    assert!(out.status.success(), "xwd failed");
    let b = out.stdout;
    let field = |i: usize| u32::from_be_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    let (header, format, width, height) = (field(0), field(2), field(4), field(5));
    let (byte_order, bpp, line) = (field(7), field(11), field(12));
    let (masks, ncolors) = ([field(14), field(15), field(16)], field(19));
    assert_eq!((format, bpp), (2, 32), "xwd: not a 32-bit ZPixmap");
    let data = &b[(header + ncolors * 12) as usize..];
    let mut px = Vec::new();
    for y in 0..height {
        for x in 0..width {
            let at = (y * line + x * 4) as usize;
            let raw = [data[at], data[at + 1], data[at + 2], data[at + 3]];
            let p = if byte_order == 0 {
                u32::from_le_bytes(raw)
            } else {
                u32::from_be_bytes(raw)
            };
            px.push(masks.map(|m| ((p & m) >> m.trailing_zeros()) as u8));
        }
    }
    px
}

fn share(px: &[[u8; 3]], want: [u8; 3]) -> f64 {
    let n = px
        .iter()
        .filter(|p| (0..3).all(|k| p[k].abs_diff(want[k]) <= 8))
        .count();
    n as f64 / px.len() as f64
}

const PAGE: [u8; 3] = [0x1d, 0x3b, 0x5c];
const READY: [u8; 3] = [0x5c, 0xd6, 0x7a];

fn wait_screen(
    nuc: &AgentProc,
    display: &str,
    what: &str,
    secs: u64,
    ok: impl Fn(&[[u8; 3]]) -> bool,
) {
    for _ in 0..secs * 5 {
        if ok(&screen_rgb(display)) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let px = screen_rgb(display);
    panic!(
        "the screen never showed {what}: page background {:.2}, green {:.4}, black {:.2}\n\
         status: {}\nlog:\n{}",
        share(&px, PAGE),
        share(&px, READY),
        share(&px, [0, 0, 0]),
        nuc.status(),
        nuc.log_text()
    );
}

#[test]
fn the_agent_shows_ready_between_sessions_and_gives_the_screen_to_the_session() {
    let x = Xvfb::start();
    let f = Fleet::build(
        "00:00-23:59",
        100,
        8,
        "start=2030-01-08T07:35:00Z speed=60",
        "",
        "",
    );
    f.calendar("lyon,salle-1,demo,1,2030-01-08 08:00,2030-01-08 08:20\n");
    f.nightcast(&["seat", "add", "lyon", "salle-1", "pc-1"]);
    let relay = f.relay(&DEFAULT_RELAY);
    let nuc = f.seated_agent(
        "nuc-1",
        "pc-1",
        &relay,
        &format!("screen = \"{}\"\n", x.display),
    );
    nuc.wait("version 1 to be ready before its session", 60, |a| {
        a.s("current") == "demo 1" && a.s("session").is_empty()
    });
    wait_screen(&nuc, &x.display, "the status page saying Ready", 20, |px| {
        share(px, PAGE) > 0.8 && share(px, READY) > 0.001
    });

    nuc.wait("the session to start", 60, |a| {
        a.s("session").starts_with("demo 1")
    });
    // The test hypervisor has no window: the session's screen is the bare root, nothing of the
    // page left.
    wait_screen(&nuc, &x.display, "the session (no page)", 10, |px| {
        share(px, [0, 0, 0]) > 0.99
    });

    nuc.wait("the session to end", 60, |a| {
        a.s("session").is_empty() && a.n("resets") >= 1
    });
    wait_screen(
        &nuc,
        &x.display,
        "the status page after the session",
        10,
        |px| share(px, PAGE) > 0.8 && share(px, READY) > 0.001,
    );
}
