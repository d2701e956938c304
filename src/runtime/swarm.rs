//! Apps as Docker Swarm services: the service an app gets (labels, environment, secrets
//! as Swarm secrets, mounts, limits and reservations, health check, placement, rolling
//! update and rollback config, networks, ports), created, updated and removed, and
//! waited for until Swarm has its tasks running, or has rolled an update back.
//!
//! Secret variables reach the process as Swarm secrets (files under `/run/secrets/`,
//! never in the service's spec): the task starts through `/bin/sh`, which exports each
//! file's content as its variable and then runs the image's own entrypoint and command.
//! Health commands run the same way. So an app with `secretEnv` needs `/bin/sh` and
//! `cat` in its image under `runtime: swarm`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::{AppRuntime, Running, RuntimeError};
use crate::desired::labels::{
    DELETION_POLICY, HOST_PORT, NAME, REVISION, SPEC, SPEC_HASH, TASK_HASH, owner_labels,
    volume_labels,
};
use crate::desired::service::{plain_env, task_hash};
use crate::desired::{DesiredApp, Probe};
use crate::drivers::docker::{
    DockerApi, DockerError, ImageCommand, SecretRef, ServiceConfig, ServicePort, SwarmApi, TaskInfo,
};
use crate::manifest::model::DeletionPolicy;

/// Called when a service starts waiting for its tasks.
pub type OnWaiting = Arc<dyn Fn(&str) + Send + Sync>;

/// How often a service is looked at while berth waits for it.
const POLL: Duration = Duration::from_millis(500);

/// How many failed tasks of a new spec end the wait of a create (Swarm retries them for
/// ever; an update rolls back by itself).
const FAILURES: usize = 3;

/// The Swarm runtime: apps as services of the swarm whose manager berth talks to.
pub struct Swarm<'a> {
    /// The manager.
    pub docker: &'a dyn DockerApi,
    /// The berth instance whose services these are.
    pub instance: &'a str,
    /// The revision recorded on new specs.
    pub revision: &'a str,
    /// How long a service's tasks may take to run (plus the health check's start
    /// period, for each task of a rolling update).
    pub ready_timeout: Duration,
    /// The entrypoint and command of the images of apps with secrets, read once.
    pub commands: tokio::sync::Mutex<BTreeMap<String, ImageCommand>>,
    /// Waits for services.
    pub on_waiting: OnWaiting,
}

