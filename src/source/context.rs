//! Build contexts: the files of one folder of a revision, listed with a digest of each
//! (a Git blob id, or the SHA-256 of a file on disk) and read back for the build. A
//! commit's files come from its tree in the clone; a folder's from disk, where each
//! file read for a build is checked against the digest it was listed with, so an image
//! is built from exactly what its tag names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use gix::bstr::ByteSlice;
use sha2::{Digest, Sha256};

use crate::manifest::SourceTree;

/// The most files a context may hold.
pub const MAX_FILES: usize = 100_000;

/// The most bytes a context may hold (its files added up, after `.dockerignore`).
pub const MAX_BYTES: u64 = 512 << 20;

/// What an entry of a context is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file (`executable`: any execute bit set).
    File {
        /// Whether it is executable.
        executable: bool,
    },
    /// A symbolic link; its content is the target.
    Symlink,
}

/// One file of a context.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContextEntry {
    /// Its path inside the context, with `/` separators.
    pub path: String,
    /// File or symlink.
    pub kind: EntryKind,
    /// Its size in bytes.
    pub size: u64,
    /// The Git blob id, or the SHA-256 of its content on disk (hex).
    pub digest: String,
}

/// Why a context could not be listed or read.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The folder is not in the revision.
    #[error("build context `{folder}` is not a folder of {origin}")]
    NoFolder {
        /// The folder as given.
        folder: String,
        /// The revision's place ("commit 3f2a1c0", "/srv/state").
        origin: String,
    },
    /// The context is too large.
    #[error(
        "build context `{folder}` holds {what}, over the limit of {limit}; list what the \
         image does not need in its .dockerignore"
    )]
    TooLarge {
        /// The folder.
        folder: String,
        /// How much it holds.
        what: String,
        /// The limit.
        limit: String,
    },
    /// A file could not be read.
    #[error("failed to read {path} of build context `{folder}`: {message}")]
    Read {
        /// The folder.
        folder: String,
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A file on disk changed since it was listed.
    #[error(
        "{path} of build context `{folder}` changed while the pass ran; the next pass \
         builds the new content"
    )]
    Changed {
        /// The folder.
        folder: String,
        /// The file.
        path: String,
    },
}

/// Where `folder` of the revision is: `""` is the revision's root.
fn describe(tree: &SourceTree) -> String {
    match tree {
        SourceTree::Dir(root) => root.display().to_string(),
        SourceTree::Commit { commit, subdir, .. } if subdir.is_empty() => {
            format!("commit {}", &commit[..commit.len().min(7)])
        }
        SourceTree::Commit { commit, subdir, .. } => {
            format!("`{subdir}` in commit {}", &commit[..commit.len().min(7)])
        }
    }
}

/// Lists every file and symlink under `folder` (normalized, `""` for the root) of the
/// revision at `tree`, sorted by path.
pub fn list(tree: &SourceTree, folder: &str) -> Result<Vec<ContextEntry>, ContextError> {
    let mut entries = match tree {
        SourceTree::Dir(root) => list_dir(root, folder)?,
        SourceTree::Commit {
            clone,
            commit,
            subdir,
        } => list_commit(tree, clone, commit, &join(subdir, folder), folder)?,
    };
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

/// Checks the limits on what `entries` hold.
pub fn check_limits(folder: &str, entries: &[ContextEntry]) -> Result<(), ContextError> {
    if entries.len() > MAX_FILES {
        return Err(ContextError::TooLarge {
            folder: folder.to_owned(),
            what: format!("{} files", entries.len()),
            limit: format!("{MAX_FILES} files"),
        });
    }
    let bytes: u64 = entries.iter().map(|e| e.size).sum();
    if bytes > MAX_BYTES {
        return Err(ContextError::TooLarge {
            folder: folder.to_owned(),
            what: format!("{} MiB", bytes >> 20),
            limit: format!("{} MiB", MAX_BYTES >> 20),
        });
    }
    Ok(())
}

/// The content of `entry` (a symlink's target for a symlink), as listed: a file on
/// disk whose content no longer has the listed digest is an error.
pub fn read(
    tree: &SourceTree,
    folder: &str,
    entry: &ContextEntry,
) -> Result<Vec<u8>, ContextError> {
    let failed = |message: String| ContextError::Read {
        folder: folder.to_owned(),
        path: entry.path.clone(),
        message,
    };
    match tree {
        SourceTree::Dir(root) => {
            let path = root.join(folder).join(&entry.path);
            let data = match entry.kind {
                EntryKind::Symlink => std::fs::read_link(&path)
                    .map(|t| t.as_os_str().as_encoded_bytes().to_vec())
                    .map_err(|e| failed(e.to_string()))?,
                EntryKind::File { .. } => {
                    std::fs::read(&path).map_err(|e| failed(e.to_string()))?
                }
            };
            if hex::encode(Sha256::digest(&data)) != entry.digest {
                return Err(ContextError::Changed {
                    folder: folder.to_owned(),
                    path: entry.path.clone(),
                });
            }
            Ok(data)
        }
        SourceTree::Commit { clone, .. } => {
            let repo = gix::open(clone).map_err(|e| failed(e.to_string()))?;
            let id = gix::ObjectId::from_hex(entry.digest.as_bytes())
                .map_err(|e| failed(e.to_string()))?;
            let object = repo.find_object(id).map_err(|e| failed(e.to_string()))?;
            Ok(object.detach().data)
        }
    }
}

fn too_many(folder: &str) -> ContextError {
    ContextError::TooLarge {
        folder: folder.to_owned(),
        what: format!("more than {MAX_FILES} files"),
        limit: format!("{MAX_FILES} files"),
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}/{b}"),
    }
}

