//! The shared-database-server driver: creates, observes, drops, dumps and restores one
//! database and its user on a PostgreSQL, MySQL or MariaDB server that berth does not run.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tracing::{debug, info};

use crate::manifest::model::ServerEngine;
use crate::state::secrets::{Secret, redact_all};

/// How long connecting to a server (as the administrator or as a user) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest database or user name berth puts into SQL (PostgreSQL's limit).
const MAX_NAME: usize = 63;

/// The longest user name MySQL accepts.
const MAX_MYSQL_USER: usize = 32;

/// How much of a failing tool's standard error goes into the error.
const MAX_STDERR: usize = 2000;

/// How to reach a shared server as its administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    /// The server's key in `Settings.servers`.
    pub name: String,
    /// Which engine it runs.
    pub engine: ServerEngine,
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The administrative user berth connects as.
    pub admin_user: String,
    /// That user's password (its name is shown in errors, never its value).
    pub admin_password: Secret,
}

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

// ---------------------------------------------------------------------------------
// Names and literals

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

/// A PostgreSQL identifier, quoted.
fn pg_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL string literal; the `E''` form when it holds a backslash, so that the
/// meaning does not depend on `standard_conforming_strings`.
fn pg_literal(text: &str) -> String {
    if text.contains('\\') {
        format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", text.replace('\'', "''"))
    }
}

/// A MySQL identifier, quoted.
fn my_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A MySQL string literal (the session runs without `NO_BACKSLASH_ESCAPES`).
fn my_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The database of a MySQL `GRANT … ON db.*`: `_` is a wildcard there, so it is escaped
/// lest the grant reach other databases (`a_b` would match `axb`).
fn my_grant_db(database: &str) -> String {
    my_ident(&database.replace('_', "\\_"))
}

// ---------------------------------------------------------------------------------
// One call: what is being done, to what, and which secrets must never show

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

// ---------------------------------------------------------------------------------
// PostgreSQL

struct Postgres {
    address: ServerAddress,
}

/// A PostgreSQL connection and the task that drives it.
struct PgSession {
    client: tokio_postgres::Client,
    task: tokio::task::JoinHandle<()>,
}

impl PgSession {
    /// Ends the session and waits until it has ended, so that none outlives the call
    /// (an idle session would hold the database, and count against its limits).
    async fn close(self) {
        drop(self.client);
        let _ = self.task.await;
    }
}

impl std::ops::Deref for PgSession {
    type Target = tokio_postgres::Client;

    fn deref(&self) -> &tokio_postgres::Client {
        &self.client
    }
}

/// Why a PostgreSQL connection failed.
enum PgOpenError {
    Timeout,
    /// The server answered with an error (bad password, no such database, no right).
    Server(tokio_postgres::Error),
    Other(tokio_postgres::Error),
}

fn pg_reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = db.message().to_owned();
            if let Some(detail) = db.detail() {
                text.push_str(": ");
                text.push_str(detail);
            }
            text
        }
        None => {
            // The client's message is terse ("error connecting to server"); its source
            // says why ("Connection refused").
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let more = s.to_string();
                if !text.contains(&more) {
                    text.push_str(": ");
                    text.push_str(&more);
                }
                source = s.source();
            }
            text
        }
    }
}

