//! The manifest model: one Rust type per kind, the source of the JSON Schemas.
//!
//! Field names are camelCase in YAML; unknown fields are errors everywhere. Each
//! field's documentation says its default, and ends up in the generated schema.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use super::units::{Cron, Duration, Size};

/// The only apiVersion this berth reads.
pub const API_VERSION: &str = "berth/v1";

/// The kinds of document berth reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    /// Host-wide settings.
    Settings,
    /// A containerised application.
    App,
    /// Reverse-proxy routes to an app.
    Domain,
    /// A database, managed, shared or external.
    Database,
    /// A chat or webhook destination for events.
    Notifier,
    /// A graph of actions run by the controller.
    Workflow,
}

impl Kind {
    /// Every kind, in the order they are listed in help and schemas.
    pub const ALL: [Kind; 6] = [
        Kind::Settings,
        Kind::App,
        Kind::Domain,
        Kind::Database,
        Kind::Notifier,
        Kind::Workflow,
    ];

    /// The name written in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Settings => "Settings",
            Kind::App => "App",
            Kind::Domain => "Domain",
            Kind::Database => "Database",
            Kind::Notifier => "Notifier",
            Kind::Workflow => "Workflow",
        }
    }

    /// Parses the value of `kind:`.
    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A berth document: `apiVersion`, `kind`, `metadata` and the kind's `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Document<S> {
    /// Always `berth/v1`.
    pub api_version: String,
    /// The kind of resource.
    pub kind: String,
    /// The resource's name and labels.
    pub metadata: Metadata,
    /// What the resource should be.
    pub spec: S,
}

/// Name and labels of a resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// The resource's name: a DNS label (lowercase letters, digits and `-`, at most 63
    /// characters, starting and ending with a letter or digit). Unique per kind.
    #[schemars(pattern(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// Free-form labels, for people and tools. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// What a resource does when its manifest is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DeletionPolicy {
    /// Keep the data (volumes, databases). The default.
    #[default]
    Retain,
    /// Delete the data too.
    Delete,
}

// ---------------------------------------------------------------------------------
// Settings

/// Host-wide settings. At most one per repository; every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsSpec {
    /// The reverse proxy berth writes routes for. Default: nginx with its defaults.
    #[serde(default)]
    pub proxy: Proxy,
    /// The Docker network shared by apps and the proxy. Default: `berth`.
    #[serde(default = "default_network")]
    #[schemars(pattern(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$"))]
    pub network: String,
    /// The range host ports are allocated from when the proxy reaches apps through
    /// `127.0.0.1:<port>`. Default: 8000 to 8999.
    #[serde(default)]
    pub host_ports: PortRange,
    /// How often everything is compared again even when nothing triggered. Default: `5m`.
    #[serde(default = "default_resync")]
    pub resync: Duration,
    /// Remove managed containers and networks that are no longer declared (data volumes
    /// are kept unless their resource says `deletionPolicy: delete`). Default: true.
    #[serde(default = "yes")]
    pub prune: bool,
    /// Apply new revisions as they arrive; false computes and reports the plan and
    /// waits for `berth apply`. Default: true.
    #[serde(default = "yes")]
    pub auto_apply: bool,
    /// Where apps run: `docker` (containers on this host) or `swarm` (services).
    /// Default: `docker`.
    #[serde(default)]
    pub runtime: Runtime,
    /// Shared database servers managed outside berth, by name. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub servers: BTreeMap<String, Server>,
}

impl Default for SettingsSpec {
    /// The settings of a repository without a Settings document.
    fn default() -> Self {
        // Built from an empty spec so that the defaults are those of deserialization.
        serde_json::from_value(serde_json::json!({})).expect("every field has a default")
    }
}

fn default_network() -> String {
    "berth".to_owned()
}

fn default_resync() -> Duration {
    Duration::from_secs(300)
}

fn yes() -> bool {
    true
}

/// Where apps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Runtime {
    /// Containers on this Docker host.
    #[default]
    Docker,
    /// Docker Swarm services.
    Swarm,
}

