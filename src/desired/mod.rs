//! The desired state: a revision's manifests, expanded (managed databases become
//! containers) and with their secrets read, normalized into the container specs berth
//! compares with what Docker holds. Nothing here looks at the host: what depends on it
//! (host ports, routes, files to write) is resolved by the planner.

pub mod labels;
pub mod routes;
pub mod secrets;
pub mod service;
pub mod spec;

use std::collections::BTreeMap;

use crate::desired::routes::Route;
use crate::expand::builds::DesiredBuild;
use crate::expand::databases::{self, DesiredDatabase, LinkValue};
use crate::manifest::model::{
    AppSpec, DatabaseMode, DeletionPolicy, Engine, EnvValue, Protocol, PublishMode, Runtime,
    UpdateStrategy,
};
use crate::manifest::{Manifests, docker_volume_name};
use crate::state::history::Pin;
use crate::state::secrets::{Secret, SecretError, SecretSource};
pub use labels::ObjectKind;
pub use routes::ProxyFile;
use secrets::PassSecrets;
pub use spec::{ContainerSpec, HealthCheck, Mount, MountSource, PortBinding, PortProtocol, Probe};

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
    /// The host port the proxy reaches it on (`127.0.0.1:<host>` to its port
    /// `container`), when the proxy runs on the host. Not part of its spec: a
    /// start-first update gives the new container a port of its own, and the proxy
    /// switches to it.
    pub host_port: Option<HostPort>,
    /// An app's, or a managed database's container (the `berth.kind` label).
    pub kind: ObjectKind,
}

impl DesiredApp {
    /// The name of replica `replica` (1-based): `<app>`, then `<app>-2`, `<app>-3`…
    pub fn container_name(&self, replica: u32) -> String {
        container_name(&self.name, replica)
    }
}

/// A host port the proxy reaches an app on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPort {
    /// The port on 127.0.0.1.
    pub host: u16,
    /// The app's port it forwards to.
    pub container: u16,
    /// The proxy can switch between two containers of the app (nginx, reloaded and
    /// asked by berth): an update starts the new container on a port of its own, and
    /// the old one is removed only once the proxy reaches the new one.
    pub switchable: bool,
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
    /// The proxy files, rendered, by the Domain each is named after (with nginx, one
    /// file serves the Domains that share hosts).
    pub proxy_files: BTreeMap<String, ProxyFile>,
    /// The proxy files as they are once the certificates this pass orders exist (the
    /// HTTPS server and the redirect switched on), for the files that change then.
    pub certified_files: BTreeMap<String, ProxyFile>,
    /// The certificates berth's ACME client keeps (nginx Domains with `tls: {acme:
    /// true}`), by Domain.
    pub certificates: BTreeMap<String, DesiredCertificate>,
    /// Berth's ACME client, when a Domain needs it.
    pub acme: Option<DesiredAcme>,
    /// Databases by name (managed ones also have their container in `apps`).
    pub databases: BTreeMap<String, DesiredDatabase>,
    /// The internal network of managed databases, when there are any.
    pub db_network: Option<String>,
    /// The shared database servers berth can reach as administrator.
    pub servers: databases::Servers,
    /// Secrets generated for this pass, written by apply before anything uses them
    /// (without a value in a dry run, which generates nothing).
    pub new_secrets: BTreeMap<String, Option<Secret>>,
    /// Files berth writes for the proxy, by path: certificates and keys kept as secrets.
    pub files: BTreeMap<String, DesiredFile>,
    /// The apps a rollback pinned, and what their pin does in this pass.
    pub holds: BTreeMap<String, Hold>,
    /// The images built for apps with `build`, by app.
    pub builds: BTreeMap<String, DesiredBuild>,
    /// Where apps run: containers, or Swarm services.
    pub runtime: Runtime,
}

impl Desired {
    /// The file serving `domain`: the Domain it is named after.
    pub fn file_of(&self, domain: &str) -> Option<&str> {
        self.proxy_files
            .iter()
            .find(|(_, f)| f.domains.iter().any(|d| d == domain))
            .map(|(key, _)| key.as_str())
    }
}

/// A certificate berth's ACME client keeps for a Domain, with what is known of the one
/// in place.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredCertificate {
    /// The Domain.
    pub domain: String,
    /// The hosts it must cover, sorted.
    pub hosts: Vec<String>,
    /// The file nginx reads (chain and key).
    pub file: String,
    /// The certificate in place, when one is readable.
    pub current: Option<crate::state::certs::CertificateInfo>,
    /// Why there is none usable, when there is none.
    pub missing: Option<String>,
    /// What berth remembers of it (renewal time, failures).
    pub record: Option<crate::state::certs::CertificateRecord>,
    /// The CA's suggested renewal window, when it offers one.
    pub window: Option<crate::state::certs::RenewalWindow>,
    /// The instance owning its folder, when that is another one.
    pub owner: Option<String>,
}

impl DesiredCertificate {
    /// Whether the certificate in place serves: it covers every host and has not
    /// expired at `now`.
    pub fn usable(&self, now: u64) -> bool {
        self.owner.is_none()
            && self.current.as_ref().is_some_and(|c| {
                c.not_after > now && self.hosts.iter().all(|h| c.hosts.contains(h))
            })
    }
}

/// Berth's ACME account for one pass.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredAcme {
    /// The CA's directory URL.
    pub directory: String,
    /// The contact address.
    pub email: Option<String>,
    /// Extra CA certificates trusted for the directory's HTTPS.
    pub ca_bundle: Option<String>,
    /// The account key (none in a dry run before the first apply).
    pub key: Option<Secret>,
}