impl Postgres {
    async fn open(
        &self,
        user: &str,
        password: &str,
        dbname: &str,
    ) -> Result<PgSession, PgOpenError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.address.host)
            .port(self.address.port)
            .user(user)
            .password(password)
            .dbname(dbname)
            .application_name("berth");
        match tokio::time::timeout(CONNECT_TIMEOUT, config.connect(tokio_postgres::NoTls)).await {
            Err(_) => Err(PgOpenError::Timeout),
            Ok(Err(e)) if e.as_db_error().is_some() => Err(PgOpenError::Server(e)),
            Ok(Err(e)) => Err(PgOpenError::Other(e)),
            Ok(Ok((client, connection))) => {
                let task = tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        debug!(error = %pg_reason(&e), "postgres connection ended");
                    }
                });
                Ok(PgSession { client, task })
            }
        }
    }

    /// Connects as the administrator to the maintenance database `postgres`.
    async fn admin(&self, call: &Call<'_>) -> Result<PgSession, DbError> {
        let admin = &self.address.admin_user;
        let password = self.address.admin_password.expose();
        match self.open(admin, password, "postgres").await {
            Ok(client) => Ok(client),
            Err(PgOpenError::Timeout) => Err(call.timeout(admin)),
            Err(PgOpenError::Server(e))
                if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD) =>
            {
                Err(call.admin_refused(&pg_reason(&e)))
            }
            Err(PgOpenError::Server(e) | PgOpenError::Other(e)) => {
                Err(call.connect_failed(admin, &pg_reason(&e)))
            }
        }
    }

    /// Logs in as `user` to `database`; a refusal by the server is an answer, not an error.
    async fn login(
        &self,
        call: &Call<'_>,
        user: &str,
        password: &Secret,
    ) -> Result<Login, DbError> {
        match self.open(user, password.expose(), call.database).await {
            Ok(session) => {
                session.close().await;
                Ok(Login::Ok)
            }
            Err(PgOpenError::Server(e)) => Ok(Login::Refused(call.scrub(&pg_reason(&e)))),
            Err(PgOpenError::Timeout) => Err(call.timeout(user)),
            Err(PgOpenError::Other(e)) => Err(call.connect_failed(user, &pg_reason(&e))),
        }
    }

    /// The owner of the database, when it exists.
    async fn owner(
        &self,
        call: &Call<'_>,
        client: &tokio_postgres::Client,
    ) -> Result<Option<String>, DbError> {
        let row = client
            .query_opt(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
                &[&call.database],
            )
            .await
            .map_err(|e| call.statement("read pg_database", &pg_reason(&e)))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn exec(
        &self,
        call: &Call<'_>,
        client: &tokio_postgres::Client,
        step: &str,
        sql: &str,
    ) -> Result<(), DbError> {
        client
            .batch_execute(sql)
            .await
            .map_err(|e| call.statement(step, &pg_reason(&e)))
    }
}

/// The role attributes berth wants: log in, nothing else.
const PG_ROLE_ATTRIBUTES: &str =
    "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS";

#[async_trait]
impl DbServerApi for Postgres {
    async fn observe(
        &self,
        database: &str,
        user: &str,
        password: &Secret,
    ) -> Result<DbState, DbError> {
        let mut call = Call::new(&self.address, "observe", database);
        call.hide(password);
        call.check(Some(user))?;
        let client = self.admin(&call).await?;
        let owner = self.owner(&call, &client).await?;
        let user_exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
            .await
            .map_err(|e| call.statement("read pg_roles", &pg_reason(&e)))?
            .is_some();
        client.close().await;
        let database_exists = owner.is_some();
        let login_ok = database_exists
            && user_exists
            && matches!(self.login(&call, user, password).await?, Login::Ok);
        Ok(DbState {
            database_exists,
            user_exists,
            login_ok,
            grants_ok: owner.as_deref() == Some(user),
        })
    }

