//! The controller's certificate authorities, and their rotation with an overlap.
//!
//! `DATA/ca/` holds the current CA, which issues every certificate. Rotating
//! (`nightcast-controller rotate-ca`, with the controller stopped) makes a new CA, moves the old
//! one to `DATA/ca-previous/`, and has each CA sign the other (two cross-certificates, valid for
//! the overlap the DSI chose, kept in `DATA/ca/rotation.json`). Until the previous CA is retired,
//! the controller trusts both, presents the bridge with its own certificate, and sends it in every
//! plan and enrolment reply: relays and NUCs accept peers of either CA and move to the new one by
//! renewing their certificate at their next plan (`image_tools::trust::bridge`).
//!
//! Retiring (`retire-ca`) removes the previous CA and the bridge; it refuses while a node's newest
//! certificate is still the previous CA's, naming the nodes (`--force` leaves them to be enrolled
//! again). Plans stop carrying the bridge, and nodes drop it.
//!
//! A rotation is crash-safe: the new CA is written whole under `DATA/ca-next/` first, then two
//! renames put it in place; [`load`] finishes a rotation a crash interrupted between them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image_tools::durable;
use image_tools::ids::hex;
use image_tools::trust::{Ca, Validity};
use serde::{Deserialize, Serialize};

use crate::{db, DataDir};

/// The CAs in force.
#[derive(Debug)]
pub struct Authorities {
    /// Issues every certificate.
    pub current: Ca,
    /// During a rotation: the replaced CA, still trusted until retired.
    pub previous: Option<Ca>,
    /// During a rotation: the previous CA's certificate and the two cross-certificates (what
    /// `Credentials::bridge`, plans and enrolment replies carry). Empty otherwise.
    pub bridge: Vec<Vec<u8>>,
    /// When the rotation happened (Unix seconds), if one is under way.
    pub rotated_at: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct Rotation {
    rotated_at: i64,
    /// The cross-certificates, hex DER: the new CA signed by the previous one, then the reverse.
    cross: Vec<String>,
}

const ROTATION: &str = "rotation.json";

fn previous_dir(data: &DataDir) -> PathBuf {
    data.0.join("ca-previous")
}

fn next_dir(data: &DataDir) -> PathBuf {
    data.0.join("ca-next")
}

/// The CAs in `data`, finishing a rotation that a crash interrupted.
pub fn load(data: &DataDir) -> Result<Authorities> {
    let (ca, next) = (data.ca(), next_dir(data));
    if next.exists() && !ca.exists() && previous_dir(data).exists() {
        std::fs::rename(&next, &ca).context("cannot finish the CA rotation")?;
        durable::sync_dir(&data.0)?;
        tracing::warn!("finished a CA rotation that was interrupted");
    }
    let current = Ca::load(&ca).context("no CA here: run `nightcast-controller init` first")?;
    let previous_path = previous_dir(data);
    if !previous_path.exists() {
        return Ok(Authorities {
            current,
            previous: None,
            bridge: Vec::new(),
            rotated_at: None,
        });
    }
    let previous = Ca::load(&previous_path)?;
    let path = ca.join(ROTATION);
    let rotation: Rotation = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{} is damaged", path.display()))?;
    let mut bridge = vec![previous.certificate().to_vec()];
    for text in &rotation.cross {
        bridge.push(
            image_tools::ids::unhex_upto(text, 16 * 1024)
                .with_context(|| format!("{} is damaged", path.display()))?,
        );
    }
    Ok(Authorities {
        current,
        previous: Some(previous),
        bridge,
        rotated_at: Some(rotation.rotated_at),
    })
}

/// Makes a new CA that issues from now on; the current one stays trusted, bridged to the new
/// one for `overlap_days`, until it is retired. Returns (old, new) fingerprints.
pub fn rotate(data: &DataDir, now: i64, overlap_days: u32) -> Result<([u8; 16], [u8; 16])> {
    let found = load(data)?;
    if let Some(previous) = &found.previous {
        bail!(
            "a CA rotation is under way (the previous CA {} is still trusted): retire it first \
             with `nightcast-controller retire-ca`",
            hex(&previous.fingerprint())
        );
    }
    if !(1..=365).contains(&overlap_days) {
        bail!("the overlap is between 1 and 365 days, not {overlap_days}");
    }
    let old = found.current;
    let new = Ca::generate(Validity::ca(now))?;
    let overlap = Validity::starting(now, u64::from(overlap_days) * 86_400);
    let rotation = Rotation {
        rotated_at: now,
        cross: vec![
            hex(&old.cross_sign(&new, overlap)?),
            hex(&new.cross_sign(&old, overlap)?),
        ],
    };
    let next = next_dir(data);
    if next.exists() {
        std::fs::remove_dir_all(&next)
            .with_context(|| format!("cannot clear {}", next.display()))?;
    }
    std::fs::create_dir_all(&next).with_context(|| format!("cannot create {}", next.display()))?;
    new.save(&next)?;
    durable::write_file(
        &next.join(ROTATION),
        &serde_json::to_vec_pretty(&rotation)?,
        0o644,
    )?;
    durable::sync_dir(&next)?;
    std::fs::rename(data.ca(), previous_dir(data)).context("cannot set the old CA aside")?;
    std::fs::rename(&next, data.ca()).context("cannot put the new CA in place")?;
    durable::sync_dir(&data.0)?;
    Ok((old.fingerprint(), new.fingerprint()))
}

/// Stops trusting the previous CA. Refuses while nodes are still certified by it (named in the
/// error), unless `force`. Returns the retired CA's fingerprint.
pub fn retire(data: &DataDir, now: i64, force: bool) -> Result<[u8; 16]> {
    let found = load(data)?;
    let (Some(previous), Some(rotated_at)) = (&found.previous, found.rotated_at) else {
        bail!("no CA rotation is under way: there is no previous CA to retire");
    };
    let waiting = db::Db::open(&data.database())?.certified_before(rotated_at, now)?;
    if !waiting.is_empty() && !force {
        bail!(
            "{} node(s) still hold a certificate from the previous CA and would lose contact: {}. \
             They move over at their next plan; retire later, or with --force (they must then be \
             enrolled again)",
            waiting.len(),
            waiting.join(", ")
        );
    }
    let fingerprint = previous.fingerprint();
    remove_rotation(data)?;
    Ok(fingerprint)
}

fn remove_rotation(data: &DataDir) -> Result<()> {
    let path = data.ca().join(ROTATION);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => {}
    }
    remove_dir(&previous_dir(data))?;
    durable::sync_dir(&data.0)?;
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_164_200;

