//! Runs a [`Plan`] through the drivers. It decides nothing: every choice was made by
//! the planner. Infrastructure first, then apps round by round (concurrently within a
//! round, bounded), then prunes. One failing app does not stop the others; apps that
//! depend on a failed one are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use crate::desired::{Desired, DesiredApp, Probe, container_name};
use crate::drivers::docker::{
    ContainerConfig, DockerApi, DockerError, HealthSpec, MountSpec, PortSpec, PullProgress,
};
use crate::drivers::nginx::Change;
use crate::drivers::proxy::ProxyDriver;
use crate::observe::{
    self, DELETION_POLICY, HOST_PORT, REPLICA, REVISION, SPEC, SPEC_HASH, VOLUME,
};
use crate::plan::{Action, Op, Plan, Step, Target};
use crate::state::secrets::redact_all;

/// How apply runs.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The berth instance whose objects these are.
    pub instance: String,
    /// Apps converged at once within a round.
    pub concurrency: usize,
    /// How long a new container may take to become ready (plus its start period).
    pub ready_timeout: Duration,
    /// The reverse proxy domains are written for.
    pub proxy: ProxyDriver,
    /// Where the records of shared databases are kept (none: not recorded).
    pub state_dir: Option<std::path::PathBuf>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            instance: "default".to_owned(),
            concurrency: 8,
            ready_timeout: Duration::from_secs(60),
            proxy: ProxyDriver::None,
            state_dir: None,
        }
    }
}

/// How one action ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "message", rename_all = "lowercase")]
pub enum Status {
    /// Nothing to do.
    Unchanged,
    /// Done.
    Done,
    /// It failed; the message says why (secrets redacted).
    Failed(String),
    /// Not attempted; the message says why.
    Skipped(String),
    /// Blocked by an object berth does not own.
    Conflict(String),
}

/// The outcome of one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The kind of object.
    pub target: Target,
    /// Its name.
    pub name: String,
    /// What was planned.
    pub op: Op,
    /// How it ended.
    #[serde(flatten)]
    pub result: Status,
}

/// Every action's outcome, in plan order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Report {
    /// The outcomes.
    pub outcomes: Vec<Outcome>,
}

impl Report {
    /// How many actions failed or were blocked.
    pub fn failures(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o.result, Status::Failed(_) | Status::Conflict(_)))
            .count()
    }

    /// The apps that are now as declared.
    pub fn converged_apps(&self) -> BTreeSet<String> {
        self.outcomes
            .iter()
            .filter(|o| {
                o.target == Target::App && matches!(o.result, Status::Done | Status::Unchanged)
            })
            .filter(|o| o.op != Op::Delete)
            .map(|o| o.name.clone())
            .collect()
    }
}

/// What apply reports while it works, for progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// An action started.
    Started {
        /// The kind of object.
        target: Target,
        /// Its name.
        name: String,
    },
    /// An image is being pulled.
    Pull {
        /// The app that needs it.
        app: String,
        /// The image.
        image: String,
        /// The daemon's report.
        progress: PullProgress,
    },
    /// A new container is waiting to be ready.
    Waiting {
        /// The container.
        container: String,
    },
    /// An action ended.
    Finished(Outcome),
}

/// A callback for [`Progress`].
pub type OnProgress = Arc<dyn Fn(Progress) + Send + Sync>;

