//! The state directory (`--state-dir`, default /var/lib/berth): every path berth keeps
//! there, and which of them belong to one instance.
//!
//! ```text
//! <state-dir>/
//!   secrets/                    the secret store (shared: a secret is the host's)
//!   git/  backups/  tls/        clones, dumps, certificate files
//!   certs/<domain>/             certificates of berth's ACME client (see [`certs`])
//!   <instance>.lock             held by whoever changes the host for the instance
//!   applied-<instance>.json     the apps the instance applied
//!   status-<instance>.json      what `berth run` reports
//!   databases-<instance>.json   the shared databases the instance created
//!   history-<instance>.json     the last specs applied to each app
//!   pins-<instance>.json        the apps a rollback holds at an earlier spec
//!   builds-<instance>/          each app's last build log and built files
//! ```
//! Several instances may share one state directory: each reads and writes only the
//! files with its own name. `applied.json` and `status.json` are what berth wrote
//! before records were per instance; an instance without a file of its own starts
//! from a copy of them (see [`StateDir::migrate`]).

pub mod atomic;
pub mod builds;
pub mod certs;
pub mod history;
pub mod lock;
pub mod presence;
pub mod records;
pub mod secrets;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use self::history::{History, Pins};
use self::lock::{Holder, InstanceLock, LockError};
use self::records::{Applied, Records};
use self::secrets::SecretStore;

/// The default state directory.
pub const DEFAULT: &str = "/var/lib/berth";

/// The files one berth instance keeps between runs.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    instance: String,
}

