//! Database backups: dumps with the engine's own tool, written atomically under
//! `<state-dir>/backups/<database>/<timestamp>.<ext>`, rotated to the newest `keep`,
//! listed and restored. The controller runs them on each database's schedule.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::databases::DesiredDatabase;
use crate::drivers::dbserver::{self, DbServerApi};
use crate::manifest::model::DatabaseMode;

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Only shared databases are dumped by berth in this version.
    #[error(
        "Database/{0}: berth backs up shared databases; a {1} database is backed up where it \
         runs (for a managed one, run the engine's dump tool in its container)"
    )]
    Unsupported(String, &'static str),
    /// The server's admin password is missing.
    #[error("Database/{0}: its server's admin password is not in the secret store")]
    NoServer(String),
    /// The dump or restore itself failed.
    #[error("Database/{name}: {source}")]
    Server {
        /// The database.
        name: String,
        /// What the server or tool said.
        #[source]
        source: dbserver::DbError,
    },
    /// The backup folder could not be used.
    #[error("failed to {what} {}: {source}; check the state directory's permissions", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
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
    match db.mode {
        DatabaseMode::Shared => {}
        DatabaseMode::Managed => return Err(BackupError::Unsupported(db.name.clone(), "managed")),
        DatabaseMode::External => {
            return Err(BackupError::Unsupported(db.name.clone(), "external"));
        }
    }
    let server = db
        .server
        .clone()
        .ok_or_else(|| BackupError::NoServer(db.name.clone()))?;
    Ok(dbserver::connect(server))
}

fn extension(db: &DesiredDatabase) -> &'static str {
    db.server
        .as_ref()
        .map_or("dump", |s| dbserver::dump_extension(s.engine))
}

/// Dumps `db` into its folder under `state_dir` (or into `dest`, a file or a folder),
/// then keeps only the newest `keep` files of its folder.
pub async fn run(
    db: &DesiredDatabase,
    state_dir: &Path,
    dest: Option<&Path>,
    keep: Option<u32>,
) -> Result<BackupFile, BackupError> {
    let server = driver(db)?;
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
            source,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Dumps hold the data: readable by berth's user only.
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    let bytes = server
        .dump(&db.database, &path)
        .await
        .map_err(|source| BackupError::Server {
            name: db.name.clone(),
            source,
        })?;
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
                    source,
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
                    source,
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
            source,
        })?;
    }
    Ok(excess)
}

/// Restores `file` into `db` (its current content is replaced).
pub async fn restore(db: &DesiredDatabase, file: &Path) -> Result<(), BackupError> {
    let server = driver(db)?;
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
    server
        .restore(&db.database, file)
        .await
        .map_err(|source| BackupError::Server {
            name: db.name.clone(),
            source,
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
