//! An app as a Swarm service (`runtime: swarm`): whether to create, update or leave its
//! service, which Swarm secrets to make and drop, and how its tasks are doing. Swarm
//! places and replaces the tasks; berth decides the service's spec and notices what was
//! changed by hand (scaled, updated, removed).

use std::collections::{BTreeMap, BTreeSet};

use super::{Action, Op, Step, Target, Tasks, spec_changes, unified_diff};
use crate::desired::service::{plain_env, secret_name};
use crate::desired::{DesiredApp, ObjectKind};
use crate::observe::swarm::{ObservedService, ObservedSwarm, same_image};
use crate::observe::{Observed, ObservedContainer};

/// Plans one app's (or managed database's) service. `containers` are the app's own
/// containers from `runtime: docker`, which the service replaces.
pub(super) fn plan_service(
    app: &DesiredApp,
    current: Option<&ObservedService>,
    containers: &[&ObservedContainer],
    swarm: &ObservedSwarm,
    observed: &Observed,
) -> Action {
    let target = match app.kind {
        ObjectKind::Database => Target::Database,
        _ => Target::App,
    };
    let mut a = Action::new(target, &app.name, Op::Noop);
    if current.is_none() && swarm.foreign_services.contains(&app.name) {
        a.op = Op::Conflict;
        a.reasons.push(format!(
            "service `{}` exists and is not managed by berth; remove or rename it, or rename \
             the app",
            app.name
        ));
        return a;
    }
    let wanted = secret_names(app);
    let have: BTreeSet<&str> = swarm
        .secrets
        .iter()
        .filter(|s| s.app == app.name)
        .map(|s| s.name.as_str())
        .collect();
    let create_secrets: Vec<Step> = wanted
        .iter()
        .filter(|(_, name)| !have.contains(name.as_str()))
        .map(|(variable, name)| Step::CreateSwarmSecret {
            app: app.name.clone(),
            variable: variable.clone(),
            name: name.clone(),
        })
        .collect();
    let unused_secrets = |in_use: &[String]| -> Vec<Step> {
        swarm
            .secrets
            .iter()
            .filter(|s| s.app == app.name)
            .filter(|s| !wanted.values().any(|w| *w == s.name) && !in_use.contains(&s.name))
            .map(|s| Step::RemoveSwarmSecret {
                id: s.id.clone(),
                name: s.name.clone(),
            })
            .collect()
    };
    let remove_containers = containers.iter().map(|c| Step::Remove {
        id: c.id.clone(),
        name: c.name.clone(),
    });

    let Some(service) = current else {
        if observed.applied_apps.contains(&app.name) && containers.is_empty() {
            a.op = Op::Update;
            a.drift = true;
            a.reasons.push("service missing (drift)".into());
        } else {
            a.op = Op::Create;
            let what = match app.kind {
                ObjectKind::Database => "new managed database",
                _ => "new app",
            };
            a.reasons.push(format!(
                "{what} ({}) as a Swarm service of {} {}",
                app.spec.image,
                app.replicas,
                if app.replicas == 1 { "task" } else { "tasks" }
            ));
            if !containers.is_empty() {
                a.reasons.push(format!(
                    "its containers from `runtime: docker` are removed once it runs: {}",
                    names(containers)
                ));
            }
        }
        a.steps = create_secrets;
        a.steps.push(Step::CreateService {
            app: app.name.clone(),
        });
        a.steps.extend(remove_containers);
        a.steps.extend(unused_secrets(&[]));
        return a;
    };

    a.tasks = Some(tasks(app, service, swarm));
    let mut reasons = Vec::new();
    if service.hash != app.hash {
        match &service.spec {
            Some(old) => {
                reasons.extend(spec_changes(old, &app.spec));
                a.diff = Some(unified_diff(&old.to_yaml(), &app.spec.to_yaml()));
            }
            None => {
                a.drift = true;
                reasons.push(format!(
                    "service {} has no readable spec (drift)",
                    service.name
                ));
            }
        }
        if let Some(update) = service.update.as_ref().filter(|u| u.failed()) {
            reasons.push(format!(
                "Swarm rolled back its last update ({}): tried again",
                update.message
            ));
        }
    } else {
        reasons.extend(hand_changes(app, service, &wanted));
        if !reasons.is_empty() {
            a.drift = true;
        }
    }
    let start_first = app.spec.service.as_ref().is_some_and(|s| s.start_first());
    if !reasons.is_empty() {
        if app.update == crate::manifest::model::UpdateStrategy::StartFirst && !start_first {
            reasons.push(
                "stop-first: a port published in `host` mode cannot be bound twice on one node"
                    .into(),
            );
        }
        a.op = Op::Update;
        a.reasons = reasons;
        a.steps = create_secrets;
        a.steps.push(Step::UpdateService {
            app: app.name.clone(),
            id: service.id.clone(),
            version: service.version,
            start_first,
        });
        a.steps.extend(remove_containers);
        // Once the update is through, the secrets of the old spec go (a rollback would
        // need them: an update that fails ends the action before this).
        a.steps.extend(unused_secrets(&[]));
        return a;
    }
    // The service is as declared; what remains are leftovers.
    let leftovers: Vec<Step> = remove_containers
        .chain(unused_secrets(&service.secrets))
        .collect();
    if !leftovers.is_empty() {
        a.op = Op::Update;
        for step in &leftovers {
            match step {
                Step::Remove { name, .. } => a.reasons.push(format!(
                    "container {name} is a leftover of `runtime: docker`"
                )),
                Step::RemoveSwarmSecret { name, .. } => a
                    .reasons
                    .push(format!("swarm secret {name} is no longer used")),
                _ => {}
            }
        }
        a.steps = leftovers;
        return a;
    }
    let tasks = a.tasks.as_ref().expect("set above");
    a.reasons.push(match &tasks.problem {
        Some(problem) => format!("{}: {problem}", tasks.summary()),
        None => tasks.summary(),
    });
    a
}

