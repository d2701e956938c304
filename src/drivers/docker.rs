//! The Docker driver: the [`DockerApi`] trait berth uses, and its bollard implementation
//! (the only file that imports bollard).

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, EndpointSettings, HealthConfig,
    HealthStatusEnum, HostConfig, Mount, MountType, NetworkCreateRequest, NetworkingConfig,
    PortBinding, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, ListNetworksOptions, ListVolumesOptions,
    RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::{Stream, StreamExt};

/// A failure talking to the Docker daemon.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The daemon could not be reached at all.
    #[error(
        "cannot reach the Docker daemon ({detail}); is it running, and may this user use \
         its socket? Set DOCKER_HOST to use another daemon, or pass --offline to plan \
         against an empty host"
    )]
    Unreachable {
        /// What the client said.
        detail: String,
    },
    /// One call failed.
    #[error("failed to {op} {target}: {message}")]
    Call {
        /// What berth was doing ("create container").
        op: &'static str,
        /// On what ("blog").
        target: String,
        /// The daemon's answer.
        message: String,
        /// The HTTP status, when the daemon answered.
        status: Option<u16>,
    },
}

impl DockerError {
    /// Whether the daemon said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            DockerError::Call {
                status: Some(404),
                ..
            }
        )
    }

    /// Whether the daemon said the name is already in use.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            DockerError::Call {
                status: Some(409),
                ..
            }
        )
    }
}

/// A container as listed (no inspect needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Its id.
    pub id: String,
    /// Its name, without the leading `/`.
    pub name: String,
    /// Its image as the daemon reports it.
    pub image: String,
    /// `running`, `exited`, `created`…
    pub state: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The host ports it publishes.
    pub published: Vec<u16>,
}

/// A network as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// `local` (a bridge of one daemon) or `swarm` (an overlay every node shares).
    pub scope: String,
}

/// A volume as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// What a running container looks like from inside: state, health, address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerState {
    /// Whether the process runs.
    pub running: bool,
    /// Whether it exited and Docker is restarting it.
    pub restarting: bool,
    /// How often Docker has restarted it.
    pub restart_count: i64,
    /// When the current process started.
    pub started_at: String,
    /// Docker's health status (`starting`, `healthy`, `unhealthy`) when it has a check.
    pub health: Option<String>,
    /// The exit code when stopped.
    pub exit_code: Option<i64>,
    /// The container's address on each network.
    pub addresses: BTreeMap<String, String>,
}

/// A port published on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// The container port.
    pub container: u16,
    /// The host port.
    pub host: u16,
    /// The host address, empty for all.
    pub host_ip: String,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// A mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// A volume name, or a host path for binds.
    pub source: String,
    /// The path in the container.
    pub target: String,
    /// Whether `source` is a host path.
    pub bind: bool,
    /// Read-only.
    pub read_only: bool,
}

/// A Docker health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    /// The command, exec form.
    pub cmd: Vec<String>,
    /// Nanoseconds between checks.
    pub interval_ns: i64,
    /// Nanoseconds a check may take.
    pub timeout_ns: i64,
    /// Failures before unhealthy.
    pub retries: i64,
    /// Grace period in nanoseconds.
    pub start_period_ns: i64,
}

/// Everything needed to create a container.
#[derive(Clone, PartialEq, Default)]
pub struct ContainerConfig {
    /// The container's name.
    pub name: String,
    /// The image.
    pub image: String,
    /// The command, when the image's is replaced.
    pub command: Option<Vec<String>>,
    /// `KEY=value` pairs, secrets resolved.
    pub env: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The network to join.
    pub network: String,
    /// Names other containers on the network reach it by.
    pub aliases: Vec<String>,
    /// Mounts.
    pub mounts: Vec<MountSpec>,
    /// Published ports.
    pub ports: Vec<PortSpec>,
    /// Docker's health check, when berth sets one.
    pub health: Option<HealthSpec>,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// `unless-stopped`, `always`, `on-failure`, `no`.
    pub restart: String,
    /// The user.
    pub user: Option<String>,
    /// Docker's `--init`.
    pub init: bool,
    /// Networks joined besides `network`.
    pub networks: Vec<String>,
}

impl std::fmt::Debug for ContainerConfig {
    // The environment holds resolved secrets: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerConfig")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("env", &format!("<{} variables>", self.env.len()))
            .finish_non_exhaustive()
    }
}

/// Progress of an image pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    /// What the daemon says it is doing.
    pub status: String,
    /// Bytes done in the current layer.
    pub current: u64,
    /// Bytes in the current layer.
    pub total: u64,
}

/// An image to build from a context.
#[derive(Clone, PartialEq, Eq)]
pub struct BuildRequest {
    /// The tag the image gets.
    pub tag: String,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    /// The stage to build, when not the last.
    pub target: Option<String>,
    /// Build arguments.
    pub args: BTreeMap<String, String>,
    /// Labels the image gets.
    pub labels: BTreeMap<String, String>,
    /// The context: a tar archive.
    pub context: Vec<u8>,
    /// Secrets the Dockerfile mounts (`RUN --mount=type=secret,id=ID`), by id. With
    /// any, the build goes through BuildKit, which asks berth for them.
    pub secrets: BTreeMap<String, crate::state::secrets::Secret>,
}

impl std::fmt::Debug for BuildRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildRequest")
            .field("tag", &self.tag)
            .field("dockerfile", &self.dockerfile)
            .field("context", &format!("<{} bytes>", self.context.len()))
            .finish_non_exhaustive()
    }
}

/// A daemon event about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// `die`, `destroy`, `oom`, `start`…
    pub action: String,
    /// The container's id.
    pub id: String,
    /// The container's labels.
    pub labels: BTreeMap<String, String>,
}

/// A stream of container events.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<ContainerEvent, DockerError>> + Send>>;