impl Swarm<'_> {
    fn api(&self) -> Result<&dyn SwarmApi, RuntimeError> {
        self.docker.swarm().ok_or(RuntimeError::Unsupported(
            "this Docker daemon has no Swarm calls",
        ))
    }

    /// The secrets `app`'s variables are carried by, with their ids.
    async fn secret_refs(&self, app: &DesiredApp) -> Result<Vec<SecretRef>, RuntimeError> {
        if app.secrets.is_empty() {
            return Ok(Vec::new());
        }
        let listed = self
            .api()?
            .list_secrets(&format!("{NAME}={}", app.name))
            .await?;
        app.secrets
            .iter()
            .map(|(variable, secret)| {
                let name = crate::desired::service::secret_name(&app.name, variable, secret);
                let id = listed
                    .iter()
                    .find(|s| s.name == name)
                    .map(|s| s.id.clone())
                    .ok_or_else(|| {
                        RuntimeError::NotReady(format!(
                            "the Swarm secret {name} of variable {variable} is missing"
                        ))
                    })?;
                Ok(SecretRef {
                    id,
                    name,
                    file: variable.clone(),
                })
            })
            .collect()
    }

    async fn config(&self, app: &DesiredApp) -> Result<ServiceConfig, RuntimeError> {
        let secrets = self.secret_refs(app).await?;
        let command = match secrets.is_empty() {
            true => None,
            false => self.commands.lock().await.get(&app.spec.image).cloned(),
        };
        service_config(app, self.instance, self.revision, secrets, command.as_ref())
    }

    /// The longest a service may take to get all its tasks of the new spec running.
    fn deadline(&self, app: &DesiredApp) -> Instant {
        let health = app.spec.health.as_ref();
        let per_task = Duration::from_millis(health.map_or(0, |h| h.start_period_ms))
            + monitor(app)
            + Duration::from_secs(5);
        Instant::now() + self.ready_timeout + per_task * app.replicas.max(1)
    }

    /// Waits until service `id` runs `app.replicas` tasks of the desired spec and none
    /// of another, or until Swarm rolled its update back or its tasks keep failing.
    async fn wait(&self, app: &DesiredApp, id: &str) -> Result<(), RuntimeError> {
        (self.on_waiting)(&app.name);
        let api = self.api()?;
        let hash = task_hash(&app.spec);
        let deadline = self.deadline(app);
        let mut last = String::from("no task yet");
        loop {
            let service = api.inspect_service(id).await?;
            if let Some(u) = service.update.as_ref() {
                if u.state.starts_with("rollback") && u.state != "rollback_started" {
                    let task = self.failed_task(app, &service.id).await;
                    return Err(RuntimeError::RolledBack(format!(
                        "Swarm rolled the update of service {} back ({}){task}; the previous \
                         spec keeps running",
                        app.name,
                        u.message.trim()
                    )));
                }
                if u.state == "paused" {
                    return Err(RuntimeError::RolledBack(format!(
                        "Swarm paused the update of service {} ({})",
                        app.name,
                        u.message.trim()
                    )));
                }
            }
            let updating = service
                .update
                .as_ref()
                .is_some_and(|u| matches!(u.state.as_str(), "updating" | "rollback_started"));
            let tasks: Vec<TaskInfo> = api
                .list_tasks(&format!("{NAME}={}", app.name))
                .await?
                .into_iter()
                .filter(|t| t.service_id == service.id)
                .collect();
            let new = |t: &&TaskInfo| t.labels.get(TASK_HASH) == Some(&hash);
            let running_new = tasks
                .iter()
                .filter(new)
                .filter(|t| t.state == "running" && t.desired_state == "running")
                .count() as u64;
            let others = tasks
                .iter()
                .filter(|t| !new(t))
                .filter(|t| t.desired_state == "running" || t.state == "running")
                .count();
            if !updating && running_new == u64::from(app.replicas) && others == 0 {
                return Ok(());
            }
            let failed: Vec<&TaskInfo> = tasks
                .iter()
                .filter(new)
                .filter(|t| matches!(t.state.as_str(), "failed" | "rejected"))
                .collect();
            if let Some(t) = failed.iter().max_by(|a, b| a.timestamp.cmp(&b.timestamp)) {
                last = format!("task {}.{} failed: {}", app.name, t.slot, t.error.trim());
            } else if let Some(t) = tasks.iter().filter(new).find(|t| t.state != "running") {
                last = format!(
                    "task {}.{} is {} ({})",
                    app.name, t.slot, t.state, t.message
                );
            }
            if !updating && failed.len() >= FAILURES {
                return Err(RuntimeError::NotReady(format!(
                    "service {}: {} of {} tasks running; {last} ({} failures)",
                    app.name,
                    running_new,
                    app.replicas,
                    failed.len()
                )));
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::NotReady(format!(
                    "service {}: {} of {} tasks running after waiting; {last}",
                    app.name, running_new, app.replicas
                )));
            }
            sleep(POLL).await;
        }
    }

    /// `: task web.2 failed: …` for the newest failed task of the desired spec.
    async fn failed_task(&self, app: &DesiredApp, id: &str) -> String {
        let Ok(api) = self.api() else {
            return String::new();
        };
        let hash = task_hash(&app.spec);
        let Ok(tasks) = api.list_tasks(&format!("{NAME}={}", app.name)).await else {
            return String::new();
        };
        tasks
            .iter()
            .filter(|t| t.service_id == id)
            .filter(|t| t.labels.get(TASK_HASH) == Some(&hash))
            .filter(|t| !t.error.is_empty())
            .max_by(|a, b| a.timestamp.cmp(&b.timestamp))
            .map(|t| format!(": task {}.{} failed: {}", app.name, t.slot, t.error.trim()))
            .unwrap_or_default()
    }
}

