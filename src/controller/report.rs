//! The bus's two subscribers: one keeps the status store, the other tells the
//! notifiers (which deduplicate repeated failures themselves).

use tokio::sync::mpsc;

use super::events::{Bus, CertificateChange, Event, ResourceChange};
use super::policy::{PassOutcome, Severity};
use crate::manifest::model::EventKind;
use crate::notify::{Notification, Notifier};
use crate::resource::ResourceId;
use crate::source::RevisionId;
use crate::status::{
    self, BackupRecord, ConditionType, EventReason, FetchRecord, PassRecord, Phase, Reason, Status,
    StatusStore,
};

/// Keeps `status` up to date with what the bus says. `source` describes the source.
pub(crate) fn spawn_status(bus: &Bus, store: StatusStore, source: String) {
    let mut events = bus.subscribe();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            // A pass's outcome is recorded by the loop itself, in step with the
            // resources the pass updated (see `record_finished`).
            if !matches!(event, Event::PassFinished { .. }) {
                store.update(|st| record(st, &source, &event));
            }
        }
    });
}

/// Publishes the notifiers' delivery counts whenever they change.
pub(crate) fn spawn_delivery_counts(bus: &Bus, notifier: Notifier) {
    let mut changed = notifier.deliveries_changed();
    let bus = bus.clone();
    tokio::spawn(async move {
        while changed.changed().await.is_ok() {
            bus.publish(Event::Deliveries(notifier.deliveries()));
        }
    });
}

/// Records a finished pass in the status at once, so that a reader never sees its
/// resources applied and the revision not (the other events may trail a little).
pub(crate) fn record_finished(store: &StatusStore, source: &str, event: &Event) {
    store.update(|st| record(st, source, event));
}

/// Writes one event into the status.
pub(crate) fn record(st: &mut Status, source: &str, event: &Event) {
    match event {
        Event::PassStarted { .. } | Event::ResourceChanged { .. } => {}
        Event::PassFinished {
            trigger,
            outcome,
            took,
        } => {
            st.source = source.to_owned();
            record_pass(st, outcome);
            let result = outcome.result();
            *st.passes.entry(result).or_default() += 1;
            st.last_pass = Some(PassRecord {
                trigger: trigger.to_string(),
                result,
                duration_ms: took.as_millis() as u64,
                finished_at: status::now(),
            });
        }
        Event::Deliveries(d) => st.notifiers = d.clone(),
        Event::BackupDone {
            database,
            file,
            bytes,
        } => {
            st.push_event(EventReason::BackedUp, format!("{database} → {file}"));
            st.backups.insert(
                database.name.clone(),
                BackupRecord {
                    time: status::now(),
                    file: Some(file.clone()),
                    bytes: Some(*bytes),
                    error: None,
                },
            );
        }
        Event::BackupFailed { database, error } => {
            st.push_event(EventReason::BackupFailed, format!("{database}: {error}"));
            st.backups.insert(
                database.name.clone(),
                BackupRecord {
                    time: status::now(),
                    file: None,
                    bytes: None,
                    error: Some(error.clone()),
                },
            );
        }
        Event::FetchDone { commit } => {
            st.fetch = Some(FetchRecord {
                time: status::now(),
                commit: Some(commit.clone()),
                error: None,
            });
        }
        Event::FetchFailed { error } => {
            // A lasting failure is one event; it repeats only when it changes.
            let before = st.fetch.as_ref().and_then(|f| f.error.clone());
            st.fetch = Some(FetchRecord {
                time: status::now(),
                commit: None,
                error: Some(error.clone()),
            });
            if before.as_deref() != Some(error.as_str()) {
                st.push_event(EventReason::FetchFailed, error.clone());
            }
        }
        Event::JobSkipped { job } => {
            st.push_event(
                EventReason::JobSkipped,
                format!("{job}: still running when due again; this run is skipped"),
            );
        }
        Event::Certificate { domain, change } => {
            let (reason, message) = certificate_words(domain, change);
            match reason {
                // Told each pass while it lasts: the history keeps one entry.
                EventReason::CertificateExpiring => st.push_event_once(reason, message),
                _ => st.push_event(reason, message),
            }
        }
    }
}

