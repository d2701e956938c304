//! Apps as plain Docker containers: the container a replica gets (labels, env with
//! secrets, mounts, ports, limits, health check, networks), created, started and
//! waited for until ready; removed and renamed for updates.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use super::RuntimeError;
use crate::desired::labels::{
    DELETION_POLICY, HOST_PORT, REPLICA, REVISION, SPEC, SPEC_HASH, owner_labels,
};
use crate::desired::{DesiredApp, Probe};
use crate::drivers::docker::{ContainerConfig, DockerApi, DockerError, PortSpec, PullProgress};

/// Called with an image's pull progress: app, image, the daemon's report.
pub type OnPull = Arc<dyn Fn(&str, &str, PullProgress) + Send + Sync>;
/// Called when a new container starts waiting to be ready.
pub type OnWaiting = Arc<dyn Fn(&str) + Send + Sync>;

/// The containers runtime: apps' replicas as containers on one Docker daemon.
pub struct Containers<'a> {
    /// The daemon.
    pub docker: &'a dyn DockerApi,
    /// The berth instance whose containers these are.
    pub instance: &'a str,
    /// The revision recorded on new containers.
    pub revision: &'a str,
    /// How long a new container may take to become ready (plus its start period).
    pub ready_timeout: Duration,
    /// Images known to be present in this apply (apps often share one).
    pub images_present: tokio::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Pull progress.
    pub on_pull: OnPull,
    /// Readiness waits.
    pub on_waiting: OnWaiting,
}

impl Containers<'_> {
    /// Makes sure `image` is on the host, pulling it (with progress) when it is not.
    pub async fn ensure_image(&self, app: &str, image: &str) -> Result<(), RuntimeError> {
        // Apps often share an image: ask the daemon once per apply.
        if self.images_present.lock().await.contains(image) {
            return Ok(());
        }
        let present = self.docker.image_exists(image).await?;
        if !present {
            let on_pull = self.on_pull.clone();
            let name = image.to_owned();
            let app = app.to_owned();
            let report = move |p: PullProgress| on_pull(&app, &name, p);
            self.docker
                .pull_image(image, &report)
                .await
                .map_err(RuntimeError::Pull)?;
        }
        self.images_present.lock().await.insert(image.to_owned());
        Ok(())
    }

    /// Stops and removes a container; one already gone is fine.
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        match self.docker.stop_container(id, 10).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        match self.docker.remove_container(id).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates, starts and waits for a container; removes it again if it never gets ready.
    pub async fn start_new(
        &self,
        app: &DesiredApp,
        replica: u32,
        name: &str,
    ) -> Result<(), RuntimeError> {
        let mut config = container_config(app, replica, name, self.revision, self.instance);
        if !self.docker.is_local() {
            // A remote daemon's containers cannot be reached from here: Docker checks
            // their health from inside.
            if let Some(h) = app.spec.health.as_ref() {
                if let Some(cmd) = super::probe_command(&h.probe) {
                    config.health = Some(super::health_spec(h, cmd));
                }
            }
        }
        let id = self
            .docker
            .create_container(&config)
            .await
            .map_err(|e| match e {
                e @ DockerError::Call {
                    status: Some(409), ..
                } => RuntimeError::NameTaken {
                    name: name.to_owned(),
                    source: e,
                },
                e => e.into(),
            })?;
        let started = self
            .docker
            .start_container(&id)
            .await
            .map_err(RuntimeError::from);
        let ready = match started {
            Ok(()) => self.wait_ready(app, &id, name).await,
            Err(e) => Err(e),
        };
        if ready.is_err() {
            let _ = self.docker.remove_container(&id).await;
        }
        ready
    }

    /// Waits until a started container is ready: its HTTP or TCP probe answers, its
    /// Docker health check says healthy, or (without one) it keeps running.
    pub async fn wait_ready(
        &self,
        app: &DesiredApp,
        id: &str,
        name: &str,
    ) -> Result<(), RuntimeError> {
        (self.on_waiting)(name);
        let health = app.spec.health.as_ref();
        let grace = health.map_or(0, |h| h.start_period_ms);
        let deadline = Instant::now() + self.ready_timeout + Duration::from_millis(grace);
        let mut running_polls = 0;
        let mut first_start: Option<String> = None;
        let mut last_error = String::from("not checked yet");
        loop {
            let state = self.docker.container_state(id).await?;
            if !state.running || state.restarting || state.restart_count > 0 {
                let code = state
                    .exit_code
                    .filter(|c| *c != 0 || !state.running)
                    .map(|c| format!(" with code {c}"))
                    .unwrap_or_default();
                let restarts = match state.restart_count {
                    0 => String::new(),
                    1 => " and was restarted once".to_owned(),
                    n => format!(" and was restarted {n} times"),
                };
                return Err(RuntimeError::NotReady(format!(
                    "container {name} exited{code}{restarts} before it was ready"
                )));
            }
            // A remote daemon's containers are checked from inside (see `start_new`).
            let probe = health.map(|h| &h.probe).filter(|_| self.docker.is_local());
            let ready = match probe {
                Some(Probe::Http { path, port }) => match state.addresses.get(&app.spec.network) {
                    Some(ip) => match probe_http(ip, *port, path, health_timeout(app)).await {
                        Ok(()) => true,
                        Err(e) => {
                            last_error = e;
                            false
                        }
                    },
                    None => {
                        last_error = "no address on the network yet".into();
                        false
                    }
                },
                Some(Probe::Tcp { port }) => match state.addresses.get(&app.spec.network) {
                    Some(ip) => {
                        let addr = format!("{ip}:{port}");
                        match timeout(health_timeout(app), TcpStream::connect(&addr)).await {
                            Ok(Ok(_)) => true,
                            Ok(Err(e)) => {
                                last_error = format!("connect to {addr}: {e}");
                                false
                            }
                            Err(_) => {
                                last_error = format!("connect to {addr} timed out");
                                false
                            }
                        }
                    }
                    None => false,
                },
                Some(Probe::Cmd { .. }) | None => match state.health.as_deref() {
                    Some("healthy") => true,
                    Some("unhealthy") => {
                        return Err(RuntimeError::NotReady(format!(
                            "container {name} is unhealthy (Docker health check)"
                        )));
                    }
                    Some(other) => {
                        last_error = format!("health is {other}");
                        false
                    }
                    // No health check anywhere: ready once the same process has kept
                    // running for half a second (a crash loop restarts it within 100 ms,
                    // which changes its start time and restart count).
                    None => {
                        if first_start.as_deref() != Some(state.started_at.as_str()) {
                            first_start = Some(state.started_at.clone());
                            running_polls = 0;
                        }
                        running_polls += 1;
                        running_polls > 2
                    }
                },
            };
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::NotReady(format!(
                    "container {name} was not ready after {}s: {last_error}",
                    (self.ready_timeout.as_millis() as u64 + grace) / 1000
                )));
            }
            sleep(Duration::from_millis(200)).await;
        }
    }
}

