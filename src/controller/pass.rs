//! One pass of the controller, from a revision to a typed outcome: the only place the
//! controller calls into the pass's stages (`manifest::load_files`,
//! `reconcile::prepare`, `reconcile::execute`) and reads a plan. Per-resource status is
//! written as the pass goes; degraded and recovered resources are published on the bus.

use std::collections::BTreeSet;
use std::sync::Arc;

use tracing::{info, warn};

use super::events::{Bus, Event, ResourceChange};
use super::policy::{Failure, FailureKind, PassOutcome};
use crate::apply::{self, ApplyOptions};
use crate::drivers::docker::DockerApi;
use crate::expand::databases::DesiredDatabase;
use crate::manifest;
use crate::manifest::model::DatabaseMode;
use crate::notify::{Notifier, Target as NotifyTarget};
use crate::plan::{Op, Plan, Target};
use crate::reconcile::{self, PassOptions};
use crate::resource::{ResourceId, ResourceKind};
use crate::source::{Revision, RevisionId};
use crate::state::StateDir;
use crate::status::{ConditionType, Phase, Reason, StatusStore};

/// How soon a pass looks again at a swarm whose services do not all run as declared.
const SETTLING: std::time::Duration = std::time::Duration::from_secs(10);

/// What a pass needs from the controller.
pub(crate) struct PassContext<'a> {
    /// The berth instance.
    pub instance: &'a str,
    /// The state directory.
    pub state: &'a StateDir,
    /// The daemon.
    pub docker: &'a Arc<dyn DockerApi>,
    /// How apply runs.
    pub apply: &'a ApplyOptions,
    /// Where per-resource status goes.
    pub status: &'a StatusStore,
    /// Where resource changes are published.
    pub bus: &'a Bus,
    /// Pointed at the revision's Notifier resources.
    pub notifier: &'a Notifier,
    /// How long a pass waits for the instance's lock.
    pub lock_timeout: std::time::Duration,
    /// Told each valid revision before it is applied (its workflows and schedules).
    pub workflows: &'a super::workflows::Workflows,
    /// The host policy each revision is held to.
    pub policy: Option<&'a manifest::Policy>,
}

/// What a pass is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Converge to the newest revision: it becomes the source's state.
    Converge,
    /// Keep the last good revision converged while the newest is invalid: resources
    /// are repaired and report their state; the source's phase, plan, workflows and
    /// notifiers stay as they are.
    KeepLastGood,
}

/// A finished pass.
pub(crate) struct Pass {
    /// How it ended.
    pub outcome: PassOutcome,
    /// The valid revision's databases with a backup schedule (`None`: the revision
    /// was not planned, the schedules stay).
    pub backups: Option<Vec<DesiredDatabase>>,
}

impl Pass {
    fn unplanned(outcome: PassOutcome) -> Pass {
        Pass {
            outcome,
            backups: None,
        }
    }
}

