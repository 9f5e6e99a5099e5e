//! The versions seated NUCs reported failed, from their stored reports (for the plan).

use image_tools::report::Report;

use super::nodes::Reported;
use super::{Db, DbError};
use crate::failures::SeatFailure;

impl Db {
    /// Every version that a NUC bound to a seat (and not revoked) reported failed in its last
    /// report, with the seat. A report from before typed reports counts as none.
    pub fn seat_failures(&self) -> Result<Vec<SeatFailure>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT site, room, seat, node, status FROM nodes
             WHERE role = 'agent' AND seat IS NOT NULL AND revoked_at IS NULL
             ORDER BY site, room, seat",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (site, room, seat, node, status) = row?;
            let stored: Reported = status
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default();
            let Report::Agent(report) = stored.report else {
                continue;
            };
            out.extend(report.failed.into_iter().map(|failed| SeatFailure {
                site: site.clone(),
                room: room.clone(),
                seat: seat.clone(),
                node: node.clone(),
                failed,
            }));
        }
        Ok(out)
    }
}