/// Why no task container of a service can run a command (a backup) here.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The daemon failed.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// The daemon is not a swarm manager.
    #[error("the Docker daemon berth talks to is not a swarm manager: it cannot find service {0}")]
    NoSwarm(String),
    /// No task of the service runs.
    #[error("no task of service {0} is running")]
    NotRunning(String),
    /// The running task is on another node.
    #[error(
        "the task of service {service} runs on node {node}, and the Docker daemon berth talks to \
         is node {here}: a command runs in a task's container only through the daemon of its \
         node. Pin the database to node {here} (`placement: {{constraints: \
         [node.hostname=={here}]}}`), or run berth with DOCKER_HOST pointing at {node}'s daemon"
    )]
    OtherNode {
        /// The service.
        service: String,
        /// The node its task runs on (host name).
        node: String,
        /// The node berth's daemon is (host name).
        here: String,
    },
}

/// The container of service `service`'s running task, when that task runs on the node
/// berth's daemon is (only that daemon can run a command in it).
pub async fn task_container(docker: &dyn DockerApi, service: &str) -> Result<String, TaskError> {
    let api = docker
        .swarm()
        .ok_or_else(|| TaskError::NoSwarm(service.to_owned()))?;
    let node = api.swarm_node().await?;
    if !node.manager {
        return Err(TaskError::NoSwarm(service.to_owned()));
    }
    let found = api.inspect_service(service).await?;
    let task = api
        .list_tasks(&format!("{NAME}={service}"))
        .await?
        .into_iter()
        .filter(|t| t.service_id == found.id)
        .find(|t| t.state == "running" && t.desired_state == "running")
        .ok_or_else(|| TaskError::NotRunning(service.to_owned()))?;
    if task.node_id == node.node_id {
        return Ok(task.container_id);
    }
    let nodes = api.list_nodes().await?;
    let hostname = |id: &str| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .map_or_else(|| id.to_owned(), |n| n.hostname.clone())
    };
    Err(TaskError::OtherNode {
        service: service.to_owned(),
        node: hostname(&task.node_id),
        here: hostname(&node.node_id),
    })
}

/// `cmd`, started through the shell step that loads the task's secret files into its
/// environment first: what the task's process, its health command or a command run
/// in its container needs to see its secret variables.
pub fn with_secrets(cmd: &[String]) -> Vec<String> {
    let mut wrapped = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        LOAD_SECRETS.to_owned(),
        "berth".to_owned(),
    ];
    wrapped.extend(cmd.iter().cloned());
    wrapped
}

/// How long Swarm watches each updated task before it goes on: at least the health
/// check's start period and one interval, at least 5 seconds.
pub fn monitor(app: &DesiredApp) -> Duration {
    let health = app
        .spec
        .health
        .as_ref()
        .map_or(0, |h| h.start_period_ms + h.interval_ms);
    Duration::from_millis(health).max(Duration::from_secs(5))
}

/// The shell step that exports each secret file of the task (`/run/secrets/<VARIABLE>`)
/// as its variable, then runs the command it is given.
const LOAD_SECRETS: &str = "for f in /run/secrets/*; do [ -f \"$f\" ] && export \"${f##*/}=$(cat \"$f\")\"; \
                            done; exec \"$@\"";