fn list_commit(
    tree: &SourceTree,
    clone: &Path,
    commit: &str,
    path: &str,
    folder: &str,
) -> Result<Vec<ContextEntry>, ContextError> {
    let failed = |e: &dyn std::fmt::Display| ContextError::Read {
        folder: folder.to_owned(),
        path: String::new(),
        message: e.to_string(),
    };
    let repo = gix::open(clone).map_err(|e| failed(&e))?;
    let records = super::git::folder_records(&repo, commit, path)
        .map_err(|e| failed(&e))?
        .ok_or_else(|| ContextError::NoFolder {
            folder: folder.to_owned(),
            origin: describe(tree),
        })?;
    let mut out = Vec::new();
    for record in records {
        let kind = if record.mode.is_link() {
            EntryKind::Symlink
        } else if record.mode.is_blob() {
            EntryKind::File {
                executable: record.mode.is_executable(),
            }
        } else {
            // Folders are implied by their files; submodules are not part of a context.
            continue;
        };
        if out.len() >= MAX_FILES {
            return Err(too_many(folder));
        }
        let size = repo.find_header(record.oid).map_err(|e| failed(&e))?.size();
        out.push(ContextEntry {
            path: record.filepath.to_str_lossy().into_owned(),
            kind,
            size,
            digest: record.oid.to_hex().to_string(),
        });
    }
    Ok(out)
}

/// A file's digest, remembered while its size, time and inode stay the same: a pass
/// over an unchanged folder reads nothing again.
#[derive(Clone, PartialEq, Eq)]
struct Stamp {
    size: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

fn digests() -> &'static Mutex<HashMap<PathBuf, (Stamp, String)>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, (Stamp, String)>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn list_dir(root: &Path, folder: &str) -> Result<Vec<ContextEntry>, ContextError> {
    let base = root.join(folder);
    if !std::fs::symlink_metadata(&base).is_ok_and(|m| m.is_dir()) {
        return Err(ContextError::NoFolder {
            folder: folder.to_owned(),
            origin: root.display().to_string(),
        });
    }
    let mut out = Vec::new();
    let mut stack = vec![(base.clone(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let failed = |e: std::io::Error| ContextError::Read {
            folder: folder.to_owned(),
            path: rel.clone(),
            message: e.to_string(),
        };
        if depth > 64 {
            return Err(failed(std::io::Error::other(
                "folders nested deeper than 64 levels",
            )));
        }
        for item in std::fs::read_dir(&dir).map_err(failed)? {
            let item = item.map_err(failed)?;
            let name = item.file_name().to_string_lossy().into_owned();
            let path = join(&rel, &name);
            let meta = item.metadata().map_err(failed)?;
            let kind = if meta.is_dir() {
                stack.push((item.path(), path, depth + 1));
                continue;
            } else if meta.is_symlink() {
                EntryKind::Symlink
            } else if meta.is_file() {
                use std::os::unix::fs::PermissionsExt;
                EntryKind::File {
                    executable: meta.permissions().mode() & 0o111 != 0,
                }
            } else {
                // Sockets, pipes and devices are not part of a context.
                continue;
            };
            if out.len() >= MAX_FILES {
                return Err(too_many(folder));
            }
            let full = item.path();
            let digest = digest_of(&full, &meta, kind).map_err(|e| ContextError::Read {
                folder: folder.to_owned(),
                path: path.clone(),
                message: e.to_string(),
            })?;
            out.push(ContextEntry {
                path,
                kind,
                size: meta.len(),
                digest,
            });
        }
    }
    Ok(out)
}

fn digest_of(path: &Path, meta: &std::fs::Metadata, kind: EntryKind) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let stamp = Stamp {
        size: meta.len(),
        modified: meta.modified().ok(),
        inode: meta.ino(),
    };
    let cache = digests();
    if let Some((s, d)) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(path) {
        if *s == stamp {
            return Ok(d.clone());
        }
    }
    let data = match kind {
        EntryKind::Symlink => std::fs::read_link(path)?
            .as_os_str()
            .as_encoded_bytes()
            .to_vec(),
        EntryKind::File { .. } => std::fs::read(path)?,
    };
    let digest = hex::encode(Sha256::digest(&data));
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(path.to_path_buf(), (stamp, digest.clone()));
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_lists_files_and_links_sorted_and_reads_back_what_it_listed() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("apps/web");
        std::fs::create_dir_all(app.join("src")).unwrap();
        std::fs::write(app.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(app.join("src/main.sh"), "echo hi\n").unwrap();
        std::os::unix::fs::symlink("src/main.sh", app.join("run")).unwrap();
        let tree = SourceTree::Dir(dir.path().to_path_buf());
        let entries = list(&tree, "apps/web").unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["Dockerfile", "run", "src/main.sh"]);
        assert_eq!(entries[1].kind, EntryKind::Symlink);
        assert_eq!(
            read(&tree, "apps/web", &entries[1]).unwrap(),
            b"src/main.sh"
        );
        assert_eq!(
            read(&tree, "apps/web", &entries[2]).unwrap(),
            b"echo hi\n".to_vec()
        );
        // Changed after it was listed: the build refuses it rather than mislabel it.
        std::fs::write(app.join("src/main.sh"), "echo changed\n").unwrap();
        let e = read(&tree, "apps/web", &entries[2]).unwrap_err();
        assert!(matches!(e, ContextError::Changed { .. }), "{e}");
        let e = list(&tree, "apps/api").unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "build context `apps/api` is not a folder of {}",
                dir.path().display()
            )
        );
    }
}
