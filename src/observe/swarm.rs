//! What a Swarm holds for berth, read with four list calls whatever the number of apps:
//! services (with their task counts and last update), the tasks of this instance's
//! services, the nodes, and this instance's secrets.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::policy;
use crate::desired::ContainerSpec;
use crate::desired::labels::{
    HOST_PORT, INSTANCE, KIND, NAME, ObjectKind, SPEC, SPEC_HASH, TASK_HASH, VARIABLE, owned,
};
use crate::drivers::docker::{DockerApi, DockerError, ServiceInfo, TaskInfo};
use crate::manifest::model::DeletionPolicy;

/// Why the swarm could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// The daemon is not a manager of a swarm.
    #[error(
        "runtime is `swarm` (Settings), but the Docker daemon berth talks to is not a swarm \
         manager (swarm: {state}): run `docker swarm init` there, or point DOCKER_HOST at a \
         manager"
    )]
    NotAManager {
        /// Its swarm state: `inactive`, `pending`, `error`, `locked`, or `active` on a
        /// worker.
        state: String,
    },
    /// The driver has no Swarm calls.
    #[error("runtime is `swarm` (Settings), but this Docker driver cannot reach a swarm")]
    NoSwarmApi,
    /// A call failed.
    #[error(transparent)]
    Docker(#[from] DockerError),
}

/// A service berth owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedService {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The app (or managed database) it runs.
    pub app: String,
    /// An app's, or a managed database's.
    #[serde(default)]
    pub kind: ObjectKind,
    /// The spec hash berth gave it.
    pub hash: String,
    /// The spec berth gave it, when its label could be read.
    #[serde(default)]
    pub spec: Option<ContainerSpec>,
    /// What pruning does to its volumes.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Its version, which an update names.
    #[serde(default)]
    pub version: u64,
    /// The replicas it asks for now (scaled by hand or not).
    #[serde(default)]
    pub replicas: Option<u64>,
    /// The image its tasks run now, as its spec holds it (with the digest Swarm pinned
    /// when it resolved the tag through a registry).
    #[serde(default)]
    pub image: String,
    /// The plain environment its tasks get now.
    #[serde(default)]
    pub env: Vec<String>,
    /// The Swarm secrets its tasks get now.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Its last rolling update.
    #[serde(default)]
    pub update: Option<ObservedUpdate>,
    /// Its tasks: those Swarm wants running, and the recent ones that ended.
    #[serde(default)]
    pub tasks: Vec<ObservedTask>,
}

/// A service's last rolling update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedUpdate {
    /// `updating`, `paused`, `completed`, `rollback_started`, `rollback_paused`,
    /// `rollback_completed`.
    pub state: String,
    /// Swarm's words.
    pub message: String,
}

impl ObservedUpdate {
    /// Whether Swarm gave up the update and went back to the previous spec (or stopped
    /// half way).
    pub fn failed(&self) -> bool {
        self.state.starts_with("rollback") || self.state == "paused"
    }
}

/// A task of a service berth owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedTask {
    /// Its id.
    pub id: String,
    /// Its slot.
    pub slot: u64,
    /// The node it is on.
    pub node: String,
    /// Where it is: `running`, `starting`, `failed`…
    pub state: String,
    /// Where Swarm wants it: `running` or `shutdown`.
    pub desired_state: String,
    /// Why it failed.
    #[serde(default)]
    pub error: String,
    /// Swarm's message.
    #[serde(default)]
    pub message: String,
    /// The task hash of the service spec it was made from (see
    /// [`crate::desired::service::task_hash`]).
    #[serde(default)]
    pub hash: String,
    /// Its container, once it has one.
    #[serde(default)]
    pub container: String,
    /// When its state last changed.
    #[serde(default)]
    pub timestamp: String,
}

impl ObservedTask {
    /// Whether it runs (and, with a health check, is healthy: Swarm reports a task
    /// `starting` until then).
    pub fn running(&self) -> bool {
        self.state == "running" && self.desired_state == "running"
    }

    /// Whether it ended in a failure.
    pub fn failed(&self) -> bool {
        matches!(self.state.as_str(), "failed" | "rejected")
    }
}

/// A node of the swarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedNode {
    /// Its host name.
    pub hostname: String,
    /// `ready`, `down`…
    pub state: String,
    /// `active`, `pause`, `drain`.
    pub availability: String,
}

/// A Swarm secret berth owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedSecret {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The app whose variable it carries.
    pub app: String,
    /// The variable.
    #[serde(default)]
    pub variable: String,
}

/// What the swarm holds, as far as berth is concerned.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObservedSwarm {
    /// The node berth's daemon is.
    pub node: String,
    /// Services owned by this instance, by app.
    pub services: Vec<ObservedService>,
    /// Names of services berth must not touch.
    pub foreign_services: BTreeSet<String>,
    /// Secrets owned by this instance.
    pub secrets: Vec<ObservedSecret>,
    /// Every node, by id.
    pub nodes: BTreeMap<String, ObservedNode>,
    /// Ports published by any service.
    pub published_ports: BTreeSet<u16>,
    /// The host port each app's service records.
    pub host_ports: BTreeMap<String, u16>,
}