/// Executes `plan`.
pub async fn apply(
    plan: &Plan,
    desired: &Desired,
    docker: Arc<dyn DockerApi>,
    options: &ApplyOptions,
    on_progress: OnProgress,
) -> Report {
    let mut outcomes: BTreeMap<usize, Outcome> = BTreeMap::new();
    let ctx = Ctx {
        desired,
        images_present: tokio::sync::Mutex::new(BTreeSet::new()),
        docker: docker.as_ref(),
        options,
        on_progress: on_progress.clone(),
    };
    let is_prune = |a: &Action| a.op == Op::Delete;
    // Apps and managed databases' containers go round by round.
    let is_container = |a: &Action| {
        a.target == Target::App
            || (a.target == Target::Database && desired.apps.contains_key(&a.name))
    };

    // Networks and volumes, then shared databases, in order.
    let mut infra_failed = false;
    let mut failed_apps: BTreeSet<String> = BTreeSet::new();
    for (i, a) in plan.actions.iter().enumerate() {
        if is_container(a) || a.target == Target::Domain || is_prune(a) {
            continue;
        }
        let o = ctx.run(a).await;
        if a.target == Target::Database {
            // Apps that depend on it are skipped, the others go on.
            if !matches!(o.result, Status::Done | Status::Unchanged) {
                failed_apps.insert(a.name.clone());
            }
        } else {
            infra_failed |= matches!(o.result, Status::Failed(_));
        }
        outcomes.insert(i, o);
    }

    // Apps, round by round.
    let last_round = plan.actions.iter().map(|a| a.round).max().unwrap_or(0);
    for round in 0..=last_round {
        let batch: Vec<(usize, &Action)> = plan
            .actions
            .iter()
            .enumerate()
            .filter(|(_, a)| is_container(a) && !is_prune(a) && a.round == round)
            .collect();
        let failed_before = failed_apps.clone();
        let results: Vec<(usize, Outcome)> = futures_util::stream::iter(batch)
            .map(|(i, a)| {
                let ctx = &ctx;
                let failed_before = &failed_before;
                async move {
                    let blocked = desired.apps.get(&a.name).and_then(|app| {
                        app.depends_on
                            .iter()
                            .find(|d| failed_before.contains(*d))
                            .cloned()
                    });
                    let outcome = match (blocked, infra_failed && !a.steps.is_empty()) {
                        (Some(dep), _) => {
                            ctx.finish(a, Status::Skipped(format!("dependency {dep} failed")))
                        }
                        (None, true) => ctx.finish(
                            a,
                            Status::Skipped("the network or a volume could not be created".into()),
                        ),
                        (None, false) => ctx.run(a).await,
                    };
                    (i, outcome)
                }
            })
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
        for (i, o) in results {
            if matches!(
                o.result,
                Status::Failed(_) | Status::Skipped(_) | Status::Conflict(_)
            ) {
                failed_apps.insert(o.name.clone());
            }
            outcomes.insert(i, o);
        }
    }

    // Proxy files: written (and checked) and removed in one batch, one reload.
    let mut changes = BTreeMap::new();
    let mut domain_actions = BTreeMap::new();
    for (i, a) in plan.actions.iter().enumerate() {
        if a.target != Target::Domain {
            continue;
        }
        for step in &a.steps {
            let change = match step {
                Step::WriteProxyFile { domain } => match desired.proxy_files.get(domain) {
                    Some(content) => Change::Write(content.clone()),
                    None => continue,
                },
                Step::RemoveProxyFile { .. } => Change::Remove,
                _ => continue,
            };
            changes.insert(a.name.clone(), change);
            domain_actions.insert(a.name.clone(), i);
        }
        if a.steps.is_empty() {
            outcomes.insert(i, ctx.run(a).await);
        }
    }
    if !changes.is_empty() {
        for a in plan
            .actions
            .iter()
            .filter(|a| domain_actions.contains_key(&a.name) && a.target == Target::Domain)
        {
            (on_progress)(Progress::Started {
                target: a.target,
                name: a.name.clone(),
            });
        }
        let proxy = options.proxy.clone();
        let results = tokio::task::spawn_blocking(move || proxy.apply(&changes))
            .await
            .unwrap_or_default();
        for (domain, i) in domain_actions {
            let a = &plan.actions[i];
            let status = match results.get(&domain) {
                Some(Ok(())) => Status::Done,
                Some(Err(e)) => {
                    Status::Failed(format!("{e}; the live config is unchanged (degraded)"))
                }
                None => Status::Failed("the proxy did not report on this domain".into()),
            };
            outcomes.insert(i, ctx.finish(a, status));
        }
    }

    // Prunes: containers, then databases, then volumes, then networks.
    for target in [
        Target::App,
        Target::Database,
        Target::Volume,
        Target::Network,
    ] {
        for (i, a) in plan.actions.iter().enumerate() {
            if is_prune(a) && a.target == target {
                let o = ctx.run(a).await;
                outcomes.insert(i, o);
            }
        }
    }
    Report {
        outcomes: outcomes.into_values().collect(),
    }
}

struct Ctx<'a> {
    desired: &'a Desired,
    images_present: tokio::sync::Mutex<BTreeSet<String>>,
    docker: &'a dyn DockerApi,
    options: &'a ApplyOptions,
    on_progress: OnProgress,
}