    async fn ensure(&self, database: &str, user: &str, password: &Secret) -> Result<(), DbError> {
        let mut call = Call::new(&self.address, "ensure", database);
        call.hide(password);
        call.check(Some(user))?;
        let server = call.server();
        let client = self.admin(&call).await?;
        // The server stores a SCRAM verifier; sending one keeps the password itself out
        // of the server's statement log.
        let verifier = postgres_protocol::password::scram_sha_256(password.expose().as_bytes());
        call.hide(&Secret::new(password.name(), &verifier));
        let role = client
            .query_opt(
                "SELECT rolcanlogin AND NOT (rolsuper OR rolcreatedb OR rolcreaterole OR \
                 rolreplication OR rolbypassrls) FROM pg_roles WHERE rolname = $1",
                &[&user],
            )
            .await
            .map_err(|e| call.statement("read pg_roles", &pg_reason(&e)))?
            .map(|r| r.get::<_, bool>(0));
        match role {
            None => {
                info!(server, database, user, "creating user");
                let sql = format!(
                    "CREATE ROLE {} WITH {PG_ROLE_ATTRIBUTES} PASSWORD {}",
                    pg_ident(user),
                    pg_literal(&verifier)
                );
                self.exec(&call, &client, "create the user", &sql).await?;
            }
            Some(false) => {
                info!(server, database, user, "resetting the user's rights");
                let sql = format!("ALTER ROLE {} WITH {PG_ROLE_ATTRIBUTES}", pg_ident(user));
                self.exec(&call, &client, "reset the user's rights", &sql)
                    .await?;
            }
            Some(true) => {}
        }
        match self.owner(&call, &client).await? {
            None => {
                info!(server, database, user, "creating database");
                let sql = format!(
                    "CREATE DATABASE {} OWNER {}",
                    pg_ident(database),
                    pg_ident(user)
                );
                self.exec(&call, &client, "create the database", &sql)
                    .await?;
            }
            Some(owner) if owner != user => {
                info!(
                    server,
                    database, user, owner, "giving the database to its user"
                );
                let sql = format!(
                    "ALTER DATABASE {} OWNER TO {}",
                    pg_ident(database),
                    pg_ident(user)
                );
                self.exec(&call, &client, "change the database's owner", &sql)
                    .await?;
            }
            Some(_) => {}
        }
        // A NULL ACL means the default one, which lets PUBLIC connect.
        let public = client
            .query_one(
                "SELECT datacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(datacl) a \
                 WHERE a.grantee = 0) FROM pg_database WHERE datname = $1",
                &[&database],
            )
            .await
            .map_err(|e| call.statement("read the database's privileges", &pg_reason(&e)))?
            .get::<_, bool>(0);
        if public {
            info!(server, database, "revoking PUBLIC's rights on the database");
            let sql = format!("REVOKE ALL ON DATABASE {} FROM PUBLIC", pg_ident(database));
            self.exec(&call, &client, "revoke PUBLIC's rights", &sql)
                .await?;
        }
        if let Login::Refused(reason) = self.login(&call, user, password).await? {
            info!(
                server,
                database, user, reason, "setting the user's password"
            );
            let sql = format!(
                "ALTER ROLE {} WITH PASSWORD {} VALID UNTIL 'infinity'",
                pg_ident(user),
                pg_literal(&verifier)
            );
            self.exec(&call, &client, "set the user's password", &sql)
                .await?;
            if let Login::Refused(reason) = self.login(&call, user, password).await? {
                return Err(call.user_login(user, &reason));
            }
        }
        client.close().await;
        Ok(())
    }

    async fn drop(&self, database: &str, user: &str) -> Result<(), DbError> {
        let call = Call::new(&self.address, "drop", database);
        call.check(Some(user))?;
        let server = call.server();
        let client = self.admin(&call).await?;
        info!(server, database, user, "dropping database and user");
        let sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            pg_ident(database)
        );
        self.exec(&call, &client, "drop the database", &sql).await?;
        let sql = format!("DROP ROLE IF EXISTS {}", pg_ident(user));
        self.exec(&call, &client, "drop the user", &sql).await?;
        client.close().await;
        Ok(())
    }

    async fn dump(&self, database: &str, dest: &Path) -> Result<u64, DbError> {
        let call = Call::new(&self.address, "dump", database);
        call.check(None)?;
        let client = self.admin(&call).await?;
        if self.owner(&call, &client).await?.is_none() {
            return Err(call.no_database());
        }
        client.close().await;
        atomic_dump(&call, dest, |tmp| {
            let mut args = pg_tool_args(&self.address, database);
            args.push("--format=custom".into());
            args.push(prefixed("--file=", tmp));
            Tool {
                names: &["pg_dump"],
                package: "postgresql-client",
                args,
                stdin: None,
            }
        })
        .await
    }

    async fn restore(&self, database: &str, src: &Path) -> Result<(), DbError> {
        let call = Call::new(&self.address, "restore", database);
        call.check(None)?;
        let client = self.admin(&call).await?;
        let Some(owner) = self.owner(&call, &client).await? else {
            return Err(call.no_database());
        };
        client.close().await;
        // The owner comes from the server; it goes to pg_restore as one argument, never
        // through a shell, but is checked like any name berth passes on.
        check_name(&owner, MAX_NAME).map_err(|reason| call.statement("read the owner", &reason))?;
        let mut args = pg_tool_args(&self.address, database);
        args.extend(
            [
                "--clean",
                "--if-exists",
                "--no-owner",
                "--single-transaction",
                "--exit-on-error",
            ]
            .map(OsString::from),
        );
        args.push(format!("--role={owner}").into());
        args.push(src.as_os_str().to_owned());
        check_readable(&call, src)?;
        run_tool(
            &call,
            Tool {
                names: &["pg_restore"],
                package: "postgresql-client",
                args,
                stdin: None,
            },
        )
        .await
    }
}

