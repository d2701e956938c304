//! Status: what the controller knows, for people and tools — per-resource conditions,
//! the revisions observed and applied, the last pass, the pending plan and a bounded
//! event history. The loop is the only writer; readers get snapshots. Persisted
//! atomically in `<state-dir>/status-<instance>.json` and reloaded on start.

pub mod http;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::state::atomic;

/// Events kept in the history.
pub const MAX_EVENTS: usize = 200;

/// A condition of a resource, as in Kubernetes and Flux.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Reconciling` or `Stalled`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether the condition holds.
    pub status: bool,
    /// A CamelCase reason.
    pub reason: String,
    /// Words for people.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition: String,
}

impl Condition {
    /// A condition that keeps its `lastTransition` from `before` while its status holds
    /// (so the time says when it became so, not when it was last checked).
    fn keeping_transition(
        before: &[Condition],
        now: &str,
        kind: &str,
        status: bool,
        reason: &str,
        message: String,
    ) -> Condition {
        let last_transition = before
            .iter()
            .find(|c| c.kind == kind && c.status == status)
            .map_or_else(|| now.to_owned(), |c| c.last_transition.clone());
        Condition {
            kind: kind.into(),
            status,
            reason: reason.into(),
            message,
            last_transition,
        }
    }
}

/// The state of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// `App`, `Domain`…
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its conditions.
    pub conditions: Vec<Condition>,
    /// The last action taken on it, with its reasons.
    pub last_action: Option<String>,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// When (RFC 3339).
    pub time: String,
    /// `Deployed`, `SyncFailed`, `DriftCorrected`…
    pub reason: String,
    /// Words for people.
    pub message: String,
}

/// How the last pass went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassRecord {
    /// What started it.
    pub trigger: String,
    /// `Synced`, `Stalled` or `Failed`.
    pub result: String,
    /// Milliseconds it took.
    pub duration_ms: u64,
    /// When it finished (RFC 3339).
    pub finished_at: String,
}

/// Everything the status endpoint serves.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Status {
    /// The source, as given to `berth run`.
    pub source: String,
    /// The newest revision seen.
    pub revision_observed: Option<String>,
    /// The revision the host runs.
    pub revision_applied: Option<String>,
    /// When a pass last succeeded (RFC 3339).
    pub last_success: Option<String>,
    /// The last pass.
    pub last_pass: Option<PassRecord>,
    /// Passes since start, by result.
    pub passes: BTreeMap<String, u64>,
    /// Resources by `Kind/name`.
    pub resources: BTreeMap<String, ResourceStatus>,
    /// The plan of the newest revision, as text (secrets redacted).
    pub plan: Option<String>,
    /// Recent events, oldest first.
    pub events: VecDeque<Event>,
    /// The conditions of the source as a whole: `Ready`, `Reconciling`, `Stalled`.
    pub conditions: Vec<Condition>,
    /// The last fetch of a Git source.
    pub fetch: Option<FetchRecord>,
    /// The last scheduled backup of each database.
    pub backups: BTreeMap<String, BackupRecord>,
    /// How deliveries to each notifier went since `berth run` started.
    pub notifiers: Vec<crate::notify::Delivery>,
}

/// How a database's last scheduled backup went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// When it finished (RFC 3339).
    pub time: String,
    /// The dump, when it worked.
    pub file: Option<String>,
    /// Its size in bytes.
    pub bytes: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// How the last fetch of a Git source went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchRecord {
    /// When it finished (RFC 3339).
    pub time: String,
    /// The commit the followed ref points to, when the fetch worked.
    pub commit: Option<String>,
    /// Why it failed (the last good revision stays live).
    pub error: Option<String>,
}

/// Where the controller is with the source as a whole; [`Status::set_phase`] turns it
/// into conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// A pass is applying a revision.
    Reconciling {
        /// The revision.
        revision: String,
    },
    /// The host runs the revision.
    Synced {
        /// The revision.
        revision: String,
    },
    /// The plan waits for `berth apply` (`autoApply: false`).
    PlanPending {
        /// The revision.
        revision: String,
    },
    /// The revision is invalid: retrying will not help until it changes.
    Stalled {
        /// The revision.
        revision: String,
        /// Every problem.
        message: String,
    },
    /// A pass failed; it is retried with backoff.
    Failed {
        /// What failed.
        message: String,
    },
}

/// A revision id as people read it: 7 characters of a commit id, 12 of a hash.
pub fn short(revision: &str) -> &str {
    let n = if revision.len() == 40 { 7 } else { 12 };
    revision.get(..n).unwrap_or(revision)
}

