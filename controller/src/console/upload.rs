//! `POST /masters/upload`: a master image sent from the masters page, written as it arrives to a
//! temporary file under the data directory (`uploads/`), never held in memory: the session,
//! the role and the size (`[console] max_upload_gb`) are checked from the request's head before a
//! byte is read, the CSRF token and the name and version (form fields before the file) before a
//! byte is written. The file is flushed to disk (fsync) and imported as `masters_import` does,
//! then removed; a cut or refused upload leaves nothing. The upload shows on the masters page
//! with its progress while it arrives.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use image_tools::api::ImportMaster;
use tokio::io::AsyncReadExt;

use super::http::{field, Head, Response, IMAGE_UPLOAD_PATH};
use super::multipart::{Event, Stream, StreamError};
use super::session::Session;
use super::{masters_import, pages, routes, Console};
use crate::DataDir;

/// Time the browser may stay silent in the middle of an upload.
const IDLE: Duration = Duration::from_secs(60);

/// Whether `head` is an image upload (its body is read here, not by `routes`).
pub fn is_upload(head: &Head) -> bool {
    head.method == "POST" && head.path == IMAGE_UPLOAD_PATH
}

/// Where uploads are written while they arrive.
pub fn dir(data: &DataDir) -> PathBuf {
    data.0.join("uploads")
}

