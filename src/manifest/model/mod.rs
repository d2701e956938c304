//! The manifest model: one Rust type per kind, the source of the JSON Schemas.
//!
//! Field names are camelCase in YAML; unknown fields are errors everywhere. Each
//! field's documentation says its default, and ends up in the generated schema.
//! Each kind's spec lives in a file of its own; this one holds what every document
//! shares (the envelope, metadata, the kinds) and re-exports every type.

mod app;
mod build;
mod database;
mod domain;
mod notifier;
mod settings;
mod workflow;

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use app::{
    AppSpec, DatabaseLink, EnvValue, Health, Protocol, PublishedPort, Resources, RestartPolicy,
    UpdateStrategy, VolumeMount,
};
pub use app::{EndpointMode, Placement, Preference, PublishMode, Reservations};
pub use build::Build;
pub use database::{Backup, DatabaseMode, DatabaseSpec, Engine};
pub use domain::{DomainSpec, Tls};
pub use notifier::{EventKind, NotifierSpec, NotifierType};
pub use settings::{
    AcmeSettings, CommandLine, EntryPoints, LETS_ENCRYPT, LETS_ENCRYPT_STAGING, Listen, NginxProxy,
    PortRange, Proxy, Runtime, Server, ServerEngine, SettingsSpec, TraefikProxy, Upstream,
};
pub use workflow::{Action, Condition, Node, Notify, Rollback, Trigger, When, WorkflowSpec};

/// The only apiVersion this berth reads.
pub const API_VERSION: &str = "berth/v1";

/// The kinds of document berth reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    /// Host-wide settings.
    Settings,
    /// A containerised application.
    App,
    /// Reverse-proxy routes to an app.
    Domain,
    /// A database, managed, shared or external.
    Database,
    /// A chat or webhook destination for events.
    Notifier,
    /// A graph of actions run by the controller.
    Workflow,
}

impl Kind {
    /// Every kind, in the order they are listed in help and schemas.
    pub const ALL: [Kind; 6] = [
        Kind::Settings,
        Kind::App,
        Kind::Domain,
        Kind::Database,
        Kind::Notifier,
        Kind::Workflow,
    ];

    /// The name written in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Settings => "Settings",
            Kind::App => "App",
            Kind::Domain => "Domain",
            Kind::Database => "Database",
            Kind::Notifier => "Notifier",
            Kind::Workflow => "Workflow",
        }
    }

    /// Parses the value of `kind:`.
    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A berth document: `apiVersion`, `kind`, `metadata` and the kind's `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Document<S> {
    /// Always `berth/v1`.
    pub api_version: String,
    /// The kind of resource.
    pub kind: String,
    /// The resource's name and labels.
    pub metadata: Metadata,
    /// What the resource should be.
    pub spec: S,
}

/// Name and labels of a resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// The resource's name: a DNS label (lowercase letters, digits and `-`, at most 63
    /// characters, starting and ending with a letter or digit). Unique per kind.
    #[schemars(pattern(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// Free-form labels, for people and tools. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// What a resource does when its manifest is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DeletionPolicy {
    /// Keep the data (volumes, databases). The default.
    #[default]
    Retain,
    /// Delete the data too.
    Delete,
}
