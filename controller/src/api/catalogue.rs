//! Masters (list, import from a file on the controller's disk, removal), calendars and sessions.

use image_tools::api::{
    CalendarFile, CalendarImported, Done, ImportMaster, Imported, MasterInfo, MasterProfile,
    MoveSession, NewSession, SessionInfo, SessionOrigin, SetProfile, SiteCost,
};
use image_tools::{MasterName, MasterVersion};

use super::{db_error, error, ok, path_id, routed, stored, Answer, Api, Call, Reply, NO_ROUTE};
use crate::db::{Apply, Db, DbError, ProfileRow};

fn answer(row: ProfileRow) -> MasterProfile {
    MasterProfile {
        name: row.name,
        profile: row.profile,
        revision: row.revision,
        set_at: row.set_at,
    }
}

/// The answer to `call` if it is one of this module's routes.
pub(super) fn route(call: &Call) -> Option<Answer> {
    let (api, now) = (call.api, call.now);
    let db = || call.db();
    routed((|| match (call.method, call.path) {
        ("GET", ["v1", "masters"]) => {
            let db = db()?;
            let masters = db.masters().map_err(db_error)?;
            let profiles = db.profiles().map_err(db_error)?;
            let masters = masters
                .iter()
                .map(|(name, version, size, stored_bytes)| {
                    let name: MasterName = stored(name)?;
                    let profile = profiles
                        .iter()
                        .find(|p| p.name == name)
                        .and_then(|p| p.profile.clone());
                    Ok(MasterInfo {
                        name,
                        version: stored(version)?,
                        size: *size,
                        stored_bytes: *stored_bytes,
                        profile,
                    })
                })
                .collect::<Result<Vec<_>, Reply>>()?;
            ok(masters)
        }
        ("GET", ["v1", "masters", "profiles"]) => {
            let rows = db()?.profiles().map_err(db_error)?;
            ok(rows.into_iter().map(answer).collect::<Vec<_>>())
        }
        ("GET", ["v1", "masters", name, "profile"]) => {
            let name: MasterName = path_id(name)?;
            let db = db()?;
            match db.profile(&name).map_err(db_error)? {
                Some(row) => ok(answer(row)),
                None if db.has_master(&name).map_err(db_error)? => ok(MasterProfile {
                    name,
                    profile: None,
                    revision: 0,
                    set_at: 0,
                }),
                None => Err(db_error(DbError::NoMasterName(name.to_string()))),
            }
        }
        ("PUT", ["v1", "masters", name, "profile"]) => {
            let name: MasterName = path_id(name)?;
            let SetProfile { profile } = call.body()?;
            let row = db()?
                .set_profile(&name, profile.as_ref(), now)
                .map_err(db_error)?;
            // The site plans carry it, signed, from the reload this change wakes.
            ok(answer(row))
        }
        ("POST", ["v1", "masters"]) => ok(import_master(api, call.body()?, now)?),
        ("GET", ["v1", "masters", "imports"]) => ok(api.imports.list(api.clock.now_f64())),
        ("GET", ["v1", "masters", name, version, "cost"]) => {
            let master = image_tools::wire::MasterRef {
                name: path_id(name)?,
                version: path_id(version)?,
            };
            ok(site_costs(api, &db()?, &master, now)?)
        }
        ("DELETE", ["v1", "masters", name, version]) => {
            let name: MasterName = path_id(name)?;
            let version: MasterVersion = path_id(version)?;
            db()?
                .remove_master(name.as_str(), version.as_str(), now)
                .map_err(db_error)?;
            ok(Done::YES)
        }
        ("POST", ["v1", "calendar"]) => {
            let CalendarFile { file_name, text } = call.body()?;
            let mut db = db()?;
            let n = if file_name.to_ascii_lowercase().ends_with(".ics") {
                // The calendar named by its file: see `calendar/sync` for the whole answer.
                let horizon = Some(image_tools::api::DEFAULT_HORIZON_DAYS);
                db.sync_ics(
                    &file_name,
                    &file_name,
                    text.as_bytes(),
                    now,
                    horizon,
                    Apply::Whole,
                )
                .map(|s| s.changes.added.len() + s.changes.moved.len())
            } else {
                db.import_csv(&file_name, &text)
            }
            .map_err(db_error)?;
            ok(CalendarImported { imported: n as u64 })
        }
        ("GET", ["v1", "sessions"]) => {
            let sessions = db()?.sessions(None).map_err(db_error)?;
            let sessions = sessions
                .iter()
                .map(|s| {
                    Ok(SessionInfo {
                        id: s.id,
                        site: stored(&s.site)?,
                        room: stored(&s.room)?,
                        master: s.master.clone(),
                        version: s.version.clone(),
                        start: s.start,
                        end: s.end,
                        origin: match (&s.source, s.origin.as_deref()) {
                            (Some((source, feed)), _) => SessionOrigin::Calendar {
                                source: source.clone(),
                                feed: *feed,
                            },
                            (None, Some("hand")) => SessionOrigin::Hand,
                            (None, Some(o)) => match o.strip_prefix("csv:") {
                                Some(file) => SessionOrigin::Csv {
                                    file: file.to_owned(),
                                },
                                None => SessionOrigin::Unknown,
                            },
                            (None, None) => SessionOrigin::Unknown,
                        },
                    })
                })
                .collect::<Result<Vec<_>, Reply>>()?;
            ok(sessions)
        }
        ("POST", ["v1", "sessions"]) => {
            let s: NewSession = call.body()?;
            db()?
                .add_session(
                    s.site.as_str(),
                    s.room.as_str(),
                    (s.master.as_str(), s.version.as_str()),
                    &s.start,
                    &s.end,
                    call.now,
                )
                .map_err(db_error)?;
            ok(Done::YES)
        }
        ("POST", ["v1", "sessions", id, "move"]) => {
            let id: i64 = id
                .parse()
                .map_err(|_| error(400, format!("{id:?} is not a session id")))?;
            let m: MoveSession = call.body()?;
            db()?
                .move_session(id, &m.start, &m.end, call.now)
                .map_err(db_error)?;
            ok(Done::YES)
        }
        ("DELETE", ["v1", "sessions", id]) => {
            let id: i64 = id
                .parse()
                .map_err(|_| error(400, format!("{id:?} is not a session id")))?;
            db()?.remove_session(id).map_err(|e| error(404, e))?;
            ok(Done::YES)
        }
        _ => Err(NO_ROUTE),
    })())
}

