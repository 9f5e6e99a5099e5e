//! Which seats of a session's room cannot run its master version: their NUC reported it failed
//! (it did not come up there and is not retried until published again). Pure: the rows come from
//! `db::Db::seat_failures`, the plan API attaches the answer to each session's row.

use image_tools::api::FailedOn;
use image_tools::report::Failed;
use image_tools::wire::MasterRef;

/// A version that failed on the NUC bound to a seat, from that NUC's last report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatFailure {
    pub site: String,
    pub room: String,
    pub seat: String,
    pub node: String,
    pub failed: Failed,
}

/// The seats of `room` at `site` whose NUC reported `master` failed, by seat.
pub fn failed_on(
    site: &str,
    room: &str,
    master: &MasterRef,
    seats: &[SeatFailure],
) -> Vec<FailedOn> {
    let mut out: Vec<FailedOn> = seats
        .iter()
        .filter(|s| s.site == site && s.room == room && &s.failed.master == master)
        .map(|s| FailedOn {
            node: s.node.clone(),
            seat: s.seat.clone(),
            why: s.failed.why.clone(),
            at: s.failed.at,
        })
        .collect();
    out.sort_by(|a, b| (&a.seat, &a.node).cmp(&(&b.seat, &b.node)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(version: &str) -> MasterRef {
        MasterRef::new("win10", version).unwrap()
    }

    fn failure(site: &str, room: &str, seat: &str, version: &str) -> SeatFailure {
        SeatFailure {
            site: site.into(),
            room: room.into(),
            seat: seat.into(),
            node: format!("nuc-{seat}"),
            failed: Failed {
                master: m(version),
                why: format!("kernel panic on {seat}"),
                at: 7,
            },
        }
    }

    #[test]
    fn only_the_sessions_room_and_version_count() {
        let seats = [
            failure("lyon", "salle-1", "pc-3", "2"),
            failure("lyon", "salle-1", "pc-1", "2"),
            // The same version elsewhere, another version here: not this session's business.
            failure("lyon", "salle-2", "pc-1", "2"),
            failure("paris", "salle-1", "pc-1", "2"),
            failure("lyon", "salle-1", "pc-2", "1"),
        ];
        let said = failed_on("lyon", "salle-1", &m("2"), &seats);
        assert_eq!(
            said.iter()
                .map(|f| (f.node.as_str(), f.seat.as_str(), f.why.as_str(), f.at))
                .collect::<Vec<_>>(),
            [
                ("nuc-pc-1", "pc-1", "kernel panic on pc-1", 7),
                ("nuc-pc-3", "pc-3", "kernel panic on pc-3", 7),
            ]
        );
        assert!(failed_on("lyon", "salle-1", &m("3"), &seats).is_empty());
    }
}