/// Removes what uploads cut by a stop of the controller left.
pub fn clear_leftovers(data: &DataDir) {
    if let Ok(entries) = std::fs::read_dir(dir(data)) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A temporary file removed when dropped, unless kept.
struct Temp {
    path: PathBuf,
    file: std::fs::File,
    keep: bool,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn create(dir: &Path) -> std::io::Result<Temp> {
    std::fs::create_dir_all(dir)?;
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    let path = dir.join(format!("upload-{}.part", image_tools::ids::hex(&b)));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok(Temp {
        path,
        file,
        keep: false,
    })
}

fn problem(session: Option<&Session>, status: u16, text: &str) -> Response {
    Response::html(status, pages::problem(session, "Upload refused", text))
}

/// Checks, reads and imports an upload; the answer to send.
pub async fn receive<S: tokio::io::AsyncRead + Unpin>(
    console: Arc<Console>,
    head: Head,
    prefix: Vec<u8>,
    stream: &mut S,
) -> Response {
    let now = console.api.clock.now();
    let checked = {
        let (console, cookie) = (console.clone(), head.cookie.clone());
        tokio::task::spawn_blocking(move || {
            let session = routes::session_of(&console, cookie.as_deref(), now)?;
            masters_import::allowed(&session)?;
            Ok::<_, Response>(session)
        })
        .await
        .unwrap_or_else(|_| Err(routes::status(500)))
    };
    let session = match checked {
        Ok(s) => s,
        Err(refused) => {
            tracing::warn!(
                status = refused.status,
                "console: image upload refused before reading it"
            );
            super::drain(stream).await;
            return refused;
        }
    };
    if head.length as u64 > console.max_upload {
        super::drain(stream).await;
        return problem(
            Some(&session),
            413,
            &format!(
                "The image is {} GB; this console takes uploads up to {} GB (`max_upload_gb` in \
                 the controller's [console] settings). Copy it to the controller and import it by \
                 its path instead.",
                head.length as u64 / 1_000_000_000,
                console.max_upload / 1_000_000_000
            ),
        );
    }
    let Some(mut form) = head.content_type.as_deref().and_then(Stream::new) else {
        return problem(Some(&session), 400, "The upload is not a form with a file.");
    };
    match read(&console, &session, &head, prefix, &mut form, stream).await {
        Ok((request, temp, file_name)) => {
            masters_import::start(
                console.api.clone(),
                &session,
                request,
                Some((temp, file_name)),
                now,
            );
            Response::see_other("/masters")
        }
        Err(refused) => {
            // The browser reads the answer once it has sent its body.
            super::drain(stream).await;
            refused
        }
    }
}

/// The form read and its file written: the import to run, the file and the name the browser
/// gave it.
async fn read<S: tokio::io::AsyncRead + Unpin>(
    console: &Console,
    session: &Session,
    head: &Head,
    prefix: Vec<u8>,
    form: &mut Stream,
    stream: &mut S,
) -> Result<(ImportMaster, PathBuf, String), Response> {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut temp: Option<Temp> = None;
    let mut request: Option<(ImportMaster, String)> = None;
    let mut listed = None;
    let mut received = 0u64;
    let total = head.length as u64;
    let mut next = prefix;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        next.truncate((total - received) as usize);
        received += next.len() as u64;
        let events = form.feed(&next).map_err(|e| {
            let status = if e == StreamError::TooLarge { 413 } else { 400 };
            problem(Some(session), status, &e.to_string())
        })?;
        for event in events {
            match event {
                Event::Field { name, value } => fields.push((name, value)),
                Event::File { filename, .. } => {
                    if request.is_some() {
                        return Err(problem(Some(session), 400, "One image at a time."));
                    }
                    if !super::session::csrf_ok(session, field(&fields, "csrf")) {
                        tracing::warn!(user = %session.user.name, "console: image upload without this session's CSRF token");
                        return Err(problem(
                            Some(session),
                            403,
                            "This form was not this session's (CSRF token): reload the page and try again.",
                        ));
                    }
                    let (name, version) = masters_import::name_and_version(session, &fields)?;
                    if filename.is_empty() {
                        return Err(problem(
                            Some(session),
                            400,
                            "Choose the image file to send.",
                        ));
                    }
                    let t = create(&dir(&console.api.data)).map_err(|e| {
                        routes::failed(session, "write the upload under the data directory", e)
                    })?;
                    let l = console.api.imports.start(
                        name.clone(),
                        version.clone(),
                        PathBuf::from(format!("upload of {filename}")),
                        console.api.clock.now_f64(),
                    );
                    listed = Some(l);
                    request = Some((
                        ImportMaster {
                            image: t.path.clone(),
                            name,
                            version,
                            format: None,
                            force: field(&fields, "force") == Some("on"),
                        },
                        filename,
                    ));
                    temp = Some(t);
                }
                Event::Data(data) => {
                    let Some(t) = temp.as_mut() else {
                        return Err(problem(
                            Some(session),
                            400,
                            "The upload is not well formed.",
                        ));
                    };
                    tokio::task::block_in_place(|| t.file.write_all(&data))
                        .map_err(|e| routes::failed(session, "write the upload", e))?;
                }
                Event::End => {}
            }
        }
        if let Some(l) = &listed {
            l.update(received, total);
        }
        if form.done() || received >= total {
            break;
        }
        let n = match tokio::time::timeout(IDLE, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        next = buf[..n].to_vec();
    }
    drop(listed);
    let (Some(mut t), Some((request, file_name)), true) = (temp, request, form.done()) else {
        tracing::warn!(user = %session.user.name, received, total, "console: image upload cut");
        return Err(problem(
            Some(session),
            400,
            &format!("The upload was cut after {received} of {total} bytes: nothing was imported."),
        ));
    };
    tokio::task::block_in_place(|| t.file.sync_all())
        .map_err(|e| routes::failed(session, "write the upload to disk", e))?;
    t.keep = true;
    Ok((request, t.path.clone(), file_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::testing::{console, head, log_in, NOW};
    use tokio::io::AsyncWriteExt;

    const TYPE: &str = "multipart/form-data; boundary=----nightcastX";

    /// The form the masters page sends: token, name, version, then the image.
    fn form(csrf: &str, version: &str, image: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for (name, value) in [("csrf", csrf), ("name", "demo"), ("version", version)] {
            b.extend(format!("------nightcastX\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes());
        }
        b.extend(b"------nightcastX\r\nContent-Disposition: form-data; name=\"image\"; filename=\"demo.img\"\r\nContent-Type: application/octet-stream\r\n\r\n");
        b.extend_from_slice(image);
        b.extend(b"\r\n------nightcastX--\r\n");
        b
    }

    /// Sends `body` (only its first `send` bytes, then hangs up) as the browser does, in pieces.
    async fn send(c: &Arc<Console>, cookie: &str, body: &[u8], send: usize) -> Response {
        let mut h = head("POST", IMAGE_UPLOAD_PATH, cookie, body.len());
        h.content_type = Some(TYPE.into());
        let (mut ours, mut theirs) = tokio::io::duplex(64 << 10);
        let part = body[..send].to_vec();
        let writer = tokio::spawn(async move {
            for piece in part.chunks(10_000) {
                if ours.write_all(piece).await.is_err() {
                    return;
                }
            }
        });
        let r = receive(c.clone(), h, Vec::new(), &mut theirs).await;
        let _ = writer.await;
        r
    }

    fn uploads(c: &Console) -> usize {
        std::fs::read_dir(dir(&c.api.data)).map_or(0, |d| d.count())
    }

    async fn outcome(c: &Console, version: &str) -> Result<image_tools::api::Imported, String> {
        for _ in 0..400 {
            let i = c.api.imports.from_console();
            if let Some(o) = i
                .iter()
                .find(|i| i.version.as_str() == version)
                .and_then(|i| i.outcome.clone())
            {
                return o;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the import of {version} did not end");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_uploaded_image_is_written_to_disk_imported_and_removed() {
        let (_d, c) = console();
        let c = Arc::new(c);
        let (cookie, token) = log_in(&c, "dsi", "correct horse battery", NOW);
        let image = image_tools::testimage::disk_bytes(6 << 20, 3);
        let body = form(&token, "1", &image);
        let r = send(&c, &cookie, &body, body.len()).await;
        assert_eq!(
            (r.status, r.location.as_deref()),
            (303, Some("/masters")),
            "{}",
            r.body
        );
        let done = outcome(&c, "1").await.unwrap();
        assert_eq!(done.size, 6 << 20);
        assert_eq!(uploads(&c), 0, "the uploaded file is removed once imported");
        let db = crate::db::Db::open(&c.api.data.database()).unwrap();
        assert!(db.manifest("demo", "1").unwrap().is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cut_forged_or_too_large_upload_leaves_nothing() {
        let (_d, c) = console();
        let mut c = c;
        c.max_upload = 5 << 20;
        let c = Arc::new(c);
        let image = image_tools::testimage::disk_bytes(2 << 20, 4);
        let (cookie, token) = log_in(&c, "dsi", "correct horse battery", NOW);
        let body = form(&token, "1", &image);
        // Cut half way: nothing imported, no file left.
        let r = send(&c, &cookie, &body, body.len() / 2).await;
        assert_eq!(r.status, 400);
        assert!(r.body.contains("The upload was cut"), "{}", r.body);
        // Without the session's token: refused before a byte is written.
        let forged = form(&"0".repeat(64), "1", &image);
        let r = send(&c, &cookie, &forged, forged.len()).await;
        assert_eq!(r.status, 403);
        // Larger than `max_upload_gb`: refused from its length.
        let big = form(&token, "1", &vec![0u8; 6 << 20]);
        let r = send(&c, &cookie, &big, big.len()).await;
        assert_eq!(r.status, 413);
        assert!(r.body.contains("max_upload_gb"), "{}", r.body);
        // A read-only user: refused before reading, whatever the token.
        let (viewer, vtoken) = log_in(&c, "viewer", "read only password", NOW);
        let body = form(&vtoken, "1", &image);
        let r = send(&c, &viewer, &body, body.len()).await;
        assert_eq!(r.status, 403);
        assert!(
            r.body.contains("does not let you import masters"),
            "{}",
            r.body
        );
        assert_eq!(uploads(&c), 0);
        assert!(c.api.imports.from_console().is_empty());
        assert!(c.api.imports.list(0.0).is_empty());
    }
}