/// A range of TCP ports, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortRange {
    /// The first port. Default: 8000.
    #[schemars(range(min = 1, max = 65535))]
    pub from: u16,
    /// The last port. Default: 8999.
    #[schemars(range(min = 1, max = 65535))]
    pub to: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            from: 8000,
            to: 8999,
        }
    }
}

/// The reverse proxy, chosen by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Proxy {
    /// nginx reading one `berth-<domain>.conf` per domain from `configDir`.
    Nginx(NginxProxy),
    /// Traefik reading one dynamic file per domain from `dynamicDir` (file provider).
    Traefik(TraefikProxy),
    /// No proxy: domains are refused, apps are reached through their published ports.
    None,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy::Nginx(NginxProxy::default())
    }
}

/// How the proxy reaches apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Upstream {
    /// The proxy runs on the host: apps publish a port from `hostPorts` on 127.0.0.1.
    HostPort,
    /// The proxy runs in a container on `network`: apps are reached by container name.
    Network,
}

/// nginx settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NginxProxy {
    /// The directory nginx includes `*.conf` from. Default: `/etc/nginx/conf.d`.
    #[serde(default = "default_nginx_dir")]
    pub config_dir: String,
    /// The main configuration file, the one that includes `configDir`: changes are
    /// checked against a copy of it. Default: `/etc/nginx/nginx.conf`.
    #[serde(default = "default_nginx_main")]
    pub main_config: String,
    /// The command that checks a configuration (the file to check is appended after
    /// `-c`). Default: `nginx -t`.
    #[serde(default = "default_nginx_test")]
    pub test: CommandLine,
    /// The command that makes nginx load its configuration. Default: `nginx -s reload`.
    #[serde(default = "default_nginx_reload")]
    pub reload: CommandLine,
    /// The ports server blocks listen on. Default: http 80, https 443.
    #[serde(default)]
    pub listen: Listen,
    /// How nginx reaches apps. Default: `hostPort` (nginx runs on the host).
    #[serde(default = "default_host_port")]
    pub upstream: Upstream,
}

impl Default for NginxProxy {
    fn default() -> Self {
        NginxProxy {
            config_dir: default_nginx_dir(),
            main_config: default_nginx_main(),
            test: default_nginx_test(),
            reload: default_nginx_reload(),
            listen: Listen::default(),
            upstream: Upstream::HostPort,
        }
    }
}

fn default_nginx_dir() -> String {
    "/etc/nginx/conf.d".to_owned()
}

fn default_nginx_main() -> String {
    "/etc/nginx/nginx.conf".to_owned()
}

fn default_nginx_test() -> CommandLine {
    CommandLine::from_words(&["nginx", "-t"])
}

fn default_nginx_reload() -> CommandLine {
    CommandLine::from_words(&["nginx", "-s", "reload"])
}

fn default_host_port() -> Upstream {
    Upstream::HostPort
}

/// The ports nginx listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listen {
    /// Plain HTTP. Default: 80.
    #[serde(default = "default_http")]
    #[schemars(range(min = 1, max = 65535))]
    pub http: u16,
    /// HTTPS. Default: 443.
    #[serde(default = "default_https")]
    #[schemars(range(min = 1, max = 65535))]
    pub https: u16,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            http: 80,
            https: 443,
        }
    }
}

fn default_http() -> u16 {
    80
}

fn default_https() -> u16 {
    443
}

/// Traefik settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraefikProxy {
    /// The directory Traefik's file provider watches. Default: `/etc/traefik/dynamic`.
    #[serde(default = "default_traefik_dir")]
    pub dynamic_dir: String,
    /// The names of Traefik's entry points. Default: `web` and `websecure`.
    #[serde(default)]
    pub entry_points: EntryPoints,
    /// The certificate resolver used for `tls: {acme: true}`. Default: none (ACME
    /// domains are then refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_resolver: Option<String>,
    /// How Traefik reaches apps. Default: `network` (Traefik runs in a container).
    #[serde(default = "default_network_upstream")]
    pub upstream: Upstream,
}