/// Runs one pass over `revision`.
pub(crate) async fn run(cx: &PassContext<'_>, revision: Revision, mode: Mode) -> Pass {
    let converge = mode == Mode::Converge;
    let id = revision.id.clone();
    let loaded = match cx.policy {
        Some(policy) => manifest::load_files_with_policy(&revision.files, policy),
        None => manifest::load_files(&revision.files),
    };
    let mut manifests = match loaded {
        Ok(m) if revision.problems.is_empty() => m,
        result => {
            let mut problems = revision.problems.clone();
            if let Err(d) = result {
                problems.extend(d.iter().cloned());
            }
            let message = manifest::Diagnostics::from(problems).to_string();
            return Pass::unplanned(PassOutcome::Invalid {
                revision: id,
                message: message.trim_end().to_owned(),
            });
        }
    };
    manifests.tree = Some(revision.tree.clone());
    let manifests = Arc::new(manifests);
    if converge {
        cx.workflows.set_revision(id.clone(), manifests.clone());
        configure_notifiers(cx, &manifests);
    }
    let settings = manifests.settings();
    let (auto_apply, resync) = (settings.auto_apply, settings.resync.get());
    let options = PassOptions {
        instance: cx.instance.to_owned(),
        apply: auto_apply,
        no_prune: false,
    };
    let failed = |failures: Vec<Failure>| PassOutcome::Failed {
        revision: Some(id.clone()),
        failures,
    };
    // One writer per instance, for this pass only (plan and apply): `berth apply` may
    // run between two passes. A pass that only plans (autoApply off) writes nothing.
    let _lock = match auto_apply {
        true => {
            let waiting = |h: &crate::state::lock::Holder| {
                tracing::info!(
                    "waiting for the lock on instance {}, held by {h}",
                    cx.state.instance()
                )
            };
            match cx.state.lock("run pass", cx.lock_timeout, waiting).await {
                Ok(l) => Some(l),
                Err(e) => return Pass::unplanned(failed(vec![Failure::transient(e.to_string())])),
            }
        }
        false => None,
    };
    let prepared = match reconcile::prepare(
        &manifests,
        id.as_str(),
        cx.state,
        Some(cx.docker.as_ref()),
        &options,
    )
    .await
    {
        Ok(p) => p,
        Err(e) => return Pass::unplanned(failed(vec![Failure::transient(e.to_string())])),
    };
    let backups = Some(
        prepared
            .desired
            .databases
            .values()
            .filter(|d| d.backup.is_some() && d.mode != DatabaseMode::External)
            .cloned()
            .collect(),
    );
    let plan = &prepared.plan;
    let changes = change_lines(plan);
    let drift_only = plan
        .changes()
        .filter(|a| a.target != Target::Certificate)
        .all(|a| a.drift);
    if converge {
        cx.status.set_plan(id.clone(), plan.clone());
    }
    let degraded_before = resources_with(cx.status, &[Reason::Degraded]);
    cx.status.update(|st| {
        if converge {
            st.plan = (!changes.is_empty()).then(|| crate::plan::render_text(plan, false));
        }
        // Secrets and files written are steps of the pass, not resources with a status.
        for a in plan.actions.iter().filter(|a| !a.target.is_write()) {
            let resource = resource_of(a.target, &a.name);
            if let Some(held) = a.held.as_ref().filter(|_| a.op == Op::Noop) {
                let message = held.message(&a.name, id.as_str());
                st.set_resource(&resource, false, Reason::RolledBack, &message, None);
            } else if a.op == Op::Noop && a.waiting {
                st.set_resource(
                    &resource,
                    false,
                    Reason::Waiting,
                    &a.reasons.join("; "),
                    None,
                );
            } else if a.op == Op::Noop {
                let message = if a.reasons.is_empty() {
                    "as declared".to_owned()
                } else {
                    a.reasons.join("; ")
                };
                // A service as declared whose tasks do not run is not ready.
                let degraded = a.tasks.as_ref().is_some_and(|t| t.problem.is_some());
                let (ready, reason) = match degraded {
                    true => (false, Reason::Degraded),
                    false => (true, Reason::Unchanged),
                };
                st.set_resource(&resource, ready, reason, &message, None);
            } else if auto_apply {
                st.set_reconciling(&resource, &a.reasons.join("; "));
            }
            if a.tasks.is_some() {
                st.set_tasks(&resource, a.tasks.clone());
            }
        }
        if converge && auto_apply && !changes.is_empty() {
            st.set_phase(&Phase::Reconciling {
                revision: id.clone(),
            });
        }
    });
    publish_task_health(cx.bus, plan, &id, &degraded_before);
    // While Swarm restarts or moves a service's tasks, look again soon: no event says
    // when a task runs again.
    let settling = plan
        .actions
        .iter()
        .any(|a| a.tasks.as_ref().is_some_and(|t| t.problem.is_some()));
    let resync = match settling {
        true => resync.min(SETTLING),
        false => resync,
    };
    let synced = |changes: Vec<String>, pending: bool| PassOutcome::Synced {
        revision: id.clone(),
        changes,
        drift_only,
        pending,
        resync,
    };
    if !auto_apply {
        info!(plan = %plan.summary, "autoApply is off: run `berth apply` to apply");
        return Pass {
            outcome: synced(changes, true),
            backups,
        };
    }
    if changes.is_empty() {
        if converge {
            report_certificates(cx, &prepared, None);
        }
        return Pass {
            outcome: synced(changes, false),
            backups,
        };
    }
    info!(plan = %plan.summary, "applying");
    let was_degraded = resources_with(cx.status, &[Reason::ApplyFailed, Reason::Degraded]);
    let report = reconcile::execute(
        &prepared,
        cx.state,
        cx.docker.clone(),
        cx.apply.clone(),
        Arc::new(|p| match p {
            apply::Progress::Finished(o) => {
                info!(target = %o.target, name = %o.name, result = ?o.result, "action");
            }
            // The build's output, line by line, as plain log lines.
            apply::Progress::Build { app, output } => {
                for line in output.lines().filter(|l| !l.trim().is_empty()) {
                    info!(app = %app, "build: {}", crate::manifest::syntax::escape_control(line));
                }
            }
            _ => {}
        }),
    )
    .await;
    let mut failures = Vec::new();
    cx.status.update(|st| {
        for (o, a) in report.outcomes.iter().zip(&plan.actions) {
            let resource = resource_of(o.target, &o.name);
            let action = Some(format!("{:?}: {}", a.op, a.reasons.join("; ")).to_lowercase());
            let held = a.held.as_ref().map(|h| h.message(&a.name, id.as_str()));
            let waiting = a.reasons.join("; ");
            let (ready, reason, message, failure) = match &o.result {
                apply::Status::Done if held.is_some() => (
                    false,
                    Reason::RolledBack,
                    held.as_deref().unwrap_or_default(),
                    None,
                ),
                apply::Status::Done if a.waiting => {
                    (false, Reason::Waiting, waiting.as_str(), None)
                }
                // A failed order is the certificate's own (the one in place, if any,
                // keeps serving; its backoff says when to try again): not a failed pass.
                apply::Status::Failed(m) if o.target == Target::Certificate => {
                    (false, Reason::ApplyFailed, m.as_str(), None)
                }
                apply::Status::Done => (a.op != Op::Delete, Reason::Applied, "as declared", None),
                apply::Status::Unchanged => continue,
                apply::Status::Failed(m) => (
                    false,
                    Reason::ApplyFailed,
                    m.as_str(),
                    Some(FailureKind::Transient),
                ),
                apply::Status::Skipped(m) => (
                    false,
                    Reason::DependencyFailed,
                    m.as_str(),
                    Some(FailureKind::Waiting),
                ),
                apply::Status::Conflict(m) => (
                    false,
                    Reason::Conflict,
                    m.as_str(),
                    Some(FailureKind::Conflict),
                ),
            };
            if !o.target.is_write() {
                st.set_resource(&resource, ready, reason, message, action);
            }
            if a.op == Op::Delete && o.result == apply::Status::Done {
                st.resources.remove(&resource);
            }
            if let Some(kind) = failure {
                failures.push(Failure::of(resource, kind, message));
            }
        }
        // A Domain waiting for its certificate is served over HTTPS once it is issued.
        for o in &report.outcomes {
            if o.target == Target::Certificate && o.result == apply::Status::Done {
                let domain = resource_of(Target::Domain, &o.name);
                st.set_resource(
                    &domain,
                    true,
                    Reason::Applied,
                    "served over HTTPS with its new certificate",
                    None,
                );
            }
        }
        if converge {
            st.plan = None;
        }
    });
    publish_resource_changes(cx.bus, &report, &id, &was_degraded);
    if converge {
        report_certificates(cx, &prepared, Some(&report));
    }
    // Certificates tell their own events (issued, failed): not a deployment.
    let told = plan
        .changes()
        .filter(|a| a.target != Target::Certificate)
        .map(change_line)
        .collect();
    let outcome = if failures.is_empty() {
        synced(told, false)
    } else {
        failed(failures)
    };
    Pass { outcome, backups }
}

