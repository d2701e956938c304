//! One writer per instance: an exclusive `flock` on `<state-dir>/<instance>.lock`.
//!
//! Whatever changes the host for an instance — `berth apply`, each pass of
//! `berth run`, a backup or a restore — holds the lock while it does, so two of them
//! never plan from the same observation and write over each other. The kernel
//! releases a `flock` when the file is closed, which includes its holder dying (even
//! by SIGKILL): a lock whose holder died is free at once, and there is no stale lock
//! to clean up. The file itself is never deleted: unlinking it would let a newcomer
//! lock a fresh file while an old holder still holds the unlinked one.
//!
//! Once it holds the lock, the holder writes `<pid> <what it does>` into the file so
//! that whoever waits can say for whom; it empties the file when it lets go.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

/// How long `berth apply`, `berth run` and `berth backup` wait for the lock unless
/// `--lock-timeout` says otherwise: long enough for another apply to finish its
/// health waits, short enough that a script stuck behind a hung process fails.
pub const DEFAULT_TIMEOUT: &str = "10m";

/// Who holds a lock, as its holder wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's process id.
    pub pid: u32,
    /// What it is doing: "apply", "run pass", "backup", …
    pub doing: String,
}

impl Holder {
    fn parse(text: &str) -> Option<Holder> {
        let (pid, doing) = text.trim_end().split_once(' ')?;
        Some(Holder {
            pid: pid.parse().ok()?,
            doing: doing.to_owned(),
        })
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.doing)
    }
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file could not be opened or created.
    #[error("failed to open the lock file {}: {source}", .path.display())]
    Open {
        /// The lock file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// `flock` itself failed (not because someone holds it).
    #[error("failed to lock {}: {source}", .path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// Someone else held it for longer than the timeout.
    #[error(
        "failed to take the lock on instance {instance} ({}): held by {} for more than {} \
         (--lock-timeout); wait until it finishes and try again, stop it, or give a longer \
         --lock-timeout",
        .path.display(),
        .holder.as_ref().map_or_else(|| "another process".to_owned(), ToString::to_string),
        humantime::format_duration(*.waited)
    )]
    Timeout {
        /// The instance.
        instance: String,
        /// The lock file.
        path: PathBuf,
        /// Who held it when the wait ended, if it said.
        holder: Option<Holder>,
        /// How long this process waited.
        waited: Duration,
    },
}

/// A held lock; dropping it lets go.
#[derive(Debug)]
pub struct InstanceLock {
    // Dropped in this order: the file (the kernel's lock) first, then this process's turn.
    file: File,
    path: PathBuf,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

/// One queue per lock file for the writers of this process: the kernel's `flock` is
/// polled, so a pass that locks again right after letting go could starve a workflow
/// node or a backup waiting beside it; a fair (first come, first served) queue in front
/// of it gives each its turn.
fn turn_for(path: &Path) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static TURNS: OnceLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let key = path
        .parent()
        .and_then(|dir| std::fs::canonicalize(dir).ok())
        .map_or_else(
            || path.to_owned(),
            |dir| dir.join(path.file_name().unwrap_or_default()),
        );
    TURNS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default()
        .clone()
}

impl InstanceLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Empty it first, so no one names a holder that is gone; closing the file
        // (after this) releases the lock.
        let _ = self.file.set_len(0);
    }
}

/// Takes the exclusive lock on `path` for `instance`, waiting up to `timeout` (zero:
/// not at all) while someone else holds it. `on_wait` is called once, with the
/// holder, when this has to wait. `doing` is written into the file for others.
pub async fn acquire(
    path: &Path,
    instance: &str,
    doing: &str,
    timeout: Duration,
    on_wait: impl FnOnce(&Holder),
) -> Result<InstanceLock, LockError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| LockError::Open {
            path: path.to_owned(),
            source,
        })?;
    let started = Instant::now();
    let mut on_wait = Some(on_wait);
    let turn = turn_for(path);
    let turn = match turn.clone().try_lock_owned() {
        Ok(t) => t,
        Err(_) => {
            if let Some(tell) = on_wait.take() {
                tell(&read_holder(&file).unwrap_or(Holder {
                    pid: std::process::id(),
                    doing: "unknown".to_owned(),
                }));
            }
            match tokio::time::timeout(timeout, turn.lock_owned()).await {
                Ok(t) => t,
                Err(_) => {
                    return Err(LockError::Timeout {
                        instance: instance.to_owned(),
                        path: path.to_owned(),
                        holder: read_holder(&file),
                        waited: timeout,
                    });
                }
            }
        }
    };
    let mut delay = Duration::from_millis(10);
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(e) if e == Errno::WOULDBLOCK || e == Errno::INTR => {}
            Err(e) => {
                return Err(LockError::Lock {
                    path: path.to_owned(),
                    source: e.into(),
                });
            }
        }
        let holder = read_holder(&file);
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(LockError::Timeout {
                instance: instance.to_owned(),
                path: path.to_owned(),
                holder,
                waited: timeout,
            });
        }
        // The holder writes its name just after locking: give it a moment before
        // saying "someone" rather than who.
        if holder.is_some() || waited > Duration::from_millis(500) {
            if let Some(tell) = on_wait.take() {
                tell(&holder.unwrap_or(Holder {
                    pid: 0,
                    doing: "unknown".to_owned(),
                }));
            }
        }
        tokio::time::sleep(delay.min(timeout - waited)).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
    let line = format!("{} {doing}\n", std::process::id());
    // Only a message for waiters: failing to write it does not make the lock less held.
    if let Err(e) = file
        .set_len(0)
        .and_then(|()| file.write_all_at(line.as_bytes(), 0))
    {
        tracing::warn!("failed to write the holder into {}: {e}", path.display());
    }
    Ok(InstanceLock {
        file,
        path: path.to_owned(),
        _turn: turn,
    })
}