/// The Swarm secret of each secret variable of `app`, by variable.
pub(super) fn secret_names(app: &DesiredApp) -> BTreeMap<String, String> {
    app.secrets
        .iter()
        .map(|(variable, secret)| (variable.clone(), secret_name(&app.name, variable, secret)))
        .collect()
}

/// What was changed by hand in a service whose labels still say it is as declared:
/// its replicas (`docker service scale`), image, environment or secrets (`docker
/// service update`).
fn hand_changes(
    app: &DesiredApp,
    service: &ObservedService,
    wanted: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(replicas) = service.replicas.filter(|r| *r != u64::from(app.replicas)) {
        out.push(format!(
            "replicas {replicas} → {} (scaled by hand, drift)",
            app.replicas
        ));
    }
    if !same_image(&service.image, &app.spec.image) {
        out.push(format!(
            "image {} → {} (changed by hand, drift)",
            service.image, app.spec.image
        ));
    }
    let mut env: Vec<String> = service.env.clone();
    env.sort();
    if env != plain_env(&app.spec) {
        out.push("environment changed by hand (drift)".into());
    }
    let mut secrets: Vec<&str> = service.secrets.iter().map(String::as_str).collect();
    secrets.sort_unstable();
    let mut declared: Vec<&str> = wanted.values().map(String::as_str).collect();
    declared.sort_unstable();
    if secrets != declared {
        out.push("secrets changed by hand (drift)".into());
    }
    out
}

/// How the service's tasks are doing: the tasks Swarm wants running, where they run,
/// and, when fewer run than asked, why (the newest failure of a task, or Swarm's
/// message about an update it rolled back).
fn tasks(app: &DesiredApp, service: &ObservedService, swarm: &ObservedSwarm) -> Tasks {
    // A task on a node that is down runs nowhere, whatever it last reported.
    let node_down = |node: &str| swarm.nodes.get(node).is_some_and(|n| n.state != "ready");
    let mut nodes: BTreeMap<String, u64> = BTreeMap::new();
    let mut running = 0;
    for t in service
        .tasks
        .iter()
        .filter(|t| t.running() && !node_down(&t.node))
    {
        running += 1;
        *nodes.entry(swarm.hostname(&t.node)).or_default() += 1;
    }
    let desired = service.replicas.unwrap_or(u64::from(app.replicas));
    let mut problem = None;
    if running < desired {
        let failure = service
            .tasks
            .iter()
            .filter(|t| t.failed() && !t.error.is_empty())
            .max_by(|a, b| a.timestamp.cmp(&b.timestamp));
        // Nodes that went down under a task that ran there.
        let mut down: Vec<String> = service
            .tasks
            .iter()
            .filter(|t| t.state == "running" && node_down(&t.node))
            .map(|t| swarm.hostname(&t.node))
            .collect();
        down.dedup();
        let task = match failure {
            Some(t) => Some(format!(
                "task {}.{} failed: {}",
                service.name,
                t.slot,
                t.error.trim()
            )),
            None => service
                .tasks
                .iter()
                .find(|t| t.desired_state == "running" && !t.running() && !t.message.is_empty())
                .map(|t| {
                    format!(
                        "task {}.{} is {}: {}",
                        service.name, t.slot, t.state, t.message
                    )
                }),
        };
        let mut words: Vec<String> = down.iter().map(|n| format!("node {n} is down")).collect();
        words.extend(task);
        problem = Some(if words.is_empty() {
            "tasks are starting".to_owned()
        } else {
            words.join("; ")
        });
    }
    if let Some(update) = service
        .update
        .as_ref()
        .filter(|u| u.failed() && service.hash == app.hash)
    {
        problem.get_or_insert_with(|| format!("Swarm's last update: {}", update.message));
    }
    Tasks {
        running,
        desired,
        nodes,
        problem,
    }
}