/// The connection arguments shared by pg_dump and pg_restore (the password goes through
/// `PGPASSWORD`).
fn pg_tool_args(address: &ServerAddress, database: &str) -> Vec<OsString> {
    vec![
        "--no-password".into(),
        format!("--host={}", address.host).into(),
        format!("--port={}", address.port).into(),
        format!("--username={}", address.admin_user).into(),
        format!("--dbname={database}").into(),
    ]
}

// ---------------------------------------------------------------------------------
// MySQL and MariaDB

struct Mysql {
    address: ServerAddress,
}

/// Why a MySQL connection failed.
enum MyOpenError {
    Timeout,
    /// The server answered with an error.
    Server(mysql_async::ServerError),
    Other(mysql_async::Error),
}

/// MySQL's "access denied" for a wrong user or password.
const ER_ACCESS_DENIED_ERROR: u16 = 1045;

fn my_reason(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => s.message.clone(),
        other => other.to_string(),
    }
}

impl Mysql {
    async fn open(
        &self,
        user: &str,
        password: &str,
        database: Option<&str>,
    ) -> Result<mysql_async::Conn, MyOpenError> {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.address.host.clone())
            .tcp_port(self.address.port)
            .user(Some(user))
            .pass(Some(password))
            .db_name(database)
            // Otherwise the client moves to the server's socket when it finds it local.
            .prefer_socket(false)
            .stmt_cache_size(0);
        match tokio::time::timeout(CONNECT_TIMEOUT, mysql_async::Conn::new(opts)).await {
            Err(_) => Err(MyOpenError::Timeout),
            Ok(Err(mysql_async::Error::Server(s))) => Err(MyOpenError::Server(s)),
            Ok(Err(e)) => Err(MyOpenError::Other(e)),
            Ok(Ok(conn)) => Ok(conn),
        }
    }

    /// Connects as the administrator, with backslash escapes on so that literals mean
    /// what [`my_literal`] wrote.
    async fn admin(&self, call: &Call<'_>) -> Result<mysql_async::Conn, DbError> {
        use mysql_async::prelude::Queryable;
        let admin = &self.address.admin_user;
        let password = self.address.admin_password.expose();
        let mut conn = match self.open(admin, password, None).await {
            Ok(conn) => conn,
            Err(MyOpenError::Timeout) => return Err(call.timeout(admin)),
            Err(MyOpenError::Server(s)) if s.code == ER_ACCESS_DENIED_ERROR => {
                return Err(call.admin_refused(&s.message));
            }
            Err(MyOpenError::Server(s)) => return Err(call.connect_failed(admin, &s.message)),
            Err(MyOpenError::Other(e)) => return Err(call.connect_failed(admin, &my_reason(&e))),
        };
        conn.query_drop(
            "SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'NO_BACKSLASH_ESCAPES', '')",
        )
        .await
        .map_err(|e| call.statement("set the session's sql_mode", &my_reason(&e)))?;
        Ok(conn)
    }

    async fn login(
        &self,
        call: &Call<'_>,
        user: &str,
        password: &Secret,
    ) -> Result<Login, DbError> {
        match self
            .open(user, password.expose(), Some(call.database))
            .await
        {
            Ok(conn) => {
                let _ = conn.disconnect().await;
                Ok(Login::Ok)
            }
            Err(MyOpenError::Server(s)) => Ok(Login::Refused(call.scrub(&s.message))),
            Err(MyOpenError::Timeout) => Err(call.timeout(user)),
            Err(MyOpenError::Other(e)) => Err(call.connect_failed(user, &my_reason(&e))),
        }
    }

    async fn database_exists(
        &self,
        call: &Call<'_>,
        conn: &mut mysql_async::Conn,
    ) -> Result<bool, DbError> {
        use mysql_async::prelude::Queryable;
        let n: Option<i64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (call.database,),
            )
            .await
            .map_err(|e| call.statement("read information_schema.SCHEMATA", &my_reason(&e)))?;
        Ok(n.unwrap_or(0) > 0)
    }

    async fn user_exists(
        &self,
        call: &Call<'_>,
        conn: &mut mysql_async::Conn,
        user: &str,
    ) -> Result<bool, DbError> {
        use mysql_async::prelude::Queryable;
        let n: Option<i64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = '%'",
                (user,),
            )
            .await
            .map_err(|e| call.statement("read mysql.user", &my_reason(&e)))?;
        Ok(n.unwrap_or(0) > 0)
    }

    /// Whether `user` has all privileges on the database (the user must exist).
    async fn granted(
        &self,
        call: &Call<'_>,
        conn: &mut mysql_async::Conn,
        user: &str,
    ) -> Result<bool, DbError> {
        use mysql_async::prelude::Queryable;
        let sql = format!("SHOW GRANTS FOR {}@'%'", my_literal(user));
        let grants: Vec<String> = conn
            .query(sql)
            .await
            .map_err(|e| call.statement("read the user's grants", &my_reason(&e)))?;
        let wanted = [
            format!(
                "GRANT ALL PRIVILEGES ON {}.* TO ",
                my_grant_db(call.database)
            ),
            format!("GRANT ALL PRIVILEGES ON {}.* TO ", my_ident(call.database)),
        ];
        Ok(grants
            .iter()
            .any(|g| wanted.iter().any(|w| g.starts_with(w.as_str()))))
    }

    async fn exec(
        &self,
        call: &Call<'_>,
        conn: &mut mysql_async::Conn,
        step: &str,
        sql: &str,
    ) -> Result<(), DbError> {
        use mysql_async::prelude::Queryable;
        conn.query_drop(sql)
            .await
            .map_err(|e| call.statement(step, &my_reason(&e)))
    }

    /// The dump tools, the engine's own first.
    fn tools(&self) -> &'static [&'static str] {
        match self.address.engine {
            ServerEngine::Mysql => &["mysqldump", "mariadb-dump"],
            _ => &["mariadb-dump", "mysqldump"],
        }
    }

    fn clients(&self) -> &'static [&'static str] {
        match self.address.engine {
            ServerEngine::Mysql => &["mysql", "mariadb"],
            _ => &["mariadb", "mysql"],
        }
    }
}

