//! The proxy in use, from the settings: nginx, Traefik or none.

use std::collections::BTreeMap;

use crate::desired::routes::{self, FileState, ProxyFile, Route};
use crate::drivers::batch::{Batch, Change, ProxyError};
use crate::drivers::nginx::{Nginx, observe_dir};
use crate::drivers::traefik::Traefik;
use crate::manifest::model::{Proxy, SettingsSpec};

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

    /// The files of every route, keyed by the Domain each is named after: one per
    /// Domain with Traefik; with nginx one per site, the Domains that share hosts (a
    /// host is served by one server block). A route that cannot be rendered fails with
    /// its Domain.
    pub fn render_files(
        &self,
        routes: &BTreeMap<String, Route>,
    ) -> Result<BTreeMap<String, ProxyFile>, (String, ProxyError)> {
        let mut out = BTreeMap::new();
        for site in routes::sites(routes) {
            let first = site[0].domain.clone();
            let content = match self {
                ProxyDriver::Nginx(n) => n.render_site(&site),
                ProxyDriver::Traefik(t) => {
                    // Traefik routes each host and path on its own: a file per Domain.
                    for route in site {
                        let content = t.render(route).map_err(|e| (route.domain.clone(), e))?;
                        out.insert(
                            route.domain.clone(),
                            ProxyFile {
                                content,
                                domains: vec![route.domain.clone()],
                            },
                        );
                    }
                    continue;
                }
                ProxyDriver::None => Err(ProxyError::Render(format!(
                    "Domain/{first}: Settings has no proxy (kind: none)"
                ))),
            }
            .map_err(|e| (first.clone(), e))?;
            out.insert(
                first,
                ProxyFile {
                    content,
                    domains: site.iter().map(|r| r.domain.clone()).collect(),
                },
            );
        }
        Ok(out)
    }

    /// Whether berth checks that the proxy took a new configuration (nginx, reloaded by
    /// berth). Traefik reads its files on its own, when it notices them.
    pub fn verifies_reloads(&self) -> bool {
        matches!(self, ProxyDriver::Nginx(_))
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

    /// Writes and removes files (keyed by the Domain each is named after) and makes
    /// the proxy load them; `reload` also when no file changed (a renewed certificate).
    pub fn apply(&self, changes: &BTreeMap<String, Change>, reload: bool) -> Batch {
        match self {
            ProxyDriver::Nginx(n) => n.apply(changes, reload),
            ProxyDriver::Traefik(t) => Batch {
                files: t.apply(changes),
                ..Batch::default()
            },
            ProxyDriver::None => Batch::default(),
        }
    }
}
