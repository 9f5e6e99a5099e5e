//! The manifest-signing keys in force, and their rotation with an overlap.
//!
//! `DATA/signing.key` signs every new manifest; `DATA/signing-accepted/<16 hex>.pub` are the keys
//! it replaced that relays and agents still accept. Every site plan lists all of them, each
//! endorsed by the CA for [`image_tools::trust::ENDORSEMENT_SECS`] from the plan's time: a node
//! learns a new key from its next plan however long it was away, and a retired key, whose
//! endorsement is no longer renewed, runs out at every node by itself.
//!
//! Rotating (`nightcast-controller rotate-signing-key`, with the controller stopped) makes a new
//! key, keeps the old one accepted, and signs every manifest of the catalogue again with the new
//! one (same chunks, same bytes before the signature), so that retiring the old key
//! (`retire-signing-key`) later leaves no manifest only it signed.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use image_tools::trust::{Ca, Endorsed, ENDORSEMENT_SECS};
use image_tools::{PublicKey, SigningKey, VerifiedManifest};

use crate::{db, DataDir};

fn accepted_dir(data: &DataDir) -> PathBuf {
    data.0.join("signing-accepted")
}

/// The current key's public half first, then the previous keys still accepted.
pub fn accepted_keys(data: &DataDir) -> Result<Vec<PublicKey>> {
    let current = image_tools::keys::public_path(&data.signing_key());
    let mut keys =
        vec![PublicKey::load(&current)
            .with_context(|| format!("cannot read {}", current.display()))?];
    let dir = accepted_dir(data);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pub"))
            .collect();
        paths.sort();
        for path in paths {
            let key = PublicKey::load(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    Ok(keys)
}

/// Every accepted key, endorsed by `ca` until `now` + [`ENDORSEMENT_SECS`]: what plans carry.
pub fn endorsed_keys(data: &DataDir, ca: &Ca, now: i64) -> Result<Vec<Endorsed>> {
    let until = now.saturating_add(ENDORSEMENT_SECS);
    accepted_keys(data)?
        .iter()
        .map(|k| Ok(ca.endorse(k, until)?))
        .collect()
}

/// Makes a new signing key, keeps the old one accepted, and signs every manifest again with the
/// new one. Returns (old, new).
pub fn rotate(data: &DataDir) -> Result<(PublicKey, PublicKey)> {
    let path = data.signing_key();
    let old = SigningKey::load(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let accepted = accepted_keys(data)?;
    let new = SigningKey::generate()?;
    // The old key stays accepted (its public half), before anything changes.
    let dir = accepted_dir(data);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let kept = dir.join(format!("{}.pub", old.public().short()));
    if !kept.exists() {
        old.public().save(&kept)?;
    }
    // The new key replaces the old one in one rename (its public half first).
    let staged = data.0.join("signing.key.new");
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_file(image_tools::keys::public_path(&staged));
    new.save(&staged)?;
    std::fs::rename(
        image_tools::keys::public_path(&staged),
        image_tools::keys::public_path(&path),
    )?;
    std::fs::rename(&staged, &path)?;
    image_tools::durable::sync_dir(&data.0)?;
    // Every manifest signed again: same body, the new signature.
    let mut db = db::Db::open(&data.database())?;
    for (master, bytes) in db.manifests()? {
        let verified = VerifiedManifest::open_with(bytes, &accepted)
            .with_context(|| format!("{} {} does not verify", master.name, master.version))?;
        let resigned = verified.manifest().clone().sign(&new);
        db.replace_manifest(
            master.name.as_str(),
            master.version.as_str(),
            resigned.bytes(),
        )?;
    }
    Ok((old.public(), new.public()))
}

/// Stops accepting the previous key whose short id (16 hex digits) or full hex is `key`.
pub fn retire(data: &DataDir, key: &str) -> Result<PublicKey> {
    let keys = accepted_keys(data)?;
    let Some(found) = keys
        .iter()
        .find(|k| image_tools::ids::hex(k.as_bytes()).starts_with(key) && key.len() >= 8)
    else {
        bail!("no accepted signing key {key:?} (see `nightcast-controller signing-keys`)");
    };
    if *found == keys[0] {
        bail!("{key} is the current signing key: rotate first (`rotate-signing-key`)");
    }
    let db = db::Db::open(&data.database())?;
    for (master, bytes) in db.manifests()? {
        if VerifiedManifest::open(bytes, found).is_ok() {
            bail!(
                "{} {} is still signed only by {key}: rotate again (it signs every manifest anew)",
                master.name,
                master.version
            );
        }
    }
    let path = accepted_dir(data).join(format!("{}.pub", found.short()));
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    image_tools::durable::sync_dir(&accepted_dir(data))?;
    Ok(*found)
}
