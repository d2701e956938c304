//! A directory source: revisions are read from disk, their id is a content hash, and
//! a file watcher (debounced by the controller) says when to read again.

use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{Revision, RevisionId};
use crate::manifest;

/// Manifests in a directory (or one file).
#[derive(Debug, Clone)]
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    /// A source reading `root`.
    pub fn new(root: &Path) -> DirSource {
        DirSource {
            root: root.to_path_buf(),
        }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads the current revision.
    pub fn read(&self) -> Revision {
        let (files, problems) = manifest::read_source_dir(&self.root);
        let folder = match self.root.is_dir() {
            true => self.root.clone(),
            false => self
                .root
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        Revision {
            id: RevisionId::content(manifest::files_digest(&files)),
            files,
            problems,
            tree: manifest::SourceTree::Dir(folder),
        }
    }

    /// Watches the directory; every change sends `()` on `changes` (the receiver
    /// debounces). The watcher stops when the returned value is dropped.
    pub fn watch(&self, changes: mpsc::UnboundedSender<()>) -> notify::Result<RecommendedWatcher> {
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    if !event.kind.is_access() {
                        let _ = changes.send(());
                    }
                }
            })?;
        watcher.watch(&self.root, RecursiveMode::Recursive)?;
        Ok(watcher)
    }
}