fn health_timeout(app: &DesiredApp) -> Duration {
    Duration::from_millis(
        app.spec
            .health
            .as_ref()
            .map_or(3000, |h| h.timeout_ms.max(100)),
    )
}

/// An HTTP GET of the app's health path, from the host; 2xx and 3xx are healthy
/// (redirects are not followed: a redirect answers, so the app is up).
async fn probe_http(ip: &str, port: u16, path: &str, limit: Duration) -> Result<(), String> {
    // One client for every probe (building one loads the TLS roots); no idle
    // connections are kept, so each probe is a fresh connection to the app.
    static CLIENT: std::sync::OnceLock<Result<reqwest::Client, String>> =
        std::sync::OnceLock::new();
    let addr = format!("{ip}:{port}");
    let url = format!("http://{addr}{path}");
    let client = CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(0)
                .user_agent("berth")
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| format!("GET {path} on {addr}: {e}"))?;
    match client.get(&url).timeout(limit).send().await {
        Ok(r) if (200..400).contains(&r.status().as_u16()) => Ok(()),
        Ok(r) => Err(format!(
            "GET {path} on {addr} answered {}",
            r.status().as_u16()
        )),
        Err(e) if e.is_timeout() => Err(format!("GET {path} on {addr} timed out")),
        Err(e) if e.is_connect() => Err(format!("connect to {addr}: {e}")),
        Err(_) => Err(format!("GET {path} on {addr}: not an HTTP answer")),
    }
}