impl Default for TraefikProxy {
    fn default() -> Self {
        TraefikProxy {
            dynamic_dir: default_traefik_dir(),
            entry_points: EntryPoints::default(),
            cert_resolver: None,
            upstream: Upstream::Network,
        }
    }
}

fn default_traefik_dir() -> String {
    "/etc/traefik/dynamic".to_owned()
}

fn default_network_upstream() -> Upstream {
    Upstream::Network
}

/// Traefik entry point names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntryPoints {
    /// The plain HTTP entry point. Default: `web`.
    #[serde(default = "default_web")]
    pub web: String,
    /// The HTTPS entry point. Default: `websecure`.
    #[serde(default = "default_websecure")]
    pub websecure: String,
}

impl Default for EntryPoints {
    fn default() -> Self {
        EntryPoints {
            web: default_web(),
            websecure: default_websecure(),
        }
    }
}

fn default_web() -> String {
    "web".to_owned()
}

fn default_websecure() -> String {
    "websecure".to_owned()
}

/// A command run without a shell: a list of words, or one string split at spaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum CommandLine {
    /// `nginx -s reload`
    Line(String),
    /// `[nginx, -s, reload]`
    Words(Vec<String>),
}

impl CommandLine {
    fn from_words(words: &[&str]) -> CommandLine {
        CommandLine::Words(words.iter().map(|w| (*w).to_owned()).collect())
    }

    /// The program and its arguments.
    pub fn words(&self) -> Vec<String> {
        match self {
            CommandLine::Line(line) => line.split_whitespace().map(str::to_owned).collect(),
            CommandLine::Words(words) => words.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for CommandLine {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Line(String),
            Words(Vec<String>),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Line(l)) => Ok(CommandLine::Line(l)),
            Ok(Raw::Words(w)) => Ok(CommandLine::Words(w)),
            Err(_) => Err(serde::de::Error::custom(
                "expected a command: a string or a list of strings",
            )),
        }
    }
}

/// A database server berth creates databases on but does not run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// `postgres`, `mysql` or `mariadb`.
    pub engine: ServerEngine,
    /// Host name or IP address the server listens on.
    pub host: String,
    /// TCP port. Default: 5432 for postgres, 3306 for mysql and mariadb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// The administrative user berth connects as.
    pub admin_user: String,
    /// The secret holding the administrative user's password.
    pub admin_password_secret: String,
}

/// Engines of shared servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ServerEngine {
    /// PostgreSQL.
    Postgres,
    /// MySQL.
    Mysql,
    /// MariaDB.
    Mariadb,
}

// ---------------------------------------------------------------------------------
// App

/// A containerised application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppSpec {
    /// The image to run, such as `ghost:5.2` or `registry.example.com/team/api@sha256:…`.
    pub image: String,
    /// Replaces the image's command (exec form, no shell). Default: the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Environment variables. Numbers and booleans are written as text. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    /// Environment variables whose values come from the secret store, by secret name;
    /// never from Git. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// The port the app listens on, where the proxy sends traffic. Default: none (the
    /// app cannot be the target of a Domain that names no port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Ports published on the host, for traffic that does not go through the proxy.
    /// Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PublishedPort>,
    /// How many containers run. Default: 1.
    #[serde(default = "one")]
    #[schemars(range(max = 100))]
    pub replicas: u32,
    /// Volumes mounted into the container. Named volumes survive updates and prunes.
    /// Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    /// Databases linked into the app: their credentials are injected as environment
    /// variables. A name, or `{name, prefix}`. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DatabaseLink>,
    /// How berth decides the app is healthy. Default: the image's own HEALTHCHECK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// CPU and memory limits. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// How a new version replaces the old. Default: `start-first`.
    #[serde(default)]
    pub update: UpdateStrategy,
    /// Docker's restart policy. Default: `unless-stopped`.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Apps and databases that must be ready before this app starts. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Extra Docker labels on the container (keys under `berth.` are reserved).
    /// Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The user the process runs as (`uid`, `uid:gid` or a name). Default: the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Run a small init process (Docker's `--init`) as PID 1: it forwards signals, so
    /// a process that ignores SIGTERM as PID 1 still stops at once, and reaps zombies.
    /// Default: `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// What happens to the app's named volumes when the manifest is removed.
    /// Default: `retain`.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn one() -> u32 {
    1
}