#[async_trait]
impl DbServerApi for Mysql {
    async fn observe(
        &self,
        database: &str,
        user: &str,
        password: &Secret,
    ) -> Result<DbState, DbError> {
        let mut call = Call::new(&self.address, "observe", database);
        call.hide(password);
        call.check(Some(user))?;
        let mut conn = self.admin(&call).await?;
        let database_exists = self.database_exists(&call, &mut conn).await?;
        let user_exists = self.user_exists(&call, &mut conn, user).await?;
        let granted = user_exists && self.granted(&call, &mut conn, user).await?;
        let _ = conn.disconnect().await;
        let login_ok = database_exists
            && user_exists
            && matches!(self.login(&call, user, password).await?, Login::Ok);
        Ok(DbState {
            database_exists,
            user_exists,
            login_ok,
            grants_ok: database_exists && granted,
        })
    }

    async fn ensure(&self, database: &str, user: &str, password: &Secret) -> Result<(), DbError> {
        let mut call = Call::new(&self.address, "ensure", database);
        call.hide(password);
        call.check(Some(user))?;
        let server = call.server();
        let mut conn = self.admin(&call).await?;
        let account = format!("{}@'%'", my_literal(user));
        if !self.user_exists(&call, &mut conn, user).await? {
            info!(server, database, user, "creating user");
            let sql = format!(
                "CREATE USER {account} IDENTIFIED BY {}",
                my_literal(password.expose())
            );
            self.exec(&call, &mut conn, "create the user", &sql).await?;
        }
        if !self.database_exists(&call, &mut conn).await? {
            info!(server, database, "creating database");
            let sql = format!(
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4",
                my_ident(database)
            );
            self.exec(&call, &mut conn, "create the database", &sql)
                .await?;
        }
        if !self.granted(&call, &mut conn, user).await? {
            info!(
                server,
                database, user, "granting the user all privileges on the database"
            );
            let sql = format!(
                "GRANT ALL PRIVILEGES ON {}.* TO {account}",
                my_grant_db(database)
            );
            self.exec(&call, &mut conn, "grant the user its rights", &sql)
                .await?;
        }
        if let Login::Refused(reason) = self.login(&call, user, password).await? {
            info!(
                server,
                database, user, reason, "setting the user's password"
            );
            let sql = format!(
                "ALTER USER {account} IDENTIFIED BY {}",
                my_literal(password.expose())
            );
            self.exec(&call, &mut conn, "set the user's password", &sql)
                .await?;
            if let Login::Refused(reason) = self.login(&call, user, password).await? {
                let _ = conn.disconnect().await;
                return Err(call.user_login(user, &reason));
            }
        }
        let _ = conn.disconnect().await;
        Ok(())
    }

