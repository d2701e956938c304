//! The state directory (`--state-dir`, default /var/lib/berth): the secret store and
//! the record of what berth has applied.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::secrets::SecretStore;

/// The default state directory.
pub const DEFAULT: &str = "/var/lib/berth";

/// The files berth keeps between runs.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// What berth has applied: apps that were running as declared, so that one found
/// missing later is reported as drift rather than as new.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Applied {
    /// App names.
    pub apps: BTreeSet<String>,
}

impl StateDir {
    /// The state directory at `root` (created when first written).
    pub fn new(root: &Path) -> StateDir {
        StateDir {
            root: root.to_path_buf(),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The secret store in it.
    pub fn secrets(&self) -> SecretStore {
        SecretStore::new(&self.root)
    }

    fn applied_path(&self) -> PathBuf {
        self.root.join("applied.json")
    }

    /// The applied record; empty when there is none or it cannot be read (it only
    /// changes how a missing app is described).
    pub fn applied(&self) -> Applied {
        std::fs::read(self.applied_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Replaces the applied record.
    pub fn save_applied(&self, applied: &Applied) -> io::Result<()> {
        create_private_dir(&self.root)?;
        let json = serde_json::to_vec_pretty(applied).map_err(io::Error::other)?;
        fsutil::write_atomic(&self.applied_path(), &json)
    }
}

/// Creates a directory readable only by its owner (it holds secrets).
fn create_private_dir(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