/// An environment value: text, or a number or boolean written as text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[schemars(
    with = "EnvValueSchema",
    description = "Text; numbers and booleans are turned into text."
)]
#[serde(transparent)]
pub struct EnvValue(pub String);

/// The schema of [`EnvValue`].
#[derive(JsonSchema)]
#[schemars(untagged)]
#[allow(dead_code)]
enum EnvValueSchema {
    Text(String),
    Number(f64),
    Boolean(bool),
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(EnvValue(s)),
            serde_json::Value::Number(n) => Ok(EnvValue(n.to_string())),
            serde_json::Value::Bool(b) => Ok(EnvValue(b.to_string())),
            _ => Err(serde::de::Error::custom(
                "expected text, a number or a boolean",
            )),
        }
    }
}

/// A port published on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishedPort {
    /// The port inside the container.
    #[schemars(range(min = 1, max = 65535))]
    pub container: u16,
    /// The port on the host. Default: the container port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub host: Option<u16>,
    /// The host address to bind. Default: `0.0.0.0` (every address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// `tcp` or `udp`. Default: `tcp`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// A volume mounted into an app: a named volume (`name`) or a host directory (`hostPath`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeMount {
    /// A named volume managed by berth (a DNS label); the Docker volume is
    /// `<app>-<name>`. Give either `name` or `hostPath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An absolute directory on the host (a bind mount). Give either `name` or `hostPath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// The absolute path inside the container.
    pub mount: String,
    /// Mount read-only. Default: false.
    #[serde(default)]
    pub read_only: bool,
}

/// A database linked into an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[schemars(
    with = "DatabaseLinkSchema",
    description = "A Database name, or `{name, prefix}`."
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatabaseLink {
    /// The Database resource.
    pub name: String,
    /// Prefix of the injected variables (`prefix: ANALYTICS_` gives `ANALYTICS_DB_HOST`,
    /// `ANALYTICS_DATABASE_URL`). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// The schema of [`DatabaseLink`]: a name, or a name and a prefix.
#[derive(JsonSchema)]
#[schemars(untagged)]
#[allow(dead_code)]
enum DatabaseLinkSchema {
    Name(String),
    Full {
        /// The Database resource.
        name: String,
        /// Prefix of the injected variables (`ANALYTICS_` gives `ANALYTICS_DB_HOST`).
        #[serde(default)]
        prefix: Option<String>,
    },
}

impl<'de> Deserialize<'de> for DatabaseLink {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Full {
            name: String,
            #[serde(default)]
            prefix: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Full(Full),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Name(name)) => Ok(DatabaseLink { name, prefix: None }),
            Ok(Raw::Full(f)) => Ok(DatabaseLink {
                name: f.name,
                prefix: f.prefix,
            }),
            Err(_) => Err(serde::de::Error::custom(
                "expected a database name or {name, prefix}",
            )),
        }
    }
}

/// A health check: exactly one of `http`, `tcp` or `cmd`, and its timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Health {
    /// An HTTP path answered with a 2xx or 3xx status on the app's `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// A TCP port that accepts connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub tcp: Option<u16>,
    /// A command run in the container that exits 0 when healthy (exec form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Time between checks. Default: `10s`.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// Time one check may take. Default: `3s`.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Failed checks in a row before the app is unhealthy. Default: 3.
    #[serde(default = "default_retries")]
    #[schemars(range(min = 1, max = 100))]
    pub retries: u32,
    /// Grace time after start during which failures do not count. Default: `0s`.
    #[serde(default = "default_start_period")]
    pub start_period: Duration,
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_retries() -> u32 {
    3
}

fn default_start_period() -> Duration {
    Duration::from_secs(0)
}

/// CPU and memory limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// CPUs the app may use, such as `0.5`. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 1024.0))]
    pub cpus: Option<f64>,
    /// Memory the app may use, such as `512Mi`. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Size>,
}

