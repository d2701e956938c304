//! Loop tests: the controller against the in-memory Docker daemon, with paused time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};

use super::backoff::Backoff;
use super::events::Event;
use super::policy::{FailureKind, PassOutcome, Policy};
use super::triggers::{Trigger, TriggerSender};
use super::{Controller, ControllerOptions};
use crate::apply::ApplyOptions;
use crate::drivers::docker::DockerApi;
use crate::drivers::memory::MemoryDocker;
use crate::notify::{DeliveryOptions, Notifier};
use crate::resource::{ResourceId, ResourceKind};
use crate::source::Source;
use crate::source::dir::DirSource;
use crate::state::StateDir;
use crate::status::{ConditionType, Reason, Status, StatusStore};

const SETTINGS: &str = "apiVersion: berth/v1\nkind: Settings\nmetadata: {name: host}\n\
                        spec:\n  network: t-net\n  resync: 10m\n  proxy: {kind: none}\n";

fn app(name: &str, image: &str) -> String {
    format!(
        "apiVersion: berth/v1\nkind: App\nmetadata: {{name: {name}}}\nspec:\n  image: {image}\n"
    )
}

/// A controller following a directory, on an in-memory daemon.
struct Loop {
    manifests: tempfile::TempDir,
    _state: tempfile::TempDir,
    docker: Arc<MemoryDocker>,
    status: StatusStore,
    events: mpsc::UnboundedReceiver<Event>,
    poke: TriggerSender,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Loop {
    /// [`Loop::web`], once its first pass has applied.
    async fn web_synced(docker: MemoryDocker) -> Loop {
        let mut l = Loop::web(docker);
        let (_, first) = l.finished().await;
        assert!(synced(&first), "{first:?}");
        l
    }

    /// A loop over the settings and one app `web` of image `nginx:1`.
    fn web(docker: MemoryDocker) -> Loop {
        Loop::start(
            &[
                ("settings.yaml", SETTINGS.into()),
                ("web.yaml", app("web", "nginx:1")),
            ],
            docker,
        )
    }

    fn start(files: &[(&str, String)], docker: MemoryDocker) -> Loop {
        let manifests = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(manifests.path().join(name), text).unwrap();
        }
        let docker = Arc::new(docker);
        let status = StatusStore::in_memory(Status::default());
        let options = ControllerOptions {
            instance: "t".into(),
            apply: ApplyOptions {
                instance: "t".into(),
                ready_timeout: Duration::from_secs(5),
                ..ApplyOptions::default()
            },
            // Long: passes here are started by the test, not by the file watcher.
            debounce: Duration::from_secs(24 * 3600),
            fetch_interval: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(60),
            policy: None,
        };
        let dyn_docker: Arc<dyn DockerApi> = docker.clone();
        let controller = Controller::new(
            Source::Dir(DirSource::new(manifests.path())),
            StateDir::new(state.path(), "t"),
            dyn_docker,
            options,
            status.clone(),
            Notifier::start(DeliveryOptions::default()),
        )
        .with_policy(Policy::new(Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(300),
            Duration::from_secs(600),
        )));
        let events = controller.bus().subscribe();
        let poke = controller.trigger_sender();
        let (stop, stopped) = watch::channel(false);
        // `spawn_local`: apply's futures are not provably `Send` in a generic spawn.
        let task = tokio::task::spawn_local(async move {
            controller.run(stopped).await.unwrap();
        });
        Loop {
            manifests,
            _state: state,
            docker,
            status,
            events,
            poke,
            stop,
            task,
        }
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.manifests.path().join(name), text).unwrap();
    }

    /// The next event, however long (virtual) time takes to bring it.
    async fn event(&mut self) -> Event {
        timeout(Duration::from_secs(7 * 24 * 3600), self.events.recv())
            .await
            .expect("an event within a week")
            .expect("the bus is open")
    }

    async fn started(&mut self) -> (Trigger, Instant) {
        loop {
            if let Event::PassStarted { trigger } = self.event().await {
                return (trigger, Instant::now());
            }
        }
    }

    async fn finished(&mut self) -> (Trigger, PassOutcome) {
        loop {
            if let Event::PassFinished {
                trigger, outcome, ..
            } = self.event().await
            {
                return (trigger, outcome);
            }
        }
    }

    /// Whether no pass starts within `within`.
    async fn quiet_for(&mut self, within: Duration) -> bool {
        let events = &mut self.events;
        timeout(within, async {
            while let Some(e) = events.recv().await {
                if matches!(e, Event::PassStarted { .. }) {
                    return;
                }
            }
        })
        .await
        .is_err()
    }

    /// Waits until the status subscriber has caught up with `check`.
    async fn status_until(&self, what: &str, check: impl Fn(&Status) -> bool) {
        for _ in 0..1000 {
            if check(&self.status.snapshot()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}: {:#?}", self.status.snapshot());
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
    }
}

fn daemon() -> MemoryDocker {
    let d = MemoryDocker::new();
    d.add_image("nginx:1");
    d
}

fn names(d: &MemoryDocker) -> Vec<String> {
    d.containers().into_iter().map(|c| c.name).collect()
}

/// Runs a loop test on one thread: the controller's future is not `Send`.
async fn one_thread<F: std::future::Future>(test: F) -> F::Output {
    tokio::task::LocalSet::new().run_until(test).await
}

fn synced(o: &PassOutcome) -> bool {
    matches!(o, PassOutcome::Synced { .. })
}

#[tokio::test(start_paused = true)]
async fn triggers_during_a_pass_give_exactly_one_more_pass() {
    one_thread(async {
        let mut l = Loop::web(daemon());
        assert_eq!(l.started().await.0, Trigger::Start);
        // While the first pass applies, five triggers come in.
        let web = ResourceId::new(ResourceKind::App, "web");
        for _ in 0..4 {
            assert!(l.poke.send(Trigger::Container(web.clone())));
        }
        assert!(l.poke.send(Trigger::Source));
        let (_, first) = l.finished().await;
        assert!(synced(&first), "{first:?}");
        assert_eq!(names(&l.docker), ["web"]);
        // One more pass serves them all…
        let (trigger, _) = l.started().await;
        assert_eq!(trigger, Trigger::Source);
        let (_, second) = l.finished().await;
        assert!(synced(&second), "{second:?}");
        // …and the next is the resync timer, ten minutes on.
        let after = Instant::now();
        let (trigger, at) = l.started().await;
        assert_eq!(trigger, Trigger::Timer);
        assert!(at - after >= Duration::from_secs(599), "{:?}", at - after);
        assert_eq!(l.docker.created(), 1, "nothing was created twice");
        l.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn transient_failures_back_off_and_a_success_resets_the_backoff() {
    one_thread(async {
        let mut l = Loop::web_synced(daemon()).await;
        // The daemon goes away: each retry waits about twice as long (jitter: ×0.5 to ×1).
        l.docker.set_unreachable(true);
        assert!(l.poke.send(Trigger::Source));
        let mut gaps = Vec::new();
        for _ in 0..5 {
            let (_, outcome) = l.finished().await;
            assert!(
                matches!(&outcome, PassOutcome::Failed { failures, .. }
                if failures.iter().all(|f| f.kind == FailureKind::Transient)),
                "{outcome:?}"
            );
            let done = Instant::now();
            let (trigger, at) = l.started().await;
            assert_eq!(trigger, Trigger::Timer);
            gaps.push(at - done);
        }
        for (n, gap) in gaps.iter().enumerate().skip(1) {
            let full = Duration::from_secs(1 << n);
            assert!(
                *gap >= full / 2 && *gap <= full,
                "retry {n} after {gap:?}: {gaps:?}"
            );
        }
        assert!(gaps[4] > gaps[1], "{gaps:?}");
        l.status_until("Ready is false, SyncFailed", |st| {
            st.conditions.iter().any(|c| {
                c.kind == ConditionType::Ready && !c.status && c.reason == Reason::SyncFailed
            })
        })
        .await;
        // It comes back: the pass syncs, and the next failure starts from the first step.
        l.docker.set_unreachable(false);
        loop {
            let (_, outcome) = l.finished().await;
            if synced(&outcome) {
                break;
            }
        }
        l.docker.set_unreachable(true);
        assert!(l.poke.send(Trigger::Source));
        l.finished().await;
        let done = Instant::now();
        let (_, at) = l.started().await;
        assert!(at - done <= Duration::from_secs(1), "{:?}", at - done);
        l.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_invalid_revision_stalls_until_the_revision_changes() {
    one_thread(async {
        let bad =
            "apiVersion: berth/v1\nkind: App\nmetadata: {name: web}\nspec:\n  imgae: nginx:1\n";
        let mut l = Loop::start(
            &[("settings.yaml", SETTINGS.into()), ("web.yaml", bad.into())],
            daemon(),
        );
        let (_, first) = l.finished().await;
        assert!(matches!(first, PassOutcome::Invalid { .. }), "{first:?}");
        // Nothing retries it: not the timer, not a trigger, not a day.
        assert!(l.poke.send(Trigger::Timer));
        assert!(l.poke.send(Trigger::Container(ResourceId::new(
            ResourceKind::App,
            "web"
        ))));
        assert!(l.quiet_for(Duration::from_secs(24 * 3600)).await);
        assert!(l.docker.containers().is_empty());
        l.status_until("Stalled on the invalid revision", |st| {
            st.conditions.iter().any(|c| {
                c.kind == ConditionType::Stalled && c.status && c.reason == Reason::InvalidRevision
            })
        })
        .await;
        // A new revision is tried at once.
        l.write("web.yaml", &app("web", "nginx:1"));
        assert!(l.poke.send(Trigger::Source));
        let (_, fixed) = l.finished().await;
        assert!(synced(&fixed), "{fixed:?}");
        assert_eq!(names(&l.docker), ["web"]);
        l.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_conflict_with_an_object_berth_does_not_own_stalls() {
    one_thread(async {
        let d = daemon();
        d.add_foreign_container("web", "someone/else:1");
        let mut l = Loop::web(d);
        let (_, first) = l.finished().await;
        assert!(
            matches!(&first, PassOutcome::Failed { failures, .. }
            if failures.iter().any(|f| f.kind == FailureKind::Conflict)),
            "{first:?}"
        );
        // Not retried with backoff, nor by the resync timer.
        assert!(l.quiet_for(Duration::from_secs(24 * 3600)).await);
        l.status_until("App/web says Conflict and Stalled", |st| {
            let web = &st.resources[&ResourceId::new(ResourceKind::App, "web")];
            web.condition(ConditionType::Stalled)
                .is_some_and(|c| c.status && c.reason == Reason::Conflict)
                && st
                    .conditions
                    .iter()
                    .any(|c| c.kind == ConditionType::Stalled && c.status)
        })
        .await;
        // The app renamed in a new revision: tried again, and applied.
        l.write("web.yaml", &app("site", "nginx:1"));
        assert!(l.poke.send(Trigger::Source));
        let (_, renamed) = l.finished().await;
        assert!(synced(&renamed), "{renamed:?}");
        assert_eq!(names(&l.docker), ["site", "web"]);
        l.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_container_removed_by_hand_is_repaired_on_its_docker_event() {
    one_thread(async {
    let mut l = Loop::web_synced(daemon()).await;
    assert_eq!(l.docker.created(), 1);
    assert!(l.docker.remove_by_hand("web"));
    // The `die`/`destroy` events start a pass long before the resync.
    let before = Instant::now();
    let (trigger, at) = l.started().await;
    assert_eq!(trigger, Trigger::Container(ResourceId::new(ResourceKind::App, "web")));
    assert!(at - before < Duration::from_secs(1));
    let (_, repaired) = l.finished().await;
    assert!(
        matches!(&repaired, PassOutcome::Synced { changes, drift_only: true, .. } if changes.len() == 1),
        "{repaired:?}"
    );
    assert_eq!(names(&l.docker), ["web"]);
    assert_eq!(l.docker.created(), 2);
    // The plan of the last pass is kept for `/api/v1/plan`.
    let plan = l.status.plan().expect("a plan");
    assert_eq!(Some(&plan.revision), repaired.revision());
    assert!(plan.plan.actions.iter().any(|a| a.name == "web"));
    l.stop().await;
        })
        .await;
}

/// `docker rm -f` of an app stayed unrepaired through three resyncs while the newest
/// revision was invalid, and the app said Ready: the last good revision is kept
/// converged, and the source stays Stalled on the invalid one.
#[tokio::test(start_paused = true)]
async fn drift_is_repaired_while_the_revision_is_invalid() {
    one_thread(async {
        let mut l = Loop::web_synced(daemon()).await;
        let bad =
            "apiVersion: berth/v1\nkind: App\nmetadata: {name: web}\nspec:\n  imgae: nginx:2\n";
        l.write("web.yaml", bad);
        assert!(l.poke.send(Trigger::Source));
        let (_, invalid) = l.finished().await;
        let PassOutcome::Invalid { revision, message } = invalid else {
            panic!("the revision is invalid: {invalid:?}");
        };
        let stalled_on_it = |st: &Status| {
            st.conditions.iter().any(|c| {
                c.kind == ConditionType::Stalled
                    && c.status
                    && c.reason == Reason::InvalidRevision
                    && c.message.contains("imgae")
            }) && st.revision_observed.as_ref() == Some(&revision)
        };
        l.status_until("Stalled on the invalid revision", stalled_on_it)
            .await;
        assert!(message.contains("imgae"), "{message}");

        for round in 1..=3 {
            assert!(l.docker.remove_by_hand("web"));
            let before = Instant::now();
            while names(&l.docker).is_empty() {
                assert!(
                    Instant::now() - before < Duration::from_secs(5),
                    "round {round}: web is not repaired"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(names(&l.docker), ["web"], "round {round}");
            assert_eq!(l.docker.created(), 1 + round, "round {round}");
            // The last good spec, not the invalid one's.
            let web = &l.docker.containers()[0];
            assert_eq!(web.image, "nginx:1", "round {round}");
        }
        // The resync timer keeps it converged too, and the source stays Stalled.
        assert!(l.poke.send(Trigger::Timer));
        l.status_until("still Stalled on the invalid revision", stalled_on_it)
            .await;
        l.status_until("App/web reports its real state", |st| {
            st.resources[&ResourceId::new(ResourceKind::App, "web")]
                .condition(ConditionType::Ready)
                .is_some_and(|c| c.status)
        })
        .await;
        // No pass of the invalid revision ran again.
        assert!(l.quiet_for(Duration::from_secs(24 * 3600)).await);
        l.stop().await;
    })
    .await;
}
