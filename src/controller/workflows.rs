//! Workflows in the controller: which run, when. The triggers come from the bus (a new
//! revision applied, an app deployed, an app failed — once per failure, not per pass),
//! from the shared scheduler (cron) and from a control call (`berth workflow run`). One
//! run per workflow at a time: a trigger that fires while one is going is recorded as a
//! skipped run. Runs are cancelled cleanly when berth stops.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::events::{Bus, Event, JobId, ResourceChange};
use super::policy::PassOutcome;
use super::schedule::{Job, JobRun, Scheduler};
use crate::apply::ApplyOptions;
use crate::drivers::docker::DockerApi;
use crate::manifest::Manifests;
use crate::manifest::model::{EventKind, Trigger, WorkflowSpec};
use crate::notify::{Notification, Notifier};
use crate::resource::{ResourceId, ResourceKind};
use crate::source::RevisionId;
use crate::state::StateDir;
use crate::status::workflows::StartRefused;
use crate::workflow::actions::Host;
use crate::workflow::engine::{self, NodeRun, Progress, RunContext};
use crate::workflow::runs::{NodeRecord, RunState, Runs};

/// What the hosts of runs are made of.
#[derive(Clone)]
pub struct WorkflowHost {
    /// The berth instance.
    pub instance: String,
    /// Its state directory.
    pub state: StateDir,
    /// The daemon.
    pub docker: Arc<dyn DockerApi>,
    /// How apply runs.
    pub apply: ApplyOptions,
    /// How long a node waits for the instance's lock.
    pub lock_timeout: Duration,
    /// Where `notify` nodes and the WorkflowSucceeded/Failed events go.
    pub notifier: Notifier,
}

/// Why a run was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// No valid revision has been read yet.
    #[error("no revision has been applied yet; try again after the first pass")]
    NoRevision,
    /// The revision declares no such workflow.
    #[error("no workflow named `{0}` in the applied revision")]
    Unknown(String),
    /// A run of it is going.
    #[error("workflow `{0}` is already running (run {1}); this run was skipped")]
    Running(String, u64),
}

/// The controller's workflows: cheap to clone.
#[derive(Clone)]
pub struct Workflows {
    inner: Arc<Inner>,
}

