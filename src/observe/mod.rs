//! Observed state: what the Docker daemon holds, read with three list calls (containers,
//! networks, volumes) whatever the number of apps, and sorted into what berth owns and
//! what it must not touch.

pub mod ports;
pub mod swarm;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::desired::ContainerSpec;
use crate::desired::labels::{
    DELETION_POLICY, HOST_PORT, KIND, NAME, ObjectKind, REPLICA, SPEC, SPEC_HASH, owned,
};
use crate::drivers::docker::{DockerApi, DockerError};
use crate::manifest::model::DeletionPolicy;

/// A container berth owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedContainer {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The app it belongs to.
    pub app: String,
    /// Its replica number.
    pub replica: u32,
    /// The spec hash it was created with.
    pub hash: String,
    /// The spec it was created with, when its label could be read.
    #[serde(default)]
    pub spec: Option<ContainerSpec>,
    /// `running`, `exited`…
    pub state: String,
    /// What pruning does to its app's volumes.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// An app's, or a managed database's container.
    #[serde(default)]
    pub kind: ObjectKind,
    /// The host port the proxy reaches it on (its `berth.host-port` label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
}

/// A shared database as its server holds it, with berth's record of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedDatabase {
    /// What berth recorded when it created it (`None`: never created by berth).
    pub record: Option<crate::state::records::SharedRecord>,
    /// What the server holds, or why it could not be read.
    pub state: Result<DatabaseState, String>,
}

/// What a shared server holds for one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseState {
    /// The database exists.
    pub database_exists: bool,
    /// The user exists.
    pub user_exists: bool,
    /// The user logs in with the password berth holds.
    pub login_ok: bool,
    /// The user holds its rights on the database.
    pub grants_ok: bool,
}

impl From<crate::drivers::dbserver::DbState> for DatabaseState {
    fn from(s: crate::drivers::dbserver::DbState) -> DatabaseState {
        DatabaseState {
            database_exists: s.database_exists,
            user_exists: s.user_exists,
            login_ok: s.login_ok,
            grants_ok: s.grants_ok,
        }
    }
}

/// A volume berth owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedVolume {
    /// The Docker name.
    pub name: String,
    /// The owning app.
    pub app: String,
    /// What pruning does to it.
    pub deletion_policy: DeletionPolicy,
}

/// What the daemon holds, as far as berth is concerned.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Observed {
    /// Containers owned by this instance.
    pub containers: Vec<ObservedContainer>,
    /// Names of containers berth must not touch (unmanaged, or another instance's).
    pub foreign_containers: BTreeSet<String>,
    /// Networks owned by this instance.
    pub networks: BTreeSet<String>,
    /// Networks that exist but are not this instance's.
    pub foreign_networks: BTreeSet<String>,
    /// Volumes owned by this instance.
    pub volumes: Vec<ObservedVolume>,
    /// Volumes that exist but are not this instance's.
    pub foreign_volumes: BTreeSet<String>,
    /// Apps berth has applied before (so a missing one is drift, not new).
    pub applied_apps: BTreeSet<String>,
    /// The host port each app's containers record.
    pub host_ports: BTreeMap<String, u16>,
    /// Host ports published by any container.
    pub published_ports: BTreeSet<u16>,
    /// The proxy files on disk named like berth's: domain → (state, content).
    pub proxy_files: BTreeMap<String, (crate::desired::routes::FileState, String)>,
    /// Shared databases, declared or recorded, as their servers hold them.
    pub databases: BTreeMap<String, ObservedDatabase>,
    /// Ports with a listening socket on this host.
    pub listening_ports: BTreeSet<u16>,
    /// The files berth writes for the proxy, as they are on disk: path → SHA-256.
    pub files: BTreeMap<String, String>,
    /// The certificates of berth's ACME client, by Domain (every folder under
    /// `<state-dir>/certs`, whichever instance owns it).
    #[serde(skip)]
    pub certificates: BTreeMap<String, crate::state::certs::StoredCertificate>,
    /// The renewal windows the CA suggests for this instance's certificates, by
    /// Domain, when it offers them.
    #[serde(skip)]
    pub renewal_windows: BTreeMap<String, crate::state::certs::RenewalWindow>,
    /// Certificate folders of other instances sharing the state directory: Domain →
    /// the instance owning it.
    #[serde(skip)]
    pub certificate_owners: BTreeMap<String, String>,
    /// The images built for apps that the daemon holds (their tags).
    pub built_images: BTreeSet<String>,
    /// The files of each app's last successful build: path → digest.
    pub last_builds: BTreeMap<String, BTreeMap<String, String>>,
    /// Networks every node of a swarm shares (overlay), by name.
    pub swarm_networks: BTreeSet<String>,
    /// The swarm, under `runtime: swarm`.
    pub swarm: Option<swarm::ObservedSwarm>,
}

impl Observed {
    /// The host port a container was created with: its label, or (from records made
    /// before each container recorded its own) its app's.
    pub fn host_port_of(&self, c: &ObservedContainer) -> Option<u16> {
        c.host_port.or_else(|| self.host_ports.get(&c.app).copied())
    }
}