/// A certificate's change as an event of the history and a notification's summary.
fn certificate_words(domain: &str, change: &CertificateChange) -> (EventReason, String) {
    match change {
        CertificateChange::Issued {
            hosts,
            issuer,
            not_after,
        } => (
            EventReason::CertificateIssued,
            format!(
                "certificate of Domain {domain} issued for {} by {issuer}, valid until {not_after}",
                hosts.join(", ")
            ),
        ),
        CertificateChange::RenewalFailed {
            error,
            next_attempt,
        } => (
            EventReason::CertificateRenewalFailed,
            format!(
                "certificate of Domain {domain} could not be issued: {error}; next attempt at \
                 {next_attempt}"
            ),
        ),
        CertificateChange::Expiring { not_after } => (
            EventReason::CertificateExpiring,
            format!("certificate of Domain {domain} expires {not_after} and has not been renewed"),
        ),
    }
}

/// The revisions, the source's conditions and the history after a pass.
fn record_pass(st: &mut Status, outcome: &PassOutcome) {
    match outcome {
        PassOutcome::Synced {
            revision,
            pending,
            changes,
            drift_only,
            ..
        } => {
            st.revision_observed = Some(revision.clone());
            if *pending {
                st.set_phase(&Phase::PlanPending {
                    revision: revision.clone(),
                });
                return;
            }
            st.revision_applied = Some(revision.clone());
            st.last_success = Some(status::now());
            st.set_phase(&Phase::Synced {
                revision: revision.clone(),
            });
            if !changes.is_empty() {
                let (reason, verb) = if *drift_only {
                    (EventReason::DriftCorrected, "repaired")
                } else {
                    (EventReason::Deployed, "deployed")
                };
                st.push_event_once(
                    reason,
                    format!("{verb} {}: {}", revision.short(), changes.join("; ")),
                );
            }
        }
        PassOutcome::Invalid { revision, message } => {
            st.revision_observed = Some(revision.clone());
            st.set_phase(&Phase::Stalled {
                revision: revision.clone(),
                reason: Reason::InvalidRevision,
                message: message.clone(),
            });
            st.push_event_once(
                EventReason::SyncFailed,
                format!("revision {} is invalid: {message}", revision.short()),
            );
        }
        PassOutcome::Failed { revision, .. } => {
            if let Some(r) = revision {
                st.revision_observed = Some(r.clone());
            }
            let lines = outcome.failure_lines();
            let phase = match (outcome.severity(), revision) {
                (Some(Severity::Waiting), _) => Phase::Waiting {
                    message: lines.join("; "),
                },
                (Some(Severity::Stalled(reason)), Some(revision)) => Phase::Stalled {
                    revision: revision.clone(),
                    reason,
                    message: lines.join("\n"),
                },
                _ => Phase::Failed {
                    message: lines.join("; "),
                },
            };
            let failure = !matches!(phase, Phase::Waiting { .. });
            st.set_phase(&phase);
            if failure {
                st.push_event_once(EventReason::SyncFailed, lines.join("; "));
            }
        }
    }
}

/// Turns bus events into notifications.
pub(crate) struct Announcer {
    notifier: Notifier,
    instance: String,
    /// A failure was told and no success since: the next success is a recovery.
    failing: bool,
    /// The revision the host runs.
    live: Option<RevisionId>,
}

