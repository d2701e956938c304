//! One reconcile pass, shared by `berth apply` and the controller: from valid manifests
//! to the desired state (secrets, host ports, routes), the observed state (Docker and
//! proxy files), the plan, and — when asked — its execution.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::apply::{self, ApplyOptions, OnProgress, Report};
use crate::desired::{self, Desired, MissingSecret};
use crate::drivers::docker::{DockerApi, DockerError};
use crate::drivers::proxy::ProxyDriver;
use crate::manifest::Manifests;
use crate::manifest::model::Tls;
use crate::observe::{self, Observed};
use crate::plan::{self, Plan, PlanOptions};
use crate::state::StateDir;
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
    /// The proxy's files could not be read or written.
    #[error("{0}")]
    Proxy(String),
}

/// How a pass is planned.
#[derive(Debug, Clone)]
pub struct PassOptions {
    /// The berth instance.
    pub instance: String,
    /// Whether this pass will apply: generates private tokens and writes TLS secrets
    /// to files; without it missing secrets only warn.
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

/// Plans a pass. With `docker: None` the host is taken as empty (`--offline`).
pub async fn prepare(
    manifests: &Manifests,
    revision: &str,
    state: &StateDir,
    docker: Option<&dyn DockerApi>,
    options: &PassOptions,
) -> Result<Prepared, ReconcileError> {
    let settings = manifests.settings();
    if options.apply {
        crate::databases::generate_passwords(manifests, &state.secrets())?;
    }
    let (mut desired, missing) = desired::build_lenient(manifests, &state.secrets(), revision);
    if options.apply && !missing.is_empty() {
        return Err(ReconcileError::MissingSecrets(missing));
    }
    let proxy = ProxyDriver::from_settings(&settings, &options.instance);
    let mut observed = Observed::default();
    if let Some(docker) = docker {
        observed = observe::observe(docker, &options.instance).await?;
        observed.applied_apps = state.applied().apps;
        observed.proxy_files = proxy
            .observe()
            .map_err(|e| ReconcileError::Proxy(format!("failed to read the proxy's files: {e}")))?;
        observed.databases = observe_shared(&desired, state, &options.instance).await;
    }
    let tokens = private_tokens(manifests, state, options.apply)?;
    let tls_dir = state.path().join("tls");
    if options.apply {
        write_tls_secrets(manifests, state, &tls_dir)?;
    }
    let secret_file = |name: &str| {
        tls_dir
            .join(format!("{name}.pem"))
            .to_string_lossy()
            .into_owned()
    };
    let listening = if docker.is_some() {
        crate::ports::listening()
    } else {
        Default::default()
    };
    desired
        .add_routes(
            manifests,
            &observed,
            &listening,
            &tokens,
            &secret_file,
            &proxy,
        )
        .map_err(ReconcileError::Proxy)?;
    let plan = plan::plan(
        &desired,
        &observed,
        PlanOptions {
            prune: settings.prune && !options.no_prune,
        },
    );
    Ok(Prepared {
        desired,
        plan,
        proxy,
        tokens,
        missing_secrets: missing,
    })
}

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
                        database_exists: true,
                        user_exists: true,
                        login_ok: false,
                        grants_ok: false,
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
        let state = Ok(DatabaseState {
            database_exists: true,
            user_exists: true,
            login_ok: true,
            grants_ok: true,
        });
        let record = Some(record);
        out.insert(name, ObservedDatabase { record, state });
    }
    out
}

/// Executes a prepared plan and records which apps are now as declared.
pub async fn execute(
    prepared: &Prepared,
    state: &StateDir,
    docker: Arc<dyn DockerApi>,
    mut options: ApplyOptions,
    on_progress: OnProgress,
) -> Report {
    options.proxy = prepared.proxy.clone();
    options.state_dir = Some(state.path().to_path_buf());
    let report = apply::apply(
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
    report
}

/// The tokens of private domains: generated once into the secret store when applying;
/// a plan shows a placeholder for a token that does not exist yet.
fn private_tokens(
    manifests: &Manifests,
    state: &StateDir,
    generate: bool,
) -> Result<BTreeMap<String, String>, SecretError> {
    let store = state.secrets();
    let mut tokens = BTreeMap::new();
    for (name, d) in &manifests.domains {
        if !d.spec.private {
            continue;
        }
        let secret = private_token_secret(name);
        let token = if generate {
            store.get_or_generate(&secret)?.expose().to_owned()
        } else {
            match store.get(&secret) {
                Ok(s) => s.expose().to_owned(),
                Err(_) => "token-generated-on-apply".to_owned(),
            }
        };
        tokens.insert(name.clone(), token);
    }
    Ok(tokens)
}

/// The secret holding a private domain's token.
fn private_token_secret(domain: &str) -> String {
    let name = format!("private-{domain}");
    if name.len() <= 63 {
        name
    } else {
        format!("private-{}", crate::state::secrets::short_hash(domain))
    }
}

/// Writes certificates and keys kept as secrets to files the proxy can read (0600).
fn write_tls_secrets(
    manifests: &Manifests,
    state: &StateDir,
    dir: &Path,
) -> Result<(), ReconcileError> {
    let store = state.secrets();
    for d in manifests.domains.values() {
        if let Tls::Secrets {
            certificate_secret,
            key_secret,
        } = &d.spec.tls
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                ReconcileError::Proxy(format!("failed to create {}: {e}", dir.display()))
            })?;
            for name in [certificate_secret, key_secret] {
                let secret = store.get(name)?;
                let path = dir.join(format!("{name}.pem"));
                crate::state::atomic::write_atomic_mode(
                    &path,
                    secret.expose().as_bytes(),
                    Some(0o600),
                )
                .map_err(|e| {
                    ReconcileError::Proxy(format!("failed to write {}: {e}", path.display()))
                })?;
            }
        }
    }
    Ok(())
}
