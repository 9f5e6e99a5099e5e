//! `GET /metrics`: the facts of the moment gathered for `crate::metrics::render` (the plan's
//! verdicts, the nodes, the catalogue's chunks), rendered with the controller's counters.
//!
//! Open without the admin token, like any Prometheus target: it changes nothing and tells no
//! secret, but it does name sites and nodes and their state to whoever reaches the admin address
//! (see docs/PROTOCOL.md, weak points).

use super::plan::current;
use super::{db_error, Api, Reply};
use crate::db::Db;
use crate::metrics::{render, Facts, Verdicts};
use crate::plan::Verdict;

/// The path, without the admin token.
pub const PATH: &str = "/metrics";

/// The exposition at `now`.
pub(super) fn scrape(api: &Api, now: i64) -> Result<String, Reply> {
    let db = Db::open(&api.data.database()).map_err(db_error)?;
    let (plan, classes) = current(api, &db, now)?;
    let verdicts = plan
        .iter()
        .map(|(site, rows)| {
            let mut v = Verdicts {
                site: site.clone(),
                ..Verdicts::default()
            };
            for r in rows {
                *match r.verdict {
                    Verdict::OnTime { .. } => &mut v.on_time,
                    Verdict::AtRisk { .. } => &mut v.at_risk,
                    Verdict::Late { .. } => &mut v.late,
                    Verdict::Unknown => &mut v.unknown_master,
                } += 1;
            }
            v
        })
        .collect();
    let facts = Facts {
        verdicts,
        nodes: db.nodes_seen().map_err(db_error)?,
        masters: classes.masters.len() as u64,
        chunks: classes.chunks,
        stored_bytes: classes.bytes.iter().sum(),
    };
    Ok(render(&api.metrics, &facts))
}
