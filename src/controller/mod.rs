//! The controller behind `berth run`: one reconcile pass at a time, started by the
//! triggers (a new revision, Docker events on managed containers, the timer), each
//! pass's typed outcome handed to the pure error policy to decide the next one. Around
//! the loop: the scheduler (backups), and the event bus the status store and the
//! notifications subscribe to.

pub mod backoff;
pub mod events;
mod pass;
pub mod policy;
mod report;
pub mod schedule;
pub mod triggers;
pub mod workflows;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{Instrument, error, info, info_span, warn};

use crate::apply::ApplyOptions;
use crate::drivers::docker::DockerApi;
use crate::notify::Notifier;
use crate::resource::{ResourceId, ResourceKind};
use crate::source::{Revision, RevisionId, RevisionKind, Source};
use crate::state::StateDir;
use crate::status::{Reason, StatusStore};
use crate::workflow::runs::Runs;
use backoff::jitter;
use events::{Bus, Event};
use pass::{Mode, PassContext};
use policy::{Failure, PassOutcome, Policy, Requeue, Severity};
use schedule::{Clock, Job, JobId, Scheduler};
use triggers::{Fetcher, Trigger, TriggerSender, Triggers};
use workflows::{WorkflowHost, Workflows};

/// The controller's settings.
#[derive(Clone)]
pub struct ControllerOptions {
    /// The berth instance.
    pub instance: String,
    /// How apply runs.
    pub apply: ApplyOptions,
    /// How long file changes settle before a pass.
    pub debounce: Duration,
    /// How often a Git source is fetched.
    pub fetch_interval: Duration,
    /// How long a pass or a backup waits for the instance's lock (`--lock-timeout`).
    pub lock_timeout: Duration,
    /// The host policy every revision is held to (`None`: none, in tests).
    pub policy: Option<Arc<crate::manifest::Policy>>,
}

/// The revision the loop will not retry until it changes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stall {
    revision: RevisionId,
    reason: Reason,
}

impl Stall {
    /// Whether a pass over `revision` started by `trigger` would only stall again.
    /// A conflict blocks some resources, not all: a Docker event still earns a pass
    /// that repairs the others.
    fn holds(&self, revision: &RevisionId, trigger: &Trigger) -> bool {
        self.revision == *revision
            && !(self.reason == Reason::Conflict
                && matches!(trigger, Trigger::Container(_) | Trigger::Cluster(_)))
    }

    /// Whether the stalled revision is invalid (nothing of it can be planned).
    fn is_invalid_revision(&self) -> bool {
        self.reason == Reason::InvalidRevision
    }
}

/// `berth run`: keeps the host converged to a source.
pub struct Controller {
    // What it converges, and with what.
    source: Source,
    state: StateDir,
    docker: Arc<dyn DockerApi>,
    // How: its settings and its error policy.
    options: ControllerOptions,
    policy: Policy,
    // Where it reports.
    status: StatusStore,
    notifier: Notifier,
    bus: Bus,
    // What starts a pass.
    triggers: Triggers,
    fetcher: Option<Fetcher>,
    scheduler: Scheduler,
    // The workflows of the applied revision, and what stops their runs.
    workflows: Workflows,
    stop_runs: watch::Sender<bool>,
}

impl Controller {
    /// A controller for `source`, reporting to `status` and `notifier`.
    pub fn new(
        source: Source,
        state: StateDir,
        docker: Arc<dyn DockerApi>,
        options: ControllerOptions,
        status: StatusStore,
        notifier: Notifier,
    ) -> Controller {
        let bus = Bus::new();
        let fetcher = match &source {
            Source::Git(git) => Some(Fetcher::new(
                git.clone(),
                options.fetch_interval,
                bus.clone(),
            )),
            Source::Dir(_) => None,
        };
        let scheduler = Scheduler::new(Clock::System, bus.clone());
        let (stop_runs, runs_stopped) = watch::channel(false);
        let workflows = Workflows::new(
            WorkflowHost {
                instance: options.instance.clone(),
                state: state.clone(),
                docker: docker.clone(),
                apply: options.apply.clone(),
                lock_timeout: options.lock_timeout,
                notifier: notifier.clone(),
            },
            Runs::open(&state),
            scheduler.clone(),
            runs_stopped,
        );
        Controller {
            source,
            state,
            docker,
            options,
            status,
            notifier,
            bus,
            triggers: Triggers::new(),
            fetcher,
            scheduler,
            workflows,
            stop_runs,
            policy: Policy::default(),
        }
    }

    /// Retries transient failures with `policy` instead of the default (tests).
    pub fn with_policy(mut self, policy: Policy) -> Controller {
        self.policy = policy;
        self
    }

    /// What the push webhook pokes to fetch a Git source at once.
    pub fn fetch_trigger(&self) -> Arc<Notify> {
        match &self.fetcher {
            Some(f) => f.poke(),
            None => Arc::new(Notify::new()),
        }
    }

    /// The event bus: subscribe before [`Controller::run`] to see every event.
    pub fn bus(&self) -> Bus {
        self.bus.clone()
    }

