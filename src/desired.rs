//! The desired state: a revision's manifests with secrets resolved, normalized into
//! the container specs berth compares with what Docker holds.
//!
//! A [`ContainerSpec`] is what a container of an app should be, with secrets shown as
//! `<secret:name sha256:…>`: it is hashed for the `berth.spec-hash` label, stored in the
//! `berth.spec` label, and diffed for plans, so it never holds a secret's value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::databases::{self, DesiredDatabase, LinkValue};
use crate::drivers::proxy::ProxyDriver;
use crate::manifest::Manifests;
use crate::manifest::model::{
    AppSpec, DatabaseMode, DeletionPolicy, EnvValue, Protocol, UpdateStrategy,
};
use crate::observe::Observed;
use crate::routes::{self, Route};
use crate::state::secrets::{Secret, SecretError, SecretStore};

/// Everything a container of an app should be; secrets appear redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    /// The image.
    pub image: String,
    /// The command, when the image's is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Plain environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Variables from secrets, as `<secret:name sha256:…>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// The port the app listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Published ports as `hostIp:host:container/protocol`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Mounts as `source:target[:ro]` (source is a volume or a host path).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// The network joined.
    pub network: String,
    /// The health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// CPU limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Restart policy.
    pub restart: String,
    /// Extra labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Docker's `--init`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// Networks joined besides `network` (the managed databases' network).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
}

/// A health check in its normalized form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `http /path`, `tcp 80` or `cmd a b c`.
    pub probe: Probe,
    /// Milliseconds between checks.
    pub interval_ms: u64,
    /// Milliseconds a check may take.
    pub timeout_ms: u64,
    /// Failures before unhealthy.
    pub retries: u32,
    /// Milliseconds of grace after start.
    pub start_period_ms: u64,
}

/// How health is probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Probe {
    /// An HTTP GET on the app's port, from the host.
    Http {
        /// The path.
        path: String,
        /// The port.
        port: u16,
    },
    /// A TCP connection, from the host.
    Tcp {
        /// The port.
        port: u16,
    },
    /// A command in the container (Docker's HEALTHCHECK).
    Cmd {
        /// The command.
        cmd: Vec<String>,
    },
}

impl ContainerSpec {
    /// The canonical JSON: the `berth.spec` label and the input of the hash.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a spec serializes")
    }

    /// The SHA-256 of the canonical JSON, hex.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.to_json().as_bytes()))
    }

    /// A YAML rendering for people and diffs.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a spec serializes")
    }
}

/// A named volume an app mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVolume {
    /// The Docker volume's name: `<app>-<volume>`.
    pub docker_name: String,
    /// The volume's name in the manifest.
    pub volume: String,
    /// Whether removing it from the manifests deletes the data.
    pub deletion_policy: DeletionPolicy,
}

/// One app as berth will run it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredApp {
    /// The app's name.
    pub name: String,
    /// The container spec.
    pub spec: ContainerSpec,
    /// `spec.hash()`, computed once.
    pub hash: String,
    /// How many containers.
    pub replicas: u32,
    /// How updates replace containers.
    pub update: UpdateStrategy,
    /// Apps and databases it waits for.
    pub depends_on: Vec<String>,
    /// Its named volumes.
    pub volumes: Vec<DesiredVolume>,
    /// What happens to its volumes when it is removed.
    pub deletion_policy: DeletionPolicy,
    /// Variable name → secret, resolved, for injecting at apply time.
    pub secrets: BTreeMap<String, Secret>,
    /// The host port the proxy reaches it on, when the proxy runs on the host.
    pub host_port: Option<u16>,
    /// `app`, or `database` for a managed database's container (the `berth.kind` label).
    pub kind: &'static str,
}

impl DesiredApp {
    /// The name of replica `replica` (1-based): `<app>`, then `<app>-2`, `<app>-3`…
    pub fn container_name(&self, replica: u32) -> String {
        container_name(&self.name, replica)
    }
}

