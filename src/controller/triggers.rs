//! What starts a pass, as one stream of [`Trigger`]s: the source (a debounced directory
//! watcher, or a Git fetch on an interval and on the push webhook), Docker events on
//! managed containers (die, destroy, oom: repaired at once) and the timer the policy
//! sets. Triggers that arrive during a pass coalesce into exactly one more pass.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep_until};
use tracing::warn;

use super::events::{Bus, Event};
use crate::drivers::docker::DockerApi;
use crate::resource::{ResourceId, ResourceKind};
use crate::source::RevisionId;
use crate::source::dir::DirSource;
use crate::source::git::GitSource;

pub use super::events::Trigger;

/// Where the parts that trigger passes send them. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TriggerSender(mpsc::UnboundedSender<Trigger>);

impl TriggerSender {
    /// Asks for a pass; false once the controller has stopped.
    pub fn send(&self, trigger: Trigger) -> bool {
        self.0.send(trigger).is_ok()
    }
}

/// The loop's end of the stream.
#[derive(Debug)]
pub struct Triggers {
    tx: mpsc::UnboundedSender<Trigger>,
    rx: mpsc::UnboundedReceiver<Trigger>,
}

impl Default for Triggers {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Triggers { tx, rx }
    }
}

impl Triggers {
    /// An empty stream.
    pub fn new() -> Triggers {
        Triggers::default()
    }

    /// A sender for the parts that trigger passes.
    pub fn sender(&self) -> TriggerSender {
        TriggerSender(self.tx.clone())
    }

    /// The next pass's trigger: the first to arrive, or [`Trigger::Timer`] at
    /// `deadline` (never, without one). Every trigger already queued is served by the
    /// same pass, so any number of triggers during a pass make exactly one more.
    pub async fn next(&mut self, deadline: Option<Instant>) -> Trigger {
        let first = match deadline {
            Some(at) => tokio::select! {
                t = self.rx.recv() => t,
                () = sleep_until(at) => Some(Trigger::Timer),
            },
            None => self.rx.recv().await,
        };
        // The sender half kept here means the channel never closes.
        let mut trigger = first.unwrap_or(Trigger::Timer);
        while let Ok(t) = self.rx.try_recv() {
            if t.outranks(&trigger) {
                trigger = t;
            }
        }
        trigger
    }
}

/// Watches a directory source: a burst of file changes settles for `debounce`, then
/// makes one trigger. The watcher stops when the returned value is dropped.
pub fn watch_dir(
    dir: &DirSource,
    debounce: Duration,
    to_loop: TriggerSender,
) -> notify::Result<notify::RecommendedWatcher> {
    let (changes_tx, mut changes) = mpsc::unbounded_channel::<()>();
    let watcher = dir.watch(changes_tx)?;
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            tokio::time::sleep(debounce).await;
            while changes.try_recv().is_ok() {}
            if !to_loop.send(Trigger::Source) {
                break;
            }
        }
    });
    Ok(watcher)
}

/// Turns a Swarm manager's events on services and nodes into triggers: a service
/// scaled, updated or removed by hand is put back, a node that went down shows in the
/// status of the services that ran there. A daemon outside a swarm sends none.
pub fn watch_cluster(docker: &dyn DockerApi, to_loop: TriggerSender) {
    let Some(swarm) = docker.swarm() else { return };
    let mut events = swarm.cluster_events();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Ok(e) => {
                    let name = e.labels.get("name").cloned().unwrap_or(e.id);
                    let what = format!("{} {name}", e.action);
                    if !to_loop.send(Trigger::Cluster(what)) {
                        break;
                    }
                }
                Err(e) => {
                    warn!("Swarm events stopped: {e}");
                    break;
                }
            }
        }
    });
}

/// Turns Docker's events on this instance's containers into triggers: one that died,
/// was removed or ran out of memory is repaired at once.
pub fn watch_docker(docker: &dyn DockerApi, instance: &str, to_loop: TriggerSender) {
    let mut events = docker.container_events(&format!("berth.instance={instance}"));
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Ok(e) if matches!(e.action.as_str(), "die" | "destroy" | "oom") => {
                    let kind = e
                        .labels
                        .get(crate::desired::labels::KIND)
                        .and_then(|k| ResourceKind::parse(k))
                        .unwrap_or(ResourceKind::App);
                    let name = e
                        .labels
                        .get(crate::desired::labels::NAME)
                        .cloned()
                        .unwrap_or_default();
                    if !to_loop.send(Trigger::Container(ResourceId::new(kind, name))) {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    warn!("Docker events stopped: {e}");
                    break;
                }
            }
        }
    });
}

