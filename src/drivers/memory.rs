//! An in-memory Docker daemon, for tests: containers with labels, state, health and
//! addresses, networks, volumes, the images present, an event stream — and failures
//! on demand (a create that fails for an image, a container that exits at once or
//! never gets healthy, a daemon that cannot be reached).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::docker::{
    ContainerConfig, ContainerEvent, ContainerInfo, ContainerState, DockerApi, DockerError,
    EventStream, ImageCommand, NetworkInfo, NodeInfo, PullProgress, SecretInfo, ServiceConfig,
    ServiceInfo, SwarmApi, SwarmNode, TaskInfo, UpdateState, VolumeInfo,
};

/// A fake daemon; every method of [`DockerApi`] acts on what it holds. For tests.
#[derive(Debug, Default)]
pub struct MemoryDocker {
    state: Mutex<State>,
    /// Swarm mode, once [`MemoryDocker::init_swarm`] made it a manager.
    swarm: Mutex<Option<Swarm>>,
    /// Swarm calls made, by name.
    swarm_calls: Mutex<Vec<&'static str>>,
}

#[derive(Debug, Default)]
struct State {
    containers: BTreeMap<String, Container>,
    networks: BTreeMap<String, NetworkInfo>,
    volumes: BTreeMap<String, VolumeInfo>,
    images: BTreeSet<String>,
    created: u64,
    started: u64,
    unreachable: bool,
    create_fails: BTreeSet<String>,
    exits_at_once: BTreeSet<String>,
    never_healthy: BTreeSet<String>,
    listeners: Vec<Listener>,
    /// Images built, in order; builds of these repositories fail.
    built: Vec<String>,
    build_fails: BTreeSet<String>,
    build_time: std::time::Duration,
}

#[derive(Debug)]
struct Container {
    info: ContainerInfo,
    state: ContainerState,
    network: String,
}

#[derive(Debug)]
struct Listener {
    label: (String, String),
    events: mpsc::UnboundedSender<Result<ContainerEvent, DockerError>>,
}

impl State {
    fn check(&self) -> Result<(), DockerError> {
        if self.unreachable {
            return Err(DockerError::Unreachable {
                detail: "the in-memory daemon is set unreachable".into(),
            });
        }
        Ok(())
    }

    fn find(&self, id_or_name: &str) -> Option<String> {
        self.containers
            .iter()
            .find(|(id, c)| *id == id_or_name || c.info.name == id_or_name)
            .map(|(id, _)| id.clone())
    }

    fn container(&mut self, op: &'static str, id: &str) -> Result<&mut Container, DockerError> {
        let found = self.find(id).ok_or_else(|| not_found(op, id))?;
        Ok(self.containers.get_mut(&found).expect("found"))
    }

    fn emit(&mut self, action: &str, id: &str, labels: &BTreeMap<String, String>) {
        let event = ContainerEvent {
            action: action.to_owned(),
            id: id.to_owned(),
            labels: labels.clone(),
        };
        self.listeners.retain(|l| {
            if labels.get(&l.label.0) != Some(&l.label.1) {
                return !l.events.is_closed();
            }
            l.events.send(Ok(event.clone())).is_ok()
        });
    }
}

fn not_found(op: &'static str, target: &str) -> DockerError {
    DockerError::Call {
        op,
        target: target.to_owned(),
        message: "no such object".into(),
        status: Some(404),
    }
}

fn conflict(op: &'static str, target: &str) -> DockerError {
    DockerError::Call {
        op,
        target: target.to_owned(),
        message: "the name is already in use".into(),
        status: Some(409),
    }
}

impl MemoryDocker {
    /// An empty daemon: no containers, networks, volumes or images.
    pub fn new() -> MemoryDocker {
        MemoryDocker::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        scope: &str,
    ) -> Result<(), DockerError> {
        let mut st = self.lock();
        st.check()?;
        if st.networks.contains_key(name) {
            return Err(conflict("create network", name));
        }
        let network = NetworkInfo {
            name: name.to_owned(),
            labels: labels.clone(),
            scope: scope.to_owned(),
        };
        st.networks.insert(name.to_owned(), network);
        Ok(())
    }

