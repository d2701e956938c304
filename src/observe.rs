//! Observed state: what the Docker daemon holds, read with three list calls (containers,
//! networks, volumes) whatever the number of apps, and sorted into what berth owns and
//! what it must not touch.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::desired::ContainerSpec;
use crate::drivers::docker::{DockerApi, DockerError};
use crate::manifest::model::DeletionPolicy;

/// `berth.managed=true` marks every object berth created.
pub const MANAGED: &str = "berth.managed";
/// `app`, `volume` or `network`.
pub const KIND: &str = "berth.kind";
/// The owning resource's name.
pub const NAME: &str = "berth.name";
/// The SHA-256 of the normalized desired spec.
pub const SPEC_HASH: &str = "berth.spec-hash";
/// The spec itself (secrets redacted), so plans can say what changed without inspecting.
pub const SPEC: &str = "berth.spec";
/// The revision that created the object.
pub const REVISION: &str = "berth.revision";
/// Which berth instance owns the object (one host may run several state repositories).
pub const INSTANCE: &str = "berth.instance";
/// The replica number of an app's container (1-based).
pub const REPLICA: &str = "berth.replica";
/// `retain` or `delete`: what pruning does to a volume.
pub const DELETION_POLICY: &str = "berth.deletion-policy";
/// For volumes: the volume's name in the manifest.
pub const VOLUME: &str = "berth.volume";
/// For apps the proxy reaches on the host: the host port allocated to them.
pub const HOST_PORT: &str = "berth.host-port";

/// The labels every object of `kind` owned by `name` carries.
pub fn owner_labels(instance: &str, kind: &str, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED.to_owned(), "true".to_owned()),
        (INSTANCE.to_owned(), instance.to_owned()),
        (KIND.to_owned(), kind.to_owned()),
        (NAME.to_owned(), name.to_owned()),
    ])
}

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
    /// `app`, or `database` for a managed database.
    #[serde(default = "app_kind")]
    pub kind: String,
}

fn app_kind() -> String {
    "app".to_owned()
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
    pub proxy_files: BTreeMap<String, (crate::routes::FileState, String)>,
    /// Shared databases, declared or recorded, as their servers hold them.
    pub databases: BTreeMap<String, ObservedDatabase>,
}

fn owned(labels: &BTreeMap<String, String>, instance: &str) -> bool {
    labels.get(MANAGED).map(String::as_str) == Some("true")
        && labels.get(INSTANCE).map(String::as_str) == Some(instance)
}

fn policy(labels: &BTreeMap<String, String>) -> DeletionPolicy {
    match labels.get(DELETION_POLICY).map(String::as_str) {
        Some("delete") => DeletionPolicy::Delete,
        _ => DeletionPolicy::Retain,
    }
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
        let kind = c.labels.get(KIND).map(String::as_str).unwrap_or_default();
        if owned(&c.labels, instance) && matches!(kind, "app" | "database") {
            let kind = kind.to_owned();
            if let Some(port) = c.labels.get(HOST_PORT).and_then(|p| p.parse().ok()) {
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