/// The name of an app's replica (1-based).
pub fn container_name(app: &str, replica: u32) -> String {
    if replica <= 1 {
        app.to_owned()
    } else {
        format!("{app}-{replica}")
    }
}

/// Everything berth should converge to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Desired {
    /// The shared network.
    pub network: String,
    /// Apps by name.
    pub apps: BTreeMap<String, DesiredApp>,
    /// Whether to remove managed objects that are no longer declared.
    pub prune: bool,
    /// The revision being applied.
    pub revision: String,
    /// Routes by domain.
    pub routes: BTreeMap<String, Route>,
    /// The proxy file of each domain, rendered.
    pub proxy_files: BTreeMap<String, String>,
    /// Databases by name (managed ones also have their container in `apps`).
    pub databases: BTreeMap<String, DesiredDatabase>,
    /// The internal network of managed databases, when there are any.
    pub db_network: Option<String>,
    /// The shared database servers berth can reach as administrator.
    pub servers: databases::Servers,
}

impl Desired {
    /// Every secret value in use, for scrubbing text that came from outside.
    pub fn secret_values(&self) -> Vec<Secret> {
        let databases = self.databases.values().flat_map(|d| {
            [
                d.password.clone(),
                d.url.clone(),
                d.server.as_ref().map(|s| s.admin_password.clone()),
            ]
            .into_iter()
            .flatten()
        });
        self.apps
            .values()
            .flat_map(|a| a.secrets.values().cloned())
            .chain(databases)
            .collect()
    }
}

/// A secret an app or a database names that the store does not have.
#[derive(Debug, thiserror::Error)]
#[error("{resource}: {}{source}", variable.as_ref().map(|v| format!("env {v}: ")).unwrap_or_default())]
pub struct MissingSecret {
    /// `App/web`, `Database/blog`.
    pub resource: String,
    /// The variable, for an app.
    pub variable: Option<String>,
    /// Why.
    #[source]
    pub source: SecretError,
}

/// Builds the desired state of a revision, resolving every secret it names; any
/// secret missing from the store is an error (nothing can be applied without it).
pub fn build(
    manifests: &Manifests,
    store: &SecretStore,
    revision: &str,
) -> Result<Desired, Vec<MissingSecret>> {
    match build_lenient(manifests, store, revision) {
        (desired, missing) if missing.is_empty() => Ok(desired),
        (_, missing) => Err(missing),
    }
}

/// Builds the desired state even when secrets are missing (a dry run on a laptop has
/// no secret store): each missing one shows as `<secret:name unavailable>`, and is
/// returned so the caller can say its changes cannot be seen.
pub fn build_lenient(
    manifests: &Manifests,
    store: &SecretStore,
    revision: &str,
) -> (Desired, Vec<MissingSecret>) {
    let settings = manifests.settings();
    let mut missing = Vec::new();
    let mut apps = BTreeMap::new();
    let servers = databases::servers(manifests, store);
    let (databases, db_missing) = databases::desired(manifests, store, &servers);
    missing.extend(db_missing.into_iter().map(|m| MissingSecret {
        resource: format!("Database/{}", m.database),
        variable: None,
        source: m.source,
    }));
    let managed: Vec<&DesiredDatabase> = databases
        .values()
        .filter(|d| d.mode == DatabaseMode::Managed)
        .collect();
    let db_network = (!managed.is_empty()).then(|| databases::network(&settings.network));
    for db in &managed {
        let spec = databases::managed_app_spec(db);
        let (secrets, shown) = resolve_secret_env(&db.name, &spec, store, &mut missing, true);
        let network = db_network.clone().unwrap_or_default();
        let mut app = desired_app(&db.name, &spec, &network, secrets, shown, Vec::new());
        app.kind = "database";
        apps.insert(db.name.clone(), app);
    }
    for (name, app) in &manifests.apps {
        let (mut secrets, mut shown) =
            resolve_secret_env(name, &app.spec, store, &mut missing, false);
        let mut spec = app.spec.clone();
        let mut networks = Vec::new();
        for link in &app.spec.databases {
            let Some(db) = databases.get(&link.name) else {
                continue;
            };
            let prefix = link.prefix.as_deref().unwrap_or("");
            for (variable, value) in databases::link_env(db, prefix) {
                match value {
                    LinkValue::Plain(v) => {
                        spec.env.insert(variable, EnvValue(v));
                    }
                    LinkValue::Secret(Some(secret)) => {
                        shown.insert(variable.clone(), secret.redacted());
                        secrets.insert(variable, secret);
                    }
                    LinkValue::Secret(None) => {
                        shown.insert(
                            variable,
                            format!(
                                "<secret:{} to be generated>",
                                databases::password_secret(&db.name)
                            ),
                        );
                    }
                }
            }
            if db.mode == DatabaseMode::Managed {
                // It waits for the database, on the database's network.
                if !spec.depends_on.contains(&db.name) {
                    spec.depends_on.push(db.name.clone());
                }
                if let Some(n) = &db_network {
                    if !networks.contains(n) {
                        networks.push(n.clone());
                    }
                }
            }
        }
        apps.insert(
            name.clone(),
            desired_app(name, &spec, &settings.network, secrets, shown, networks),
        );
    }
    let desired = Desired {
        network: settings.network.clone(),
        apps,
        prune: settings.prune,
        revision: revision.to_owned(),
        routes: BTreeMap::new(),
        proxy_files: BTreeMap::new(),
        databases,
        db_network,
        servers,
    };
    (desired, missing)
}

