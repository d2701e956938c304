//! MySQL and MariaDB: the database, its user and grants through mysql_async, the dumps
//! through mysqldump or mariadb-dump and the client.

use std::ffi::OsString;
use std::path::Path;

use async_trait::async_trait;
use tracing::info;

use super::tools::{self, EngineTools, Tool, prefixed};
use super::{CONNECT_TIMEOUT, Call, DbError, DbServerApi, DbState, Login, ServerAddress};
use crate::manifest::model::ServerEngine;
use crate::state::secrets::Secret;

/// The package that has the dump tool and the client.
const PACKAGE: &str = "mariadb-client (or mysql-client)";

/// A MySQL or MariaDB server.
pub(super) struct Mysql {
    pub(super) address: ServerAddress,
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

    /// Whether the database exists.
    async fn database_exists(
        &self,
        call: &Call<'_>,
        conn: &mut mysql_async::Conn,
    ) -> Result<bool, DbError> {
        let sql = "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?";
        let step = "read information_schema.SCHEMATA";
        counts_any(call, conn, step, sql, call.database).await
    }

    /// Whether `user` exists (as `user@'%'`, the only host berth creates).
    async fn user_exists(
        &self,
        call: &Call<'_>,
        conn: &mut mysql_async::Conn,
        user: &str,
    ) -> Result<bool, DbError> {
        let sql = "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = '%'";
        counts_any(call, conn, "read mysql.user", sql, user).await
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

    /// The clients that restore a dump, the engine's own first.
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
        tools::dump(self, database, dest).await
    }

    async fn restore(&self, database: &str, src: &Path) -> Result<(), DbError> {
        tools::restore(self, database, src).await
    }
}

#[async_trait]
impl EngineTools for Mysql {
    /// Nothing: the client restores as the administrator.
    type Found = ();

    fn address(&self) -> &ServerAddress {
        &self.address
    }

    async fn find(&self, call: &Call<'_>) -> Result<Option<()>, DbError> {
        let mut conn = self.admin(call).await?;
        let exists = self.database_exists(call, &mut conn).await?;
        let _ = conn.disconnect().await;
        Ok(exists.then_some(()))
    }

    fn dump_tool(&self, call: &Call<'_>, file: &Path) -> Tool {
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
        args.push(prefixed("--result-file=", file));
        args.push(call.database.into());
        Tool {
            names: self.tools(),
            package: PACKAGE,
            args,
            stdin: None,
        }
    }

    fn restore_tool(&self, call: &Call<'_>, _: (), src: &Path) -> Result<Tool, DbError> {
        let mut args = my_tool_args(&self.address);
        args.push(format!("--connect-timeout={}", CONNECT_TIMEOUT.as_secs()).into());
        args.push("--batch".into());
        args.push(format!("--database={}", call.database).into());
        Ok(Tool {
            names: self.clients(),
            package: PACKAGE,
            args,
            stdin: Some(src.to_owned()),
        })
    }
}

/// Whether `sql`, a `SELECT COUNT(*)` with one parameter, counts any row.
async fn counts_any(
    call: &Call<'_>,
    conn: &mut mysql_async::Conn,
    step: &str,
    sql: &str,
    param: &str,
) -> Result<bool, DbError> {
    use mysql_async::prelude::Queryable;
    let n: Option<i64> = conn
        .exec_first(sql, (param,))
        .await
        .map_err(|e| call.statement(step, &my_reason(&e)))?;
    Ok(n.unwrap_or(0) > 0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(my_ident("blog"), "`blog`");
        assert_eq!(my_ident("a`b"), "`a``b`");
        assert_eq!(my_grant_db("my_blog"), "`my\\_blog`");
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(my_literal("it's a \\ \0"), "'it''s a \\\\ \\0'");
    }
}
