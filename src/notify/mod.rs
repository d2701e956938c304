//! Notifications: events → Slack, Discord and generic webhooks, through a bounded queue.
//!
//! The controller calls [`Notifier::send`], which never waits and never fails: each
//! target decides (its `events`, deduplication) and queues the message; a worker per
//! target delivers it with retries. A failing webhook never blocks a reconcile.

mod dedup;
mod deliver;
mod format;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::manifest::model::{EventKind, NotifierSpec, NotifierType};
use crate::resource::ResourceId;
use crate::source::RevisionId;
use crate::state::secrets::{SecretError, SecretStore};

pub use format::signature;

use dedup::{Dedup, Verdict};
use deliver::{Job, Pending, Stats, lock};
use format::Message;

/// One thing worth telling people. Its text must already be free of secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// What happened.
    pub event: EventKind,
    /// The berth instance it happened on (the host's name).
    pub instance: String,
    /// The revision concerned; messages show 7 digits of a Git commit id and 12
    /// characters of a content hash.
    pub revision: Option<RevisionId>,
    /// The resource concerned, if one: `Degraded` and `Recovered` are paired per resource.
    pub resource: Option<ResourceId>,
    /// One line, such as `deployed 3f2a1c0: app blog updated (image ghost:5.1 → ghost:5.2)`.
    pub summary: String,
    /// One line per resource or error, such as
    /// ``examples/app.yaml:3:5: App/web: unknown field `imgae` ``.
    pub details: Vec<String>,
}

/// Where notifications go: one per `Notifier` resource, resolved by the caller.
#[derive(Clone)]
pub struct Target {
    /// The `Notifier` resource's name.
    pub name: String,
    /// The format the URL expects.
    pub kind: NotifierType,
    /// The webhook URL. It carries a token: never log or show it.
    pub url: String,
    /// The events sent to it.
    pub events: Vec<EventKind>,
    /// A failure that lasts is told again at most this often.
    pub repeat_after: Duration,
    /// The key bodies are signed with (`X-Berth-Signature-256`), if any.
    pub signing_key: Option<Vec<u8>>,
}

impl Target {
    /// The target of `Notifier` resource `name`, its URL and signing key read from `secrets`.
    pub fn from_spec(
        name: &str,
        spec: &NotifierSpec,
        secrets: &SecretStore,
    ) -> Result<Target, NotifyError> {
        let url = secrets
            .get(&spec.url_secret)
            .map_err(|source| NotifyError::ReadUrl {
                notifier: name.to_owned(),
                source,
            })?;
        check_url(url.expose()).map_err(|reason| NotifyError::InvalidUrl {
            notifier: name.to_owned(),
            secret: spec.url_secret.clone(),
            reason,
        })?;
        let signing_key = match &spec.signing_secret {
            Some(secret) => Some(
                secrets
                    .get(secret)
                    .map_err(|source| NotifyError::ReadSigningKey {
                        notifier: name.to_owned(),
                        source,
                    })?
                    .expose()
                    .as_bytes()
                    .to_vec(),
            ),
            None => None,
        };
        Ok(Target {
            name: name.to_owned(),
            kind: spec.kind,
            url: url.expose().to_owned(),
            events: spec.events.clone(),
            repeat_after: spec.repeat_after.get(),
            signing_key,
        })
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &"<redacted>")
            .field("events", &self.events)
            .field("repeat_after", &self.repeat_after)
            .field("signed", &self.signing_key.is_some())
            .finish()
    }
}

/// Checks that `url` is an absolute http(s) URL. The reason never quotes it (URL parse
/// errors do not quote their input either).
fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "the scheme is `{}`, not http or https",
            parsed.scheme()
        ));
    }
    if parsed.host().is_none() {
        return Err("it has no host".to_owned());
    }
    Ok(())
}

