//! A workflow run: the nodes as a graph over `needs` (and condition branches), each
//! node started once every node it needs has finished, independent nodes side by side
//! (bounded), with per-attempt timeouts, retries with backoff, a run deadline and
//! cancellation. What a node does is the [`Executor`]'s business; this module decides
//! only when it runs, whether it runs, and how it ended.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::expr::{Expr, Literal, NodeResult, Outcome, Placeholder, Ref, placeholders};
use crate::manifest::model::{Action, Node, Rollback, When, WorkflowSpec};

/// Nodes of one run that run at the same time, at most.
pub const PARALLEL_NODES: usize = 4;
/// The most bytes of log kept per node: the end of it.
pub const LOG_LIMIT: usize = 64 * 1024;
/// The most output keys kept per node.
pub const OUTPUT_KEYS: usize = 32;
/// The longest output value kept, in bytes.
pub const OUTPUT_VALUE_LIMIT: usize = 4096;
/// The longest wait between two attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// What a node asks the host to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// An action.
    Action(Action),
    /// Put an app back to its previous spec.
    Rollback(Rollback),
    /// Send `message` (already rendered) through Notifier `notifier`.
    Notify {
        /// The Notifier.
        notifier: String,
        /// The rendered message.
        message: String,
    },
}

/// A node's outputs: what conditions and templates can read (`<node>.output.<key>`).
pub type Outputs = BTreeMap<String, Literal>;

/// Does what nodes ask, on the host (or a fake, in tests). An attempt that is dropped
/// (timeout, cancellation) must stop what it started.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Runs one attempt of `work` for node `node`, appending what it prints to `log`.
    /// `Err` is the reason it failed; outputs gathered before failing may be set on
    /// `log` too.
    async fn run(&self, node: &str, work: &Work, log: &NodeLog) -> Result<Outputs, String>;
}

/// What a node prints, kept bounded (the last [`LOG_LIMIT`] bytes), and the outputs
/// an attempt set before it failed. Shared with the attempt, so a node that timed out
/// still shows what it printed.
#[derive(Debug, Clone, Default)]
pub struct NodeLog {
    inner: Arc<Mutex<LogInner>>,
}

#[derive(Debug, Default)]
struct LogInner {
    text: String,
    dropped: u64,
    outputs: Outputs,
}

impl NodeLog {
    /// Appends `text`, dropping the oldest bytes beyond the limit.
    pub fn append(&self, text: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.text.push_str(text);
        if inner.text.len() > LOG_LIMIT {
            let mut cut = inner.text.len() - LOG_LIMIT;
            while !inner.text.is_char_boundary(cut) {
                cut += 1;
            }
            inner.text.drain(..cut);
            inner.dropped += cut as u64;
        }
    }

    /// Appends one line.
    pub fn line(&self, text: &str) {
        self.append(text);
        if !text.ends_with('\n') {
            self.append("\n");
        }
    }

    /// Keeps an output even if the attempt then fails (a status code, an exit code).
    pub fn set_output(&self, key: &str, value: Literal) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.outputs.insert(key.to_owned(), value);
    }

    /// The text kept, with a first line saying how much was dropped.
    pub fn text(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.dropped {
            0 => inner.text.clone(),
            n => format!("[… {n} earlier bytes dropped]\n{}", inner.text),
        }
    }

    fn outputs(&self) -> Outputs {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .outputs
            .clone()
    }
}

/// How one node ended.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRun {
    /// The node.
    pub name: String,
    /// Its outcome.
    pub outcome: Outcome,
    /// Why it failed, was skipped, timed out or was cancelled; a condition's verdict.
    pub message: Option<String>,
    /// When its first attempt started (`None`: it never ran).
    pub started: Option<chrono::DateTime<chrono::Utc>>,
    /// How long it took, retries included.
    pub took: Duration,
    /// Attempts made.
    pub attempts: u32,
    /// Its outputs, bounded.
    pub output: Outputs,
    /// The end of its log.
    pub log: String,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every node succeeded or was skipped, or each failure was read by a condition.
    Succeeded,
    /// A node failed (or timed out) and no condition handled it.
    Failed,
    /// The run's deadline passed.
    TimedOut,
    /// berth stopped while it ran.
    Cancelled,
}

