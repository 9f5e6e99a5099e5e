//! Master imports started from the masters page (admins and operators): `POST /masters/import`
//! names an image on the controller's disk, `POST /masters/upload` (`upload`) sends one. Either
//! way the import is the admin API's (`POST /v1/masters`, `nightcast master import`), run on its
//! own thread; the page shows it under way with its progress, then how it ended
//! (`imports::FromConsole`).

use std::path::PathBuf;
use std::sync::Arc;

use image_tools::api::{ImportMaster, Imported};
use image_tools::{MasterName, MasterVersion};

use super::http::{field, Response};
use super::session::Session;
use super::users::Role;
use super::Console;
use crate::imports::FromConsole;

/// What the user may not do when read-only.
pub const REFUSED: &str = "import masters";

/// 403 unless the session's user may import masters (admins and operators: a master goes only
/// where sessions call for it).
pub fn allowed(session: &Session) -> Result<(), Response> {
    if session.user.role == Role::ReadOnly {
        return Err(super::routes::refused(session, REFUSED, "any site"));
    }
    Ok(())
}

/// The master name and version of a form, or the page saying what is wrong.
pub fn name_and_version(
    session: &Session,
    fields: &[(String, String)],
) -> Result<(MasterName, MasterVersion), Response> {
    let bad = |what: &str| {
        Response::html(
            400,
            super::pages::problem(Some(session), "Import refused", what),
        )
    };
    let name = field(fields, "name").unwrap_or("").trim();
    let version = field(fields, "version").unwrap_or("").trim();
    let name: MasterName = name.parse().map_err(|e| {
        bad(&format!(
            "{name:?} is not a master name ({e}): letters, digits, '-', '_' and '.'"
        ))
    })?;
    let version: MasterVersion = version
        .parse()
        .map_err(|e| bad(&format!("{version:?} is not a version ({e})")))?;
    Ok((name, version))
}

/// `POST /masters/import`: the image at `path` on the controller's disk.
pub fn from_path(
    console: &Console,
    session: &Session,
    fields: &[(String, String)],
    now: i64,
) -> Response {
    if let Err(refused) = allowed(session) {
        return refused;
    }
    let (name, version) = match name_and_version(session, fields) {
        Ok(nv) => nv,
        Err(bad) => return bad,
    };
    let path = field(fields, "path").unwrap_or("").trim();
    if !path.starts_with('/') {
        return Response::html(
            400,
            super::pages::problem(
                Some(session),
                "Import refused",
                "Give the image's full path on the controller (starting with /).",
            ),
        );
    }
    let request = ImportMaster {
        image: PathBuf::from(path),
        name,
        version,
        format: None,
        force: field(fields, "force") == Some("on"),
    };
    start(console.api.clone(), session, request, None, now);
    Response::see_other("/masters")
}

/// Runs `request` on its own thread as `POST /v1/masters` does, kept for the page from now; an
/// `upload` (the temporary file and the name the browser gave it) is removed when it ends.
pub fn start(
    api: Arc<crate::api::Api>,
    session: &Session,
    request: ImportMaster,
    upload: Option<(PathBuf, String)>,
    now: i64,
) {
    let (name, version) = (request.name.clone(), request.version.clone());
    tracing::info!(user = %session.user.name, master = %name, %version, image = %request.image.display(), "master import from the web console");
    api.imports.console_started(FromConsole {
        name: name.clone(),
        version: version.clone(),
        by: session.user.name.clone(),
        started: now,
        outcome: None,
    });
    let failed = (api.clone(), name.clone(), version.clone());
    let run = move || {
        let reply = crate::api::call(&api, "POST", "/v1/masters", &request);
        let mut outcome = super::calendar::answer::<Imported>(reply);
        if let Some((temp, file_name)) = &upload {
            if let Err(e) = std::fs::remove_file(temp) {
                tracing::warn!(path = %temp.display(), error = %e, "cannot remove an uploaded image");
            }
            // The error names the upload's file as the user knows it, and no CLI flag.
            outcome = outcome.map_err(|e| {
                e.replace(&temp.display().to_string(), file_name).replace(
                    "pass --force",
                    "tick \"even if it does not look like a disk\"",
                )
            });
        }
        if let Err(e) = &outcome {
            tracing::warn!(master = %name, %version, error = %e, "console import failed");
        }
        api.imports.console_ended(&name, &version, now, outcome);
    };
    if let Err(e) = std::thread::Builder::new()
        .name("console-import".into())
        .spawn(run)
    {
        tracing::error!(error = %e, "cannot start an import thread");
        let (api, name, version) = failed;
        let outcome = Err(format!("the controller could not start the import: {e}"));
        api.imports.console_ended(&name, &version, now, outcome);
    }
}
