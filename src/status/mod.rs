//! Status: what the controller knows, for people and tools — per-resource conditions,
//! the revisions observed and applied, the last pass, the pending plan and a bounded
//! event history. The loop is the only writer; readers get snapshots. Persisted
//! atomically in `<state-dir>/status-<instance>.json` and reloaded on start.

pub mod conditions;
pub mod http;
pub mod server;
pub mod workflows;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::plan::Plan;
use crate::resource::{ResourceId, ResourceKind};
use crate::source::RevisionId;
use crate::state::atomic;

pub use conditions::{Condition, ConditionType, EventReason, PassResult, Reason};

/// Events kept in the history.
pub const MAX_EVENTS: usize = 200;

/// The state of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// `App`, `Domain`…
    pub kind: ResourceKind,
    /// Its name.
    pub name: String,
    /// Its conditions.
    pub conditions: Vec<Condition>,
    /// The last action taken on it, with its reasons.
    pub last_action: Option<String>,
    /// A Swarm service's tasks: how many run, on which nodes (`runtime: swarm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<crate::plan::Tasks>,
}

impl ResourceStatus {
    /// Its id.
    pub fn id(&self) -> ResourceId {
        ResourceId::new(self.kind, self.name.clone())
    }

    /// Whether its `Ready` condition holds.
    pub fn is_ready(&self) -> bool {
        conditions::is_ready(&self.conditions)
    }

    /// Its condition of type `kind`.
    pub fn condition(&self, kind: ConditionType) -> Option<&Condition> {
        conditions::find(&self.conditions, kind)
    }

    /// What people read of it: its `Ready` message, and where a service's tasks run
    /// when the message does not say already.
    pub fn message(&self) -> String {
        let ready = self
            .condition(ConditionType::Ready)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        match &self.tasks {
            Some(t) if !ready.contains("tasks running") => {
                if ready.is_empty() {
                    t.summary()
                } else {
                    format!("{ready}; {}", t.summary())
                }
            }
            _ => ready,
        }
    }
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// When (RFC 3339).
    pub time: String,
    /// `Deployed`, `SyncFailed`, `DriftCorrected`…
    pub reason: EventReason,
    /// Words for people.
    pub message: String,
}

/// How the last pass went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassRecord {
    /// What started it.
    pub trigger: String,
    /// `Synced`, `Stalled`, `Waiting` or `Failed`.
    pub result: PassResult,
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
    pub revision_observed: Option<RevisionId>,
    /// The revision the host runs.
    pub revision_applied: Option<RevisionId>,
    /// When a pass last succeeded (RFC 3339).
    pub last_success: Option<String>,
    /// The last pass.
    pub last_pass: Option<PassRecord>,
    /// Passes since start, by result.
    pub passes: BTreeMap<PassResult, u64>,
    /// Resources by `Kind/name`.
    pub resources: BTreeMap<ResourceId, ResourceStatus>,
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
    /// The certificates of berth's ACME client, by Domain.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub certificates: BTreeMap<String, CertificateStatus>,
}

/// A Domain's certificate from berth's ACME client, as status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CertificateStatus {
    /// The hosts the Domain needs it for.
    pub hosts: Vec<String>,
    /// Who issued the certificate in place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Valid until (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// When it is renewed (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_renewal: Option<String>,
    /// Why the last order failed, while orders fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Orders that failed since the last success.
    #[serde(skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// No order before this (RFC 3339), after a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<String>,
    /// It expires within 14 days and has not been renewed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expiring: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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
    pub commit: Option<RevisionId>,
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
        revision: RevisionId,
    },
    /// The host runs the revision.
    Synced {
        /// The revision.
        revision: RevisionId,
    },
    /// The plan waits for `berth apply` (`autoApply: false`).
    PlanPending {
        /// The revision.
        revision: RevisionId,
    },
    /// Retrying will not help until the revision changes.
    Stalled {
        /// The revision.
        revision: RevisionId,
        /// Why: `InvalidRevision` or `Conflict`.
        reason: Reason,
        /// Every problem.
        message: String,
    },
    /// A pass failed; it is retried with backoff.
    Failed {
        /// What failed.
        message: String,
    },
    /// A dependency is not ready yet; the pass is retried soon. Not a failure.
    Waiting {
        /// What is awaited.
        message: String,
    },
}

