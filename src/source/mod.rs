//! Sources of revisions: where the manifests come from. A [`Revision`] is every
//! manifest file at one point in time and an id for it.

pub mod context;
pub mod dir;
pub mod git;
pub mod webhook;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::manifest::SourceFile;

/// What a revision id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RevisionKind {
    /// A Git commit (40 hex digits).
    Commit,
    /// A hash of a directory's manifests.
    Content,
}

/// The id of a revision, knowing what it names. Shown and serialized as the bare id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RevisionId {
    kind: RevisionKind,
    id: String,
}

impl RevisionId {
    /// The Git commit `id`.
    pub fn commit(id: impl Into<String>) -> RevisionId {
        RevisionId {
            kind: RevisionKind::Commit,
            id: id.into(),
        }
    }

    /// The content hash `id`.
    pub fn content(id: impl Into<String>) -> RevisionId {
        RevisionId {
            kind: RevisionKind::Content,
            id: id.into(),
        }
    }

    /// An id read back from status or a notification, where only the text was kept.
    /// The two kinds never look alike: a commit is 40 hex digits, a content hash 12.
    pub fn read(text: &str) -> RevisionId {
        if text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            RevisionId::commit(text)
        } else {
            RevisionId::content(text)
        }
    }

    /// What it names.
    pub fn kind(&self) -> RevisionKind {
        self.kind
    }

    /// The full id.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The id as people read it: 7 characters of a commit, 12 of anything else.
    pub fn short(&self) -> &str {
        let keep = match self.kind {
            RevisionKind::Commit => 7,
            RevisionKind::Content => 12,
        };
        match self.id.char_indices().nth(keep) {
            Some((end, _)) => &self.id[..end],
            None => &self.id,
        }
    }
}

impl fmt::Display for RevisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl Serialize for RevisionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.id)
    }
}

impl<'de> Deserialize<'de> for RevisionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(RevisionId::read(&String::deserialize(d)?))
    }
}

/// Every manifest file of one version of the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// A content hash (directories) or a commit id (Git).
    pub id: RevisionId,
    /// The files, sorted by path.
    pub files: Vec<SourceFile>,
    /// Problems reading files (too large, symlinks out of the root…): a revision with
    /// problems is invalid as a whole.
    pub problems: Vec<crate::manifest::Diagnostic>,
    /// Where its files live: build contexts are read from there.
    pub tree: crate::manifest::SourceTree,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_ids_know_their_kind_and_read_back_as_written() {
        let commit = RevisionId::commit("3f2a1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a49");
        assert_eq!(commit.short(), "3f2a1c0");
        let content = RevisionId::content("0123456789abcdef");
        assert_eq!(content.short(), "0123456789ab");
        assert_eq!(RevisionId::content("v1.2").short(), "v1.2");
        for id in [commit, content] {
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(json, format!("\"{id}\""));
            assert_eq!(serde_json::from_str::<RevisionId>(&json).unwrap(), id);
        }
        assert_eq!(
            RevisionId::read("3f2a1c0d9e8b").kind(),
            RevisionKind::Content
        );
    }
}