fn names(containers: &[&ObservedContainer]) -> String {
    containers
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::swarm::{ObservedNode, ObservedTask};

    fn task(
        slot: u64,
        node: &str,
        state: &str,
        desired: &str,
        error: &str,
        at: &str,
    ) -> ObservedTask {
        ObservedTask {
            id: format!("t{slot}{at}"),
            slot,
            node: node.into(),
            state: state.into(),
            desired_state: desired.into(),
            error: error.into(),
            message: if state == "pending" {
                "pending task scheduling".into()
            } else {
                String::new()
            },
            hash: String::new(),
            container: String::new(),
            timestamp: at.into(),
        }
    }

    fn swarm(down: &str) -> ObservedSwarm {
        let node = |host: &str| ObservedNode {
            hostname: host.into(),
            state: if host == down { "down" } else { "ready" }.into(),
            availability: "active".into(),
        };
        ObservedSwarm {
            nodes: [
                ("n1".to_owned(), node("node-1")),
                ("n2".to_owned(), node("node-2")),
            ]
            .into(),
            ..ObservedSwarm::default()
        }
    }

    fn service(tasks: Vec<ObservedTask>) -> ObservedService {
        ObservedService {
            id: "s".into(),
            name: "web".into(),
            app: "web".into(),
            kind: ObjectKind::App,
            hash: String::new(),
            spec: None,
            deletion_policy: Default::default(),
            version: 1,
            replicas: Some(2),
            image: String::new(),
            env: Vec::new(),
            secrets: Vec::new(),
            update: None,
            tasks,
        }
    }

    fn app() -> DesiredApp {
        DesiredApp {
            name: "web".into(),
            spec: serde_json::from_str(r#"{"image":"i","network":"n","restart":"always"}"#)
                .unwrap(),
            hash: "h".into(),
            replicas: 2,
            update: Default::default(),
            depends_on: Vec::new(),
            volumes: Vec::new(),
            deletion_policy: Default::default(),
            secrets: BTreeMap::new(),
            host_port: None,
            kind: ObjectKind::App,
        }
    }

    #[test]
    fn tasks_say_where_they_run_and_what_keeps_them_from_running() {
        let running = |slot, node| task(slot, node, "running", "running", "", "1");
        let all = tasks(
            &app(),
            &service(vec![running(1, "n1"), running(2, "n2")]),
            &swarm(""),
        );
        assert_eq!(all.summary(), "2/2 tasks running on node-1, node-2");
        assert_eq!(all.problem, None);

        // A task that fails again and again: its newest error.
        let failing = service(vec![
            running(1, "n1"),
            task(
                2,
                "n2",
                "failed",
                "shutdown",
                "task: non-zero exit (1)",
                "1",
            ),
            task(
                2,
                "n2",
                "failed",
                "shutdown",
                "task: non-zero exit (4)",
                "2",
            ),
            task(2, "n2", "starting", "running", "", "3"),
        ]);
        let t = tasks(&app(), &failing, &swarm(""));
        assert_eq!(t.summary(), "1/2 tasks running on node-1");
        assert_eq!(
            t.problem.as_deref(),
            Some("task web.2 failed: task: non-zero exit (4)")
        );

        // A node that went down: its task runs nowhere, and the replacement waits.
        let stranded = service(vec![
            running(1, "n1"),
            task(2, "n2", "running", "shutdown", "", "1"),
            task(2, "", "pending", "running", "", "2"),
        ]);
        let t = tasks(&app(), &stranded, &swarm("node-2"));
        assert_eq!(t.running, 1);
        assert_eq!(
            t.problem.as_deref(),
            Some("node node-2 is down; task web.2 is pending: pending task scheduling")
        );
    }
}