impl Ctx<'_> {
    /// A declared shared database and its server's driver.
    fn shared(
        &self,
        name: &str,
    ) -> Result<
        (
            &crate::databases::DesiredDatabase,
            Arc<dyn crate::drivers::dbserver::DbServerApi>,
        ),
        String,
    > {
        let db = self
            .desired
            .databases
            .get(name)
            .ok_or_else(|| format!("database {name} is not declared"))?;
        let address = db.server.clone().ok_or_else(|| {
            format!(
                "server {} has no admin password in the secret store",
                db.server_name.as_deref().unwrap_or("?")
            )
        })?;
        Ok((db, crate::drivers::dbserver::connect(address)))
    }

    fn record(&self, name: &str) -> Result<crate::state::records::SharedRecord, String> {
        let dir = self
            .options
            .state_dir
            .as_ref()
            .ok_or("no state directory for database records")?;
        crate::state::records::Records::new(dir, &self.options.instance)
            .load()
            .remove(name)
            .ok_or_else(|| format!("berth has no record of database {name}"))
    }

    /// The driver of the server a recorded (no longer declared) database is on: the
    /// server must still be in Settings, with its admin password.
    fn recorded_server(
        &self,
        record: &crate::state::records::SharedRecord,
    ) -> Result<Arc<dyn crate::drivers::dbserver::DbServerApi>, String> {
        let address = self
            .desired
            .servers
            .get(&record.server)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "server {} is no longer in Settings (or its admin password is missing): \
                     database {} cannot be dropped",
                    record.server, record.database
                )
            })?;
        Ok(crate::drivers::dbserver::connect(address))
    }

    fn records(
        &self,
        change: impl FnOnce(&crate::state::records::Records) -> std::io::Result<()>,
    ) -> Result<(), String> {
        match &self.options.state_dir {
            Some(dir) => change(&crate::state::records::Records::new(
                dir,
                &self.options.instance,
            ))
            .map_err(|e| format!("failed to write the database records: {e}")),
            None => Ok(()),
        }
    }

    fn finish(&self, a: &Action, result: Status) -> Outcome {
        let o = Outcome {
            target: a.target,
            name: a.name.clone(),
            op: a.op,
            result,
        };
        (self.on_progress)(Progress::Finished(o.clone()));
        o
    }

    async fn run(&self, a: &Action) -> Outcome {
        match a.op {
            Op::Noop => return self.finish(a, Status::Unchanged),
            Op::Conflict => return self.finish(a, Status::Conflict(a.reasons.join("; "))),
            _ => {}
        }
        (self.on_progress)(Progress::Started {
            target: a.target,
            name: a.name.clone(),
        });
        let mut result = Status::Done;
        if let Some(app) = self
            .desired
            .apps
            .get(&a.name)
            .filter(|_| a.target == Target::App)
        {
            let needs_image = a
                .steps
                .iter()
                .any(|s| matches!(s, Step::Run { .. } | Step::Replace { .. }));
            if needs_image {
                if let Err(e) = self.ensure_image(&app.name, &app.spec.image).await {
                    return self.finish(a, Status::Failed(self.scrub(&e)));
                }
            }
        }
        for step in &a.steps {
            if let Err(e) = self.step(step).await {
                result = Status::Failed(self.scrub(&e));
                break;
            }
        }
        self.finish(a, result)
    }

    /// Removes every secret value from a message that may echo what the daemon got.
    fn scrub(&self, message: &str) -> String {
        redact_all(message, &self.desired.secret_values())
    }

    async fn ensure_image(&self, app: &str, image: &str) -> Result<(), String> {
        // Apps often share an image: ask the daemon once per apply.
        if self.images_present.lock().await.contains(image) {
            return Ok(());
        }
        let present = self
            .docker
            .image_exists(image)
            .await
            .map_err(|e| e.to_string())?;
        if !present {
            let on_progress = self.on_progress.clone();
            let name = image.to_owned();
            let app = app.to_owned();
            let report = move |p: PullProgress| {
                on_progress(Progress::Pull {
                    app: app.clone(),
                    image: name.clone(),
                    progress: p,
                });
            };
            self.docker.pull_image(image, &report).await.map_err(|e| {
                format!(
                    "{e}; the image is neither on this host nor pullable: build or load it \
                     here, or check the registry and its credentials"
                )
            })?;
        }
        self.images_present.lock().await.insert(image.to_owned());
        Ok(())
    }

    async fn step(&self, step: &Step) -> Result<(), String> {
        let d = self.docker;
        let labels =
            |kind: &str, name: &str| observe::owner_labels(&self.options.instance, kind, name);
        match step {
            Step::CreateNetwork { name, internal } => d
                .create_network(name, &labels("network", name), *internal)
                .await
                .map_err(|e| e.to_string()),
            Step::RemoveNetwork { name } => d.remove_network(name).await.map_err(|e| e.to_string()),
            Step::CreateVolume {
                name,
                app,
                volume,
                delete_on_prune,
            } => {
                let mut l = labels("volume", app);
                l.insert(VOLUME.to_owned(), volume.clone());
                l.insert(
                    DELETION_POLICY.to_owned(),
                    if *delete_on_prune { "delete" } else { "retain" }.to_owned(),
                );
                d.create_volume(name, &l).await.map_err(|e| e.to_string())
            }
            Step::RemoveVolume { name } => d.remove_volume(name).await.map_err(|e| e.to_string()),
            Step::EnsureDatabase { name } => {
                let (db, server) = self.shared(name)?;
                let password = db.password.as_ref().ok_or_else(|| {
                    format!(
                        "no password yet in secret {}",
                        crate::databases::password_secret(name)
                    )
                })?;
                server
                    .ensure(&db.database, &db.user, password)
                    .await
                    .map_err(|e| e.to_string())
            }
            Step::RecordDatabase { name } => {
                let db = self
                    .desired
                    .databases
                    .get(name)
                    .ok_or_else(|| format!("database {name} is not declared"))?;
                let engine = db.server.as_ref().map(|s| s.engine).ok_or_else(|| {
                    format!("database {name}: its server's admin password is missing")
                })?;
                self.records(|r| {
                    r.put(
                        name,
                        crate::state::records::SharedRecord {
                            server: db.server_name.clone().unwrap_or_default(),
                            engine,
                            database: db.database.clone(),
                            user: db.user.clone(),
                            deletion_policy: db.deletion_policy,
                        },
                    )
                })
            }
            Step::DropDatabase { name } => {
                let record = self.record(name)?;
                let server = self.recorded_server(&record)?;
                crate::drivers::dbserver::DbServerApi::drop(
                    server.as_ref(),
                    &record.database,
                    &record.user,
                )
                .await
                .map_err(|e| e.to_string())
            }
            Step::ForgetDatabase { name } => self.records(|r| r.remove(name)),
            Step::Run { app, replica } => {
                let app = self.app(app)?;
                let name = container_name(&app.name, *replica);
                self.start_new(app, *replica, &name).await
            }
            Step::Replace {
                app,
                replica,
                old_id,
                old_name,
                start_first,
            } => {
                let app = self.app(app)?;
                let canonical = container_name(&app.name, *replica);
                if *start_first {
                    let temp = format!("{canonical}-{}", &app.hash[..8]);
                    // A leftover from an interrupted update may hold the name.
                    let _ = d.remove_container(&temp).await;
                    self.start_new(app, *replica, &temp).await.map_err(|e| {
                        format!("{e}; the old container {old_name} keeps running (degraded)")
                    })?;
                    self.remove(old_id).await?;
                    d.rename_container(&temp, &canonical)
                        .await
                        .map_err(|e| e.to_string())
                } else {
                    self.remove(old_id).await?;
                    self.start_new(app, *replica, &canonical).await
                }
            }
            Step::Start { id, name } => {
                d.start_container(id).await.map_err(|e| e.to_string())?;
                let app = self
                    .desired
                    .apps
                    .values()
                    .find(|a| (1..=a.replicas).any(|r| container_name(&a.name, r) == *name));
                match app {
                    Some(app) => self.wait_ready(app, id, name).await,
                    None => Ok(()),
                }
            }
            Step::Rename { id, to, .. } => {
                d.rename_container(id, to).await.map_err(|e| e.to_string())
            }
            Step::Remove { id, .. } => self.remove(id).await,
            // Proxy files are written in one batch (see `apply`).
            Step::WriteProxyFile { .. } | Step::RemoveProxyFile { .. } => Ok(()),
        }
    }

    fn app(&self, name: &str) -> Result<&DesiredApp, String> {
        self.desired
            .apps
            .get(name)
            .ok_or_else(|| format!("app {name} is not in the desired state"))
    }

    async fn remove(&self, id: &str) -> Result<(), String> {
        match self.docker.stop_container(id, 10).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
        match self.docker.remove_container(id).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Creates, starts and waits for a container; removes it again if it never gets ready.
    async fn start_new(&self, app: &DesiredApp, replica: u32, name: &str) -> Result<(), String> {
        let config = container_config(app, replica, name, self.desired, &self.options.instance);
        let id = self
            .docker
            .create_container(&config)
            .await
            .map_err(|e| match e {
                e @ DockerError::Call {
                    status: Some(409), ..
                } => format!("{e}; a container named {name} already exists: remove or rename it"),
                e => e.to_string(),
            })?;
        let started = self
            .docker
            .start_container(&id)
            .await
            .map_err(|e| e.to_string());
        let ready = match started {
            Ok(()) => self.wait_ready(app, &id, name).await,
            Err(e) => Err(e),
        };
        if ready.is_err() {
            let _ = self.docker.remove_container(&id).await;
        }
        ready
    }

    async fn wait_ready(&self, app: &DesiredApp, id: &str, name: &str) -> Result<(), String> {
        (self.on_progress)(Progress::Waiting {
            container: name.to_owned(),
        });
        let health = app.spec.health.as_ref();
        let grace = health.map_or(0, |h| h.start_period_ms);
        let deadline = Instant::now() + self.options.ready_timeout + Duration::from_millis(grace);
        let mut running_polls = 0;
        let mut first_start: Option<String> = None;
        let mut last_error = String::from("not checked yet");
        loop {
            let state = self
                .docker
                .container_state(id)
                .await
                .map_err(|e| e.to_string())?;
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
                return Err(format!(
                    "container {name} exited{code}{restarts} before it was ready"
                ));
            }
            let ready = match health.map(|h| &h.probe) {
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
                        return Err(format!(
                            "container {name} is unhealthy (Docker health check)"
                        ));
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
                return Err(format!(
                    "container {name} was not ready after {}s: {last_error}",
                    (self.options.ready_timeout.as_millis() as u64 + grace) / 1000
                ));
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

/// A plain HTTP/1.0 GET; 2xx and 3xx are healthy.
async fn probe_http(ip: &str, port: u16, path: &str, limit: Duration) -> Result<(), String> {
    let addr = format!("{ip}:{port}");
    let attempt = async {
        let mut stream = TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\nUser-Agent: berth\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await.map_err(|e| e.to_string())?;
        let line = String::from_utf8_lossy(&head[..n]);
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("GET {path} on {addr}: not an HTTP answer"))?;
        if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("GET {path} on {addr} answered {status}"))
        }
    };
    timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("GET {path} on {addr} timed out")))
}

