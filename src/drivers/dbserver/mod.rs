//! The shared-database-server driver: creates, observes, drops, dumps and restores one
//! database and its user on a PostgreSQL, MySQL or MariaDB server that berth does not run.
//!
//! This file holds the contract ([`DbServerApi`], its types and errors) and what every
//! engine shares: the names berth accepts and the [`Call`] that builds errors without a
//! password in them. Each engine has a file; the dump and restore programs have theirs.

mod mysql;
mod postgres;
mod tools;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::manifest::model::ServerEngine;
use crate::state::secrets::{Secret, redact_all};
use mysql::Mysql;
use postgres::Postgres;

/// How long connecting to a server (as the administrator or as a user) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest database or user name berth puts into SQL (PostgreSQL's limit).
const MAX_NAME: usize = 63;

/// The longest user name MySQL accepts.
const MAX_MYSQL_USER: usize = 32;

pub use crate::expand::databases::ServerAddress;

impl ServerAddress {
    /// How the server is named in messages: ``postgres server `main` (10.0.0.5:5432)``.
    fn describe(&self) -> String {
        let engine = engine_name(self.engine);
        if self.host.contains(':') {
            format!(
                "{engine} server `{}` ([{}]:{})",
                self.name, self.host, self.port
            )
        } else {
            format!(
                "{engine} server `{}` ({}:{})",
                self.name, self.host, self.port
            )
        }
    }
}

/// What the server holds for one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbState {
    /// The database exists.
    pub database_exists: bool,
    /// The user (role) exists.
    pub user_exists: bool,
    /// The user can log in with the password and connect to the database.
    pub login_ok: bool,
    /// The database exists and the user owns it (postgres) or has all privileges on it
    /// (mysql, mariadb); nothing more is checked.
    pub grants_ok: bool,
}

/// What berth was attempting when a call failed: the start of every [`DbError`]
/// message, ``failed to ensure database `blog` on postgres server `main` (10.0.0.5:5432)``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// `observe`, `ensure`, `drop`, `dump` or `restore`.
    pub action: &'static str,
    /// The database.
    pub database: String,
    /// The server, described: engine, name, host and port.
    pub server: String,
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "failed to {} database `{}` on {}",
            self.action, self.database, self.server
        )
    }
}

/// A failure managing a database on a shared server. Messages name the server and the
/// database, and never contain a password.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A name berth refuses to put into SQL.
    #[error("{at}: invalid {kind} name `{name}`: {reason}")]
    InvalidName {
        /// What failed, where.
        at: Box<Attempt>,
        /// `database` or `user`.
        kind: &'static str,
        /// The refused name.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// The server did not answer in time.
    #[error(
        "{at}: no answer within {} s when connecting as `{user}`; check that the server runs \
         and that this host can reach it",
        CONNECT_TIMEOUT.as_secs()
    )]
    ConnectTimeout {
        /// What failed, where.
        at: Box<Attempt>,
        /// The user berth connected as.
        user: String,
    },
    /// The connection failed for another reason than the password.
    #[error("{at}: cannot connect as `{user}`: {reason}")]
    Connect {
        /// What failed, where.
        at: Box<Attempt>,
        /// The user berth connected as.
        user: String,
        /// What the client or the server said.
        reason: String,
    },
    /// The server refused the administrator's password.
    #[error(
        "{at}: the server refused the password of `{user}` ({reason}); check the secret \
         `{secret}`"
    )]
    AdminAuth {
        /// What failed, where.
        at: Box<Attempt>,
        /// The administrative user.
        user: String,
        /// The secret holding its password.
        secret: String,
        /// What the server said.
        reason: String,
    },
    /// A statement failed.
    #[error("{at}: {step}: {reason}")]
    Statement {
        /// What failed, where.
        at: Box<Attempt>,
        /// The statement, in words (`create the database`).
        step: String,
        /// What the server said.
        reason: String,
    },
    /// The database does not exist (dump, restore).
    #[error("{at}: the database does not exist")]
    NoDatabase {
        /// What failed, where.
        at: Box<Attempt>,
    },
    /// After ensure set the password, the user still cannot log in.
    #[error(
        "{at}: user `{user}` cannot log in even after its password was set ({reason}); check \
         the server's client authentication rules (pg_hba.conf, the user's host)"
    )]
    UserLogin {
        /// What failed, where.
        at: Box<Attempt>,
        /// The user.
        user: String,
        /// What the server said.
        reason: String,
    },
    /// The engine's dump or restore tool is not installed on this host.
    #[error("{at}: none of {tools} is installed on this host; install {package}")]
    ToolMissing {
        /// What failed, where.
        at: Box<Attempt>,
        /// The programs looked for.
        tools: String,
        /// The package that has them.
        package: &'static str,
    },
    /// The dump or restore tool failed.
    #[error("{at}: {tool} {status}: {stderr}")]
    Tool {
        /// What failed, where.
        at: Box<Attempt>,
        /// The program.
        tool: String,
        /// How it ended (`exited with status 1`).
        status: String,
        /// The end of its standard error, passwords redacted.
        stderr: String,
    },
    /// A dump file could not be written or read.
    #[error("{at}: {path}: {source}")]
    File {
        /// What failed, where.
        at: Box<Attempt>,
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
}