/// The current time in RFC 3339.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl Status {
    /// Adds an event, dropping the oldest past [`MAX_EVENTS`].
    pub fn push_event(&mut self, reason: EventReason, message: String) {
        self.events.push_back(Event {
            time: now(),
            reason,
            message,
        });
        while self.events.len() > MAX_EVENTS {
            self.events.pop_front();
        }
    }

    /// Adds an event unless the newest one says the same (a lasting failure is one event).
    pub fn push_event_once(&mut self, reason: EventReason, message: String) {
        let repeated = self
            .events
            .back()
            .is_some_and(|e| e.reason == reason && e.message == message);
        if !repeated {
            self.push_event(reason, message);
        }
    }

    /// Whether the source as a whole is Ready.
    pub fn is_ready(&self) -> bool {
        conditions::is_ready(&self.conditions)
    }

    /// Sets the source's conditions from where the controller is, keeping each
    /// condition's `lastTransition` while its status holds.
    pub fn set_phase(&mut self, phase: &Phase) {
        use ConditionType::{Ready, Reconciling, Stalled};
        let (ready, reconciling, stalled) = match phase {
            Phase::Reconciling { revision } => (
                None,
                Some((
                    Reason::Progressing,
                    format!("applying revision {}", revision.short()),
                )),
                None,
            ),
            Phase::Synced { revision } => (
                Some((
                    Reason::Succeeded,
                    format!("revision {} is applied", revision.short()),
                )),
                None,
                None,
            ),
            Phase::PlanPending { revision } => (
                Some((
                    Reason::PlanPending,
                    format!(
                        "revision {} is planned, not applied (autoApply: false): run `berth apply`",
                        revision.short()
                    ),
                )),
                None,
                None,
            ),
            Phase::Stalled {
                revision,
                reason: Reason::InvalidRevision,
                message,
            } => (
                None,
                None,
                Some((
                    Reason::InvalidRevision,
                    format!(
                        "revision {} is invalid; nothing of it is applied:\n{message}",
                        revision.short()
                    ),
                )),
            ),
            Phase::Stalled {
                revision,
                reason,
                message,
            } => (
                None,
                None,
                Some((
                    *reason,
                    format!(
                        "revision {} cannot be applied until it changes:\n{message}",
                        revision.short()
                    ),
                )),
            ),
            Phase::Failed { .. } => (None, None, None),
            Phase::Waiting { message } => {
                (None, Some((Reason::Progressing, message.clone())), None)
            }
        };
        let time = now();
        let old = std::mem::take(&mut self.conditions);
        let make = |kind, status: bool, reason, message: String| {
            Condition::keeping_transition(&old, &time, kind, status, reason, message)
        };
        // Ready is false while stalled or failing, and unknown-but-kept while a pass runs.
        let ready_now = match (&ready, phase) {
            (Some((reason, message)), _) => make(Ready, true, *reason, message.clone()),
            (None, Phase::Reconciling { .. } | Phase::Waiting { .. }) => {
                conditions::find(&old, Ready)
                    .cloned()
                    .unwrap_or_else(|| make(Ready, false, Reason::Progressing, "first pass".into()))
            }
            (
                None,
                Phase::Stalled {
                    reason: Reason::InvalidRevision,
                    ..
                },
            ) => make(
                Ready,
                false,
                Reason::InvalidRevision,
                "the newest revision is invalid; the last good revision stays live".into(),
            ),
            (
                None,
                Phase::Stalled {
                    reason, message, ..
                },
            ) => make(Ready, false, *reason, message.clone()),
            (None, Phase::Failed { message }) => {
                make(Ready, false, Reason::SyncFailed, message.clone())
            }
            (None, _) => make(Ready, false, Reason::Unknown, String::new()),
        };
        let (r_reason, r_message) = reconciling.unwrap_or((Reason::Idle, String::new()));
        let reconciling_now = make(Reconciling, !r_message.is_empty(), r_reason, r_message);
        let stalled_now = match stalled {
            Some((reason, message)) => make(Stalled, true, reason, message),
            None => make(Stalled, false, Reason::Unset, String::new()),
        };
        self.conditions = vec![ready_now, reconciling_now, stalled_now];
    }

    /// Marks a resource as being changed by the pass under way.
    pub fn set_reconciling(&mut self, id: &ResourceId, message: &str) {
        let time = now();
        let entry = self
            .resources
            .entry(id.clone())
            .or_insert_with(|| ResourceStatus {
                kind: id.kind,
                name: id.name.clone(),
                conditions: vec![Condition {
                    kind: ConditionType::Ready,
                    status: false,
                    reason: Reason::Progressing,
                    message: "not applied yet".into(),
                    last_transition: time.clone(),
                }],
                last_action: None,
                tasks: None,
            });
        entry
            .conditions
            .retain(|c| c.kind != ConditionType::Reconciling);
        entry.conditions.insert(
            1.min(entry.conditions.len()),
            Condition {
                kind: ConditionType::Reconciling,
                status: true,
                reason: Reason::Progressing,
                message: message.into(),
                last_transition: time,
            },
        );
    }

    /// Sets a resource's conditions, keeping `lastTransition` where the status did not
    /// change (so the time says when it became so, not when it was last checked).
    pub fn set_resource(
        &mut self,
        id: &ResourceId,
        ready: bool,
        reason: Reason,
        message: &str,
        action: Option<String>,
    ) {
        use ConditionType::{Ready, Reconciling, Stalled};
        let time = now();
        // Retrying will not help these until the revision changes.
        let stalled = reason.stalls();
        let old = self.resources.get(id);
        let before = old.map_or(&[][..], |r| r.conditions.as_slice());
        let make = |kind, status: bool, reason, message: &str| {
            Condition::keeping_transition(before, &time, kind, status, reason, message.into())
        };
        let (stalled_reason, stalled_message) = if stalled {
            (reason, message)
        } else {
            (Reason::Unset, "")
        };
        let conditions = vec![
            make(Ready, ready, reason, message),
            make(Reconciling, false, Reason::Idle, ""),
            make(Stalled, stalled, stalled_reason, stalled_message),
        ];
        let last_action = action.or_else(|| old.and_then(|r| r.last_action.clone()));
        let tasks = old.and_then(|r| r.tasks.clone());
        self.resources.insert(
            id.clone(),
            ResourceStatus {
                kind: id.kind,
                name: id.name.clone(),
                conditions,
                last_action,
                tasks,
            },
        );
    }

    /// Records how a service's tasks are doing, as a pass observed them.
    pub fn set_tasks(&mut self, id: &ResourceId, tasks: Option<crate::plan::Tasks>) {
        if let Some(r) = self.resources.get_mut(id) {
            r.tasks = tasks;
        }
    }
}