/// What a rollback's pin does to an app in one pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    /// The declared spec is still the one the app was pinned against: `apps` holds the
    /// pinned spec in its place.
    Held {
        /// The pin.
        pin: Box<Pin>,
        /// Made by this pass (`berth rollback`): the plan writes it.
        new: bool,
    },
    /// The pin ends in this pass: the declared spec is planned again.
    Released(Release),
}

/// Why a pin ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// A revision changed the app's declared spec.
    DeclaredChanged,
    /// `berth rollback --release`.
    Asked,
}

/// A file berth writes from a secret (mode 0600).
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredFile {
    /// The secret whose value the file holds.
    pub secret: Secret,
}

impl DesiredFile {
    /// The SHA-256 of the content, hex: compared with the file on disk.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(self.secret.expose().as_bytes()))
    }
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
            .chain(self.new_secrets.values().flatten().cloned())
            .chain(self.files.values().map(|f| f.secret.clone()))
            .chain(
                self.builds
                    .values()
                    .flat_map(|b| b.secrets.values().cloned()),
            )
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
    store: &dyn SecretSource,
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
    store: &dyn SecretSource,
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
        let mut app = desired_app(
            &db.name,
            &spec,
            &network,
            secrets,
            shown,
            Vec::new(),
            settings.runtime,
        );
        app.kind = ObjectKind::Database;
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
            desired_app(
                name,
                &spec,
                &settings.network,
                secrets,
                shown,
                networks,
                settings.runtime,
            ),
        );
    }
    let desired = Desired {
        network: settings.network.clone(),
        apps,
        prune: settings.prune,
        revision: revision.to_owned(),
        routes: BTreeMap::new(),
        proxy_files: BTreeMap::new(),
        certified_files: BTreeMap::new(),
        certificates: BTreeMap::new(),
        acme: None,
        databases,
        db_network,
        servers,
        new_secrets: BTreeMap::new(),
        files: BTreeMap::new(),
        holds: BTreeMap::new(),
        builds: BTreeMap::new(),
        runtime: settings.runtime,
    };
    (desired, missing)
}

/// Points each built app at its image, the tag built from its context, with the
/// build's options in its spec (so a plan's diff shows them), and keeps the builds for
/// the plan and apply.
/// The secrets a build mounts are read from `store`; those missing are returned.
pub fn use_builds(
    desired: &mut Desired,
    mut builds: BTreeMap<String, DesiredBuild>,
    store: &dyn SecretSource,
) -> Vec<MissingSecret> {
    let mut missing = Vec::new();
    for (name, build) in builds.iter_mut() {
        for (id, secret) in &build.options.secret_args {
            match store.get(secret) {
                Ok(s) => {
                    build.secrets.insert(id.clone(), s);
                }
                Err(source) => missing.push(MissingSecret {
                    resource: format!("App/{name} (build secret {id})"),
                    variable: None,
                    source,
                }),
            }
        }
        if let Some(app) = desired.apps.get_mut(name) {
            app.spec.image = build.tag.clone();
            app.spec.build = Some(build.options.clone());
            app.hash = app.spec.hash();
        }
    }
    desired.builds = builds;
    missing
}

/// Resolves an app's `secretEnv`: values to inject, and how each is shown. Missing
/// secrets are recorded, except generated ones (a dry run before the first apply).
fn resolve_secret_env(
    name: &str,
    spec: &AppSpec,
    store: &dyn SecretSource,
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
    runtime: Runtime,
) -> DesiredApp {
    let swarm = runtime == Runtime::Swarm;
    let volumes: Vec<DesiredVolume> = app
        .volumes
        .iter()
        .filter_map(|v| {
            v.name.as_ref().map(|volume| DesiredVolume {
                docker_name: docker_volume_name(name, volume),
                volume: volume.clone(),
                deletion_policy: app.deletion_policy,
            })
        })
        .collect();
    let mounts = app
        .volumes
        .iter()
        .map(|v| Mount {
            source: match (&v.name, &v.host_path) {
                (Some(volume), _) => MountSource::Volume(docker_volume_name(name, volume)),
                (None, Some(path)) => MountSource::HostPath(path.clone()),
                // Validation requires one of the two.
                (None, None) => MountSource::HostPath(String::new()),
            },
            target: v.mount.clone(),
            read_only: v.read_only,
        })
        .collect();
    let ports = app
        .ports
        .iter()
        .map(|p| PortBinding {
            host_ip: p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".to_owned()),
            host: p.host.unwrap_or(p.container),
            container: p.container,
            protocol: match p.protocol {
                Protocol::Tcp => PortProtocol::Tcp,
                Protocol::Udp => PortProtocol::Udp,
            },
            mode: swarm.then(|| p.mode.unwrap_or(PublishMode::Ingress)),
        })
        .collect::<Vec<PortBinding>>();
    let service =
        swarm.then(|| service::ServiceSpec::of(app, ports.iter().any(PortBinding::binds_node)));
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
        build: None,
        service,
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
        kind: ObjectKind::App,
    }
}

/// Generates (in the pass's memory) the passwords every managed and shared database
/// needs and the store lacks; the plan names each, apply writes them.
pub fn generate_passwords(manifests: &Manifests, store: &PassSecrets) -> Result<(), SecretError> {
    for (name, db) in &manifests.databases {
        if db.spec.mode == DatabaseMode::External {
            continue;
        }
        store.generated(&databases::password_secret(name))?;
        if db.spec.mode == DatabaseMode::Managed
            && matches!(
                db.spec.engine,
                Engine::Mysql | Engine::Mariadb | Engine::Mongo
            )
        {
            store.generated(&databases::root_password_secret(name))?;
        }
    }
    Ok(())
}