impl ObservedSwarm {
    /// The host name of node `id` (its id when unknown).
    pub fn hostname(&self, id: &str) -> String {
        self.nodes
            .get(id)
            .map_or_else(|| id.to_owned(), |n| n.hostname.clone())
    }
}

/// Reads the swarm: four list calls, after one to learn where the daemon stands.
pub async fn observe(docker: &dyn DockerApi, instance: &str) -> Result<ObservedSwarm, SwarmError> {
    let swarm = docker.swarm().ok_or(SwarmError::NoSwarmApi)?;
    let node = swarm.swarm_node().await?;
    if !node.manager {
        return Err(SwarmError::NotAManager { state: node.state });
    }
    let mine = format!("{INSTANCE}={instance}");
    let (services, tasks, nodes, secrets) = futures_util::try_join!(
        swarm.list_services(),
        swarm.list_tasks(&mine),
        swarm.list_nodes(),
        swarm.list_secrets(&mine),
    )?;
    let mut out = ObservedSwarm {
        node: node.node_id,
        ..ObservedSwarm::default()
    };
    let mut tasks_of: BTreeMap<String, Vec<TaskInfo>> = BTreeMap::new();
    for t in tasks {
        tasks_of.entry(t.service_id.clone()).or_default().push(t);
    }
    for s in services {
        out.published_ports.extend(s.published.iter().copied());
        let kind = s
            .labels
            .get(KIND)
            .and_then(|k| ObjectKind::parse(k))
            .filter(|k| matches!(k, ObjectKind::App | ObjectKind::Database));
        match kind.filter(|_| owned(&s.labels, instance)) {
            Some(kind) => {
                let host_port = s.labels.get(HOST_PORT).and_then(|p| p.parse().ok());
                let tasks = tasks_of.remove(&s.id).unwrap_or_default();
                let service = observed_service(s, kind, tasks);
                if let Some(port) = host_port {
                    out.host_ports.insert(service.app.clone(), port);
                }
                out.services.push(service);
            }
            None => {
                out.foreign_services.insert(s.name);
            }
        }
    }
    out.services
        .sort_by(|a, b| (&a.app, &a.name).cmp(&(&b.app, &b.name)));
    for n in nodes {
        out.nodes.insert(
            n.id,
            ObservedNode {
                hostname: n.hostname,
                state: n.state,
                availability: n.availability,
            },
        );
    }
    for s in secrets.into_iter().filter(|s| owned(&s.labels, instance)) {
        out.secrets.push(ObservedSecret {
            app: s.labels.get(NAME).cloned().unwrap_or_default(),
            variable: s.labels.get(VARIABLE).cloned().unwrap_or_default(),
            id: s.id,
            name: s.name,
        });
    }
    out.secrets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn observed_service(s: ServiceInfo, kind: ObjectKind, tasks: Vec<TaskInfo>) -> ObservedService {
    let mut tasks: Vec<ObservedTask> = tasks
        .into_iter()
        .map(|t| ObservedTask {
            hash: t.labels.get(TASK_HASH).cloned().unwrap_or_default(),
            id: t.id,
            slot: t.slot,
            node: t.node_id,
            state: t.state,
            desired_state: t.desired_state,
            error: t.error,
            message: t.message,
            container: t.container_id,
            timestamp: t.timestamp,
        })
        .collect();
    // Newest first within a slot: what a slot does now comes first.
    tasks.sort_by(|a, b| (a.slot, &b.timestamp).cmp(&(b.slot, &a.timestamp)));
    ObservedService {
        app: s.labels.get(NAME).cloned().unwrap_or_default(),
        hash: s.labels.get(SPEC_HASH).cloned().unwrap_or_default(),
        spec: s
            .labels
            .get(SPEC)
            .and_then(|t| serde_json::from_str(t).ok()),
        deletion_policy: policy(&s.labels),
        id: s.id,
        name: s.name,
        kind,
        version: s.version,
        replicas: s.replicas,
        image: s.image,
        env: s.env,
        secrets: s.secrets,
        update: s.update.map(|u| ObservedUpdate {
            state: u.state,
            message: u.message,
        }),
        tasks,
    }
}

/// Whether a service's image is the one declared: the same reference, or the declared
/// tag with the digest Swarm pinned when it resolved it (`busybox:1.36@sha256:…`).
pub fn same_image(service: &str, declared: &str) -> bool {
    service == declared
        || (!declared.contains('@')
            && service
                .split_once("@sha256:")
                .is_some_and(|(name, _)| name == declared))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_swarm_pinned_is_the_declared_image() {
        assert!(same_image("busybox:1.36@sha256:abcd", "busybox:1.36"));
        assert!(same_image("busybox:1.36", "busybox:1.36"));
        assert!(!same_image("busybox:1.37@sha256:abcd", "busybox:1.36"));
        // A declared digest is compared as written.
        assert!(same_image("repo@sha256:ab", "repo@sha256:ab"));
        assert!(!same_image("repo@sha256:cd", "repo@sha256:ab"));
    }
}
