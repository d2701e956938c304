//! Deduplication: a lasting failure is told once, then every `repeatAfter`; a recovery after it.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::Notification;
use crate::manifest::model::EventKind;
use crate::resource::ResourceId;

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
    /// When `Degraded` was last sent, per degraded resource.
    degraded: BTreeMap<ResourceId, Instant>,
    /// When `CertificateExpiring` was last sent, per certificate not yet renewed.
    expiring: BTreeMap<ResourceId, Instant>,
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
            EventKind::Degraded => lasting(&mut self.degraded, n, repeat_after, now),
            EventKind::CertificateExpiring => lasting(&mut self.expiring, n, repeat_after, now),
            EventKind::CertificateIssued => {
                if let Some(resource) = &n.resource {
                    self.expiring.remove(resource);
                }
                Verdict::Send { repeat: false }
            }
            EventKind::Recovered => match &n.resource {
                Some(resource) => recover(self.degraded.remove(resource)),
                None => Verdict::Send { repeat: false },
            },
            EventKind::Deployed
            | EventKind::DriftCorrected
            | EventKind::PlanPending
            | EventKind::WorkflowSucceeded
            | EventKind::WorkflowFailed
            | EventKind::BackupFailed
            // The pass tells a failed renewal once per run of failures.
            | EventKind::CertificateRenewalFailed
            | EventKind::WorkflowMessage => Verdict::Send { repeat: false },
        }
    }
}

/// A failure of one resource that lasts, remembered in `told`: told the first time,
/// then once `repeat_after` has passed.
fn lasting(
    told: &mut BTreeMap<ResourceId, Instant>,
    n: &Notification,
    repeat_after: Duration,
    now: Instant,
) -> Verdict {
    let Some(resource) = &n.resource else {
        return Verdict::Send { repeat: false };
    };
    let mut last_sent = told.get(resource).copied();
    let verdict = fail(&mut last_sent, repeat_after, now);
    if let Some(at) = last_sent {
        told.insert(resource.clone(), at);
    }
    verdict
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::ResourceKind;

    fn n(event: EventKind, resource: Option<&str>) -> Notification {
        Notification {
            event,
            instance: "host-1".into(),
            revision: None,
            resource: resource.map(|r| ResourceId::parse(r).unwrap()),
            // The summary no longer matters: it may name other resources, or none.
            summary: "App/other is mentioned here".into(),
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
            (EventKind::SyncRecovered, None, 0, NO),
            (EventKind::SyncFailed, None, 0, SEND),
            (EventKind::SyncFailed, None, 1, NO),
            (EventKind::Deployed, None, 2, SEND),
            (EventKind::SyncFailed, None, 59, NO),
            (EventKind::SyncFailed, None, 60, REPEAT),
            (EventKind::SyncFailed, None, 61, NO),
            (EventKind::SyncRecovered, None, 62, SEND),
            (EventKind::SyncRecovered, None, 63, NO),
            (EventKind::SyncFailed, None, 64, SEND),
            (EventKind::Degraded, Some("App/web"), 0, SEND),
            (EventKind::Degraded, Some("App/web"), 1, NO),
            (EventKind::Degraded, Some("Database/blog-db"), 1, SEND),
            (EventKind::Recovered, Some("App/web"), 2, SEND),
            (EventKind::Recovered, Some("App/web"), 3, NO),
            (EventKind::Recovered, Some("App/blog"), 3, NO),
            (EventKind::Degraded, Some("Database/blog-db"), 61, REPEAT),
            (EventKind::Degraded, None, 61, SEND),
            (EventKind::Degraded, None, 61, SEND),
            (EventKind::Recovered, None, 62, SEND),
            (EventKind::WorkflowFailed, None, 62, SEND),
            (EventKind::WorkflowFailed, None, 62, SEND),
        ];
        for (i, (event, resource, at, expected)) in steps.into_iter().enumerate() {
            assert_eq!(
                d.admit(&n(event, resource), hour, minutes(at)),
                expected,
                "step {i}: {event:?} {resource:?}"
            );
        }
    }

    #[test]
    fn the_same_name_of_another_kind_is_another_resource() {
        let hour = Duration::from_secs(3600);
        let now = Instant::now();
        let mut d = Dedup::default();
        let app = ResourceId::new(ResourceKind::App, "blog");
        let db = ResourceId::new(ResourceKind::Database, "blog");
        let mut note = n(EventKind::Degraded, None);
        note.resource = Some(app.clone());
        assert_eq!(d.admit(&note, hour, now), SEND);
        note.resource = Some(db);
        assert_eq!(d.admit(&note, hour, now), SEND);
        note.event = EventKind::Recovered;
        assert_eq!(d.admit(&note, hour, now), SEND);
        note.resource = Some(app);
        assert_eq!(d.admit(&note, hour, now), SEND);
        assert_eq!(d.admit(&note, hour, now), NO);
    }
}