    /// Where to ask for a pass from outside.
    pub fn trigger_sender(&self) -> TriggerSender {
        self.triggers.sender()
    }

    /// The workflows: their runs, and where a control call starts one.
    pub fn workflows(&self) -> Workflows {
        self.workflows.clone()
    }

    /// The scheduler of cron-driven jobs.
    pub fn scheduler(&self) -> Scheduler {
        self.scheduler.clone()
    }

    /// Runs until `shutdown` turns true; the pass under way finishes first.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> notify::Result<()> {
        let snapshot = self.status.snapshot();
        report::spawn_status(&self.bus, self.status.clone(), self.source.describe());
        report::Announcer::spawn(
            &self.bus,
            self.notifier.clone(),
            self.options.instance.clone(),
            &snapshot,
        );
        report::spawn_delivery_counts(&self.bus, self.notifier.clone());
        tokio::spawn(self.scheduler.clone().run());
        self.workflows
            .listen(&self.bus, snapshot.revision_applied.clone());

        let _watcher = match &self.source {
            Source::Dir(dir) => Some(triggers::watch_dir(
                dir,
                self.options.debounce,
                self.triggers.sender(),
            )?),
            Source::Git(_) => None,
        };
        if let Some(fetcher) = &self.fetcher {
            // When the first fetch fails, the commit applied before (if the clone has
            // it) stays the one to converge to.
            let applied = snapshot
                .revision_applied
                .filter(|r| r.kind() == RevisionKind::Commit);
            fetcher.first(applied).await;
            fetcher.clone().spawn(self.triggers.sender());
        }
        triggers::watch_docker(
            self.docker.as_ref(),
            &self.options.instance,
            self.triggers.sender(),
        );
        triggers::watch_cluster(self.docker.as_ref(), self.triggers.sender());