/// Why a notifier cannot be set up. Never shows a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The secret holding the URL could not be read.
    #[error("failed to read the URL of notifier `{notifier}`: {source}")]
    ReadUrl {
        /// The `Notifier` resource.
        notifier: String,
        /// Why (names the secret).
        source: SecretError,
    },
    /// The secret holding the URL does not hold an http(s) URL.
    #[error(
        "notifier `{notifier}`: secret `{secret}` does not hold a valid webhook URL ({reason}); \
         write the full https://… URL to it"
    )]
    InvalidUrl {
        /// The `Notifier` resource.
        notifier: String,
        /// The secret's name.
        secret: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The signing secret could not be read.
    #[error("failed to read the signing secret of notifier `{notifier}`: {source}")]
    ReadSigningKey {
        /// The `Notifier` resource.
        notifier: String,
        /// Why (names the secret).
        source: SecretError,
    },
    /// No target of that name is set up (it is not declared, or its URL secret is
    /// missing).
    #[error("notifier `{0}` is not set up: it is not declared or its URL secret is missing")]
    NoTarget(String),
    /// The target's queue is full.
    #[error("notifier `{0}` has too many messages waiting; this one was dropped")]
    QueueFull(String),
}

/// Delivery settings: the defaults suit production; tests shrink them.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Messages waiting per target; beyond, new ones are dropped. Default: 256.
    pub queue: usize,
    /// Tries per message, the first and rate-limited ones included. Default: 6.
    pub attempts: u32,
    /// The wait before the first retry, doubled after each. Default: 1 s.
    pub first_retry: Duration,
    /// The longest wait between tries, a 429's `retry_after` included. Default: 5 min.
    pub max_retry: Duration,
    /// The longest one request may take. Default: 10 s.
    pub timeout: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            queue: 256,
            attempts: 6,
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
        }
    }
}

/// How deliveries to one target went since berth started.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The `Notifier` resource.
    pub notifier: String,
    /// Messages accepted by the service.
    pub sent: u64,
    /// Messages given up on.
    pub failed: u64,
    /// Messages dropped because the queue was full.
    pub dropped: u64,
    /// Why the last failed message failed (no URL in it).
    pub last_error: Option<String>,
}

/// Sends notifications to the current targets. A cheap handle: clones share the queues.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    options: DeliveryOptions,
    http: Result<reqwest::Client, String>,
    runtime: tokio::runtime::Handle,
    targets: Mutex<BTreeMap<String, Slot>>,
    pending: Arc<Pending>,
    /// Ticks whenever a delivery is counted (sent, failed) or a message dropped.
    counted: Arc<tokio::sync::watch::Sender<u64>>,
}

/// A target with its memory, its queue and its counters.
struct Slot {
    target: Arc<Target>,
    dedup: Dedup,
    queue: mpsc::Sender<Job>,
    stats: Arc<Mutex<Stats>>,
}

impl Notifier {
    /// A notifier with no targets yet. Must be called inside a Tokio runtime, which runs
    /// the delivery workers.
    pub fn start(options: DeliveryOptions) -> Notifier {
        let http = reqwest::Client::builder()
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .timeout(options.timeout)
            // A redirected POST would become a GET; webhook URLs do not move.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string());
        if let Err(e) = &http {
            warn!("notifications are disabled: failed to set up the HTTP client: {e}");
        }
        Notifier {
            inner: Arc::new(Inner {
                options,
                http,
                runtime: tokio::runtime::Handle::current(),
                targets: Mutex::new(BTreeMap::new()),
                pending: Arc::new(Pending::default()),
                counted: Arc::new(tokio::sync::watch::Sender::new(0)),
            }),
        }
    }

    /// Replaces the targets (after each valid revision). A target whose name stays keeps
    /// its queue, counters and what it has told; a removed one delivers what it holds.
    pub fn set_targets(&self, targets: Vec<Target>) {
        let mut slots = lock(&self.inner.targets);
        let mut kept = BTreeMap::new();
        for target in targets {
            let target = Arc::new(target);
            let slot = match kept
                .remove(&target.name)
                .or_else(|| slots.remove(&target.name))
            {
                Some(slot) => Slot { target, ..slot },
                None => self.new_slot(target),
            };
            kept.insert(slot.target.name.clone(), slot);
        }
        *slots = kept;
    }

