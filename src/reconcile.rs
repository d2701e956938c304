//! One reconcile pass, shared by `berth apply` and the controller, through its stages:
//! valid manifests → desired (expanded, secrets read or generated in memory) →
//! observed (Docker, proxy files, database servers, ports, files) → resolved (host
//! ports, routes, files to write) → pins held (see [`plan::hold`]) → plan → and, when
//! asked, apply, recording each app's applied spec in its history. [`rollback`] is such a
//! pass that pins one app to an earlier spec first.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::apply::{self, ApplyOptions, OnProgress, Report};
use crate::desired::secrets::{Generation, PassSecrets};
use crate::desired::{self, Desired, MissingSecret};
use crate::drivers::docker::{DockerApi, DockerError};
use crate::drivers::proxy::ProxyDriver;
use crate::manifest::Manifests;
use crate::observe::{self, Observed};
use crate::plan::hold::{self, PinChange, PinError};
use crate::plan::resolve::{self, ResolveError};
use crate::plan::{self, Op, Plan, PlanOptions, Step, Target};
use crate::state::StateDir;
pub use crate::state::history::PinnedBy;
use crate::state::history::{AppliedSpec, HistoryError};
use crate::state::secrets::SecretError;

/// Why a pass could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Secrets the manifests name are missing; nothing can be applied without them.
    #[error("{}\nnothing was applied", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    MissingSecrets(Vec<MissingSecret>),
    /// The daemon failed.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// A secret could not be read or generated.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The proxy's files could not be read.
    #[error("failed to read the proxy's files: {0}")]
    ProxyFiles(std::io::Error),
    /// What depends on the host could not be resolved.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The pins or the spec history could not be read.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// A rollback or a release asked of the pass cannot be done.
    #[error(transparent)]
    Pin(#[from] PinError),
    /// An app's build context cannot be read from the revision.
    #[error("{}\nnothing was applied", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Build(Vec<crate::expand::builds::BuildError>),
    /// The swarm could not be read.
    #[error(transparent)]
    Swarm(#[from] observe::swarm::SwarmError),
}

/// How a pass is planned.
#[derive(Debug, Clone)]
pub struct PassOptions {
    /// The berth instance.
    pub instance: String,
    /// Whether this pass will apply: missing generated secrets get values (written by
    /// the plan's steps) and missing secrets are errors; without it they only warn.
    pub apply: bool,
    /// `--no-prune`.
    pub no_prune: bool,
}

/// A planned pass.
#[derive(Debug)]
pub struct Prepared {
    /// The desired state, routes included.
    pub desired: Desired,
    /// The plan.
    pub plan: Plan,
    /// The proxy the routes are for.
    pub proxy: ProxyDriver,
    /// Private domains' tokens.
    pub tokens: BTreeMap<String, String>,
    /// Secrets missing from the store (only when not applying).
    pub missing_secrets: Vec<MissingSecret>,
}

/// Plans a pass: expand and read secrets (desired), observe the host, resolve what
/// depends on it, plan. Nothing is written: every write is a step of the plan. With
/// `docker: None` the host is taken as empty (`--offline`).
pub async fn prepare(
    manifests: &Manifests,
    revision: &str,
    state: &StateDir,
    docker: Option<&dyn DockerApi>,
    options: &PassOptions,
) -> Result<Prepared, ReconcileError> {
    prepare_with(manifests, revision, state, docker, options, None).await
}

/// Plans a pass that first changes one app's pin (`berth rollback`, a workflow's
/// `rollback` node): the new pin, or its release, is a step of the plan.
pub async fn prepare_rollback(
    manifests: &Manifests,
    revision: &str,
    state: &StateDir,
    docker: Option<&dyn DockerApi>,
    options: &PassOptions,
    change: &PinChange,
) -> Result<Prepared, ReconcileError> {
    prepare_with(manifests, revision, state, docker, options, Some(change)).await
}

async fn prepare_with(
    manifests: &Manifests,
    revision: &str,
    state: &StateDir,
    docker: Option<&dyn DockerApi>,
    options: &PassOptions,
    change: Option<&PinChange>,
) -> Result<Prepared, ReconcileError> {
    let pass = Started::new(manifests, revision, state, options, change)?;
    let mut observed = Observed::default();
    if let Some(docker) = docker {
        observed = observe::observe(docker, &options.instance).await?;
        if pass.desired.runtime == crate::manifest::model::Runtime::Swarm {
            let swarm = observe::swarm::observe(docker, &options.instance).await?;
            observed.published_ports.extend(&swarm.published_ports);
            observed.host_ports.extend(swarm.host_ports.clone());
            observed.swarm = Some(swarm);
        }
        observed.applied_apps = state.applied().apps;
        observed.proxy_files = pass.proxy.observe().map_err(ReconcileError::ProxyFiles)?;
        observed.databases = observe_shared(&pass.desired, state, &options.instance).await;
        observed.listening_ports = observe::ports::listening();
        observed.files = observe::file_hashes(&pass.state_root.join("tls"));
        observe::certificates(
            &mut observed,
            &state.certificates(),
            &options.instance,
            &manifests.settings().acme,
        )
        .await;
        let tags = pass.desired.builds.values().map(|b| b.tag.as_str());
        observed.built_images = observe::built_images(docker, tags).await?;
        observed.last_builds = state.builds().last_files();
    }
    pass.plan(manifests, observed, options, |_, _| {})
}

/// Plans a pass against a given observed state, through the same expand, resolve and
/// plan stages as [`prepare`], reading secrets from `state` and never writing: for
/// the planner's fixtures and benchmarks. `settle` may complete `observed` once the
/// desired state is resolved (a fixture refers to the desired specs and hashes).
pub fn plan_against(
    manifests: &Manifests,
    revision: &str,
    state: &StateDir,
    options: &PassOptions,
    observed: Observed,
    settle: impl FnOnce(&Desired, &mut Observed),
) -> Result<Prepared, ReconcileError> {
    Started::new(manifests, revision, state, options, None)?
        .plan(manifests, observed, options, settle)
}

/// A pass up to what needs no look at the host: its secrets, desired state and proxy.
struct Started {
    secrets: PassSecrets,
    desired: Desired,
    missing: Vec<MissingSecret>,
    proxy: ProxyDriver,
    state_root: std::path::PathBuf,
    pins: BTreeMap<String, crate::state::history::Pin>,
    history: BTreeMap<String, Vec<AppliedSpec>>,
    change: Option<PinChange>,
}

impl Started {
    fn new(
        manifests: &Manifests,
        revision: &str,
        state: &StateDir,
        options: &PassOptions,
        change: Option<&PinChange>,
    ) -> Result<Started, ReconcileError> {
        let generation = if options.apply {
            Generation::Generate
        } else {
            Generation::Preview
        };
        let secrets = PassSecrets::new(state.secrets(), generation);
        desired::generate_passwords(manifests, &secrets)?;
        let (mut desired, mut missing) = desired::build_lenient(manifests, &secrets, revision);
        let (builds, errors) = crate::expand::builds::expand(manifests);
        if !errors.is_empty() {
            return Err(ReconcileError::Build(errors));
        }
        missing.extend(desired::use_builds(&mut desired, builds, &secrets));
        // The history is read only to make a pin: a pass never depends on it.
        let history = match change {
            Some(PinChange::Pin { .. }) => state.history().load()?,
            _ => BTreeMap::new(),
        };
        Ok(Started {
            secrets,
            desired,
            missing,
            proxy: ProxyDriver::from_settings(&manifests.settings(), &options.instance),
            state_root: state.path().to_path_buf(),
            pins: state.pins().load()?,
            history,
            change: change.cloned(),
        })
    }

    /// The pure part of a pass: resolve against what was observed, then plan.
    fn plan(
        self,
        manifests: &Manifests,
        mut observed: Observed,
        options: &PassOptions,
        settle: impl FnOnce(&Desired, &mut Observed),
    ) -> Result<Prepared, ReconcileError> {
        let Started {
            secrets,
            mut desired,
            mut missing,
            proxy,
            state_root,
            pins,
            history,
            change,
        } = self;
        // A pin holds the declared spec (resolving adds no field to a spec): the specs
        // are final before the host ports are chosen by them.
        missing.extend(hold::hold(
            &mut desired,
            pins,
            change.as_ref(),
            &history,
            &secrets,
            &now(),
        )?);
        settle(&desired, &mut observed);
        let unix_now = crate::state::certs::unix_now();
        let resolution = resolve::resolve(
            &mut desired,
            manifests,
            &observed,
            &resolve::ResolveInputs {
                secrets: &secrets,
                proxy: &proxy,
                state_dir: &state_root,
                instance: &options.instance,
                now: unix_now,
            },
        )?;
        missing.extend(resolution.missing);
        if options.apply && !missing.is_empty() {
            return Err(ReconcileError::MissingSecrets(missing));
        }
        let prune = manifests.settings().prune && !options.no_prune;
        let plan = plan::plan(
            &desired,
            &observed,
            PlanOptions {
                prune,
                now: unix_now,
            },
        );
        Ok(Prepared {
            desired,
            plan,
            proxy,
            tokens: resolution.tokens,
            missing_secrets: missing,
        })
    }
}

/// A database berth recorded, taken as it left it when the server is not asked.
const RECORDED: observe::DatabaseState = observe::DatabaseState {
    database_exists: true,
    user_exists: true,
    login_ok: true,
    grants_ok: true,
};

/// Reads, through SQL, every shared database that is declared or that berth recorded
/// (a removed manifest's database is still berth's to drop or forget). The servers
/// are asked concurrently; one unreachable server only marks its own databases.
async fn observe_shared(
    desired: &desired::Desired,
    state: &StateDir,
    instance: &str,
) -> BTreeMap<String, observe::ObservedDatabase> {
    use crate::drivers::dbserver;
    use crate::state::records::Records;
    use observe::{DatabaseState, ObservedDatabase};
    let mut records = Records::new(state.path(), instance).load();
    let mut out = BTreeMap::new();
    let mut asks = Vec::new();
    for db in desired.databases.values() {
        if db.mode != crate::manifest::model::DatabaseMode::Shared {
            continue;
        }
        let record = records.remove(&db.name);
        match (db.server.clone(), db.password.clone()) {
            (Some(server), Some(password)) => {
                let (name, database, user) =
                    (db.name.clone(), db.database.clone(), db.user.clone());
                asks.push(async move {
                    let state = dbserver::connect(server)
                        .observe(&database, &user, &password)
                        .await
                        .map(DatabaseState::from)
                        .map_err(|e| e.to_string());
                    (name, ObservedDatabase { record, state })
                });
            }
            // Not readable: without the admin password nothing can be known.
            (None, _) => {
                let state = Err(format!(
                    "server {} is not reachable without its admin password",
                    db.server_name.as_deref().unwrap_or("?")
                ));
                out.insert(db.name.clone(), ObservedDatabase { record, state });
            }
            // No password generated yet (a dry run): planned from the record alone.
            (Some(_), None) => {
                if let Some(record) = record {
                    let state = Ok(DatabaseState {
                        login_ok: false,
                        grants_ok: false,
                        ..RECORDED
                    });
                    let record = Some(record);
                    out.insert(db.name.clone(), ObservedDatabase { record, state });
                }
            }
        }
    }
    out.extend(futures_util::future::join_all(asks).await);
    // Recorded but no longer declared: the record says what to do; the server's state
    // is not needed to plan (the drop is idempotent).
    for (name, record) in records {
        let state = Ok(RECORDED);
        let record = Some(record);
        out.insert(name, ObservedDatabase { record, state });
    }
    out
}

/// Executes a prepared plan and records which apps are now as declared, and the spec
/// of each app whose containers were created or replaced (its history). A record that
/// cannot be written does not change the outcomes: it is logged and listed in the
/// report's warnings.
pub async fn execute(
    prepared: &Prepared,
    state: &StateDir,
    docker: Arc<dyn DockerApi>,
    mut options: ApplyOptions,
    on_progress: OnProgress,
) -> Report {
    options.proxy = prepared.proxy.clone();
    options.state_dir = Some(state.path().to_path_buf());
    let mut report = apply::apply(
        &prepared.plan,
        &prepared.desired,
        docker,
        &options,
        on_progress,
    )
    .await;
    let mut applied = state.applied();
    applied
        .apps
        .retain(|a| prepared.desired.apps.contains_key(a));
    applied.apps.extend(report.converged_apps());
    if let Err(e) = state.save_applied(&applied) {
        tracing::warn!(
            "failed to record the applied apps in {}: {e}",
            state.path().display()
        );
    }
    let deployed = deployed_specs(prepared, &report, &now());
    if let Err(e) = state.history().record(deployed) {
        let warning = format!("{e}; a rollback cannot go back to what this pass deployed");
        tracing::warn!("{warning}");
        report.warnings.push(warning);
    }
    report
}

/// The specs of the apps whose containers this pass created or replaced: the held spec
/// (under the revision it came from) for an app a rollback holds.
fn deployed_specs(prepared: &Prepared, report: &Report, now: &str) -> Vec<(String, AppliedSpec)> {
    let desired = &prepared.desired;
    let mut out = Vec::new();
    for (outcome, action) in report.outcomes.iter().zip(&prepared.plan.actions) {
        let deployed = action.steps.iter().any(|s| {
            matches!(
                s,
                Step::Run { .. }
                    | Step::Replace { .. }
                    | Step::CreateService { .. }
                    | Step::UpdateService { .. }
            )
        });
        if action.target != Target::App
            || action.op == Op::Delete
            || !deployed
            || outcome.result != apply::Status::Done
        {
            continue;
        }
        let Some(app) = desired.apps.get(&action.name) else {
            continue;
        };
        let revision = match &action.held {
            Some(held) => held.revision.clone(),
            None => desired.revision.clone(),
        };
        let secrets = app
            .secrets
            .iter()
            .map(|(variable, s)| (variable.clone(), s.name().to_owned()))
            .collect();
        let entry = AppliedSpec {
            revision,
            spec: serde_json::to_value(&app.spec).unwrap_or_default(),
            hash: app.hash.clone(),
            secrets,
            at: now.to_owned(),
        };
        out.push((app.name.clone(), entry));
    }
    out
}

/// A rollback that was applied.
#[derive(Debug)]
pub struct RollbackDone {
    /// The revision whose spec the app now runs (`None` after a release).
    pub held: Option<String>,
    /// The plan executed.
    pub plan: Plan,
    /// How each action ended.
    pub report: Report,
}

/// Why a rollback did not run.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// It could not be planned (no earlier spec, an unknown revision, the host…).
    #[error(transparent)]
    Plan(#[from] ReconcileError),
}

/// Pins `app` to its previous spec (the newest applied one that differs from the
/// declared one), or to the one applied at revision `to` (a prefix), and converges the
/// host, as a pass does. The caller holds the instance lock.
#[allow(clippy::too_many_arguments)]
pub async fn rollback(
    manifests: &Manifests,
    revision: &str,
    state: &StateDir,
    docker: Arc<dyn DockerApi>,
    options: &PassOptions,
    apply: ApplyOptions,
    app: &str,
    to: Option<&str>,
    by: PinnedBy,
) -> Result<RollbackDone, RollbackError> {
    let change = PinChange::Pin {
        app: app.to_owned(),
        to: to.map(str::to_owned),
        by,
    };
    converge(manifests, revision, state, docker, options, apply, &change).await
}

/// Releases `app`'s pin and converges the host: its declared spec is deployed again.
/// The caller holds the instance lock.
pub async fn release(
    manifests: &Manifests,
    revision: &str,
    state: &StateDir,
    docker: Arc<dyn DockerApi>,
    options: &PassOptions,
    apply: ApplyOptions,
    app: &str,
) -> Result<RollbackDone, RollbackError> {
    let change = PinChange::Release {
        app: app.to_owned(),
    };
    converge(manifests, revision, state, docker, options, apply, &change).await
}

async fn converge(
    manifests: &Manifests,
    revision: &str,
    state: &StateDir,
    docker: Arc<dyn DockerApi>,
    options: &PassOptions,
    apply: ApplyOptions,
    change: &PinChange,
) -> Result<RollbackDone, RollbackError> {
    let options = PassOptions {
        apply: true,
        ..options.clone()
    };
    let prepared = prepare_rollback(
        manifests,
        revision,
        state,
        Some(docker.as_ref()),
        &options,
        change,
    )
    .await?;
    let report = execute(&prepared, state, docker, apply, Arc::new(|_| {})).await;
    let held = match change {
        PinChange::Pin { app, .. } => prepared.desired.holds.get(app).and_then(|h| match h {
            desired::Hold::Held { pin, .. } => Some(pin.held.revision.clone()),
            desired::Hold::Released(_) => None,
        }),
        PinChange::Release { .. } => None,
    };
    Ok(RollbackDone {
        held,
        plan: prepared.plan,
        report,
    })
}

/// The time now, as the history and the pins write it.
fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::memory::MemoryDocker;

    /// A host with app `blog` (its env says `version`) and a managed database it links.
    struct Host {
        docker: Arc<MemoryDocker>,
        manifests: tempfile::TempDir,
        state: StateDir,
        _state: tempfile::TempDir,
    }

    impl Host {
        fn new() -> Host {
            let docker = Arc::new(MemoryDocker::new());
            for image in ["ok:1", "postgres:16"] {
                docker.add_image(image);
            }
            let state = tempfile::tempdir().unwrap();
            Host {
                docker,
                manifests: tempfile::tempdir().unwrap(),
                state: StateDir::new(state.path(), "test"),
                _state: state,
            }
        }

        fn declare(&self, version: &str) {
            let yaml = format!(
                "apiVersion: berth/v1\nkind: Database\nmetadata: {{name: blog-db}}\nspec: \
                 {{engine: postgres, mode: managed}}\n---\napiVersion: berth/v1\nkind: App\n\
                 metadata: {{name: blog}}\nspec:\n  image: ok:1\n  env: {{VERSION: {version}}}\n  \
                 databases: [blog-db]\n"
            );
            std::fs::write(self.manifests.path().join("blog.yaml"), yaml).unwrap();
        }

        async fn pass(&self, revision: &str) -> Report {
            let manifests = crate::manifest::load_dir(self.manifests.path()).expect("valid");
            let options = PassOptions {
                instance: "test".into(),
                apply: true,
                no_prune: false,
            };
            let docker: Arc<dyn DockerApi> = self.docker.clone();
            let prepared = prepare(
                &manifests,
                revision,
                &self.state,
                Some(docker.as_ref()),
                &options,
            )
            .await
            .expect("planned");
            let apply = ApplyOptions {
                instance: "test".into(),
                ready_timeout: std::time::Duration::from_secs(5),
                ..ApplyOptions::default()
            };
            execute(&prepared, &self.state, docker, apply, Arc::new(|_| {})).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn apps_get_a_history_and_managed_databases_none() {
        let host = Host::new();
        host.declare("one");
        let report = host.pass("r1").await;
        assert_eq!(report.failures(), 0, "{report:?}");
        assert!(report.warnings.is_empty());
        host.declare("two");
        host.pass("r2").await;
        let history = host.state.history().load().unwrap();
        assert_eq!(history.keys().collect::<Vec<_>>(), ["blog"]);
        let blog = &history["blog"];
        assert_eq!(
            blog.iter().map(|e| e.revision.as_str()).collect::<Vec<_>>(),
            ["r1", "r2"]
        );
        // The linked secrets are recorded by name; their values are nowhere in the file.
        let names: Vec<&str> = blog[1].secrets.values().map(String::as_str).collect();
        assert!(names.contains(&"db-blog-db-url"), "{names:?}");
        let password = host.state.secrets().get("db-blog-db-password").unwrap();
        let file = std::fs::read_to_string(host.state.history().path()).unwrap();
        assert!(!file.contains(password.expose()), "{file}");

        // Rolled back, the held spec gets the linked URL as this pass makes it.
        let manifests = crate::manifest::load_dir(host.manifests.path()).unwrap();
        let options = PassOptions {
            instance: "test".into(),
            apply: true,
            no_prune: false,
        };
        let docker: Arc<dyn DockerApi> = host.docker.clone();
        let apply = ApplyOptions {
            instance: "test".into(),
            ready_timeout: std::time::Duration::from_secs(5),
            ..ApplyOptions::default()
        };
        let done = rollback(
            &manifests,
            "r3",
            &host.state,
            docker,
            &options,
            apply,
            "blog",
            None,
            PinnedBy::Workflow("deploy-check".into()),
        )
        .await
        .expect("rolled back");
        assert_eq!(done.held.as_deref(), Some("r1"));
        assert_eq!(done.report.failures(), 0, "{:?}", done.report);
        let pin = &host.state.pins().load().unwrap()["blog"];
        assert_eq!(pin.by, PinnedBy::Workflow("deploy-check".into()));
        let blog = host
            .docker
            .containers()
            .into_iter()
            .find(|c| c.name == "blog")
            .unwrap();
        assert_eq!(blog.labels["berth.revision"], "r3");
        assert!(
            blog.labels["berth.spec"].contains(r#""VERSION":"one""#),
            "{}",
            blog.labels["berth.spec"]
        );
        let again = host.state.history().load().unwrap();
        assert_eq!(again["blog"].last().unwrap().revision, "r1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_history_that_cannot_be_written_is_a_warning_and_the_outcomes_stand() {
        let host = Host::new();
        host.declare("one");
        std::fs::write(host.state.history().path(), b"{ not json").unwrap();
        let report = host.pass("r1").await;
        assert_eq!(report.failures(), 0, "{report:?}");
        assert_eq!(
            report.warnings,
            [format!(
                "failed to read {}: key must be a string at line 1 column 3; fix or remove the \
                 file (berth wrote it as JSON); a rollback cannot go back to what this pass \
                 deployed",
                host.state.history().path().display()
            )]
        );
        assert_eq!(
            std::fs::read(host.state.history().path()).unwrap(),
            b"{ not json",
            "the file is kept for the user to look at"
        );
    }

    /// A pass over `dir` as `berth apply` makes it, returning the plan's text too.
    async fn build_pass_with(
        dir: &std::path::Path,
        state: &StateDir,
        docker: &Arc<MemoryDocker>,
        cancel: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> (String, Report) {
        let manifests = crate::manifest::load_dir(dir).expect("valid");
        let options = PassOptions {
            instance: "test".into(),
            apply: true,
            no_prune: false,
        };
        let api: Arc<dyn DockerApi> = docker.clone();
        let prepared = prepare(&manifests, "r", state, Some(api.as_ref()), &options)
            .await
            .expect("planned");
        let text = crate::plan::render_text(&prepared.plan, false);
        let apply = ApplyOptions {
            instance: "test".into(),
            ready_timeout: std::time::Duration::from_secs(5),
            state_dir: Some(state.path().to_path_buf()),
            cancel,
            ..ApplyOptions::default()
        };
        (
            text,
            execute(&prepared, state, api, apply, Arc::new(|_| {})).await,
        )
    }

    async fn build_pass(
        dir: &std::path::Path,
        state: &StateDir,
        docker: &Arc<MemoryDocker>,
    ) -> (String, Report) {
        build_pass_with(dir, state, docker, None).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_build_runs_once_per_context_and_a_failed_one_leaves_the_app_running() {
        let docker = Arc::new(MemoryDocker::new());
        let dir = tempfile::tempdir().unwrap();
        let state_dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(state_dir.path(), "test");
        std::fs::create_dir(dir.path().join("web")).unwrap();
        std::fs::write(dir.path().join("web/Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.path().join("web/page.html"), "one").unwrap();
        std::fs::write(
            dir.path().join("app.yaml"),
            "apiVersion: berth/v1\nkind: App\nmetadata: {name: web}\nspec:\n  build: {context: web}\n",
        )
        .unwrap();
        let image = || docker.containers()[0].image.clone();

        let (plan, report) = build_pass(dir.path(), &state, &docker).await;
        assert_eq!(report.failures(), 0, "{report:?}");
        assert!(
            plan.contains("+ build image for app web (context web, 2 files)"),
            "{plan}"
        );
        assert_eq!(docker.builds(), [image()]);

        // Nothing changed: nothing built, nothing planned.
        let (plan, _) = build_pass(dir.path(), &state, &docker).await;
        assert!(plan.contains("the host is in sync"), "{plan}");
        assert_eq!(docker.builds().len(), 1);

        // A file of the context changed: built again, counted against the last build.
        std::fs::write(dir.path().join("web/page.html"), "two").unwrap();
        let (plan, report) = build_pass(dir.path(), &state, &docker).await;
        assert_eq!(report.failures(), 0, "{report:?}");
        assert!(plan.contains("(context web, 1 file changed)"), "{plan}");
        assert_eq!(docker.builds().len(), 2);
        let running = image();
        assert_eq!(docker.builds()[1], running);

        // A failing build: the app's action fails with the step and its last lines,
        // the container keeps its image, and the log is kept.
        docker.fail_builds("berth/web");
        std::fs::write(dir.path().join("web/page.html"), "three").unwrap();
        let (_, report) = build_pass(dir.path(), &state, &docker).await;
        let failed: Vec<String> = report
            .outcomes
            .iter()
            .filter_map(|o| match &o.result {
                apply::Status::Failed(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 1, "{report:?}");
        assert!(
            failed[0].contains("failed at `Step 2/2 : RUN make`: The command '/bin/sh -c make' returned a non-zero code: 2"),
            "{}",
            failed[0]
        );
        assert!(
            failed[0].contains("make: *** [all] Error 2"),
            "{}",
            failed[0]
        );
        assert_eq!(image(), running);
        let log = state.builds().read_log("web").unwrap().unwrap();
        assert!(log.contains("Step 2/2 : RUN make"), "{log}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_build_past_its_timeout_or_at_shutdown_is_cancelled() {
        let docker = Arc::new(MemoryDocker::new());
        docker.build_time(std::time::Duration::from_secs(600));
        let dir = tempfile::tempdir().unwrap();
        let state_dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(state_dir.path(), "test");
        std::fs::create_dir(dir.path().join("web")).unwrap();
        std::fs::write(dir.path().join("web/Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(
            dir.path().join("app.yaml"),
            "apiVersion: berth/v1\nkind: App\nmetadata: {name: web}\nspec:\n  \
             build: {context: web, timeout: 2m}\n",
        )
        .unwrap();
        let failure = |report: &Report| {
            report
                .outcomes
                .iter()
                .find_map(|o| match &o.result {
                    apply::Status::Failed(m) => Some(m.clone()),
                    _ => None,
                })
                .unwrap_or_default()
        };
        let (_, report) = build_pass(dir.path(), &state, &docker).await;
        assert!(
            failure(&report).contains("it took longer than its timeout of 2m and was cancelled"),
            "{report:?}"
        );
        assert!(docker.builds().is_empty() && docker.containers().is_empty());

        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            let _ = stop.send(true);
        });
        let (_, report) = build_pass_with(dir.path(), &state, &docker, Some(stopped)).await;
        assert!(
            failure(&report).contains("berth is shutting down: the build was cancelled"),
            "{report:?}"
        );
        assert!(docker.builds().is_empty());
    }
}