impl StateDir {
    /// The state directory at `root` (created when first written), as seen by
    /// `instance`. The instance name becomes part of file names: callers pass a
    /// validated name (the command line checks it).
    pub fn new(root: &Path, instance: &str) -> StateDir {
        StateDir {
            root: root.to_path_buf(),
            instance: instance.to_owned(),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The instance whose files these are.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The secret store in it.
    pub fn secrets(&self) -> SecretStore {
        SecretStore::new(&self.root)
    }

    /// The certificates of berth's ACME client (`certs/`).
    pub fn certificates(&self) -> certs::Certificates {
        certs::Certificates::new(&self.root)
    }

    /// `<instance>.lock`: see [`lock`].
    pub fn lock_path(&self) -> PathBuf {
        self.root.join(format!("{}.lock", self.instance))
    }

    /// `applied-<instance>.json`.
    pub fn applied_path(&self) -> PathBuf {
        self.root.join(format!("applied-{}.json", self.instance))
    }

    /// `status-<instance>.json`, migrated from the legacy shared `status.json` when the
    /// instance has none of its own yet.
    pub fn status_path(&self) -> PathBuf {
        let path = self.root.join(format!("status-{}.json", self.instance));
        self.migrate(&path, "status.json");
        path
    }

    /// The shared-database records of the instance (`databases-<instance>.json`).
    pub fn databases(&self) -> Records {
        Records::new(&self.root, &self.instance)
    }

    /// The specs applied to the instance's apps (`history-<instance>.json`).
    pub fn history(&self) -> History {
        History::new(&self.root, &self.instance)
    }

    /// The apps' builds: logs and records (`builds-<instance>/`).
    pub fn builds(&self) -> builds::Builds {
        builds::Builds::new(&self.root, &self.instance)
    }

    /// The apps a rollback pinned (`pins-<instance>.json`).
    pub fn pins(&self) -> Pins {
        Pins::new(&self.root, &self.instance)
    }

    /// The applied record; empty when there is none or it cannot be read (it only
    /// changes how a missing app is described).
    pub fn applied(&self) -> Applied {
        let path = self.applied_path();
        self.migrate(&path, "applied.json");
        records::read_applied(&path)
    }

    /// Replaces the applied record.
    pub fn save_applied(&self, applied: &Applied) -> io::Result<()> {
        atomic::create_private_dir(&self.root)?;
        records::write_applied(&self.applied_path(), applied)
    }

    /// Takes the instance's lock (see [`lock::acquire`]): `doing` says what for
    /// ("apply", "run pass", …); `on_wait` is called once if someone else holds it.
    pub async fn lock(
        &self,
        doing: &str,
        timeout: Duration,
        on_wait: impl FnOnce(&Holder),
    ) -> Result<InstanceLock, LockError> {
        atomic::create_private_dir(&self.root).map_err(|source| LockError::Open {
            path: self.lock_path(),
            source,
        })?;
        lock::acquire(&self.lock_path(), &self.instance, doing, timeout, on_wait).await
    }

    /// Gives an instance without its own `own` file a copy of the legacy shared file
    /// `legacy` (what berth wrote before records were per instance), once: later
    /// reads and writes use `own` only. The legacy file is left in place, not
    /// deleted: every instance sharing this directory wrote it, so each of them
    /// migrates from it on its first start, whichever comes first. Failing to copy
    /// only costs the history, so it is logged, not fatal.
    fn migrate(&self, own: &Path, legacy: &str) {
        let legacy = self.root.join(legacy);
        if own.exists() || !legacy.exists() {
            return;
        }
        match std::fs::read(&legacy).and_then(|bytes| atomic::write_new(own, &bytes)) {
            Ok(()) => tracing::info!(
                instance = %self.instance,
                "migrated {} to {}",
                legacy.display(),
                own.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => tracing::warn!(
                "failed to migrate {} to {}: {e}",
                legacy.display(),
                own.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn apps(names: &[&str]) -> Applied {
        Applied {
            apps: names
                .iter()
                .map(|n| (*n).to_owned())
                .collect::<BTreeSet<_>>(),
        }
    }

    #[test]
    fn each_instance_keeps_its_own_records() {
        let dir = tempfile::tempdir().unwrap();
        let a = StateDir::new(dir.path(), "a");
        let b = StateDir::new(dir.path(), "b");
        a.save_applied(&apps(&["web"])).unwrap();
        b.save_applied(&apps(&["api"])).unwrap();
        assert_eq!(a.applied(), apps(&["web"]));
        assert_eq!(b.applied(), apps(&["api"]));
        assert!(dir.path().join("applied-a.json").is_file());
        assert!(dir.path().join("applied-b.json").is_file());
        assert!(!dir.path().join("applied.json").exists());
        assert_ne!(a.status_path(), b.status_path());
        assert_ne!(a.lock_path(), b.lock_path());
    }

    #[test]
    fn legacy_shared_files_are_migrated_once_and_kept_for_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let legacy_applied = serde_json::to_vec(&apps(&["web", "db"])).unwrap();
        std::fs::write(dir.path().join("applied.json"), &legacy_applied).unwrap();
        std::fs::write(dir.path().join("status.json"), b"{\"legacy\": true}").unwrap();

        // The first instance to start reads the legacy file and writes its own.
        let a = StateDir::new(dir.path(), "default");
        assert_eq!(a.applied(), apps(&["web", "db"]));
        assert!(dir.path().join("applied-default.json").is_file());
        let status = a.status_path();
        assert_eq!(std::fs::read(&status).unwrap(), b"{\"legacy\": true}");

        // From then on its own file is the record: the legacy one no longer counts.
        a.save_applied(&apps(&["web"])).unwrap();
        std::fs::write(dir.path().join("applied.json"), b"{\"apps\": [\"other\"]}").unwrap();
        assert_eq!(a.applied(), apps(&["web"]));

        // The legacy files are still there, for another instance to migrate from.
        let b = StateDir::new(dir.path(), "b");
        assert_eq!(b.applied(), apps(&["other"]));
        assert!(dir.path().join("status.json").is_file());
        assert_eq!(
            std::fs::read(b.status_path()).unwrap(),
            b"{\"legacy\": true}"
        );
        assert_eq!(a.applied(), apps(&["web"]), "b's migration leaves a alone");
    }

    #[test]
    fn without_legacy_files_nothing_is_created_by_reading() {
        let dir = tempfile::tempdir().unwrap();
        let a = StateDir::new(dir.path(), "a");
        assert_eq!(a.applied(), Applied::default());
        let _ = a.status_path();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