/// `Degraded` for a resource whose change failed (an update that never got healthy
/// leaves the old container serving), `Recovered` when one of those applies again.
fn publish_resource_changes(
    bus: &Bus,
    report: &apply::Report,
    revision: &RevisionId,
    was_degraded: &BTreeSet<ResourceId>,
) {
    // Certificates tell their own events (see `report_certificates`).
    for o in report
        .outcomes
        .iter()
        .filter(|o| !o.target.is_write() && o.target != Target::Certificate)
    {
        let resource = resource_of(o.target, &o.name);
        let change = match &o.result {
            apply::Status::Failed(m) => Some(ResourceChange::Degraded { message: m.clone() }),
            apply::Status::Done if was_degraded.contains(&resource) => {
                Some(ResourceChange::Recovered)
            }
            _ => None,
        };
        let deployed = o.target == Target::App
            && o.result == apply::Status::Done
            && matches!(o.op, Op::Create | Op::Update);
        for change in change
            .into_iter()
            .chain(deployed.then_some(ResourceChange::Deployed))
        {
            bus.publish(Event::ResourceChanged {
                resource: resource.clone(),
                revision: revision.clone(),
                change,
            });
        }
    }
}

/// The certificates of berth's ACME client into status (issuer, expiry, next renewal,
/// last error), and their events: issued, an order failed (the first failure since the
/// last success), expiring (see [`crate::plan::expiring`]; once per certificate).
fn report_certificates(
    cx: &PassContext<'_>,
    prepared: &reconcile::Prepared,
    report: Option<&apply::Report>,
) {
    use super::events::CertificateChange;
    use crate::state::certs::{rfc3339, unix_now};
    let now = unix_now();
    let store = cx.state.certificates();
    let before = cx.status.snapshot().certificates;
    let mut shown = std::collections::BTreeMap::new();
    for (domain, declared) in &prepared.desired.certificates {
        // What is on disk now: the pass may have just issued it, or failed to.
        let stored = store.read(domain);
        let mut c = declared.clone();
        c.current = stored.certificate.ok();
        c.record = stored.record;
        let record = c.record.clone().unwrap_or_default();
        let outcome = report.and_then(|r| {
            r.outcomes
                .iter()
                .find(|o| o.target == Target::Certificate && o.name == *domain)
        });
        match outcome.map(|o| &o.result) {
            Some(apply::Status::Done) => {
                if let Some(current) = &c.current {
                    cx.bus.publish(Event::Certificate {
                        domain: domain.clone(),
                        change: CertificateChange::Issued {
                            hosts: current.hosts.clone(),
                            issuer: current.issuer.clone(),
                            not_after: rfc3339(current.not_after),
                        },
                    });
                }
            }
            // One notice per run of failures: the first one.
            Some(apply::Status::Failed(error)) if record.failures == 1 => {
                cx.bus.publish(Event::Certificate {
                    domain: domain.clone(),
                    change: CertificateChange::RenewalFailed {
                        error: error.clone(),
                        next_attempt: record.next_attempt.map(rfc3339).unwrap_or_default(),
                    },
                });
            }
            _ => {}
        }
        let expiring = crate::plan::expiring(&c, now);
        let was = before.get(domain);
        if let Some(current) = c.current.as_ref().filter(|_| expiring) {
            let not_after = rfc3339(current.not_after);
            let told =
                was.is_some_and(|w| w.expiring && w.not_after.as_deref() == Some(&not_after));
            if !told {
                cx.bus.publish(Event::Certificate {
                    domain: domain.clone(),
                    change: CertificateChange::Expiring { not_after },
                });
            }
        }
        shown.insert(
            domain.clone(),
            crate::status::CertificateStatus {
                hosts: c.hosts.clone(),
                issuer: c.current.as_ref().map(|cur| cur.issuer.clone()),
                not_after: c.current.as_ref().map(|cur| rfc3339(cur.not_after)),
                next_renewal: c
                    .current
                    .as_ref()
                    .map(|_| rfc3339(crate::plan::renewal_time(&c).0)),
                last_error: record.last_error.clone().filter(|_| record.failures > 0),
                failures: record.failures,
                next_attempt: record
                    .next_attempt
                    .filter(|n| *n > now && record.failures > 0)
                    .map(rfc3339),
                expiring,
            },
        );
    }
    cx.status.update(|st| st.certificates = shown);
}

