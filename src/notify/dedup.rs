//! Deduplication: a lasting failure is told once, then every `repeatAfter`; a recovery after it.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::Notification;
use crate::manifest::model::EventKind;

/// What to do with a notification for one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Send it; `repeat` marks a failure told again.
    Send {
        /// The failure was told before and still lasts.
        repeat: bool,
    },
    /// Already told, or a recovery from nothing.
    Suppress,
}

/// One target's memory of the failures it has told.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dedup {
    /// When `SyncFailed` was last sent, while the sync fails.
    sync_failing: Option<Instant>,
    /// When `Degraded` was last sent, per degraded resource (`App/web`).
    degraded: BTreeMap<String, Instant>,
}

impl Dedup {
    /// Decides about `n` at `now` and remembers the decision.
    pub(crate) fn admit(
        &mut self,
        n: &Notification,
        repeat_after: Duration,
        now: Instant,
    ) -> Verdict {
        match n.event {
            EventKind::SyncFailed => fail(&mut self.sync_failing, repeat_after, now),
            EventKind::SyncRecovered => recover(self.sync_failing.take()),
            EventKind::Degraded => match resource_of(&n.summary) {
                Some(resource) => {
                    let mut last_sent = self.degraded.get(resource).copied();
                    let verdict = fail(&mut last_sent, repeat_after, now);
                    if let Some(at) = last_sent {
                        self.degraded.insert(resource.to_owned(), at);
                    }
                    verdict
                }
                None => Verdict::Send { repeat: false },
            },
            EventKind::Recovered => match resource_of(&n.summary) {
                Some(resource) => recover(self.degraded.remove(resource)),
                None => Verdict::Send { repeat: false },
            },
            EventKind::Deployed
            | EventKind::DriftCorrected
            | EventKind::PlanPending
            | EventKind::WorkflowSucceeded
            | EventKind::WorkflowFailed
            | EventKind::BackupFailed => Verdict::Send { repeat: false },
        }
    }
}

/// A failure: told the first time, then again once `repeat_after` has passed.
fn fail(last_sent: &mut Option<Instant>, repeat_after: Duration, now: Instant) -> Verdict {
    match *last_sent {
        None => {
            *last_sent = Some(now);
            Verdict::Send { repeat: false }
        }
        Some(at) if now.saturating_duration_since(at) >= repeat_after => {
            *last_sent = Some(now);
            Verdict::Send { repeat: true }
        }
        Some(_) => Verdict::Suppress,
    }
}

/// A recovery: told only if the failure was.
fn recover(failing: Option<Instant>) -> Verdict {
    match failing {
        Some(_) => Verdict::Send { repeat: false },
        None => Verdict::Suppress,
    }
}

/// The resource a summary names, written `Kind/name` (`App/web`, `Database/blog-db`):
/// the first word of that shape.
pub(crate) fn resource_of(summary: &str) -> Option<&str> {
    summary
        .split_whitespace()
        .map(|word| word.trim_matches(|c: char| !c.is_ascii_alphanumeric()))
        .find(|word| {
            let Some((kind, name)) = word.split_once('/') else {
                return false;
            };
            kind.starts_with(|c: char| c.is_ascii_uppercase())
                && kind.bytes().all(|b| b.is_ascii_alphabetic())
                && !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(event: EventKind, summary: &str) -> Notification {
        Notification {
            event,
            instance: "host-1".into(),
            revision: None,
            summary: summary.into(),
            details: vec![],
        }
    }

    const SEND: Verdict = Verdict::Send { repeat: false };
    const REPEAT: Verdict = Verdict::Send { repeat: true };
    const NO: Verdict = Verdict::Suppress;

    #[test]
    fn failures_are_told_once_then_every_repeat_after_and_recoveries_only_after_them() {
        let hour = Duration::from_secs(3600);
        let t0 = Instant::now();
        let minutes = |m: u64| t0 + Duration::from_secs(60 * m);
        let mut d = Dedup::default();
        let steps = [
            (EventKind::SyncRecovered, "sync works", 0, NO),
            (EventKind::SyncFailed, "sync failed", 0, SEND),
            (EventKind::SyncFailed, "sync failed", 1, NO),
            (EventKind::Deployed, "deployed", 2, SEND),
            (EventKind::SyncFailed, "sync failed", 59, NO),
            (EventKind::SyncFailed, "sync failed", 60, REPEAT),
            (EventKind::SyncFailed, "sync failed", 61, NO),
            (EventKind::SyncRecovered, "sync works", 62, SEND),
            (EventKind::SyncRecovered, "sync works", 63, NO),
            (EventKind::SyncFailed, "sync failed", 64, SEND),
            (EventKind::Degraded, "App/web: container exited", 0, SEND),
            (EventKind::Degraded, "App/web: container exited", 1, NO),
            (EventKind::Degraded, "degraded: Database/blog-db", 1, SEND),
            (EventKind::Recovered, "App/web is healthy again", 2, SEND),
            (EventKind::Recovered, "App/web is healthy again", 3, NO),
            (EventKind::Recovered, "App/blog is healthy again", 3, NO),
            (
                EventKind::Degraded,
                "Database/blog-db still down",
                61,
                REPEAT,
            ),
            (EventKind::Degraded, "something is unwell", 61, SEND),
            (EventKind::Degraded, "something is unwell", 61, SEND),
            (EventKind::Recovered, "something is well", 62, SEND),
            (EventKind::WorkflowFailed, "backup failed", 62, SEND),
            (EventKind::WorkflowFailed, "backup failed", 62, SEND),
        ];
        for (i, (event, summary, at, expected)) in steps.into_iter().enumerate() {
            assert_eq!(
                d.admit(&n(event, summary), hour, minutes(at)),
                expected,
                "step {i}: {event:?} {summary}"
            );
        }
    }

    #[test]
    fn resources_are_found_in_summaries() {
        assert_eq!(
            resource_of("App/web: container exited (code 1)"),
            Some("App/web")
        );
        assert_eq!(
            resource_of("degraded: `Database/blog-db`."),
            Some("Database/blog-db")
        );
        assert_eq!(resource_of("image ghcr.io/acme/web:1 pulled"), None);
        assert_eq!(resource_of("app/web down"), None);
        assert_eq!(resource_of("App/ down"), None);
    }
}
