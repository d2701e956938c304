//! Sources of revisions: where the manifests come from. A [`Revision`] is every
//! manifest file at one point in time and an id for it.

pub mod dir;

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
