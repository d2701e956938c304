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
}

impl Controller {
    /// A controller for `source`.
    pub fn new(
        source: DirSource,
        state: StateDir,
        docker: Arc<dyn DockerApi>,
        options: ControllerOptions,
    ) -> Controller {
        Controller {
            source,
            state,
            docker,
            options,
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
        loop {
            let span = info_span!("pass", trigger = ?trigger);
            let outcome = self.pass(stalled_on.as_deref()).instrument(span).await;
            let resync = self.resync();
            let wait = match &outcome {
                Some(PassOutcome::Synced { revision, changes }) => {
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

    fn resync(&self) -> Duration {
        manifest::load_files(&self.source.read().files)
            .map(|m| m.settings().resync.get())
            .unwrap_or(Duration::from_secs(300))
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
        let auto_apply = manifests.settings().auto_apply;
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
        if !auto_apply {
            info!(plan = %prepared.plan.summary, "autoApply is off: run `berth apply` to apply");
            return Some(PassOutcome::Synced {
                revision: revision.id,
                changes: 0,
            });
        }
        if changes == 0 {
            return Some(PassOutcome::Synced {
                revision: revision.id,
                changes,
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
        })
    }
}