impl DbError {
    /// What failed, where.
    pub fn attempt(&self) -> &Attempt {
        match self {
            DbError::InvalidName { at, .. }
            | DbError::ConnectTimeout { at, .. }
            | DbError::Connect { at, .. }
            | DbError::AdminAuth { at, .. }
            | DbError::Statement { at, .. }
            | DbError::NoDatabase { at }
            | DbError::UserLogin { at, .. }
            | DbError::ToolMissing { at, .. }
            | DbError::Tool { at, .. }
            | DbError::File { at, .. } => at,
        }
    }
}

/// One shared server, driven as its administrator.
#[async_trait]
pub trait DbServerApi: Send + Sync {
    /// What the server holds for `database` and `user`; `login_ok` is found by logging
    /// in as `user` with `password`.
    async fn observe(
        &self,
        database: &str,
        user: &str,
        password: &Secret,
    ) -> Result<DbState, DbError>;

    /// Makes `user` (able to log in, no other rights) own `database`, with `password`.
    /// Idempotent: it changes only what differs, so a second run changes nothing.
    async fn ensure(&self, database: &str, user: &str, password: &Secret) -> Result<(), DbError>;

    /// Drops `database` (closing its sessions) and `user`, when they exist. On an
    /// `Arc<dyn DbServerApi>`, call it as `DbServerApi::drop(&*driver, …)`: method
    /// syntax finds `Drop::drop` first.
    async fn drop(&self, database: &str, user: &str) -> Result<(), DbError>;

    /// Dumps `database` with the engine's own tool into `dest` (written atomically);
    /// returns its size in bytes.
    async fn dump(&self, database: &str, dest: &Path) -> Result<u64, DbError>;

    /// Restores a dump made by [`DbServerApi::dump`] into `database`, which must exist.
    async fn restore(&self, database: &str, src: &Path) -> Result<(), DbError>;
}

/// The driver for `address`.
pub fn connect(address: ServerAddress) -> Arc<dyn DbServerApi> {
    match address.engine {
        ServerEngine::Postgres => Arc::new(Postgres { address }),
        ServerEngine::Mysql | ServerEngine::Mariadb => Arc::new(Mysql { address }),
    }
}

/// The file extension of dumps for an engine: `dump` for postgres, `sql` for mysql and
/// mariadb.
pub fn dump_extension(engine: ServerEngine) -> &'static str {
    match engine {
        ServerEngine::Postgres => "dump",
        ServerEngine::Mysql | ServerEngine::Mariadb => "sql",
    }
}

fn engine_name(engine: ServerEngine) -> &'static str {
    match engine {
        ServerEngine::Postgres => "postgres",
        ServerEngine::Mysql => "mysql",
        ServerEngine::Mariadb => "mariadb",
    }
}

/// Refuses names outside `[a-z0-9_]{1,max}`: berth's validation already restricts them,
/// this keeps anything else out of SQL whatever the caller.
fn check_name(name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".to_owned());
    }
    if name.len() > max {
        return Err(format!("it is longer than {max} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        return Err(format!(
            "`{c}` is not allowed: use lowercase letters, digits and `_`"
        ));
    }
    Ok(())
}

/// Databases and users that belong to the server itself.
fn reserved(engine: ServerEngine, kind: &str, name: &str, admin: &str) -> Option<String> {
    let system: &[&str] = match (engine, kind) {
        (ServerEngine::Postgres, "database") => &["postgres", "template0", "template1"],
        (ServerEngine::Postgres, _) => &["postgres", "public"],
        (_, "database") => &["mysql", "information_schema", "performance_schema", "sys"],
        (_, _) => &["root", "mysql"],
    };
    if kind == "user" && name == admin {
        Some("it is the server's administrative user".to_owned())
    } else if system.contains(&name) {
        Some("it belongs to the server itself".to_owned())
    } else if engine == ServerEngine::Postgres && kind == "user" && name.starts_with("pg_") {
        Some("names starting with `pg_` are reserved by PostgreSQL".to_owned())
    } else {
        None
    }
}

/// One call: what is being done, to what, and which secrets must never show.
struct Call<'a> {
    address: &'a ServerAddress,
    action: &'static str,
    database: &'a str,
    /// Every secret the call handles, with the forms it takes inside SQL literals.
    secrets: Vec<Secret>,
}