impl RunOutcome {
    /// The word shown in status.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::TimedOut => "timedOut",
            RunOutcome::Cancelled => "cancelled",
        }
    }
}

/// A finished run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// How it ended.
    pub outcome: RunOutcome,
    /// Each node, in the order declared.
    pub nodes: Vec<NodeRun>,
}

/// What a run's templates can name besides the nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunContext {
    /// The workflow.
    pub workflow: String,
    /// The revision it runs for.
    pub revision: String,
    /// What started it, such as `appFailed blog`.
    pub trigger: String,
}

/// Hears about nodes as they start and end (to record a run as it goes).
pub trait Progress: Send + Sync {
    /// Node `index` started its first attempt.
    fn started(&self, index: usize);
    /// Node `index` ended.
    fn finished(&self, index: usize, node: &NodeRun);
}

/// Ignores progress.
pub struct Quiet;

impl Progress for Quiet {
    fn started(&self, _: usize) {}
    fn finished(&self, _: usize, _: &NodeRun) {}
}

/// The order the nodes of `spec` would start in: waves of nodes that can run side by
/// side, each wave after the one before (for `--dry-run`). A branch target is in the
/// wave after its condition.
pub fn waves(spec: &WorkflowSpec) -> Vec<Vec<String>> {
    let graph = Graph::new(spec);
    let mut done: BTreeSet<usize> = BTreeSet::new();
    let mut out = Vec::new();
    while done.len() < spec.nodes.len() {
        let wave: Vec<usize> = (0..spec.nodes.len())
            .filter(|i| !done.contains(i) && graph.needs[*i].iter().all(|n| done.contains(n)))
            .collect();
        if wave.is_empty() {
            break; // a cycle: validation refuses it
        }
        out.push(wave.iter().map(|i| spec.nodes[*i].name.clone()).collect());
        done.extend(wave);
    }
    out
}

/// The graph of a spec, by node index.
struct Graph {
    /// What each node waits for: its `needs` and the condition whose branch it is.
    needs: Vec<Vec<usize>>,
    /// The condition (and branch: true for `then`) gating a node.
    gate: Vec<Option<(usize, bool)>>,
    /// Nodes some condition reads: their failure is handled.
    read_by_condition: BTreeSet<usize>,
}

impl Graph {
    fn new(spec: &WorkflowSpec) -> Graph {
        let index: BTreeMap<&str, usize> = spec
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let mut needs: Vec<Vec<usize>> = spec
            .nodes
            .iter()
            .map(|n| {
                n.needs
                    .iter()
                    .filter_map(|d| index.get(d.as_str()).copied())
                    .collect()
            })
            .collect();
        let mut gate = vec![None; spec.nodes.len()];
        let mut read_by_condition = BTreeSet::new();
        for (i, node) in spec.nodes.iter().enumerate() {
            let Some(c) = &node.condition else { continue };
            for (branch, targets) in [(true, &c.then), (false, &c.otherwise)] {
                for t in targets {
                    if let Some(&j) = index.get(t.as_str()) {
                        gate[j] = Some((i, branch));
                        if !needs[j].contains(&i) {
                            needs[j].push(i);
                        }
                    }
                }
            }
            if let Ok(expr) = Expr::parse(&c.expr) {
                for r in expr.refs() {
                    if let Some(&j) = index.get(r.node()) {
                        read_by_condition.insert(j);
                    }
                }
            }
        }
        Graph {
            needs,
            gate,
            read_by_condition,
        }
    }
}

