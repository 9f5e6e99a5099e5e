//! The masters page (`GET /masters`): each master version with its size, what it takes in the
//! store, the bytes it shares with other masters (the chunk classes the planner uses), where it
//! is held (relays and NUCs, by site), what it costs each site (`GET /v1/masters/N/V/cost`), and
//! the imports under way (`GET /v1/masters/imports`) and started here (`masters_import`).

use std::collections::BTreeMap;

use image_tools::api::{ImportProgress, MasterInfo, SiteCost};
use image_tools::wire::MasterRef;

use super::masters_page::{self, Held, MasterLine};
use super::routes::failed;
use super::session::Session;
use super::Console;
use crate::db::Db;
use crate::plan::Classes;

/// Per master version, the stored bytes of its chunks that another master version uses too.
pub fn shared_bytes(classes: &Classes) -> BTreeMap<MasterRef, u64> {
    let mut users = vec![0u32; classes.bytes.len()];
    for cls in classes.masters.values() {
        for &c in cls {
            users[c as usize] += 1;
        }
    }
    classes
        .masters
        .iter()
        .map(|(m, cls)| {
            let shared = cls
                .iter()
                .filter(|&&c| users[c as usize] > 1)
                .map(|&c| classes.bytes[c as usize])
                .sum();
            (m.clone(), shared)
        })
        .collect()
}

pub fn page(console: &Console, session: &Session, now: i64) -> Response {
    let db = match Db::open(&console.api.data.database()) {
        Ok(db) => db,
        Err(e) => return failed(session, "open the catalogue", e),
    };
    let profiles = match db.profiles() {
        Ok(p) => p,
        Err(e) => return failed(session, "read the machine profiles", e),
    };
    let masters: Vec<MasterInfo> = match db.masters() {
        Ok(m) => m
            .into_iter()
            .filter_map(|(name, version, size, stored_bytes)| {
                let name: image_tools::MasterName = name.parse().ok()?;
                let profile = profiles
                    .iter()
                    .find(|p| p.name == name)
                    .and_then(|p| p.profile.clone());
                Some(MasterInfo {
                    name,
                    version: version.parse().ok()?,
                    size,
                    stored_bytes,
                    profile,
                })
            })
            .collect(),
        Err(e) => return failed(session, "read the masters", e),
    };
    let mut refs: Vec<MasterRef> = masters
        .iter()
        .map(|m| MasterRef {
            name: m.name.clone(),
            version: m.version.clone(),
        })
        .collect();
    refs.sort();
    let classes = match console.api.classes.get(refs, || db.classes()) {
        Ok(c) => c,
        Err(e) => return failed(session, "read the chunks of the masters", e),
    };
    let shared = shared_bytes(&classes);
    let fleet = match crate::api::fleet_rows(&db, now, console.api.silent_after_secs) {
        Ok(f) => f,
        Err((_, e)) => return failed(session, "read the fleet", e),
    };
    let imports: Vec<ImportProgress> = console.api.imports.list(console.api.clock.now_f64());
    let lines: Vec<MasterLine> = masters
        .iter()
        .map(|m| {
            let key = format!("{} {}", m.name, m.version);
            let mut held: BTreeMap<String, Held> = BTreeMap::new();
            for n in fleet.iter().filter(|n| session.user.sees(n.site.as_str())) {
                if n.holding.split(", ").any(|h| h == key) {
                    let h = held.entry(n.site.to_string()).or_default();
                    match n.role {
                        image_tools::api::NodeRole::Relay => h.relay = true,
                        image_tools::api::NodeRole::Agent => h.nucs += 1,
                    }
                }
            }
            let r = MasterRef {
                name: m.name.clone(),
                version: m.version.clone(),
            };
            let url = format!("/v1/masters/{}/{}/cost", m.name, m.version);
            let costs: Vec<SiteCost> =
                super::calendar::answer(crate::api::call(&console.api, "GET", &url, &()))
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "console: the cost of a master version");
                        Vec::new()
                    })
                    .into_iter()
                    .filter(|c: &SiteCost| session.user.sees(c.site.as_str()))
                    .collect();
            MasterLine {
                info: m,
                shared: shared.get(&r).copied().unwrap_or(0),
                held,
                costs,
            }
        })
        .collect();
    let console_imports = console.api.imports.from_console();
    Response::html(
        200,
        masters_page::masters(session, &lines, &imports, &console_imports),
    )
}

use super::http::Response;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn m(v: &str) -> MasterRef {
        MasterRef::new("win11", v).unwrap()
    }

    #[test]
    fn shared_bytes_count_the_classes_another_master_uses_too() {
        // Class 0: win11 1 only; class 1: both; class 2: win11 2 only.
        let classes = Classes {
            bytes: vec![100, 40, 7],
            chunks: 3,
            masters: HashMap::from([(m("1"), vec![0, 1]), (m("2"), vec![1, 2])]),
        };
        let s = shared_bytes(&classes);
        assert_eq!(s[&m("1")], 40);
        assert_eq!(s[&m("2")], 40);
    }
}
