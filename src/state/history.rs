//! What each app ran, per instance: the last specs applied to it
//! (`history-<instance>.json`, [`KEPT`] per app) and the apps a rollback pinned to one
//! of them (`pins-<instance>.json`).
//!
//! A spec here is a container spec as applied (the planner's `ContainerSpec`, kept as
//! JSON so that this stage needs nothing of the later ones): secrets appear only redacted
//! (`<secret:name sha256:…>`), with the names of the secrets the values come from, so
//! no secret value is ever written to these files. Both files are read strictly: a
//! file that cannot be read is an error, never taken as empty, since that would lose
//! the history (on the next write) or redeploy a spec a rollback holds back.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::atomic;

/// How many applied specs are kept per app.
pub const KEPT: usize = 10;

/// Why the history or the pins could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be read.
    #[error("failed to read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not what berth writes.
    #[error(
        "failed to read {}: {source}; fix or remove the file (berth wrote it as JSON)",
        path.display()
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// The file could not be written.
    #[error("failed to write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// One spec applied to an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedSpec {
    /// The revision whose spec it is (`RevisionId` text).
    pub revision: String,
    /// The container spec as applied (secrets redacted), as JSON.
    pub spec: serde_json::Value,
    /// Its hash, as on the containers' `berth.spec-hash` label.
    pub hash: String,
    /// Variable → the secret its value comes from: names only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// When it was applied (RFC 3339).
    pub at: String,
}

/// Who pinned an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PinnedBy {
    /// A workflow's `rollback` node.
    Workflow(String),
    /// `berth rollback`.
    Hand,
}

impl fmt::Display for PinnedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinnedBy::Workflow(name) => write!(f, "by workflow {name}"),
            PinnedBy::Hand => f.write_str("by berth rollback"),
        }
    }
}

/// An app held at an earlier spec until its declared spec changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pin {
    /// The spec held, from the history.
    pub held: AppliedSpec,
    /// The hash of the declared spec when the app was pinned, its secrets by name
    /// (`plan::hold::declared_hash`): a revision that changes it releases the pin.
    pub declared_hash: String,
    /// Who pinned it.
    pub by: PinnedBy,
    /// When (RFC 3339).
    pub at: String,
}

/// The applied specs of an instance's apps, oldest first.
#[derive(Debug, Clone)]
pub struct History {
    path: PathBuf,
}

