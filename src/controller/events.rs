//! The in-process event bus: what the controller's parts tell each other — passes
//! started and finished, resources that degraded or recovered, deliveries counted,
//! backups and fetches done or failed. The status store and the notifications
//! subscribe; each subscriber gets every event, in the order published.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::policy::PassOutcome;
use super::schedule::JobId;
use super::triggers::Trigger;
use crate::notify::Delivery;
use crate::resource::ResourceId;
use crate::source::RevisionId;

/// One thing that happened in the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A pass started.
    PassStarted {
        /// What started it.
        trigger: Trigger,
    },
    /// A pass finished.
    PassFinished {
        /// What started it.
        trigger: Trigger,
        /// How it ended.
        outcome: PassOutcome,
        /// How long it took.
        took: Duration,
    },
    /// A resource's health changed in a pass.
    ResourceChanged {
        /// The resource.
        resource: ResourceId,
        /// The revision applied.
        revision: RevisionId,
        /// How it changed.
        change: ResourceChange,
    },
    /// The notifiers' delivery counts changed.
    Deliveries(Vec<Delivery>),
    /// A scheduled backup was written.
    BackupDone {
        /// The database.
        database: ResourceId,
        /// The dump.
        file: String,
        /// Its size.
        bytes: u64,
    },
    /// A scheduled backup failed.
    BackupFailed {
        /// The database.
        database: ResourceId,
        /// Why.
        error: String,
    },
    /// A fetch of the Git source worked.
    FetchDone {
        /// The commit the followed ref points to.
        commit: RevisionId,
    },
    /// A fetch of the Git source failed (the last good revision stays live).
    FetchFailed {
        /// Why.
        error: String,
    },
    /// A scheduled job was due while its last run was still going: this run is skipped.
    JobSkipped {
        /// The job.
        job: JobId,
    },
}

/// How a resource's health changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceChange {
    /// Its change failed (an update that never got healthy leaves the old one serving).
    Degraded {
        /// Why.
        message: String,
    },
    /// It applied again after being degraded.
    Recovered,
}

/// The bus: cheap to clone, every clone publishes to the same subscribers.
#[derive(Debug, Clone, Default)]
pub struct Bus {
    subscribers: Arc<Mutex<Vec<mpsc::UnboundedSender<Event>>>>,
}

impl Bus {
    /// A bus with no subscribers.
    pub fn new() -> Bus {
        Bus::default()
    }

    /// Sends `event` to every subscriber; never waits. Subscribers that are gone are
    /// forgotten.
    pub fn publish(&self, event: Event) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|s| s.send(event.clone()).is_ok());
    }

    /// Every event published from now on, in order. Unbounded: a subscriber must keep up.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_subscriber_gets_every_event_in_order() {
        let bus = Bus::new();
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        let events = [
            Event::FetchFailed {
                error: "no route".into(),
            },
            Event::FetchDone {
                commit: RevisionId::commit("3f2a1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a49"),
            },
            Event::Deliveries(vec![]),
        ];
        for e in &events {
            bus.publish(e.clone());
        }
        for rx in [&mut a, &mut b] {
            for e in &events {
                assert_eq!(rx.recv().await.as_ref(), Some(e));
            }
        }
        // A subscriber that left does not stop the others.
        drop(a);
        bus.publish(Event::Deliveries(vec![]));
        assert_eq!(b.recv().await, Some(Event::Deliveries(vec![])));
        // Late subscribers see only what follows.
        let mut late = bus.subscribe();
        bus.publish(Event::FetchFailed { error: "x".into() });
        assert_eq!(
            late.recv().await,
            Some(Event::FetchFailed { error: "x".into() })
        );
    }
}