/// Runs `spec` to its end: its deadline is `spec.timeout`; `cancel` turning true stops
/// it (the nodes running are cancelled, the others recorded cancelled).
pub async fn run(
    spec: &WorkflowSpec,
    context: &RunContext,
    executor: Arc<dyn Executor>,
    progress: &dyn Progress,
    mut cancel: watch::Receiver<bool>,
) -> RunResult {
    let graph = Graph::new(spec);
    let n = spec.nodes.len();
    let deadline = Instant::now() + spec.timeout.get();
    let mut finished: Vec<Option<NodeRun>> = vec![None; n];
    let mut running: BTreeSet<usize> = BTreeSet::new();
    let mut branch_taken: BTreeMap<usize, bool> = BTreeMap::new();
    let mut tasks: JoinSet<(usize, NodeRun)> = JoinSet::new();
    let mut task_nodes: BTreeMap<tokio::task::Id, usize> = BTreeMap::new();
    let mut stopped: Option<RunOutcome> = None;
    let mut cancellable = true;

    loop {
        // Decide every node whose needs have all finished, until nothing changes.
        let mut progressed = true;
        while progressed && stopped.is_none() {
            progressed = false;
            for i in 0..n {
                if finished[i].is_some() || running.contains(&i) {
                    continue;
                }
                if !graph.needs[i].iter().all(|d| finished[*d].is_some()) {
                    continue;
                }
                let node = &spec.nodes[i];
                match decide(node, i, &graph, &finished, &branch_taken, spec) {
                    Decision::Skip(why) => {
                        let skipped = NodeRun::skipped(&node.name, why);
                        progress.finished(i, &skipped);
                        finished[i] = Some(skipped);
                        progressed = true;
                    }
                    Decision::Evaluate(expr) => {
                        let results = results(spec, &finished);
                        let verdict = expr.eval(&results);
                        branch_taken.insert(i, verdict);
                        let mut done = NodeRun::skipped(&node.name, String::new());
                        done.outcome = Outcome::Succeeded;
                        done.started = Some(chrono::Utc::now());
                        done.attempts = 1;
                        done.message = Some(format!(
                            "`{}` is {verdict}: {} runs",
                            node.condition.as_ref().map_or("", |c| c.expr.as_str()),
                            if verdict { "then" } else { "else" }
                        ));
                        done.output.insert("value".into(), Literal::Bool(verdict));
                        progress.started(i);
                        progress.finished(i, &done);
                        finished[i] = Some(done);
                        progressed = true;
                    }
                    Decision::Run(work) => {
                        if running.len() >= PARALLEL_NODES {
                            continue;
                        }
                        let work = match work {
                            Work::Notify { notifier, message } => Work::Notify {
                                notifier,
                                message: render(&message, context, &results(spec, &finished)),
                            },
                            other => other,
                        };
                        running.insert(i);
                        progress.started(i);
                        let executor = executor.clone();
                        let node = node.clone();
                        let task = tasks
                            .spawn(async move { (i, attempt_all(&node, &work, executor).await) });
                        task_nodes.insert(task.id(), i);
                    }
                }
            }
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            joined = tasks.join_next_with_id() => {
                let Some(joined) = joined else { break };
                let (i, done) = match joined {
                    Ok((_, (i, done))) => (i, done),
                    Err(e) => {
                        // A node's task panicked: the node failed, the run goes on.
                        let Some(&i) = task_nodes.get(&e.id()) else { continue };
                        let mut done = NodeRun::skipped(&spec.nodes[i].name, format!("the node crashed: {e}"));
                        done.outcome = Outcome::Failed;
                        (i, done)
                    }
                };
                running.remove(&i);
                progress.finished(i, &done);
                finished[i] = Some(done);
            }
            _ = tokio::time::sleep_until(deadline) => {
                stopped = Some(RunOutcome::TimedOut);
            }
            changed = cancel.changed(), if cancellable => {
                match changed {
                    Ok(()) if *cancel.borrow() => stopped = Some(RunOutcome::Cancelled),
                    Ok(()) => {}
                    // Nobody can cancel any more.
                    Err(_) => cancellable = false,
                }
            }
        }
        if let Some(why) = stopped {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            let message = match why {
                RunOutcome::TimedOut => format!("the run's timeout ({}) passed", spec.timeout),
                _ => "berth stopped while the run was going".to_owned(),
            };
            for i in std::mem::take(&mut running) {
                let mut done = NodeRun::skipped(&spec.nodes[i].name, message.clone());
                done.outcome = Outcome::Cancelled;
                progress.finished(i, &done);
                finished[i] = Some(done);
            }
            break;
        }
    }
    let outcome = stopped.unwrap_or_else(|| {
        let unhandled = finished.iter().enumerate().any(|(i, f)| {
            f.as_ref().is_some_and(|f| {
                matches!(f.outcome, Outcome::Failed | Outcome::TimedOut)
                    && !graph.read_by_condition.contains(&i)
            })
        });
        if unhandled {
            RunOutcome::Failed
        } else {
            RunOutcome::Succeeded
        }
    });
    let message = match outcome {
        RunOutcome::TimedOut => "not started: the run's timeout passed",
        _ => "not started: the run was stopped",
    };
    let nodes = finished
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            f.unwrap_or_else(|| {
                let mut n = NodeRun::skipped(&spec.nodes[i].name, message.to_owned());
                n.outcome = Outcome::Cancelled;
                n
            })
        })
        .collect();
    RunResult { outcome, nodes }
}