/// How a new version of an app replaces the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateStrategy {
    /// Start the new container, wait until it is healthy, then remove the old one.
    #[default]
    StartFirst,
    /// Stop the old container, then start the new one.
    StopFirst,
}

/// Docker's restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart unless stopped by hand.
    #[default]
    UnlessStopped,
    /// Always restart.
    Always,
    /// Restart when the process exits with an error.
    OnFailure,
    /// Never restart.
    No,
}

// ---------------------------------------------------------------------------------
// Domain

/// Reverse-proxy routes from host names to an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DomainSpec {
    /// Host names served; the first is the main one, the others (`www.`) are aliases.
    /// International names are converted to punycode.
    #[schemars(length(min = 1, max = 100))]
    pub hosts: Vec<String>,
    /// The App that serves the requests.
    pub app: String,
    /// The app's port to send traffic to. Default: the app's `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// The path prefix routed to the app. Default: `/`.
    #[serde(default = "default_path")]
    pub path: String,
    /// TLS: `off`, `{acme: true}`, `{certificate, key}` (files on the host) or
    /// `{certificateSecret, keySecret}`. Default: `off`.
    #[serde(default)]
    pub tls: Tls,
    /// Redirect plain HTTP to HTTPS. Default: true when TLS is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_https: Option<bool>,
    /// Serve the app only under a generated `/p/<token>/` path. Default: false.
    #[serde(default)]
    pub private: bool,
    /// Extra response headers. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The largest request body accepted, such as `20Mi`. Default: the proxy's (1Mi for
    /// nginx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<Size>,
}

fn default_path() -> String {
    "/".to_owned()
}

/// TLS of a domain.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Tls {
    /// Plain HTTP only.
    #[default]
    #[schemars(with = "TlsOff")]
    Off,
    /// A certificate obtained with ACME (HTTP-01).
    Acme {
        /// Must be true.
        acme: bool,
    },
    /// Certificate and key files on the host.
    #[serde(rename_all = "camelCase")]
    Files {
        /// Path of the PEM certificate chain.
        certificate: String,
        /// Path of the PEM private key.
        key: String,
    },
    /// Certificate and key from the secret store.
    #[serde(rename_all = "camelCase")]
    Secrets {
        /// The secret holding the PEM certificate chain.
        certificate_secret: String,
        /// The secret holding the PEM private key.
        key_secret: String,
    },
}

/// The schema of `tls: off`.
#[derive(JsonSchema)]
#[allow(dead_code)]
enum TlsOff {
    #[serde(rename = "off")]
    Off,
}

impl Tls {
    /// Whether HTTPS is served.
    pub fn is_on(&self) -> bool {
        !matches!(self, Tls::Off | Tls::Acme { acme: false })
    }
}

impl<'de> Deserialize<'de> for Tls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Acme {
            acme: bool,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Files {
            certificate: String,
            key: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Secrets {
            certificate_secret: String,
            key_secret: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Flag(bool),
            Acme(Acme),
            Files(Files),
            Secrets(Secrets),
        }
        let expected = "expected `off`, {acme: true}, {certificate, key} or \
                        {certificateSecret, keySecret}";
        match Raw::deserialize(d).map_err(|_| serde::de::Error::custom(expected))? {
            Raw::Word(w) if w == "off" => Ok(Tls::Off),
            Raw::Flag(false) => Ok(Tls::Off),
            Raw::Word(_) | Raw::Flag(true) => Err(serde::de::Error::custom(expected)),
            Raw::Acme(a) => Ok(Tls::Acme { acme: a.acme }),
            Raw::Files(f) => Ok(Tls::Files {
                certificate: f.certificate,
                key: f.key,
            }),
            Raw::Secrets(s) => Ok(Tls::Secrets {
                certificate_secret: s.certificate_secret,
                key_secret: s.key_secret,
            }),
        }
    }
}

// ---------------------------------------------------------------------------------
// Database