/// What berth needs from a Docker daemon.
#[async_trait]
pub trait DockerApi: Send + Sync {
    /// Checks the daemon answers.
    async fn ping(&self) -> Result<(), DockerError>;
    /// Every container, in any state.
    async fn list_containers(&self) -> Result<Vec<ContainerInfo>, DockerError>;
    /// Every network.
    async fn list_networks(&self) -> Result<Vec<NetworkInfo>, DockerError>;
    /// Every volume.
    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>, DockerError>;
    /// Creates a bridge network.
    async fn create_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        internal: bool,
    ) -> Result<(), DockerError>;
    /// Removes a network.
    async fn remove_network(&self, name: &str) -> Result<(), DockerError>;
    /// Creates a named volume.
    async fn create_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DockerError>;
    /// Removes a volume.
    async fn remove_volume(&self, name: &str) -> Result<(), DockerError>;
    /// Whether the image is present locally.
    async fn image_exists(&self, image: &str) -> Result<bool, DockerError>;
    /// Pulls an image, reporting progress.
    async fn pull_image(
        &self,
        image: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<(), DockerError>;
    /// Creates a container; returns its id.
    async fn create_container(&self, config: &ContainerConfig) -> Result<String, DockerError>;
    /// Starts a container.
    async fn start_container(&self, id: &str) -> Result<(), DockerError>;
    /// Stops a container, killing it after `timeout_secs`.
    async fn stop_container(&self, id: &str, timeout_secs: i32) -> Result<(), DockerError>;
    /// Removes a container, running or not.
    async fn remove_container(&self, id: &str) -> Result<(), DockerError>;
    /// Renames a container.
    async fn rename_container(&self, id: &str, name: &str) -> Result<(), DockerError>;
    /// A container's state, health and addresses.
    async fn container_state(&self, id: &str) -> Result<ContainerState, DockerError>;
    /// Container events for objects with `label` (such as `berth.managed=true`).
    fn container_events(&self, label: &str) -> EventStream;
    /// Runs `cmd` in the running container `container`, feeding it the file `stdin`
    /// and writing its standard output to the file `stdout` (atomically: a temporary
    /// file renamed when the command succeeded). Returns the bytes written. A non-zero
    /// exit is an error carrying the end of its standard error.
    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        stdin: Option<&std::path::Path>,
        stdout: Option<&std::path::Path>,
    ) -> Result<u64, DockerError>;
    /// Runs `cmd` in the running container `container`, handing each chunk it prints
    /// (standard output and error, as they come) to `out`; returns its exit code. When
    /// the returned future is dropped before the end, the command is killed (through its
    /// process id on this host).
    async fn exec_output(
        &self,
        container: &str,
        cmd: &[String],
        out: &(dyn for<'b> Fn(&'b [u8]) + Send + Sync),
    ) -> Result<i64, DockerError>;
    /// Restarts a container, giving it `timeout_secs` to stop.
    async fn restart_container(&self, id: &str, timeout_secs: i32) -> Result<(), DockerError>;
    /// Builds an image, handing each piece of the build's output to `output` as it
    /// comes. A failed step is an error carrying the daemon's message. When the
    /// returned future is dropped before the end, the connection closes and the
    /// daemon cancels the build.
    async fn build_image(
        &self,
        request: BuildRequest,
        output: &(dyn for<'b> Fn(&'b str) + Send + Sync),
    ) -> Result<(), DockerError> {
        let _ = output;
        Err(DockerError::Call {
            op: "build image",
            target: request.tag,
            message: "this driver does not build images".into(),
            status: None,
        })
    }
    /// The daemon's Swarm calls, when it has them (a fake may not).
    fn swarm(&self) -> Option<&dyn SwarmApi> {
        None
    }
    /// Whether the daemon runs on this machine, so that its containers' addresses are
    /// reachable from here (a remote daemon's are not: health is then checked inside
    /// the containers).
    fn is_local(&self) -> bool {
        true
    }
}

/// Where the daemon stands in a swarm.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SwarmNode {
    /// The node's id (empty outside a swarm).
    pub node_id: String,
    /// `inactive`, `pending`, `active`, `error` or `locked`.
    pub state: String,
    /// Whether it is a manager that can take Swarm calls.
    pub manager: bool,
}

/// Where a service's rolling update stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateState {
    /// `updating`, `paused`, `completed`, `rollback_started`, `rollback_paused` or
    /// `rollback_completed`.
    pub state: String,
    /// Swarm's words about it.
    pub message: String,
}

/// A service as listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceInfo {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its version, which an update must name.
    pub version: u64,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The replicas it asks for (`None`: not a replicated service).
    pub replicas: Option<u64>,
    /// The image of its tasks, as the spec holds it (a digest may be appended).
    pub image: String,
    /// The environment of its tasks.
    pub env: Vec<String>,
    /// The secrets its tasks get, by name.
    pub secrets: Vec<String>,
    /// Tasks running, as Swarm counts them.
    pub running: u64,
    /// Tasks desired, as Swarm counts them.
    pub desired: u64,
    /// Its last rolling update, when it had one.
    pub update: Option<UpdateState>,
    /// The ports it publishes.
    pub published: Vec<u16>,
}

/// A task as listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskInfo {
    /// Its id.
    pub id: String,
    /// Its service's id.
    pub service_id: String,
    /// Its slot (replica number).
    pub slot: u64,
    /// The node it is assigned to.
    pub node_id: String,
    /// `new`, `pending`, `assigned`, `preparing`, `starting`, `running`, `complete`,
    /// `failed`, `shutdown`, `rejected`, `orphaned`, `remove`…
    pub state: String,
    /// What Swarm wants of it: `running`, `shutdown`…
    pub desired_state: String,
    /// Swarm's message.
    pub message: String,
    /// Why it failed, when it did.
    pub error: String,
    /// Its container, once it has one.
    pub container_id: String,
    /// The container labels of its spec.
    pub labels: BTreeMap<String, String>,
    /// When its state last changed (RFC 3339).
    pub timestamp: String,
}

/// A node as listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// Its id.
    pub id: String,
    /// Its host name.
    pub hostname: String,
    /// `ready`, `down`, `disconnected` or `unknown`.
    pub state: String,
    /// `active`, `pause` or `drain`.
    pub availability: String,
    /// `manager` or `worker`.
    pub role: String,
    /// Its labels (`node.labels.*` in constraints).
    pub labels: BTreeMap<String, String>,
}

/// A Swarm secret as listed (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// A secret a service's tasks get as a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// The secret's id.
    pub id: String,
    /// The secret's name.
    pub name: String,
    /// The file's name under `/run/secrets/`.
    pub file: String,
}

/// A port a service publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The port in the task's container.
    pub target: u16,
    /// The port on the nodes.
    pub published: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Through the routing mesh (`ingress`) or on the task's node only (`host`).
    pub ingress: bool,
}

/// Everything needed to create or update a service.
#[derive(Clone, PartialEq, Default)]
pub struct ServiceConfig {
    /// Its name.
    pub name: String,
    /// The service's labels.
    pub labels: BTreeMap<String, String>,
    /// The labels of its tasks' containers.
    pub container_labels: BTreeMap<String, String>,
    /// The image.
    pub image: String,
    /// Replaces the image's entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's command.
    pub args: Option<Vec<String>>,
    /// `KEY=value` pairs (no secret: those come as files).
    pub env: Vec<String>,
    /// Mounts; named volumes get `volume_labels` on whatever node creates them.
    pub mounts: Vec<MountSpec>,
    /// Labels of the named volumes the tasks create.
    pub volume_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Secrets given to the tasks as files.
    pub secrets: Vec<SecretRef>,
    /// The health check.
    pub health: Option<HealthSpec>,
    /// The user.
    pub user: Option<String>,
    /// Docker's `--init`.
    pub init: bool,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// CPUs a node must have free, in billionths.
    pub reserve_nano_cpus: Option<i64>,
    /// Memory a node must have free, in bytes.
    pub reserve_memory: Option<i64>,
    /// `any`, `on-failure` or `none`.
    pub restart: String,
    /// The overlay networks its tasks join.
    pub networks: Vec<String>,
    /// How many tasks.
    pub replicas: u64,
    /// Placement constraints.
    pub constraints: Vec<String>,
    /// Node labels the tasks spread over.
    pub spread: Vec<String>,
    /// At most this many tasks on one node (0: no limit).
    pub max_replicas_per_node: u64,
    /// `vip` or `dnsrr`.
    pub endpoint_mode: String,
    /// Published ports.
    pub ports: Vec<ServicePort>,
    /// Whether updates and rollbacks start the new task before stopping the old one.
    pub start_first: bool,
    /// How long Swarm watches an updated task for a failure before going on.
    pub monitor_ns: i64,
}

impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

/// An image's own entrypoint and command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageCommand {
    /// The entrypoint.
    pub entrypoint: Vec<String>,
    /// The command.
    pub cmd: Vec<String>,
}

/// What berth needs from a Swarm manager. Listing calls take a label filter
/// (`berth.instance=default`) where Swarm supports one.
#[async_trait]
pub trait SwarmApi: Send + Sync {
    /// Where the daemon stands in its swarm.
    async fn swarm_node(&self) -> Result<SwarmNode, DockerError>;
    /// Every service, with its task counts.
    async fn list_services(&self) -> Result<Vec<ServiceInfo>, DockerError>;
    /// One service, by id or name.
    async fn inspect_service(&self, id: &str) -> Result<ServiceInfo, DockerError>;
    /// The tasks of the services whose labels match `label`.
    async fn list_tasks(&self, label: &str) -> Result<Vec<TaskInfo>, DockerError>;
    /// Every node.
    async fn list_nodes(&self) -> Result<Vec<NodeInfo>, DockerError>;
    /// The secrets whose labels match `label`.
    async fn list_secrets(&self, label: &str) -> Result<Vec<SecretInfo>, DockerError>;
    /// Creates a secret; returns its id.
    async fn create_secret(
        &self,
        name: &str,
        value: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, DockerError>;
    /// Removes a secret.
    async fn remove_secret(&self, id: &str) -> Result<(), DockerError>;
    /// Creates a service; returns its id.
    async fn create_service(&self, config: &ServiceConfig) -> Result<String, DockerError>;
    /// Replaces the spec of service `id`, at `version`: Swarm rolls the tasks over as
    /// its update config says.
    async fn update_service(
        &self,
        id: &str,
        version: u64,
        config: &ServiceConfig,
    ) -> Result<(), DockerError>;
    /// Removes a service; Swarm stops its tasks.
    async fn remove_service(&self, id: &str) -> Result<(), DockerError>;
    /// Replaces every task of service `id` with a new one of the same spec (`docker
    /// service update --force`), one after the other as its update config says.
    async fn restart_service(&self, id: &str) -> Result<(), DockerError>;
    /// Creates an attachable overlay network.
    async fn create_overlay_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        internal: bool,
    ) -> Result<(), DockerError>;
    /// The image's entrypoint and command, when the daemon holds the image.
    async fn image_command(&self, image: &str) -> Result<Option<ImageCommand>, DockerError>;
    /// Events about services and nodes (a service updated or removed by hand, a node
    /// that went down).
    fn cluster_events(&self) -> EventStream;
}

/// The real daemon, through bollard.
pub struct BollardDocker {
    client: Docker,
    /// Whether the daemon is on this machine (see [`Endpoint::is_local`]).
    local: bool,
}

fn call_error(op: &'static str, target: &str, e: bollard::errors::Error) -> DockerError {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError {
            status_code,
            message,
        } => DockerError::Call {
            op,
            target: target.to_owned(),
            message,
            status: Some(status_code),
        },
        E::HyperResponseError { .. } | E::IOError { .. } | E::RequestTimeoutError => {
            DockerError::Unreachable {
                detail: e.to_string(),
            }
        }
        other => DockerError::Call {
            op,
            target: target.to_owned(),
            message: other.to_string(),
            status: None,
        },
    }
}

fn labels_of(map: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    map.unwrap_or_default().into_iter().collect()
}

impl BollardDocker {
    /// Connects to the daemon named by `DOCKER_HOST` (`unix://…`, or `tcp://host:port`
    /// with TLS when `DOCKER_TLS_VERIFY` is set, the certificates `ca.pem`, `cert.pem`
    /// and `key.pem` taken from `DOCKER_CERT_PATH`, or `~/.docker`), or the local socket,
    /// and agrees on an API version both speak.
    pub async fn connect() -> Result<BollardDocker, DockerError> {
        let endpoint = Endpoint::from_env(|k| std::env::var(k).ok())?;
        let unreachable = |e: bollard::errors::Error| DockerError::Unreachable {
            detail: format!("{}: {e}", endpoint.host),
        };
        let client = match &endpoint.tls {
            None => Docker::connect_with_host(&endpoint.host).map_err(unreachable)?,
            Some(dir) => Docker::connect_with_ssl(
                &endpoint.host,
                &dir.join("key.pem"),
                &dir.join("cert.pem"),
                &dir.join("ca.pem"),
                120,
                bollard::API_DEFAULT_VERSION,
            )
            .map_err(unreachable)?,
        };
        let client = client
            .negotiate_version()
            .await
            .map_err(|e| DockerError::Unreachable {
                detail: e.to_string(),
            })?;
        Ok(BollardDocker {
            client,
            local: endpoint.is_local(),
        })
    }
}

/// Where the daemon is, as the environment says (the Docker CLI's variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `unix:///var/run/docker.sock`, `tcp://host:2376`…
    pub host: String,
    /// The folder of the TLS certificates, when the connection verifies the daemon.
    pub tls: Option<std::path::PathBuf>,
}

impl Endpoint {
    /// Reads `DOCKER_HOST`, `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` through `var`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Endpoint, DockerError> {
        let set = |k: &str| var(k).filter(|v| !v.is_empty());
        let host = set("DOCKER_HOST").unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        let refuse = |detail: String| Err(DockerError::Unreachable { detail });
        let tcp = host.starts_with("tcp://") || host.starts_with("https://");
        if !tcp && !host.starts_with("unix://") && !host.starts_with("http://") {
            return refuse(format!(
                "DOCKER_HOST={host}: berth reaches a daemon through `unix://` or `tcp://` (with \
                 DOCKER_TLS_VERIFY for TLS); for `ssh://`, forward the daemon's socket (`ssh -nNL \
                 /tmp/docker.sock:/var/run/docker.sock HOST`) and use `unix:///tmp/docker.sock`"
            ));
        }
        let verify = set("DOCKER_TLS_VERIFY").is_some_and(|v| v != "0" && v != "false");
        if !verify || !tcp {
            if host.starts_with("https://") {
                return refuse(format!(
                    "DOCKER_HOST={host}: TLS needs DOCKER_TLS_VERIFY=1 and the certificates in \
                     DOCKER_CERT_PATH"
                ));
            }
            return Ok(Endpoint { host, tls: None });
        }
        let dir = match set("DOCKER_CERT_PATH") {
            Some(d) => std::path::PathBuf::from(d),
            None => match set("HOME") {
                Some(home) => std::path::Path::new(&home).join(".docker"),
                None => {
                    return refuse(
                        "DOCKER_TLS_VERIFY is set, but neither DOCKER_CERT_PATH nor HOME says \
                         where the certificates are"
                            .into(),
                    );
                }
            },
        };
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            let path = dir.join(file);
            if let Err(e) = std::fs::File::open(&path) {
                return refuse(format!(
                    "DOCKER_TLS_VERIFY is set, but {} cannot be read ({e}): DOCKER_CERT_PATH must \
                     hold ca.pem (the daemon's CA), cert.pem and key.pem (berth's client \
                     certificate)",
                    path.display()
                ));
            }
        }
        Ok(Endpoint {
            host,
            tls: Some(dir),
        })
    }

    /// Whether the daemon runs on this machine (a unix socket): its container
    /// addresses and process ids are this host's.
    pub fn is_local(&self) -> bool {
        self.host.starts_with("unix://")
    }
}

