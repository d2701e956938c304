//! Whether a `berth run` serves an instance, and where: `<state-dir>/controller-<instance>.json`
//! holds its process id and status address while it runs, so that commands such as
//! `berth workflow run` ask it instead of acting beside it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StateDir;
use super::atomic;

/// A running controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// Its process id.
    pub pid: u32,
    /// The address its status server listens on, such as `127.0.0.1:9470`.
    pub listen: String,
}

fn path(state: &StateDir) -> PathBuf {
    state
        .path()
        .join(format!("controller-{}.json", state.instance()))
}

/// Records that this process serves `state`'s instance at `listen`; the record goes when
/// the returned guard is dropped.
pub fn announce(state: &StateDir, listen: &str) -> std::io::Result<Announced> {
    atomic::create_private_dir(state.path())?;
    let me = Presence {
        pid: std::process::id(),
        listen: listen.to_owned(),
    };
    let path = path(state);
    atomic::write_atomic(&path, &serde_json::to_vec(&me).unwrap_or_default())?;
    Ok(Announced { path })
}

/// The controller serving `state`'s instance, if one runs (a record left by a process
/// that is gone is ignored).
pub fn find(state: &StateDir) -> Option<Presence> {
    let bytes = std::fs::read(path(state)).ok()?;
    let p: Presence = serde_json::from_slice(&bytes).ok()?;
    alive(p.pid).then_some(p)
}

fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        // It exists but belongs to someone else.
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

/// Removes the record when dropped.
pub struct Announced {
    path: PathBuf,
}

impl Announced {
    /// Where the record is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_left_by_a_process_that_is_gone_is_ignored() {
        let dir = std::env::temp_dir().join(format!("berth-presence-{}", std::process::id()));
        let state = StateDir::new(&dir, "default");
        let announced = announce(&state, "127.0.0.1:9470").unwrap();
        assert_eq!(find(&state).unwrap().listen, "127.0.0.1:9470");
        drop(announced);
        assert_eq!(find(&state), None);
        // A pid that cannot be running.
        std::fs::write(path(&state), br#"{"pid": 4194999, "listen": "x"}"#).unwrap();
        assert_eq!(find(&state), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