/// Who holds the lock of `path`, if anyone does and said so.
pub fn holder(path: &Path) -> Option<Holder> {
    let file = File::open(path).ok()?;
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        // Free: whatever the file says is a leftover.
        Ok(()) => None,
        Err(_) => read_holder(&file),
    }
}

fn read_holder(file: &File) -> Option<Holder> {
    let mut buf = [0u8; 256];
    let n = file.read_at(&mut buf, 0).ok()?;
    Holder::parse(std::str::from_utf8(&buf[..n]).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_wait(_: &Holder) {}

    #[tokio::test]
    async fn a_waiting_writer_gets_its_turn_before_one_that_locks_again_at_once() {
        // A pass that fails and retries at once used to take the lock back before a
        // workflow node waiting for it could: the node starved.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("default.lock");
        let pass = acquire(&path, "default", "run pass", Duration::ZERO, no_wait)
            .await
            .unwrap();
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (p, o) = (path.clone(), order.clone());
        let node = tokio::spawn(async move {
            let _l = acquire(
                &p,
                "default",
                "workflow rollback",
                Duration::from_secs(5),
                no_wait,
            )
            .await
            .unwrap();
            o.lock().unwrap().push("workflow");
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(pass);
        let again = acquire(
            &path,
            "default",
            "run pass",
            Duration::from_secs(5),
            no_wait,
        )
        .await
        .unwrap();
        order.lock().unwrap().push("pass");
        drop(again);
        node.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["workflow", "pass"]);
    }

    #[tokio::test]
    async fn a_second_taker_waits_and_is_told_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("default.lock");
        let first = acquire(&path, "default", "apply", Duration::ZERO, no_wait)
            .await
            .unwrap();
        let me = std::process::id();
        assert_eq!(
            holder(&path),
            Some(Holder {
                pid: me,
                doing: "apply".into()
            })
        );
        let told = std::sync::Mutex::new(Vec::new());
        let err = acquire(
            &path,
            "default",
            "run pass",
            Duration::from_millis(300),
            |h| told.lock().unwrap().push(h.to_string()),
        )
        .await
        .unwrap_err();
        assert_eq!(*told.lock().unwrap(), [format!("pid {me} (apply)")]);
        let message = err.to_string();
        assert!(
            message.contains(&format!(
                "failed to take the lock on instance default ({}): held by pid {me} (apply)",
                path.display()
            )),
            "{message}"
        );
        assert!(message.contains("--lock-timeout"), "{message}");

        // Let go: the next one takes it at once, and says it holds it.
        drop(first);
        assert_eq!(holder(&path), None);
        let _second = acquire(&path, "default", "run pass", Duration::ZERO, |_| {
            panic!("no wait once the lock is free")
        })
        .await
        .unwrap();
        assert_eq!(holder(&path).unwrap().doing, "run pass");
    }

    #[tokio::test]
    async fn a_waiter_gets_the_lock_when_the_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.lock");
        let first = acquire(&path, "a", "apply", Duration::ZERO, no_wait)
            .await
            .unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(first);
        });
        let started = Instant::now();
        let _second = acquire(&path, "a", "apply", Duration::from_secs(10), no_wait)
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(150));
        release.await.unwrap();
    }

    #[tokio::test]
    async fn instances_do_not_wait_for_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let _a = acquire(
            &dir.path().join("a.lock"),
            "a",
            "apply",
            Duration::ZERO,
            no_wait,
        )
        .await
        .unwrap();
        acquire(
            &dir.path().join("b.lock"),
            "b",
            "apply",
            Duration::ZERO,
            no_wait,
        )
        .await
        .unwrap();
    }

    // A holder killed with SIGKILL is tested end to end against the real binary:
    // tests/it/instances.rs, `a_second_apply_waits_for_the_first_or_gives_up_after_its_timeout`.

    #[test]
    fn holders_parse_what_holders_write() {
        assert_eq!(
            Holder::parse("1234 run pass\n"),
            Some(Holder {
                pid: 1234,
                doing: "run pass".into()
            })
        );
        assert_eq!(Holder::parse(""), None);
        assert_eq!(Holder::parse("x apply"), None);
    }
}
