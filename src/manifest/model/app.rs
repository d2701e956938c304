//! App: a containerised application, its environment, ports, volumes, health and limits.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use super::DeletionPolicy;
use crate::manifest::units::{Duration, Size};

/// A containerised application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppSpec {
    /// The image to run, such as `ghost:5.2` or `registry.example.com/team/api@sha256:…`.
    /// Give `image` or `build`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Build the image from a folder of the state repository instead of naming one.
    /// Give `image` or `build`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<super::Build>,
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
    /// How many containers (under `runtime: swarm`, tasks) run. Default: 1.
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

    // Swarm: refused by validation under `runtime: docker`.
    /// Which nodes Swarm may run the app's tasks on (`runtime: swarm` only). Default:
    /// any node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// How other services reach the app by name (`runtime: swarm` only): `vip` (one
    /// virtual address that Swarm balances over the tasks) or `dnsrr` (the name resolves
    /// to every task's own address; for kernels without IPVS, and ports published in
    /// `host` mode only). Default: `vip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_mode: Option<EndpointMode>,
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
    /// How Swarm publishes it (`runtime: swarm` only): `ingress` (every node answers on
    /// the port and Swarm forwards to a task) or `host` (only nodes running a task
    /// answer, one task per node, so updates stop the old task first). Default:
    /// `ingress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PublishMode>,
}

/// How Swarm publishes a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PublishMode {
    /// Swarm's routing mesh: every node answers and forwards to a task.
    Ingress,
    /// Bound on the nodes running a task only.
    Host,
}

/// How other services reach a Swarm service by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EndpointMode {
    /// One virtual address, balanced over the tasks by Swarm (IPVS).
    Vip,
    /// The name resolves to each task's address (DNS round robin).
    Dnsrr,
}

/// Which nodes Swarm may run a service's tasks on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placement {
    /// Conditions every node running a task must meet, in Docker's syntax:
    /// `node.labels.zone==eu`, `node.role!=manager`, `node.hostname==web-1`. Default:
    /// none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// Spread the tasks evenly over the values of a node label, in order of
    /// preference: `[{spread: node.labels.zone}]`. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<Preference>,
    /// At most this many of the app's tasks on one node. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas_per_node: Option<u32>,
}

/// A placement preference: spread the tasks over the values of a node label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Preference {
    /// A node label, such as `node.labels.zone`.
    pub spread: String,
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
    /// What a node must have free to run one task (`runtime: swarm` only: Swarm places
    /// tasks only where these fit). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservations: Option<Reservations>,
}

/// CPU and memory a Swarm node must have free for one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reservations {
    /// CPUs, such as `0.25`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 1024.0))]
    pub cpus: Option<f64>,
    /// Memory, such as `256Mi`. Default: none.
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
