//! Runs a [`Plan`] through the runtime and the drivers. It decides nothing: the plan
//! says what each action does, in which phase and round it runs, and which actions it
//! needs. Phases run in the plan's order — writes into the state dir, networks and
//! volumes, databases, containers round by round (concurrently within a round,
//! bounded), proxy files in one checked batch, prunes. One failing action does not stop
//! the others; an action whose need failed is skipped, and a failed write into the
//! state dir stops the pass (nothing may use a secret that was not kept).

mod build;
mod steps;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;

use crate::desired::Desired;
use crate::drivers::docker::{DockerApi, PullProgress};
use crate::drivers::proxy::ProxyDriver;
use crate::manifest::model::Runtime;
use crate::plan::{Action, Op, Phase, Plan, Target};
use crate::runtime::AppRuntime;
use crate::runtime::containers::Containers;
pub use crate::runtime::containers::container_config;
use crate::runtime::swarm::Swarm;

/// How apply runs.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The berth instance whose objects these are.
    pub instance: String,
    /// Apps converged at once within a round.
    pub concurrency: usize,
    /// How long a new container may take to become ready (plus its start period).
    pub ready_timeout: Duration,
    /// The reverse proxy domains are written for.
    pub proxy: ProxyDriver,
    /// Where the records of shared databases are kept (none: not recorded).
    pub state_dir: Option<std::path::PathBuf>,
    /// Turns true when berth shuts down: a build under way is cancelled.
    pub cancel: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            instance: "default".to_owned(),
            concurrency: 8,
            ready_timeout: Duration::from_secs(60),
            proxy: ProxyDriver::None,
            state_dir: None,
            cancel: None,
        }
    }
}

/// How one action ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "message", rename_all = "lowercase")]
pub enum Status {
    /// Nothing to do.
    Unchanged,
    /// Done.
    Done,
    /// It failed; the message says why (secrets redacted).
    Failed(String),
    /// Not attempted; the message says why.
    Skipped(String),
    /// Blocked by an object berth does not own.
    Conflict(String),
}

/// The outcome of one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The kind of object.
    pub target: Target,
    /// Its name.
    pub name: String,
    /// What was planned.
    pub op: Op,
    /// How it ended.
    #[serde(flatten)]
    pub result: Status,
}

/// Every action's outcome, in plan order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Report {
    /// The outcomes.
    pub outcomes: Vec<Outcome>,
    /// What could not be recorded after the actions ran (the spec history): the
    /// outcomes stand, the record is behind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Report {
    /// How many actions failed or were blocked.
    pub fn failures(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o.result, Status::Failed(_) | Status::Conflict(_)))
            .count()
    }

    /// The apps that are now as declared.
    pub fn converged_apps(&self) -> BTreeSet<String> {
        self.outcomes
            .iter()
            .filter(|o| {
                o.target == Target::App && matches!(o.result, Status::Done | Status::Unchanged)
            })
            .filter(|o| o.op != Op::Delete)
            .map(|o| o.name.clone())
            .collect()
    }
}

/// What apply reports while it works, for progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// An action started.
    Started {
        /// The kind of object.
        target: Target,
        /// Its name.
        name: String,
    },
    /// An image is being pulled.
    Pull {
        /// The app that needs it.
        app: String,
        /// The image.
        image: String,
        /// The daemon's report.
        progress: PullProgress,
    },
    /// An image is being built: a piece of its output (secrets redacted).
    Build {
        /// The app.
        app: String,
        /// The output, as the daemon sent it.
        output: String,
    },
    /// A new container is waiting to be ready.
    Waiting {
        /// The container.
        container: String,
    },
    /// A Swarm service is waiting for its tasks of the new spec to run.
    WaitingForTasks {
        /// The service.
        service: String,
    },
    /// An action ended.
    Finished(Outcome),
}

/// A callback for [`Progress`].
pub type OnProgress = Arc<dyn Fn(Progress) + Send + Sync>;

