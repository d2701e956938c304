//! What an app becomes under `runtime: swarm` beyond its container spec: the service's
//! replicas, placement, endpoint mode, reservations and update order, and the names of
//! the Swarm secrets that carry its secret variables.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ContainerSpec;
use crate::manifest::model::{AppSpec, EndpointMode, UpdateStrategy};
use crate::state::secrets::Secret;

/// The service part of an app's spec; part of the spec's hash, so a change of any of it
/// is an update of the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// How many tasks run.
    pub replicas: u32,
    /// Placement constraints, in Docker's syntax.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// Node labels the tasks are spread over, in order of preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spread: Vec<String>,
    /// At most this many tasks on one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas_per_node: Option<u32>,
    /// `vip` or `dnsrr`.
    pub endpoint_mode: String,
    /// CPUs a node must have free for a task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_cpus: Option<f64>,
    /// Bytes of memory a node must have free for a task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_memory: Option<u64>,
    /// `start-first` or `stop-first`: the order of a rolling update (stop-first when a
    /// port is published in `host` mode, whatever the manifest asks).
    pub update_order: String,
    /// `<host>:<container>`: the port of `hostPorts` Swarm publishes through its routing
    /// mesh for the proxy on the manager, when it reaches the app there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<String>,
}

impl ServiceSpec {
    /// The service part of `app`'s spec. `node_ports` says whether a port binds the node
    /// (`host` mode), which forces stop-first updates.
    pub fn of(app: &AppSpec, node_ports: bool) -> ServiceSpec {
        let placement = app.placement.clone().unwrap_or_default();
        let reservations = app.resources.as_ref().and_then(|r| r.reservations.as_ref());
        let start_first = app.update == UpdateStrategy::StartFirst && !node_ports;
        ServiceSpec {
            replicas: app.replicas,
            constraints: placement
                .constraints
                .iter()
                .map(|c| c.trim().to_owned())
                .collect(),
            spread: placement
                .preferences
                .iter()
                .map(|p| p.spread.trim().to_owned())
                .collect(),
            max_replicas_per_node: placement.max_replicas_per_node,
            endpoint_mode: match app.endpoint_mode.unwrap_or(EndpointMode::Vip) {
                EndpointMode::Vip => "vip",
                EndpointMode::Dnsrr => "dnsrr",
            }
            .to_owned(),
            reserve_cpus: reservations.and_then(|r| r.cpus),
            reserve_memory: reservations.and_then(|r| r.memory).map(|m| m.bytes()),
            update_order: if start_first {
                "start-first"
            } else {
                "stop-first"
            }
            .to_owned(),
            host_port: None,
        }
    }

    /// Whether rolling updates start the new task before the old one stops.
    pub fn start_first(&self) -> bool {
        self.update_order == "start-first"
    }
}

/// The hash of what a service's tasks are made from: the spec without what Swarm
/// changes without replacing tasks (replicas, update order, endpoint mode). It labels
/// the tasks' containers, so a scaled service keeps its tasks and berth can tell the
/// tasks of a new spec from the old ones during a rolling update.
pub fn task_hash(spec: &ContainerSpec) -> String {
    let mut spec = spec.clone();
    if let Some(s) = spec.service.as_mut() {
        s.replicas = 0;
        s.update_order.clear();
        s.endpoint_mode.clear();
    }
    spec.hash()
}

/// The plain environment a service's tasks get, sorted: `KEY=value` (secrets come as
/// files, never here).
pub fn plain_env(spec: &ContainerSpec) -> Vec<String> {
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.sort();
    env
}

/// The longest name Swarm gives a secret.
const MAX_SECRET_NAME: usize = 64;

/// The Swarm secret that carries `variable` of `app`: `<app>.<VARIABLE>.<hash>`, the
/// hash being the one shown for the value (keyed by the state directory, so the name
/// reveals nothing of it). A new value is a new secret; Swarm secrets never change.
pub fn secret_name(app: &str, variable: &str, secret: &Secret) -> String {
    let hash = secret.short_hash();
    let stem = format!("{app}.{variable}");
    if stem.len() + 1 + hash.len() <= MAX_SECRET_NAME {
        return format!("{stem}.{hash}");
    }
    // Too long: a prefix, and a digest of the whole stem so that two long variables of
    // one app never share a name.
    let digest = hex::encode(Sha256::digest(stem.as_bytes()));
    let room = MAX_SECRET_NAME - 2 * (1 + 8);
    let cut = stem
        .char_indices()
        .map(|(i, _)| i)
        .take_while(|i| *i <= room)
        .last()
        .unwrap_or(0);
    format!("{}.{}.{hash}", &stem[..cut], &digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_follow_the_value_and_fit_swarm() {
        let one = Secret::new("mail", "first");
        let two = Secret::new("mail", "second");
        let a = secret_name("blog", "MAIL_PASSWORD", &one);
        assert!(a.starts_with("blog.MAIL_PASSWORD."), "{a}");
        assert_ne!(a, secret_name("blog", "MAIL_PASSWORD", &two));
        assert_eq!(a, secret_name("blog", "MAIL_PASSWORD", &one));
        let app = "a".repeat(63);
        let long_a = secret_name(&app, "SOME_VERY_LONG_VARIABLE_NAME_ONE", &one);
        let long_b = secret_name(&app, "SOME_VERY_LONG_VARIABLE_NAME_TWO", &one);
        assert!(long_a.len() <= MAX_SECRET_NAME, "{long_a}");
        assert_ne!(long_a, long_b);
        assert!(!long_a.contains(one.expose()));
    }
}
