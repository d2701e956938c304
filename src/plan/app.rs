//! An app's replicas: the containers to run, replace, start, rename or remove so that
//! each replica runs the desired spec under its canonical name. Behind a proxy on the
//! host that berth can switch (nginx), an update is a handover: the new container
//! starts on a host port of its own, and removing the old one (and renaming the new
//! one) waits until the proxy reaches the new one.

use super::{Action, Op, Step, Target, spec_changes, unified_diff};
use crate::desired::{DesiredApp, ObjectKind, container_name};
use crate::expand::builds::{DesiredBuild, files_changed};
use crate::manifest::model::UpdateStrategy;
use crate::observe::{Observed, ObservedContainer};

/// Plans one app's replicas (or a managed database's container): which containers to
/// run, replace, start, rename or remove, and why. The second value holds the steps
/// that wait until the proxy has switched to the app's new container (a handover).
pub(super) fn plan_app(
    app: &DesiredApp,
    current: &[&ObservedContainer],
    observed: &Observed,
) -> (Action, Vec<Step>) {
    let mut after_switch = Vec::new();
    let a = plan_replicas(app, current, observed, &mut after_switch);
    (a, after_switch)
}

fn plan_replicas(
    app: &DesiredApp,
    current: &[&ObservedContainer],
    observed: &Observed,
    after_switch: &mut Vec<Step>,
) -> Action {
    let target = match app.kind {
        ObjectKind::Database => Target::Database,
        _ => Target::App,
    };
    let mut a = Action::new(target, &app.name, Op::Noop);
    // Canonical names held by objects berth does not own block the app.
    for replica in 1..=app.replicas {
        let name = app.container_name(replica);
        if observed.foreign_containers.contains(&name) {
            a.op = Op::Conflict;
            a.reasons.push(format!(
                "container `{name}` exists and is not managed by berth; remove or rename it, \
                 or rename the app"
            ));
        }
    }
    if a.op == Op::Conflict {
        return a;
    }
    if current.is_empty() {
        if app.replicas == 0 {
            return a;
        }
        if observed.applied_apps.contains(&app.name) {
            a.op = Op::Update;
            a.drift = true;
            a.reasons.push("container missing (drift)".into());
        } else {
            a.op = Op::Create;
            let what = match app.kind {
                ObjectKind::Database => "new managed database",
                _ => "new app",
            };
            a.reasons.push(format!("{what} ({})", app.spec.image));
        }
        a.steps = (1..=app.replicas)
            .map(|replica| Step::Run {
                app: app.name.clone(),
                replica,
            })
            .collect();
        return a;
    }

    // Start-first needs two containers side by side: impossible with fixed host ports,
    // and through a host port only when the proxy can be switched between them.
    let handover = app.host_port.is_some_and(|h| h.switchable);
    let start_first = app.update == UpdateStrategy::StartFirst
        && app.spec.ports.is_empty()
        && (app.host_port.is_none() || handover);
    // What the proxy may still reach goes only once it has switched.
    let removals = |step: Step, a: &mut Action, after_switch: &mut Vec<Step>| match handover {
        true => after_switch.push(step),
        false => a.steps.push(step),
    };
    let max_current = current.iter().map(|c| c.replica).max().unwrap_or(0);
    let mut reasons: Vec<String> = Vec::new();
    if max_current != app.replicas {
        reasons.push(format!("replicas {max_current} → {}", app.replicas));
    }
    let mut diff_from = None;
    for replica in 1..=app.replicas.max(max_current) {
        let mut mine: Vec<&ObservedContainer> = current
            .iter()
            .copied()
            .filter(|c| c.replica == replica)
            .collect();
        if replica > app.replicas {
            for c in mine {
                a.steps.push(Step::Remove {
                    id: c.id.clone(),
                    name: c.name.clone(),
                });
            }
            continue;
        }
        // Keep the best candidate: the right spec, running, with the right name.
        let canonical = container_name(&app.name, replica);
        mine.sort_by_key(|c| {
            (
                c.hash != app.hash,
                !is_up(&c.state),
                c.name != canonical,
                c.name.clone(),
            )
        });
        let Some((keep, extra)) = mine.split_first() else {
            a.steps.push(Step::Run {
                app: app.name.clone(),
                replica,
            });
            // Beyond the highest replica running it is a scale-up; below, a hole.
            if replica <= max_current {
                a.drift = true;
                reasons.push(format!("container {canonical} missing (drift)"));
            }
            continue;
        };
        for c in extra {
            removals(
                Step::Remove {
                    id: c.id.clone(),
                    name: c.name.clone(),
                },
                &mut a,
                after_switch,
            );
            reasons.push(format!("container {} is a leftover", c.name));
        }
        // The host port the proxy reaches it on is not in its spec, but a container
        // keeps the one it was created with: another one needs a new container.
        let port_change = match (app.host_port.map(|h| h.host), observed.host_port_of(keep)) {
            (Some(new), Some(old)) if new != old => {
                Some(format!("host port 127.0.0.1:{old} → 127.0.0.1:{new}"))
            }
            (Some(new), None) => Some(format!("host port 127.0.0.1:{new} for the proxy")),
            (None, Some(old)) => Some(format!(
                "host port 127.0.0.1:{old} no longer needed (no Domain reaches it there)"
            )),
            _ => None,
        };
        if keep.hash != app.hash || port_change.is_some() {
            let switch = handover && is_up(&keep.state);
            if let (Some(change), true) = (&port_change, keep.hash == app.hash) {
                reasons.push(change.clone());
            }
            a.steps.push(Step::Replace {
                app: app.name.clone(),
                replica,
                old_id: keep.id.clone(),
                old_name: keep.name.clone(),
                start_first,
                handover: switch,
            });
            if switch {
                let new_name = handover_name(&canonical, &app.hash, &keep.name);
                after_switch.push(Step::Remove {
                    id: keep.id.clone(),
                    name: keep.name.clone(),
                });
                after_switch.push(Step::Rename {
                    id: new_name.clone(),
                    from: new_name,
                    to: canonical.clone(),
                });
            }
            match keep.spec.as_ref().filter(|_| keep.hash != app.hash) {
                Some(old) => {
                    for r in spec_changes(old, &app.spec) {
                        if !reasons.contains(&r) {
                            reasons.push(r);
                        }
                    }
                    diff_from.get_or_insert(old);
                }
                None if keep.hash == app.hash => {}
                None => {
                    a.drift = true;
                    reasons.push(format!(
                        "container {} has no readable spec (drift)",
                        keep.name
                    ));
                }
            }
            if let Some(h) = app.host_port.filter(|_| switch) {
                reasons.push(format!(
                    "start-first: the new container on 127.0.0.1:{} takes over once the proxy \
                     reaches it",
                    h.host
                ));
            }
            continue;
        }
        if keep.name != canonical {
            removals(
                Step::Rename {
                    id: keep.id.clone(),
                    from: keep.name.clone(),
                    to: canonical.clone(),
                },
                &mut a,
                after_switch,
            );
            reasons.push(format!("container {} renamed to {canonical}", keep.name));
        }
        if !is_up(&keep.state) {
            a.drift = true;
            if matches!(keep.state.as_str(), "exited" | "created") {
                a.steps.push(Step::Start {
                    id: keep.id.clone(),
                    name: canonical.clone(),
                });
            } else {
                a.steps.push(Step::Replace {
                    app: app.name.clone(),
                    replica,
                    old_id: keep.id.clone(),
                    old_name: keep.name.clone(),
                    start_first: false,
                    handover: false,
                });
            }
            reasons.push(format!("container {canonical} is {} (drift)", keep.state));
        }
    }
    let replaces = a.steps.iter().any(|s| matches!(s, Step::Replace { .. }));
    if app.update == UpdateStrategy::StartFirst && !start_first && replaces {
        reasons.push(if app.spec.ports.is_empty() {
            "stop-first: the proxy reaches it on one host port, and berth cannot tell when \
             Traefik switched to another"
                .into()
        } else {
            "stop-first: its host ports cannot be bound twice".into()
        });
    }
    if !a.steps.is_empty() || !after_switch.is_empty() {
        a.op = Op::Update;
        a.reasons = reasons;
        a.diff = diff_from.map(|old| unified_diff(&old.to_yaml(), &app.spec.to_yaml()));
    }
    a
}