/// The service an app gets. `command` is the image's own entrypoint and command, needed
/// (and only then given) when the app has secrets: its process is started through the
/// shell step that loads them.
pub fn service_config(
    app: &DesiredApp,
    instance: &str,
    revision: &str,
    secrets: Vec<SecretRef>,
    command: Option<&ImageCommand>,
) -> Result<ServiceConfig, RuntimeError> {
    let spec = &app.spec;
    let service = spec
        .service
        .clone()
        .unwrap_or_else(|| crate::desired::service::ServiceSpec {
            replicas: app.replicas,
            constraints: Vec::new(),
            spread: Vec::new(),
            max_replicas_per_node: None,
            endpoint_mode: "vip".into(),
            reserve_cpus: None,
            reserve_memory: None,
            update_order: "start-first".into(),
            host_port: None,
        });
    let mut labels = owner_labels(instance, app.kind, &app.name);
    labels.insert(SPEC_HASH.to_owned(), app.hash.clone());
    labels.insert(SPEC.to_owned(), spec.to_json());
    labels.insert(REVISION.to_owned(), revision.to_owned());
    let delete = app.deletion_policy == DeletionPolicy::Delete;
    labels.insert(
        DELETION_POLICY.to_owned(),
        if delete { "delete" } else { "retain" }.to_owned(),
    );
    if let Some(port) = app.host_port {
        labels.insert(HOST_PORT.to_owned(), port.host.to_string());
    }
    let mut container_labels = owner_labels(instance, app.kind, &app.name);
    container_labels.insert(TASK_HASH.to_owned(), task_hash(spec));
    for (k, v) in &spec.labels {
        labels.insert(k.clone(), v.clone());
        container_labels.insert(k.clone(), v.clone());
    }
    let with_files = !secrets.is_empty();
    let (entrypoint, args) = match (!with_files, command) {
        (true, _) => (None, spec.command.clone()),
        (false, Some(image)) => {
            let mut args = image.entrypoint.clone();
            args.extend(spec.command.clone().unwrap_or_else(|| image.cmd.clone()));
            if args.is_empty() {
                return Err(RuntimeError::NotReady(format!(
                    "image {} has no entrypoint or command, and app {} names none",
                    spec.image, app.name
                )));
            }
            (Some(with_secrets(&[])), Some(args))
        }
        (false, None) => {
            return Err(RuntimeError::NotReady(format!(
                "the entrypoint of image {} is not known: the image is not on the manager",
                spec.image
            )));
        }
    };
    let mounts = super::mount_specs(spec);
    let volume_labels = app
        .volumes
        .iter()
        .map(|v| {
            let delete = v.deletion_policy == DeletionPolicy::Delete;
            (
                v.docker_name.clone(),
                volume_labels(instance, &app.name, &v.volume, delete),
            )
        })
        .collect();
    let health = spec.health.as_ref().map(|h| {
        let cmd = match &h.probe {
            Probe::Cmd { cmd } if with_files => with_secrets(cmd),
            Probe::Cmd { cmd } => cmd.clone(),
            // Swarm runs health checks in the task's container, on whatever node.
            probe => super::probe_command(probe).unwrap_or_default(),
        };
        super::health_spec(h, cmd)
    });
    let restart = match spec.restart.as_str() {
        "no" => "none",
        "on-failure" => "on-failure",
        _ => "any",
    };
    Ok(ServiceConfig {
        name: app.name.clone(),
        labels,
        container_labels,
        image: spec.image.clone(),
        entrypoint,
        args,
        env: plain_env(spec),
        mounts,
        volume_labels,
        secrets,
        health,
        user: spec.user.clone(),
        init: spec.init,
        nano_cpus: spec.cpus.map(|c| (c * 1e9) as i64),
        memory: spec.memory.map(|m| m as i64),
        reserve_nano_cpus: service.reserve_cpus.map(|c| (c * 1e9) as i64),
        reserve_memory: service.reserve_memory.map(|m| m as i64),
        restart: restart.to_owned(),
        networks: std::iter::once(spec.network.clone())
            .chain(spec.networks.iter().cloned())
            .collect(),
        replicas: u64::from(service.replicas),
        constraints: service.constraints.clone(),
        spread: service.spread.clone(),
        max_replicas_per_node: service.max_replicas_per_node.map_or(0, u64::from),
        endpoint_mode: service.endpoint_mode.clone(),
        ports: spec
            .ports
            .iter()
            .map(|p| ServicePort {
                target: p.container,
                published: p.host,
                protocol: p.protocol.as_str().to_owned(),
                ingress: !p.binds_node(),
            })
            // The port the proxy on the manager reaches it on, through the mesh.
            .chain(app.host_port.map(|h| ServicePort {
                target: h.container,
                published: h.host,
                protocol: "tcp".to_owned(),
                ingress: true,
            }))
            .collect(),
        start_first: service.start_first(),
        monitor_ns: monitor(app).as_nanos() as i64,
    })
}