/// The resources whose `Ready` condition is false for one of `reasons`.
fn resources_with(status: &StatusStore, reasons: &[Reason]) -> BTreeSet<ResourceId> {
    status
        .snapshot()
        .resources
        .into_iter()
        .filter(|(_, r)| {
            r.condition(ConditionType::Ready)
                .is_some_and(|c| !c.status && reasons.contains(&c.reason))
        })
        .map(|(key, _)| key)
        .collect()
}

/// `Degraded` for a Swarm service, as declared, whose tasks stopped running (a task
/// failing again and again, its node down), `Recovered` when they run again.
fn publish_task_health(
    bus: &Bus,
    plan: &Plan,
    revision: &RevisionId,
    degraded_before: &BTreeSet<ResourceId>,
) {
    for a in plan.actions.iter().filter(|a| a.op == Op::Noop) {
        let Some(tasks) = &a.tasks else { continue };
        let resource = resource_of(a.target, &a.name);
        let change = match (&tasks.problem, degraded_before.contains(&resource)) {
            (Some(problem), false) => ResourceChange::Degraded {
                message: format!("{}: {problem}", tasks.summary()),
            },
            (None, true) => ResourceChange::Recovered,
            _ => continue,
        };
        bus.publish(Event::ResourceChanged {
            resource,
            revision: revision.clone(),
            change,
        });
    }
}

/// Points the notifiers at this revision's Notifier resources. A notifier whose URL
/// secret is missing is skipped and reported; the pass goes on.
fn configure_notifiers(cx: &PassContext<'_>, manifests: &manifest::Manifests) {
    let secrets = cx.state.secrets();
    let mut targets = Vec::new();
    for (name, resource) in &manifests.notifiers {
        match NotifyTarget::from_spec(name, &resource.spec, &secrets) {
            Ok(t) => targets.push(t),
            Err(e) => {
                warn!(notifier = %name, "{e}");
                let id = ResourceId::new(ResourceKind::Notifier, name.clone());
                cx.status.update(|st| {
                    st.set_resource(&id, false, Reason::SecretMissing, &e.to_string(), None)
                });
            }
        }
    }
    cx.notifier.set_targets(targets);
}

/// One line per change, as a notification lists them.
fn change_lines(plan: &Plan) -> Vec<String> {
    plan.changes().map(change_line).collect()
}

fn change_line(a: &crate::plan::Action) -> String {
    let verb = a.op.verb();
    if a.reasons.is_empty() {
        format!("{verb} {} {}", a.target, a.name)
    } else {
        format!("{verb} {} {}: {}", a.target, a.name, a.reasons.join("; "))
    }
}

/// The resource a plan's action is about.
fn resource_of(target: Target, name: &str) -> ResourceId {
    ResourceId::new(target.resource_kind(), name)
}
