//! What relays may read, kept in memory by the server: every master version's signed manifest,
//! and each site's plan (what to fetch and when, its rooms' sessions, its seats, the serials it
//! refuses, the signing keys it accepts, the masters' machine profiles, each signed).
//!
//! Reloaded after each admin change and every minute. Plans are computed again each time (they
//! depend on the time), but a manifest is read from the database once per revision of each
//! master version (`Db::manifest_revisions`; a key rotation raises it): a reload reads only
//! what was added or signed again ([`changes`], pure), and drops what was removed.

use std::collections::{BTreeSet, HashMap};

use anyhow::Result;
use image_tools::exchange::{Catalog, MemoryCatalog};
use image_tools::profile::signed::Statement;
use image_tools::wire::{MasterRef, SignedProfile, SitePlan};
use image_tools::SigningKey;

use crate::db::Db;
use crate::{signing, DataDir};

/// What a reload must do to the manifests in memory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// New master versions, or manifests signed again: read them.
    pub read: Vec<MasterRef>,
    /// Master versions removed from the catalogue: forget them.
    pub drop: Vec<MasterRef>,
}

/// The changes from the revisions `loaded` (in memory) to `current` (in the database).
pub fn changes(loaded: &HashMap<MasterRef, i64>, current: &HashMap<MasterRef, i64>) -> Changes {
    let mut read: Vec<MasterRef> = current
        .iter()
        .filter(|(k, rev)| loaded.get(*k) != Some(*rev))
        .map(|(k, _)| k.clone())
        .collect();
    let mut drop: Vec<MasterRef> = loaded
        .keys()
        .filter(|k| !current.contains_key(*k))
        .cloned()
        .collect();
    read.sort();
    drop.sort();
    Changes { read, drop }
}

/// What one reload did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// Manifests read from the database.
    pub read: usize,
    /// Master versions forgotten.
    pub dropped: usize,
    /// Sites with a plan.
    pub sites: usize,
}

/// Keeps a [`MemoryCatalog`] up to date with the catalogue database.
#[derive(Debug)]
pub struct Reloader {
    data: DataDir,
    /// Time before a session start by which a relay must hold its master.
    margin_secs: i64,
    /// The revision of every manifest in memory.
    loaded: HashMap<MasterRef, i64>,
    /// The sites with a plan in memory.
    sites: BTreeSet<String>,
    /// Chunk classes for the pushes' estimates, rebuilt only when the set of masters changes.
    classes: crate::plan::ClassCache,
    /// The port of `far_listen`, as bound: a far site's plan sends its relay there.
    far_port: Option<u16>,
    /// The far sites whose relays cannot be sent to a far port (no `far_listen`), last said.
    far_unserved: BTreeSet<String>,
}

impl Reloader {
    pub fn new(data: DataDir, margin_secs: i64) -> Reloader {
        Reloader {
            data,
            margin_secs,
            loaded: HashMap::new(),
            sites: BTreeSet::new(),
            classes: crate::plan::ClassCache::default(),
            far_port: None,
            far_unserved: BTreeSet::new(),
        }
    }

    /// Far sites' plans send their relays to `far_port` (the bound `far_listen`; none: off).
    pub fn with_far_port(self, far_port: Option<u16>) -> Reloader {
        Reloader { far_port, ..self }
    }

