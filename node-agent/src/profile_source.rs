//! Which machine profile a master's VM gets on this NUC, and the catalogue's profiles it verified.
//!
//! The precedence ([`Choices::choose`]): the NUC's own `[profiles.NAME]` (the expert override, on
//! that NUC only), then the profile the catalogue assigns to the master, then the NUC's own
//! `[profile]` default. The agent logs and shows (`status.json`'s `profile`) which one a start used.
//!
//! The catalogue's profiles come in the site plan through the relay, each a statement signed by
//! the controller's manifest-signing key ([`image_tools::profile::signed`]). [`Catalogued`] keeps
//! only those whose signature one of the accepted keys verifies, and per master only the highest
//! revision seen: a statement altered on the way is refused (and reported once), an older one
//! replayed is ignored. Kept in `DATA/profiles.json` (verified again when read), so a NUC that
//! restarts while its relay is away, or is handed an altered plan, keeps the last good ones.
//!
//! Pure apart from `load` and `save`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use image_tools::profile::signed::{self, Refused};
pub use image_tools::profile::Source;
use image_tools::profile::{Display, Profile};
use image_tools::wire::SignedProfile;
use image_tools::PublicKey;

const FILE: &str = "profiles.json";

/// The profiles a start chooses from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Choices {
    /// `[profile]` of the agent's config.
    pub default: Profile,
    /// `[profiles.NAME]` of the agent's config.
    pub own: BTreeMap<String, Profile>,
    /// The catalogue's, verified ([`Catalogued::profiles`]).
    pub catalogue: BTreeMap<String, Profile>,
    /// The NUC has a screen: every VM is shown on it as a kiosk, whatever the profile says.
    pub on_screen: bool,
}

impl Choices {
    /// The profile for `master` (`None`: no master known yet) and where it came from.
    pub fn choose(&self, master: Option<&str>) -> (Profile, Source) {
        let (profile, source) = match master {
            Some(m) if self.own.contains_key(m) => (&self.own[m], Source::Own),
            Some(m) if self.catalogue.contains_key(m) => (&self.catalogue[m], Source::Catalogue),
            _ => (&self.default, Source::Default),
        };
        let mut profile = profile.clone();
        if self.on_screen {
            profile.display = Display::Kiosk;
        }
        (profile, source)
    }
}

/// A verified statement kept.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Kept {
    revision: i64,
    profile: Option<Profile>,
    signed: SignedProfile,
}

/// What a plan's statements changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Learnt {
    /// Masters whose profile changed: name, revision, the profile (`None`: cleared).
    pub changed: Vec<(String, i64, Option<Profile>)>,
    /// Statements refused for the first time, in words (a statement refused before is not
    /// reported again at every plan).
    pub refused: Vec<String>,
}

/// The catalogue's profiles this NUC verified.
#[derive(Clone, Debug, Default)]
pub struct Catalogued {
    kept: BTreeMap<String, Kept>,
    /// BLAKE3 of each refused statement and signature: reported once.
    refused_seen: BTreeSet<[u8; 32]>,
    /// Statements refused since the agent started.
    pub refused: u64,
}

fn fingerprint(s: &SignedProfile) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for part in [&s.statement, &s.signer, &s.signature] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    *h.finalize().as_bytes()
}

impl Catalogued {
    /// Takes the statements of a plan, checked against `keys` (the accepted signing keys).
    pub fn learn(&mut self, offered: &[SignedProfile], keys: &[PublicKey]) -> Learnt {
        let mut learnt = Learnt::default();
        for s in offered {
            match signed::open(s, keys) {
                Ok(v) => {
                    let st = v.statement();
                    let name = st.master.to_string();
                    let newer = self
                        .kept
                        .get(&name)
                        .is_none_or(|k| st.revision > k.revision);
                    if newer {
                        learnt
                            .changed
                            .push((name.clone(), st.revision, st.profile.clone()));
                        self.kept.insert(
                            name,
                            Kept {
                                revision: st.revision,
                                profile: st.profile.clone(),
                                signed: s.clone(),
                            },
                        );
                    }
                }
                Err(e) => {
                    if self.refused_seen.insert(fingerprint(s)) {
                        self.refused += 1;
                        learnt.refused.push(refusal(&e));
                    }
                }
            }
        }
        learnt
    }

    /// The profile the catalogue assigns to each master (cleared ones left out).
    pub fn profiles(&self) -> BTreeMap<String, Profile> {
        self.kept
            .iter()
            .filter_map(|(name, k)| k.profile.clone().map(|p| (name.clone(), p)))
            .collect()
    }