#[async_trait]
impl DockerApi for BollardDocker {
    async fn ping(&self) -> Result<(), DockerError> {
        self.client
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| DockerError::Unreachable {
                detail: e.to_string(),
            })
    }

    async fn list_containers(&self) -> Result<Vec<ContainerInfo>, DockerError> {
        let options = ListContainersOptionsBuilder::default().all(true).build();
        let list = self
            .client
            .list_containers(Some(options))
            .await
            .map_err(|e| call_error("list", "containers", e))?;
        Ok(list
            .into_iter()
            .map(|c| ContainerInfo {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                image: c.image.unwrap_or_default(),
                state: match c.state {
                    Some(ContainerSummaryStateEnum::EMPTY) | None => String::new(),
                    Some(s) => s.to_string(),
                },
                labels: labels_of(c.labels),
                published: c
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| p.public_port)
                    .collect(),
            })
            .collect())
    }

    async fn list_networks(&self) -> Result<Vec<NetworkInfo>, DockerError> {
        let list = self
            .client
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(|e| call_error("list", "networks", e))?;
        Ok(list
            .into_iter()
            .map(|n| NetworkInfo {
                name: n.name.unwrap_or_default(),
                labels: labels_of(n.labels),
                scope: n.scope.unwrap_or_default(),
            })
            .collect())
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>, DockerError> {
        let list = self
            .client
            .list_volumes(None::<ListVolumesOptions>)
            .await
            .map_err(|e| call_error("list", "volumes", e))?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| VolumeInfo {
                name: v.name,
                labels: v.labels.into_iter().collect(),
            })
            .collect())
    }

    async fn create_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        internal: bool,
    ) -> Result<(), DockerError> {
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".to_owned()),
            attachable: Some(true),
            internal: internal.then_some(true),
            labels: Some(labels.clone().into_iter().collect()),
            ..Default::default()
        };
        self.client
            .create_network(request)
            .await
            .map(|_| ())
            .map_err(|e| call_error("create network", name, e))
    }

    async fn remove_network(&self, name: &str) -> Result<(), DockerError> {
        self.client
            .remove_network(name)
            .await
            .map_err(|e| call_error("remove network", name, e))
    }

    async fn create_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DockerError> {
        let request = VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(labels.clone().into_iter().collect()),
            ..Default::default()
        };
        self.client
            .create_volume(request)
            .await
            .map(|_| ())
            .map_err(|e| call_error("create volume", name, e))
    }

    async fn remove_volume(&self, name: &str) -> Result<(), DockerError> {
        self.client
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await
            .map_err(|e| call_error("remove volume", name, e))
    }

    async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        match self.client.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = call_error("inspect image", image, e);
                if e.is_not_found() { Ok(false) } else { Err(e) }
            }
        }
    }

    async fn pull_image(
        &self,
        image: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<(), DockerError> {
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let mut stream = self.client.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| call_error("pull image", image, e))?;
            if let Some(detail) = info.error_detail {
                return Err(DockerError::Call {
                    op: "pull image",
                    target: image.to_owned(),
                    message: detail.message.unwrap_or_default(),
                    status: None,
                });
            }
            let (current, total) = info
                .progress_detail
                .map(|p| (p.current.unwrap_or(0), p.total.unwrap_or(0)))
                .unwrap_or((0, 0));
            progress(PullProgress {
                status: info.status.unwrap_or_default(),
                current: u64::try_from(current).unwrap_or(0),
                total: u64::try_from(total).unwrap_or(0),
            });
        }
        Ok(())
    }

    async fn create_container(&self, config: &ContainerConfig) -> Result<String, DockerError> {
        let mounts = config
            .mounts
            .iter()
            .map(|m| Mount {
                target: Some(m.target.clone()),
                source: Some(m.source.clone()),
                typ: Some(if m.bind {
                    MountType::BIND
                } else {
                    MountType::VOLUME
                }),
                read_only: Some(m.read_only),
                ..Default::default()
            })
            .collect();
        let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        let mut exposed: Vec<String> = Vec::new();
        for p in &config.ports {
            let key = format!("{}/{}", p.container, p.protocol);
            exposed.push(key.clone());
            port_bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: Some(p.host_ip.clone()),
                    host_port: Some(p.host.to_string()),
                });
        }
        let restart = match config.restart.as_str() {
            "always" => RestartPolicyNameEnum::ALWAYS,
            "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
            "no" => RestartPolicyNameEnum::NO,
            _ => RestartPolicyNameEnum::UNLESS_STOPPED,
        };
        let host_config = HostConfig {
            mounts: Some(mounts),
            port_bindings: Some(port_bindings),
            restart_policy: Some(RestartPolicy {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            nano_cpus: config.nano_cpus,
            memory: config.memory,
            network_mode: Some(config.network.clone()),
            init: config.init.then_some(true),
            ..Default::default()
        };
        let endpoint = EndpointSettings {
            aliases: Some(config.aliases.clone()),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(config.image.clone()),
            cmd: config.command.clone(),
            env: Some(config.env.clone()),
            labels: Some(config.labels.clone().into_iter().collect()),
            user: config.user.clone(),
            exposed_ports: Some(exposed),
            healthcheck: config.health.as_ref().map(|h| HealthConfig {
                test: Some(
                    std::iter::once("CMD".to_owned())
                        .chain(h.cmd.iter().cloned())
                        .collect(),
                ),
                interval: Some(h.interval_ns),
                timeout: Some(h.timeout_ns),
                retries: Some(h.retries),
                start_period: Some(h.start_period_ns),
                ..Default::default()
            }),
            host_config: Some(host_config),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(config.network.clone(), endpoint)])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&config.name)
            .build();
        let id = self
            .client
            .create_container(Some(options), body)
            .await
            .map(|r| r.id)
            .map_err(|e| call_error("create container", &config.name, e))?;
        // API 1.41 takes one network at creation; the others are joined before start.
        for network in &config.networks {
            let request = bollard::models::NetworkConnectRequest {
                container: id.clone(),
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(config.aliases.clone()),
                    ..Default::default()
                }),
            };
            if let Err(e) = self.client.connect_network(network, request).await {
                let _ = self.remove_container(&id).await;
                return Err(call_error("connect container to network", network, e));
            }
        }
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), DockerError> {
        self.client
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(|e| call_error("start container", id, e))
    }

    async fn stop_container(&self, id: &str, timeout_secs: i32) -> Result<(), DockerError> {
        let options = StopContainerOptionsBuilder::default()
            .t(timeout_secs)
            .build();
        match self.client.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(call_error("stop container", id, e)),
        }
    }

    async fn remove_container(&self, id: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        self.client
            .remove_container(id, Some(options))
            .await
            .map_err(|e| call_error("remove container", id, e))
    }

    async fn rename_container(&self, id: &str, name: &str) -> Result<(), DockerError> {
        let options = RenameContainerOptionsBuilder::default().name(name).build();
        self.client
            .rename_container(id, options)
            .await
            .map_err(|e| call_error("rename container", id, e))
    }

    async fn container_state(&self, id: &str) -> Result<ContainerState, DockerError> {
        let inspect = self
            .client
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(|e| call_error("inspect container", id, e))?;
        let restart_count = inspect.restart_count.unwrap_or(0);
        let state = inspect.state.unwrap_or_default();
        let health = state.health.and_then(|h| match h.status {
            Some(HealthStatusEnum::EMPTY | HealthStatusEnum::NONE) | None => None,
            Some(s) => Some(s.to_string()),
        });
        let addresses = inspect
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, e)| {
                e.ip_address
                    .filter(|ip| !ip.is_empty())
                    .map(|ip| (name, ip))
            })
            .collect();
        Ok(ContainerState {
            running: state.running.unwrap_or(false),
            restarting: state.restarting.unwrap_or(false),
            restart_count,
            started_at: state.started_at.unwrap_or_default(),
            health,
            exit_code: state.exit_code,
            addresses,
        })
    }

    async fn exec_output(
        &self,
        container: &str,
        cmd: &[String],
        out: &(dyn for<'b> Fn(&'b [u8]) + Send + Sync),
    ) -> Result<i64, DockerError> {
        use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
        let op = "run a command in";
        let created = self
            .client
            .create_exec(
                container,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd.to_vec()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| call_error(op, container, e))?;
        let mut guard = KillOnDrop {
            local: self.local,
            client: self.client.clone(),
            exec: Some(created.id.clone()),
        };
        let started = self
            .client
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| call_error(op, container, e))?;
        let StartExecResults::Attached { mut output, .. } = started else {
            return Err(DockerError::Call {
                op,
                target: container.to_owned(),
                message: "the command detached".into(),
                status: None,
            });
        };
        while let Some(chunk) = output.next().await {
            match chunk.map_err(|e| call_error(op, container, e))? {
                bollard::container::LogOutput::StdOut { message }
                | bollard::container::LogOutput::StdErr { message }
                | bollard::container::LogOutput::Console { message } => out(&message),
                bollard::container::LogOutput::StdIn { .. } => {}
            }
        }
        guard.exec = None;
        let code = self
            .client
            .inspect_exec(&created.id)
            .await
            .map_err(|e| call_error(op, container, e))?
            .exit_code
            .unwrap_or(-1);
        Ok(code)
    }

    async fn restart_container(&self, id: &str, timeout_secs: i32) -> Result<(), DockerError> {
        let options = bollard::query_parameters::RestartContainerOptionsBuilder::default()
            .t(timeout_secs)
            .build();
        self.client
            .restart_container(id, Some(options))
            .await
            .map_err(|e| call_error("restart", id, e))
    }

    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        stdin: Option<&std::path::Path>,
        stdout: Option<&std::path::Path>,
    ) -> Result<u64, DockerError> {
        use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
        use tokio::io::AsyncWriteExt;
        let failed = |message: String| DockerError::Call {
            op: "run a command in",
            target: container.to_owned(),
            message,
            status: None,
        };
        let created = self
            .client
            .create_exec(
                container,
                CreateExecOptions {
                    attach_stdin: Some(stdin.is_some()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd.to_vec()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| call_error("run a command in", container, e))?;
        let started = self
            .client
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: Some(1024 * 1024),
                }),
            )
            .await
            .map_err(|e| call_error("run a command in", container, e))?;
        let StartExecResults::Attached {
            mut output,
            mut input,
        } = started
        else {
            return Err(failed("the command detached".into()));
        };
        let feed = async move {
            if let Some(path) = stdin {
                let mut file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                tokio::io::copy(&mut file, &mut input)
                    .await
                    .map_err(|e| format!("cannot send {}: {e}", path.display()))?;
            }
            input
                .shutdown()
                .await
                .map_err(|e| format!("cannot close the command's input: {e}"))
        };
        let temp = stdout.map(|p| {
            let mut name = p.as_os_str().to_owned();
            name.push(".tmp");
            std::path::PathBuf::from(name)
        });
        let collect = async {
            let mut file = match &temp {
                Some(t) => Some(
                    tokio::fs::File::create(t)
                        .await
                        .map_err(|e| format!("cannot write {}: {e}", t.display()))?,
                ),
                None => None,
            };
            let mut written = 0u64;
            let mut errors: Vec<u8> = Vec::new();
            while let Some(chunk) = output.next().await {
                match chunk.map_err(|e| e.to_string())? {
                    bollard::container::LogOutput::StdOut { message } => {
                        written += message.len() as u64;
                        if let Some(f) = file.as_mut() {
                            f.write_all(&message)
                                .await
                                .map_err(|e| format!("cannot write the output: {e}"))?;
                        }
                    }
                    bollard::container::LogOutput::StdErr { message } => {
                        errors.extend_from_slice(&message);
                        // Only the end is kept: it says why.
                        if errors.len() > 4000 {
                            errors.drain(..errors.len() - 2000);
                        }
                    }
                    _ => {}
                }
            }
            if let Some(mut f) = file {
                f.flush()
                    .await
                    .and(f.sync_all().await)
                    .map_err(|e| format!("cannot write the output: {e}"))?;
            }
            Ok::<_, String>((written, errors))
        };
        let (fed, collected) = tokio::join!(feed, collect);
        let cleanup = || {
            if let Some(t) = &temp {
                let _ = std::fs::remove_file(t);
            }
        };
        let (written, errors) = match (fed, collected) {
            (_, Err(e)) | (Err(e), _) => {
                cleanup();
                return Err(failed(e));
            }
            (Ok(()), Ok(done)) => done,
        };
        let code = self
            .client
            .inspect_exec(&created.id)
            .await
            .map_err(|e| call_error("run a command in", container, e))?
            .exit_code
            .unwrap_or(-1);
        if code != 0 {
            cleanup();
            let text = String::from_utf8_lossy(&errors);
            let tail: String = text
                .trim()
                .chars()
                .rev()
                .take(2000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(failed(format!(
                "`{}` exited with code {code}: {tail}",
                cmd[0]
            )));
        }
        if let (Some(t), Some(dest)) = (&temp, stdout) {
            std::fs::rename(t, dest).map_err(|e| {
                cleanup();
                failed(format!("cannot move the output to {}: {e}", dest.display()))
            })?;
        }
        Ok(written)
    }

    async fn build_image(
        &self,
        request: BuildRequest,
        output: &(dyn for<'b> Fn(&'b str) + Send + Sync),
    ) -> Result<(), DockerError> {
        if !request.secrets.is_empty() {
            let v = self.client.client_version();
            let version = format!("{}.{}", v.major_version, v.minor_version);
            let build = super::buildkit::Build {
                tag: &request.tag,
                dockerfile: &request.dockerfile,
                target: request.target.as_deref(),
                args: &request.args,
                labels: &request.labels,
                context: request.context.clone(),
                secrets: &request.secrets,
            };
            return super::buildkit::build(&version, build, output)
                .await
                .map_err(|message| DockerError::Call {
                    op: "build image",
                    target: request.tag.clone(),
                    message,
                    status: None,
                });
        }
        let args: HashMap<String, String> = request.args.clone().into_iter().collect();
        let labels: HashMap<String, String> = request.labels.clone().into_iter().collect();
        let mut options = bollard::query_parameters::BuildImageOptionsBuilder::default()
            .dockerfile(&request.dockerfile)
            .t(&request.tag)
            .rm(true)
            .forcerm(true)
            .buildargs(&args)
            .labels(&labels);
        if let Some(target) = &request.target {
            options = options.target(target);
        }
        let tag = request.tag.clone();
        let mut stream = self.client.build_image(
            options.build(),
            None,
            Some(bollard::body_full(request.context.into())),
        );
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                        output(text);
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(DockerError::Call {
                        op: "build image",
                        target: tag,
                        message: error.trim_end().to_owned(),
                        status: None,
                    });
                }
                Err(e) => return Err(call_error("build image", &tag, e)),
            }
        }
        Ok(())
    }

    fn swarm(&self) -> Option<&dyn SwarmApi> {
        Some(self)
    }

    fn is_local(&self) -> bool {
        self.local
    }

    fn container_events(&self, label: &str) -> EventStream {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("label".to_owned(), vec![label.to_owned()]),
        ]);
        let options = EventsOptionsBuilder::default().filters(&filters).build();
        let stream = self.client.events(Some(options)).map(|item| {
            item.map_err(|e| call_error("watch", "events", e))
                .map(|ev| {
                    let actor = ev.actor.unwrap_or_default();
                    ContainerEvent {
                        action: ev.action.unwrap_or_default(),
                        id: actor.id.unwrap_or_default(),
                        labels: labels_of(actor.attributes),
                    }
                })
        });
        Box::pin(stream)
    }
}