/// The container to create for an app's replica: labels, env with secrets resolved,
/// mounts, ports, limits, health check, network and alias.
pub fn container_config(
    app: &DesiredApp,
    replica: u32,
    name: &str,
    desired: &Desired,
    instance: &str,
) -> ContainerConfig {
    let spec = &app.spec;
    let mut labels = observe::owner_labels(instance, app.kind, &app.name);
    labels.insert(SPEC_HASH.to_owned(), app.hash.clone());
    labels.insert(SPEC.to_owned(), spec.to_json());
    labels.insert(REVISION.to_owned(), desired.revision.clone());
    labels.insert(REPLICA.to_owned(), replica.to_string());
    let policy = match app.deletion_policy {
        crate::manifest::model::DeletionPolicy::Delete => "delete",
        crate::manifest::model::DeletionPolicy::Retain => "retain",
    };
    labels.insert(DELETION_POLICY.to_owned(), policy.to_owned());
    if let Some(port) = app.host_port {
        labels.insert(HOST_PORT.to_owned(), port.to_string());
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
    let mounts = spec
        .volumes
        .iter()
        .filter_map(|m| {
            let (rest, read_only) = match m.strip_suffix(":ro") {
                Some(r) => (r, true),
                None => (m.as_str(), false),
            };
            let (source, target) = rest.split_once(':')?;
            Some(MountSpec {
                bind: source.starts_with('/'),
                source: source.to_owned(),
                target: target.to_owned(),
                read_only,
            })
        })
        .collect();
    let ports = spec
        .ports
        .iter()
        .filter_map(|p| {
            // hostIp:host:container/protocol; the address may itself hold colons (IPv6).
            let (rest, protocol) = p.rsplit_once('/')?;
            let (rest, container) = rest.rsplit_once(':')?;
            let (host_ip, host) = rest.rsplit_once(':')?;
            Some(PortSpec {
                container: container.parse().ok()?,
                host: host.parse().ok()?,
                host_ip: host_ip.to_owned(),
                protocol: protocol.to_owned(),
            })
        })
        .collect();
    let health = spec.health.as_ref().and_then(|h| match &h.probe {
        Probe::Cmd { cmd } => Some(HealthSpec {
            cmd: cmd.clone(),
            interval_ns: h.interval_ms as i64 * 1_000_000,
            timeout_ns: h.timeout_ms as i64 * 1_000_000,
            retries: i64::from(h.retries),
            start_period_ns: h.start_period_ms as i64 * 1_000_000,
        }),
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