#[async_trait::async_trait]
impl AppRuntime for Swarm<'_> {
    async fn prepare_image(&self, app: &DesiredApp) -> Result<(), RuntimeError> {
        // Swarm's nodes pull the image themselves; the manager needs it only to know the
        // entrypoint a task with secrets is started through.
        if app.secrets.is_empty() || self.commands.lock().await.contains_key(&app.spec.image) {
            return Ok(());
        }
        let api = self.api()?;
        let command = match api.image_command(&app.spec.image).await? {
            Some(c) => c,
            None => {
                self.docker
                    .pull_image(&app.spec.image, &|_| {})
                    .await
                    .map_err(RuntimeError::Pull)?;
                api.image_command(&app.spec.image).await?.ok_or_else(|| {
                    RuntimeError::Pull(DockerError::Call {
                        op: "inspect image",
                        target: app.spec.image.clone(),
                        message: "not on the manager after a pull".into(),
                        status: None,
                    })
                })?
            }
        };
        self.commands
            .lock()
            .await
            .insert(app.spec.image.clone(), command);
        Ok(())
    }

    async fn create_service(&self, app: &DesiredApp) -> Result<(), RuntimeError> {
        let config = self.config(app).await?;
        let id = self
            .api()?
            .create_service(&config)
            .await
            .map_err(|e| match e {
                e @ DockerError::Call {
                    status: Some(409), ..
                } => RuntimeError::NameTaken {
                    name: app.name.clone(),
                    source: e,
                },
                e => e.into(),
            })?;
        self.wait(app, &id).await
    }

    async fn update_service(
        &self,
        app: &DesiredApp,
        id: &str,
        version: u64,
    ) -> Result<(), RuntimeError> {
        let config = self.config(app).await?;
        self.api()?.update_service(id, version, &config).await?;
        self.wait(app, id).await
    }

    async fn remove_service(&self, id: &str) -> Result<(), RuntimeError> {
        match self.api()?.remove_service(id).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        // Swarm stops the tasks in the background; what follows (a network, a volume)
        // can go only once their containers on this node are gone.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = self.docker.list_containers().await?.into_iter().any(|c| {
                c.labels
                    .get("com.docker.swarm.service.id")
                    .map(String::as_str)
                    == Some(id)
            });
            if !left || Instant::now() >= deadline {
                return Ok(());
            }
            sleep(POLL).await;
        }
    }

    async fn run(&self, _app: &DesiredApp, _replica: u32) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(CONTAINER_STEP))
    }

    async fn replace(
        &self,
        _app: &DesiredApp,
        _old: Running<'_>,
        _how: super::Replace,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(CONTAINER_STEP))
    }

    async fn start(
        &self,
        _app: Option<&DesiredApp>,
        _id: &str,
        _name: &str,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(CONTAINER_STEP))
    }

    async fn rename(&self, _id: &str, _to: &str) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(CONTAINER_STEP))
    }

    /// Removes a container left from `runtime: docker`.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        match self.docker.remove_container(id).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

