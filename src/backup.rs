//! Database backups: dumps with the engine's own tool, written atomically under
//! `<state-dir>/backups/<database>/<timestamp>.<ext>`, rotated to the newest `keep`,
//! listed and restored. The controller runs them on each database's schedule.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::drivers::dbserver::{self, DbServerApi};
use crate::drivers::docker::DockerApi;
use crate::expand::databases::DesiredDatabase;
use crate::manifest::model::{DatabaseMode, Engine, Runtime};

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// An external database is backed up where it runs.
    #[error("Database/{0}: {1}")]
    Unsupported(String, &'static str),
    /// A managed database's dump needs the Docker daemon.
    #[error("Database/{name}: {cause}")]
    Docker {
        /// The database.
        name: String,
        /// What the daemon said.
        cause: crate::drivers::docker::DockerError,
    },
    /// The server's admin password is missing.
    #[error("Database/{0}: its server's admin password is not in the secret store")]
    NoServer(String),
    /// No task container of a Swarm service can run the command here.
    #[error("Database/{name}: {cause}")]
    Task {
        /// The database.
        name: String,
        /// Why.
        cause: crate::runtime::swarm::TaskError,
    },
    /// The dump or restore itself failed.
    // The cause is part of the message (not a `source`), so it is printed once.
    #[error("Database/{name}: {cause}")]
    Server {
        /// The database.
        name: String,
        /// What the server or tool said.
        cause: dbserver::DbError,
    },
    /// Another berth held the instance's lock for too long.
    #[error(transparent)]
    Locked(#[from] crate::state::lock::LockError),
    /// The backup folder could not be used.
    #[error("failed to {what} {}: {cause}; check the state directory's permissions", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The file to restore is not one of this database's backups.
    #[error("{}: not a backup file of Database/{name}", path.display())]
    NotABackup {
        /// The database.
        name: String,
        /// The file.
        path: PathBuf,
    },
}

/// One dump on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupFile {
    /// The Database resource.
    pub database: String,
    /// The file.
    pub path: PathBuf,
    /// When it was taken (UTC, `20261122T031500Z`).
    pub taken: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// The folder of a database's backups.
pub fn folder(state_dir: &Path, database: &str) -> PathBuf {
    state_dir.join("backups").join(database)
}

fn driver(db: &DesiredDatabase) -> Result<std::sync::Arc<dyn DbServerApi>, BackupError> {
    if db.mode == DatabaseMode::External {
        return Err(BackupError::Unsupported(
            db.name.clone(),
            "an external database is backed up where it runs",
        ));
    }
    let server = db
        .server
        .clone()
        .ok_or_else(|| BackupError::NoServer(db.name.clone()))?;
    Ok(dbserver::connect(server))
}

fn extension(db: &DesiredDatabase) -> &'static str {
    match (db.mode, db.engine) {
        (DatabaseMode::Managed, Engine::Postgres) => "dump",
        (DatabaseMode::Managed, Engine::Mysql | Engine::Mariadb) => "sql",
        (DatabaseMode::Managed, Engine::Redis) => "rdb",
        (DatabaseMode::Managed, Engine::Mongo) => "archive",
        _ => db
            .server
            .as_ref()
            .map_or("dump", |s| dbserver::dump_extension(s.engine)),
    }
}