    /// Brings `catalog` up to date at `now`. Manifests are added and plans replaced in place;
    /// when something was removed (a master version, a site), the catalogue is rebuilt from what
    /// it holds, and swapped whole.
    pub fn reload(&mut self, catalog: &MemoryCatalog, now: i64) -> Result<Reloaded> {
        let db = Db::open(&self.data.database())?;
        let current: HashMap<MasterRef, i64> = db.manifest_revisions()?.into_iter().collect();
        let changes = changes(&self.loaded, &current);
        let mut fresh = Vec::new();
        for key in &changes.read {
            // Gone since `manifest_revisions`: the next reload drops it.
            if let Some((bytes, revision)) = db.manifest(key.name.as_str(), key.version.as_str())? {
                fresh.push((key.clone(), revision, bytes));
            }
        }
        let mut masters: Vec<MasterRef> = current.keys().cloned().collect();
        masters.sort();
        let classes = || self.classes.get(masters, || db.classes());
        let plans = site_plans(
            &self.data,
            &db,
            now,
            self.margin_secs,
            self.far_port,
            classes,
        )?;
        self.say_far_unserved(&db)?;
        let sites: BTreeSet<String> = plans.iter().map(|(s, _)| s.clone()).collect();
        let read = fresh.len();
        for key in &changes.drop {
            self.loaded.remove(key);
        }
        if changes.drop.is_empty() && self.sites.is_subset(&sites) {
            for (key, revision, bytes) in fresh {
                catalog.add_manifest(key.clone(), bytes);
                self.loaded.insert(key, revision);
            }
            for (site, plan) in plans {
                catalog.set_plan(&site, plan);
            }
        } else {
            let rebuilt = MemoryCatalog::default();
            let kept: Vec<MasterRef> = self.loaded.keys().cloned().collect();
            for key in kept {
                match catalog.manifest(&key.clone()) {
                    Some(bytes) => rebuilt.add_manifest(key.clone(), bytes),
                    // Not in memory after all: read it at the next reload.
                    None => {
                        self.loaded.remove(&key);
                    }
                }
            }
            for (key, revision, bytes) in fresh {
                rebuilt.add_manifest(key.clone(), bytes);
                self.loaded.insert(key, revision);
            }
            for (site, plan) in plans {
                rebuilt.set_plan(&site, plan);
            }
            catalog.replace_with(rebuilt);
        }
        self.sites = sites;
        Ok(Reloaded {
            read,
            dropped: changes.drop.len(),
            sites: self.sites.len(),
        })
    }
}

impl Reloader {
    /// Logs the far sites this controller cannot serve as such (it has no `far_listen`), when
    /// that list changes: their relays fetch through `listen` meanwhile.
    fn say_far_unserved(&mut self, db: &Db) -> Result<()> {
        let unserved: BTreeSet<String> = match self.far_port {
            Some(_) => BTreeSet::new(),
            None => db
                .sites()?
                .into_iter()
                .filter(|s| s.link == image_tools::api::Link::Far)
                .map(|s| s.name)
                .collect(),
        };
        if unserved != self.far_unserved && !unserved.is_empty() {
            let sites = unserved.iter().cloned().collect::<Vec<_>>().join(", ");
            tracing::warn!(%sites, "far sites, but this controller has no `far_listen`: their relays fetch through `listen` until it is configured");
        }
        self.far_unserved = unserved;
        Ok(())
    }
}

/// Each site's plan at `now`: the master versions its upcoming sessions (and active overrides)
/// need, earliest deadline first; its rooms' sessions; its seats; what it refuses and accepts.
fn site_plans(
    data: &DataDir,
    db: &Db,
    now: i64,
    margin_secs: i64,
    far_port: Option<u16>,
    classes: impl FnOnce() -> Result<std::sync::Arc<crate::plan::Classes>, crate::db::DbError>,
) -> Result<Vec<(String, SitePlan)>> {
    let mut entries = db.relay_plans(now, margin_secs)?;
    let cas = crate::authority::load(data)?;
    let ca = &cas.current;
    let signing_keys: Vec<_> = signing::endorsed_keys(data, ca, now)?
        .iter()
        .map(|e| e.to_wire())
        .collect();
    let mut rooms = db.room_plans(now)?;
    let mut seats = db.seat_bindings()?;
    let mut pushes = pushes(db, now, classes)?;
    let mut orders: HashMap<String, Vec<image_tools::wire::Order>> = HashMap::new();
    for o in db.orders_since(now - crate::db::ORDER_KEPT_SECS)? {
        orders.entry(o.site.clone()).or_default().push(o.to_wire());
    }
    let profiles = signed_profiles(data, db)?;
    let mut out = Vec::new();
    for site in db.sites()? {
        let plan = SitePlan {
            windows: site
                .windows
                .split(',')
                .map(|w| w.trim().to_owned())
                .collect(),
            tz: site.tz,
            cap_mbit: site.cap_mbit,
            entries: entries.remove(&site.name).unwrap_or_default(),
            rooms: rooms.remove(&site.name).unwrap_or_default(),
            seats: seats.remove(&site.name).unwrap_or_default(),
            revoked: db.revoked_serials(Some(&site.name), now)?,
            signing_keys: signing_keys.clone(),
            current_ca: ca.certificate().to_vec(),
            bridge: cas.bridge.clone(),
            emergency_cap_mbit: site.emergency_cap_mbit,
            pushes: pushes.remove(&site.name).unwrap_or_default(),
            orders: orders.remove(&site.name).unwrap_or_default(),
            profiles: profiles.clone(),
            usb: site.usb,
            peer_upload_mbit: site.peer_upload_mbit,
            peer_share_in_session: site.peer_share_in_session,
            far_port: site.link.far_port(far_port),
        };
        out.push((site.name, plan));
    }
    Ok(out)
}