impl<'a> Call<'a> {
    fn new(address: &'a ServerAddress, action: &'static str, database: &'a str) -> Call<'a> {
        let mut call = Call {
            address,
            action,
            database,
            secrets: Vec::new(),
        };
        call.hide(&address.admin_password);
        call
    }

    fn hide(&mut self, secret: &Secret) {
        let value = secret.expose();
        for form in [
            value.to_owned(),
            value.replace('\'', "''"),
            value.replace('\\', "\\\\").replace('\'', "''"),
        ] {
            let s = Secret::new(secret.name(), &form);
            if !self.secrets.contains(&s) {
                self.secrets.push(s);
            }
        }
    }

    fn scrub(&self, text: &str) -> String {
        redact_all(text, &self.secrets)
    }

    fn server(&self) -> String {
        self.address.describe()
    }

    fn attempt(&self) -> Box<Attempt> {
        Box::new(Attempt {
            action: self.action,
            database: self.database.to_owned(),
            server: self.server(),
        })
    }

    /// Checks the database and user names before any SQL is built.
    fn check(&self, user: Option<&str>) -> Result<(), DbError> {
        let engine = self.address.engine;
        let admin = self.address.admin_user.as_str();
        let user_max = match engine {
            ServerEngine::Postgres => MAX_NAME,
            ServerEngine::Mysql | ServerEngine::Mariadb => MAX_MYSQL_USER,
        };
        let mut names = vec![("database", self.database, MAX_NAME)];
        names.extend(user.map(|u| ("user", u, user_max)));
        for (kind, name, max) in names {
            let refused = check_name(name, max)
                .err()
                .or_else(|| reserved(engine, kind, name, admin));
            if let Some(reason) = refused {
                return Err(DbError::InvalidName {
                    at: self.attempt(),
                    kind,
                    name: name.to_owned(),
                    reason,
                });
            }
        }
        Ok(())
    }

    fn timeout(&self, user: &str) -> DbError {
        DbError::ConnectTimeout {
            at: self.attempt(),
            user: user.to_owned(),
        }
    }

    fn connect_failed(&self, user: &str, reason: &str) -> DbError {
        DbError::Connect {
            at: self.attempt(),
            user: user.to_owned(),
            reason: self.scrub(reason),
        }
    }

    fn admin_refused(&self, reason: &str) -> DbError {
        DbError::AdminAuth {
            at: self.attempt(),
            user: self.address.admin_user.clone(),
            secret: self.address.admin_password.name().to_owned(),
            reason: self.scrub(reason),
        }
    }

    fn statement(&self, step: &str, reason: &str) -> DbError {
        DbError::Statement {
            at: self.attempt(),
            step: step.to_owned(),
            reason: self.scrub(reason),
        }
    }

    fn no_database(&self) -> DbError {
        DbError::NoDatabase { at: self.attempt() }
    }

    fn user_login(&self, user: &str, reason: &str) -> DbError {
        DbError::UserLogin {
            at: self.attempt(),
            user: user.to_owned(),
            reason: self.scrub(reason),
        }
    }

    fn file(&self, path: &Path, source: std::io::Error) -> DbError {
        DbError::File {
            at: self.attempt(),
            path: path.display().to_string(),
            source,
        }
    }
}

/// How logging in went, when the server answered.
enum Login {
    Ok,
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_outside_the_safe_alphabet_are_refused() {
        assert_eq!(check_name("blog_2", 63), Ok(()));
        assert_eq!(check_name("", 63), Err("it is empty".to_owned()));
        assert_eq!(
            check_name("Blog", 63),
            Err("`B` is not allowed: use lowercase letters, digits and `_`".to_owned())
        );
        assert_eq!(
            check_name("a\"; DROP", 63),
            Err("`\"` is not allowed: use lowercase letters, digits and `_`".to_owned())
        );
        assert_eq!(
            check_name(&"a".repeat(64), 63),
            Err("it is longer than 63 characters".to_owned())
        );
    }

    #[test]
    fn the_server_s_own_databases_and_users_are_refused() {
        let pg = ServerEngine::Postgres;
        let my = ServerEngine::Mariadb;
        assert!(reserved(pg, "database", "template1", "admin").is_some());
        assert!(reserved(pg, "user", "pg_monitor", "admin").is_some());
        assert!(reserved(pg, "user", "admin", "admin").is_some());
        assert!(reserved(my, "database", "mysql", "root").is_some());
        assert!(reserved(my, "user", "root", "admin").is_some());
        assert_eq!(reserved(my, "database", "blog", "root"), None);
        assert_eq!(reserved(pg, "user", "blog", "postgres"), None);
    }
}