/// The current time in RFC 3339.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl Status {
    /// Adds an event, dropping the oldest past [`MAX_EVENTS`].
    pub fn push_event(&mut self, reason: &str, message: String) {
        self.events.push_back(Event {
            time: now(),
            reason: reason.to_owned(),
            message,
        });
        while self.events.len() > MAX_EVENTS {
            self.events.pop_front();
        }
    }

    /// Sets the source's conditions from where the controller is, keeping each
    /// condition's `lastTransition` while its status holds.
    pub fn set_phase(&mut self, phase: &Phase) {
        let (ready, reconciling, stalled) = match phase {
            Phase::Reconciling { revision } => (
                None,
                Some((
                    "Progressing",
                    format!("applying revision {}", short(revision)),
                )),
                None,
            ),
            Phase::Synced { revision } => (
                Some((
                    "Succeeded",
                    format!("revision {} is applied", short(revision)),
                )),
                None,
                None,
            ),
            Phase::PlanPending { revision } => (
                Some((
                    "PlanPending",
                    format!(
                        "revision {} is planned, not applied (autoApply: false): run `berth apply`",
                        short(revision)
                    ),
                )),
                None,
                None,
            ),
            Phase::Stalled { revision, message } => (
                None,
                None,
                Some((
                    "InvalidRevision",
                    format!(
                        "revision {} is invalid; nothing of it is applied:\n{message}",
                        short(revision)
                    ),
                )),
            ),
            Phase::Failed { .. } => (None, None, None),
        };
        let time = now();
        let old = std::mem::take(&mut self.conditions);
        let make = |kind: &str, status: bool, reason: &str, message: String| {
            Condition::keeping_transition(&old, &time, kind, status, reason, message)
        };
        // Ready is false while stalled or failing, and unknown-but-kept while a pass runs.
        let ready_now = match (&ready, phase) {
            (Some((reason, message)), _) => make("Ready", true, reason, message.clone()),
            (None, Phase::Reconciling { .. }) => old
                .iter()
                .find(|c| c.kind == "Ready")
                .cloned()
                .unwrap_or_else(|| make("Ready", false, "Progressing", "first pass".into())),
            (None, Phase::Stalled { .. }) => make(
                "Ready",
                false,
                "InvalidRevision",
                "the newest revision is invalid; the last good revision stays live".into(),
            ),
            (None, Phase::Failed { message }) => {
                make("Ready", false, "SyncFailed", message.clone())
            }
            (None, _) => make("Ready", false, "Unknown", String::new()),
        };
        let (r_reason, r_message) = reconciling.unwrap_or(("Idle", String::new()));
        let reconciling_now = make("Reconciling", !r_message.is_empty(), r_reason, r_message);
        let stalled_now = match stalled {
            Some((reason, message)) => make("Stalled", true, reason, message),
            None => make("Stalled", false, "", String::new()),
        };
        self.conditions = vec![ready_now, reconciling_now, stalled_now];
    }

    /// Marks a resource as being changed by the pass under way.
    pub fn set_reconciling(&mut self, kind: &str, name: &str, message: &str) {
        let key = format!("{kind}/{name}");
        let time = now();
        let entry = self.resources.entry(key).or_insert_with(|| ResourceStatus {
            kind: kind.into(),
            name: name.into(),
            conditions: vec![Condition {
                kind: "Ready".into(),
                status: false,
                reason: "Progressing".into(),
                message: "not applied yet".into(),
                last_transition: time.clone(),
            }],
            last_action: None,
        });
        entry.conditions.retain(|c| c.kind != "Reconciling");
        entry.conditions.insert(
            1.min(entry.conditions.len()),
            Condition {
                kind: "Reconciling".into(),
                status: true,
                reason: "Progressing".into(),
                message: message.into(),
                last_transition: time,
            },
        );
    }

    /// Sets a resource's conditions, keeping `lastTransition` where the status did not
    /// change (so the time says when it became so, not when it was last checked).
    pub fn set_resource(
        &mut self,
        kind: &str,
        name: &str,
        ready: bool,
        reason: &str,
        message: &str,
        action: Option<String>,
    ) {
        let key = format!("{kind}/{name}");
        let time = now();
        // Retrying will not help these until the revision changes.
        let stalled = matches!(reason, "InvalidRevision" | "Conflict");
        let old = self.resources.get(&key);
        let before = old.map_or(&[][..], |r| r.conditions.as_slice());
        let make = |kind: &str, status: bool, reason: &str, message: &str| {
            Condition::keeping_transition(before, &time, kind, status, reason, message.into())
        };
        let (stalled_reason, stalled_message) = if stalled { (reason, message) } else { ("", "") };
        let conditions = vec![
            make("Ready", ready, reason, message),
            make("Reconciling", false, "Idle", ""),
            make("Stalled", stalled, stalled_reason, stalled_message),
        ];
        let last_action = action.or_else(|| old.and_then(|r| r.last_action.clone()));
        self.resources.insert(
            key,
            ResourceStatus {
                kind: kind.into(),
                name: name.into(),
                conditions,
                last_action,
            },
        );
    }
}

/// The status, shared between the loop (writer) and the HTTP server (readers).
#[derive(Debug, Clone)]
pub struct StatusStore {
    inner: Arc<RwLock<Status>>,
    path: Option<PathBuf>,
}