/// Kills a command started by `exec_output` whose caller stopped waiting for it (a
/// timeout, a cancelled run): Docker has no call to stop an exec, so its process is
/// killed by id, which works when the daemon runs on this host.
struct KillOnDrop {
    /// Only a daemon on this machine has this machine's process ids.
    local: bool,
    client: Docker,
    exec: Option<String>,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let Some(exec) = self.exec.take() else { return };
        if !self.local {
            tracing::warn!(
                "a command that ran past its time keeps running: the Docker daemon is remote, \
                 and Docker has no call to stop a command"
            );
            return;
        }
        let client = self.client.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let Ok(info) = client.inspect_exec(&exec).await else {
                return;
            };
            if info.running != Some(true) {
                return;
            }
            let Some(pid) = info.pid.and_then(|p| i32::try_from(p).ok()) else {
                return;
            };
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::KILL) {
                    tracing::warn!("failed to stop a command that ran past its time: {e}");
                }
            }
        });
    }
}

/// A spec's labels as a map.
fn label_map(labels: &BTreeMap<String, String>) -> Option<HashMap<String, String>> {
    Some(labels.clone().into_iter().collect())
}

/// The filters of a listing: `label` when given.
fn label_filter(label: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![label.to_owned()])])
}

fn service_info(s: bollard::models::Service) -> ServiceInfo {
    let spec = s.spec.unwrap_or_default();
    let container = spec
        .task_template
        .as_ref()
        .and_then(|t| t.container_spec.clone())
        .unwrap_or_default();
    let status = s.service_status.unwrap_or_default();
    ServiceInfo {
        id: s.id.unwrap_or_default(),
        name: spec.name.clone().unwrap_or_default(),
        version: s.version.and_then(|v| v.index).unwrap_or(0),
        labels: labels_of(spec.labels.clone()),
        replicas: spec
            .mode
            .as_ref()
            .and_then(|m| m.replicated.as_ref())
            .map(|r| r.replicas.unwrap_or(1).max(0) as u64),
        image: container.image.unwrap_or_default(),
        env: container.env.unwrap_or_default(),
        secrets: container
            .secrets
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| r.secret_name)
            .collect(),
        running: status.running_tasks.unwrap_or(0),
        desired: status.desired_tasks.unwrap_or(0),
        update: s.update_status.and_then(|u| {
            let state = u.state?.to_string();
            (!state.is_empty()).then(|| UpdateState {
                state,
                message: u.message.unwrap_or_default(),
            })
        }),
        published: s
            .endpoint
            .and_then(|e| e.ports)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| p.published_port)
            .filter_map(|p| u16::try_from(p).ok())
            .collect(),
    }
}

