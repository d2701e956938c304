//! The controller behind `berth run`: one reconcile pass at a time, triggered by a new
//! revision (debounced file changes, or a Git fetch on an interval and on the push
//! webhook), Docker events on managed containers (die, destroy, oom: repaired at once)
//! and the resync timer; triggers arriving during a pass coalesce into one more pass.
//! Errors are sorted as in Flux: a transient failure retries with backoff, an invalid
//! revision stalls (nothing of it is applied, the last good revision stays live) until
//! the source changes. Every outcome lands in the status store and, deduplicated, in
//! the notifiers.

pub mod backoff;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{Instrument, error, info, info_span, warn};

use crate::apply::ApplyOptions;
use crate::drivers::docker::DockerApi;
use crate::manifest::{self, model::EventKind};
use crate::notify::{Notification, Notifier, Target as NotifyTarget};
use crate::plan::{Op, Plan};
use crate::reconcile::{self, PassOptions};
use crate::source::git::GitSource;
use crate::source::{Revision, Source};
use crate::state::StateDir;
use crate::status::{self, FetchRecord, PassRecord, Phase, StatusStore};
use backoff::{Backoff, jitter};

/// What started a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The first pass.
    Start,
    /// The source changed (files, or a fetch found a new commit).
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
        /// One line per action that changed something: "update app web: image a → b".
        changes: Vec<String>,
        /// Whether every change put back something changed by hand.
        drift_only: bool,
        /// With autoApply off: the plan waits for `berth apply`.
        pending: bool,
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
    Transient {
        /// The revision tried, when one was read.
        revision: Option<String>,
        /// What failed: one entry per resource, or one for the whole pass.
        failures: Vec<String>,
    },
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
    /// How often a Git source is fetched.
    pub fetch_interval: Duration,
    /// How long a pass or a backup waits for the instance's lock (`--lock-timeout`).
    pub lock_timeout: Duration,
}