/// The commands that dump and restore a managed database inside its container, with
/// the engine's own tools; passwords come from the container's environment, never
/// from berth's command line.
fn managed_commands(db: &DesiredDatabase) -> (Vec<String>, Option<Vec<String>>) {
    let sh = |script: &str| -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into(), db.database.clone()]
    };
    match db.engine {
        Engine::Postgres => (
            vec![
                "pg_dump".into(),
                "-Fc".into(),
                "-U".into(),
                db.user.clone(),
                db.database.clone(),
            ],
            Some(vec![
                "pg_restore".into(),
                "--clean".into(),
                "--if-exists".into(),
                "--no-owner".into(),
                "--single-transaction".into(),
                "--exit-on-error".into(),
                "-U".into(),
                db.user.clone(),
                "-d".into(),
                db.database.clone(),
            ]),
        ),
        Engine::Mysql => (
            sh(
                "MYSQL_PWD=\"$MYSQL_ROOT_PASSWORD\" exec mysqldump -uroot --single-transaction --routines --triggers \"$0\"",
            ),
            Some(sh(
                "MYSQL_PWD=\"$MYSQL_ROOT_PASSWORD\" exec mysql -uroot \"$0\"",
            )),
        ),
        Engine::Mariadb => (
            sh(
                "MYSQL_PWD=\"$MARIADB_ROOT_PASSWORD\" exec mariadb-dump -uroot --single-transaction --routines --triggers \"$0\"",
            ),
            Some(sh(
                "MYSQL_PWD=\"$MARIADB_ROOT_PASSWORD\" exec mariadb -uroot \"$0\"",
            )),
        ),
        // An RDB snapshot; restoring one means replacing dump.rdb while redis is stopped.
        Engine::Redis => (
            // `REDISCLI_AUTH`, not `-a`: an argv shows in `ps`.
            sh("REDISCLI_AUTH=\"$REDIS_PASSWORD\" exec redis-cli --rdb -"),
            None,
        ),
        Engine::Mongo => (
            sh(
                "exec mongodump --archive --username \"$MONGO_INITDB_ROOT_USERNAME\" --password \"$MONGO_INITDB_ROOT_PASSWORD\" --authenticationDatabase admin --db \"$0\"",
            ),
            Some(sh(
                "exec mongorestore --archive --drop --username \"$MONGO_INITDB_ROOT_USERNAME\" --password \"$MONGO_INITDB_ROOT_PASSWORD\" --authenticationDatabase admin",
            )),
        ),
    }
}

/// Where a managed database's command runs, and the command as it runs there: its
/// container; under `runtime: swarm`, its task's container on this node, with the
/// secrets loaded from their files (a task's environment does not hold them).
async fn managed_target(
    db: &DesiredDatabase,
    docker: &dyn DockerApi,
    cmd: &[String],
) -> Result<(String, Vec<String>), BackupError> {
    if db.runtime == Runtime::Docker {
        return Ok((crate::desired::container_name(&db.name, 1), cmd.to_vec()));
    }
    let container = crate::runtime::swarm::task_container(docker, &db.name)
        .await
        .map_err(|e| BackupError::Task {
            name: db.name.clone(),
            cause: e,
        })?;
    Ok((container, crate::runtime::swarm::with_secrets(cmd)))
}

/// Dumps `db` into its folder under `state_dir` (or into `dest`, a file or a folder),
/// then keeps only the newest `keep` files of its folder.
pub async fn run(
    db: &DesiredDatabase,
    state_dir: &Path,
    dest: Option<&Path>,
    keep: Option<u32>,
    docker: Option<&dyn DockerApi>,
) -> Result<BackupFile, BackupError> {
    let server = match db.mode {
        DatabaseMode::Managed => None,
        _ => Some(driver(db)?),
    };
    let taken = compact_now();
    let file_name = format!("{taken}.{}", extension(db));
    let path = match dest {
        Some(d) if d.is_dir() => d.join(&file_name),
        Some(d) => d.to_path_buf(),
        None => folder(state_dir, &db.name).join(&file_name),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| BackupError::Io {
            what: "create",
            path: dir.to_path_buf(),
            cause: source,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Dumps hold the data: readable by berth's user only.
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    let bytes = match server {
        Some(server) => {
            server
                .dump(&db.database, &path)
                .await
                .map_err(|source| BackupError::Server {
                    name: db.name.clone(),
                    cause: source,
                })?
        }
        None => {
            let docker = docker.ok_or(BackupError::Unsupported(
                db.name.clone(),
                "a managed database is dumped in its container: the Docker daemon is needed",
            ))?;
            let (dump, _) = managed_commands(db);
            let (container, dump) = managed_target(db, docker, &dump).await?;
            docker
                .exec(&container, &dump, None, Some(&path))
                .await
                .map_err(|source| BackupError::Docker {
                    name: db.name.clone(),
                    cause: source,
                })?
        }
    };
    if let (Some(keep), None) = (keep, dest) {
        rotate(state_dir, &db.name, keep as usize)?;
    }
    Ok(BackupFile {
        database: db.name.clone(),
        path,
        taken,
        bytes,
    })
}

/// The backups of `database` (or of every database), oldest first.
pub fn list(state_dir: &Path, database: Option<&str>) -> Result<Vec<BackupFile>, BackupError> {
    let root = state_dir.join("backups");
    let names: Vec<String> = match database {
        Some(d) => vec![d.to_owned()],
        None => match std::fs::read_dir(&root) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                names
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(BackupError::Io {
                    what: "read",
                    path: root,
                    cause: source,
                });
            }
        },
    };
    let mut out = Vec::new();
    for name in names {
        let dir = root.join(&name);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(BackupError::Io {
                    what: "read",
                    path: dir,
                    cause: source,
                });
            }
        };
        let mut files: Vec<BackupFile> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                // `<timestamp>.<ext>`; temporary files of a dump under way are skipped.
                let (taken, ext) = file.split_once('.')?;
                if taken.len() != 16 || ext.contains('.') || ext.ends_with("tmp") {
                    return None;
                }
                Some(BackupFile {
                    database: name.clone(),
                    taken: taken.to_owned(),
                    bytes: e.metadata().ok()?.len(),
                    path: e.path(),
                })
            })
            .collect();
        files.sort_by(|a, b| a.taken.cmp(&b.taken));
        out.extend(files);
    }
    Ok(out)
}

