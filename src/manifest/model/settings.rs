//! Settings: the host-wide document (proxy, network, ports, runtime, shared servers).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::manifest::units::Duration;

/// Host-wide settings. At most one per repository; every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsSpec {
    /// The reverse proxy berth writes routes for. Default: nginx with its defaults.
    #[serde(default)]
    pub proxy: Proxy,
    /// The Docker network shared by apps and the proxy (under `runtime: swarm`, an
    /// attachable overlay network); not Docker's own `host`, `bridge` or `none`.
    /// Default: `berth`.
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
    /// Where apps run: `docker` (containers on the daemon berth talks to) or `swarm`
    /// (services of the Swarm whose manager berth talks to; Swarm schedules them).
    /// Default: `docker`.
    #[serde(default)]
    pub runtime: Runtime,
    /// Shared database servers managed outside berth, by name. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub servers: BTreeMap<String, Server>,
    /// How workflows run. Default: their defaults.
    #[serde(default)]
    pub workflows: WorkflowSettings,
    /// The ACME certificate authority berth orders certificates from for nginx Domains
    /// with `tls: {acme: true}`. Default: Let's Encrypt's production directory, no
    /// contact email.
    #[serde(default)]
    pub acme: AcmeSettings,
}

/// Let's Encrypt's production directory: the default ACME directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// The ACME certificate authority berth's own client (nginx) orders certificates from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcmeSettings {
    /// The directory URL (`https://`). Default: Let's Encrypt production,
    /// `https://acme-v02.api.letsencrypt.org/directory`; its staging directory is
    /// `https://acme-staging-v02.api.letsencrypt.org/directory`.
    #[serde(default = "default_acme_directory")]
    pub directory: String,
    /// The contact address the CA writes to about expiring certificates and policy
    /// changes. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// A PEM file of CA certificates trusted for the directory's HTTPS, besides the
    /// system's (a private or test CA). Default: the system's CA bundle only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
}

impl Default for AcmeSettings {
    fn default() -> Self {
        AcmeSettings {
            directory: default_acme_directory(),
            email: None,
            ca_bundle: None,
        }
    }
}

fn default_acme_directory() -> String {
    LETS_ENCRYPT.to_owned()
}

/// How workflows run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkflowSettings {
    /// Let `http` actions reach loopback, private, link-local and unique-local
    /// addresses (the host's own services, the Docker daemon's port, a cloud's metadata
    /// address). Default: false (only public addresses).
    #[serde(default)]
    pub allow_private_targets: bool,
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
    /// Docker Swarm services, scheduled by Swarm over its nodes.
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