/// Resolves an app's `secretEnv`: values to inject, and how each is shown. Missing
/// secrets are recorded, except generated ones (a dry run before the first apply).
fn resolve_secret_env(
    name: &str,
    spec: &AppSpec,
    store: &SecretStore,
    missing: &mut Vec<MissingSecret>,
    generated: bool,
) -> (BTreeMap<String, Secret>, BTreeMap<String, String>) {
    let mut secrets = BTreeMap::new();
    let mut shown = BTreeMap::new();
    for (variable, secret) in &spec.secret_env {
        match store.get(secret) {
            Ok(s) => {
                shown.insert(variable.clone(), s.redacted());
                secrets.insert(variable.clone(), s);
            }
            Err(_) if generated => {
                shown.insert(
                    variable.clone(),
                    format!("<secret:{secret} to be generated>"),
                );
            }
            Err(source) => {
                shown.insert(variable.clone(), format!("<secret:{secret} unavailable>"));
                missing.push(MissingSecret {
                    resource: format!("App/{name}"),
                    variable: Some(variable.clone()),
                    source,
                });
            }
        }
    }
    (secrets, shown)
}

fn desired_app(
    name: &str,
    app: &AppSpec,
    network: &str,
    secrets: BTreeMap<String, Secret>,
    shown_secrets: BTreeMap<String, String>,
    networks: Vec<String>,
) -> DesiredApp {
    let volumes: Vec<DesiredVolume> = app
        .volumes
        .iter()
        .filter_map(|v| {
            v.name.as_ref().map(|volume| DesiredVolume {
                docker_name: format!("{name}-{volume}"),
                volume: volume.clone(),
                deletion_policy: app.deletion_policy,
            })
        })
        .collect();
    let mounts = app
        .volumes
        .iter()
        .map(|v| {
            let source = match (&v.name, &v.host_path) {
                (Some(volume), _) => format!("{name}-{volume}"),
                (None, Some(path)) => path.clone(),
                (None, None) => String::new(),
            };
            let ro = if v.read_only { ":ro" } else { "" };
            format!("{source}:{}{ro}", v.mount)
        })
        .collect();
    let ports = app
        .ports
        .iter()
        .map(|p| {
            let proto = match p.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            format!(
                "{}:{}:{}/{proto}",
                p.host_ip.as_deref().unwrap_or("0.0.0.0"),
                p.host.unwrap_or(p.container),
                p.container
            )
        })
        .collect();
    let health = app.health.as_ref().map(|h| {
        let probe = match (&h.http, h.tcp, &h.cmd) {
            (Some(path), _, _) => Probe::Http {
                path: path.clone(),
                port: app.port.unwrap_or(80),
            },
            (None, Some(port), _) => Probe::Tcp { port },
            (None, None, cmd) => Probe::Cmd {
                cmd: cmd.clone().unwrap_or_default(),
            },
        };
        HealthCheck {
            probe,
            interval_ms: h.interval.get().as_millis() as u64,
            timeout_ms: h.timeout.get().as_millis() as u64,
            retries: h.retries,
            start_period_ms: h.start_period.get().as_millis() as u64,
        }
    });
    let spec = ContainerSpec {
        image: app.image.clone(),
        command: app.command.clone(),
        env: app
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect(),
        secret_env: shown_secrets,
        port: app.port,
        ports,
        volumes: mounts,
        network: network.to_owned(),
        health,
        cpus: app.resources.as_ref().and_then(|r| r.cpus),
        memory: app
            .resources
            .as_ref()
            .and_then(|r| r.memory)
            .map(|m| m.bytes()),
        restart: serde_json::to_value(app.restart)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        labels: app.labels.clone(),
        user: app.user.clone(),
        init: app.init,
        networks,
    };
    let hash = spec.hash();
    DesiredApp {
        name: name.to_owned(),
        hash,
        spec,
        replicas: app.replicas,
        update: app.update,
        depends_on: app.depends_on.clone(),
        volumes,
        deletion_policy: app.deletion_policy,
        secrets,
        host_port: None,
        kind: "app",
    }
}

