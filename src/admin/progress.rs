//! `master import`'s progress line: the import request waits on one thread while this one asks
//! the controller how far it has read the image (`GET /v1/masters/imports`) and draws it on
//! stderr: redrawn in place on a terminal, else one line per percent at most (a log stays
//! short).

use std::io::{IsTerminal, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use anyhow::{bail, Result};
use image_tools::api::{ImportProgress, Imported};
use image_tools::{MasterName, MasterVersion};

use super::human;
use crate::client::Client;

/// Runs `import` (the waiting request) and draws the progress of `name` `version` meanwhile.
pub(super) fn while_importing(
    client: &Client,
    name: &MasterName,
    version: &MasterVersion,
    import: impl FnOnce() -> Result<Imported> + Send,
) -> Result<Imported> {
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(move || {
            let _ = tx.send(import());
        });
        let tty = std::io::stderr().is_terminal();
        let mut last_percent = None;
        let mut drew = false;
        let mut wait = Duration::from_millis(200);
        loop {
            match rx.recv_timeout(wait) {
                Ok(result) => {
                    if drew && tty {
                        eprintln!();
                    }
                    return result;
                }
                Err(RecvTimeoutError::Disconnected) => bail!("the import request was lost"),
                Err(RecvTimeoutError::Timeout) => {}
            }
            wait = Duration::from_secs(1);
            let Ok(running) = client.ask::<Vec<ImportProgress>>("GET", "/v1/masters/imports")
            else {
                continue; // An older controller: no progress, the import goes on.
            };
            let Some(p) = running
                .iter()
                .find(|p| p.name == *name && p.version == *version && p.size > 0)
            else {
                continue;
            };
            let text = line(p);
            match tty {
                true => eprint!("\r{text:<78}"),
                false if last_percent != Some(percent(p)) => eprintln!("{text}"),
                false => continue,
            }
            let _ = std::io::stderr().flush();
            last_percent = Some(percent(p));
            drew = true;
        }
    })
}

fn percent(p: &ImportProgress) -> u64 {
    match p.size {
        0 => 0,
        size => (u128::from(p.read) * 100 / u128::from(size)) as u64,
    }
}

/// `importing big 1: 1.20 GiB of 4.00 GiB (30 %), 85.00 MiB/s, about 35 s left`.
pub(super) fn line(p: &ImportProgress) -> String {
    let mut out = format!(
        "importing {} {}: {} of {} ({} %)",
        p.name,
        p.version,
        human(p.read),
        human(p.size),
        percent(p)
    );
    if p.elapsed_secs >= 0.5 && p.read > 0 {
        let rate = p.read as f64 / p.elapsed_secs;
        out += &format!(", {}/s", human(rate as u64));
        if p.size > p.read {
            let left = ((p.size - p.read) as f64 / rate).ceil() as u64;
            out += &match left {
                0..=59 => format!(", about {left} s left"),
                _ => format!(", about {} min left", left.div_ceil(60)),
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(read: u64, size: u64, elapsed_secs: f64) -> ImportProgress {
        ImportProgress {
            name: "win10".parse().unwrap(),
            version: "2".parse().unwrap(),
            image: "/srv/w.img".into(),
            size,
            read,
            elapsed_secs,
        }
    }

    #[test]
    fn the_line_says_bytes_done_of_the_total_the_rate_and_the_time_left() {
        let gib = 1u64 << 30;
        assert_eq!(
            line(&at(12 * gib, 60 * gib, 120.0)),
            "importing win10 2: 12.00 GiB of 60.00 GiB (20 %), 102.40 MiB/s, about 8 min left"
        );
        assert_eq!(
            line(&at(0, 60 * gib, 0.1)),
            "importing win10 2: 0 B of 60.00 GiB (0 %)"
        );
        assert_eq!(
            line(&at(30 << 20, 40 << 20, 3.0)),
            "importing win10 2: 30.00 MiB of 40.00 MiB (75 %), 10.00 MiB/s, about 1 s left"
        );
    }
}