impl StatusStore {
    /// A store persisted at `path` (`StateDir::status_path`), starting from what is there.
    pub fn open(path: &Path) -> StatusStore {
        let path = path.to_path_buf();
        let status = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        StatusStore {
            inner: Arc::new(RwLock::new(status)),
            path: Some(path),
        }
    }

    /// A store in memory only (tests).
    pub fn in_memory(status: Status) -> StatusStore {
        StatusStore {
            inner: Arc::new(RwLock::new(status)),
            path: None,
        }
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> Status {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes the status and persists it.
    pub fn update(&self, change: impl FnOnce(&mut Status)) {
        let copy = {
            let mut status = self.inner.write().unwrap_or_else(|e| e.into_inner());
            change(&mut status);
            status.clone()
        };
        if let Some(path) = &self.path {
            let json = serde_json::to_vec_pretty(&copy).unwrap_or_default();
            if let Err(e) = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| atomic::write_atomic(path, &json))
            {
                tracing::warn!("failed to write {}: {e}", path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_keep_their_time_until_the_status_changes() {
        let mut s = Status::default();
        s.set_resource(
            "App",
            "blog",
            true,
            "Applied",
            "running",
            Some("create".into()),
        );
        let first = s.resources["App/blog"].conditions[0]
            .last_transition
            .clone();
        s.resources.get_mut("App/blog").unwrap().conditions[0].last_transition = "earlier".into();
        s.set_resource(
            "App/blog".split('/').next().unwrap(),
            "blog",
            true,
            "Applied",
            "running",
            None,
        );
        assert_eq!(
            s.resources["App/blog"].conditions[0].last_transition,
            "earlier"
        );
        assert_eq!(
            s.resources["App/blog"].last_action.as_deref(),
            Some("create")
        );
        s.set_resource("App", "blog", false, "ApplyFailed", "boom", None);
        assert_ne!(
            s.resources["App/blog"].conditions[0].last_transition,
            "earlier"
        );
        assert!(!first.is_empty());
    }

    #[test]
    fn the_history_is_bounded_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let store = StatusStore::open(&dir.path().join("status-default.json"));
        for i in 0..(MAX_EVENTS + 5) {
            store.update(|s| s.push_event("Deployed", format!("event {i}")));
        }
        let again = StatusStore::open(&dir.path().join("status-default.json")).snapshot();
        assert_eq!(again.events.len(), MAX_EVENTS);
        assert_eq!(
            again.events.back().unwrap().message,
            format!("event {}", MAX_EVENTS + 4)
        );
    }

    #[test]
    fn phases_become_conditions() {
        let rev = "3f2a1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a49".to_owned();
        let table = [
            (
                Phase::Synced {
                    revision: rev.clone(),
                },
                [(true, "Succeeded"), (false, "Idle"), (false, "")],
                "revision 3f2a1c0 is applied",
            ),
            (
                Phase::Reconciling {
                    revision: rev.clone(),
                },
                // Ready holds from the pass before while the new one runs.
                [(true, "Succeeded"), (true, "Progressing"), (false, "")],
                "revision 3f2a1c0 is applied",
            ),
            (
                Phase::Stalled {
                    revision: rev.clone(),
                    message: "web.yaml:8:3: App/web: unknown field `imgae`".into(),
                },
                [
                    (false, "InvalidRevision"),
                    (false, "Idle"),
                    (true, "InvalidRevision"),
                ],
                "the newest revision is invalid; the last good revision stays live",
            ),
            (
                Phase::Failed {
                    message: "app web: image missing".into(),
                },
                [(false, "SyncFailed"), (false, "Idle"), (false, "")],
                "app web: image missing",
            ),
            (
                Phase::PlanPending {
                    revision: rev.clone(),
                },
                [(true, "PlanPending"), (false, "Idle"), (false, "")],
                "revision 3f2a1c0 is planned, not applied (autoApply: false): run `berth apply`",
            ),
        ];
        let mut s = Status::default();
        for (phase, want, ready_message) in table {
            s.set_phase(&phase);
            let got: Vec<(bool, &str)> = s
                .conditions
                .iter()
                .map(|c| (c.status, c.reason.as_str()))
                .collect();
            assert_eq!(got, want, "{phase:?}");
            let kinds: Vec<&str> = s.conditions.iter().map(|c| c.kind.as_str()).collect();
            assert_eq!(kinds, ["Ready", "Reconciling", "Stalled"]);
            assert_eq!(s.conditions[0].message, ready_message, "{phase:?}");
        }
        let stalled = Phase::Stalled {
            revision: rev.clone(),
            message: "web.yaml:8:3: boom".into(),
        };
        s.set_phase(&stalled);
        assert!(s.conditions[2].message.ends_with("web.yaml:8:3: boom"));
        // The transition time stays while the status holds.
        s.conditions[2].last_transition = "earlier".into();
        s.set_phase(&stalled);
        assert_eq!(s.conditions[2].last_transition, "earlier");
        s.set_phase(&Phase::Synced { revision: rev });
        assert_ne!(s.conditions[2].last_transition, "earlier");
    }
}
