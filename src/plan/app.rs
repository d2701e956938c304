//! An app's replicas: the containers to run, replace, start, rename or remove so that
//! each replica runs the desired spec under its canonical name.

use super::{Action, Op, Step, Target, spec_changes, unified_diff};
use crate::desired::{DesiredApp, ObjectKind, container_name};
use crate::manifest::model::UpdateStrategy;
use crate::observe::{Observed, ObservedContainer};

/// Plans one app's replicas (or a managed database's container): which containers to
/// run, replace, start, rename or remove, and why.
pub(super) fn plan_app(
    app: &DesiredApp,
    current: &[&ObservedContainer],
    observed: &Observed,
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

    // Start-first needs two containers side by side: impossible with fixed host ports.
    let start_first = app.update == UpdateStrategy::StartFirst && app.spec.ports.is_empty();
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
            a.steps.push(Step::Remove {
                id: c.id.clone(),
                name: c.name.clone(),
            });
            reasons.push(format!("container {} is a leftover", c.name));
        }
        if keep.hash != app.hash {
            a.steps.push(Step::Replace {
                app: app.name.clone(),
                replica,
                old_id: keep.id.clone(),
                old_name: keep.name.clone(),
                start_first,
            });
            match &keep.spec {
                Some(old) => {
                    for r in spec_changes(old, &app.spec) {
                        if !reasons.contains(&r) {
                            reasons.push(r);
                        }
                    }
                    diff_from.get_or_insert(old);
                }
                None => {
                    a.drift = true;
                    reasons.push(format!(
                        "container {} has no readable spec (drift)",
                        keep.name
                    ));
                }
            }
            continue;
        }
        if keep.name != canonical {
            a.steps.push(Step::Rename {
                id: keep.id.clone(),
                from: keep.name.clone(),
                to: canonical.clone(),
            });
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
                });
            }
            reasons.push(format!("container {canonical} is {} (drift)", keep.state));
        }
    }
    let replaces = a.steps.iter().any(|s| matches!(s, Step::Replace { .. }));
    if app.update == UpdateStrategy::StartFirst && !start_first && replaces {
        reasons.push("stop-first: its host ports cannot be bound twice".into());
    }
    if !a.steps.is_empty() {
        a.op = Op::Update;
        a.reasons = reasons;
        a.diff = diff_from.map(|old| unified_diff(&old.to_yaml(), &app.spec.to_yaml()));
    }
    a
}

pub(super) fn is_up(state: &str) -> bool {
    matches!(state, "running" | "restarting")
}