    /// Makes `image` present, as if pulled.
    pub fn add_image(&self, image: &str) {
        self.lock().images.insert(image.to_owned());
    }

    /// The tags built so far, in order.
    pub fn builds(&self) -> Vec<String> {
        self.lock().built.clone()
    }

    /// Makes every build take `time` (of tokio's clock).
    pub fn build_time(&self, time: std::time::Duration) {
        self.lock().build_time = time;
    }

    /// Makes builds of images of `repository` (`berth/web`) fail at a `RUN` step.
    pub fn fail_builds(&self, repository: &str) {
        self.lock().build_fails.insert(repository.to_owned());
    }

    /// Makes every call fail as an unreachable daemon does (or work again).
    pub fn set_unreachable(&self, unreachable: bool) {
        self.lock().unreachable = unreachable;
    }

    /// Makes creating a container of `image` fail.
    pub fn fail_create_for(&self, image: &str) {
        self.lock().create_fails.insert(image.to_owned());
    }

    /// Makes containers of `image` exit with code 1 as soon as they start.
    pub fn exit_at_once(&self, image: &str) {
        self.lock().exits_at_once.insert(image.to_owned());
    }

    /// Makes containers of `image` report the health `starting` for ever.
    pub fn never_healthy(&self, image: &str) {
        self.lock().never_healthy.insert(image.to_owned());
    }

    /// Clears the failures set for `image`.
    pub fn heal(&self, image: &str) {
        let mut st = self.lock();
        st.create_fails.remove(image);
        st.exits_at_once.remove(image);
        st.never_healthy.remove(image);
    }

    /// The containers, sorted by name.
    pub fn containers(&self) -> Vec<ContainerInfo> {
        let mut all: Vec<ContainerInfo> = self
            .lock()
            .containers
            .values()
            .map(|c| c.info.clone())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// How many containers were ever created.
    pub fn created(&self) -> u64 {
        self.lock().created
    }

    /// Removes a container as `docker rm -f` does, with its `die` and `destroy` events.
    /// False if there is no such container.
    pub fn remove_by_hand(&self, name: &str) -> bool {
        let mut st = self.lock();
        let Some(id) = st.find(name) else {
            return false;
        };
        let c = st.containers.remove(&id).expect("found");
        if c.state.running {
            st.emit("die", &id, &c.info.labels);
        }
        st.emit("destroy", &id, &c.info.labels);
        true
    }

    /// Adds a container berth does not own (no labels), running `image`, as `name`.
    pub fn add_foreign_container(&self, name: &str, image: &str) {
        let mut st = self.lock();
        st.created += 1;
        let id = format!("{:012x}", st.created);
        st.containers.insert(
            id.clone(),
            Container {
                info: ContainerInfo {
                    id,
                    name: name.to_owned(),
                    image: image.to_owned(),
                    state: "running".into(),
                    labels: BTreeMap::new(),
                    published: Vec::new(),
                },
                state: ContainerState {
                    running: true,
                    started_at: "0".into(),
                    ..ContainerState::default()
                },
                network: String::new(),
            },
        );
    }
}

#[async_trait]
impl DockerApi for MemoryDocker {
    async fn ping(&self) -> Result<(), DockerError> {
        self.lock().check()
    }

    async fn list_containers(&self) -> Result<Vec<ContainerInfo>, DockerError> {
        self.lock().check()?;
        Ok(self.containers())
    }

    async fn list_networks(&self) -> Result<Vec<NetworkInfo>, DockerError> {
        let st = self.lock();
        st.check()?;
        Ok(st.networks.values().cloned().collect())
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>, DockerError> {
        let st = self.lock();
        st.check()?;
        Ok(st.volumes.values().cloned().collect())
    }

    async fn create_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        _internal: bool,
    ) -> Result<(), DockerError> {
        self.add_network(name, labels, "local")
    }

    async fn remove_network(&self, name: &str) -> Result<(), DockerError> {
        let mut st = self.lock();
        st.check()?;
        st.networks
            .remove(name)
            .map(drop)
            .ok_or_else(|| not_found("remove network", name))
    }