/// The spec Swarm gets for a service.
fn service_spec(c: &ServiceConfig) -> bollard::models::ServiceSpec {
    use bollard::models::{
        EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
        EndpointSpec, EndpointSpecModeEnum, Limit, MountVolumeOptions, NetworkAttachmentConfig,
        ResourceObject, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
        ServiceSpecRollbackConfig, ServiceSpecRollbackConfigFailureActionEnum,
        ServiceSpecRollbackConfigOrderEnum, ServiceSpecUpdateConfig,
        ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, TaskSpec,
        TaskSpecContainerSpec, TaskSpecContainerSpecFile, TaskSpecContainerSpecSecrets,
        TaskSpecPlacement, TaskSpecPlacementPreferences, TaskSpecPlacementSpread,
        TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
    };
    let mounts = c
        .mounts
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: Some(m.source.clone()),
            typ: Some(if m.bind {
                MountType::BIND
            } else {
                MountType::VOLUME
            }),
            read_only: Some(m.read_only),
            volume_options: c
                .volume_labels
                .get(&m.source)
                .filter(|_| !m.bind)
                .map(|labels| MountVolumeOptions {
                    labels: label_map(labels),
                    ..Default::default()
                }),
            ..Default::default()
        })
        .collect();
    let secrets = c
        .secrets
        .iter()
        .map(|s| TaskSpecContainerSpecSecrets {
            file: Some(TaskSpecContainerSpecFile {
                name: Some(s.file.clone()),
                uid: Some("0".to_owned()),
                gid: Some("0".to_owned()),
                // Readable by whatever user the image runs as: the container is the
                // boundary, as for the environment.
                mode: Some(0o444),
            }),
            secret_id: Some(s.id.clone()),
            secret_name: Some(s.name.clone()),
        })
        .collect();
    let health = c.health.as_ref().map(|h| HealthConfig {
        test: Some(
            std::iter::once("CMD".to_owned())
                .chain(h.cmd.iter().cloned())
                .collect(),
        ),
        interval: Some(h.interval_ns),
        timeout: Some(h.timeout_ns),
        retries: Some(h.retries),
        start_period: Some(h.start_period_ns),
        ..Default::default()
    });
    let container = TaskSpecContainerSpec {
        image: Some(c.image.clone()),
        labels: label_map(&c.container_labels),
        command: c.entrypoint.clone(),
        args: c.args.clone(),
        env: Some(c.env.clone()),
        user: c.user.clone(),
        mounts: Some(mounts),
        health_check: health,
        secrets: Some(secrets),
        init: Some(c.init),
        ..Default::default()
    };
    let restart = match c.restart.as_str() {
        "none" => TaskSpecRestartPolicyConditionEnum::NONE,
        "on-failure" => TaskSpecRestartPolicyConditionEnum::ON_FAILURE,
        _ => TaskSpecRestartPolicyConditionEnum::ANY,
    };
    let task = TaskSpec {
        container_spec: Some(container),
        resources: Some(TaskSpecResources {
            limits: Some(Limit {
                nano_cpus: c.nano_cpus,
                memory_bytes: c.memory,
                pids: None,
            }),
            reservations: Some(ResourceObject {
                nano_cpus: c.reserve_nano_cpus,
                memory_bytes: c.reserve_memory,
                generic_resources: None,
            }),
            ..Default::default()
        }),
        restart_policy: Some(TaskSpecRestartPolicy {
            condition: Some(restart),
            delay: Some(5_000_000_000),
            max_attempts: Some(0),
            window: Some(0),
        }),
        placement: Some(TaskSpecPlacement {
            constraints: Some(c.constraints.clone()),
            preferences: Some(
                c.spread
                    .iter()
                    .map(|label| TaskSpecPlacementPreferences {
                        spread: Some(TaskSpecPlacementSpread {
                            spread_descriptor: Some(label.clone()),
                        }),
                    })
                    .collect(),
            ),
            max_replicas: (c.max_replicas_per_node > 0).then_some(c.max_replicas_per_node as i64),
            platforms: None,
        }),
        networks: Some(
            c.networks
                .iter()
                .map(|n| NetworkAttachmentConfig {
                    target: Some(n.clone()),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    };
    let (update_order, rollback_order) = if c.start_first {
        (
            ServiceSpecUpdateConfigOrderEnum::START_FIRST,
            ServiceSpecRollbackConfigOrderEnum::START_FIRST,
        )
    } else {
        (
            ServiceSpecUpdateConfigOrderEnum::STOP_FIRST,
            ServiceSpecRollbackConfigOrderEnum::STOP_FIRST,
        )
    };
    let ports = c
        .ports
        .iter()
        .map(|p| EndpointPortConfig {
            protocol: Some(if p.protocol == "udp" {
                EndpointPortConfigProtocolEnum::UDP
            } else {
                EndpointPortConfigProtocolEnum::TCP
            }),
            target_port: Some(i64::from(p.target)),
            published_port: Some(i64::from(p.published)),
            publish_mode: Some(if p.ingress {
                EndpointPortConfigPublishModeEnum::INGRESS
            } else {
                EndpointPortConfigPublishModeEnum::HOST
            }),
            ..Default::default()
        })
        .collect();
    ServiceSpec {
        name: Some(c.name.clone()),
        labels: label_map(&c.labels),
        task_template: Some(task),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(c.replicas as i64),
            }),
            ..Default::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            monitor: Some(c.monitor_ns),
            max_failure_ratio: Some(0.0),
            order: Some(update_order),
        }),
        rollback_config: Some(ServiceSpecRollbackConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
            monitor: Some(c.monitor_ns),
            max_failure_ratio: Some(0.0),
            order: Some(rollback_order),
        }),
        networks: None,
        endpoint_spec: Some(EndpointSpec {
            mode: Some(if c.endpoint_mode == "dnsrr" {
                EndpointSpecModeEnum::DNSRR
            } else {
                EndpointSpecModeEnum::VIP
            }),
            ports: Some(ports),
        }),
    }
}