    #[test]
    fn a_rotation_bridges_both_cas_until_the_previous_one_is_retired() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir(dir.path().to_owned());
        let first = crate::init(&data, NOW).unwrap();
        assert!(load(&data).unwrap().previous.is_none());
        assert!(retire(&data, NOW, false).is_err(), "nothing to retire");

        let (old, new) = rotate(&data, NOW + 10, 30).unwrap();
        assert_eq!(old, first);
        let found = load(&data).unwrap();
        assert_eq!(found.current.fingerprint(), new);
        assert_eq!(found.previous.as_ref().unwrap().fingerprint(), old);
        assert_eq!(found.rotated_at, Some(NOW + 10));
        // Each side's nodes keep all of the bridge.
        let kept = image_tools::trust::bridge::bridge(
            found.previous.as_ref().unwrap().certificate(),
            &found.bridge,
            NOW + 20,
        );
        assert!(image_tools::trust::bridge::reaches(
            &kept,
            found.current.certificate()
        ));
        assert!(
            rotate(&data, NOW + 20, 30).is_err(),
            "one rotation at a time"
        );

        assert_eq!(retire(&data, NOW + 30, false).unwrap(), old);
        let found = load(&data).unwrap();
        assert_eq!(found.current.fingerprint(), new);
        assert!(found.previous.is_none() && found.bridge.is_empty());
    }

    #[test]
    fn retiring_is_refused_while_a_node_holds_only_the_previous_cas_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir(dir.path().to_owned());
        crate::init(&data, NOW).unwrap();
        let db = db::Db::open(&data.database()).unwrap();
        let nuc = image_tools::trust::Identity {
            role: image_tools::wire::Role::Agent,
            site: image_tools::SiteId::new("lyon").unwrap(),
            node: image_tools::NodeId::new("nuc-7").unwrap(),
        };
        let year = Validity::starting(NOW, 365 * 86_400);
        db.record_certificate(&nuc, &[1; 16], year, NOW).unwrap();
        rotate(&data, NOW + 10, 30).unwrap();
        let err = retire(&data, NOW + 20, false).unwrap_err().to_string();
        assert!(err.contains("agent lyon/nuc-7"), "{err}");
        // Renewed with the new CA: nothing holds it back.
        db.record_certificate(&nuc, &[2; 16], year, NOW + 30)
            .unwrap();
        retire(&data, NOW + 40, false).unwrap();
    }

    #[test]
    fn a_rotation_cut_between_its_renames_is_finished_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir(dir.path().to_owned());
        crate::init(&data, NOW).unwrap();
        let (_, new) = rotate(&data, NOW + 10, 30).unwrap();
        // As if the power went between the two renames.
        std::fs::rename(data.ca(), next_dir(&data)).unwrap();
        let found = load(&data).unwrap();
        assert_eq!(found.current.fingerprint(), new);
        assert!(found.previous.is_some());
    }
}
