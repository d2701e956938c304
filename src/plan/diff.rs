//! What changed between two container specs: reasons in words and a unified diff.

use std::collections::BTreeMap;

use similar::TextDiff;

use crate::desired::ContainerSpec;
use crate::desired::service::ServiceSpec;

/// The changes from `old` to `new`, one phrase each: "image ghost:5.1 → ghost:5.2",
/// "env PAGE changed", "secret TOKEN changed". Secret values never appear: only their
/// redacted forms are compared.
pub fn spec_changes(old: &ContainerSpec, new: &ContainerSpec) -> Vec<String> {
    let mut out = Vec::new();
    if old.image != new.image {
        out.push(format!("image {} → {}", old.image, new.image));
    }
    if old.command != new.command {
        out.push("command changed".to_owned());
    }
    map_changes(&mut out, "env", &old.env, &new.env);
    map_changes(&mut out, "secret", &old.secret_env, &new.secret_env);
    if old.port != new.port {
        out.push(format!(
            "port {} → {}",
            show_opt(old.port),
            show_opt(new.port)
        ));
    }
    let fields: [(&str, bool); 11] = [
        ("published ports", old.ports != new.ports),
        ("volumes", old.volumes != new.volumes),
        ("network", old.network != new.network),
        ("health check", old.health != new.health),
        ("cpus", old.cpus != new.cpus),
        ("memory", old.memory != new.memory),
        ("restart policy", old.restart != new.restart),
        ("labels", old.labels != new.labels),
        ("user", old.user != new.user),
        ("init", old.init != new.init),
        ("build options", old.build != new.build),
    ];
    for (name, changed) in fields {
        if changed {
            out.push(format!("{name} changed"));
        }
    }
    service_changes(&mut out, old.service.as_ref(), new.service.as_ref());
    if out.is_empty() && old != new {
        out.push("spec changed".to_owned());
    }
    out
}

/// The changes of a Swarm service's own settings.
fn service_changes(out: &mut Vec<String>, old: Option<&ServiceSpec>, new: Option<&ServiceSpec>) {
    let (Some(old), Some(new)) = (old, new) else {
        if old.is_some() != new.is_some() {
            out.push("runtime changed".to_owned());
        }
        return;
    };
    if old.replicas != new.replicas {
        out.push(format!("replicas {} → {}", old.replicas, new.replicas));
    }
    let placement = (&old.constraints, &old.spread, old.max_replicas_per_node)
        != (&new.constraints, &new.spread, new.max_replicas_per_node);
    let fields: [(&str, bool); 4] = [
        ("placement", placement),
        (
            "reservations",
            (old.reserve_cpus, old.reserve_memory) != (new.reserve_cpus, new.reserve_memory),
        ),
        ("update order", old.update_order != new.update_order),
        ("proxy's host port", old.host_port != new.host_port),
    ];
    if old.endpoint_mode != new.endpoint_mode {
        out.push(format!(
            "endpoint mode {} → {}",
            old.endpoint_mode, new.endpoint_mode
        ));
    }
    for (name, changed) in fields {
        if changed {
            out.push(format!("{name} changed"));
        }
    }
}

fn show_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

fn map_changes(
    out: &mut Vec<String>,
    what: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) {
    for (k, v) in new {
        match old.get(k) {
            None => out.push(format!("{what} {k} added")),
            Some(o) if o != v => out.push(format!("{what} {k} changed")),
            Some(_) => {}
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            out.push(format!("{what} {k} removed"));
        }
    }
}

/// A unified diff (3 lines of context) from `old` to `new`.
pub fn unified_diff(old: &str, new: &str) -> String {
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header("current", "desired")
        .to_string()
}