/// The label Swarm puts on the container of a task.
const SWARM_TASK: &str = "com.docker.swarm.task.id";

fn policy(labels: &BTreeMap<String, String>) -> DeletionPolicy {
    match labels.get(DELETION_POLICY).map(String::as_str) {
        Some("delete") => DeletionPolicy::Delete,
        _ => DeletionPolicy::Retain,
    }
}

/// Which of the built images `tags` the daemon holds: one call per tag, only for apps
/// with `build`.
pub async fn built_images(
    docker: &dyn DockerApi,
    tags: impl Iterator<Item = &str>,
) -> Result<BTreeSet<String>, DockerError> {
    let mut out = BTreeSet::new();
    for tag in tags {
        if docker.image_exists(tag).await? {
            out.insert(tag.to_owned());
        }
    }
    Ok(out)
}

/// Reads the daemon's containers, networks and volumes: three calls.
pub async fn observe(docker: &dyn DockerApi, instance: &str) -> Result<Observed, DockerError> {
    let (containers, networks, volumes) = futures_util::try_join!(
        docker.list_containers(),
        docker.list_networks(),
        docker.list_volumes()
    )?;
    let mut observed = Observed::default();
    for c in containers {
        observed.published_ports.extend(c.published.iter().copied());
        // A Swarm task's container is its service's, observed through the swarm.
        if c.labels.contains_key(SWARM_TASK) {
            continue;
        }
        let kind = c
            .labels
            .get(KIND)
            .and_then(|k| ObjectKind::parse(k))
            .filter(|k| matches!(k, ObjectKind::App | ObjectKind::Database));
        if let Some(kind) = kind.filter(|_| owned(&c.labels, instance)) {
            let host_port = c.labels.get(HOST_PORT).and_then(|p| p.parse().ok());
            if let Some(port) = host_port {
                let app = c.labels.get(NAME).cloned().unwrap_or_default();
                observed.host_ports.insert(app, port);
            }
            observed.containers.push(ObservedContainer {
                app: c.labels.get(NAME).cloned().unwrap_or_default(),
                replica: c
                    .labels
                    .get(REPLICA)
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(1),
                hash: c.labels.get(SPEC_HASH).cloned().unwrap_or_default(),
                spec: c
                    .labels
                    .get(SPEC)
                    .and_then(|s| serde_json::from_str(s).ok()),
                deletion_policy: policy(&c.labels),
                kind,
                host_port,
                id: c.id,
                name: c.name,
                state: c.state,
            });
        } else {
            observed.foreign_containers.insert(c.name);
        }
    }
    observed
        .containers
        .sort_by(|a, b| (&a.app, a.replica, &a.name).cmp(&(&b.app, b.replica, &b.name)));
    for n in networks {
        if n.scope == "swarm" {
            observed.swarm_networks.insert(n.name.clone());
        }
        if owned(&n.labels, instance) {
            observed.networks.insert(n.name);
        } else {
            observed.foreign_networks.insert(n.name);
        }
    }
    for v in volumes {
        if owned(&v.labels, instance) {
            observed.volumes.push(ObservedVolume {
                app: v.labels.get(NAME).cloned().unwrap_or_default(),
                deletion_policy: policy(&v.labels),
                name: v.name,
            });
        } else {
            observed.foreign_volumes.insert(v.name);
        }
    }
    observed.volumes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(observed)
}

/// Reads the certificates of berth's ACME client: this instance's folders (and folders
/// no instance claims) into `observed.certificates`, the owners of other instances'
/// into `observed.certificate_owners`, and, for each valid certificate of this
/// instance, the renewal window its CA suggests when it offers one (asked at most as
/// often as the CA allows; a CA that cannot be reached only leaves the window unknown).
pub async fn certificates(
    observed: &mut Observed,
    store: &crate::state::certs::Certificates,
    instance: &str,
    acme: &crate::manifest::model::AcmeSettings,
) {
    let client = crate::drivers::acme::Acme::of(&crate::desired::DesiredAcme {
        directory: acme.directory.clone(),
        email: acme.email.clone(),
        ca_bundle: acme.ca_bundle.clone(),
        key: None,
    });
    for (domain, stored) in store.read_all() {
        match stored.record.as_ref().map(|r| r.instance.as_str()) {
            Some(owner) if owner != instance => {
                observed.certificate_owners.insert(domain, owner.to_owned());
                continue;
            }
            _ => {}
        }
        if let Ok(info) = &stored.certificate {
            match client.renewal_window(&info.leaf_der).await {
                Ok(Some(window)) => {
                    observed.renewal_windows.insert(domain.clone(), window);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(%domain, "no renewal window: {e}"),
            }
        }
        observed.certificates.insert(domain, stored);
    }
}

/// The SHA-256 of every regular file directly in `dir` (the TLS files berth writes),
/// by path; an unreadable or missing folder holds nothing.
pub fn file_hashes(dir: &std::path::Path) -> BTreeMap<String, String> {
    use sha2::{Digest, Sha256};
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let content = std::fs::read(e.path()).ok()?;
            let path = e.path().to_string_lossy().into_owned();
            Some((path, hex::encode(Sha256::digest(&content))))
        })
        .collect()
}
