//! The proxy in use, from the settings: nginx, Traefik or none.

use std::collections::BTreeMap;

use crate::desired::routes::{FileState, Route};
use crate::drivers::nginx::{Change, Nginx, observe_dir};
use crate::drivers::traefik::Traefik;
use crate::manifest::model::{Proxy, SettingsSpec};

/// Why the proxy could not take a domain's file, by the step that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The route holds a value that could break out of its directive, or no proxy is
    /// configured.
    #[error("{0}")]
    Render(String),
    /// The pass's staging folder could not be made.
    #[error("{0}")]
    Stage(String),
    /// The proxy's check refused the file, or it could not be written or removed.
    #[error("{0}")]
    Change(String),
    /// The proxy did not take the new configuration.
    #[error("nginx reload failed: {0}")]
    Reload(String),
}

/// The configured reverse proxy.
#[derive(Debug, Clone)]
pub enum ProxyDriver {
    /// nginx.
    Nginx(Nginx),
    /// Traefik.
    Traefik(Traefik),
    /// No proxy.
    None,
}

impl ProxyDriver {
    /// The proxy the settings describe, writing and owning the files of `instance`.
    pub fn from_settings(settings: &SettingsSpec, instance: &str) -> ProxyDriver {
        match &settings.proxy {
            Proxy::Nginx(n) => ProxyDriver::Nginx(Nginx {
                instance: instance.to_owned(),
                config_dir: n.config_dir.clone().into(),
                main_config: n.main_config.clone().into(),
                test: n.test.words(),
                reload: n.reload.words(),
                http_port: n.listen.http,
                https_port: n.listen.https,
            }),
            Proxy::Traefik(t) => ProxyDriver::Traefik(Traefik {
                instance: instance.to_owned(),
                dynamic_dir: t.dynamic_dir.clone().into(),
                web: t.entry_points.web.clone(),
                websecure: t.entry_points.websecure.clone(),
                cert_resolver: t.cert_resolver.clone(),
            }),
            Proxy::None => ProxyDriver::None,
        }
    }

    /// A route's file.
    pub fn render(&self, route: &Route) -> Result<String, ProxyError> {
        match self {
            ProxyDriver::Nginx(n) => n.render(route),
            ProxyDriver::Traefik(t) => t.render(route),
            ProxyDriver::None => Err(ProxyError::Render(format!(
                "Domain/{}: Settings has no proxy (kind: none)",
                route.domain
            ))),
        }
    }

    /// The file name of a domain.
    pub fn file_name(&self, domain: &str) -> String {
        match self {
            ProxyDriver::Traefik(_) => Traefik::file_name(domain),
            _ => Nginx::file_name(domain),
        }
    }

    /// The files named like berth's on disk, each classified for this instance.
    pub fn observe(&self) -> std::io::Result<BTreeMap<String, (FileState, String)>> {
        match self {
            // Both keep `berth-<domain>` files whose first line is a `#` header.
            ProxyDriver::Nginx(n) => {
                observe_dir(&n.config_dir, "#", &n.instance, "berth-", ".conf")
            }
            ProxyDriver::Traefik(t) => {
                observe_dir(&t.dynamic_dir, "#", &t.instance, "berth-", ".yml")
            }
            ProxyDriver::None => Ok(BTreeMap::new()),
        }
    }

    /// Writes and removes files; each domain's result.
    pub fn apply(
        &self,
        changes: &BTreeMap<String, Change>,
    ) -> BTreeMap<String, Result<(), ProxyError>> {
        match self {
            ProxyDriver::Nginx(n) => n.apply(changes),
            ProxyDriver::Traefik(t) => t.apply(changes),
            ProxyDriver::None => BTreeMap::new(),
        }
    }
}