struct Inner {
    host: WorkflowHost,
    runs: Runs,
    scheduler: Scheduler,
    shutdown: watch::Receiver<bool>,
    current: Mutex<Option<(RevisionId, Arc<Manifests>)>>,
    /// Workflows with a run going, and its number.
    running: Mutex<BTreeMap<String, u64>>,
    /// Apps whose failure has been told (until they deploy or recover).
    failing: Mutex<BTreeSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Workflows {
    /// Workflows run on `host`, recorded in `runs`, scheduled by `scheduler`, cancelled
    /// when `shutdown` turns true.
    pub fn new(
        host: WorkflowHost,
        runs: Runs,
        scheduler: Scheduler,
        shutdown: watch::Receiver<bool>,
    ) -> Workflows {
        Workflows {
            inner: Arc::new(Inner {
                host,
                runs,
                scheduler,
                shutdown,
                current: Mutex::new(None),
                running: Mutex::new(BTreeMap::new()),
                failing: Mutex::new(BTreeSet::new()),
            }),
        }
    }

    /// Waits (at most `timeout`) for the runs going to record how they ended, once
    /// their cancellation was asked.
    pub async fn stopped(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !lock(&self.inner.running).is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The record of runs.
    pub fn runs(&self) -> Runs {
        self.inner.runs.clone()
    }

    /// Makes `manifests` (a valid revision, about to be applied) the source of the
    /// workflows and of their schedules. Called before the pass publishes anything.
    pub fn set_revision(&self, revision: RevisionId, manifests: Arc<Manifests>) {
        let mut jobs = Vec::new();
        for (name, w) in &manifests.workflows {
            let crons = w.spec.triggers.iter().filter_map(|t| match t {
                Trigger::Schedule { cron } => Some(cron.clone()),
                _ => None,
            });
            for (i, cron) in crons.enumerate() {
                let this = self.clone();
                let workflow = name.clone();
                let trigger = format!("schedule {}", cron.as_str());
                let run: JobRun = Arc::new(move || {
                    let (this, workflow, trigger) =
                        (this.clone(), workflow.clone(), trigger.clone());
                    Box::pin(async move {
                        match this.start(&workflow, &trigger) {
                            Ok((_, done)) => {
                                let _ = done.await;
                            }
                            Err(e) => warn!(workflow = %workflow, "{e}"),
                        }
                    })
                });
                jobs.push(Job {
                    id: job_id(name, i),
                    schedule: cron,
                    run,
                });
            }
        }
        self.inner.scheduler.set("workflow", jobs);
        *lock(&self.inner.current) = Some((revision, manifests));
    }

    /// Listens to the bus for the triggers. `applied` is the revision applied before
    /// berth started: applying it again is not a new revision.
    pub fn listen(&self, bus: &Bus, applied: Option<RevisionId>) {
        let mut events = bus.subscribe();
        let this = self.clone();
        tokio::spawn(async move {
            let mut last = applied;
            while let Some(event) = events.recv().await {
                this.on_event(&event, &mut last);
            }
        });
    }

    fn on_event(&self, event: &Event, last: &mut Option<RevisionId>) {
        match event {
            Event::PassFinished {
                outcome:
                    PassOutcome::Synced {
                        revision,
                        pending: false,
                        ..
                    },
                ..
            } if last.as_ref() != Some(revision) => {
                *last = Some(revision.clone());
                self.fire(|t| matches!(t, Trigger::RevisionApplied), "revisionApplied");
            }
            Event::ResourceChanged {
                resource, change, ..
            } if resource.kind == ResourceKind::App => {
                let app = resource.name.as_str();
                match change {
                    ResourceChange::Deployed => {
                        lock(&self.inner.failing).remove(app);
                        self.fire(
                            |t| matches!(t, Trigger::AppDeployed { app: a } if a == app),
                            &format!("appDeployed {app}"),
                        );
                    }
                    ResourceChange::Degraded { .. } => {
                        if lock(&self.inner.failing).insert(app.to_owned()) {
                            self.fire(
                                |t| matches!(t, Trigger::AppFailed { app: a } if a == app),
                                &format!("appFailed {app}"),
                            );
                        }
                    }
                    ResourceChange::Recovered => {
                        lock(&self.inner.failing).remove(app);
                    }
                }
            }
            Event::JobSkipped { job } if job.purpose() == "workflow" => {
                let name = job.resource().name.split('@').next().unwrap_or_default();
                let revision = self.revision().map(|r| r.to_string()).unwrap_or_default();
                self.inner.runs.skipped(
                    name,
                    "schedule",
                    &revision,
                    "the previous run was still going when the schedule was due",
                );
            }
            _ => {}
        }
    }

    fn revision(&self) -> Option<RevisionId> {
        lock(&self.inner.current).as_ref().map(|(r, _)| r.clone())
    }

    /// Starts every workflow with a trigger that `matches`.
    fn fire(&self, matches: impl Fn(&Trigger) -> bool, trigger: &str) {
        let names: Vec<String> = match &*lock(&self.inner.current) {
            Some((_, m)) => m
                .workflows
                .iter()
                .filter(|(_, w)| w.spec.triggers.iter().any(&matches))
                .map(|(n, _)| n.clone())
                .collect(),
            None => return,
        };
        for name in names {
            if let Err(e) = self.start(&name, trigger) {
                warn!(workflow = %name, "{e}");
            }
        }
    }

    /// Starts a run of `name` now; returns its number and a handle that ends with it.
    pub fn start(
        &self,
        name: &str,
        trigger: &str,
    ) -> Result<(u64, tokio::task::JoinHandle<()>), StartError> {
        let (revision, manifests) = lock(&self.inner.current)
            .clone()
            .ok_or(StartError::NoRevision)?;
        let spec = manifests
            .workflows
            .get(name)
            .map(|w| w.spec.clone())
            .ok_or_else(|| StartError::Unknown(name.to_owned()))?;
        let number = {
            let mut running = lock(&self.inner.running);
            if let Some(n) = running.get(name) {
                self.inner.runs.skipped(
                    name,
                    trigger,
                    revision.as_str(),
                    &format!("run {n} was still going"),
                );
                return Err(StartError::Running(name.to_owned(), *n));
            }
            let nodes: Vec<String> = spec.nodes.iter().map(|n| n.name.clone()).collect();
            let number = self
                .inner
                .runs
                .begin(name, trigger, revision.as_str(), &nodes);
            running.insert(name.to_owned(), number);
            number
        };
        info!(workflow = %name, run = number, trigger, "workflow run started");
        let this = self.clone();
        let (name, trigger) = (name.to_owned(), trigger.to_owned());
        let handle = tokio::spawn(async move {
            this.run(&name, number, &trigger, spec, revision, manifests)
                .await;
            lock(&this.inner.running).remove(&name);
        });
        Ok((number, handle))
    }

    async fn run(
        &self,
        name: &str,
        number: u64,
        trigger: &str,
        spec: WorkflowSpec,
        revision: RevisionId,
        manifests: Arc<Manifests>,
    ) {
        let h = &self.inner.host;
        let host = Arc::new(Host::new(
            &h.instance,
            h.state.clone(),
            h.docker.clone(),
            manifests,
            revision.clone(),
            h.apply.clone(),
            h.lock_timeout,
            h.notifier.clone(),
            name,
        ));
        let outcome = run_recorded(
            &spec,
            RunContext {
                workflow: name.to_owned(),
                revision: revision.short().to_owned(),
                trigger: trigger.to_owned(),
            },
            host,
            &self.inner.runs,
            number,
            self.inner.shutdown.clone(),
        )
        .await;
        info!(workflow = %name, run = number, outcome = outcome.as_str(), "workflow run finished");
    }
}

/// Runs `spec` on `host`, recording each node in `runs` (run `number`, begun already)
/// with its texts redacted; returns how it ended.
pub async fn run_recorded(
    spec: &WorkflowSpec,
    context: RunContext,
    host: Arc<Host>,
    runs: &Runs,
    number: u64,
    cancel: watch::Receiver<bool>,
) -> RunState {
    let recorder = Recorder {
        runs: runs.clone(),
        workflow: context.workflow.clone(),
        number,
        host: host.clone(),
    };
    let result = engine::run(spec, &context, host.clone(), &recorder, cancel).await;
    let state = RunState::from(result.outcome);
    runs.finish(&context.workflow, number, state);
    tell(&host, &context, runs, number, state);
    state
}

/// `WorkflowSucceeded` or `WorkflowFailed`, to the Notifiers that subscribe to them (a
/// run cancelled by berth stopping is not news).
fn tell(host: &Host, context: &RunContext, runs: &Runs, number: u64, state: RunState) {
    let event = match state {
        RunState::Succeeded => EventKind::WorkflowSucceeded,
        RunState::Cancelled => return,
        _ => EventKind::WorkflowFailed,
    };
    let name = &context.workflow;
    let details = runs
        .get(name, number)
        .map(|r| {
            r.nodes
                .iter()
                .map(|n| match &n.message {
                    Some(m) => format!("{}: {} ({m})", n.name, n.state),
                    None => format!("{}: {}", n.name, n.state),
                })
                .collect()
        })
        .unwrap_or_default();
    host.notifier.send(Notification {
        event,
        instance: host.instance.clone(),
        revision: Some(host.revision.clone()),
        resource: Some(ResourceId::new(ResourceKind::Workflow, name)),
        summary: format!(
            "workflow {name} run {number} {} (trigger: {})",
            state.as_str(),
            context.trigger
        ),
        details,
    });
}

struct Recorder {
    runs: Runs,
    workflow: String,
    number: u64,
    host: Arc<Host>,
}

impl Progress for Recorder {
    fn started(&self, index: usize) {
        self.runs.node_started(&self.workflow, self.number, index);
    }

    fn finished(&self, index: usize, node: &NodeRun) {
        let record = NodeRecord::of(node, &|t| self.host.redact(t));
        self.runs
            .node_finished(&self.workflow, self.number, index, record);
    }
}

/// The scheduler's job for the `i`th schedule of workflow `name`.
fn job_id(name: &str, i: usize) -> JobId {
    let key = match i {
        0 => name.to_owned(),
        i => format!("{name}@{i}"),
    };
    JobId::new("workflow", ResourceId::new(ResourceKind::Workflow, key))
}

impl crate::status::workflows::WorkflowControl for Workflows {
    fn declared(&self) -> Vec<String> {
        lock(&self.inner.current)
            .as_ref()
            .map(|(_, m)| m.workflows.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn start(&self, name: &str) -> Result<u64, StartRefused> {
        match Workflows::start(self, name, "manual") {
            Ok((number, _)) => Ok(number),
            Err(e @ StartError::Unknown(_)) => Err(StartRefused::Unknown(e.to_string())),
            Err(e @ StartError::Running(..)) => Err(StartRefused::Running(e.to_string())),
            Err(e @ StartError::NoRevision) => Err(StartRefused::NotReady(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::controller::schedule::Clock;
    use crate::drivers::memory::MemoryDocker;
    use crate::manifest::SourceFile;

    const FLOWS: &str = "apiVersion: berth/v1\nkind: App\nmetadata: {name: web}\nspec: {image: 'busybox:1'}\n---\n\
        apiVersion: berth/v1\nkind: Workflow\nmetadata: {name: tick}\nspec:\n  triggers: [{on: schedule, cron: '* * * * *'}]\n  nodes:\n    - {name: go, condition: {if: 'true'}}\n---\n\
        apiVersion: berth/v1\nkind: Workflow\nmetadata: {name: on-fail}\nspec:\n  triggers: [{on: appFailed, app: web}]\n  nodes:\n    - {name: go, condition: {if: 'true'}}\n";

    fn workflows(dir: &std::path::Path, scheduler: Scheduler) -> Workflows {
        let (_stop, stopped) = watch::channel(false);
        let state = StateDir::new(dir, "default");
        let w = Workflows::new(
            WorkflowHost {
                instance: "default".into(),
                state,
                docker: Arc::new(MemoryDocker::new()),
                apply: ApplyOptions::default(),
                lock_timeout: Duration::from_secs(1),
                notifier: Notifier::start(Default::default()),
            },
            Runs::in_memory(),
            scheduler,
            stopped,
        );
        let manifests = crate::manifest::load_files(&[SourceFile {
            path: "flows.yaml".into(),
            text: FLOWS.into(),
        }])
        .expect("valid manifests");
        w.set_revision(RevisionId::content("abc"), Arc::new(manifests));
        w
    }

    async fn settle(secs: u64) {
        for _ in 0..secs {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_scheduled_workflow_runs_when_its_cron_is_due_in_local_time() {
        let dir = tempfile::tempdir().unwrap();
        let wall = chrono::Local
            .with_ymd_and_hms(2026, 3, 10, 3, 0, 30)
            .unwrap();
        let scheduler = Scheduler::new(Clock::starting_at(wall), Bus::new());
        tokio::spawn(scheduler.clone().run());
        let w = workflows(dir.path(), scheduler);
        settle(29).await;
        assert!(w.runs().list("tick").is_empty(), "not before 03:01");
        settle(2).await;
        let runs = w.runs().list("tick");
        assert_eq!(runs.len(), 1, "at 03:01");
        assert_eq!(runs[0].trigger, "schedule * * * * *");
        assert_eq!(runs[0].state, RunState::Succeeded);
        settle(60).await;
        assert_eq!(w.runs().list("tick").len(), 2, "at 03:02");
        // A due time found the last run still going: recorded as a skipped run.
        let job = job_id("tick", 0);
        w.on_event(&Event::JobSkipped { job }, &mut None);
        let runs = w.runs().list("tick");
        assert_eq!(runs[0].state, RunState::Skipped);
        assert_eq!(
            runs[0].message.as_deref(),
            Some("the previous run was still going when the schedule was due")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn app_failed_fires_once_per_failure_not_once_per_pass() {
        let dir = tempfile::tempdir().unwrap();
        let w = workflows(dir.path(), Scheduler::new(Clock::System, Bus::new()));
        let changed = |change| Event::ResourceChanged {
            resource: ResourceId::new(ResourceKind::App, "web"),
            revision: RevisionId::content("abc"),
            change,
        };
        let degraded = || {
            changed(ResourceChange::Degraded {
                message: "never ready".into(),
            })
        };
        let mut last = None;
        for _ in 0..3 {
            w.on_event(&degraded(), &mut last);
            settle(1).await;
        }
        assert_eq!(
            w.runs().list("on-fail").len(),
            1,
            "three failing passes, one run"
        );
        assert_eq!(w.runs().list("on-fail")[0].trigger, "appFailed web");
        w.on_event(&changed(ResourceChange::Deployed), &mut last);
        w.on_event(&degraded(), &mut last);
        settle(1).await;
        assert_eq!(
            w.runs().list("on-fail").len(),
            2,
            "a new failure after a deploy"
        );
        // Another app's failure is not this trigger.
        let other = Event::ResourceChanged {
            resource: ResourceId::new(ResourceKind::App, "api"),
            revision: RevisionId::content("abc"),
            change: ResourceChange::Degraded {
                message: "x".into(),
            },
        };
        w.on_event(&other, &mut last);
        settle(1).await;
        assert_eq!(w.runs().list("on-fail").len(), 2);
    }
}
