//! Manifests: the model of every kind, loading files into documents, and validation.
//!
//! The entry points are [`load_dir`] for a directory and [`load_files`] for files that
//! come from elsewhere (a Git tree). Both read every document of a revision and return
//! either the whole validated [`Manifests`] or every problem found, each with its file,
//! line and column: a revision is used whole or not at all. The `_with_policy` forms
//! also hold the revision to the host's [`Policy`]: every command that acts on a host
//! loads through them.

mod diagnostic;
mod load;
pub mod model;
pub mod policy;
mod reference;
mod schema;
pub mod syntax;
pub mod units;
mod validate;
pub mod yaml;

use std::collections::BTreeMap;

pub use diagnostic::{Diagnostic, Diagnostics, ResourceId};
pub use load::{
    MAX_DOCUMENTS, MAX_FILE_BYTES, SourceFile, digest as files_digest, load_dir,
    load_dir_with_policy, load_files, load_files_with_policy, read_source_dir,
};
pub use model::Kind;
pub use policy::{Policy, PolicyError};
pub use reference::reference_markdown;
pub use schema::{any_document_schema, kind_schema, schema_file_name, schema_files};
pub(crate) use validate::{MANAGED_DATA_VOLUME, docker_volume_name};

use model::{AppSpec, DatabaseSpec, DomainSpec, NotifierSpec, SettingsSpec, WorkflowSpec};

/// Where a revision's files live: what a build context is read from. A build reads
/// the revision being applied, never what a folder holds later.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SourceTree {
    /// A folder on disk (a directory source, `berth apply PATH`).
    Dir(std::path::PathBuf),
    /// A commit of a Git clone; the manifests are under `subdir` of its tree.
    Commit {
        /// The clone (a bare repository).
        clone: std::path::PathBuf,
        /// The commit id.
        commit: String,
        /// The folder of the manifests (`""`: the root).
        subdir: String,
    },
}

/// Where a resource was declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file, relative to the source root, with `/` separators.
    pub file: String,
    /// The line of the document's first key.
    pub line: usize,
}

/// One declared resource: its name, labels and spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource<S> {
    /// The resource's name (a DNS label).
    pub name: String,
    /// The labels of `metadata`.
    pub labels: BTreeMap<String, String>,
    /// The spec, with defaults filled in and host names in punycode.
    pub spec: S,
    /// Where it was declared.
    pub origin: Origin,
}

/// Every resource of one valid revision, by kind and name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Manifests {
    /// How many files the manifests were read from.
    pub files: usize,
    /// A hash of every file's path and content: the revision id of a directory.
    pub digest: String,
    /// The Settings document, when there is one.
    pub settings: Option<Resource<SettingsSpec>>,
    /// Apps by name.
    pub apps: BTreeMap<String, Resource<AppSpec>>,
    /// Domains by name.
    pub domains: BTreeMap<String, Resource<DomainSpec>>,
    /// Databases by name.
    pub databases: BTreeMap<String, Resource<DatabaseSpec>>,
    /// Notifiers by name.
    pub notifiers: BTreeMap<String, Resource<NotifierSpec>>,
    /// Workflows by name.
    pub workflows: BTreeMap<String, Resource<WorkflowSpec>>,
    /// The host policy the manifests were checked against (`None`: loaded without one,
    /// by a tool that does not act on a host). Workflow `http` actions stay within it.
    pub policy: Option<std::sync::Arc<Policy>>,
    /// Where the revision's files live, for build contexts (`None`: nowhere to read
    /// them from; an app with `build` cannot be planned).
    pub tree: Option<SourceTree>,
}

impl Manifests {
    /// The settings in force: the Settings document's, or every default.
    pub fn settings(&self) -> SettingsSpec {
        self.settings
            .as_ref()
            .map(|s| s.spec.clone())
            .unwrap_or_default()
    }

    /// How many resources there are, Settings included.
    pub fn len(&self) -> usize {
        usize::from(self.settings.is_some())
            + self.apps.len()
            + self.domains.len()
            + self.databases.len()
            + self.notifiers.len()
            + self.workflows.len()
    }

    /// Whether no resource is declared.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A count per kind, for summaries: `3 App, 1 Domain`.
    pub fn summary(&self) -> String {
        let counts = [
            (Kind::Settings, usize::from(self.settings.is_some())),
            (Kind::App, self.apps.len()),
            (Kind::Domain, self.domains.len()),
            (Kind::Database, self.databases.len()),
            (Kind::Notifier, self.notifiers.len()),
            (Kind::Workflow, self.workflows.len()),
        ];
        let parts: Vec<String> = counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        if parts.is_empty() {
            "no resources".to_owned()
        } else {
            parts.join(", ")
        }
    }
}