enum Decision {
    Skip(String),
    Evaluate(Expr),
    Run(Work),
}

/// Whether a node whose needs have all finished runs, is skipped or is evaluated.
fn decide(
    node: &Node,
    i: usize,
    graph: &Graph,
    finished: &[Option<NodeRun>],
    branch_taken: &BTreeMap<usize, bool>,
    spec: &WorkflowSpec,
) -> Decision {
    if let Some((condition, branch)) = graph.gate[i] {
        let name = &spec.nodes[condition].name;
        match branch_taken.get(&condition) {
            None => return Decision::Skip(format!("condition `{name}` did not run")),
            Some(taken) if *taken != branch => {
                let which = if branch { "then" } else { "else" };
                return Decision::Skip(format!(
                    "condition `{name}` did not take its `{which}` branch"
                ));
            }
            Some(_) => {}
        }
    }
    if node.condition.is_none() && node.when == When::OnSuccess {
        let gate = graph.gate[i].map(|(c, _)| c);
        for &d in graph.needs[i].iter().filter(|d| Some(**d) != gate) {
            let need = finished[d].as_ref().expect("needs have finished");
            if need.outcome != Outcome::Succeeded {
                return Decision::Skip(format!(
                    "`{}` {}",
                    need.name,
                    match need.outcome {
                        Outcome::Skipped => "was skipped",
                        Outcome::TimedOut => "timed out",
                        Outcome::Cancelled => "was cancelled",
                        _ => "failed",
                    }
                ));
            }
        }
    }
    if let Some(c) = &node.condition {
        return match Expr::parse(&c.expr) {
            Ok(expr) => Decision::Evaluate(expr),
            // Validation refuses it; a run never panics on it.
            Err(m) => Decision::Skip(format!("the condition does not parse: {m}")),
        };
    }
    if let Some(action) = &node.action {
        return Decision::Run(Work::Action(action.clone()));
    }
    if let Some(r) = &node.rollback {
        return Decision::Run(Work::Rollback(r.clone()));
    }
    if let Some(n) = &node.notify {
        return Decision::Run(Work::Notify {
            notifier: n.notifier.clone(),
            message: n.message.clone(),
        });
    }
    Decision::Skip("the node does nothing".into())
}

