//! The error policy, pure and synchronous (as kube-rs' `error_policy` and Flux's error
//! kinds): a pass's typed outcome decides when the next pass runs. Transient failures
//! back off, a dependency not ready yet is waited for, and what retrying cannot fix (an
//! invalid revision, a conflict with an object berth does not own) stalls until the
//! revision changes.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::backoff::Backoff;
use crate::resource::ResourceId;
use crate::source::RevisionId;
use crate::status::{PassResult, Reason};

/// What kind of failure a [`Failure`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// It may work next time: retried with backoff.
    Transient,
    /// An object berth does not own is in the way: retrying will not help.
    Conflict,
    /// Something it needs is not ready yet: not a failure.
    Waiting,
}

/// One thing that went wrong in a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The resource, when the failure is one resource's (not the whole pass's).
    pub resource: Option<ResourceId>,
    /// Its kind.
    pub kind: FailureKind,
    /// What happened, for people (secrets redacted).
    pub message: String,
}

impl Failure {
    /// A transient failure of the whole pass.
    pub fn transient(message: impl Into<String>) -> Failure {
        Failure {
            resource: None,
            kind: FailureKind::Transient,
            message: message.into(),
        }
    }

    /// A failure of `resource`.
    pub fn of(resource: ResourceId, kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            resource: Some(resource),
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.resource {
            Some(r) => write!(f, "{r}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// How a pass ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassOutcome {
    /// The revision is applied (or planned, with autoApply off).
    Synced {
        /// The revision.
        revision: RevisionId,
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
    Invalid {
        /// The revision.
        revision: RevisionId,
        /// Every problem, one per line.
        message: String,
    },
    /// Some of it failed.
    Failed {
        /// The revision tried, when one was read.
        revision: Option<RevisionId>,
        /// What failed, one entry per resource (or one for the whole pass).
        failures: Vec<Failure>,
    },
}

/// What a failed pass comes to, from the worst of its failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Retry with backoff.
    Transient,
    /// Retrying will not help until the revision changes: why.
    Stalled(Reason),
    /// Wait for a dependency; not a failure.
    Waiting,
}

impl PassOutcome {
    /// The revision the pass was about, when it read one.
    pub fn revision(&self) -> Option<&RevisionId> {
        match self {
            PassOutcome::Synced { revision, .. } | PassOutcome::Invalid { revision, .. } => {
                Some(revision)
            }
            PassOutcome::Failed { revision, .. } => revision.as_ref(),
        }
    }

    /// How bad it is; `None` when the pass synced. A transient failure outweighs a
    /// conflict (retrying helps it), a conflict outweighs waiting (waiting will not end it).
    pub fn severity(&self) -> Option<Severity> {
        match self {
            PassOutcome::Synced { .. } => None,
            PassOutcome::Invalid { .. } => Some(Severity::Stalled(Reason::InvalidRevision)),
            PassOutcome::Failed { failures, .. } => {
                let has = |kind| failures.iter().any(|f| f.kind == kind);
                Some(if has(FailureKind::Transient) || failures.is_empty() {
                    Severity::Transient
                } else if has(FailureKind::Conflict) {
                    Severity::Stalled(Reason::Conflict)
                } else {
                    Severity::Waiting
                })
            }
        }
    }

    /// The result status and metrics count it under.
    pub fn result(&self) -> PassResult {
        match self.severity() {
            None => PassResult::Synced,
            Some(Severity::Transient) => PassResult::Failed,
            Some(Severity::Stalled(_)) => PassResult::Stalled,
            Some(Severity::Waiting) => PassResult::Waiting,
        }
    }

    /// Every failure, one per entry, as people read them.
    pub fn failure_lines(&self) -> Vec<String> {
        match self {
            PassOutcome::Failed { failures, .. } => {
                failures.iter().map(ToString::to_string).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// When the next pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// In sync: the resync timer, unless something triggers a pass before.
    After(Duration),
    /// A transient failure: retry after this backoff.
    Backoff(Duration),
    /// Nothing to retry until the revision changes (triggers still start passes).
    StalledUntilRevisionChanges,
    /// A dependency is not ready: look again soon. Not a failure.
    Waiting(Duration),
}

/// The policy's memory between passes: the backoff and the last resync interval.
#[derive(Debug, Clone)]
pub struct Policy {
    backoff: Backoff,
    resync: Duration,
    waiting: Duration,
}

/// The resync interval until a valid revision says otherwise.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);

/// How soon a pass waiting for a dependency looks again.
pub const WAITING_RETRY: Duration = Duration::from_secs(5);

impl Default for Policy {
    fn default() -> Self {
        Policy::new(Backoff::default())
    }
}

impl Policy {
    /// A policy retrying transient failures with `backoff`.
    pub fn new(backoff: Backoff) -> Policy {
        Policy {
            backoff,
            resync: DEFAULT_RESYNC,
            waiting: WAITING_RETRY,
        }
    }

    /// Decides what follows `outcome`, at `now`; `jitter` is a number in [0, 1).
    pub fn requeue(&mut self, outcome: &PassOutcome, now: Instant, jitter: f64) -> Requeue {
        if let PassOutcome::Synced { resync, .. } = outcome {
            self.resync = *resync;
            self.backoff.success();
            return Requeue::After(self.resync);
        }
        match outcome.severity() {
            None => Requeue::After(self.resync),
            Some(Severity::Transient) => Requeue::Backoff(self.backoff.failure(now, jitter)),
            Some(Severity::Stalled(_)) => Requeue::StalledUntilRevisionChanges,
            Some(Severity::Waiting) => Requeue::Waiting(self.waiting),
        }
    }

    /// The resync interval of the last valid revision.
    pub fn resync(&self) -> Duration {
        self.resync
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::ResourceKind;

    fn rev() -> RevisionId {
        RevisionId::content("0123456789ab")
    }

    fn synced(resync: u64) -> PassOutcome {
        PassOutcome::Synced {
            revision: rev(),
            changes: vec![],
            drift_only: false,
            pending: false,
            resync: Duration::from_secs(resync),
        }
    }

    fn failed(kinds: &[FailureKind]) -> PassOutcome {
        PassOutcome::Failed {
            revision: Some(rev()),
            failures: kinds
                .iter()
                .map(|k| Failure::of(ResourceId::new(ResourceKind::App, "web"), *k, "boom"))
                .collect(),
        }
    }

    fn invalid() -> PassOutcome {
        PassOutcome::Invalid {
            revision: rev(),
            message: "web.yaml:3:1: unknown field".into(),
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[tokio::test(start_paused = true)]
    async fn outcomes_decide_the_next_pass() {
        use FailureKind::{Conflict, Transient, Waiting};
        use Requeue::{After, Backoff, StalledUntilRevisionChanges as Stalled};
        // (seconds since the start, outcome, requeue, result): one policy throughout,
        // no jitter (half of each backoff step).
        let table: Vec<(u64, PassOutcome, Requeue, PassResult)> = vec![
            // Synced: the revision's resync interval.
            (0, synced(120), After(S(120)), PassResult::Synced),
            // Transient: backoff grows 0.5 s, 1 s, 2 s…
            (
                1,
                failed(&[Transient]),
                Backoff(MS(500)),
                PassResult::Failed,
            ),
            (2, failed(&[Transient]), Backoff(S(1)), PassResult::Failed),
            (3, failed(&[Transient]), Backoff(S(2)), PassResult::Failed),
            // A transient failure outweighs a conflict and waiting.
            (
                4,
                failed(&[Conflict, Transient, Waiting]),
                Backoff(S(4)),
                PassResult::Failed,
            ),
            // Stalled: an invalid revision, a conflict (also with waiting dependents).
            (5, invalid(), Stalled, PassResult::Stalled),
            (6, failed(&[Conflict]), Stalled, PassResult::Stalled),
            (
                7,
                failed(&[Waiting, Conflict]),
                Stalled,
                PassResult::Stalled,
            ),
            // Waiting: soon, and the backoff does not grow.
            (
                8,
                failed(&[Waiting]),
                Requeue::Waiting(WAITING_RETRY),
                PassResult::Waiting,
            ),
            (9, failed(&[Transient]), Backoff(S(8)), PassResult::Failed),
            // A success resets the backoff.
            (10, synced(60), After(S(60)), PassResult::Synced),
            (
                11,
                failed(&[Transient]),
                Backoff(MS(500)),
                PassResult::Failed,
            ),
            (12, failed(&[Transient]), Backoff(S(1)), PassResult::Failed),
            // So does a quiet period (ten minutes without a failure).
            (
                12 + 601,
                failed(&[Transient]),
                Backoff(MS(500)),
                PassResult::Failed,
            ),
            // A stall keeps the resync of the last valid revision for later.
            (700, invalid(), Stalled, PassResult::Stalled),
            // A pass with no failures listed (nothing to say) is transient.
            (701, failed(&[]), Backoff(S(1)), PassResult::Failed),
        ];
        let start = Instant::now();
        let mut policy = Policy::default();
        for (i, (at, outcome, want, result)) in table.into_iter().enumerate() {
            let now = start + S(at);
            assert_eq!(
                policy.requeue(&outcome, now, 0.0),
                want,
                "row {i}: {outcome:?}"
            );
            assert_eq!(outcome.result(), result, "row {i}");
        }
        assert_eq!(policy.resync(), S(60));
    }

    #[test]
    fn failures_name_their_resource() {
        let f = Failure::of(
            ResourceId::new(ResourceKind::Database, "db"),
            FailureKind::Transient,
            "server unreachable",
        );
        assert_eq!(f.to_string(), "Database/db: server unreachable");
        assert_eq!(
            Failure::transient("cannot reach the Docker daemon").to_string(),
            "cannot reach the Docker daemon"
        );
    }
}
