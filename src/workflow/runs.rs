//! The record of workflow runs: the last [`KEEP`] runs per workflow, per instance, in
//! `<state-dir>/workflow-runs-<instance>.json`, written atomically as a run goes (when
//! it starts, as each node ends, when it ends). A run found still `running` when berth
//! starts was cut short by a restart: it is recorded `interrupted`, never run again.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::engine::{NodeRun, RunOutcome};
use super::expr::Literal;
use crate::state::StateDir;
use crate::state::atomic;

/// Runs kept per workflow.
pub const KEEP: usize = 20;

/// How a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunState {
    /// Going.
    Running,
    /// Every node succeeded or was skipped, or its failures were handled.
    Succeeded,
    /// A node failed.
    Failed,
    /// Its deadline passed.
    TimedOut,
    /// berth stopped while it ran.
    Cancelled,
    /// Cut short by a restart of berth (found running at start); not run again.
    Interrupted,
    /// Not started: the workflow's previous run was still going when it was due.
    Skipped,
}

impl RunState {
    /// The word shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::TimedOut => "timedOut",
            RunState::Cancelled => "cancelled",
            RunState::Interrupted => "interrupted",
            RunState::Skipped => "skipped",
        }
    }
}

impl From<RunOutcome> for RunState {
    fn from(o: RunOutcome) -> RunState {
        match o {
            RunOutcome::Succeeded => RunState::Succeeded,
            RunOutcome::Failed => RunState::Failed,
            RunOutcome::TimedOut => RunState::TimedOut,
            RunOutcome::Cancelled => RunState::Cancelled,
        }
    }
}

/// One run of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The workflow.
    pub workflow: String,
    /// Its number, counting from 1 per workflow.
    pub number: u64,
    /// What started it: `manual`, `revisionApplied`, `appFailed blog`, `schedule 0 4 * * *`.
    pub trigger: String,
    /// The revision it ran for.
    pub revision: String,
    /// When it started (RFC 3339).
    pub started: String,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// How it stands.
    pub state: RunState,
    /// Why it was skipped or interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Each node, in the order declared.
    pub nodes: Vec<NodeRecord>,
}

/// One node of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// The node.
    pub name: String,
    /// `pending`, `running`, or its outcome (`succeeded`, `failed`, `skipped`,
    /// `timedOut`, `cancelled`).
    pub state: String,
    /// Why it failed or was skipped; a condition's verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// How long it took, in milliseconds.
    #[serde(default)]
    pub took_ms: u64,
    /// Attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// Its outputs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub output: BTreeMap<String, serde_json::Value>,
    /// The end of its log.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log: String,
}

impl NodeRecord {
    fn pending(name: &str) -> NodeRecord {
        NodeRecord {
            name: name.to_owned(),
            state: "pending".into(),
            message: None,
            started: None,
            took_ms: 0,
            attempts: 0,
            output: BTreeMap::new(),
            log: String::new(),
        }
    }

    /// The record of a node that ended, its texts passed through `redact`.
    pub fn of(node: &NodeRun, redact: &dyn Fn(&str) -> String) -> NodeRecord {
        NodeRecord {
            name: node.name.clone(),
            state: node.outcome.as_str().to_owned(),
            message: node.message.as_deref().map(redact),
            started: node.started.map(|t| t.to_rfc3339()),
            took_ms: u64::try_from(node.took.as_millis()).unwrap_or(u64::MAX),
            attempts: node.attempts,
            output: node
                .output
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Literal::Str(s) => serde_json::Value::String(redact(s)),
                        Literal::Num(n) => serde_json::json!(n),
                        Literal::Bool(b) => serde_json::Value::Bool(*b),
                        Literal::Null => serde_json::Value::Null,
                    };
                    (k.clone(), v)
                })
                .collect(),
            log: redact(&node.log),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Book {
    /// The runs of each workflow, oldest first.
    #[serde(default)]
    runs: BTreeMap<String, VecDeque<RunRecord>>,
    /// The number the next run of each workflow gets.
    #[serde(default)]
    next: BTreeMap<String, u64>,
}

