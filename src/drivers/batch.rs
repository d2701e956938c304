//! What the proxy drivers are given and answer: a change of one Domain's file, a
//! batch's results, and why a file could not be taken.

use std::collections::BTreeMap;

/// Why the proxy could not take a domain's file, by the step that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The route holds a value that could break out of its directive, or no proxy is
    /// configured.
    #[error("{0}")]
    Render(String),
    /// The pass's staging folder could not be made.
    #[error("{0}")]
    Stage(String),
    /// The proxy's check refused the file, or it could not be written or removed.
    #[error("{0}")]
    Change(String),
    /// The proxy did not take the new configuration.
    #[error("nginx reload failed: {0}")]
    Reload(String),
}

/// A file change for one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Write this content.
    Write(String),
    /// Remove the file.
    Remove,
}

/// What a batch of proxy file changes did.
#[derive(Debug, Default)]
pub struct Batch {
    /// Each changed file's result, by the Domain it is named after.
    pub files: BTreeMap<String, Result<(), ProxyError>>,
    /// Live files of berth's that nginx refused, by Domain, with nginx's message:
    /// taken out of the live configuration so the others could load.
    pub broken: BTreeMap<String, String>,
    /// Why the reload did not take, when it did not (every change is then undone).
    pub reload_failed: Option<ProxyError>,
    /// What could not be checked (a reload berth cannot verify).
    pub warnings: Vec<String>,
}
