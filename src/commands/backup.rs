//! `berth backup run|list|restore`: database dumps by hand.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use berth::backup;
use berth::drivers::docker::{BollardDocker, DockerApi};
use berth::expand::databases::{self, DesiredDatabase};
use berth::manifest;
use berth::manifest::model::DatabaseMode;
use berth::state::StateDir;
use berth::state::secrets::SecretStore;

use crate::cli::{BackupCommand, Format, LockedState};

pub fn exec(command: &BackupCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    match command {
        BackupCommand::Run {
            db,
            path,
            to,
            lock,
            output,
        } => {
            let (state_dir, lock_timeout) = (&lock.state_dir, &lock.lock_timeout);
            let database = declared(path, lock, db)?;
            let keep = database.backup.as_ref().map(|b| b.keep);
            let state = StateDir::new(state_dir, &lock.instance);
            let file = runtime.block_on(async {
                let _lock = super::lock(&state, "backup", *lock_timeout).await?;
                let docker = docker_for(&database).await?;
                backup::run(&database, state_dir, to.as_deref(), keep, docker.as_deref())
                    .await
                    .map_err(anyhow::Error::from)
            })?;
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&file)?),
                Format::Text => println!(
                    "backed up Database/{} to {} ({} bytes)",
                    file.database,
                    file.path.display(),
                    file.bytes
                ),
            }
        }
        BackupCommand::List {
            db,
            state_dir,
            output,
        } => {
            let files = backup::list(state_dir, db.as_deref())?;
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&files)?),
                Format::Text if files.is_empty() => println!("no backups"),
                Format::Text => {
                    for f in files {
                        println!(
                            "{:<20} {}  {:>10} bytes  {}",
                            f.database,
                            f.taken,
                            f.bytes,
                            f.path.display()
                        );
                    }
                }
            }
        }
        BackupCommand::Restore {
            db,
            file,
            path,
            lock,
        } => {
            let (state_dir, lock_timeout) = (&lock.state_dir, &lock.lock_timeout);
            let database = declared(path, lock, db)?;
            let state = StateDir::new(state_dir, &lock.instance);
            runtime.block_on(async {
                let _lock = super::lock(&state, "restore", *lock_timeout).await?;
                let docker = docker_for(&database).await?;
                backup::restore(&database, file, docker.as_deref())
                    .await
                    .map_err(anyhow::Error::from)
            })?;
            println!("restored {} into Database/{db}", file.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The Docker daemon, for a managed database (dumped in its container).
async fn docker_for(db: &DesiredDatabase) -> anyhow::Result<Option<Box<dyn DockerApi>>> {
    if db.mode != DatabaseMode::Managed {
        return Ok(None);
    }
    Ok(Some(Box::new(BollardDocker::connect().await?)))
}

/// The database `name` as the manifests under `path` declare it, credentials resolved.
fn declared(path: &Path, lock: &LockedState, name: &str) -> anyhow::Result<DesiredDatabase> {
    let state_dir = &lock.state_dir;
    let policy = super::host_policy(state_dir, lock.policy.as_deref())?;
    let manifests = manifest::load_dir_with_policy(path, &policy)
        .map_err(|d| anyhow::anyhow!("{}the manifests under {} are invalid", d, path.display()))?;
    let store = SecretStore::new(state_dir);
    let servers = databases::servers(&manifests, &store);
    let (mut all, _) = databases::desired(&manifests, &store, &servers);
    match all.remove(name) {
        Some(db) => Ok(db),
        None => bail!(
            "no Database `{name}` under {}; declared: {}",
            path.display(),
            manifests
                .databases
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
