//! PostgreSQL: the database and its owning role through tokio-postgres, the dumps
//! through pg_dump and pg_restore.

use std::ffi::OsString;
use std::path::Path;

use async_trait::async_trait;
use tracing::{debug, info};

use super::tools::{self, EngineTools, Tool, prefixed};
use super::{
    CONNECT_TIMEOUT, Call, DbError, DbServerApi, DbState, Login, MAX_NAME, ServerAddress,
    check_name,
};
use crate::state::secrets::Secret;

/// The package that has pg_dump and pg_restore.
const PACKAGE: &str = "postgresql-client";

/// A PostgreSQL server.
pub(super) struct Postgres {
    pub(super) address: ServerAddress,
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
        tools::dump(self, database, dest).await
    }

    async fn restore(&self, database: &str, src: &Path) -> Result<(), DbError> {
        tools::restore(self, database, src).await
    }
}

#[async_trait]
impl EngineTools for Postgres {
    /// The database's owner, the role pg_restore restores as.
    type Found = String;

    fn address(&self) -> &ServerAddress {
        &self.address
    }

    async fn find(&self, call: &Call<'_>) -> Result<Option<String>, DbError> {
        let client = self.admin(call).await?;
        let owner = self.owner(call, &client).await?;
        client.close().await;
        Ok(owner)
    }

    fn dump_tool(&self, call: &Call<'_>, file: &Path) -> Tool {
        let mut args = pg_tool_args(&self.address, call.database);
        args.push("--format=custom".into());
        args.push(prefixed("--file=", file));
        Tool {
            names: &["pg_dump"],
            package: PACKAGE,
            args,
            stdin: None,
        }
    }

    fn restore_tool(&self, call: &Call<'_>, owner: String, src: &Path) -> Result<Tool, DbError> {
        // The owner comes from the server; it goes to pg_restore as one argument, never
        // through a shell, but is checked like any name berth passes on.
        check_name(&owner, MAX_NAME).map_err(|reason| call.statement("read the owner", &reason))?;
        let mut args = pg_tool_args(&self.address, call.database);
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
        Ok(Tool {
            names: &["pg_restore"],
            package: PACKAGE,
            args,
            stdin: None,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(pg_ident("blog"), "\"blog\"");
        assert_eq!(pg_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(pg_literal("it's"), "'it''s'");
        assert_eq!(pg_literal("a\\b'"), "E'a\\\\b'''");
    }
}