fn book_path(state: &StateDir) -> PathBuf {
    state
        .path()
        .join(format!("workflow-runs-{}.json", state.instance()))
}

/// The runs recorded at `path`; none when the file is missing or unreadable.
fn read_book(path: &std::path::Path) -> Book {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// The runs of one instance, shared by the controller, the status server and the CLI.
#[derive(Clone)]
pub struct Runs {
    path: PathBuf,
    book: Arc<Mutex<Book>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Runs {
    /// The runs recorded for `state`'s instance; a run still marked running was cut
    /// short by a restart and is recorded `interrupted`.
    pub fn open(state: &StateDir) -> Runs {
        let path = book_path(state);
        let mut book = read_book(&path);
        let mut interrupted = false;
        for run in book.runs.values_mut().flatten() {
            if run.state == RunState::Running {
                run.state = RunState::Interrupted;
                run.message = Some("cut short by a restart of berth; not run again".into());
                for node in &mut run.nodes {
                    if node.state == "running" || node.state == "pending" {
                        node.state = "cancelled".into();
                    }
                }
                interrupted = true;
            }
        }
        let runs = Runs {
            path,
            book: Arc::new(Mutex::new(book)),
            changed: Arc::new(watch::Sender::new(0)),
        };
        if interrupted {
            runs.save(&runs.lock());
        }
        runs
    }

    /// The runs recorded for `state`'s instance, as they are: for reading while a
    /// controller may own the file. Nothing is ever written through it.
    pub fn read(state: &StateDir) -> Runs {
        let book = read_book(&book_path(state));
        Runs {
            path: PathBuf::new(),
            book: Arc::new(Mutex::new(book)),
            changed: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Runs that are only kept in memory (tests, `--dry-run`).
    pub fn in_memory() -> Runs {
        Runs {
            path: PathBuf::new(),
            book: Arc::new(Mutex::new(Book::default())),
            changed: Arc::new(watch::Sender::new(0)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, book: &Book) {
        self.changed.send_modify(|n| *n += 1);
        if self.path.as_os_str().is_empty() {
            return;
        }
        let bytes = match serde_json::to_vec_pretty(book) {
            Ok(b) => b,
            Err(e) => return tracing::warn!("failed to record workflow runs: {e}"),
        };
        if let Err(e) = atomic::write_atomic_mode(&self.path, &bytes, Some(0o600)) {
            tracing::warn!(
                "failed to record workflow runs in {}: {e}",
                self.path.display()
            );
        }
    }

    fn change<T>(&self, f: impl FnOnce(&mut Book) -> T) -> T {
        let mut book = self.lock();
        let out = f(&mut book);
        self.save(&book);
        out
    }

    /// Records a new run of `workflow` with these nodes; returns its number.
    pub fn begin(&self, workflow: &str, trigger: &str, revision: &str, nodes: &[String]) -> u64 {
        self.push(RunRecord {
            workflow: workflow.to_owned(),
            number: 0,
            trigger: trigger.to_owned(),
            revision: revision.to_owned(),
            started: chrono::Utc::now().to_rfc3339(),
            finished: None,
            state: RunState::Running,
            message: None,
            nodes: nodes.iter().map(|n| NodeRecord::pending(n)).collect(),
        })
    }

    /// Records a run that was not started, and why.
    pub fn skipped(&self, workflow: &str, trigger: &str, revision: &str, why: &str) -> u64 {
        let now = chrono::Utc::now().to_rfc3339();
        self.push(RunRecord {
            workflow: workflow.to_owned(),
            number: 0,
            trigger: trigger.to_owned(),
            revision: revision.to_owned(),
            started: now.clone(),
            finished: Some(now),
            state: RunState::Skipped,
            message: Some(why.to_owned()),
            nodes: Vec::new(),
        })
    }

    fn push(&self, mut run: RunRecord) -> u64 {
        self.change(|book| {
            let next = book.next.entry(run.workflow.clone()).or_insert(1);
            run.number = *next;
            *next += 1;
            let list = book.runs.entry(run.workflow.clone()).or_default();
            list.push_back(run.clone());
            while list.len() > KEEP {
                list.pop_front();
            }
            run.number
        })
    }

    fn with_run(&self, workflow: &str, number: u64, f: impl FnOnce(&mut RunRecord)) {
        self.change(|book| {
            if let Some(run) = book
                .runs
                .get_mut(workflow)
                .and_then(|l| l.iter_mut().find(|r| r.number == number))
            {
                f(run);
            }
        });
    }

    /// Node `index` of a run started.
    pub fn node_started(&self, workflow: &str, number: u64, index: usize) {
        self.with_run(workflow, number, |run| {
            if let Some(n) = run.nodes.get_mut(index) {
                n.state = "running".into();
                n.started = Some(chrono::Utc::now().to_rfc3339());
            }
        });
    }

    /// Node `index` of a run ended.
    pub fn node_finished(&self, workflow: &str, number: u64, index: usize, node: NodeRecord) {
        self.with_run(workflow, number, |run| {
            if let Some(n) = run.nodes.get_mut(index) {
                *n = node;
            }
        });
    }

    /// A run ended.
    pub fn finish(&self, workflow: &str, number: u64, state: RunState) {
        self.with_run(workflow, number, |run| {
            run.state = state;
            run.finished = Some(chrono::Utc::now().to_rfc3339());
        });
    }

    /// The runs of `workflow`, newest first.
    pub fn list(&self, workflow: &str) -> Vec<RunRecord> {
        self.lock()
            .runs
            .get(workflow)
            .map(|l| l.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// The newest run of every workflow that has one.
    pub fn latest(&self) -> BTreeMap<String, RunRecord> {
        self.lock()
            .runs
            .iter()
            .filter_map(|(w, l)| Some((w.clone(), l.back()?.clone())))
            .collect()
    }

    /// One run.
    pub fn get(&self, workflow: &str, number: u64) -> Option<RunRecord> {
        self.lock()
            .runs
            .get(workflow)?
            .iter()
            .find(|r| r.number == number)
            .cloned()
    }

    /// Ticks whenever a run changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Waits until run `number` of `workflow` has ended; returns it.
    pub async fn wait(&self, workflow: &str, number: u64) -> Option<RunRecord> {
        let mut changes = self.changes();
        loop {
            let run = self.get(workflow, number)?;
            if run.state != RunState::Running {
                return Some(run);
            }
            changes.changed().await.ok()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_cut_short_by_a_restart_is_recorded_interrupted_and_only_the_last_twenty_are_kept() {
        let dir = tempdir();
        let state = StateDir::new(&dir, "default");
        let runs = Runs::open(&state);
        for _ in 0..25 {
            let n = runs.begin("nightly", "manual", "3f2a1c0", &["a".into()]);
            runs.finish("nightly", n, RunState::Succeeded);
        }
        let cut = runs.begin("nightly", "manual", "3f2a1c0", &["a".into(), "b".into()]);
        runs.node_started("nightly", cut, 0);
        // berth is killed here; the next start finds the run still going.
        let again = Runs::open(&state);
        let list = again.list("nightly");
        assert_eq!(list.len(), KEEP);
        assert_eq!(list[0].number, 26);
        assert_eq!(list[0].state, RunState::Interrupted);
        assert_eq!(
            list[0].message.as_deref(),
            Some("cut short by a restart of berth; not run again")
        );
        assert_eq!(list[0].nodes[0].state, "cancelled");
        assert_eq!(list[KEEP - 1].number, 7);
        // Numbers go on after a restart.
        assert_eq!(again.begin("nightly", "manual", "x", &[]), 27);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "berth-runs-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