impl Desired {
    /// Adds the routes: allocates host ports to the apps the proxy reaches on the host
    /// (publishing them on 127.0.0.1, which changes their specs), resolves each Domain
    /// and renders its proxy file. `listening` holds the host's listening ports;
    /// `tokens` the private domains' tokens; `secret_file` where a secret-backed
    /// certificate is written.
    pub fn add_routes(
        &mut self,
        manifests: &Manifests,
        observed: &Observed,
        listening: &std::collections::BTreeSet<u16>,
        tokens: &BTreeMap<String, String>,
        secret_file: &dyn Fn(&str) -> String,
        proxy: &ProxyDriver,
    ) -> Result<(), String> {
        let settings = manifests.settings();
        let apps: std::collections::BTreeSet<String> = routes::host_port_apps(manifests)
            .into_iter()
            .filter(|a| self.apps.contains_key(a))
            .collect();
        // Ports held by the apps' own containers are theirs, not in use by others.
        let own: std::collections::BTreeSet<u16> = apps
            .iter()
            .filter_map(|a| observed.host_ports.get(a).copied())
            .collect();
        let used = observed
            .published_ports
            .iter()
            .chain(listening)
            .copied()
            .filter(|p| !own.contains(p))
            .collect();
        let current: BTreeMap<String, u16> = observed
            .host_ports
            .iter()
            .filter(|(a, _)| apps.contains(*a))
            .map(|(a, p)| (a.clone(), *p))
            .collect();
        let ports = crate::ports::allocate(&apps, &current, &used, settings.host_ports)?;
        for (name, host_port) in &ports {
            let Some(app) = self.apps.get_mut(name) else {
                continue;
            };
            let target = manifests
                .domains
                .values()
                .find(|d| d.spec.app == *name)
                .and_then(|d| d.spec.port)
                .or(app.spec.port)
                .unwrap_or(80);
            app.spec
                .ports
                .push(format!("127.0.0.1:{host_port}:{target}/tcp"));
            app.host_port = Some(*host_port);
            app.hash = app.spec.hash();
        }
        self.routes = routes::routes_for(manifests, &ports, tokens, secret_file)?;
        for (domain, route) in &self.routes {
            self.proxy_files
                .insert(domain.clone(), proxy.render(route)?);
        }
        Ok(())
    }
}