impl Announcer {
    /// Starts telling `notifier` what the bus says, from where `status` left off.
    pub(crate) fn spawn(bus: &Bus, notifier: Notifier, instance: String, status: &Status) {
        let mut events: mpsc::UnboundedReceiver<Event> = bus.subscribe();
        let mut announcer = Announcer {
            notifier,
            instance,
            failing: status
                .conditions
                .iter()
                .any(|c| c.kind == ConditionType::Ready && !c.status),
            live: status.revision_applied.clone(),
        };
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                announcer.announce(&event);
            }
        });
    }

    fn note(
        &self,
        event: EventKind,
        revision: Option<&RevisionId>,
        resource: Option<ResourceId>,
        summary: String,
        details: Vec<String>,
    ) {
        self.notifier.send(Notification {
            event,
            instance: self.instance.clone(),
            revision: revision.cloned(),
            resource,
            summary,
            details,
        });
    }

    fn still_live(&self) -> String {
        self.live
            .as_ref()
            .map(|l| format!("; last good revision {} still live", l.short()))
            .unwrap_or_default()
    }

    fn announce(&mut self, event: &Event) {
        match event {
            Event::PassFinished { outcome, .. } => self.announce_pass(outcome),
            Event::ResourceChanged {
                resource,
                revision,
                change,
            } => {
                let (event, summary) = match change {
                    // Told as part of the pass's Deployed notification.
                    ResourceChange::Deployed => return,
                    ResourceChange::Degraded { message } => {
                        (EventKind::Degraded, format!("{resource}: {message}"))
                    }
                    ResourceChange::Recovered => (
                        EventKind::Recovered,
                        format!("{resource}: applied and ready again"),
                    ),
                };
                self.note(
                    event,
                    Some(revision),
                    Some(resource.clone()),
                    summary,
                    Vec::new(),
                );
            }
            Event::FetchFailed { error } => {
                self.failing = true;
                let summary = format!("sync failed: {error}{}", self.still_live());
                self.note(
                    EventKind::SyncFailed,
                    self.live.as_ref(),
                    None,
                    summary,
                    Vec::new(),
                );
            }
            Event::BackupFailed { database, error } => self.note(
                EventKind::BackupFailed,
                None,
                Some(database.clone()),
                format!("backup of {database} failed"),
                vec![error.clone()],
            ),
            Event::Certificate { domain, change } => {
                let event = match change {
                    CertificateChange::Issued { .. } => EventKind::CertificateIssued,
                    CertificateChange::RenewalFailed { .. } => EventKind::CertificateRenewalFailed,
                    CertificateChange::Expiring { .. } => EventKind::CertificateExpiring,
                };
                let (_, summary) = certificate_words(domain, change);
                let resource = ResourceId::new(crate::resource::ResourceKind::Certificate, domain);
                self.note(
                    event,
                    self.live.as_ref(),
                    Some(resource),
                    summary,
                    Vec::new(),
                );
            }
            Event::PassStarted { .. }
            | Event::Deliveries(_)
            | Event::BackupDone { .. }
            | Event::FetchDone { .. }
            | Event::JobSkipped { .. } => {}
        }
    }

    fn announce_pass(&mut self, outcome: &PassOutcome) {
        match outcome {
            PassOutcome::Synced {
                revision,
                changes,
                drift_only,
                pending,
                ..
            } => {
                if std::mem::take(&mut self.failing) {
                    self.note(
                        EventKind::SyncRecovered,
                        Some(revision),
                        None,
                        format!("sync recovered: revision {} is applied", revision.short()),
                        Vec::new(),
                    );
                }
                if !pending {
                    self.live = Some(revision.clone());
                }
                if changes.is_empty() {
                    return;
                }
                let short = revision.short();
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
                self.note(event, Some(revision), None, summary, changes.clone());
            }
            PassOutcome::Invalid { revision, message } => {
                self.failing = true;
                let summary = format!(
                    "sync failed: revision {} is invalid{}",
                    revision.short(),
                    self.still_live()
                );
                let details = message.lines().map(str::to_owned).collect();
                self.note(
                    EventKind::SyncFailed,
                    Some(revision),
                    None,
                    summary,
                    details,
                );
            }
            PassOutcome::Failed { revision, .. } => {
                let summary = match outcome.severity() {
                    // Not a failure: nothing to tell.
                    Some(Severity::Waiting) => return,
                    Some(Severity::Stalled(_)) => {
                        "sync failed: objects berth does not own are in the way; \
                         nothing is retried until the revision changes"
                    }
                    _ => "sync failed: some resources could not be applied; retrying with backoff",
                };
                self.failing = true;
                self.note(
                    EventKind::SyncFailed,
                    revision.as_ref(),
                    None,
                    summary.to_owned(),
                    outcome.failure_lines(),
                );
            }
        }
    }
}