/// What `master` costs each site that runs or holds the master (`crate::cost`); 404 for a
/// version not in the catalogue.
fn site_costs(
    api: &Api,
    db: &Db,
    master: &image_tools::wire::MasterRef,
    now: i64,
) -> Result<Vec<SiteCost>, Reply> {
    let masters = db.manifest_revisions().map_err(db_error)?;
    let masters = masters.into_iter().map(|(m, _)| m).collect();
    let classes = api
        .classes
        .get(masters, || db.classes())
        .map_err(db_error)?;
    if !classes.masters.contains_key(master) {
        return Err(error(
            404,
            format!(
                "no master {} {} in the catalogue",
                master.name, master.version
            ),
        ));
    }
    let costs = db.version_costs(now, master, &classes).map_err(db_error)?;
    costs
        .into_iter()
        .map(|c| {
            Ok(SiteCost {
                site: stored(&c.site)?,
                holds: c.holds.into_iter().map(|m| m.version).collect(),
                missing_bytes: c.missing,
                stored_bytes: c.whole,
                rate_bytes_per_sec: c.rate,
                window_secs: c.fetch.map(|f| f.window_secs),
                nights: c.fetch.map(|f| f.nights),
                ready_at: c.fetch.map(|f| f.ready_at),
                relay: c.relay,
            })
        })
        .collect()
}

