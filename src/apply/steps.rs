//! One action's steps, carried out: Docker objects through the runtime and the Docker
//! driver, shared databases through their server's driver, proxy files through the
//! proxy driver, secrets and files into the state dir.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;

use super::{ApplyOptions, OnProgress, Outcome, Progress, Status};
use crate::desired::labels::{ObjectKind, VARIABLE, owner_labels, volume_labels};
use crate::desired::{Desired, DesiredApp, container_name};
use crate::drivers::batch::{Batch, Change, ProxyError};
use crate::drivers::dbserver::{self, DbError, DbServerApi};
use crate::drivers::docker::{DockerApi, DockerError};
use crate::expand::databases::DesiredDatabase;
use crate::plan::{Action, Op, Step, Target};
use crate::runtime::{AppRuntime, Replace, Running, RuntimeError};
use crate::state::certs::{CertificateRecord, unix_now};
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
    /// An image could not be built.
    #[error("{0}")]
    Build(String),
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
            .filter(|_| matches!(a.target, Target::App | Target::Database))
        {
            let needs_image = a.steps.iter().any(|s| {
                matches!(
                    s,
                    Step::Run { .. }
                        | Step::Replace { .. }
                        | Step::CreateService { .. }
                        | Step::UpdateService { .. }
                )
            });
            // The image is built before anything needs it; a failed build leaves the
            // running containers as they are.
            for step in &a.steps {
                if let Step::Build { app, .. } = step {
                    let built = super::build::build(
                        self.desired,
                        self.docker,
                        self.options,
                        &self.on_progress,
                        app,
                    )
                    .await;
                    if let Err(e) = built.map_err(ApplyError::Build) {
                        return self.finish(a, Status::Failed(self.scrub(&e.to_string())));
                    }
                }
            }
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

    /// Proxy files: written (and checked) and removed in one batch, one reload; then
    /// the steps that wait for the switch (an app's old container removed). A Domain
    /// whose live file nginx refused is reported failed, changed or not.
    pub(super) async fn run_proxy(
        &self,
        actions: &[(usize, &Action)],
        failed: &BTreeSet<(Target, String)>,
    ) -> Vec<(usize, Outcome)> {
        let mut changes = BTreeMap::new();
        let mut files: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut blocked = BTreeMap::new();
        for &(i, a) in actions {
            if let Some(why) = super::blocked_by(a, failed) {
                blocked.insert(i, why);
                continue;
            }
            for step in &a.steps {
                let (key, change) = match step {
                    Step::WriteProxyFile { domain } => match self.desired.proxy_files.get(domain) {
                        Some(f) => (domain, Change::Write(f.content.clone())),
                        None => continue,
                    },
                    Step::RemoveProxyFile { domain } => (domain, Change::Remove),
                    _ => continue,
                };
                changes.insert(key.clone(), change);
                files.entry(i).or_default().push(key.clone());
            }
        }
        for &(i, a) in actions {
            if files.contains_key(&i) {
                (self.on_progress)(Progress::Started {
                    target: a.target,
                    name: a.name.clone(),
                });
            }
        }
        let proxy = self.options.proxy.clone();
        let batch = match changes.is_empty() {
            true => Batch::default(),
            false => tokio::task::spawn_blocking(move || proxy.apply(&changes, false))
                .await
                .unwrap_or_default(),
        };
        for w in &batch.warnings {
            tracing::warn!("{w}");
        }
        // Each Domain's result from its files' (the file of a site serves several).
        let mut status: BTreeMap<usize, Status> = BTreeMap::new();
        for &(i, a) in actions {
            let result = if let Some(why) = blocked.get(&i) {
                match a.op {
                    Op::Noop => Status::Unchanged,
                    _ => Status::Skipped(why.clone()),
                }
            } else if let Some(message) = self
                .desired
                .file_of(&a.name)
                .and_then(|key| batch.broken.get(key))
                .filter(|_| a.op != Op::Delete)
            {
                Status::Failed(format!(
                    "{message}; its live file was taken out so that the others could load \
                     (degraded)"
                ))
            } else {
                let mut result = match a.op {
                    Op::Noop => Status::Unchanged,
                    Op::Conflict => Status::Conflict(a.reasons.join("; ")),
                    _ => Status::Done,
                };
                for key in files.get(&i).into_iter().flatten() {
                    match batch.files.get(key) {
                        Some(Ok(())) => {}
                        Some(Err(e)) => {
                            result = Status::Failed(match e {
                                ProxyError::Reload(_) => format!(
                                    "{e}; the files are as before and the change is retried \
                                     next pass (degraded)"
                                ),
                                _ => format!("{e}; the live config is unchanged (degraded)"),
                            });
                            break;
                        }
                        None => {
                            result =
                                Status::Failed("the proxy did not report on this domain".into());
                            break;
                        }
                    }
                }
                result
            };
            status.insert(i, result);
        }
        // Then what waits for the switch, once every Domain it needs has switched.
        let done = |target: Target, name: &str, status: &BTreeMap<usize, Status>| {
            actions.iter().all(|&(j, b)| {
                b.target != target
                    || b.name != name
                    || matches!(status.get(&j), Some(Status::Done | Status::Unchanged))
            })
        };
        for &(i, a) in actions {
            if !matches!(status.get(&i), Some(Status::Done)) {
                continue;
            }
            let after: Vec<&Step> = a
                .steps
                .iter()
                .filter(|s| {
                    !matches!(
                        s,
                        Step::WriteProxyFile { .. } | Step::RemoveProxyFile { .. }
                    )
                })
                .collect();
            if after.is_empty() {
                continue;
            }
            let waiting = a
                .needs
                .iter()
                .filter(|n| n.target == Target::Domain)
                .find(|n| !done(n.target, &n.name, &status));
            if let Some(n) = waiting {
                status.insert(
                    i,
                    Status::Failed(format!(
                        "domain {} did not switch: the old container keeps running",
                        n.name
                    )),
                );
                continue;
            }
            for step in after {
                if let Err(e) = self.step(step).await {
                    status.insert(i, Status::Failed(self.scrub(&e.to_string())));
                    break;
                }
            }
        }
        actions
            .iter()
            .map(|&(i, a)| {
                let result = status.remove(&i).unwrap_or(Status::Unchanged);
                (i, self.finish(a, result))
            })
            .collect()
    }

    /// Certificates: each due one ordered from the CA (concurrently, a few at a time),
    /// stored with its record (or the failure recorded, for the backoff), then the
    /// proxy files that serve the new ones written in one batch and the proxy reloaded.
    pub(super) async fn run_certificates(
        &self,
        actions: &[(usize, &Action)],
        failed: &BTreeSet<(Target, String)>,
    ) -> Vec<(usize, Outcome)> {
        let mut out = Vec::new();
        let mut orders = Vec::new();
        for &(i, a) in actions {
            let issue = a.steps.iter().find_map(|s| match s {
                Step::IssueCertificate { domain, hosts } => Some((domain, hosts)),
                _ => None,
            });
            match (issue, super::blocked_by(a, failed)) {
                (Some(_), Some(why)) => out.push((i, self.finish(a, Status::Skipped(why)))),
                (Some((domain, hosts)), None) => {
                    (self.on_progress)(Progress::Started {
                        target: a.target,
                        name: a.name.clone(),
                    });
                    orders.push((i, a, domain.clone(), hosts.clone()));
                }
                (None, _) => out.push((i, self.run(a).await)),
            }
        }
        // Positions, not references, go through the stream (see `run_rounds`).
        let results: Vec<(usize, Result<(), String>)> = futures_util::stream::iter(0..orders.len())
            .map(|k| {
                let (domain, hosts) = (orders[k].2.clone(), orders[k].3.clone());
                async move { (k, self.issue(&domain, &hosts).await) }
            })
            .buffer_unordered(4)
            .collect()
            .await;
        let issued: Vec<(usize, &Action, Result<(), String>)> = results
            .into_iter()
            .map(|(k, r)| (orders[k].0, orders[k].1, r))
            .collect();
        let mut changes = BTreeMap::new();
        for (_, a, result) in &issued {
            if result.is_err() {
                continue;
            }
            for step in &a.steps {
                if let Step::ServeCertificate { file } = step {
                    let content = self
                        .desired
                        .certified_files
                        .get(file)
                        .or_else(|| self.desired.proxy_files.get(file));
                    if let Some(f) = content {
                        changes.insert(file.clone(), Change::Write(f.content.clone()));
                    }
                }
            }
        }
        let any = issued.iter().any(|(_, _, r)| r.is_ok());
        let proxy = self.options.proxy.clone();
        let batch = match any {
            true => tokio::task::spawn_blocking(move || proxy.apply(&changes, true))
                .await
                .unwrap_or_default(),
            false => Batch::default(),
        };
        for (i, a, result) in issued {
            let served = a.steps.iter().find_map(|s| match s {
                Step::ServeCertificate { file } => batch.files.get(file),
                _ => None,
            });
            let status = match (result, served, &batch.reload_failed) {
                (Err(e), _, _) => Status::Failed(format!(
                    "{e}; the certificate in place (if any) keeps serving"
                )),
                (Ok(()), Some(Err(e)), _) => Status::Failed(format!(
                    "the certificate was issued, but the proxy did not take it: {e}"
                )),
                (Ok(()), _, Some(e)) => Status::Failed(format!(
                    "the certificate was issued, but the proxy did not take it: {e}"
                )),
                (Ok(()), _, None) => Status::Done,
            };
            out.push((i, self.finish(a, status)));
        }
        out
    }

    /// Orders `domain`'s certificate and stores it, or records the failure.
    async fn issue(&self, domain: &str, hosts: &[String]) -> Result<(), String> {
        let acme = self
            .desired
            .acme
            .as_ref()
            .ok_or("no ACME account in the desired state")?;
        let key = acme
            .key
            .as_ref()
            .ok_or("the ACME account key was not generated")?;
        let state = self.state_dir().map_err(|e| e.to_string())?;
        let certs = state.certificates();
        let instance = &self.options.instance;
        let previous = certs.read(domain).record.unwrap_or_default();
        let result = crate::drivers::acme::Acme::of(acme)
            .issue(key, hosts)
            .await
            .map_err(|e| e.to_string())
            .and_then(|issued| {
                let info = crate::state::certs::parse(&issued.chain_pem)
                    .map_err(|e| format!("the CA sent a certificate berth cannot read: {e}"))?;
                let record = CertificateRecord::issued(instance, &info, unix_now());
                certs
                    .store(domain, &issued.chain_pem, &issued.key_pem, &record)
                    .map_err(|e| {
                        format!(
                            "failed to store the certificate in {}: {e}",
                            certs.dir_of(domain).display()
                        )
                    })
            });
        if let Err(e) = &result {
            let record = previous.failed(instance, unix_now(), e, domain);
            if let Err(w) = certs.save_record(domain, &record) {
                tracing::warn!(%domain, "failed to record the failed order: {w}");
            }
        }
        result
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
            Step::CreateNetwork {
                name,
                internal,
                overlay: false,
            } => Ok(d
                .create_network(
                    name,
                    &owner_labels(instance, ObjectKind::Network, name),
                    *internal,
                )
                .await?),
            Step::CreateNetwork {
                name,
                internal,
                overlay: true,
            } => Ok(self
                .swarm()?
                .create_overlay_network(
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
                let labels = volume_labels(instance, app, volume, *delete_on_prune);
                Ok(d.create_volume(name, &labels).await?)
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
                handover,
            } => {
                let old = Running {
                    replica: *replica,
                    id: old_id,
                    name: old_name,
                };
                let how = match (*handover, *start_first) {
                    (true, _) => Replace::Handover,
                    (false, true) => Replace::StartFirst,
                    (false, false) => Replace::StopFirst,
                };
                Ok(self.runtime.replace(self.app(app)?, old, how).await?)
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
            Step::RemoveCertificate { domain } => self
                .state_dir()?
                .certificates()
                .remove(domain)
                .map_err(|source| ApplyError::WriteFile {
                    path: format!("certs/{domain}"),
                    source,
                }),
            Step::CreateService { app } => Ok(self.runtime.create_service(self.app(app)?).await?),
            Step::UpdateService {
                app, id, version, ..
            } => Ok(self
                .runtime
                .update_service(self.app(app)?, id, *version)
                .await?),
            Step::RemoveService { id, .. } => Ok(self.runtime.remove_service(id).await?),
            Step::CreateSwarmSecret {
                app,
                variable,
                name,
            } => {
                let owner = self.app(app)?;
                let secret = owner.secrets.get(variable).ok_or_else(|| {
                    ApplyError::NotDesired(format!("the secret of variable {variable} of {app}"))
                })?;
                let mut labels = owner_labels(instance, owner.kind, app);
                labels.insert(VARIABLE.to_owned(), variable.clone());
                // A secret of this name that berth owns would have been observed: one
                // in the way is someone else's, and never used in its place.
                self.swarm()?
                    .create_secret(name, secret.expose(), &labels)
                    .await
                    .map(drop)
                    .map_err(|e| match e {
                        e @ DockerError::Call {
                            status: Some(409), ..
                        } => ApplyError::Runtime(RuntimeError::NameTaken {
                            name: name.clone(),
                            source: e,
                        }),
                        e => e.into(),
                    })
            }
            Step::RemoveSwarmSecret { id, .. } => match self.swarm()?.remove_secret(id).await {
                Err(e) if e.is_not_found() => Ok(()),
                other => other.map_err(ApplyError::from),
            },
            // Proxy files are written in one batch (see `run_proxy`), certificates
            // ordered in theirs (see `run_certificates`).
            Step::WriteProxyFile { .. }
            | Step::RemoveProxyFile { .. }
            | Step::IssueCertificate { .. }
            | Step::ServeCertificate { .. } => Ok(()),
            // Built before the other steps (see `run`).
            Step::Build { .. } => Ok(()),
        }
    }

    fn swarm(&self) -> Result<&dyn crate::drivers::docker::SwarmApi, ApplyError> {
        self.docker
            .swarm()
            .ok_or(ApplyError::Runtime(RuntimeError::Unsupported(
                "this Docker daemon has no Swarm calls",
            )))
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
