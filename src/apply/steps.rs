//! One action's steps, carried out: Docker objects through the runtime and the Docker
//! driver, shared databases through their server's driver, proxy files through the
//! proxy driver, secrets and files into the state dir.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::{ApplyOptions, OnProgress, Outcome, Progress, Status};
use crate::desired::labels::{DELETION_POLICY, ObjectKind, VOLUME, owner_labels};
use crate::desired::{Desired, DesiredApp, container_name};
use crate::drivers::dbserver::{self, DbError, DbServerApi};
use crate::drivers::docker::{DockerApi, DockerError};
use crate::drivers::nginx::Change;
use crate::expand::databases::DesiredDatabase;
use crate::plan::{Action, Op, Step, Target};
use crate::runtime::{AppRuntime, Running, RuntimeError};
use crate::state::records::{Records, SharedRecord};
use crate::state::secrets::{SecretError, redact_all};

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A Docker call failed.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// A replica could not be run, replaced or started.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A shared database server refused or failed.
    #[error(transparent)]
    Database(#[from] DbError),
    /// A secret could not be written.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A file could not be written.
    #[error("failed to write {path}: {source}")]
    WriteFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// An app's pin could not be written or removed.
    #[error(transparent)]
    Pins(#[from] crate::state::history::HistoryError),
    /// The records of shared databases could not be written.
    #[error("failed to write the database records: {0}")]
    Records(std::io::Error),
    /// A step names what the desired state does not hold (a plan of another revision).
    #[error("{0} is not in the desired state")]
    NotDesired(String),
    /// A shared database's server cannot be reached as administrator.
    #[error("{0}")]
    NoServer(String),
}

pub(super) struct Ctx<'a> {
    pub(super) desired: &'a Desired,
    pub(super) docker: &'a dyn DockerApi,
    pub(super) runtime: &'a dyn AppRuntime,
    pub(super) options: &'a ApplyOptions,
    pub(super) on_progress: OnProgress,
}

