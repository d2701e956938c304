//! The controller behind `berth run`: one reconcile pass at a time, triggered by a new
//! revision (debounced file changes), Docker events on managed containers (die,
//! destroy, oom: repaired at once) and the resync timer; triggers arriving during a pass
//! coalesce into one more pass. Errors are sorted as in Flux: a transient failure
//! retries with backoff, an invalid revision stalls (nothing of it is applied, the last
//! good revision stays live) until the source changes.

pub mod backoff;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{Instrument, error, info, info_span, warn};

use crate::apply::ApplyOptions;
use crate::drivers::docker::DockerApi;
use crate::manifest;
use crate::reconcile::{self, PassOptions};
use crate::source::dir::DirSource;
use crate::statedir::StateDir;
use crate::status::{self, PassRecord, StatusStore};
use backoff::{Backoff, jitter};

/// What started a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The first pass.
    Start,
    /// The source changed.
    Source,
    /// A managed container died or vanished.
    Container(String),
    /// The resync timer, or a retry.
    Timer,
}

/// How a pass ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassOutcome {
    /// The revision is applied (or planned, with autoApply off).
    Synced {
        /// The revision.
        revision: String,
        /// Actions that changed something.
        changes: usize,
        /// The revision's resync interval.
        resync: Duration,
    },
    /// The revision is invalid: nothing of it was applied.
    Stalled {
        /// The revision.
        revision: String,
        /// Every problem, one per line.
        message: String,
    },
    /// Something failed that may work next time.
    Transient(String),
}

/// The controller's settings.
#[derive(Clone)]
pub struct ControllerOptions {
    /// The berth instance.
    pub instance: String,
    /// How apply runs.
    pub apply: ApplyOptions,
    /// How long file changes settle before a pass.
    pub debounce: Duration,
}

/// `berth run`: keeps the host converged to a source.
pub struct Controller {
    source: DirSource,
    state: StateDir,
    docker: Arc<dyn DockerApi>,
    options: ControllerOptions,
    status: StatusStore,
}

impl Controller {
    /// A controller for `source`.
    pub fn new(
        source: DirSource,
        state: StateDir,
        docker: Arc<dyn DockerApi>,
        options: ControllerOptions,
        status: StatusStore,
    ) -> Controller {
        Controller {
            source,
            state,
            docker,
            options,
            status,
        }
    }

    /// Runs until `shutdown` turns true; the pass under way finishes first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> notify::Result<()> {
        let (triggers, mut incoming) = mpsc::unbounded_channel::<Trigger>();

        // File changes, debounced: a burst of writes makes one trigger.
        let (changes_tx, mut changes) = mpsc::unbounded_channel::<()>();
        let _watcher = self.source.watch(changes_tx)?;
        let debounce = self.options.debounce;
        let to_loop = triggers.clone();
        tokio::spawn(async move {
            while changes.recv().await.is_some() {
                tokio::time::sleep(debounce).await;
                while changes.try_recv().is_ok() {}
                if to_loop.send(Trigger::Source).is_err() {
                    break;
                }
            }
        });