/// `berth run`: keeps the host converged to a source.
pub struct Controller {
    source: Source,
    state: StateDir,
    docker: Arc<dyn DockerApi>,
    options: ControllerOptions,
    status: StatusStore,
    notifier: Notifier,
    fetch_now: Arc<Notify>,
    /// The newest commit fetched (Git sources).
    latest: Arc<Mutex<Option<String>>>,
    /// A failure was reported and no success since: the next success is a recovery.
    failing: Arc<AtomicBool>,
    /// The databases of the last valid revision that have a backup schedule.
    schedules: Arc<Mutex<Vec<crate::databases::DesiredDatabase>>>,
    /// Poked when the schedules change.
    schedules_changed: Arc<Notify>,
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
        let failing = status
            .snapshot()
            .conditions
            .iter()
            .any(|c| c.kind == "Ready" && !c.status);
        Controller {
            source,
            state,
            docker,
            options,
            status,
            notifier,
            fetch_now: Arc::new(Notify::new()),
            latest: Arc::new(Mutex::new(None)),
            failing: Arc::new(AtomicBool::new(failing)),
            schedules: Arc::new(Mutex::new(Vec::new())),
            schedules_changed: Arc::new(Notify::new()),
        }
    }

    /// What the push webhook pokes to fetch a Git source at once.
    pub fn fetch_trigger(&self) -> Arc<Notify> {
        self.fetch_now.clone()
    }

    /// Runs until `shutdown` turns true; the pass under way finishes first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> notify::Result<()> {
        let (triggers, mut incoming) = mpsc::unbounded_channel::<Trigger>();

        let _watcher = match &self.source {
            Source::Dir(dir) => {
                // File changes, debounced: a burst of writes makes one trigger.
                let (changes_tx, mut changes) = mpsc::unbounded_channel::<()>();
                let watcher = dir.watch(changes_tx)?;
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
                Some(watcher)
            }
            Source::Git(git) => {
                self.first_fetch(git).await;
                tokio::spawn(self.fetcher(git.clone(), triggers.clone()));
                None
            }
        };

        tokio::spawn(self.backups());
        tokio::spawn(self.delivery_counts());

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
                self.announce(outcome);
            }
            let wait = match &outcome {
                Some(PassOutcome::Synced {
                    revision,
                    changes,
                    resync: interval,
                    ..
                }) => {
                    resync = *interval;
                    backoff.success();
                    stalled_on = None;
                    info!(revision = %status::short(revision), changes = changes.len(), "in sync");
                    resync
                }
                Some(PassOutcome::Stalled { revision, message }) => {
                    error!(revision = %status::short(revision), "revision is invalid; nothing of it is applied:\n{message}");
                    stalled_on = Some(revision.clone());
                    resync
                }
                Some(PassOutcome::Transient { failures, .. }) => {
                    let delay = backoff.failure(Instant::now(), jitter());
                    warn!(retry_in = ?delay, "pass failed: {}", failures.join("; "));
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
        self.notifier.flush(Duration::from_secs(5)).await;
        info!("stopped");
        Ok(())
    }

    /// Fetches a Git source before the first pass; when that fails, the revision
    /// applied before (if the clone has it) stays the one to converge to.
    async fn first_fetch(&self, git: &Arc<GitSource>) {
        let fetched = fetch(git).await;
        let commit = match &fetched {
            Ok(commit) => Some(commit.clone()),
            Err(_) => self
                .status
                .snapshot()
                .revision_applied
                .filter(|r| r.len() == 40),
        };
        record_fetch(&self.status, &fetched);
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = commit;
    }

    /// Fetches on the interval and whenever the webhook asks; a new commit triggers a
    /// pass, a failure is reported and keeps the last good revision live.
    fn fetcher(
        &self,
        git: Arc<GitSource>,
        to_loop: mpsc::UnboundedSender<Trigger>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let interval = self.options.fetch_interval;
        let fetch_now = self.fetch_now.clone();
        let latest = self.latest.clone();
        let status = self.status.clone();
        let notifier = self.notifier.clone();
        let failing = self.failing.clone();
        let instance = self.options.instance.clone();
        async move {
            let mut failed_before = false;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = fetch_now.notified() => {}
                }
                let fetched = fetch(&git).await;
                record_fetch(&status, &fetched);
                match fetched {
                    Ok(commit) => {
                        let changed = {
                            let mut latest = latest.lock().unwrap_or_else(|e| e.into_inner());
                            let changed = latest.as_deref() != Some(commit.as_str());
                            *latest = Some(commit.clone());
                            changed
                        };
                        // A recovery from a failed fetch also earns a pass, which
                        // reports the recovery.
                        if (changed || failed_before) && to_loop.send(Trigger::Source).is_err() {
                            break;
                        }
                        failed_before = false;
                    }
                    Err(message) => {
                        failed_before = true;
                        failing.store(true, Ordering::SeqCst);
                        let live = status.snapshot().revision_applied;
                        notifier.send(Notification {
                            event: EventKind::SyncFailed,
                            instance: instance.clone(),
                            revision: live.clone(),
                            summary: match &live {
                                Some(r) => format!(
                                    "sync failed: {message}; last good revision {} still live",
                                    status::short(r)
                                ),
                                None => format!("sync failed: {message}"),
                            },
                            details: Vec::new(),
                        });
                    }
                }
            }
        }
    }

    /// Runs each database's backups on its schedule (host local time), records the
    /// result in status and sends `BackupFailed` when one fails.
    fn backups(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let schedules = self.schedules.clone();
        let changed = self.schedules_changed.clone();
        let state = self.state.clone();
        let lock_timeout = self.options.lock_timeout;
        let status = self.status.clone();
        let notifier = self.notifier.clone();
        let instance = self.options.instance.clone();
        let docker = self.docker.clone();
        async move {
            loop {
                let now = chrono::Local::now();
                let next = {
                    let all = schedules.lock().unwrap_or_else(|e| e.into_inner());
                    all.iter()
                        .filter_map(|db| {
                            let at = db
                                .backup
                                .as_ref()?
                                .schedule
                                .schedule()
                                .find_next_occurrence(&now, false)
                                .ok()?;
                            Some((at, db.clone()))
                        })
                        .min_by_key(|(at, _)| *at)
                };
                let Some((at, db)) = next else {
                    changed.notified().await;
                    continue;
                };
                let wait = (at - now).to_std().unwrap_or_default();
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = changed.notified() => continue,
                }
                let keep = db.backup.as_ref().map(|b| b.keep);
                let result = match state.lock("backup", lock_timeout, |_| {}).await {
                    Ok(_lock) => {
                        crate::backup::run(&db, state.path(), None, keep, Some(docker.as_ref()))
                            .await
                    }
                    Err(e) => Err(e.into()),
                };
                let record = match &result {
                    Ok(f) => {
                        info!(database = %db.name, file = %f.path.display(), bytes = f.bytes, "backed up");
                        status::BackupRecord {
                            time: status::now(),
                            file: Some(f.path.display().to_string()),
                            bytes: Some(f.bytes),
                            error: None,
                        }
                    }
                    Err(e) => {
                        warn!(database = %db.name, "backup failed: {e}");
                        notifier.send(Notification {
                            event: EventKind::BackupFailed,
                            instance: instance.clone(),
                            revision: None,
                            summary: format!("backup of Database/{} failed", db.name),
                            details: vec![e.to_string()],
                        });
                        status::BackupRecord {
                            time: status::now(),
                            file: None,
                            bytes: None,
                            error: Some(e.to_string()),
                        }
                    }
                };
                status.update(|st| {
                    match &record.error {
                        Some(e) => {
                            st.push_event("BackupFailed", format!("Database/{}: {e}", db.name))
                        }
                        None => st.push_event(
                            "BackedUp",
                            format!(
                                "Database/{} → {}",
                                db.name,
                                record.file.as_deref().unwrap_or_default()
                            ),
                        ),
                    }
                    st.backups.insert(db.name.clone(), record);
                });
            }
        }
    }

    /// Copies the notifiers' delivery counts into status when they change (deliveries
    /// happen after the pass that sent them).
    fn delivery_counts(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let notifier = self.notifier.clone();
        let status = self.status.clone();
        async move {
            let mut last = Vec::new();
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let now = notifier.deliveries();
                if now != last {
                    status.update(|st| st.notifiers = now.clone());
                    last = now;
                }
            }
        }
    }

    /// Writes a pass's result into the status store.
    fn record(&self, trigger: &Trigger, outcome: &PassOutcome, took: Duration) {
        let (result, event) = match outcome {
            PassOutcome::Synced { pending: true, .. } => ("Synced", None),
            PassOutcome::Synced {
                revision,
                changes,
                drift_only,
                ..
            } if !changes.is_empty() => (
                "Synced",
                Some((
                    if *drift_only {
                        "DriftCorrected"
                    } else {
                        "Deployed"
                    },
                    format!(
                        "{} {}: {}",
                        if *drift_only { "repaired" } else { "deployed" },
                        status::short(revision),
                        changes.join("; ")
                    ),
                )),
            ),
            PassOutcome::Synced { .. } => ("Synced", None),
            PassOutcome::Stalled { revision, message } => (
                "Stalled",
                Some((
                    "SyncFailed",
                    format!("revision {} is invalid: {message}", status::short(revision)),
                )),
            ),
            PassOutcome::Transient { failures, .. } => {
                ("Failed", Some(("SyncFailed", failures.join("; "))))
            }
        };
        self.status.update(|st| {
            st.source = self.source.describe();
            match outcome {
                PassOutcome::Synced {
                    revision, pending, ..
                } => {
                    st.revision_observed = Some(revision.clone());
                    if *pending {
                        st.set_phase(&Phase::PlanPending {
                            revision: revision.clone(),
                        });
                    } else {
                        st.revision_applied = Some(revision.clone());
                        st.last_success = Some(status::now());
                        st.set_phase(&Phase::Synced {
                            revision: revision.clone(),
                        });
                    }
                }
                PassOutcome::Stalled { revision, message } => {
                    st.revision_observed = Some(revision.clone());
                    st.set_phase(&Phase::Stalled {
                        revision: revision.clone(),
                        message: message.clone(),
                    });
                }
                PassOutcome::Transient { revision, failures } => {
                    if let Some(r) = revision {
                        st.revision_observed = Some(r.clone());
                    }
                    st.set_phase(&Phase::Failed {
                        message: failures.join("; "),
                    });
                }
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

    /// Tells the notifiers; they deduplicate repeated failures themselves.
    fn announce(&self, outcome: &PassOutcome) {
        let note = |event, revision: &str, summary: String, details: Vec<String>| Notification {
            event,
            instance: self.options.instance.clone(),
            revision: Some(revision.to_owned()),
            summary,
            details,
        };
        match outcome {
            PassOutcome::Synced {
                revision,
                changes,
                drift_only,
                pending,
                ..
            } => {
                if self.failing.swap(false, Ordering::SeqCst) {
                    self.notifier.send(note(
                        EventKind::SyncRecovered,
                        revision,
                        format!(
                            "sync recovered: revision {} is applied",
                            status::short(revision)
                        ),
                        Vec::new(),
                    ));
                }
                if changes.is_empty() {
                    return;
                }
                let short = status::short(revision);
                let (event, summary) = if *pending {
                    (
                        EventKind::PlanPending,
                        format!("plan pending for {short}: run `berth apply` (autoApply is off)"),
                    )
                } else if *drift_only {
                    (
                        EventKind::DriftCorrected,
                        format!("drift corrected at {short}"),
                    )
                } else {
                    (EventKind::Deployed, format!("deployed {short}"))
                };
                self.notifier
                    .send(note(event, revision, summary, changes.clone()));
            }
            PassOutcome::Stalled { revision, message } => {
                self.failing.store(true, Ordering::SeqCst);
                let live = self.status.snapshot().revision_applied;
                let summary = format!(
                    "sync failed: revision {} is invalid{}",
                    status::short(revision),
                    live.map(|l| format!("; last good revision {} still live", status::short(&l)))
                        .unwrap_or_default()
                );
                let details = message.lines().map(str::to_owned).collect();
                self.notifier
                    .send(note(EventKind::SyncFailed, revision, summary, details));
            }
            PassOutcome::Transient { revision, failures } => {
                self.failing.store(true, Ordering::SeqCst);
                let revision = revision.clone().unwrap_or_default();
                self.notifier.send(note(
                    EventKind::SyncFailed,
                    &revision,
                    "sync failed: some resources could not be applied; retrying with backoff"
                        .to_owned(),
                    failures.clone(),
                ));
            }
        }
    }

    /// The revision to converge to: the directory as it is, or the newest commit.
    async fn revision(&self) -> Result<Revision, String> {
        match &self.source {
            Source::Dir(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || dir.read())
                    .await
                    .map_err(|e| format!("failed to read the source: {e}"))
            }
            Source::Git(git) => {
                let commit = self
                    .latest
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let Some(commit) = commit else {
                    let why = self
                        .status
                        .snapshot()
                        .fetch
                        .and_then(|f| f.error)
                        .unwrap_or_else(|| "nothing fetched yet".to_owned());
                    return Err(format!("no revision to apply: {why}"));
                };
                let git = git.clone();
                tokio::task::spawn_blocking(move || git.read(&commit))
                    .await
                    .map_err(|e| format!("failed to read the source: {e}"))?
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// One pass. Returns `None` when the source is still the revision already found
    /// invalid (nothing to retry until it changes).
    async fn pass(&self, stalled_on: Option<&str>) -> Option<PassOutcome> {
        let revision = match self.revision().await {
            Ok(r) => r,
            Err(message) => {
                return Some(PassOutcome::Transient {
                    revision: None,
                    failures: vec![message],
                });
            }
        };
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
        self.configure_notifiers(&manifests);
        let settings = manifests.settings();
        let (auto_apply, resync) = (settings.auto_apply, settings.resync.get());
        let options = PassOptions {
            instance: self.options.instance.clone(),
            apply: auto_apply,
            no_prune: false,
        };
        let transient = |failures: Vec<String>| PassOutcome::Transient {
            revision: Some(revision.id.clone()),
            failures,
        };
        // One writer per instance, for this pass only: `berth apply` may run between two.
        let _lock = match auto_apply {
            true => match self
                .state
                .lock("run pass", self.options.lock_timeout, |h| {
                    info!(
                        "waiting for the lock on instance {}, held by {h}",
                        self.state.instance()
                    )
                })
                .await
            {
                Ok(l) => Some(l),
                Err(e) => return Some(transient(vec![e.to_string()])),
            },
            false => None,
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
            Err(e) => return Some(transient(vec![e.to_string()])),
        };
        self.configure_backups(&prepared.desired.databases);
        let plan = &prepared.plan;
        let changes = change_lines(plan);
        let drift_only = plan.changes().all(|a| a.drift);
        self.status.update(|st| {
            st.plan = (!changes.is_empty()).then(|| crate::plan::render_text(plan, false));
            for a in &plan.actions {
                let kind = kind_of(a.target);
                if a.op == Op::Noop {
                    let message = if a.reasons.is_empty() {
                        "as declared".to_owned()
                    } else {
                        a.reasons.join("; ")
                    };
                    st.set_resource(kind, &a.name, true, "Unchanged", &message, None);
                } else if auto_apply {
                    st.set_reconciling(kind, &a.name, &a.reasons.join("; "));
                }
            }
            if auto_apply && !changes.is_empty() {
                st.set_phase(&Phase::Reconciling {
                    revision: revision.id.clone(),
                });
            }
        });
        if !auto_apply {
            info!(plan = %plan.summary, "autoApply is off: run `berth apply` to apply");
            return Some(PassOutcome::Synced {
                revision: revision.id,
                changes,
                drift_only,
                pending: true,
                resync,
            });
        }
        if changes.is_empty() {
            return Some(PassOutcome::Synced {
                revision: revision.id,
                changes,
                drift_only,
                pending: false,
                resync,
            });
        }
        info!(plan = %plan.summary, "applying");
        let was_degraded: std::collections::BTreeSet<String> = self
            .status
            .snapshot()
            .resources
            .into_iter()
            .filter(|(_, r)| {
                r.conditions
                    .iter()
                    .any(|c| c.kind == "Ready" && !c.status && c.reason == "ApplyFailed")
            })
            .map(|(key, _)| key)
            .collect();
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
            for (o, a) in report.outcomes.iter().zip(&plan.actions) {
                let kind = kind_of(o.target);
                let action = Some(format!("{:?}: {}", a.op, a.reasons.join("; ")).to_lowercase());
                match &o.result {
                    crate::apply::Status::Done => st.set_resource(
                        kind,
                        &o.name,
                        a.op != Op::Delete,
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
                if a.op == Op::Delete && o.result == crate::apply::Status::Done {
                    st.resources.remove(&format!("{kind}/{}", o.name));
                }
            }
            st.plan = None;
        });
        self.announce_resources(&report, &revision.id, &was_degraded);
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
            return Some(transient(failed));
        }
        Some(PassOutcome::Synced {
            revision: revision.id,
            changes,
            drift_only,
            pending: false,
            resync,
        })
    }

    /// `Degraded` for a resource whose change failed (an update that never got healthy
    /// leaves the old container serving), `Recovered` when one of those applies again.
    fn announce_resources(
        &self,
        report: &crate::apply::Report,
        revision: &str,
        was_degraded: &std::collections::BTreeSet<String>,
    ) {
        for o in &report.outcomes {
            let key = format!("{}/{}", kind_of(o.target), o.name);
            let (event, summary) = match &o.result {
                crate::apply::Status::Failed(m) => (EventKind::Degraded, format!("{key}: {m}")),
                crate::apply::Status::Done if was_degraded.contains(&key) => (
                    EventKind::Recovered,
                    format!("{key}: applied and ready again"),
                ),
                _ => continue,
            };
            self.notifier.send(Notification {
                event,
                instance: self.options.instance.clone(),
                revision: Some(revision.to_owned()),
                summary,
                details: Vec::new(),
            });
        }
    }

    /// Takes this revision's backup schedules (managed and shared databases).
    fn configure_backups(
        &self,
        databases: &std::collections::BTreeMap<String, crate::databases::DesiredDatabase>,
    ) {
        let scheduled: Vec<_> = databases
            .values()
            .filter(|d| {
                d.backup.is_some() && d.mode != crate::manifest::model::DatabaseMode::External
            })
            .cloned()
            .collect();
        let mut current = self.schedules.lock().unwrap_or_else(|e| e.into_inner());
        if *current != scheduled {
            *current = scheduled;
            self.schedules_changed.notify_one();
        }
    }

    /// Points the notifiers at this revision's Notifier resources. A notifier whose
    /// URL secret is missing is skipped and reported; the pass goes on.
    fn configure_notifiers(&self, manifests: &manifest::Manifests) {
        let secrets = self.state.secrets();
        let mut targets = Vec::new();
        for (name, resource) in &manifests.notifiers {
            match NotifyTarget::from_spec(name, &resource.spec, &secrets) {
                Ok(t) => targets.push(t),
                Err(e) => {
                    warn!(notifier = %name, "{e}");
                    self.status.update(|st| {
                        st.set_resource(
                            "Notifier",
                            name,
                            false,
                            "SecretMissing",
                            &e.to_string(),
                            None,
                        )
                    });
                }
            }
        }
        self.notifier.set_targets(targets);
    }
}

/// Fetches off the async threads; the error is the message to show.
async fn fetch(git: &Arc<GitSource>) -> Result<String, String> {
    let git = git.clone();
    match tokio::task::spawn_blocking(move || git.fetch()).await {
        Ok(Ok(f)) => Ok(f.commit),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("the fetch was interrupted: {e}")),
    }
}

fn record_fetch(status: &StatusStore, fetched: &Result<String, String>) {
    status.update(|st| {
        let before = st.fetch.as_ref().and_then(|f| f.error.clone());
        st.fetch = Some(FetchRecord {
            time: status::now(),
            commit: fetched.as_ref().ok().cloned(),
            error: fetched.as_ref().err().cloned(),
        });
        if let Err(message) = fetched {
            if before.as_deref() != Some(message.as_str()) {
                st.push_event("FetchFailed", message.clone());
            }
        }
    });
    if let Err(message) = fetched {
        warn!("{message}; the last good revision stays live");
    }
}

/// One line per change, as a notification lists them.
fn change_lines(plan: &Plan) -> Vec<String> {
    plan.changes()
        .map(|a| {
            let verb = match a.op {
                Op::Create => "create",
                Op::Update => "update",
                Op::Delete => "delete",
                Op::Conflict => "conflict",
                Op::Noop => "keep",
            };
            if a.reasons.is_empty() {
                format!("{verb} {} {}", a.target, a.name)
            } else {
                format!("{verb} {} {}: {}", a.target, a.name, a.reasons.join("; "))
            }
        })
        .collect()
}

fn kind_of(target: crate::plan::Target) -> &'static str {
    match target {
        crate::plan::Target::App => "App",
        crate::plan::Target::Domain => "Domain",
        crate::plan::Target::Database => "Database",
        crate::plan::Target::Volume => "Volume",
        crate::plan::Target::Network => "Network",
    }
}