    async fn create_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DockerError> {
        let mut st = self.lock();
        st.check()?;
        let volume = VolumeInfo {
            name: name.to_owned(),
            labels: labels.clone(),
        };
        st.volumes.entry(name.to_owned()).or_insert(volume);
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), DockerError> {
        let mut st = self.lock();
        st.check()?;
        st.volumes
            .remove(name)
            .map(drop)
            .ok_or_else(|| not_found("remove volume", name))
    }

    async fn build_image(
        &self,
        request: super::docker::BuildRequest,
        output: &(dyn for<'b> Fn(&'b str) + Send + Sync),
    ) -> Result<(), DockerError> {
        let repository = request.tag.split(':').next().unwrap_or_default().to_owned();
        let (fails, time) = {
            let st = self.lock();
            st.check()?;
            (st.build_fails.contains(&repository), st.build_time)
        };
        output("Step 1/2 : FROM scratch\n");
        output("Step 2/2 : RUN make\n");
        tokio::time::sleep(time).await;
        if fails {
            output("make: *** [all] Error 2\n");
            return Err(DockerError::Call {
                op: "build image",
                target: request.tag,
                message: "The command '/bin/sh -c make' returned a non-zero code: 2".into(),
                status: None,
            });
        }
        output(&format!("Successfully tagged {}\n", request.tag));
        let mut st = self.lock();
        st.built.push(request.tag.clone());
        st.images.insert(request.tag);
        Ok(())
    }

    async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        let st = self.lock();
        st.check()?;
        Ok(st.images.contains(image))
    }

    async fn pull_image(
        &self,
        image: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<(), DockerError> {
        self.lock().check()?;
        progress(PullProgress {
            status: "Pull complete".into(),
            current: 1,
            total: 1,
        });
        self.add_image(image);
        Ok(())
    }

    async fn create_container(&self, config: &ContainerConfig) -> Result<String, DockerError> {
        let mut st = self.lock();
        st.check()?;
        if st.create_fails.contains(&config.image) {
            return Err(DockerError::Call {
                op: "create container",
                target: config.name.clone(),
                message: format!("the in-memory daemon refuses image {}", config.image),
                status: Some(500),
            });
        }
        if st.find(&config.name).is_some() {
            return Err(conflict("create container", &config.name));
        }
        st.created += 1;
        let id = format!("{:012x}", st.created);
        let container = Container {
            info: ContainerInfo {
                id: id.clone(),
                name: config.name.clone(),
                image: config.image.clone(),
                state: "created".into(),
                labels: config.labels.clone(),
                published: config.ports.iter().map(|p| p.host).collect(),
            },
            state: ContainerState::default(),
            network: config.network.clone(),
        };
        st.containers.insert(id.clone(), container);
        st.emit("create", &id, &config.labels);
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), DockerError> {
        let mut st = self.lock();
        st.check()?;
        st.started += 1;
        let (started, exits, unhealthy) = {
            let n = st.started;
            let image = st.container("start container", id)?.info.image.clone();
            (
                n,
                st.exits_at_once.contains(&image),
                st.never_healthy.contains(&image),
            )
        };
        let c = st.container("start container", id)?;
        c.state.started_at = started.to_string();
        c.state.addresses = BTreeMap::from([(c.network.clone(), format!("10.0.0.{started}"))]);
        c.state.running = !exits;
        c.state.exit_code = exits.then_some(1);
        c.state.health = unhealthy.then(|| "starting".to_owned());
        c.info.state = if exits { "exited" } else { "running" }.into();
        let (id, labels) = (c.info.id.clone(), c.info.labels.clone());
        st.emit("start", &id, &labels);
        if exits {
            st.emit("die", &id, &labels);
        }
        Ok(())
    }

    async fn stop_container(&self, id: &str, _timeout_secs: i32) -> Result<(), DockerError> {
        let mut st = self.lock();
        st.check()?;
        let c = st.container("stop container", id)?;
        let was_running = std::mem::replace(&mut c.state.running, false);
        c.state.exit_code = Some(0);
        c.info.state = "exited".into();
        let (id, labels) = (c.info.id.clone(), c.info.labels.clone());
        if was_running {
            st.emit("die", &id, &labels);
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), DockerError> {
        let mut st = self.lock();
        st.check()?;
        let found = st
            .find(id)
            .ok_or_else(|| not_found("remove container", id))?;
        let c = st.containers.remove(&found).expect("found");
        if c.state.running {
            st.emit("die", &found, &c.info.labels);
        }
        st.emit("destroy", &found, &c.info.labels);
        Ok(())
    }

    async fn rename_container(&self, id: &str, name: &str) -> Result<(), DockerError> {
        let mut st = self.lock();
        st.check()?;
        if st.find(name).is_some() {
            return Err(conflict("rename container", name));
        }
        st.container("rename container", id)?.info.name = name.to_owned();
        Ok(())
    }

    async fn container_state(&self, id: &str) -> Result<ContainerState, DockerError> {
        let mut st = self.lock();
        st.check()?;
        Ok(st.container("inspect container", id)?.state.clone())
    }

    fn container_events(&self, label: &str) -> EventStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.lock();
        match st.check() {
            Err(e) => {
                let _ = tx.send(Err(e));
            }
            Ok(()) => {
                let (k, v) = label.split_once('=').unwrap_or((label, ""));
                st.listeners.push(Listener {
                    label: (k.to_owned(), v.to_owned()),
                    events: tx,
                });
            }
        }
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|e| (e, rx))
        }))
    }

    async fn exec(
        &self,
        container: &str,
        _cmd: &[String],
        _stdin: Option<&std::path::Path>,
        stdout: Option<&std::path::Path>,
    ) -> Result<u64, DockerError> {
        {
            let mut st = self.lock();
            st.check()?;
            if !st.container("exec in", container)?.state.running {
                return Err(DockerError::Call {
                    op: "exec in",
                    target: container.to_owned(),
                    message: "the container is not running".into(),
                    status: Some(409),
                });
            }
        }
        if let Some(path) = stdout {
            std::fs::write(path, b"").map_err(|e| DockerError::Call {
                op: "exec in",
                target: container.to_owned(),
                message: format!("failed to write {}: {e}", path.display()),
                status: None,
            })?;
        }
        Ok(0)
    }

    async fn exec_output(
        &self,
        container: &str,
        cmd: &[String],
        out: &(dyn for<'b> Fn(&'b [u8]) + Send + Sync),
    ) -> Result<i64, DockerError> {
        {
            let mut st = self.lock();
            st.check()?;
            st.container("exec in", container)?;
        }
        out(format!("{}\n", cmd.join(" ")).as_bytes());
        Ok(0)
    }

    async fn restart_container(&self, id: &str, _timeout_secs: i32) -> Result<(), DockerError> {
        let mut st = self.lock();
        st.check()?;
        st.container("restart", id)?.state.running = true;
        Ok(())
    }

    fn swarm(&self) -> Option<&dyn SwarmApi> {
        let on = self
            .swarm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        on.then_some(self as &dyn SwarmApi)
    }
}