/// The newest plan, as a value (served as JSON) — its text is [`Status::plan`].
#[derive(Debug, Clone)]
pub struct PlanSnapshot {
    /// The revision planned.
    pub revision: RevisionId,
    /// The plan.
    pub plan: Arc<Plan>,
}

/// The status, shared between the loop (writer) and the HTTP server (readers).
#[derive(Debug, Clone)]
pub struct StatusStore {
    inner: Arc<RwLock<Status>>,
    plan: Arc<RwLock<Option<PlanSnapshot>>>,
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
            plan: Arc::default(),
            path: Some(path),
        }
    }

    /// A store in memory only (tests).
    pub fn in_memory(status: Status) -> StatusStore {
        StatusStore {
            inner: Arc::new(RwLock::new(status)),
            plan: Arc::default(),
            path: None,
        }
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> Status {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The newest plan, when a pass has planned one since `berth run` started.
    pub fn plan(&self) -> Option<PlanSnapshot> {
        self.plan.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Keeps `plan` as the newest plan (in memory: status.json holds its text).
    pub fn set_plan(&self, revision: RevisionId, plan: Plan) {
        *self.plan.write().unwrap_or_else(|e| e.into_inner()) = Some(PlanSnapshot {
            revision,
            plan: Arc::new(plan),
        });
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

    fn blog() -> ResourceId {
        ResourceId::new(ResourceKind::App, "blog")
    }

    #[test]
    fn transitions_keep_their_time_until_the_status_changes() {
        // Times are written to the second: the first one may read up to a second earlier.
        let start = SystemTime::now() - std::time::Duration::from_secs(1);
        let mut s = Status::default();
        s.set_resource(
            &blog(),
            true,
            Reason::Applied,
            "running",
            Some("create".into()),
        );
        let ready = &s.resources[&blog()].conditions[0];
        assert_eq!(
            (ready.kind, ready.status, ready.reason),
            (ConditionType::Ready, true, Reason::Applied)
        );
        assert_eq!(ready.message, "running");
        let first = ready.last_transition.clone();
        // The time a user reads is this moment, as RFC 3339.
        let first_time = humantime::parse_rfc3339(&first)
            .unwrap_or_else(|e| panic!("lastTransition {first:?} is not RFC 3339: {e}"));
        assert!(
            start <= first_time && first_time <= SystemTime::now(),
            "lastTransition {first} is not the time the status was set"
        );
        s.resources.get_mut(&blog()).unwrap().conditions[0].last_transition = "earlier".into();
        s.set_resource(&blog(), true, Reason::Applied, "running", None);
        assert_eq!(
            s.resources[&blog()].conditions[0].last_transition,
            "earlier"
        );
        assert_eq!(s.resources[&blog()].last_action.as_deref(), Some("create"));
        s.set_resource(&blog(), false, Reason::ApplyFailed, "boom", None);
        let failed = &s.resources[&blog()].conditions[0];
        assert_eq!(
            (failed.status, failed.reason, failed.message.as_str()),
            (false, Reason::ApplyFailed, "boom")
        );
        // The status changed: the time is now again, not the one kept before.
        let failed_time = humantime::parse_rfc3339(&failed.last_transition)
            .unwrap_or_else(|e| panic!("lastTransition {:?}: {e}", failed.last_transition));
        assert!(
            first_time <= failed_time && failed_time <= SystemTime::now(),
            "lastTransition {} after the failure is not the time it failed",
            failed.last_transition
        );
    }

    #[test]
    fn the_history_is_bounded_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let store = StatusStore::open(&dir.path().join("status-default.json"));
        for i in 0..(MAX_EVENTS + 5) {
            store.update(|s| s.push_event(EventReason::Deployed, format!("event {i}")));
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
        let rev = RevisionId::commit("3f2a1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a49");
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
                    reason: Reason::InvalidRevision,
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
            (
                Phase::Waiting {
                    message: "App/web waits for Database/db".into(),
                },
                // Waiting is not a failure: Ready holds from before.
                [(true, "PlanPending"), (true, "Progressing"), (false, "")],
                "revision 3f2a1c0 is planned, not applied (autoApply: false): run `berth apply`",
            ),
            (
                Phase::Stalled {
                    revision: rev.clone(),
                    reason: Reason::Conflict,
                    message: "App/web: a container berth does not own has its name".into(),
                },
                [(false, "Conflict"), (false, "Idle"), (true, "Conflict")],
                "App/web: a container berth does not own has its name",
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
            reason: Reason::InvalidRevision,
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

#[cfg(test)]
mod compat {
    use super::*;

    /// status.json written before the typed status reads back and writes the same.
    #[test]
    fn a_stored_status_reads_back_and_writes_the_same_json() {
        let stored = serde_json::json!({
            "source": "/srv/state",
            "revisionObserved": "3f2a1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a49",
            "revisionApplied": "0123456789ab",
            "lastSuccess": null,
            "lastPass": {"trigger": "Start", "result": "Synced", "durationMs": 12, "finishedAt": "t"},
            "passes": {"Failed": 1, "Synced": 3},
            "resources": {
                "App/blog": {"kind": "App", "name": "blog", "conditions": [
                    {"type": "Ready", "status": false, "reason": "ApplyFailed", "message": "boom", "lastTransition": "t"},
                    {"type": "Reconciling", "status": false, "reason": "Idle", "message": "", "lastTransition": "t"},
                    {"type": "Stalled", "status": false, "reason": "", "message": "", "lastTransition": "t"}
                ], "lastAction": null},
                "Domain/shop": {"kind": "Domain", "name": "shop", "conditions": [], "lastAction": "create"}
            },
            "plan": null,
            "events": [{"time": "t", "reason": "SyncFailed", "message": "boom"}],
            "conditions": [],
            "fetch": {"time": "t", "commit": "3f2a1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a49", "error": null},
            "backups": {},
            "notifiers": []
        });
        let status: Status = serde_json::from_value(stored.clone()).unwrap();
        let blog = &status.resources[&ResourceId::new(ResourceKind::App, "blog")];
        assert_eq!(
            blog.condition(ConditionType::Ready).unwrap().reason,
            Reason::ApplyFailed
        );
        assert_eq!(
            status.revision_observed.as_ref().unwrap().kind(),
            crate::source::RevisionKind::Commit
        );
        assert_eq!(
            status.revision_applied.as_ref().unwrap().kind(),
            crate::source::RevisionKind::Content
        );
        assert_eq!(serde_json::to_value(&status).unwrap(), stored);
    }
}