        // Managed containers that die or vanish are repaired at once.
        let mut events = self
            .docker
            .container_events(&format!("berth.instance={}", self.options.instance));
        let to_loop = triggers.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match event {
                    Ok(e) if matches!(e.action.as_str(), "die" | "destroy" | "oom") => {
                        let app = e.labels.get("berth.name").cloned().unwrap_or_default();
                        if to_loop.send(Trigger::Container(app)).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!("Docker events stopped: {e}");
                        break;
                    }
                }
            }
        });

        let mut backoff = Backoff::default();
        let mut stalled_on: Option<String> = None;
        let mut trigger = Trigger::Start;
        // The interval of the last valid revision (the default until there is one).
        let mut resync = Duration::from_secs(300);
        loop {
            let span = info_span!("pass", trigger = ?trigger);
            let started = Instant::now();
            let outcome = self.pass(stalled_on.as_deref()).instrument(span).await;
            if let Some(outcome) = &outcome {
                self.record(&trigger, outcome, started.elapsed());
            }
            let wait = match &outcome {
                Some(PassOutcome::Synced {
                    revision,
                    changes,
                    resync: interval,
                }) => {
                    resync = *interval;
                    backoff.success();
                    stalled_on = None;
                    info!(%revision, changes, "in sync");
                    resync
                }
                Some(PassOutcome::Stalled { revision, message }) => {
                    error!(%revision, "revision is invalid; nothing of it is applied:\n{message}");
                    stalled_on = Some(revision.clone());
                    resync
                }
                Some(PassOutcome::Transient(message)) => {
                    let delay = backoff.failure(Instant::now(), jitter());
                    warn!(retry_in = ?delay, "pass failed: {message}");
                    delay
                }
                None => resync,
            };
            let deadline = Instant::now() + wait;
            trigger = tokio::select! {
                _ = shutdown.changed() => break,
                t = incoming.recv() => t.unwrap_or(Trigger::Timer),
                () = sleep_until(deadline) => Trigger::Timer,
            };
            // Triggers that came in meanwhile are served by this one pass.
            while incoming.try_recv().is_ok() {}
            if *shutdown.borrow() {
                break;
            }
        }
        info!("stopped");
        Ok(())
    }

    /// Writes a pass's result into the status store.
    fn record(&self, trigger: &Trigger, outcome: &PassOutcome, took: Duration) {
        let (result, event) = match outcome {
            PassOutcome::Synced {
                revision, changes, ..
            } if *changes > 0 => (
                "Synced",
                Some((
                    "Deployed",
                    format!("deployed {revision} ({changes} changes)"),
                )),
            ),
            PassOutcome::Synced { .. } => ("Synced", None),
            PassOutcome::Stalled { revision, message } => (
                "Stalled",
                Some((
                    "SyncFailed",
                    format!("revision {revision} is invalid: {message}"),
                )),
            ),
            PassOutcome::Transient(message) => ("Failed", Some(("SyncFailed", message.clone()))),
        };
        self.status.update(|st| {
            st.source = self.source.root().display().to_string();
            if let PassOutcome::Synced { revision, .. } = outcome {
                st.revision_observed = Some(revision.clone());
                st.revision_applied = Some(revision.clone());
                st.last_success = Some(status::now());
            }
            if let PassOutcome::Stalled { revision, .. } = outcome {
                st.revision_observed = Some(revision.clone());
            }
            // A failure is an event once; it repeats only when it changes.
            if let Some((reason, message)) = event {
                let repeated = st
                    .events
                    .back()
                    .is_some_and(|e| e.reason == reason && e.message == message);
                if !repeated {
                    st.push_event(reason, message);
                }
            }
            *st.passes.entry(result.to_owned()).or_default() += 1;
            st.last_pass = Some(PassRecord {
                trigger: format!("{trigger:?}"),
                result: result.to_owned(),
                duration_ms: took.as_millis() as u64,
                finished_at: status::now(),
            });
        });
    }

    /// One pass. Returns `None` when the source is still the revision already found
    /// invalid (nothing to retry until it changes).
    async fn pass(&self, stalled_on: Option<&str>) -> Option<PassOutcome> {
        let revision = self.source.read();
        if stalled_on == Some(revision.id.as_str()) {
            return None;
        }
        let manifests = match manifest::load_files(&revision.files) {
            Ok(m) if revision.problems.is_empty() => m,
            result => {
                let mut problems = revision.problems.clone();
                if let Err(d) = result {
                    problems.extend(d.iter().cloned());
                }
                let message = manifest::Diagnostics::from(problems).to_string();
                return Some(PassOutcome::Stalled {
                    revision: revision.id,
                    message: message.trim_end().to_owned(),
                });
            }
        };
        let settings = manifests.settings();
        let (auto_apply, resync) = (settings.auto_apply, settings.resync.get());
        let options = PassOptions {
            instance: self.options.instance.clone(),
            apply: auto_apply,
            no_prune: false,
        };
        let prepared = match reconcile::prepare(
            &manifests,
            &revision.id,
            &self.state,
            Some(self.docker.as_ref()),
            &options,
        )
        .await
        {
            Ok(p) => p,
            Err(e) => return Some(PassOutcome::Transient(e.to_string())),
        };
        let changes = prepared.plan.changes().count();
        self.status.update(|st| {
            st.plan = (changes > 0).then(|| crate::plan::render_text(&prepared.plan, false));
            for a in &prepared.plan.actions {
                if a.op == crate::plan::Op::Noop {
                    let kind = kind_of(a.target);
                    let message = if a.reasons.is_empty() {
                        "as declared".to_owned()
                    } else {
                        a.reasons.join("; ")
                    };
                    st.set_resource(kind, &a.name, true, "Unchanged", &message, None);
                }
            }
        });
        if !auto_apply {
            info!(plan = %prepared.plan.summary, "autoApply is off: run `berth apply` to apply");
            return Some(PassOutcome::Synced {
                revision: revision.id,
                changes: 0,
                resync,
            });
        }
        if changes == 0 {
            return Some(PassOutcome::Synced {
                revision: revision.id,
                changes,
                resync,
            });
        }
        info!(plan = %prepared.plan.summary, "applying");
        let report = reconcile::execute(
            &prepared,
            &self.state,
            self.docker.clone(),
            self.options.apply.clone(),
            Arc::new(|p| {
                if let crate::apply::Progress::Finished(o) = p {
                    info!(target = %o.target, name = %o.name, result = ?o.result, "action");
                }
            }),
        )
        .await;
        self.status.update(|st| {
            for (o, a) in report.outcomes.iter().zip(&prepared.plan.actions) {
                let kind = kind_of(o.target);
                let action = Some(format!("{:?}: {}", a.op, a.reasons.join("; ")).to_lowercase());
                match &o.result {
                    crate::apply::Status::Done => st.set_resource(
                        kind,
                        &o.name,
                        a.op != crate::plan::Op::Delete,
                        "Applied",
                        "as declared",
                        action,
                    ),
                    crate::apply::Status::Unchanged => {}
                    crate::apply::Status::Failed(m) => {
                        st.set_resource(kind, &o.name, false, "ApplyFailed", m, action)
                    }
                    crate::apply::Status::Skipped(m) => {
                        st.set_resource(kind, &o.name, false, "DependencyFailed", m, action)
                    }
                    crate::apply::Status::Conflict(m) => {
                        st.set_resource(kind, &o.name, false, "Conflict", m, action)
                    }
                }
                if a.op == crate::plan::Op::Delete && o.result == crate::apply::Status::Done {
                    st.resources.remove(&format!("{kind}/{}", o.name));
                }
            }
            st.plan = None;
        });
        if report.failures() > 0 {
            let failed: Vec<String> = report
                .outcomes
                .iter()
                .filter_map(|o| match &o.result {
                    crate::apply::Status::Failed(m) | crate::apply::Status::Conflict(m) => {
                        Some(format!("{} {}: {m}", o.target, o.name))
                    }
                    _ => None,
                })
                .collect();
            return Some(PassOutcome::Transient(failed.join("; ")));
        }
        Some(PassOutcome::Synced {
            revision: revision.id,
            changes,
            resync,
        })
    }
}

fn kind_of(target: crate::plan::Target) -> &'static str {
    match target {
        crate::plan::Target::App => "App",
        crate::plan::Target::Domain => "Domain",
        crate::plan::Target::Volume => "Volume",
        crate::plan::Target::Network => "Network",
    }
}
