//! The labels berth puts on every Docker object it creates: ownership, the spec and its
//! hash, the revision. Written by apply, read by observe.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `berth.managed=true` marks every object berth created.
pub const MANAGED: &str = "berth.managed";
/// An [`ObjectKind`]: `app`, `database`, `volume` or `network`.
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
/// For Swarm secrets: the variable of the app whose value the secret carries.
pub const VARIABLE: &str = "berth.variable";
/// For the containers of a Swarm service's tasks: the hash of the spec they were made
/// from, without what Swarm changes in place (replicas, update order).
pub const TASK_HASH: &str = "berth.task-hash";

/// What a managed Docker object is to berth: the value of its `berth.kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// A container of an App.
    #[default]
    App,
    /// The container of a managed Database.
    Database,
    /// A named volume.
    Volume,
    /// A network.
    Network,
}

impl ObjectKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::App => "app",
            ObjectKind::Database => "database",
            ObjectKind::Volume => "volume",
            ObjectKind::Network => "network",
        }
    }

    /// The kind a label value names.
    pub fn parse(value: &str) -> Option<ObjectKind> {
        [
            ObjectKind::App,
            ObjectKind::Database,
            ObjectKind::Volume,
            ObjectKind::Network,
        ]
        .into_iter()
        .find(|k| k.as_str() == value)
    }
}

/// The labels every object of `kind` owned by `name` carries.
pub fn owner_labels(instance: &str, kind: ObjectKind, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED.to_owned(), "true".to_owned()),
        (INSTANCE.to_owned(), instance.to_owned()),
        (KIND.to_owned(), kind.as_str().to_owned()),
        (NAME.to_owned(), name.to_owned()),
    ])
}

/// The labels of volume `volume` of `owner`: what pruning does to it rides along.
pub fn volume_labels(
    instance: &str,
    owner: &str,
    volume: &str,
    delete_on_prune: bool,
) -> BTreeMap<String, String> {
    let mut labels = owner_labels(instance, ObjectKind::Volume, owner);
    labels.insert(VOLUME.to_owned(), volume.to_owned());
    labels.insert(
        DELETION_POLICY.to_owned(),
        if delete_on_prune { "delete" } else { "retain" }.to_owned(),
    );
    labels
}

/// Whether `labels` mark an object of this `instance`.
pub fn owned(labels: &BTreeMap<String, String>, instance: &str) -> bool {
    labels.get(MANAGED).map(String::as_str) == Some("true")
        && labels.get(INSTANCE).map(String::as_str) == Some(instance)
}