/// Fetches a Git source on an interval and whenever the webhook pokes; a new commit
/// triggers a pass. Every fetch is published on the bus (status and notifications
/// report failures); the last good revision stays live through them.
#[derive(Clone)]
pub struct Fetcher {
    git: Arc<GitSource>,
    interval: Duration,
    poke: Arc<Notify>,
    latest: Arc<Mutex<Option<RevisionId>>>,
    bus: Bus,
}

impl Fetcher {
    /// A fetcher of `git` every `interval`, publishing on `bus`.
    pub fn new(git: Arc<GitSource>, interval: Duration, bus: Bus) -> Fetcher {
        Fetcher {
            git,
            interval,
            poke: Arc::new(Notify::new()),
            latest: Arc::default(),
            bus,
        }
    }

    /// What the push webhook pokes to fetch at once.
    pub fn poke(&self) -> Arc<Notify> {
        self.poke.clone()
    }

    /// The newest commit fetched, the one to converge to.
    pub fn latest(&self) -> Option<RevisionId> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Fetches before the first pass; when that fails, `fallback` (the commit applied
    /// before, if the clone has it) stays the one to converge to.
    pub async fn first(&self, fallback: Option<RevisionId>) {
        let commit = self.fetch().await.or(fallback);
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = commit;
    }

    /// Fetches once; publishes the result; the commit when it worked.
    async fn fetch(&self) -> Option<RevisionId> {
        let git = self.git.clone();
        let fetched = match tokio::task::spawn_blocking(move || git.fetch()).await {
            Ok(Ok(f)) => Ok(RevisionId::commit(f.commit)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the fetch was interrupted: {e}")),
        };
        match fetched {
            Ok(commit) => {
                self.bus.publish(Event::FetchDone {
                    commit: commit.clone(),
                });
                Some(commit)
            }
            Err(error) => {
                warn!("{error}; the last good revision stays live");
                self.bus.publish(Event::FetchFailed { error });
                None
            }
        }
    }

    /// Runs the fetches after the first, until the loop stops.
    pub fn spawn(self, to_loop: TriggerSender) {
        tokio::spawn(async move {
            let mut failed_before = false;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(self.interval) => {}
                    () = self.poke.notified() => {}
                }
                let Some(commit) = self.fetch().await else {
                    failed_before = true;
                    continue;
                };
                let changed = {
                    let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
                    let changed = latest.as_ref() != Some(&commit);
                    *latest = Some(commit);
                    changed
                };
                // A recovery from a failed fetch also earns a pass, which reports it.
                if (changed || failed_before) && !to_loop.send(Trigger::Source) {
                    break;
                }
                failed_before = false;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> ResourceId {
        ResourceId::new(ResourceKind::App, "web")
    }

    #[tokio::test(start_paused = true)]
    async fn triggers_during_a_pass_make_exactly_one_more_pass() {
        let mut triggers = Triggers::new();
        let send = triggers.sender();
        // A pass runs; meanwhile a container dies, files change twice, the timer is due.
        assert!(send.send(Trigger::Container(web())));
        assert!(send.send(Trigger::Source));
        assert!(send.send(Trigger::Source));
        assert!(send.send(Trigger::Timer));
        let soon = Instant::now() + Duration::from_secs(60);
        // One pass for all of them, named after the source change…
        assert_eq!(triggers.next(Some(soon)).await, Trigger::Source);
        // …and none after it: the next is the timer, at its time.
        let before = Instant::now();
        assert_eq!(triggers.next(Some(soon)).await, Trigger::Timer);
        assert_eq!(Instant::now() - before, Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_comes_before_the_deadline_and_none_means_wait() {
        let mut triggers = Triggers::new();
        let send = triggers.sender();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            send.send(Trigger::Container(web()));
        });
        let started = Instant::now();
        assert_eq!(
            triggers
                .next(Some(started + Duration::from_secs(300)))
                .await,
            Trigger::Container(web())
        );
        assert_eq!(Instant::now() - started, Duration::from_secs(5));
        // Without a deadline (stalled), only a trigger ends the wait.
        let waited = tokio::time::timeout(Duration::from_secs(3600), triggers.next(None)).await;
        assert!(waited.is_err(), "no timer while stalled");
        assert_eq!(Trigger::Container(web()).to_string(), "Container(App/web)");
    }
}
