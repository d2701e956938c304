//! The runtime seam: how an app's replicas run. Docker containers on one daemon
//! ([`containers`]): the planner decides which replicas to run, replace, start, rename
//! or remove (plan/app.rs). Swarm services ([`swarm`]): the planner decides whether the
//! service is created, updated or removed (plan/service.rs) and Swarm places and
//! replaces the tasks. A runtime carries those steps out and says when the app is
//! ready; each planner emits only its own runtime's steps.

pub mod containers;
pub mod swarm;

use async_trait::async_trait;

use crate::desired::DesiredApp;
use crate::drivers::docker::{DockerError, HealthSpec, MountSpec};

/// Why a runtime step failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The daemon refused or failed a call.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// The image is not on the host and could not be pulled.
    #[error(
        "{0}; the image is neither on this host nor pullable: build or load it here, or \
         check the registry and its credentials"
    )]
    Pull(DockerError),
    /// An object not made for this replica holds its name.
    #[error("{source}; a container named {name} already exists: remove or rename it")]
    NameTaken {
        /// The name.
        name: String,
        /// The daemon's answer.
        source: DockerError,
    },
    /// A new replica never became ready.
    #[error("{0}")]
    NotReady(String),
    /// Swarm rolled an update back (or paused it): the previous spec runs.
    #[error("{0}")]
    RolledBack(String),
    /// A step of the other runtime's planner.
    #[error("{0}")]
    Unsupported(&'static str),
}

/// A replica as it runs now.
#[derive(Debug, Clone, Copy)]
pub struct Running<'a> {
    /// Its number (1-based).
    pub replica: u32,
    /// The running instance's id.
    pub id: &'a str,
    /// Its name.
    pub name: &'a str,
}

/// How a replica's instance is replaced by one of the new spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// The old one is removed first (fixed host ports, or `update: stop-first`).
    StopFirst,
    /// The new one is started and ready before the old one goes.
    StartFirst,
    /// The new one is started and ready beside the old one, which keeps serving: the
    /// proxy switches to the new one, and only then is the old one removed (by the
    /// Domain's action).
    Handover,
}

/// What a runtime does with an app's replicas. Every method carries out one step the
/// planner chose; none decides anything.
#[async_trait]
pub trait AppRuntime: Send + Sync {
    /// Makes the app's image available (pulling it when needed).
    async fn prepare_image(&self, app: &DesiredApp) -> Result<(), RuntimeError>;
    /// Runs replica `replica` (1-based) and waits until it is ready.
    async fn run(&self, app: &DesiredApp, replica: u32) -> Result<(), RuntimeError>;
    /// Replaces a replica's current instance (`old`) with one of the desired spec, as
    /// `how` says. On failure of a start-first update or a handover the old one keeps
    /// serving.
    async fn replace(
        &self,
        app: &DesiredApp,
        old: Running<'_>,
        how: Replace,
    ) -> Result<(), RuntimeError>;
    /// Starts a stopped replica that is otherwise right, and waits until it is ready.
    async fn start(
        &self,
        app: Option<&DesiredApp>,
        id: &str,
        name: &str,
    ) -> Result<(), RuntimeError>;
    /// Gives a replica its canonical name.
    async fn rename(&self, id: &str, to: &str) -> Result<(), RuntimeError>;
    /// Stops and removes a replica (one already gone is fine).
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// Creates the app's service and waits until its tasks run.
    async fn create_service(&self, _app: &DesiredApp) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(SERVICE_STEP))
    }
    /// Gives the app's service `id` (at `version`) the desired spec and waits until
    /// Swarm has rolled its tasks over; an update Swarm rolls back is an error.
    async fn update_service(
        &self,
        _app: &DesiredApp,
        _id: &str,
        _version: u64,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(SERVICE_STEP))
    }
    /// Removes service `id` (one already gone is fine).
    async fn remove_service(&self, _id: &str) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(SERVICE_STEP))
    }
}

/// The command that makes an HTTP or TCP probe from inside the app's container (the
/// image's own wget or curl, or nc): how Swarm checks a task's health on any node, and
/// how a remote daemon's containers are checked, since their addresses are not
/// reachable from berth. `None` for a command probe, which is already one.
pub fn probe_command(probe: &crate::desired::Probe) -> Option<Vec<String>> {
    use crate::desired::Probe;
    let (script, arg) = match probe {
        Probe::Http { path, port } => (
            "wget -q -O /dev/null \"$1\" 2>/dev/null || curl -fsS -o /dev/null \"$1\"",
            format!("http://127.0.0.1:{port}{path}"),
        ),
        Probe::Tcp { port } => (
            "nc -z 127.0.0.1 \"$1\" 2>/dev/null || bash -c 'exec 3<>/dev/tcp/127.0.0.1/$0' \"$1\"",
            port.to_string(),
        ),
        Probe::Cmd { .. } => return None,
    };
    Some(vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        script.to_owned(),
        "berth".to_owned(),
        arg,
    ])
}

/// Docker's health check running `cmd` on the timing of `h`.
pub(crate) fn health_spec(h: &crate::desired::HealthCheck, cmd: Vec<String>) -> HealthSpec {
    HealthSpec {
        cmd,
        interval_ns: h.interval_ms as i64 * 1_000_000,
        timeout_ns: h.timeout_ms as i64 * 1_000_000,
        retries: i64::from(h.retries),
        start_period_ns: h.start_period_ms as i64 * 1_000_000,
    }
}

/// The mounts of a container spec, as the driver takes them.
pub(crate) fn mount_specs(spec: &crate::desired::ContainerSpec) -> Vec<MountSpec> {
    use crate::desired::MountSource;
    spec.volumes
        .iter()
        .map(|m| {
            let (bind, source) = match &m.source {
                MountSource::Volume(v) => (false, v.clone()),
                MountSource::HostPath(p) => (true, p.clone()),
            };
            MountSpec {
                bind,
                source,
                target: m.target.clone(),
                read_only: m.read_only,
            }
        })
        .collect()
}

const SERVICE_STEP: &str = "services are for `runtime: swarm`: a plan for Swarm cannot be \
                            applied to containers";