#[async_trait]
impl SwarmApi for BollardDocker {
    async fn swarm_node(&self) -> Result<SwarmNode, DockerError> {
        let info = self
            .client
            .info()
            .await
            .map_err(|e| call_error("read", "the daemon's information", e))?;
        let swarm = info.swarm.unwrap_or_default();
        Ok(SwarmNode {
            node_id: swarm.node_id.unwrap_or_default(),
            state: swarm
                .local_node_state
                .map(|s| s.to_string())
                .unwrap_or_default(),
            manager: swarm.control_available.unwrap_or(false),
        })
    }

    async fn list_services(&self) -> Result<Vec<ServiceInfo>, DockerError> {
        let options = bollard::query_parameters::ListServicesOptionsBuilder::default()
            .status(true)
            .build();
        let list = self
            .client
            .list_services(Some(options))
            .await
            .map_err(|e| call_error("list", "services", e))?;
        Ok(list.into_iter().map(service_info).collect())
    }

    async fn inspect_service(&self, id: &str) -> Result<ServiceInfo, DockerError> {
        let service = self
            .client
            .inspect_service(id, None::<bollard::query_parameters::InspectServiceOptions>)
            .await
            .map_err(|e| call_error("inspect service", id, e))?;
        Ok(service_info(service))
    }

    async fn list_tasks(&self, label: &str) -> Result<Vec<TaskInfo>, DockerError> {
        let options = bollard::query_parameters::ListTasksOptionsBuilder::default()
            .filters(&label_filter(label))
            .build();
        let list = self
            .client
            .list_tasks(Some(options))
            .await
            .map_err(|e| call_error("list", "tasks", e))?;
        Ok(list
            .into_iter()
            .map(|t| {
                let status = t.status.unwrap_or_default();
                TaskInfo {
                    id: t.id.unwrap_or_default(),
                    service_id: t.service_id.unwrap_or_default(),
                    slot: t.slot.unwrap_or(0).max(0) as u64,
                    node_id: t.node_id.unwrap_or_default(),
                    state: status.state.map(|s| s.to_string()).unwrap_or_default(),
                    desired_state: t.desired_state.map(|s| s.to_string()).unwrap_or_default(),
                    message: status.message.unwrap_or_default(),
                    error: status.err.unwrap_or_default(),
                    container_id: status
                        .container_status
                        .and_then(|c| c.container_id)
                        .unwrap_or_default(),
                    labels: labels_of(t.spec.and_then(|s| s.container_spec).and_then(|c| c.labels)),
                    timestamp: status.timestamp.map(|t| t.to_string()).unwrap_or_default(),
                }
            })
            .collect())
    }

    async fn list_nodes(&self) -> Result<Vec<NodeInfo>, DockerError> {
        let list = self
            .client
            .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
            .await
            .map_err(|e| call_error("list", "nodes", e))?;
        Ok(list
            .into_iter()
            .map(|n| {
                let spec = n.spec.unwrap_or_default();
                NodeInfo {
                    id: n.id.unwrap_or_default(),
                    hostname: n.description.and_then(|d| d.hostname).unwrap_or_default(),
                    state: n
                        .status
                        .and_then(|s| s.state)
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    availability: spec.availability.map(|a| a.to_string()).unwrap_or_default(),
                    role: spec.role.map(|r| r.to_string()).unwrap_or_default(),
                    labels: labels_of(spec.labels),
                }
            })
            .collect())
    }

