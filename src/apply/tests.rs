//! Apply against the in-memory daemon: phases in order, one failure sparing unrelated
//! actions, start-first updates that keep the old replica serving, and a failed write
//! into the state dir stopping the pass before anything uses it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{ApplyOptions, Progress, Report, Status};
use crate::drivers::docker::DockerApi;
use crate::drivers::memory::MemoryDocker;
use crate::plan::Target;
use crate::reconcile::{self, PassOptions};
use crate::state::StateDir;

struct Host {
    docker: Arc<MemoryDocker>,
    manifests: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let docker = Arc::new(MemoryDocker::new());
        for image in ["ok:1", "ok:2", "broken:1", "postgres:16"] {
            docker.add_image(image);
        }
        Host {
            docker,
            manifests: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, apps: &[(&str, &str)]) {
        let docs: Vec<String> = apps
            .iter()
            .map(|(name, spec)| {
                format!(
                    "apiVersion: berth/v1\nkind: App\nmetadata: {{name: {name}}}\nspec:\n{spec}"
                )
            })
            .collect();
        std::fs::write(self.manifests.path().join("apps.yaml"), docs.join("---\n")).unwrap();
    }

    /// One pass, as `berth apply` runs it; returns the report and the progress seen.
    async fn apply(&self) -> (Report, Vec<String>) {
        self.apply_after(|| {}).await
    }

    /// A pass with `meanwhile` run between planning and applying.
    async fn apply_after(&self, meanwhile: impl FnOnce()) -> (Report, Vec<String>) {
        let manifests = crate::manifest::load_dir(self.manifests.path()).expect("valid");
        let state = StateDir::new(self.state.path(), "test");
        let options = PassOptions {
            instance: "test".into(),
            apply: true,
            no_prune: false,
        };
        let docker: Arc<dyn DockerApi> = self.docker.clone();
        let prepared =
            reconcile::prepare(&manifests, "r1", &state, Some(docker.as_ref()), &options)
                .await
                .expect("planned");
        meanwhile();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let apply = ApplyOptions {
            instance: "test".into(),
            ready_timeout: Duration::from_secs(5),
            ..ApplyOptions::default()
        };
        let report = reconcile::execute(
            &prepared,
            &state,
            docker,
            apply,
            Arc::new(move |p| {
                if let Progress::Started { target, name } = p {
                    log.lock().unwrap().push(format!("{target} {name}"));
                }
            }),
        )
        .await;
        let seen = seen.lock().unwrap().clone();
        (report, seen)
    }

    fn running(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .docker
            .containers()
            .into_iter()
            .map(|c| (c.name, c.image))
            .collect();
        out.sort();
        out
    }
}

fn result<'a>(report: &'a Report, target: Target, name: &str) -> &'a Status {
    &report
        .outcomes
        .iter()
        .find(|o| o.target == target && o.name == name)
        .unwrap_or_else(|| panic!("no outcome for {target} {name}: {report:?}"))
        .result
}

#[tokio::test(start_paused = true)]
async fn phases_run_in_order_and_a_failure_spares_what_does_not_need_it() {
    let host = Host::new();
    host.docker.fail_create_for("broken:1");
    host.write(&[
        ("db-like", "  image: broken:1\n"),
        ("web", "  image: ok:1\n  dependsOn: [db-like]\n"),
        (
            "api",
            "  image: ok:1\n  volumes: [{name: data, mount: /data}]\n",
        ),
    ]);
    let (report, started) = host.apply().await;
    // The network and the volume before any container; the app that needs a failed
    // one is skipped, saying which; the unrelated one runs.
    assert_eq!(started[0], "network berth", "{started:?}");
    assert_eq!(started[1], "volume api-data", "{started:?}");
    assert!(
        matches!(result(&report, Target::App, "db-like"), Status::Failed(m) if m.contains("create"))
    );
    assert_eq!(
        result(&report, Target::App, "web"),
        &Status::Skipped("dependency db-like failed".into())
    );
    assert_eq!(result(&report, Target::App, "api"), &Status::Done);
    assert_eq!(host.running(), vec![("api".into(), "ok:1".into())]);
    assert!(
        !started.contains(&"app web".to_owned()),
        "a skipped app is not started"
    );
}

#[tokio::test(start_paused = true)]
async fn a_start_first_update_that_never_gets_ready_keeps_the_old_one_serving() {
    let host = Host::new();
    let health = "  health: {cmd: [\"true\"], interval: 1s, retries: 1}\n";
    host.write(&[("web", &format!("  image: ok:1\n{health}"))]);
    let (report, _) = host.apply().await;
    assert_eq!(result(&report, Target::App, "web"), &Status::Done);

    host.docker.never_healthy("ok:2");
    host.write(&[("web", &format!("  image: ok:2\n{health}"))]);
    let (report, _) = host.apply().await;
    match result(&report, Target::App, "web") {
        Status::Failed(m) => assert!(
            m.contains("the old container web keeps running (degraded)"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    // Rolled back: the old one alone, under its own name.
    assert_eq!(host.running(), vec![("web".into(), "ok:1".into())]);

    // Fixed: the next pass replaces it.
    host.docker.heal("ok:2");
    let (report, _) = host.apply().await;
    assert_eq!(result(&report, Target::App, "web"), &Status::Done);
    assert_eq!(host.running(), vec![("web".into(), "ok:2".into())]);
}

#[tokio::test(start_paused = true)]
async fn a_secret_that_cannot_be_kept_stops_the_pass_before_anything_uses_it() {
    let host = Host::new();
    std::fs::write(
        host.manifests.path().join("db.yaml"),
        "apiVersion: berth/v1\nkind: Database\nmetadata: {name: blog-db}\nspec: {engine: postgres, mode: managed}\n",
    )
    .unwrap();
    host.write(&[("blog", "  image: ok:1\n  databases: [blog-db]\n")]);
    // Between plan and apply the secret store's folder becomes impossible to make: a
    // file is in the way (as a full disk would refuse the write).
    let in_the_way = host.state.path().join("secrets");
    let (report, started) = host
        .apply_after(|| std::fs::write(&in_the_way, "not a folder").unwrap())
        .await;
    assert!(matches!(
        result(&report, Target::Secret, "db-blog-db-password"),
        Status::Failed(m) if m.contains("failed to write secret `db-blog-db-password`")
    ));
    for (target, name) in [(Target::Database, "blog-db"), (Target::App, "blog")] {
        match result(&report, target, name) {
            Status::Skipped(m) => assert!(m.contains("the state dir could not be written"), "{m}"),
            other => panic!("{target} {name}: {other:?}"),
        }
    }
    assert!(
        host.running().is_empty(),
        "nothing runs with a password that was not kept"
    );
    assert_eq!(started, vec!["secret db-blog-db-password".to_owned()]);
}