    async fn drop(&self, database: &str, user: &str) -> Result<(), DbError> {
        let call = Call::new(&self.address, "drop", database);
        call.check(Some(user))?;
        let server = call.server();
        let mut conn = self.admin(&call).await?;
        info!(server, database, user, "dropping database and user");
        let sql = format!("DROP DATABASE IF EXISTS {}", my_ident(database));
        self.exec(&call, &mut conn, "drop the database", &sql)
            .await?;
        let sql = format!("DROP USER IF EXISTS {}@'%'", my_literal(user));
        self.exec(&call, &mut conn, "drop the user", &sql).await?;
        let _ = conn.disconnect().await;
        Ok(())
    }

    async fn dump(&self, database: &str, dest: &Path) -> Result<u64, DbError> {
        let call = Call::new(&self.address, "dump", database);
        call.check(None)?;
        let mut conn = self.admin(&call).await?;
        let exists = self.database_exists(&call, &mut conn).await?;
        let _ = conn.disconnect().await;
        if !exists {
            return Err(call.no_database());
        }
        atomic_dump(&call, dest, |tmp| {
            let mut args = my_tool_args(&self.address);
            args.extend(
                [
                    "--single-transaction",
                    "--routines",
                    "--triggers",
                    "--no-tablespaces",
                ]
                .map(OsString::from),
            );
            args.push(prefixed("--result-file=", tmp));
            args.push(database.into());
            Tool {
                names: self.tools(),
                package: "mariadb-client (or mysql-client)",
                args,
                stdin: None,
            }
        })
        .await
    }

    async fn restore(&self, database: &str, src: &Path) -> Result<(), DbError> {
        let call = Call::new(&self.address, "restore", database);
        call.check(None)?;
        let mut conn = self.admin(&call).await?;
        let exists = self.database_exists(&call, &mut conn).await?;
        let _ = conn.disconnect().await;
        if !exists {
            return Err(call.no_database());
        }
        check_readable(&call, src)?;
        let file = std::fs::File::open(src).map_err(|e| call.file(src, e))?;
        let mut args = my_tool_args(&self.address);
        args.push(format!("--connect-timeout={}", CONNECT_TIMEOUT.as_secs()).into());
        args.push("--batch".into());
        args.push(format!("--database={database}").into());
        run_tool(
            &call,
            Tool {
                names: self.clients(),
                package: "mariadb-client (or mysql-client)",
                args,
                stdin: Some(file),
            },
        )
        .await
    }
}

/// The connection arguments shared by the dump tool and the client (the password goes
/// through `MYSQL_PWD`; `--no-defaults` keeps option files from changing the target).
fn my_tool_args(address: &ServerAddress) -> Vec<OsString> {
    vec![
        "--no-defaults".into(),
        "--protocol=TCP".into(),
        format!("--host={}", address.host).into(),
        format!("--port={}", address.port).into(),
        format!("--user={}", address.admin_user).into(),
    ]
}