/// The fake swarm: one node, services whose tasks run at once unless their image is
/// set to fail, secrets.
#[derive(Debug, Default)]
struct Swarm {
    services: BTreeMap<String, Service>,
    secrets: BTreeMap<String, (SecretInfo, String)>,
    next: u64,
}

#[derive(Debug)]
struct Service {
    config: ServiceConfig,
    version: u64,
    update: Option<UpdateState>,
    tasks: Vec<TaskInfo>,
}

/// The one node of the fake swarm.
const NODE: &str = "node-memory";

impl Swarm {
    fn id(&mut self) -> String {
        self.next += 1;
        format!("s{:011x}", self.next)
    }

    fn find(&self, id_or_name: &str) -> Option<String> {
        self.services
            .iter()
            .find(|(id, s)| *id == id_or_name || s.config.name == id_or_name)
            .map(|(id, _)| id.clone())
    }

    fn info(id: &str, s: &Service) -> ServiceInfo {
        let running = s
            .tasks
            .iter()
            .filter(|t| t.state == "running" && t.desired_state == "running")
            .count() as u64;
        ServiceInfo {
            id: id.to_owned(),
            name: s.config.name.clone(),
            version: s.version,
            labels: s.config.labels.clone(),
            replicas: Some(s.config.replicas),
            image: s.config.image.clone(),
            env: s.config.env.clone(),
            secrets: s.config.secrets.iter().map(|r| r.name.clone()).collect(),
            running,
            desired: s.config.replicas,
            update: s.update.clone(),
            published: s.config.ports.iter().map(|p| p.published).collect(),
        }
    }
}