        let mut stall: Option<Stall> = None;
        let mut last_good: Option<Revision> = None;
        let mut trigger = Trigger::Start;
        loop {
            let span = info_span!("pass", trigger = %trigger);
            let started = Instant::now();
            let finished = self
                .pass(&trigger, stall.as_ref(), &mut last_good)
                .instrument(span)
                .await;
            let requeue = match finished {
                Some(outcome) => {
                    let requeue = self.policy.requeue(&outcome, Instant::now(), jitter());
                    log(&outcome, requeue);
                    stall = match (requeue, outcome.severity(), outcome.revision()) {
                        (
                            Requeue::StalledUntilRevisionChanges,
                            Some(Severity::Stalled(reason)),
                            Some(r),
                        ) => Some(Stall {
                            revision: r.clone(),
                            reason,
                        }),
                        _ => None,
                    };
                    let finished = Event::PassFinished {
                        trigger: trigger.clone(),
                        outcome,
                        took: started.elapsed(),
                    };
                    report::record_finished(&self.status, &self.source.describe(), &finished);
                    self.bus.publish(finished);
                    requeue
                }
                None => Requeue::StalledUntilRevisionChanges,
            };
            // While stalled, the resync timer only looks whether the revision changed
            // (a watcher can miss an event); the pass is skipped when it did not.
            let wait = match requeue {
                Requeue::After(d) | Requeue::Backoff(d) | Requeue::Waiting(d) => d,
                Requeue::StalledUntilRevisionChanges => self.policy.resync(),
            };
            let deadline = Instant::now() + wait;
            trigger = tokio::select! {
                _ = shutdown.changed() => break,
                t = self.triggers.next(Some(deadline)) => t,
            };
            if *shutdown.borrow() {
                break;
            }
        }
        let _ = self.stop_runs.send(true);
        self.workflows.stopped(Duration::from_secs(5)).await;
        self.notifier.flush(Duration::from_secs(5)).await;
        info!("stopped");
        Ok(())
    }

    /// One pass. `None` when the source is still the revision found stalled: then, if
    /// it is invalid, the last good revision is kept converged instead (stalled means
    /// the new revision is not applied, not that drift of the old one stays).
    async fn pass(
        &self,
        trigger: &Trigger,
        stall: Option<&Stall>,
        last_good: &mut Option<Revision>,
    ) -> Option<PassOutcome> {
        let revision = match self.revision().await {
            Ok(r) => r,
            Err(failure) => {
                self.bus.publish(Event::PassStarted {
                    trigger: trigger.clone(),
                });
                return Some(PassOutcome::Failed {
                    revision: None,
                    failures: vec![failure],
                });
            }
        };
        if let Some(stall) = stall.filter(|s| s.holds(&revision.id, trigger)) {
            if let Some(good) = last_good.as_ref().filter(|_| stall.is_invalid_revision()) {
                self.keep_last_good(good.clone(), &stall.revision).await;
            }
            return None;
        }
        self.bus.publish(Event::PassStarted {
            trigger: trigger.clone(),
        });
        let pass = pass::run(&self.pass_context(), revision.clone(), Mode::Converge).await;
        if let Some(databases) = pass.backups {
            self.schedule_backups(databases);
        }
        if !matches!(pass.outcome, PassOutcome::Invalid { .. }) {
            *last_good = Some(revision);
        }
        Some(pass.outcome)
    }

    /// A pass over the last good revision while `invalid`, the newest, stalls: it
    /// repairs drift and reports each resource's state; the source stays Stalled on
    /// `invalid`, so nothing of this pass is recorded as the source's.
    async fn keep_last_good(&self, good: Revision, invalid: &RevisionId) {
        let (good_id, invalid) = (good.id.short().to_owned(), invalid.short());
        let pass = pass::run(&self.pass_context(), good, Mode::KeepLastGood).await;
        match &pass.outcome {
            PassOutcome::Synced { changes, .. } if !changes.is_empty() => info!(
                "revision {invalid} is invalid: kept {good_id} converged: {}",
                changes.join("; ")
            ),
            PassOutcome::Synced { .. } => {}
            outcome => warn!(
                "revision {invalid} is invalid: keeping {good_id} failed: {}",
                outcome.failure_lines().join("; ")
            ),
        }
    }

    fn pass_context(&self) -> PassContext<'_> {
        PassContext {
            instance: &self.options.instance,
            state: &self.state,
            docker: &self.docker,
            apply: &self.options.apply,
            status: &self.status,
            bus: &self.bus,
            notifier: &self.notifier,
            lock_timeout: self.options.lock_timeout,
            workflows: &self.workflows,
            policy: self.options.policy.as_deref(),
        }
    }

    /// The revision to converge to: the directory as it is, or the newest commit.
    async fn revision(&self) -> Result<Revision, Failure> {
        match &self.source {
            Source::Dir(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || dir.read())
                    .await
                    .map_err(|e| Failure::transient(format!("failed to read the source: {e}")))
            }
            Source::Git(git) => {
                let commit = self.fetcher.as_ref().and_then(Fetcher::latest);
                let Some(commit) = commit else {
                    let why = self
                        .status
                        .snapshot()
                        .fetch
                        .and_then(|f| f.error)
                        .unwrap_or_else(|| "nothing fetched yet".to_owned());
                    return Err(Failure::transient(format!("no revision to apply: {why}")));
                };
                let git = git.clone();
                tokio::task::spawn_blocking(move || git.read(commit.as_str()))
                    .await
                    .map_err(|e| Failure::transient(format!("failed to read the source: {e}")))?
                    .map_err(|e| Failure::transient(e.to_string()))
            }
        }
    }

    /// Makes this revision's backup schedules (managed and shared databases) the
    /// scheduler's backup jobs. Each run records its result on the bus.
    fn schedule_backups(&self, databases: Vec<crate::expand::databases::DesiredDatabase>) {
        let jobs = databases
            .into_iter()
            .filter_map(|db| {
                let schedule = db.backup.as_ref()?.schedule.clone();
                let id = ResourceId::new(ResourceKind::Database, db.name.clone());
                let db = Arc::new(db);
                let state = self.state.clone();
                let lock_timeout = self.options.lock_timeout;
                let docker = self.docker.clone();
                let bus = self.bus.clone();
                let database = id.clone();
                let run: schedule::JobRun = Arc::new(move || {
                    let (db, state, docker, bus, database) = (
                        db.clone(),
                        state.clone(),
                        docker.clone(),
                        bus.clone(),
                        database.clone(),
                    );
                    Box::pin(async move {
                        let keep = db.backup.as_ref().map(|b| b.keep);
                        // A backup is a writer too: it waits for a pass to finish.
                        let result = match state.lock("backup", lock_timeout, |_| {}).await {
                            Ok(_lock) => {
                                let docker = Some(docker.as_ref());
                                crate::backup::run(&db, state.path(), None, keep, docker).await
                            }
                            Err(e) => Err(e.into()),
                        };
                        bus.publish(match result {
                            Ok(f) => {
                                info!(database = %db.name, file = %f.path.display(), bytes = f.bytes, "backed up");
                                Event::BackupDone {
                                    database,
                                    file: f.path.display().to_string(),
                                    bytes: f.bytes,
                                }
                            }
                            Err(e) => {
                                warn!(database = %db.name, "backup failed: {e}");
                                Event::BackupFailed {
                                    database,
                                    error: e.to_string(),
                                }
                            }
                        });
                    })
                });
                Some(Job {
                    id: JobId::backup(id),
                    schedule,
                    run,
                })
            })
            .collect();
        self.scheduler.set("backup", jobs);
    }
}

/// Says how a pass went and what follows.
fn log(outcome: &PassOutcome, requeue: Requeue) {
    match outcome {
        PassOutcome::Synced {
            revision, changes, ..
        } => info!(revision = %revision.short(), changes = changes.len(), "in sync"),
        PassOutcome::Invalid { revision, message } => error!(
            revision = %revision.short(),
            "revision is invalid; nothing of it is applied:\n{message}"
        ),
        PassOutcome::Failed { .. } => {
            let failures = outcome.failure_lines().join("; ");
            match requeue {
                Requeue::Backoff(d) => warn!(retry_in = ?d, "pass failed: {failures}"),
                Requeue::Waiting(d) => info!(retry_in = ?d, "waiting: {failures}"),
                _ => error!("pass stalled until the revision changes: {failures}"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