const CONTAINER_STEP: &str = "under `runtime: swarm` Swarm runs the tasks: a plan for containers \
                              cannot be applied";

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::service_config;
    use crate::apply::{ApplyOptions, Report, Status};
    use crate::drivers::docker::DockerApi;
    use crate::drivers::memory::MemoryDocker;
    use crate::plan::{Op, Plan, Step};
    use crate::reconcile::{self, PassOptions};
    use crate::state::StateDir;
    use crate::state::secrets::Secret;

    /// A one-node swarm with app `blog` (two tasks, a secret) and its managed database.
    struct Cluster {
        docker: Arc<MemoryDocker>,
        manifests: tempfile::TempDir,
        state: StateDir,
        _state: tempfile::TempDir,
    }

    impl Cluster {
        fn new() -> Cluster {
            let docker = Arc::new(MemoryDocker::new());
            docker.init_swarm();
            for image in ["ok:1", "ok:2", "bad:1", "postgres:16"] {
                docker.add_image(image);
            }
            docker.exit_at_once("bad:1");
            let state = tempfile::tempdir().unwrap();
            let cluster = Cluster {
                docker,
                manifests: tempfile::tempdir().unwrap(),
                state: StateDir::new(state.path(), "test"),
                _state: state,
            };
            cluster.secret("mail", "first-value");
            cluster
        }

        fn secret(&self, name: &str, value: &str) {
            self.state.secrets().put(&Secret::new(name, value)).unwrap();
        }

        fn declare(&self, image: &str, env: &str, with_db: bool) {
            let db = "apiVersion: berth/v1\nkind: Database\nmetadata: {name: blog-db}\nspec:\n  \
                      engine: postgres\n  placement: {constraints: [node.labels.db==main]}\n---\n";
            let yaml = format!(
                "apiVersion: berth/v1\nkind: Settings\nmetadata: {{name: host}}\nspec: \
                 {{runtime: swarm, proxy: {{kind: none}}}}\n---\n{}apiVersion: berth/v1\nkind: \
                 App\nmetadata: {{name: blog}}\nspec:\n  image: {image}\n  replicas: 2\n  env: \
                 {{PAGE: {env}}}\n  secretEnv: {{MAIL_PASSWORD: mail}}\n  volumes: [{{name: \
                 content, mount: /data}}]\n{}",
                if with_db { db } else { "" },
                if with_db {
                    "  databases: [blog-db]\n"
                } else {
                    ""
                },
            );
            std::fs::write(self.manifests.path().join("all.yaml"), yaml).unwrap();
        }

        async fn plan(&self) -> Plan {
            let manifests = crate::manifest::load_dir(self.manifests.path()).expect("valid");
            let options = PassOptions {
                instance: "test".into(),
                apply: false,
                no_prune: false,
            };
            let docker: &dyn DockerApi = self.docker.as_ref();
            reconcile::prepare(&manifests, "r", &self.state, Some(docker), &options)
                .await
                .expect("planned")
                .plan
        }

        async fn pass(&self, revision: &str) -> (Plan, Report) {
            let manifests = crate::manifest::load_dir(self.manifests.path()).expect("valid");
            let options = PassOptions {
                instance: "test".into(),
                apply: true,
                no_prune: false,
            };
            let docker: Arc<dyn DockerApi> = self.docker.clone();
            let prepared = reconcile::prepare(
                &manifests,
                revision,
                &self.state,
                Some(docker.as_ref()),
                &options,
            )
            .await
            .expect("planned");
            let apply = ApplyOptions {
                instance: "test".into(),
                ready_timeout: std::time::Duration::from_secs(5),
                ..ApplyOptions::default()
            };
            let report =
                reconcile::execute(&prepared, &self.state, docker, apply, Arc::new(|_| {})).await;
            (prepared.plan, report)
        }

        fn app_action(plan: &Plan) -> &crate::plan::Action {
            plan.actions.iter().find(|a| a.name == "blog").unwrap()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_app_becomes_a_service_and_is_kept_as_declared() {
        let cluster = Cluster::new();
        cluster.declare("ok:1", "one", true);
        let (plan, report) = cluster.pass("r1").await;
        assert_eq!(report.failures(), 0, "{report:?}");
        let blog = Cluster::app_action(&plan);
        assert_eq!(blog.op, Op::Create);
        assert_eq!(
            blog.reasons,
            ["new app (ok:1) as a Swarm service of 2 tasks"]
        );
        let services = cluster.docker.services();
        assert_eq!(services.keys().collect::<Vec<_>>(), ["blog", "blog-db"]);
        let svc = &services["blog"];
        assert_eq!(svc.replicas, 2);
        assert!(svc.start_first);
        assert_eq!(svc.networks, ["berth", "berth-db"]);
        assert!(svc.env.contains(&"PAGE=one".to_owned()), "{:?}", svc.env);
        assert!(svc.env.iter().all(|e| !e.contains("first-value")));
        // The secret travels as a Swarm secret, loaded by the shell step.
        assert_eq!(svc.secrets.len(), 3, "{:?}", svc.secrets);
        let mail = svc
            .secrets
            .iter()
            .find(|s| s.file == "MAIL_PASSWORD")
            .unwrap();
        assert_eq!(cluster.docker.swarm_secrets()[&mail.name], "first-value");
        let entry = svc.entrypoint.as_ref().unwrap();
        assert_eq!(entry[..2], ["/bin/sh", "-c"]);
        assert!(
            entry[2].starts_with("for f in /run/secrets/*;"),
            "{entry:?}"
        );
        assert_eq!(svc.args.as_deref(), Some(&["serve".to_owned()][..]));
        let db = &services["blog-db"];
        assert_eq!(db.constraints, ["node.labels.db==main"]);
        assert_eq!(db.replicas, 1);
        assert_eq!(db.networks, ["berth-db"]);

        // In sync: nothing to do, and the plan says where the tasks run.
        let plan = cluster.plan().await;
        assert_eq!(
            plan.changes().count(),
            0,
            "{:?}",
            plan.changes().collect::<Vec<_>>()
        );
        let blog = Cluster::app_action(&plan);
        assert_eq!(blog.reasons, ["2/2 tasks running on memory (2)"]);

        // Scaled by hand: scaled back.
        cluster.docker.scale_by_hand("blog", 5);
        let (plan, report) = cluster.pass("r1").await;
        let blog = Cluster::app_action(&plan);
        assert_eq!(blog.reasons, ["replicas 5 → 2 (scaled by hand, drift)"]);
        assert!(blog.drift);
        assert_eq!(report.failures(), 0, "{report:?}");
        assert_eq!(cluster.docker.services()["blog"].replicas, 2);

        // A new secret value: a new Swarm secret, the old one removed once unused.
        let old = mail.name.clone();
        cluster.secret("mail", "second-value");
        let (plan, report) = cluster.pass("r2").await;
        assert_eq!(report.failures(), 0, "{report:?}");
        let blog = Cluster::app_action(&plan);
        assert_eq!(blog.reasons, ["secret MAIL_PASSWORD changed"]);
        let secrets = cluster.docker.swarm_secrets();
        assert!(!secrets.contains_key(&old), "{secrets:?}");
        assert!(secrets.values().any(|v| v == "second-value"));
        assert!(!secrets.values().any(|v| v == "first-value"));

        // Removed by hand: made again (drift).
        cluster.docker.remove_service_by_hand("blog");
        let (plan, report) = cluster.pass("r2").await;
        assert_eq!(report.failures(), 0, "{report:?}");
        assert_eq!(
            Cluster::app_action(&plan).reasons,
            ["service missing (drift)"]
        );
        assert!(cluster.docker.services().contains_key("blog"));
    }

    /// nginx on the manager reaches an app through a port Swarm publishes on every
    /// node (its routing mesh): a port of `hostPorts`, in ingress mode, kept across passes.
    #[tokio::test(start_paused = true)]
    async fn a_proxy_on_the_manager_reaches_apps_through_ingress_ports() {
        let cluster = Cluster::new();
        let conf = tempfile::tempdir().unwrap();
        let yaml = format!(
            "apiVersion: berth/v1\nkind: Settings\nmetadata: {{name: host}}\nspec:\n  runtime: \
             swarm\n  hostPorts: {{from: 8100, to: 8199}}\n  proxy: {{kind: nginx, configDir: {}}}\n\
             ---\napiVersion: berth/v1\nkind: App\nmetadata: {{name: blog}}\nspec:\n  image: \
             ok:1\n  port: 2368\n---\napiVersion: berth/v1\nkind: Domain\nmetadata: {{name: \
             blog}}\nspec:\n  hosts: [blog.example.com]\n  app: blog\n",
            conf.path().display()
        );
        std::fs::write(cluster.manifests.path().join("all.yaml"), yaml).unwrap();
        let manifests = crate::manifest::load_dir(cluster.manifests.path()).expect("valid");
        let options = PassOptions {
            instance: "test".into(),
            apply: false,
            no_prune: false,
        };
        let docker: &dyn DockerApi = cluster.docker.as_ref();
        let prepared = reconcile::prepare(&manifests, "r", &cluster.state, Some(docker), &options)
            .await
            .expect("planned");
        let blog = &prepared.desired.apps["blog"];
        assert_eq!(
            blog.host_port.map(|h| (h.host, h.container)),
            Some((8100, 2368))
        );
        let service = blog.spec.service.as_ref().unwrap();
        assert_eq!(
            service.host_port.as_deref(),
            Some("8100:2368"),
            "in the spec"
        );
        assert!(
            service.start_first(),
            "an ingress port does not force stop-first"
        );
        let file = &prepared.desired.proxy_files["blog"].content;
        assert!(file.contains("proxy_pass http://127.0.0.1:8100;"), "{file}");
        let config = service_config(blog, "test", "r", Vec::new(), None).unwrap();
        assert_eq!(
            config.ports,
            [crate::drivers::docker::ServicePort {
                target: 2368,
                published: 8100,
                protocol: "tcp".into(),
                ingress: true,
            }]
        );
        assert_eq!(config.labels["berth.host-port"], "8100");
    }

    /// Observation is a few list calls whatever the number of services: never one
    /// inspect per service on a pass that changes nothing.
    #[tokio::test(start_paused = true)]
    async fn a_pass_that_changes_nothing_lists_and_never_inspects() {
        let cluster = Cluster::new();
        let mut yaml = String::from(
            "apiVersion: berth/v1\nkind: Settings\nmetadata: {name: host}\nspec: {runtime: \
             swarm, proxy: {kind: none}}\n",
        );
        for n in 0..40 {
            yaml.push_str(&format!(
                "---\napiVersion: berth/v1\nkind: App\nmetadata: {{name: app{n}}}\nspec:\n  \
                 image: ok:1\n  replicas: 2\n  secretEnv: {{MAIL: mail}}\n"
            ));
        }
        std::fs::write(cluster.manifests.path().join("all.yaml"), yaml).unwrap();
        let (_, report) = cluster.pass("r1").await;
        assert_eq!(report.failures(), 0, "{report:?}");
        cluster.docker.take_swarm_calls();
        let plan = cluster.plan().await;
        assert_eq!(plan.changes().count(), 0);
        assert_eq!(plan.summary.unchanged, 41);
        let mut calls = cluster.docker.take_swarm_calls();
        calls.sort_unstable();
        assert_eq!(
            calls,
            [
                "list_nodes",
                "list_secrets",
                "list_services",
                "list_tasks",
                "swarm_node"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_update_swarm_rolls_back_is_a_failure_with_swarms_words() {
        let cluster = Cluster::new();
        cluster.declare("ok:1", "one", false);
        let (_, report) = cluster.pass("r1").await;
        assert_eq!(report.failures(), 0, "{report:?}");
        cluster.declare("bad:1", "one", false);
        let (plan, report) = cluster.pass("r2").await;
        assert_eq!(Cluster::app_action(&plan).reasons, ["image ok:1 → bad:1"]);
        let outcome = report.outcomes.iter().find(|o| o.name == "blog").unwrap();
        let Status::Failed(message) = &outcome.result else {
            panic!("{outcome:?}");
        };
        assert!(
            message.starts_with("Swarm rolled the update of service blog back (rollback completed"),
            "{message}"
        );
        assert_eq!(cluster.docker.services()["blog"].image, "ok:1");
        // The next plan tries again, saying what Swarm did.
        let plan = cluster.plan().await;
        let blog = Cluster::app_action(&plan);
        assert_eq!(blog.op, Op::Update);
        assert!(
            blog.reasons[1].starts_with("Swarm rolled back its last update (rollback completed"),
            "{:?}",
            blog.reasons
        );
        // Pruned: the service and its secrets go, the volume stays.
        std::fs::write(
            cluster.manifests.path().join("all.yaml"),
            "apiVersion: berth/v1\nkind: Settings\nmetadata: {name: host}\nspec: {runtime: swarm}\n",
        )
        .unwrap();
        let (plan, report) = cluster.pass("r3").await;
        assert_eq!(report.failures(), 0, "{report:?}");
        let blog = Cluster::app_action(&plan);
        assert_eq!(blog.op, Op::Delete);
        assert!(matches!(blog.steps[0], Step::RemoveService { .. }));
        assert!(cluster.docker.services().is_empty());
        assert!(cluster.docker.swarm_secrets().is_empty());
        let volumes = cluster.docker.list_volumes().await.unwrap();
        assert_eq!(volumes.len(), 1, "{volumes:?}");
    }
}