    async fn list_secrets(&self, label: &str) -> Result<Vec<SecretInfo>, DockerError> {
        let options = bollard::query_parameters::ListSecretsOptionsBuilder::default()
            .filters(&label_filter(label))
            .build();
        let list = self
            .client
            .list_secrets(Some(options))
            .await
            .map_err(|e| call_error("list", "secrets", e))?;
        Ok(list
            .into_iter()
            .map(|s| {
                let spec = s.spec.unwrap_or_default();
                SecretInfo {
                    id: s.id.unwrap_or_default(),
                    name: spec.name.unwrap_or_default(),
                    labels: labels_of(spec.labels),
                }
            })
            .collect())
    }

    async fn create_secret(
        &self,
        name: &str,
        value: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, DockerError> {
        use base64::Engine as _;
        let spec = bollard::models::SecretSpec {
            name: Some(name.to_owned()),
            labels: label_map(labels),
            data: Some(base64::engine::general_purpose::STANDARD.encode(value)),
            ..Default::default()
        };
        self.client
            .create_secret(spec)
            .await
            .map(|r| r.id)
            .map_err(|e| call_error("create secret", name, e))
    }

    async fn remove_secret(&self, id: &str) -> Result<(), DockerError> {
        self.client
            .delete_secret(id)
            .await
            .map_err(|e| call_error("remove secret", id, e))
    }

    async fn create_service(&self, config: &ServiceConfig) -> Result<String, DockerError> {
        let created = self
            .client
            .create_service(service_spec(config), None)
            .await
            .map_err(|e| call_error("create service", &config.name, e))?;
        Ok(created.id.unwrap_or_default())
    }

    async fn update_service(
        &self,
        id: &str,
        version: u64,
        config: &ServiceConfig,
    ) -> Result<(), DockerError> {
        let options = bollard::query_parameters::UpdateServiceOptionsBuilder::default()
            .version(i32::try_from(version).unwrap_or(i32::MAX))
            .build();
        self.client
            .update_service(id, service_spec(config), options, None)
            .await
            .map(|_| ())
            .map_err(|e| call_error("update service", &config.name, e))
    }

    async fn remove_service(&self, id: &str) -> Result<(), DockerError> {
        self.client
            .delete_service(id)
            .await
            .map_err(|e| call_error("remove service", id, e))
    }

    async fn restart_service(&self, id: &str) -> Result<(), DockerError> {
        let service = self
            .client
            .inspect_service(id, None::<bollard::query_parameters::InspectServiceOptions>)
            .await
            .map_err(|e| call_error("inspect service", id, e))?;
        let version = service.version.and_then(|v| v.index).unwrap_or(0);
        let mut spec = service.spec.unwrap_or_default();
        if let Some(task) = spec.task_template.as_mut() {
            task.force_update = Some(task.force_update.unwrap_or(0) + 1);
        }
        let options = bollard::query_parameters::UpdateServiceOptionsBuilder::default()
            .version(i32::try_from(version).unwrap_or(i32::MAX))
            .build();
        self.client
            .update_service(id, spec, options, None)
            .await
            .map(|_| ())
            .map_err(|e| call_error("restart service", id, e))
    }

    async fn create_overlay_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        internal: bool,
    ) -> Result<(), DockerError> {
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("overlay".to_owned()),
            attachable: Some(true),
            internal: internal.then_some(true),
            labels: label_map(labels),
            ..Default::default()
        };
        self.client
            .create_network(request)
            .await
            .map(|_| ())
            .map_err(|e| call_error("create network", name, e))
    }

    async fn image_command(&self, image: &str) -> Result<Option<ImageCommand>, DockerError> {
        match self.client.inspect_image(image).await {
            Ok(inspect) => {
                let config = inspect.config.unwrap_or_default();
                Ok(Some(ImageCommand {
                    entrypoint: config.entrypoint.unwrap_or_default(),
                    cmd: config.cmd.unwrap_or_default(),
                }))
            }
            Err(e) => {
                let e = call_error("inspect image", image, e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    fn cluster_events(&self) -> EventStream {
        let filters = HashMap::from([(
            "type".to_owned(),
            vec!["service".to_owned(), "node".to_owned()],
        )]);
        let options = EventsOptionsBuilder::default().filters(&filters).build();
        let stream = self.client.events(Some(options)).map(|item| {
            item.map_err(|e| call_error("watch", "events", e))
                .map(|ev| {
                    let actor = ev.actor.unwrap_or_default();
                    ContainerEvent {
                        action: ev.action.unwrap_or_default(),
                        id: actor.id.unwrap_or_default(),
                        labels: labels_of(actor.attributes),
                    }
                })
        });
        Box::pin(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(vars: &[(&str, &str)]) -> Result<Endpoint, String> {
        Endpoint::from_env(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_endpoint_follows_the_docker_cli_variables() {
        let local = endpoint(&[]).unwrap();
        assert_eq!(local.host, "unix:///var/run/docker.sock");
        assert!(local.is_local() && local.tls.is_none());
        let plain = endpoint(&[("DOCKER_HOST", "tcp://10.0.0.2:2375")]).unwrap();
        assert!(!plain.is_local() && plain.tls.is_none());
        // Verification off (as the CLI reads `0`): plain TCP.
        let off = endpoint(&[
            ("DOCKER_HOST", "tcp://10.0.0.2:2375"),
            ("DOCKER_TLS_VERIFY", "0"),
        ])
        .unwrap();
        assert!(off.tls.is_none());

        let certs = tempfile::tempdir().unwrap();
        let dir = certs.path().to_str().unwrap();
        let tls = [
            ("DOCKER_HOST", "tcp://10.0.0.2:2376"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", dir),
        ];
        let missing = endpoint(&tls).unwrap_err();
        assert!(
            missing.contains(&format!(
                "DOCKER_TLS_VERIFY is set, but {dir}/ca.pem cannot be read"
            )),
            "{missing}"
        );
        assert!(
            missing.contains("DOCKER_CERT_PATH must hold ca.pem"),
            "{missing}"
        );
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(certs.path().join(file), "pem").unwrap();
        }
        let verified = endpoint(&tls).unwrap();
        assert_eq!(verified.tls.as_deref(), Some(certs.path()));
        // Without DOCKER_CERT_PATH: ~/.docker, as the CLI does.
        let home = endpoint(&[
            ("DOCKER_HOST", "tcp://h:2376"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("HOME", "/nonexistent-home"),
        ])
        .unwrap_err();
        assert!(home.contains("/nonexistent-home/.docker/ca.pem"), "{home}");
        let ssh = endpoint(&[("DOCKER_HOST", "ssh://me@host")]).unwrap_err();
        assert!(ssh.contains("forward the daemon's socket"), "{ssh}");
    }
}
