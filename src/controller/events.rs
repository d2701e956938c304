//! The in-process event bus: what the controller's parts tell each other — passes
//! started and finished, resources that degraded or recovered, deliveries counted,
//! backups and fetches done or failed. The status store and the notifications
//! subscribe; each subscriber gets every event, in the order published.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::policy::PassOutcome;
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
    /// Something happened to a Domain's certificate (berth's ACME client).
    Certificate {
        /// The Domain.
        domain: String,
        /// What.
        change: CertificateChange,
    },
}

/// What happened to a Domain's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateChange {
    /// It was issued (or renewed) and is served.
    Issued {
        /// Its hosts.
        hosts: Vec<String>,
        /// Its issuer.
        issuer: String,
        /// Valid until (RFC 3339).
        not_after: String,
    },
    /// An order failed: the first failure since the last success (the next ones are in
    /// status, not told again).
    RenewalFailed {
        /// Why.
        error: String,
        /// When it is tried again (RFC 3339).
        next_attempt: String,
    },
    /// It expires within 14 days and has not been renewed.
    Expiring {
        /// Valid until (RFC 3339).
        not_after: String,
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
    /// An app's containers were created or replaced and are ready.
    Deployed,
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

/// What started a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The first pass.
    Start,
    /// The source changed (files, or a fetch found a new commit).
    Source,
    /// A managed container of this resource died or vanished.
    Container(ResourceId),
    /// Something changed in the swarm: a service (updated, scaled or removed, by hand
    /// or by Swarm), a node (down, up, drained). Names what, as `service web`.
    Cluster(String),
    /// The timer the policy set: resync, retry or a look at what was waited for.
    Timer,
}

impl Trigger {
    /// Of several triggers served by one pass, the one to name: a source change says
    /// the most, a timer the least.
    pub(crate) fn outranks(&self, other: &Trigger) -> bool {
        let rank = |t: &Trigger| match t {
            Trigger::Timer => 0,
            Trigger::Container(_) | Trigger::Cluster(_) => 1,
            Trigger::Start => 2,
            Trigger::Source => 3,
        };
        rank(self) > rank(other)
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Start => f.write_str("Start"),
            Trigger::Source => f.write_str("Source"),
            Trigger::Container(r) => write!(f, "Container({r})"),
            Trigger::Cluster(what) => write!(f, "Cluster({what})"),
            Trigger::Timer => f.write_str("Timer"),
        }
    }
}

/// A job's id: what it is for and the resource it belongs to, such as
/// `backup/Database/blog-db`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId {
    purpose: &'static str,
    resource: ResourceId,
}

impl JobId {
    /// The scheduled backup of `database`.
    pub fn backup(database: ResourceId) -> JobId {
        JobId::new("backup", database)
    }

    /// The job of `resource` for `purpose` (`backup`, `workflow`, `renew`…).
    pub fn new(purpose: &'static str, resource: ResourceId) -> JobId {
        JobId { purpose, resource }
    }

    /// What it is for.
    pub fn purpose(&self) -> &'static str {
        self.purpose
    }

    /// The resource it belongs to.
    pub fn resource(&self) -> &ResourceId {
        &self.resource
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.purpose, self.resource)
    }
}