impl History {
    /// The history of `instance` in `state_dir`.
    pub fn new(state_dir: &Path, instance: &str) -> History {
        History {
            path: state_dir.join(format!("history-{instance}.json")),
        }
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every app's applied specs, oldest first; empty when there is no file yet.
    pub fn load(&self) -> Result<BTreeMap<String, Vec<AppliedSpec>>, HistoryError> {
        read(&self.path)
    }

    /// Appends what was just applied, keeping the last [`KEPT`] per app. A spec equal
    /// to the app's newest entry (a container put back after drift) adds nothing.
    pub fn record(&self, applied: Vec<(String, AppliedSpec)>) -> Result<(), HistoryError> {
        if applied.is_empty() {
            return Ok(());
        }
        let mut all = self.load()?;
        let mut changed = false;
        for (app, entry) in applied {
            let entries = all.entry(app).or_default();
            if entries.last().is_some_and(|last| last.hash == entry.hash) {
                continue;
            }
            entries.push(entry);
            let over = entries.len().saturating_sub(KEPT);
            entries.drain(..over);
            changed = true;
        }
        if !changed {
            return Ok(());
        }
        write(&self.path, &all)
    }
}

/// The apps a rollback pinned, by name.
#[derive(Debug, Clone)]
pub struct Pins {
    path: PathBuf,
}

impl Pins {
    /// The pins of `instance` in `state_dir`.
    pub fn new(state_dir: &Path, instance: &str) -> Pins {
        Pins {
            path: state_dir.join(format!("pins-{instance}.json")),
        }
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every pin; empty when there is no file yet.
    pub fn load(&self) -> Result<BTreeMap<String, Pin>, HistoryError> {
        read(&self.path)
    }

    /// Pins `app` (replacing a pin it had).
    pub fn put(&self, app: &str, pin: &Pin) -> Result<(), HistoryError> {
        let mut all = self.load()?;
        all.insert(app.to_owned(), pin.clone());
        write(&self.path, &all)
    }

    /// Releases `app`'s pin; nothing to do when it has none.
    pub fn remove(&self, app: &str) -> Result<(), HistoryError> {
        let mut all = self.load()?;
        if all.remove(app).is_none() {
            return Ok(());
        }
        write(&self.path, &all)
    }
}

fn read<T: DeserializeOwned + Default>(path: &Path) -> Result<T, HistoryError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(T::default()),
        Err(source) => {
            return Err(HistoryError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes).map_err(|source| HistoryError::Parse {
        path: path.to_owned(),
        source,
    })
}

fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), HistoryError> {
    let fail = |source| HistoryError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        atomic::create_private_dir(dir).map_err(fail)?;
    }
    let json = serde_json::to_vec_pretty(value)
        .map_err(io::Error::other)
        .map_err(fail)?;
    atomic::write_atomic(path, &json).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(revision: &str, version: &str) -> AppliedSpec {
        let spec = crate::desired::ContainerSpec {
            image: "busybox".into(),
            command: None,
            env: [("VERSION".to_owned(), version.to_owned())].into(),
            secret_env: BTreeMap::new(),
            port: None,
            ports: Vec::new(),
            volumes: Vec::new(),
            network: "berth".into(),
            health: None,
            cpus: None,
            memory: None,
            restart: "unless-stopped".into(),
            labels: BTreeMap::new(),
            user: None,
            init: false,
            networks: Vec::new(),
            build: None,
            service: None,
        };
        AppliedSpec {
            revision: revision.into(),
            hash: spec.hash(),
            spec: serde_json::to_value(&spec).unwrap(),
            secrets: BTreeMap::new(),
            at: "2026-12-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn the_history_keeps_the_last_ten_specs_per_app_and_skips_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::new(dir.path(), "a");
        for n in 0..13 {
            let v = format!("v{n}");
            history
                .record(vec![("web".into(), entry(&format!("r{n}"), &v))])
                .unwrap();
            // The same spec again (a container put back after drift) is no new entry.
            history
                .record(vec![("web".into(), entry(&format!("r{n}b"), &v))])
                .unwrap();
        }
        history
            .record(vec![("api".into(), entry("r0", "v0"))])
            .unwrap();
        let all = history.load().unwrap();
        let revisions: Vec<&str> = all["web"].iter().map(|e| e.revision.as_str()).collect();
        assert_eq!(
            revisions,
            [
                "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12"
            ]
        );
        assert_eq!(all["api"].len(), 1);
        assert!(History::new(dir.path(), "b").load().unwrap().is_empty());
        assert!(dir.path().join("history-a.json").is_file());
    }

    #[test]
    fn a_pin_is_put_replaced_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let pins = Pins::new(dir.path(), "a");
        let pin = |by| Pin {
            held: entry("r1", "v1"),
            declared_hash: "d".repeat(64),
            by,
            at: "2026-12-01T00:00:00Z".into(),
        };
        pins.put("web", &pin(PinnedBy::Hand)).unwrap();
        pins.put("web", &pin(PinnedBy::Workflow("deploy-check".into())))
            .unwrap();
        assert_eq!(
            pins.load().unwrap()["web"].by.to_string(),
            "by workflow deploy-check"
        );
        pins.remove("web").unwrap();
        pins.remove("web").unwrap();
        assert!(pins.load().unwrap().is_empty());
        assert!(dir.path().join("pins-a.json").is_file());
    }

    #[test]
    fn an_unreadable_history_is_an_error_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::new(dir.path(), "a");
        std::fs::write(history.path(), b"{ not json").unwrap();
        let e = history
            .record(vec![("web".into(), entry("r1", "v1"))])
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("failed to read {}: ", history.path().display())),
            "{e}"
        );
        assert!(
            e.to_string()
                .ends_with("fix or remove the file (berth wrote it as JSON)")
        );
        assert_eq!(std::fs::read(history.path()).unwrap(), b"{ not json");
    }
}
