//! nightcast-controller, first stage: the trust anchor (CA, manifest-signing key, enrolment tokens)
//! and the chunk-exchange server relays fetch from. The controller issue adds the catalogue
//! database, the training calendar and the planner; until then, what each site may read comes from
//! `schedule.txt` in the data directory.
//!
//! Data directory layout:
//! ```text
//! DATA/ca/ca.key, ca.crt         the certificate authority (ca.key mode 0600)
//! DATA/signing.key, .pub         the manifest-signing key (Ed25519)
//! DATA/tls/                      the controller's own certificate and key
//! DATA/store/                    the chunk store
//! DATA/manifests/*.manifest      signed manifests (nightcast-image build -o DATA/manifests/...)
//! DATA/schedule.txt              "SITE MASTER VERSION" per line: what each site may fetch
//! DATA/tokens.json               outstanding enrolment tokens (hashes only)
//! ```

pub mod db;
pub mod plan;
pub mod windows;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use image_tools::exchange::{self, Enroller, MemoryCatalog, Service};
use image_tools::trust::{Ca, Credentials, Identity, Token, TokenBook};
use image_tools::wire::{Hello, MasterRef, Role, PROTOCOL_VERSION};
use image_tools::{LocalStore, Manifest, NodeId, PublicKey, SigningKey, SiteId, VerifiedManifest};
use tokio_util::sync::CancellationToken;

/// The controller's data directory.
#[derive(Debug, Clone)]
pub struct DataDir(pub PathBuf);

impl DataDir {
    fn ca(&self) -> PathBuf {
        self.0.join("ca")
    }
    pub fn signing_key(&self) -> PathBuf {
        self.0.join("signing.key")
    }
    fn tls(&self) -> PathBuf {
        self.0.join("tls")
    }
    pub fn store(&self) -> PathBuf {
        self.0.join("store")
    }
    pub fn manifests(&self) -> PathBuf {
        self.0.join("manifests")
    }
    pub fn schedule(&self) -> PathBuf {
        self.0.join("schedule.txt")
    }
    fn tokens(&self) -> PathBuf {
        self.0.join("tokens.json")
    }
}

fn controller_identity() -> Result<Identity> {
    Ok(Identity {
        role: Role::Controller,
        site: SiteId::new("central")?,
        node: NodeId::new("controller")?,
    })
}

const SCHEDULE_HEADER: &str = "# What each site may fetch, one line each: SITE MASTER VERSION
# (the controller's calendar replaces this file in a later release)
";

/// Creates the data directory: CA, signing key, the controller's certificate, an empty store.
/// Refuses to touch a directory that already has a CA.
pub fn init(data: &DataDir) -> Result<[u8; 16]> {
    if data.ca().join("ca.key").exists() {
        bail!(
            "{} already holds a controller (ca/ca.key exists): refusing to replace its keys",
            data.0.display()
        );
    }
    for dir in [data.ca(), data.tls(), data.manifests()] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let ca = Ca::generate()?;
    ca.save(&data.ca())?;
    SigningKey::generate()?.save(&data.signing_key())?;
    ca.issue(&controller_identity()?)?.save(&data.tls())?;
    LocalStore::open(&data.store())?;
    if !data.schedule().exists() {
        image_tools::durable::write_file(&data.schedule(), SCHEDULE_HEADER.as_bytes(), 0o644)?;
    }
    Ok(ca.fingerprint())
}

/// A one-time enrolment token for a node of `role` at `site`.
pub fn issue_token(
    data: &DataDir,
    role: Role,
    site: SiteId,
    now_unix: u64,
    ttl_secs: u64,
) -> Result<Token> {
    let ca = Ca::load(&data.ca()).context("no CA here: run `nightcast-controller init` first")?;
    Ok(TokenBook::new(data.tokens()).issue(&ca, role, site, now_unix, ttl_secs)?)
}

/// Loads every manifest (each verified against our key) and the schedule.
pub fn load_catalog(data: &DataDir, key: &PublicKey) -> Result<MemoryCatalog> {
    let catalog = MemoryCatalog::default();
    let mut known = std::collections::HashSet::new();
    let dir = data.manifests();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
    {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("manifest") {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let m = VerifiedManifest::open(bytes.clone(), key)
            .with_context(|| format!("refusing {}", path.display()))?;
        let master = master_ref(&m);
        known.insert((master.name.clone(), master.version.clone()));
        catalog.add_manifest(master, bytes);
    }
    let text = std::fs::read_to_string(data.schedule()).unwrap_or_default();
    let mut by_site: std::collections::BTreeMap<String, Vec<MasterRef>> = Default::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [site, name, version] = fields[..] else {
            bail!(
                "{}:{}: expected SITE MASTER VERSION",
                data.schedule().display(),
                n + 1
            );
        };
        SiteId::new(site).with_context(|| format!("{}:{}", data.schedule().display(), n + 1))?;
        if !known.contains(&(name.to_owned(), version.to_owned())) {
            bail!(
                "{}:{}: no manifest for {name} {version} in {}",
                data.schedule().display(),
                n + 1,
                dir.display()
            );
        }
        by_site.entry(site.to_owned()).or_default().push(MasterRef {
            name: name.to_owned(),
            version: version.to_owned(),
        });
    }
    for (site, masters) in by_site {
        catalog.schedule(&site, masters);
    }
    Ok(catalog)
}

fn master_ref(m: &Manifest) -> MasterRef {
    MasterRef {
        name: m.name.to_string(),
        version: m.version.to_string(),
    }
}

/// Serves relays (and enrolments) on `listen` until `shutdown`. `on_listening` gets the bound address.
pub async fn serve(
    data: &DataDir,
    listen: SocketAddr,
    now_unix: fn() -> u64,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: CancellationToken,
) -> Result<()> {
    let key = PublicKey::load(&image_tools::keys::public_path(&data.signing_key()))?;
    let creds =
        Credentials::load(&data.tls()).context("no controller certificate: run init first")?;
    let catalog = Arc::new(load_catalog(data, &key)?);
    let store = Arc::new(LocalStore::open(&data.store())?);
    let me = controller_identity()?;
    let service = Arc::new(Service {
        hello: Hello {
            protocol_version: PROTOCOL_VERSION,
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
            role: me.role,
            node_id: me.node.to_string(),
            capabilities: vec![],
        },
        store,
        catalog,
        enroller: Some(Enroller {
            ca: Ca::load(&data.ca())?,
            tokens: TokenBook::new(data.tokens()),
            signing_key: key,
            now_unix: Box::new(now_unix),
        }),
        on_report: Box::new(|peer, status| tracing::info!(%peer, ?status, "report")),
    });
    let endpoint = exchange::server_endpoint(listen, creds.server_config()?)?;
    on_listening(endpoint.local_addr()?);
    exchange::serve(endpoint, service, shutdown).await;
    Ok(())
}