/// The finished nodes' results, by name, for conditions and templates.
fn results(spec: &WorkflowSpec, finished: &[Option<NodeRun>]) -> BTreeMap<String, NodeResult> {
    spec.nodes
        .iter()
        .zip(finished)
        .filter_map(|(node, f)| {
            let f = f.as_ref()?;
            Some((
                node.name.clone(),
                NodeResult {
                    outcome: f.outcome,
                    output: f.output.clone(),
                },
            ))
        })
        .collect()
}

/// Replaces the `{{…}}` placeholders of `template`: a node that has not finished
/// reads as skipped, a missing output as empty.
pub fn render(
    template: &str,
    context: &RunContext,
    results: &BTreeMap<String, NodeResult>,
) -> String {
    if placeholders(template).is_err() {
        return template.to_owned();
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim();
        let value = match placeholders(&format!("{{{{{name}}}}}"))
            .ok()
            .and_then(|mut p| p.pop())
        {
            Some(Placeholder::Workflow) => context.workflow.clone(),
            Some(Placeholder::Revision) => context.revision.clone(),
            Some(Placeholder::Trigger) => context.trigger.clone(),
            Some(Placeholder::Node(r)) => {
                let result = results.get(r.node());
                match r {
                    Ref::Output(_, key) => result
                        .and_then(|r| r.output.get(&key))
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    _ => result
                        .map_or(Outcome::Skipped, |r| r.outcome)
                        .as_str()
                        .to_owned(),
                }
            }
            None => String::new(),
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Every attempt of one node: timeouts, retries with doubling delays.
async fn attempt_all(node: &Node, work: &Work, executor: Arc<dyn Executor>) -> NodeRun {
    let started = Instant::now();
    let log = NodeLog::default();
    let retries = match work {
        Work::Action(_) | Work::Rollback(_) => node.retries,
        Work::Notify { .. } => 0,
    };
    let mut delay = node.retry_delay.get();
    let mut attempts = 0;
    let (outcome, message, output) = loop {
        attempts += 1;
        let attempt =
            tokio::time::timeout(node.timeout.get(), executor.run(&node.name, work, &log));
        let (outcome, message, output) = match attempt.await {
            Ok(Ok(output)) => (Outcome::Succeeded, None, output),
            Ok(Err(why)) => (Outcome::Failed, Some(why), log.outputs()),
            Err(_) => (
                Outcome::TimedOut,
                Some(format!("stopped after its timeout ({})", node.timeout)),
                log.outputs(),
            ),
        };
        if outcome == Outcome::Succeeded || attempts > retries {
            break (outcome, message, output);
        }
        log.line(&format!(
            "attempt {attempts} {}: {}; trying again in {}",
            outcome.as_str(),
            message.as_deref().unwrap_or(""),
            humantime::format_duration(delay)
        ));
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    };
    NodeRun {
        name: node.name.clone(),
        outcome,
        message,
        started: Some(chrono::Utc::now() - started.elapsed()),
        took: started.elapsed(),
        attempts,
        output: bound(output),
        log: log.text(),
    }
}

/// At most [`OUTPUT_KEYS`] outputs, each value at most [`OUTPUT_VALUE_LIMIT`] bytes.
fn bound(output: Outputs) -> Outputs {
    output
        .into_iter()
        .take(OUTPUT_KEYS)
        .map(|(k, v)| match v {
            Literal::Str(s) if s.len() > OUTPUT_VALUE_LIMIT => {
                let mut cut = OUTPUT_VALUE_LIMIT;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                (k, Literal::Str(s[..cut].to_owned()))
            }
            v => (k, v),
        })
        .collect()
}

impl NodeRun {
    fn skipped(name: &str, why: String) -> NodeRun {
        NodeRun {
            name: name.to_owned(),
            outcome: Outcome::Skipped,
            message: (!why.is_empty()).then_some(why),
            started: None,
            took: Duration::ZERO,
            attempts: 0,
            output: Outputs::new(),
            log: String::new(),
        }
    }
}

#[cfg(test)]
mod tests;