/// Removes all but the newest `keep` backups of `database`; returns how many went.
pub fn rotate(state_dir: &Path, database: &str, keep: usize) -> Result<usize, BackupError> {
    let files = list(state_dir, Some(database))?;
    let excess = files.len().saturating_sub(keep);
    for f in &files[..excess] {
        std::fs::remove_file(&f.path).map_err(|source| BackupError::Io {
            what: "remove",
            path: f.path.clone(),
            cause: source,
        })?;
    }
    Ok(excess)
}

/// Restores `file` into `db` (its current content is replaced).
pub async fn restore(
    db: &DesiredDatabase,
    file: &Path,
    docker: Option<&dyn DockerApi>,
) -> Result<(), BackupError> {
    if !file.is_file() {
        return Err(BackupError::NotABackup {
            name: db.name.clone(),
            path: file.to_path_buf(),
        });
    }
    if file.extension().and_then(|e| e.to_str()) != Some(extension(db)) {
        return Err(BackupError::NotABackup {
            name: db.name.clone(),
            path: file.to_path_buf(),
        });
    }
    if db.mode == DatabaseMode::Managed {
        let (_, restore) = managed_commands(db);
        let restore = restore.ok_or(BackupError::Unsupported(
            db.name.clone(),
            "a redis snapshot is restored by stopping redis and putting the file in its \
             volume as dump.rdb",
        ))?;
        let docker = docker.ok_or(BackupError::Unsupported(
            db.name.clone(),
            "a managed database is restored in its container: the Docker daemon is needed",
        ))?;
        let (container, restore) = managed_target(db, docker, &restore).await?;
        docker
            .exec(&container, &restore, Some(file), None)
            .await
            .map_err(|source| BackupError::Docker {
                name: db.name.clone(),
                cause: source,
            })?;
        return Ok(());
    }
    driver(db)?
        .restore(&db.database, file)
        .await
        .map_err(|source| BackupError::Server {
            name: db.name.clone(),
            cause: source,
        })
}

/// The current UTC time as `20261122T031500Z`.
fn compact_now() -> String {
    let text = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    text.replace(['-', ':'], "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_rotates_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let db = folder(dir.path(), "blog");
        std::fs::create_dir_all(&db).unwrap();
        for t in ["20261120T030000Z", "20261121T030000Z", "20261122T030000Z"] {
            std::fs::write(db.join(format!("{t}.dump")), t).unwrap();
        }
        std::fs::write(db.join("20261123T030000Z.dump.tmp"), "partial").unwrap();
        let files = list(dir.path(), None).unwrap();
        let taken: Vec<&str> = files.iter().map(|f| f.taken.as_str()).collect();
        assert_eq!(
            taken,
            ["20261120T030000Z", "20261121T030000Z", "20261122T030000Z"]
        );
        assert_eq!(rotate(dir.path(), "blog", 2).unwrap(), 1);
        let files = list(dir.path(), Some("blog")).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].taken, "20261121T030000Z");
        assert!(list(dir.path(), Some("other")).unwrap().is_empty());
        assert_eq!(compact_now().len(), 16);
    }
}