/// Executes `plan`.
pub async fn apply(
    plan: &Plan,
    desired: &Desired,
    docker: Arc<dyn DockerApi>,
    options: &ApplyOptions,
    on_progress: OnProgress,
) -> Report {
    let pull = on_progress.clone();
    let waiting = on_progress.clone();
    let runtime = Containers {
        docker: docker.as_ref(),
        instance: &options.instance,
        revision: &desired.revision,
        ready_timeout: options.ready_timeout,
        images_present: Default::default(),
        on_pull: Arc::new(move |app, image, progress| {
            pull(Progress::Pull {
                app: app.to_owned(),
                image: image.to_owned(),
                progress,
            })
        }),
        on_waiting: Arc::new(move |container| {
            waiting(Progress::Waiting {
                container: container.to_owned(),
            })
        }),
    };
    let waiting = on_progress.clone();
    let swarm = Swarm {
        docker: docker.as_ref(),
        instance: &options.instance,
        revision: &desired.revision,
        ready_timeout: options.ready_timeout,
        commands: Default::default(),
        on_waiting: Arc::new(move |service| {
            waiting(Progress::WaitingForTasks {
                service: service.to_owned(),
            })
        }),
    };
    let runtime: &dyn AppRuntime = match desired.runtime {
        Runtime::Docker => &runtime,
        Runtime::Swarm => &swarm,
    };
    let ctx = steps::Ctx {
        desired,
        docker: docker.as_ref(),
        runtime,
        options,
        on_progress: on_progress.clone(),
    };
    let mut outcomes: BTreeMap<usize, Outcome> = BTreeMap::new();
    let mut failed: BTreeSet<(Target, String)> = BTreeSet::new();
    let mut stopped: Option<String> = None;
    for phase in [
        Phase::Write,
        Phase::Infrastructure,
        Phase::Databases,
        Phase::Containers,
        Phase::Proxy,
        Phase::Certificates,
        Phase::Prune,
    ] {
        let actions: Vec<(usize, &Action)> = plan
            .actions
            .iter()
            .enumerate()
            .filter(|(_, a)| a.phase == phase)
            .collect();
        let results = match (&stopped, phase) {
            (Some(why), _) => actions
                .iter()
                .map(|(i, a)| (*i, ctx.finish(a, skipped_or_same(a, why))))
                .collect(),
            (None, Phase::Containers) => run_rounds(&ctx, &actions, &mut failed).await,
            (None, Phase::Proxy) => ctx.run_proxy(&actions, &failed).await,
            (None, Phase::Certificates) => ctx.run_certificates(&actions, &failed).await,
            (None, _) => {
                let mut out = Vec::new();
                for (i, a) in actions {
                    let o = match blocked_by(a, &failed) {
                        Some(why) => ctx.finish(a, Status::Skipped(why)),
                        None => ctx.run(a).await,
                    };
                    out.push((i, o));
                }
                out
            }
        };
        for (i, o) in results {
            if o.is_failure() {
                failed.insert((o.target, o.name.clone()));
                if phase == Phase::Write && stopped.is_none() {
                    stopped = Some(format!(
                        "the state dir could not be written ({} {})",
                        o.target, o.name
                    ));
                }
            }
            outcomes.insert(i, o);
        }
    }
    Report {
        outcomes: outcomes.into_values().collect(),
        warnings: Vec::new(),
    }
}

/// After a failed write, what an action becomes: skipped when it had something to do.
fn skipped_or_same(a: &Action, why: &str) -> Status {
    match a.op {
        Op::Noop => Status::Unchanged,
        Op::Conflict => Status::Conflict(a.reasons.join("; ")),
        _ => Status::Skipped(why.to_owned()),
    }
}

/// Why `a` cannot run: one of the actions it needs failed.
pub(crate) fn blocked_by(a: &Action, failed: &BTreeSet<(Target, String)>) -> Option<String> {
    if a.steps.is_empty() {
        return None;
    }
    let need = a
        .needs
        .iter()
        .find(|n| failed.contains(&(n.target, n.name.clone())))?;
    Some(match need.target {
        Target::Network | Target::Volume => "the network or a volume could not be created".into(),
        _ => format!("dependency {} failed", need.name),
    })
}

/// Containers, round by round; concurrently within a round.
async fn run_rounds(
    ctx: &steps::Ctx<'_>,
    actions: &[(usize, &Action)],
    failed: &mut BTreeSet<(Target, String)>,
) -> Vec<(usize, Outcome)> {
    let mut out = Vec::new();
    let last_round = actions.iter().map(|(_, a)| a.round).max().unwrap_or(0);
    for round in 0..=last_round {
        // Positions, not references, go through the stream: a stream of borrowed items
        // makes the future lose `Send` (the workflow engine runs apply in a task).
        let batch: Vec<usize> = (0..actions.len())
            .filter(|k| actions[*k].1.round == round)
            .collect();
        let failed_before = failed.clone();
        let results: Vec<(usize, Outcome)> = futures_util::stream::iter(batch)
            .map(|k| {
                let (i, a) = actions[k];
                let failed_before = &failed_before;
                async move {
                    let o = match blocked_by(a, failed_before) {
                        Some(why) => ctx.finish(a, Status::Skipped(why)),
                        None => ctx.run(a).await,
                    };
                    (i, o)
                }
            })
            .buffer_unordered(ctx.options.concurrency.max(1))
            .collect()
            .await;
        for (_, o) in &results {
            if o.is_failure() {
                failed.insert((o.target, o.name.clone()));
            }
        }
        out.extend(results);
    }
    out
}

impl Outcome {
    /// Whether it failed, was skipped or was blocked: what depends on it is skipped.
    pub fn is_failure(&self) -> bool {
        matches!(
            self.result,
            Status::Failed(_) | Status::Skipped(_) | Status::Conflict(_)
        )
    }
}