    /// The statements kept in `data`, each verified again against `keys`; what does not verify
    /// is left out and said in the second value.
    pub fn load(data: &Path, keys: &[PublicKey]) -> (Catalogued, Vec<String>) {
        let path = data.join(FILE);
        let mut c = Catalogued::default();
        let stored: Vec<SignedProfile> = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => return (c, vec![format!("{} is damaged: {e}", path.display())]),
            },
            Err(_) => return (c, Vec::new()),
        };
        let learnt = c.learn(&stored, keys);
        let errors = learnt
            .refused
            .into_iter()
            .map(|r| format!("{}: {r}", path.display()))
            .collect();
        (c, errors)
    }

    /// Writes the kept statements to `data`, durably.
    pub fn save(&self, data: &Path) -> std::io::Result<()> {
        let stored: Vec<&SignedProfile> = self.kept.values().map(|k| &k.signed).collect();
        let bytes = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
        image_tools::durable::write_file(&data.join(FILE), &bytes, 0o644)
    }
}

fn refusal(e: &Refused) -> String {
    format!("a machine profile from the relay was REFUSED: {e}; this NUC keeps the last one it verified")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_tools::profile::signed::Statement;
    use image_tools::profile::{DiskModel, Firmware};
    use image_tools::{MasterName, SigningKey};

    fn statement(master: &str, revision: i64, disk: DiskModel) -> Statement {
        Statement {
            master: MasterName::new(master).unwrap(),
            revision,
            profile: Some(Profile {
                firmware: Firmware::Bios,
                disk,
                ..Profile::default()
            }),
        }
    }

    #[test]
    fn the_nucs_override_then_the_catalogue_then_the_nucs_default() {
        let sata = Profile {
            disk: DiskModel::Sata,
            ..Profile::default()
        };
        let bios = Profile {
            firmware: Firmware::Bios,
            ..Profile::default()
        };
        let c = Choices {
            default: Profile::default(),
            own: [("win7".to_owned(), bios.clone())].into(),
            catalogue: [
                ("win7".to_owned(), sata.clone()),
                ("win10".to_owned(), sata.clone()),
            ]
            .into(),
            on_screen: false,
        };
        assert_eq!(c.choose(Some("win7")), (bios, Source::Own));
        assert_eq!(c.choose(Some("win10")), (sata.clone(), Source::Catalogue));
        assert_eq!(
            c.choose(Some("debian")),
            (Profile::default(), Source::Default)
        );
        assert_eq!(c.choose(None), (Profile::default(), Source::Default));
        // A NUC with a screen shows whichever on it.
        let c = Choices {
            on_screen: true,
            ..c
        };
        let (p, _) = c.choose(Some("win10"));
        assert_eq!((p.display, p.disk), (Display::Kiosk, DiskModel::Sata));
    }

    #[test]
    fn only_verified_statements_count_and_a_newer_one_wins_over_a_replay() {
        let key = SigningKey::from_seed([3; 32]);
        let keys = [key.public()];
        let mut c = Catalogued::default();
        let v1 = signed::sign(&statement("win7", 10, DiskModel::Sata), &key);
        let l = c.learn(std::slice::from_ref(&v1), &keys);
        assert_eq!(l.changed.len(), 1);
        assert_eq!(c.profiles()["win7"].disk, DiskModel::Sata);
        // The same again: nothing new.
        assert_eq!(c.learn(std::slice::from_ref(&v1), &keys), Learnt::default());
        // The relay alters it: refused, reported once, the verified one kept.
        let mut altered = v1.clone();
        altered.statement = String::from_utf8(altered.statement)
            .unwrap()
            .replace("sata", "virtio")
            .into_bytes();
        let l = c.learn(std::slice::from_ref(&altered), &keys);
        assert_eq!(l.refused.len(), 1);
        assert!(l.refused[0].contains("REFUSED"), "{:?}", l.refused);
        assert!(c
            .learn(std::slice::from_ref(&altered), &keys)
            .refused
            .is_empty());
        assert_eq!(c.refused, 1);
        assert_eq!(c.profiles()["win7"].disk, DiskModel::Sata);
        // A newer revision replaces it; the older one replayed afterwards changes nothing.
        let v2 = signed::sign(&statement("win7", 11, DiskModel::Virtio), &key);
        c.learn(&[v2], &keys);
        assert_eq!(c.profiles()["win7"].disk, DiskModel::Virtio);
        assert!(c.learn(&[v1], &keys).changed.is_empty());
        assert_eq!(c.profiles()["win7"].disk, DiskModel::Virtio);
        // Cleared by the DSI: the NUC's own default applies again.
        let cleared = Statement {
            profile: None,
            ..statement("win7", 12, DiskModel::Sata)
        };
        c.learn(&[signed::sign(&cleared, &key)], &keys);
        assert!(c.profiles().is_empty());
    }

    #[test]
    fn the_kept_statements_survive_a_restart_and_are_verified_again() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_seed([3; 32]);
        let mut c = Catalogued::default();
        c.learn(
            &[signed::sign(&statement("win7", 10, DiskModel::Sata), &key)],
            &[key.public()],
        );
        c.save(dir.path()).unwrap();
        let (again, errors) = Catalogued::load(dir.path(), &[key.public()]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(again.profiles(), c.profiles());
        // Under another key (the file altered, or the key retired): left out, said.
        let other = SigningKey::from_seed([4; 32]).public();
        let (none, errors) = Catalogued::load(dir.path(), &[other]);
        assert!(none.profiles().is_empty());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("profiles.json"), "{errors:?}");
    }
}
