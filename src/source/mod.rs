//! Sources of revisions: where the manifests come from. A [`Revision`] is every
//! manifest file at one point in time and an id for it.

pub mod dir;
pub mod git;
pub mod webhook;

use std::sync::Arc;

use crate::manifest::SourceFile;

/// Every manifest file of one version of the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// A content hash (directories) or a commit id (Git).
    pub id: String,
    /// The files, sorted by path.
    pub files: Vec<SourceFile>,
    /// Problems reading files (too large, symlinks out of the root…): a revision with
    /// problems is invalid as a whole.
    pub problems: Vec<crate::manifest::Diagnostic>,
}

/// Where `berth run` reads its revisions.
#[derive(Debug, Clone)]
pub enum Source {
    /// A directory, watched.
    Dir(dir::DirSource),
    /// A Git repository, fetched on an interval and on the push webhook.
    Git(Arc<git::GitSource>),
}

impl Source {
    /// The source for status and logs (credentials removed).
    pub fn describe(&self) -> String {
        match self {
            Source::Dir(d) => d.root().display().to_string(),
            Source::Git(g) => g.spec().display(),
        }
    }
}