/// A database: a container berth runs (`managed`), a database on a shared server
/// (`shared`), or a URL from a secret (`external`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatabaseSpec {
    /// `postgres`, `mysql`, `mariadb`, `redis` or `mongo`.
    pub engine: Engine,
    /// The engine's version, the official image's tag for `managed`. Default: postgres
    /// 16, mysql 8, mariadb 11, redis 7, mongo 7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `managed`, `shared` or `external`. Default: `managed`.
    #[serde(default)]
    pub mode: DatabaseMode,
    /// For `shared`: the server in Settings `servers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// For `external`: the secret holding the connection URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret: Option<String>,
    /// The database's name on the server. Default: the resource name with `-` as `_`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_name: Option<String>,
    /// The user that owns it. Default: the database name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Scheduled dumps (`managed` and `shared` only). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Backup>,
    /// What removing the manifest does to the data: `retain` keeps it, `delete` drops
    /// it. Default: `retain`.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Database engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Engine {
    /// PostgreSQL.
    Postgres,
    /// MySQL.
    Mysql,
    /// MariaDB.
    Mariadb,
    /// Redis.
    Redis,
    /// MongoDB.
    Mongo,
}

impl Engine {
    /// The name written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
            Engine::Mariadb => "mariadb",
            Engine::Redis => "redis",
            Engine::Mongo => "mongo",
        }
    }
}

/// How a database is provided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DatabaseMode {
    /// A container from the engine's official image, with a named volume.
    #[default]
    Managed,
    /// A database and user of its own on a server in Settings `servers`.
    Shared,
    /// A database berth does not run: the URL comes from a secret.
    External,
}

/// Scheduled backups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backup {
    /// When to dump, in cron syntax (host local time), such as `0 3 * * *`.
    pub schedule: Cron,
    /// How many dumps to keep. Default: 7.
    #[serde(default = "default_keep")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep: u32,
}

fn default_keep() -> u32 {
    7
}

// ---------------------------------------------------------------------------------
// Notifier

/// A destination for events: a Discord or Slack channel, or any HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotifierSpec {
    /// `discord`, `slack` or `webhook`.
    #[serde(rename = "type")]
    pub kind: NotifierType,
    /// The secret holding the webhook URL (URLs carry tokens, so they are not in Git).
    pub url_secret: String,
    /// The events sent. Default: all of them.
    #[serde(default = "all_events")]
    pub events: Vec<EventKind>,
    /// A failure that lasts is repeated at most this often. Default: `1h`.
    #[serde(default = "default_repeat")]
    pub repeat_after: Duration,
    /// For `webhook`: the secret the body is signed with (`X-Berth-Signature-256`).
    /// Default: no signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

fn all_events() -> Vec<EventKind> {
    EventKind::ALL.to_vec()
}

fn default_repeat() -> Duration {
    Duration::from_secs(3600)
}

/// Notifier formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NotifierType {
    /// A Discord execute-webhook URL.
    Discord,
    /// A Slack incoming-webhook URL.
    Slack,
    /// Any URL receiving berth's JSON.
    Webhook,
}

/// Events berth reports.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum EventKind {
    /// A new revision was applied.
    Deployed,
    /// A revision could not be applied (first failure, then at most every `repeatAfter`).
    SyncFailed,
    /// Applying works again after a failure.
    SyncRecovered,
    /// A resource stopped being healthy.
    Degraded,
    /// A degraded resource is healthy again.
    Recovered,
    /// Something changed by hand was put back.
    DriftCorrected,
    /// A plan waits for `berth apply` (`autoApply: false`).
    PlanPending,
    /// A workflow run succeeded.
    WorkflowSucceeded,
    /// A workflow run failed.
    WorkflowFailed,
    /// A backup failed.
    BackupFailed,
}

impl EventKind {
    /// Every event.
    pub const ALL: [EventKind; 10] = [
        EventKind::Deployed,
        EventKind::SyncFailed,
        EventKind::SyncRecovered,
        EventKind::Degraded,
        EventKind::Recovered,
        EventKind::DriftCorrected,
        EventKind::PlanPending,
        EventKind::WorkflowSucceeded,
        EventKind::WorkflowFailed,
        EventKind::BackupFailed,
    ];
}

