//! Masters (list, import from a file on the controller's disk, removal), calendars and sessions.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::{db_error, error, routed, str_field, Answer, Api, Call, Reply, NO_ROUTE};
use crate::db::Db;

/// The answer to `call` if it is one of this module's routes.
pub(super) fn route(call: &Call) -> Option<Answer> {
    let (api, body, now) = (call.api, call.body, call.now);
    let db = || call.db();
    routed((|| match (call.method, call.path) {
        ("GET", ["v1", "masters"]) => Ok(json!(db()?
            .masters()
            .map_err(db_error)?
            .iter()
            .map(|m| json!({"name": m.0, "version": m.1, "size": m.2, "stored_bytes": m.3}))
            .collect::<Vec<_>>())),
        ("POST", ["v1", "masters"]) => import_master(api, body, now),
        ("DELETE", ["v1", "masters", name, version]) => {
            db()?.remove_master(name, version, now).map_err(db_error)?;
            Ok(json!({"ok": true}))
        }
        ("POST", ["v1", "calendar"]) => {
            let name = str_field(body, "file_name")?;
            let text = str_field(body, "text")?;
            let mut db = db()?;
            let n = if name.to_ascii_lowercase().ends_with(".ics") {
                db.import_ics(name, text)
            } else {
                db.import_csv(name, text)
            }
            .map_err(db_error)?;
            Ok(json!({"imported": n}))
        }
        ("GET", ["v1", "sessions"]) => Ok(json!(db()?
            .sessions(None)
            .map_err(db_error)?
            .iter()
            .map(
                |s| json!({"id": s.id, "site": s.site, "room": s.room, "master": s.master,
                            "version": s.version, "start": s.start, "end": s.end})
            )
            .collect::<Vec<_>>())),
        ("POST", ["v1", "sessions"]) => {
            db()?
                .add_session(
                    str_field(body, "site")?,
                    str_field(body, "room")?,
                    (str_field(body, "master")?, str_field(body, "version")?),
                    str_field(body, "start")?,
                    str_field(body, "end")?,
                )
                .map_err(db_error)?;
            Ok(json!({"ok": true}))
        }
        ("DELETE", ["v1", "sessions", id]) => {
            let id: i64 = id
                .parse()
                .map_err(|_| error(400, format!("{id:?} is not a session id")))?;
            db()?.remove_session(id).map_err(|e| error(404, e))?;
            Ok(json!({"ok": true}))
        }
        _ => Err(NO_ROUTE),
    })())
}

/// Imports an image on the controller's disk into the store and registers it: chunks are durable
/// before the catalogue names the master, so a crash at any point leaves a consistent catalogue.
/// Only that file is read (`format`, if given, pins its format; see `image_tools::import`), and the
/// signed manifest and every chunk are checked again (`crate::check_master`) before the row is written.
fn import_master(api: &Api, body: &Value, now: i64) -> Result<Value, Reply> {
    let image = PathBuf::from(str_field(body, "image")?);
    let name = str_field(body, "name")?
        .parse()
        .map_err(|e| error(400, e))?;
    let version = str_field(body, "version")?
        .parse()
        .map_err(|e| error(400, e))?;
    let format = match body.get("format") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_str()
                .ok_or_else(|| error(400, "field \"format\" must be a string"))?
                .parse::<image_tools::import::ImageFormat>()
                .map_err(|e| error(400, e))?,
        ),
    };
    let key = image_tools::SigningKey::load(&api.data.signing_key()).map_err(|e| error(500, e))?;
    let store = image_tools::LocalStore::open(&api.data.store()).map_err(|e| error(500, e))?;
    let opts = image_tools::import::ImportOptions {
        name,
        version,
        params: image_tools::ChunkParams::DEFAULT,
        threads: 0,
    };
    let report = image_tools::import::import_file(&image, format, &store, &key, &opts, &|_, _| {})
        .map_err(|e| error(400, format!("{e:#}")))?;
    drop(store);
    let manifest = crate::check_master(&api.data, report.manifest.bytes().to_vec())
        .map_err(|e| error(500, format!("{e:#}")))?;
    Db::open(&api.data.database())
        .and_then(|db| db.add_master(&manifest, manifest.bytes(), now))
        .map_err(db_error)?;
    let s = manifest.summary();
    Ok(json!({
        "name": opts.name.as_str(), "version": opts.version.as_str(), "size": report.bytes_read,
        "new_chunks": report.new_chunks, "new_stored_bytes": report.new_stored_bytes,
        "replaced_chunks": report.replaced_chunks, "chunks": s.chunks, "hole_bytes": s.hole_bytes,
    }))
}
