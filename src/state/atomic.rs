//! Files written safely: to a temporary file beside the target, synced, then renamed;
//! and the modes of what holds secrets.
//!
//! A temporary file is named `.<name>.tmp-<pid>-<n>`: unique to the process and the
//! call, so concurrent writers never share one, and never matching a proxy's
//! `*.conf` / `*.yml` patterns. A writer killed mid-write leaves one behind;
//! [`remove_stale_temporaries`] clears those once they are old.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Writes `bytes` to `path` atomically: readers see the old file or the new one, never
/// a part. The temporary file is removed when anything fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, bytes, None)
}

/// [`write_atomic`] with the file's permission bits (for secrets: `0o600`).
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    let (dir, name) = folder_and_name(path)?;
    let tmp = write_temporary(dir, &name, bytes, mode)?;
    let result = fs::rename(&tmp, path);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The folder a file is in (`.` for a bare name) and its name.
fn folder_and_name(path: &Path) -> io::Result<(&Path, String)> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    Ok((dir, name.to_string_lossy().into_owned()))
}

/// Writes `bytes` to `path` only if no file is there yet, atomically: the file
/// appears whole or not at all, and an existing one is never replaced (the error
/// is then `AlreadyExists`).
pub fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_new_mode(path, bytes, None)
}

/// [`write_new`] with the file's permission bits.
pub fn write_new_mode(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    let (dir, name) = folder_and_name(path)?;
    let tmp = write_temporary(dir, &name, bytes, mode)?;
    // A hard link, unlike a rename, fails when the target exists.
    let result = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    result
}

/// Creates a directory readable only by its owner (the state directory holds secrets).
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Removes the temporary files of `dir` whose target's name starts with `prefix`
/// and that are older than `age`: leftovers of a writer killed mid-write (a live
/// write takes milliseconds). Returns how many were removed.
pub fn remove_stale_temporaries(dir: &Path, prefix: &str, age: Duration) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_ours = name
            .strip_prefix('.')
            .is_some_and(|n| n.starts_with(prefix) && n.contains(".tmp-"));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|a| a > age);
        if is_ours && old && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Writes `bytes` to a new temporary file beside `name` in `dir`, synced; returns its
/// path. The name is unique to this process and call; should a leftover of a dead
/// process with the same pid hold it, the next name is tried.
fn write_temporary(dir: &Path, name: &str, bytes: &[u8], mode: Option<u32>) -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut attempts = 0;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if let Some(mode) = mode {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode);
        }
        let mut file = match options.open(&tmp) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => {
                attempts += 1;
                continue;
            }
            other => other?,
        };
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        return Ok(tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn concurrent_writers_of_one_file_never_share_a_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::thread::scope(|s| {
            for i in 0..8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        write_atomic(path, format!("writer {i}").as_bytes()).unwrap();
                    }
                });
            }
        });
        assert!(fs::read_to_string(&path).unwrap().starts_with("writer "));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_new_file_never_replaces_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_new(&path, b"first").unwrap();
        let err = write_new(&path, b"second").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn only_old_temporaries_of_the_prefix_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".berth-a.yml.tmp-1-0");
        fs::write(&stale, "x").unwrap();
        fs::write(dir.path().join(".other.yml.tmp-1-0"), "x").unwrap();
        fs::write(dir.path().join("berth-a.yml"), "x").unwrap();
        assert_eq!(
            remove_stale_temporaries(dir.path(), "berth-", Duration::from_secs(60)),
            0,
            "a young temporary may be a live write"
        );
        assert_eq!(
            remove_stale_temporaries(dir.path(), "berth-", Duration::ZERO),
            1
        );
        assert!(!stale.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[cfg(unix)]
    #[test]
    fn secret_files_get_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        write_atomic_mode(&path, b"x", Some(0o600)).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