// ---------------------------------------------------------------------------------
// Workflow

/// A graph of nodes run by the controller when one of its triggers fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkflowSpec {
    /// What starts a run. A workflow can always be run by hand.
    #[schemars(length(min = 1))]
    pub triggers: Vec<Trigger>,
    /// The nodes; each runs once the nodes it `needs` have finished.
    #[schemars(length(min = 1, max = 200))]
    pub nodes: Vec<Node>,
    /// The longest a run may take before it is stopped and failed. Default: `30m`.
    #[serde(default = "default_workflow_timeout")]
    pub timeout: Duration,
}

fn default_workflow_timeout() -> Duration {
    Duration::from_secs(1800)
}

/// What starts a workflow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "on", rename_all = "camelCase", deny_unknown_fields)]
pub enum Trigger {
    /// A new revision has been applied.
    RevisionApplied,
    /// An app has been deployed (created or updated) successfully.
    AppDeployed {
        /// The App.
        app: String,
    },
    /// Deploying an app failed or it became unhealthy.
    AppFailed {
        /// The App.
        app: String,
    },
    /// A schedule, in cron syntax (host local time).
    Schedule {
        /// Such as `0 4 * * *`.
        cron: Cron,
    },
    /// Only `berth workflow run NAME`.
    Manual,
}

/// One step of a workflow: exactly one of `action`, `condition`, `notify`, `rollback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    /// The node's name, unique in the workflow (a DNS label).
    #[schemars(pattern(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// Nodes that must finish first. Default: none (the node starts at once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// Do something: deploy, restart, exec, backup or an HTTP request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Branch on earlier nodes' outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    /// Send a message through a Notifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// Put an app back to the spec it had before its last deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// The longest this node may take. Default: `5m`.
    #[serde(default = "default_node_timeout")]
    pub timeout: Duration,
}

fn default_node_timeout() -> Duration {
    Duration::from_secs(300)
}

/// What an action node does (exactly one key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Action {
    /// Converge one app to its declared spec now.
    Deploy {
        /// The App.
        app: String,
    },
    /// Restart an app's containers.
    Restart {
        /// The App.
        app: String,
    },
    /// Run a command in an app's container; its exit code decides the outcome and its
    /// output is kept (bounded).
    Exec {
        /// The App.
        app: String,
        /// The command, exec form.
        #[schemars(length(min = 1))]
        command: Vec<String>,
    },
    /// Dump a database now.
    Backup {
        /// The Database.
        database: String,
    },
    /// Send an HTTP request; the node fails unless the status is the expected one.
    #[serde(rename_all = "camelCase")]
    Http {
        /// An `http://` or `https://` URL.
        url: String,
        /// The method. Default: `GET`.
        #[serde(default = "default_method")]
        method: String,
        /// Request headers. Default: none.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        /// The request body. Default: none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        /// The status that counts as success. Default: any 2xx.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 100, max = 599))]
        expect_status: Option<u16>,
    },
}

fn default_method() -> String {
    "GET".to_owned()
}

/// A branch: `if` is evaluated over earlier nodes; the nodes in `then` run when it is
/// true, those in `else` when it is false (the others are skipped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// An expression such as `smoke.succeeded && smoke.output.status == 200`: node
    /// references (`<node>.succeeded`, `.failed`, `.skipped`, `.outcome`,
    /// `.output.<key>`), literals, `== != < <= > >=`, `&& || !` and parentheses.
    #[serde(rename = "if")]
    pub expr: String,
    /// Nodes run when the expression is true. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<String>,
    /// Nodes run when it is false. Default: none.
    #[serde(default, rename = "else", skip_serializing_if = "Vec::is_empty")]
    pub otherwise: Vec<String>,
}

/// A message sent through a Notifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Notify {
    /// The Notifier.
    pub notifier: String,
    /// The message; `{{workflow}}`, `{{revision}}`, `{{trigger}}` and
    /// `{{<node>.outcome}}` / `{{<node>.output.<key>}}` are replaced.
    pub message: String,
}

/// Puts an app back to its previous spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rollback {
    /// The App.
    pub app: String,
}