/// Imports an image on the controller's disk into the store and registers it: chunks are durable
/// before the catalogue names the master, so a crash at any point leaves a consistent catalogue.
/// Only that file is read (`format`, if given, pins its format; see `image_tools::import`), and the
/// signed manifest and every chunk are checked again (`crate::check_master`) before the row is written.
fn import_master(api: &Api, request: ImportMaster, now: i64) -> Result<Imported, Reply> {
    let ImportMaster {
        image,
        name,
        version,
        format,
        force,
    } = request;
    // Before any work: a version that exists already is refused now, not after the import.
    let known = Db::open(&api.data.database())
        .and_then(|db| db.manifest(name.as_str(), version.as_str()))
        .map_err(db_error)?;
    if known.is_some() {
        return Err(error(
            409,
            format!(
                "master {name} {version} already exists: import the image as a new version \
                 (--version), or remove this one first (`nightcast master rm {name} {version}`)"
            ),
        ));
    }
    if !force {
        looks_like_a_disk(&image, format)?;
    }
    let key = image_tools::SigningKey::load(&api.data.signing_key()).map_err(|e| error(500, e))?;
    let opts = image_tools::import::ImportOptions {
        name,
        version,
        params: image_tools::ChunkParams::DEFAULT,
        threads: 0,
    };
    let import = crate::metrics::ImportStarted {
        name: opts.name.as_str(),
        version: opts.version.as_str(),
        image: &image,
    }
    .emit(&api.metrics);
    let listed = api.imports.start(
        opts.name.clone(),
        opts.version.clone(),
        image.clone(),
        api.clock.now_f64(),
    );
    // The file's size until the importer gives the image's (a qcow2 is converted first).
    listed.update(0, std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0));
    let report = image_tools::import::import_file(
        &image,
        format,
        &*api.store,
        &key,
        &opts,
        &|read, size| {
            import.read(read);
            listed.update(read, size);
        },
    )
    .map_err(|e| error(400, format!("{e:#}")))?;
    let manifest = crate::check_master(&api.data, &*api.store, report.manifest.bytes().to_vec())
        .map_err(|e| error(500, format!("{e:#}")))?;
    Db::open(&api.data.database())
        .and_then(|db| db.add_master(&manifest, manifest.bytes(), now))
        .map_err(db_error)?;
    import.ended(report.new_stored_bytes);
    let s = manifest.summary();
    Ok(Imported {
        name: opts.name,
        version: opts.version,
        size: report.bytes_read,
        new_chunks: report.new_chunks,
        new_stored_bytes: report.new_stored_bytes,
        replaced_chunks: report.replaced_chunks,
        chunks: s.chunks,
        hole_bytes: s.hole_bytes,
    })
}

/// Refuses a file that would be imported as raw and is no disk: too small, or with no partition
/// table or file system `probe::layout_of` recognises. Other formats are left to the import.
fn looks_like_a_disk(
    image: &std::path::Path,
    format: Option<image_tools::import::ImageFormat>,
) -> Result<(), Reply> {
    use image_tools::import::ImageFormat;
    use image_tools::probe::{disk_layout, sniff, MIN_RAW_DISK};
    let path = image.display();
    let file =
        std::fs::File::open(image).map_err(|e| error(400, format!("cannot read {path}: {e}")))?;
    let read = |e: std::io::Error| error(400, format!("cannot read {path}: {e}"));
    let raw = match format {
        Some(f) => f == ImageFormat::Raw,
        None => sniff(&file).map_err(read)?.is_none(),
    };
    if !raw {
        return Ok(());
    }
    let size = file.metadata().map_err(read)?.len();
    let hint = "if it really is the disk to import, pass --force";
    if size < MIN_RAW_DISK {
        return Err(error(
            400,
            format!("{path} is {size} bytes: too small to be a disk image ({hint})"),
        ));
    }
    if disk_layout(&file).map_err(read)?.is_none() {
        return Err(error(
            400,
            format!(
                "{path} is not a disk image nightcast recognises: no partition table (MBR, GPT), \
                 LVM volume or file system (ext, XFS, Btrfs, ISO 9660) at its start, and not a \
                 qcow2, VMDK, VHDX, VHD or VDI file ({hint})"
            ),
        ));
    }
    Ok(())
}