// ---------------------------------------------------------------------------------
// The engines' tools

/// One run of a dump or restore program.
struct Tool {
    /// The program, by preference.
    names: &'static [&'static str],
    /// The package that has it, for the error when none is installed.
    package: &'static str,
    args: Vec<OsString>,
    stdin: Option<std::fs::File>,
}

fn prefixed(flag: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(flag);
    arg.push(path.as_os_str());
    arg
}

/// The first of `names` found on `PATH`.
fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

fn check_readable(call: &Call<'_>, src: &Path) -> Result<(), DbError> {
    std::fs::metadata(src)
        .map(|_| ())
        .map_err(|e| call.file(src, e))
}

/// Runs `tool` as the administrator, the password passed through the environment.
async fn run_tool(call: &Call<'_>, tool: Tool) -> Result<(), DbError> {
    let Some(program) = find_program(tool.names) else {
        return Err(DbError::ToolMissing {
            at: call.attempt(),
            tools: tool.names.join(", "),
            package: tool.package,
        });
    };
    let password = call.address.admin_password.expose();
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&tool.args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match call.address.engine {
        ServerEngine::Postgres => command
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT.as_secs().to_string())
            .env("PGAPPNAME", "berth"),
        ServerEngine::Mysql | ServerEngine::Mariadb => command.env("MYSQL_PWD", password),
    };
    command.stdin(match tool.stdin {
        Some(file) => Stdio::from(file),
        None => Stdio::null(),
    });
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    debug!(
        server = call.server(),
        database = call.database,
        tool = name,
        "running"
    );
    let output = command.output().await.map_err(|e| call.file(&program, e))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = call.scrub(String::from_utf8_lossy(&output.stderr).trim());
    let admin = &call.address.admin_user;
    if stderr.contains(&format!(
        "password authentication failed for user \"{admin}\""
    )) || (stderr.contains(&format!("Access denied for user '{admin}'@"))
        && stderr.contains("(using password: YES)"))
    {
        return Err(call.admin_refused(&tail(&stderr, MAX_STDERR)));
    }
    let status = match output.status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "was killed".to_owned(),
    };
    Err(DbError::Tool {
        at: call.attempt(),
        tool: name,
        status,
        stderr: tail(&stderr, MAX_STDERR),
    })
}

/// The last `max` bytes of `text` (on a character boundary), marked when cut.
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// Runs the dump tool into `<dest>.tmp`, then renames it over `dest`, so that `dest` is
/// either the previous dump or a complete new one.
async fn atomic_dump(
    call: &Call<'_>,
    dest: &Path,
    tool: impl FnOnce(&Path) -> Tool,
) -> Result<u64, DbError> {
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| call.file(dir, e))?;
    }
    let result = async {
        run_tool(call, tool(&tmp)).await?;
        let file = std::fs::File::open(&tmp).map_err(|e| call.file(&tmp, e))?;
        file.sync_all().map_err(|e| call.file(&tmp, e))?;
        tokio::fs::rename(&tmp, dest)
            .await
            .map_err(|e| call.file(dest, e))?;
        let bytes = tokio::fs::metadata(dest)
            .await
            .map_err(|e| call.file(dest, e))?
            .len();
        Ok(bytes)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_for_each_engine() {
        assert_eq!(pg_ident("blog"), "\"blog\"");
        assert_eq!(pg_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(my_ident("blog"), "`blog`");
        assert_eq!(my_ident("a`b"), "`a``b`");
        assert_eq!(my_grant_db("my_blog"), "`my\\_blog`");
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(pg_literal("it's"), "'it''s'");
        assert_eq!(pg_literal("a\\b'"), "E'a\\\\b'''");
        assert_eq!(my_literal("it's a \\ \0"), "'it''s a \\\\ \\0'");
    }

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

    #[test]
    fn tails_are_cut_on_character_boundaries() {
        assert_eq!(tail("short", 10), "short");
        assert_eq!(tail("ééé", 3), "…é");
    }
}