    fn new_slot(&self, target: Arc<Target>) -> Slot {
        let (queue, jobs) = mpsc::channel(self.inner.options.queue.max(1));
        let stats = Arc::new(Mutex::new(Stats::default()));
        self.inner.runtime.spawn(deliver::run_worker(
            jobs,
            self.inner.http.clone(),
            self.inner.options.clone(),
            stats.clone(),
            self.inner.pending.clone(),
            self.inner.counted.clone(),
        ));
        Slot {
            target,
            dedup: Dedup::default(),
            queue,
            stats,
        }
    }

    /// Queues `n` for every target that wants it and has not told it already. Never
    /// waits: when a target's queue is full the message is dropped for it, with a warning.
    pub fn send(&self, n: Notification) {
        let now = tokio::time::Instant::now();
        let at = SystemTime::now();
        let event = format::event_name(n.event);
        let n = Arc::new(n);
        let mut slots = lock(&self.inner.targets);
        for (name, slot) in slots.iter_mut() {
            // Deduplication sees every event, so a target that only wants recoveries
            // still gets them.
            let Verdict::Send { repeat } = slot.dedup.admit(&n, slot.target.repeat_after, now)
            else {
                debug!(notifier = %name, event, "notification already told; not sent again");
                continue;
            };
            if !slot.target.events.contains(&n.event) {
                continue;
            }
            let job = Job {
                target: slot.target.clone(),
                message: Message {
                    notification: n.clone(),
                    at,
                    repeat,
                },
            };
            self.inner.pending.add();
            if slot.queue.try_send(job).is_err() {
                self.inner.pending.done();
                lock(&slot.stats).dropped += 1;
                self.inner.counted.send_modify(|n| *n += 1);
                warn!(notifier = %name, event, "notification queue is full; notification dropped");
            }
        }
    }

    /// Queues `n` for target `name` only, whatever events it subscribes to and what it
    /// has told (a workflow's `notify` node). Never waits.
    pub fn send_to(&self, name: &str, n: Notification) -> Result<(), NotifyError> {
        let mut slots = lock(&self.inner.targets);
        let slot = slots
            .get_mut(name)
            .ok_or_else(|| NotifyError::NoTarget(name.to_owned()))?;
        let job = Job {
            target: slot.target.clone(),
            message: Message {
                notification: Arc::new(n),
                at: SystemTime::now(),
                repeat: false,
            },
        };
        self.inner.pending.add();
        if slot.queue.try_send(job).is_err() {
            self.inner.pending.done();
            lock(&slot.stats).dropped += 1;
            self.inner.counted.send_modify(|n| *n += 1);
            return Err(NotifyError::QueueFull(name.to_owned()));
        }
        Ok(())
    }

    /// How deliveries went, per current target, by name.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.inner.targets)
            .iter()
            .map(|(name, slot)| {
                let stats = lock(&slot.stats).clone();
                Delivery {
                    notifier: name.clone(),
                    sent: stats.sent,
                    failed: stats.failed,
                    dropped: stats.dropped,
                    last_error: stats.last_error,
                }
            })
            .collect()
    }

    /// Changes whenever [`Notifier::deliveries`] does: a message delivered, given up
    /// on or dropped. For whoever keeps the counts (status), instead of polling.
    pub fn deliveries_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.counted.subscribe()
    }

    /// Waits until every queued message is delivered or given up, at most `timeout`
    /// (at shutdown). False if messages were still pending.
    pub async fn flush(&self, timeout: Duration) -> bool {
        self.inner.pending.wait_idle(timeout).await
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let targets = lock(&self.inner.targets);
        f.debug_struct("Notifier")
            .field("targets", &targets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}