/// Every master's profile statement, signed with the current manifest-signing key (so a key
/// rotation signs them again by itself): the same for every site, a few hundred bytes each.
fn signed_profiles(data: &DataDir, db: &Db) -> Result<Vec<SignedProfile>> {
    let rows = db.profiles()?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let key = SigningKey::load(&data.signing_key())?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let statement = Statement {
                master: r.name,
                revision: r.revision,
                profile: r.profile,
            };
            image_tools::profile::signed::sign(&statement, &key)
        })
        .collect())
}

/// Each site's emergency pushes in force, with when the controller expects the relay to hold
/// each (`crate::push`; the chunk classes are asked for only when there is a push).
fn pushes(
    db: &Db,
    now: i64,
    classes: impl FnOnce() -> Result<std::sync::Arc<crate::plan::Classes>, crate::db::DbError>,
) -> Result<HashMap<String, Vec<image_tools::wire::Push>>> {
    let overrides: Vec<_> = db
        .overrides(now)?
        .into_iter()
        .filter(|o| o.deadline.is_some())
        .collect();
    let mut out: HashMap<String, Vec<image_tools::wire::Push>> = HashMap::new();
    if overrides.is_empty() {
        return Ok(out);
    }
    let classes = classes()?;
    for o in overrides {
        let deadline = o.deadline.unwrap_or(o.until);
        let rooms = db.push_plan(
            now,
            &o.site,
            &o.master,
            deadline,
            &classes,
            &crate::plan::Settings::default(),
        )?;
        let expected = rooms.first().map_or(now, |r| r.relay_ready_at);
        out.entry(o.site)
            .or_default()
            .push(image_tools::wire::Push {
                master: o.master,
                deadline,
                expected,
            });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> MasterRef {
        MasterRef::new(name, "1").unwrap()
    }

    #[test]
    fn changes_read_what_is_new_or_signed_again_and_drop_what_is_gone() {
        let loaded = HashMap::from([(key("a"), 0), (key("b"), 0), (key("c"), 1)]);
        let current = HashMap::from([(key("a"), 0), (key("b"), 1), (key("d"), 0)]);
        assert_eq!(
            changes(&loaded, &current),
            Changes {
                read: vec![key("b"), key("d")],
                drop: vec![key("c")],
            }
        );
        assert_eq!(changes(&current, &current), Changes::default());
    }

    #[test]
    fn each_site_plan_carries_its_nucs_orders_of_the_last_day() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir(dir.path().join("c"));
        let now = 1_800_000_000;
        crate::init(&data, now).unwrap();
        let mut db = Db::open(&data.database()).unwrap();
        for (site, node) in [("lyon", "nuc-l"), ("paris", "nuc-p")] {
            db.add_site(site, "UTC", "22:00-06:00", 20, None).unwrap();
            let reported = crate::db::Reported::default();
            db.record_report(site, node, "agent", &[], &reported, now)
                .unwrap();
        }
        let kind = image_tools::wire::OrderKind::Reset;
        let old = db
            .order_node("nuc-l", kind, "dsi", now - crate::db::ORDER_KEPT_SECS - 1)
            .unwrap();
        let recent = db.order_node("nuc-l", kind, "dsi", now - 60).unwrap();
        let plans: HashMap<String, SitePlan> = site_plans(&data, &db, now, 0, None, || {
            db.classes().map(std::sync::Arc::new)
        })
        .unwrap()
        .into_iter()
        .collect();
        assert_eq!(plans["lyon"].orders, vec![recent.to_wire()]);
        assert_ne!(old.id, recent.id);
        assert!(plans["paris"].orders.is_empty());
    }

    #[test]
    fn a_far_sites_plan_carries_the_far_port_when_the_controller_has_one() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir(dir.path().join("c"));
        let now = 1_800_000_000;
        crate::init(&data, now).unwrap();
        let mut db = Db::open(&data.database()).unwrap();
        for site in ["lyon", "paris"] {
            db.add_site(site, "UTC", "22:00-06:00", 10, None).unwrap();
        }
        let far = crate::db::SiteChange {
            link: Some(image_tools::api::Link::Far),
            ..Default::default()
        };
        db.set_site("lyon", &far).unwrap();
        let plans = |far_port| -> HashMap<String, SitePlan> {
            site_plans(&data, &db, now, 0, far_port, || {
                db.classes().map(std::sync::Arc::new)
            })
            .unwrap()
            .into_iter()
            .collect()
        };
        let with = plans(Some(4437));
        assert_eq!(with["lyon"].far_port, Some(4437));
        assert_eq!(with["paris"].far_port, None, "a wired site");
        // No far_listen: the far site's relay stays on the address it was given.
        let without = plans(None);
        assert_eq!(without["lyon"].far_port, None);
    }

    fn manifest(name: &str, seed: u8) -> Vec<u8> {
        crate::testing::manifest(name, "1", seed).1
    }

    #[test]
    fn a_reload_reads_each_manifest_once_per_revision_and_forgets_removed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir(dir.path().join("c"));
        crate::init(&data, 1_800_000_000).unwrap();
        let mut db = Db::open(&data.database()).unwrap();
        let add = |db: &Db, name: &str| {
            let (m, bytes) = crate::testing::manifest(name, "1", 1);
            db.add_master(&m, &bytes, 0).unwrap();
        };
        add(&db, "a");
        add(&db, "b");
        db.add_site("lyon", "Europe/Paris", "22:00-06:00", 20, None)
            .unwrap();
        let catalog = MemoryCatalog::default();
        let mut reloader = Reloader::new(data.clone(), 3600);
        let now = 1_800_000_000;
        let reload = |r: &mut Reloader| r.reload(&catalog, now).unwrap();
        let got = |name: &str| catalog.manifest(&key(name));

        let first = reload(&mut reloader);
        assert_eq!((first.read, first.dropped, first.sites), (2, 0, 1));
        assert_eq!(got("a"), Some(manifest("a", 1)));
        assert_eq!(reload(&mut reloader).read, 0, "read again without a change");

        // Signed again (a key rotation): read again, once.
        db.replace_manifest("b", "1", &manifest("b", 2)).unwrap();
        add(&db, "c");
        assert_eq!(reload(&mut reloader).read, 2);
        assert_eq!(got("b"), Some(manifest("b", 2)));
        assert_eq!(reload(&mut reloader).read, 0);

        // Removed: forgotten, the others kept without reading them.
        db.remove_master("a", "1", now).unwrap();
        let after = reload(&mut reloader);
        assert_eq!((after.read, after.dropped), (0, 1));
        assert_eq!(got("a"), None);
        assert_eq!(got("b"), Some(manifest("b", 2)));
        assert_eq!(got("c"), Some(manifest("c", 1)));
        let relay = image_tools::trust::Identity {
            role: image_tools::wire::Role::Relay,
            site: image_tools::SiteId::new("lyon").unwrap(),
            node: image_tools::NodeId::new("relay-1").unwrap(),
        };
        assert_eq!(catalog.plan(&relay).tz, "Europe/Paris");
    }
}