/// The container to create for an app's replica: labels, env with secrets resolved,
/// mounts, ports, limits, health check, network and alias.
pub fn container_config(
    app: &DesiredApp,
    replica: u32,
    name: &str,
    revision: &str,
    instance: &str,
) -> ContainerConfig {
    let spec = &app.spec;
    let mut labels = owner_labels(instance, app.kind, &app.name);
    labels.insert(SPEC_HASH.to_owned(), app.hash.clone());
    labels.insert(SPEC.to_owned(), spec.to_json());
    labels.insert(REVISION.to_owned(), revision.to_owned());
    labels.insert(REPLICA.to_owned(), replica.to_string());
    let policy = match app.deletion_policy {
        crate::manifest::model::DeletionPolicy::Delete => "delete",
        crate::manifest::model::DeletionPolicy::Retain => "retain",
    };
    labels.insert(DELETION_POLICY.to_owned(), policy.to_owned());
    if let Some(port) = app.host_port {
        labels.insert(HOST_PORT.to_owned(), port.host.to_string());
    }
    for (k, v) in &spec.labels {
        labels.insert(k.clone(), v.clone());
    }
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.extend(
        app.secrets
            .iter()
            .map(|(k, s)| format!("{k}={}", s.expose())),
    );
    let mounts = super::mount_specs(spec);
    let mut ports: Vec<PortSpec> = spec
        .ports
        .iter()
        .map(|p| PortSpec {
            container: p.container,
            host: p.host,
            host_ip: p.host_ip.clone(),
            protocol: p.protocol.as_str().to_owned(),
        })
        .collect();
    // The port the proxy on the host reaches it on: not part of its spec, which two
    // containers of one app share during a handover.
    if let Some(port) = app.host_port {
        ports.push(PortSpec {
            container: port.container,
            host: port.host,
            host_ip: "127.0.0.1".to_owned(),
            protocol: "tcp".to_owned(),
        });
    }
    let health = spec.health.as_ref().and_then(|h| match &h.probe {
        Probe::Cmd { cmd } => Some(super::health_spec(h, cmd.clone())),
        // HTTP and TCP probes are made by berth from the host: images need no curl.
        Probe::Http { .. } | Probe::Tcp { .. } => None,
    });
    ContainerConfig {
        name: name.to_owned(),
        image: spec.image.clone(),
        command: spec.command.clone(),
        env,
        labels,
        network: spec.network.clone(),
        aliases: vec![app.name.clone()],
        mounts,
        ports,
        health,
        nano_cpus: spec.cpus.map(|c| (c * 1e9) as i64),
        memory: spec.memory.map(|m| m as i64),
        restart: spec.restart.clone(),
        user: spec.user.clone(),
        init: spec.init,
        networks: spec.networks.clone(),
    }
}

#[async_trait::async_trait]
impl super::AppRuntime for Containers<'_> {
    async fn prepare_image(&self, app: &DesiredApp) -> Result<(), RuntimeError> {
        self.ensure_image(&app.name, &app.spec.image).await
    }

    async fn run(&self, app: &DesiredApp, replica: u32) -> Result<(), RuntimeError> {
        self.start_new(app, replica, &app.container_name(replica))
            .await
    }

    async fn replace(
        &self,
        app: &DesiredApp,
        old: super::Running<'_>,
        how: super::Replace,
    ) -> Result<(), RuntimeError> {
        let (replica, old_id, old_name) = (old.replica, old.id, old.name);
        let canonical = app.container_name(replica);
        if how == super::Replace::StopFirst {
            self.remove(old_id).await?;
            return self.start_new(app, replica, &canonical).await;
        }
        let temp = crate::plan::handover_name(&canonical, &app.hash, old_name);
        // A leftover from an interrupted update may hold the name.
        let _ = self.docker.remove_container(&temp).await;
        self.start_new(app, replica, &temp).await.map_err(|e| {
            RuntimeError::NotReady(format!(
                "{e}; the old container {old_name} keeps running (degraded)"
            ))
        })?;
        if how == super::Replace::Handover {
            // The old one serves until the proxy reaches the new one.
            return Ok(());
        }
        self.remove(old_id).await?;
        Ok(self.docker.rename_container(&temp, &canonical).await?)
    }

    async fn start(
        &self,
        app: Option<&DesiredApp>,
        id: &str,
        name: &str,
    ) -> Result<(), RuntimeError> {
        self.docker.start_container(id).await?;
        match app {
            Some(app) => self.wait_ready(app, id, name).await,
            None => Ok(()),
        }
    }

    async fn rename(&self, id: &str, to: &str) -> Result<(), RuntimeError> {
        Ok(self.docker.rename_container(id, to).await?)
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        Containers::remove(self, id).await
    }
}