impl Ctx<'_> {
    pub(super) fn finish(&self, a: &Action, result: Status) -> Outcome {
        let o = Outcome {
            target: a.target,
            name: a.name.clone(),
            op: a.op,
            result,
        };
        (self.on_progress)(Progress::Finished(o.clone()));
        o
    }

    /// Runs one action's steps in order; the first failure ends the action.
    pub(super) async fn run(&self, a: &Action) -> Outcome {
        match a.op {
            Op::Noop => return self.finish(a, Status::Unchanged),
            Op::Conflict => return self.finish(a, Status::Conflict(a.reasons.join("; "))),
            _ => {}
        }
        (self.on_progress)(Progress::Started {
            target: a.target,
            name: a.name.clone(),
        });
        if let Some(app) = self
            .desired
            .apps
            .get(&a.name)
            .filter(|_| a.target == Target::App)
        {
            let needs_image = a
                .steps
                .iter()
                .any(|s| matches!(s, Step::Run { .. } | Step::Replace { .. }));
            if needs_image {
                if let Err(e) = self.runtime.prepare_image(app).await {
                    return self.finish(a, Status::Failed(self.scrub(&e.to_string())));
                }
            }
        }
        for step in &a.steps {
            if let Err(e) = self.step(step).await {
                return self.finish(a, Status::Failed(self.scrub(&e.to_string())));
            }
        }
        self.finish(a, Status::Done)
    }

    /// Proxy files: written (and checked) and removed in one batch, one reload.
    pub(super) async fn run_proxy(&self, actions: &[(usize, &Action)]) -> Vec<(usize, Outcome)> {
        let mut out = Vec::new();
        let mut changes = BTreeMap::new();
        let mut batch = Vec::new();
        for &(i, a) in actions {
            let mut change = None;
            for step in &a.steps {
                change = match step {
                    Step::WriteProxyFile { domain } => self
                        .desired
                        .proxy_files
                        .get(domain)
                        .cloned()
                        .map(Change::Write),
                    Step::RemoveProxyFile { .. } => Some(Change::Remove),
                    _ => change,
                };
            }
            match change {
                Some(c) => {
                    changes.insert(a.name.clone(), c);
                    batch.push((i, a));
                }
                None => out.push((i, self.run(a).await)),
            }
        }
        if changes.is_empty() {
            return out;
        }
        for (_, a) in &batch {
            (self.on_progress)(Progress::Started {
                target: a.target,
                name: a.name.clone(),
            });
        }
        let proxy = self.options.proxy.clone();
        let results = tokio::task::spawn_blocking(move || proxy.apply(&changes))
            .await
            .unwrap_or_default();
        for (i, a) in batch {
            let status = match results.get(&a.name) {
                Some(Ok(())) => Status::Done,
                Some(Err(e)) => {
                    Status::Failed(format!("{e}; the live config is unchanged (degraded)"))
                }
                None => Status::Failed("the proxy did not report on this domain".into()),
            };
            out.push((i, self.finish(a, status)));
        }
        out
    }

    /// Removes every secret value from a message that may echo what the daemon got.
    fn scrub(&self, message: &str) -> String {
        redact_all(message, &self.desired.secret_values())
    }

    async fn step(&self, step: &Step) -> Result<(), ApplyError> {
        let d = self.docker;
        let instance = self.options.instance.as_str();
        match step {
            Step::GenerateSecret { name } => {
                let secret = self
                    .desired
                    .new_secrets
                    .get(name)
                    .and_then(Option::as_ref)
                    .ok_or_else(|| ApplyError::NotDesired(format!("secret {name}")))?;
                self.state_dir()?.secrets().put(secret)?;
                Ok(())
            }
            Step::WriteFile { path, secret } => {
                let file = self
                    .desired
                    .files
                    .get(path)
                    .filter(|f| f.secret.name() == secret)
                    .ok_or_else(|| ApplyError::NotDesired(format!("file {path}")))?;
                write_private(Path::new(path), file.secret.expose().as_bytes())
            }
            Step::CreateNetwork { name, internal } => Ok(d
                .create_network(
                    name,
                    &owner_labels(instance, ObjectKind::Network, name),
                    *internal,
                )
                .await?),
            Step::RemoveNetwork { name } => Ok(d.remove_network(name).await?),
            Step::CreateVolume {
                name,
                app,
                volume,
                delete_on_prune,
            } => {
                let mut l = owner_labels(instance, ObjectKind::Volume, app);
                l.insert(VOLUME.to_owned(), volume.clone());
                l.insert(
                    DELETION_POLICY.to_owned(),
                    if *delete_on_prune { "delete" } else { "retain" }.to_owned(),
                );
                Ok(d.create_volume(name, &l).await?)
            }
            Step::RemoveVolume { name } => Ok(d.remove_volume(name).await?),
            Step::EnsureDatabase { name } => {
                let (db, server) = self.shared(name)?;
                let password = db.password.as_ref().ok_or_else(|| {
                    ApplyError::NotDesired(format!(
                        "the password of database {name} (secret {})",
                        crate::expand::databases::password_secret(name)
                    ))
                })?;
                Ok(server.ensure(&db.database, &db.user, password).await?)
            }
            Step::RecordDatabase { name, record } => self.records(|r| r.put(name, record.clone())),
            Step::DropDatabase { record, .. } => {
                let server = self.recorded_server(record)?;
                Ok(DbServerApi::drop(server.as_ref(), &record.database, &record.user).await?)
            }
            Step::ForgetDatabase { name } => self.records(|r| r.remove(name)),
            Step::PinApp { app, .. } => match self.desired.holds.get(app) {
                Some(crate::desired::Hold::Held { pin, .. }) => {
                    Ok(self.state_dir()?.pins().put(app, pin)?)
                }
                _ => Err(ApplyError::NotDesired(format!("the pin of app {app}"))),
            },
            Step::UnpinApp { app } => Ok(self.state_dir()?.pins().remove(app)?),
            Step::Run { app, replica } => Ok(self.runtime.run(self.app(app)?, *replica).await?),
            Step::Replace {
                app,
                replica,
                old_id,
                old_name,
                start_first,
            } => {
                let old = Running {
                    replica: *replica,
                    id: old_id,
                    name: old_name,
                };
                Ok(self
                    .runtime
                    .replace(self.app(app)?, old, *start_first)
                    .await?)
            }
            Step::Start { id, name } => {
                let app = self
                    .desired
                    .apps
                    .values()
                    .find(|a| (1..=a.replicas).any(|r| container_name(&a.name, r) == *name));
                Ok(self.runtime.start(app, id, name).await?)
            }
            Step::Rename { id, to, .. } => Ok(self.runtime.rename(id, to).await?),
            Step::Remove { id, .. } => Ok(self.runtime.remove(id).await?),
            // Proxy files are written in one batch (see `run_proxy`).
            Step::WriteProxyFile { .. } | Step::RemoveProxyFile { .. } => Ok(()),
        }
    }

    fn app(&self, name: &str) -> Result<&DesiredApp, ApplyError> {
        self.desired
            .apps
            .get(name)
            .ok_or_else(|| ApplyError::NotDesired(format!("app {name}")))
    }

    fn state_dir(&self) -> Result<crate::state::StateDir, ApplyError> {
        self.options
            .state_dir
            .as_deref()
            .map(|dir| crate::state::StateDir::new(dir, &self.options.instance))
            .ok_or_else(|| ApplyError::NotDesired("a state directory".into()))
    }

    /// A declared shared database and its server's driver.
    fn shared(&self, name: &str) -> Result<(&DesiredDatabase, Arc<dyn DbServerApi>), ApplyError> {
        let db = self
            .desired
            .databases
            .get(name)
            .ok_or_else(|| ApplyError::NotDesired(format!("database {name}")))?;
        let address = db.server.clone().ok_or_else(|| {
            ApplyError::NoServer(format!(
                "server {} has no admin password in the secret store",
                db.server_name.as_deref().unwrap_or("?")
            ))
        })?;
        Ok((db, dbserver::connect(address)))
    }

    /// The driver of the server a recorded (no longer declared) database is on: the
    /// server must still be in Settings, with its admin password.
    fn recorded_server(&self, record: &SharedRecord) -> Result<Arc<dyn DbServerApi>, ApplyError> {
        let address = self
            .desired
            .servers
            .get(&record.server)
            .cloned()
            .ok_or_else(|| {
                ApplyError::NoServer(format!(
                    "server {} is no longer in Settings (or its admin password is missing): \
                     database {} cannot be dropped",
                    record.server, record.database
                ))
            })?;
        Ok(dbserver::connect(address))
    }

    fn records(
        &self,
        change: impl FnOnce(&Records) -> std::io::Result<()>,
    ) -> Result<(), ApplyError> {
        match &self.options.state_dir {
            Some(dir) => {
                change(&Records::new(dir, &self.options.instance)).map_err(ApplyError::Records)
            }
            None => Ok(()),
        }
    }
}

/// Writes a file only its owner may read, in a folder only its owner may enter.
fn write_private(path: &Path, content: &[u8]) -> Result<(), ApplyError> {
    let failed = |source| ApplyError::WriteFile {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    crate::state::atomic::write_atomic_mode(path, content, Some(0o600)).map_err(failed)
}