/// The name of the container that takes over from `old` (a replica named `canonical`
/// when settled) in a start-first update: never `old`'s own.
pub fn handover_name(canonical: &str, hash: &str, old: &str) -> String {
    let name = format!("{canonical}-{}", &hash[..8]);
    match name == old {
        true => format!("{name}-next"),
        false => name,
    }
}

/// Puts the build of the app's image first when a container of it is to be created and
/// the daemon does not hold its tag: a pass that runs nothing new builds nothing.
pub(super) fn plan_build(a: &mut Action, build: Option<&DesiredBuild>, observed: &Observed) {
    let Some(build) = build else { return };
    let runs = a
        .steps
        .iter()
        .any(|s| matches!(s, Step::Run { .. } | Step::Replace { .. }));
    if !runs || observed.built_images.contains(&build.tag) {
        return;
    }
    let files = build.files();
    let changed = observed
        .last_builds
        .get(&build.app)
        .map(|before| files_changed(before, &files));
    a.steps.insert(
        0,
        Step::Build {
            app: build.app.clone(),
            tag: build.tag.clone(),
            context: build.context_shown().to_owned(),
            files: files.len(),
            changed,
        },
    );
}

pub(super) fn is_up(state: &str) -> bool {
    matches!(state, "running" | "restarting")
}
