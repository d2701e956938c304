//! Problems found in manifests, each pinned to a file, line and column.

use std::fmt;

use serde::Serialize;

use super::model::Kind;
use super::syntax::escape_control;

/// A resource's kind and name: `App/blog`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ResourceId {
    /// The kind.
    pub kind: Kind,
    /// The name.
    pub name: String,
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// One problem: where it is, which resource, what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    /// The file, relative to the source root.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The resource the problem belongs to, when the document got that far.
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub resource: Option<ResourceId>,
    /// The message.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// One line: file names and messages come from the repository, so their control
    /// characters are escaped (a file named with a newline cannot forge a second line).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = escape_control(&self.file);
        write!(f, "{file}:{}:{}: ", self.line, self.column)?;
        if let Some(r) = &self.resource {
            write!(f, "{}: ", escape_control(&r.to_string()))?;
        }
        f.write_str(&escape_control(&self.message))
    }
}

/// Every problem of a revision, sorted by file and position.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    pub(crate) fn new(mut list: Vec<Diagnostic>) -> Diagnostics {
        list.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        list.dedup();
        Diagnostics(list)
    }

    /// The problems.
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<Diagnostic>> for Diagnostics {
    fn from(list: Vec<Diagnostic>) -> Self {
        Diagnostics::new(list)
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}
