//! Resource identities: the kind and name of everything berth plans, applies and
//! reports, as one type that every stage passes on instead of a `Kind/name` string.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What kind of thing a resource is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    /// An App: its containers.
    App,
    /// A Domain: its proxy file.
    Domain,
    /// The certificate berth's ACME client keeps for a Domain (named after it).
    Certificate,
    /// A Database: a managed one's container, a shared one's database and user.
    Database,
    /// A Notifier.
    Notifier,
    /// A Workflow.
    Workflow,
    /// A named volume.
    Volume,
    /// A Docker network.
    Network,
    /// The source berth follows (directory or Git).
    Source,
    /// A secret berth generates into the secret store.
    Secret,
    /// A file berth writes from a secret.
    File,
}

impl ResourceKind {
    /// Every kind, in the order plans and status list them.
    pub const ALL: [ResourceKind; 11] = [
        ResourceKind::Network,
        ResourceKind::Volume,
        ResourceKind::Database,
        ResourceKind::App,
        ResourceKind::Domain,
        ResourceKind::Certificate,
        ResourceKind::Notifier,
        ResourceKind::Workflow,
        ResourceKind::Source,
        ResourceKind::Secret,
        ResourceKind::File,
    ];

    /// The name shown to people and used in the API: `App`, `Domain`…
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::App => "App",
            ResourceKind::Domain => "Domain",
            ResourceKind::Certificate => "Certificate",
            ResourceKind::Database => "Database",
            ResourceKind::Notifier => "Notifier",
            ResourceKind::Workflow => "Workflow",
            ResourceKind::Volume => "Volume",
            ResourceKind::Network => "Network",
            ResourceKind::Source => "Source",
            ResourceKind::Secret => "Secret",
            ResourceKind::File => "File",
        }
    }

    /// The kind named `name` (as [`ResourceKind::as_str`] writes it, any case).
    pub fn parse(name: &str) -> Option<ResourceKind> {
        ResourceKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ResourceKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ResourceKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        ResourceKind::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown resource kind `{name}`")))
    }
}

/// One resource: its kind and name. Shown, and serialized, as `Kind/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId {
    /// Its kind.
    pub kind: ResourceKind,
    /// Its name.
    pub name: String,
}

impl ResourceId {
    /// The resource `kind`/`name`.
    pub fn new(kind: ResourceKind, name: impl Into<String>) -> ResourceId {
        ResourceId {
            kind,
            name: name.into(),
        }
    }

    /// Reads `Kind/name`, as [`fmt::Display`] writes it.
    pub fn parse(text: &str) -> Option<ResourceId> {
        let (kind, name) = text.split_once('/')?;
        Some(ResourceId::new(ResourceKind::parse(kind)?, name))
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

impl Serialize for ResourceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ResourceId::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not a resource id: `{text}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_back_what_they_write() {
        let id = ResourceId::new(ResourceKind::Database, "blog-db");
        assert_eq!(id.to_string(), "Database/blog-db");
        assert_eq!(ResourceId::parse("Database/blog-db"), Some(id.clone()));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"Database/blog-db\"");
        assert_eq!(serde_json::from_str::<ResourceId>(&json).unwrap(), id);
        assert_eq!(ResourceId::parse("Gadget/x"), None);
        assert_eq!(ResourceId::parse("App"), None);
    }
}
