//! The Traefik driver: one dynamic file per domain (`berth-<domain>.yml`) in the file
//! provider's directory, written atomically; Traefik reloads it by itself. Only the
//! common subset of the file provider's schema is written, so every file validates
//! against the published schema.
//!
//! A write goes through a temporary file `.berth-<domain>.yml.tmp-<pid>-<n>` in the
//! same directory, unique to the process and the write, whose name Traefik ignores
//! (it loads `*.yml`, `*.yaml` and `*.toml` only); leftovers of a killed write are
//! removed by a later pass once they are old.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Map, Value, json};

use crate::desired::routes::{self, Route, RouteTls, Upstream};
use crate::drivers::batch::{Change, ProxyError};
use crate::state::atomic;

const COMMENT: &str = "#";

/// Where Traefik reads its dynamic configuration and what it calls things.
#[derive(Debug, Clone)]
pub struct Traefik {
    /// The berth instance whose files these are (named in each file's header).
    pub instance: String,
    /// The file provider's directory.
    pub dynamic_dir: PathBuf,
    /// The plain HTTP entry point.
    pub web: String,
    /// The HTTPS entry point.
    pub websecure: String,
    /// The certificate resolver for ACME domains.
    pub cert_resolver: Option<String>,
}

impl Traefik {
    /// The file of a domain.
    pub fn file_name(domain: &str) -> String {
        format!("berth-{domain}.yml")
    }

    /// The dynamic configuration of a route, as JSON (what the schema checks).
    pub fn config(&self, route: &Route) -> Result<Value, String> {
        route.check()?;
        let id = format!("berth-{}", route.domain);
        let hosts: Vec<String> = route.hosts.iter().map(|h| format!("Host(`{h}`)")).collect();
        let mut rule = if hosts.len() == 1 {
            hosts[0].clone()
        } else {
            format!("({})", hosts.join(" || "))
        };
        let prefix = route.public_path();
        if prefix != "/" {
            rule = format!("{rule} && PathPrefix(`{prefix}`)");
        }
        let mut middlewares = Map::new();
        let mut chain: Vec<String> = Vec::new();
        if let Some(token) = &route.private_token {
            let name = format!("{id}-private");
            middlewares.insert(
                name.clone(),
                json!({"stripPrefix": {"prefixes": [format!("/p/{token}")]}}),
            );
            chain.push(name);
        }
        if !route.headers.is_empty() {
            let name = format!("{id}-headers");
            middlewares.insert(
                name.clone(),
                json!({"headers": {"customResponseHeaders": route.headers}}),
            );
            chain.push(name);
        }
        if let Some(max) = route.max_body {
            let name = format!("{id}-body");
            middlewares.insert(
                name.clone(),
                json!({"buffering": {"maxRequestBodyBytes": max}}),
            );
            chain.push(name);
        }
        let url = match &route.upstream {
            Upstream::HostPort { port } => format!("http://127.0.0.1:{port}"),
            Upstream::Container { host, port } => format!("http://{host}:{port}"),
        };
        let mut routers = Map::new();
        let mut config = json!({});
        let tls_on = !matches!(route.tls, RouteTls::Off);
        if tls_on {
            let tls = match (&route.tls, &self.cert_resolver) {
                (RouteTls::Acme, Some(resolver)) => json!({"certResolver": resolver}),
                _ => json!({}),
            };
            routers.insert(
                id.clone(),
                json!({"entryPoints": [self.websecure], "rule": rule, "service": id, "middlewares": chain, "tls": tls}),
            );
        }
        if tls_on && route.redirect_https {
            let name = format!("{id}-redirect");
            middlewares.insert(
                name.clone(),
                json!({"redirectScheme": {"scheme": "https", "permanent": true}}),
            );
            routers.insert(
                format!("{id}-http"),
                json!({"entryPoints": [self.web], "rule": rule, "service": id, "middlewares": [name]}),
            );
        } else {
            routers.insert(
                format!("{id}-http"),
                json!({"entryPoints": [self.web], "rule": rule, "service": id, "middlewares": chain}),
            );
        }
        let mut http = json!({
            "routers": routers,
            "services": {id.clone(): {"loadBalancer": {"servers": [{"url": url}]}}},
        });
        if !middlewares.is_empty() {
            http["middlewares"] = Value::Object(middlewares);
        }
        config["http"] = http;
        if let RouteTls::Files { certificate, key } = &route.tls {
            config["tls"] = json!({"certificates": [{"certFile": certificate, "keyFile": key}]});
        }
        // Empty middleware lists are noise.
        if let Some(rs) = config["http"]["routers"].as_object_mut() {
            for r in rs.values_mut() {
                if r["middlewares"].as_array().is_some_and(Vec::is_empty) {
                    r.as_object_mut().map(|o| o.remove("middlewares"));
                }
            }
        }
        Ok(config)
    }

    /// Renders a route as a Traefik dynamic file (header line included).
    pub fn render(&self, route: &Route) -> Result<String, ProxyError> {
        let config = self.config(route).map_err(ProxyError::Render)?;
        let body = serde_yaml::to_string(&config).map_err(|e| ProxyError::Render(e.to_string()))?;
        Ok(routes::with_header(
            COMMENT,
            &route.domain,
            &self.instance,
            &body,
        ))
    }

    /// Writes or removes each domain's file.
    pub fn apply(
        &self,
        changes: &BTreeMap<String, Change>,
    ) -> BTreeMap<String, Result<(), ProxyError>> {
        if !changes.is_empty() {
            // A live write takes milliseconds: ten minutes old is a killed one's.
            atomic::remove_stale_temporaries(
                &self.dynamic_dir,
                "berth-",
                std::time::Duration::from_secs(600),
            );
        }
        changes
            .iter()
            .map(|(domain, change)| {
                let path = self.dynamic_dir.join(Self::file_name(domain));
                let result = match change {
                    Change::Write(content) => atomic::write_atomic(&path, content.as_bytes()),
                    Change::Remove => match std::fs::remove_file(&path) {
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                        other => other,
                    },
                };
                (
                    domain.clone(),
                    result.map_err(|e| {
                        ProxyError::Change(format!("failed to write {}: {e}", path.display()))
                    }),
                )
            })
            .collect()
    }
}
