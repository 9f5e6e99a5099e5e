//! An emergency push's verdict in words, room by room: will every NUC run the version by the
//! deadline, and if not, which ones and by when (times in the site's zone).

use image_tools::api::{PushRoom, PushVerdict};

use crate::local_time::Zones;

/// Each room's verdict, then what it rests on, then each NUC that is not in time (or every NUC,
/// with `all_nucs`).
pub fn push_table(rooms: &[PushRoom], zones: &Zones, all_nucs: bool) -> String {
    let mut out = Vec::new();
    for r in rooms {
        let time = |t: i64| zones.time(&r.site, t);
        let verdict = match &r.verdict {
            PushVerdict::Ready {} => format!(
                "READY by {}: every NUC runs it by {}",
                time(r.deadline),
                r.ready_at.map_or_else(|| "?".to_owned(), time)
            ),
            PushVerdict::AtRisk { why } => format!(
                "AT RISK for {}: every NUC runs it by {} by the numbers, but {why}",
                time(r.deadline),
                r.ready_at.map_or_else(|| "?".to_owned(), time)
            ),
            PushVerdict::Late {} => {
                let late = r.nucs.iter().filter(|n| !n.in_time && n.why != "no_nuc");
                format!(
                    "LATE for {}: {} NUC(s) will not run it in time",
                    time(r.deadline),
                    late.count()
                )
            }
        };
        out.push(format!(
            "{} {}  {} {}  {verdict}",
            r.site, r.room, r.master, r.version
        ));
        out.push(format!(
            "    relay: {} to fetch at {} Mbit/s, held by {}; then {} to the room's NUCs over the LAN (counted at {} Mbit/s)",
            human(r.relay_missing_bytes),
            r.cap_mbit,
            time(r.relay_ready_at),
            human(r.lan_bytes),
            r.lan_mbit
        ));
        for n in r.nucs.iter().filter(|n| all_nucs || !n.in_time) {
            let when = n.runs_at.map(time);
            let words = match (n.why.as_str(), &when) {
                ("no_nuc", _) => "no NUC at this seat".to_owned(),
                ("no_relay", _) => "never: no relay at the site (`nightcast enroll`)".to_owned(),
                ("holds", Some(t)) => format!("holds it: runs it from {t}"),
                ("session_end", Some(t)) => {
                    format!("has it during a session: swaps at its end, {t}")
                }
                (_, Some(t)) => format!("runs it at {t}, when the transfers end"),
                (_, None) => "never, as things stand".to_owned(),
            };
            let mark = if n.in_time || n.why == "no_nuc" {
                ""
            } else {
                "NOT IN TIME: "
            };
            let node = if n.node.is_empty() { "-" } else { &n.node };
            out.push(format!("    {} {node}: {mark}{words}", n.seat));
        }
    }
    out.join("\n")
}

fn human(bytes: u64) -> String {
    image_tools::cli::human(bytes)
}
