//! What berth remembers it did, per instance: the shared databases it created
//! (`databases-<instance>.json`) and the apps it applied (`applied-<instance>.json`).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::atomic;
use crate::manifest::model::{DeletionPolicy, ServerEngine};

/// What berth has applied: apps that were running as declared, so that one found
/// missing later is reported as drift rather than as new.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Applied {
    /// App names.
    pub apps: BTreeSet<String>,
}

/// Reads an applied record; empty when there is none or it cannot be read.
pub(crate) fn read_applied(path: &Path) -> Applied {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Replaces an applied record.
pub(crate) fn write_applied(path: &Path, applied: &Applied) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(applied).map_err(io::Error::other)?;
    atomic::write_atomic(path, &json)
}

/// A shared database berth created, remembered so that removing its manifest knows
/// what to drop or keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedRecord {
    /// The server's name in Settings.
    pub server: String,
    /// The engine.
    pub engine: ServerEngine,
    /// The database on the server.
    pub database: String,
    /// Its user.
    pub user: String,
    /// What removing the manifest does.
    pub deletion_policy: DeletionPolicy,
}

/// The records, in `<state-dir>/databases-<instance>.json`.
#[derive(Debug, Clone)]
pub struct Records {
    path: PathBuf,
}

impl Records {
    /// The records of `instance` in `state_dir`.
    pub fn new(state_dir: &Path, instance: &str) -> Records {
        Records {
            path: state_dir.join(format!("databases-{instance}.json")),
        }
    }

    /// Every record, by database resource name.
    pub fn load(&self) -> BTreeMap<String, SharedRecord> {
        std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Adds or replaces one record.
    pub fn put(&self, name: &str, record: SharedRecord) -> std::io::Result<()> {
        let mut all = self.load();
        all.insert(name.to_owned(), record);
        self.save(&all)
    }

    /// Forgets one.
    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        let mut all = self.load();
        all.remove(name);
        self.save(&all)
    }

    fn save(&self, all: &BTreeMap<String, SharedRecord>) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let json = serde_json::to_vec_pretty(all).expect("records serialize");
        atomic::write_atomic(&self.path, &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(database: &str) -> SharedRecord {
        SharedRecord {
            server: "main".into(),
            engine: ServerEngine::Postgres,
            database: database.into(),
            user: database.into(),
            deletion_policy: DeletionPolicy::Retain,
        }
    }

    #[test]
    fn records_are_kept_per_instance() {
        let dir = tempfile::tempdir().unwrap();
        let a = Records::new(dir.path(), "a");
        let b = Records::new(dir.path(), "b");
        a.put("shop", record("shop")).unwrap();
        b.put("blog", record("blog")).unwrap();
        assert_eq!(a.load().keys().collect::<Vec<_>>(), ["shop"]);
        assert_eq!(b.load().keys().collect::<Vec<_>>(), ["blog"]);
        a.remove("shop").unwrap();
        assert!(a.load().is_empty());
        assert_eq!(b.load()["blog"], record("blog"));
        assert!(dir.path().join("databases-a.json").is_file());
    }
}