impl MemoryDocker {
    /// Makes the daemon a Swarm manager of a one-node swarm.
    pub fn init_swarm(&self) {
        *self.swarm.lock().unwrap_or_else(|e| e.into_inner()) = Some(Swarm::default());
    }

    /// The Swarm calls made since the last look, by name.
    pub fn take_swarm_calls(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.swarm_calls.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn call(&self, name: &'static str) {
        self.swarm_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name);
    }

    fn with_swarm<T>(&self, f: impl FnOnce(&mut Swarm, &State) -> T) -> Result<T, DockerError> {
        let st = self.lock();
        st.check()?;
        let mut swarm = self.swarm.lock().unwrap_or_else(|e| e.into_inner());
        let swarm = swarm.as_mut().ok_or_else(|| DockerError::Call {
            op: "use",
            target: "the swarm".into(),
            message: "This node is not a swarm manager.".into(),
            status: Some(503),
        })?;
        Ok(f(swarm, &st))
    }

    /// The services' configs, by name.
    pub fn services(&self) -> BTreeMap<String, ServiceConfig> {
        self.with_swarm(|sw, _| {
            sw.services
                .values()
                .map(|s| (s.config.name.clone(), s.config.clone()))
                .collect()
        })
        .unwrap_or_default()
    }

    /// The names of the Swarm secrets, and their values.
    pub fn swarm_secrets(&self) -> BTreeMap<String, String> {
        self.with_swarm(|sw, _| {
            sw.secrets
                .values()
                .map(|(i, v)| (i.name.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
    }

    /// Scales a service as `docker service scale` does (its labels unchanged).
    pub fn scale_by_hand(&self, name: &str, replicas: u64) {
        let _ = self.with_swarm(|sw, st| {
            if let Some(id) = sw.find(name) {
                let s = sw.services.get_mut(&id).expect("found");
                s.config.replicas = replicas;
                s.version += 1;
                s.tasks = tasks(&id, &s.config, st);
            }
        });
    }

    /// Removes a service as `docker service rm` does.
    pub fn remove_service_by_hand(&self, name: &str) {
        let _ = self.with_swarm(|sw, _| {
            if let Some(id) = sw.find(name) {
                sw.services.remove(&id);
            }
        });
    }
}

/// The tasks a service's config gets: running, or failed when its image is set to fail.
fn tasks(service: &str, c: &ServiceConfig, st: &State) -> Vec<TaskInfo> {
    let fails = st.create_fails.contains(&c.image)
        || st.exits_at_once.contains(&c.image)
        || st.never_healthy.contains(&c.image);
    (1..=c.replicas)
        .map(|slot| TaskInfo {
            id: format!("{service}-t{slot}"),
            service_id: service.to_owned(),
            slot,
            node_id: NODE.into(),
            state: if fails { "failed" } else { "running" }.into(),
            desired_state: "running".into(),
            message: if fails { "started" } else { "running" }.into(),
            error: if fails {
                "task: non-zero exit (1)".into()
            } else {
                String::new()
            },
            container_id: format!("{service}-c{slot}"),
            labels: c.container_labels.clone(),
            timestamp: "0".into(),
        })
        .collect()
}

fn task_template_changed(a: &ServiceConfig, b: &ServiceConfig) -> bool {
    let mut a = a.clone();
    a.replicas = b.replicas;
    a != *b
}

#[async_trait]
impl SwarmApi for MemoryDocker {
    async fn swarm_node(&self) -> Result<SwarmNode, DockerError> {
        self.call("swarm_node");
        self.lock().check()?;
        let on = self
            .swarm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        Ok(SwarmNode {
            node_id: if on { NODE.into() } else { String::new() },
            state: if on { "active" } else { "inactive" }.into(),
            manager: on,
        })
    }

    async fn list_services(&self) -> Result<Vec<ServiceInfo>, DockerError> {
        self.call("list_services");
        self.with_swarm(|sw, _| {
            sw.services
                .iter()
                .map(|(id, s)| Swarm::info(id, s))
                .collect()
        })
    }

    async fn inspect_service(&self, id: &str) -> Result<ServiceInfo, DockerError> {
        self.call("inspect_service");
        self.with_swarm(|sw, _| {
            let found = sw
                .find(id)
                .ok_or_else(|| not_found("inspect service", id))?;
            Ok(Swarm::info(&found, &sw.services[&found]))
        })?
    }

    async fn list_tasks(&self, label: &str) -> Result<Vec<TaskInfo>, DockerError> {
        self.call("list_tasks");
        let (k, v) = label.split_once('=').unwrap_or((label, ""));
        self.with_swarm(|sw, _| {
            sw.services
                .values()
                .filter(|s| s.config.labels.get(k).map(String::as_str) == Some(v))
                .flat_map(|s| s.tasks.clone())
                .collect()
        })
    }

    async fn list_nodes(&self) -> Result<Vec<NodeInfo>, DockerError> {
        self.call("list_nodes");
        self.with_swarm(|_, _| {
            vec![NodeInfo {
                id: NODE.into(),
                hostname: "memory".into(),
                state: "ready".into(),
                availability: "active".into(),
                role: "manager".into(),
                labels: BTreeMap::new(),
            }]
        })
    }

    async fn list_secrets(&self, label: &str) -> Result<Vec<SecretInfo>, DockerError> {
        self.call("list_secrets");
        let (k, v) = label.split_once('=').unwrap_or((label, ""));
        self.with_swarm(|sw, _| {
            sw.secrets
                .values()
                .filter(|(i, _)| i.labels.get(k).map(String::as_str) == Some(v))
                .map(|(i, _)| i.clone())
                .collect()
        })
    }

    async fn create_secret(
        &self,
        name: &str,
        value: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, DockerError> {
        self.call("create_secret");
        self.with_swarm(|sw, _| {
            if sw.secrets.values().any(|(i, _)| i.name == name) {
                return Err(conflict("create secret", name));
            }
            let id = sw.id();
            let info = SecretInfo {
                id: id.clone(),
                name: name.to_owned(),
                labels: labels.clone(),
            };
            sw.secrets.insert(id.clone(), (info, value.to_owned()));
            Ok(id)
        })?
    }

    async fn remove_secret(&self, id: &str) -> Result<(), DockerError> {
        self.call("remove_secret");
        self.with_swarm(|sw, _| {
            let found = sw
                .secrets
                .iter()
                .find(|(k, (i, _))| *k == id || i.name == id)
                .map(|(k, (i, _))| (k.clone(), i.name.clone()))
                .ok_or_else(|| not_found("remove secret", id))?;
            let used = sw
                .services
                .values()
                .any(|s| s.config.secrets.iter().any(|r| r.name == found.1));
            if used {
                return Err(DockerError::Call {
                    op: "remove secret",
                    target: id.to_owned(),
                    message: format!("secret '{}' is in use", found.1),
                    status: Some(400),
                });
            }
            sw.secrets.remove(&found.0);
            Ok(())
        })?
    }

    async fn create_service(&self, config: &ServiceConfig) -> Result<String, DockerError> {
        self.call("create_service");
        self.with_swarm(|sw, st| {
            if sw.find(&config.name).is_some() {
                return Err(conflict("create service", &config.name));
            }
            let id = sw.id();
            let service = Service {
                config: config.clone(),
                version: 1,
                update: None,
                tasks: tasks(&id, config, st),
            };
            sw.services.insert(id.clone(), service);
            Ok(id)
        })?
    }

    async fn update_service(
        &self,
        id: &str,
        version: u64,
        config: &ServiceConfig,
    ) -> Result<(), DockerError> {
        self.call("update_service");
        self.with_swarm(|sw, st| {
            let found = sw.find(id).ok_or_else(|| not_found("update service", id))?;
            let s = sw.services.get_mut(&found).expect("found");
            if s.version != version {
                return Err(DockerError::Call {
                    op: "update service",
                    target: config.name.clone(),
                    message: "update out of sequence".into(),
                    status: Some(500),
                });
            }
            s.version += 1;
            let rolling = task_template_changed(&s.config, config);
            let new_tasks = tasks(&found, config, st);
            if rolling && new_tasks.iter().any(|t| t.state == "failed") {
                // Swarm's automatic rollback: the old spec keeps running.
                let failed = new_tasks[0].id.clone();
                s.update = Some(UpdateState {
                    state: "rollback_completed".into(),
                    message: format!(
                        "rollback completed: update rolled back due to failure or early                          termination of task {failed}"
                    ),
                });
                s.tasks.extend(new_tasks.into_iter().map(|mut t| {
                    t.desired_state = "shutdown".into();
                    t
                }));
                return Ok(());
            }
            if rolling {
                s.update = Some(UpdateState {
                    state: "completed".into(),
                    message: "update completed".into(),
                });
            }
            s.config = config.clone();
            s.tasks = new_tasks;
            Ok(())
        })?
    }

    async fn remove_service(&self, id: &str) -> Result<(), DockerError> {
        self.call("remove_service");
        self.with_swarm(|sw, _| {
            let found = sw.find(id).ok_or_else(|| not_found("remove service", id))?;
            sw.services.remove(&found);
            Ok(())
        })?
    }

    async fn restart_service(&self, id: &str) -> Result<(), DockerError> {
        self.call("restart_service");
        self.with_swarm(|sw, st| {
            let found = sw
                .find(id)
                .ok_or_else(|| not_found("restart service", id))?;
            let s = sw.services.get_mut(&found).expect("found");
            s.version += 1;
            s.tasks = tasks(&found, &s.config, st);
            Ok(())
        })?
    }

    async fn create_overlay_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        _internal: bool,
    ) -> Result<(), DockerError> {
        self.call("create_overlay_network");
        self.add_network(name, labels, "swarm")
    }

    async fn image_command(&self, image: &str) -> Result<Option<ImageCommand>, DockerError> {
        self.call("image_command");
        let st = self.lock();
        st.check()?;
        Ok(st.images.contains(image).then(|| ImageCommand {
            entrypoint: Vec::new(),
            cmd: vec!["serve".into()],
        }))
    }

    fn cluster_events(&self) -> EventStream {
        self.call("cluster_events");
        Box::pin(futures_util::stream::pending())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn config(name: &str, image: &str) -> ContainerConfig {
        ContainerConfig {
            name: name.into(),
            image: image.into(),
            labels: BTreeMap::from([("berth.instance".into(), "t".into())]),
            network: "net".into(),
            restart: "no".into(),
            ..ContainerConfig::default()
        }
    }

    #[tokio::test]
    async fn containers_live_die_and_tell_their_events() {
        let d = MemoryDocker::new();
        let mut events = d.container_events("berth.instance=t");
        let id = d.create_container(&config("web", "nginx")).await.unwrap();
        assert!(
            d.create_container(&config("web", "nginx"))
                .await
                .unwrap_err()
                .is_conflict()
        );
        d.start_container(&id).await.unwrap();
        let state = d.container_state(&id).await.unwrap();
        assert!(state.running);
        assert_eq!(state.addresses["net"], "10.0.0.1");
        assert!(d.remove_by_hand("web"));
        let actions: Vec<String> = (0..4)
            .map(|_| futures_util::FutureExt::now_or_never(events.next()))
            .map(|e| e.flatten().unwrap().unwrap().action)
            .collect();
        assert_eq!(actions, ["create", "start", "die", "destroy"]);
        assert!(d.container_state(&id).await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn failures_come_when_asked_for() {
        let d = MemoryDocker::new();
        d.fail_create_for("bad");
        assert!(d.create_container(&config("a", "bad")).await.is_err());
        d.exit_at_once("crash");
        let id = d.create_container(&config("b", "crash")).await.unwrap();
        d.start_container(&id).await.unwrap();
        let state = d.container_state(&id).await.unwrap();
        assert!(!state.running);
        assert_eq!(state.exit_code, Some(1));
        d.never_healthy("slow");
        let id = d.create_container(&config("c", "slow")).await.unwrap();
        d.start_container(&id).await.unwrap();
        assert_eq!(
            d.container_state(&id).await.unwrap().health.as_deref(),
            Some("starting")
        );
        d.set_unreachable(true);
        assert!(matches!(
            d.list_containers().await,
            Err(DockerError::Unreachable { .. })
        ));
        d.set_unreachable(false);
        assert_eq!(d.list_containers().await.unwrap().len(), 2);
    }
}
