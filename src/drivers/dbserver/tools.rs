//! The engines' dump and restore programs (pg_dump, pg_restore, mysqldump, mariadb…):
//! the steps every engine shares, finding and running the program with the password
//! in its environment, and writing dumps atomically.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use async_trait::async_trait;
use tracing::debug;

use super::{CONNECT_TIMEOUT, Call, DbError, ServerAddress};
use crate::manifest::model::ServerEngine;

/// How much of a failing tool's standard error goes into the error.
const MAX_STDERR: usize = 2000;

/// One run of a dump or restore program.
pub(super) struct Tool {
    /// The program, by preference.
    pub(super) names: &'static [&'static str],
    /// The package that has it, for the error when none is installed.
    pub(super) package: &'static str,
    /// The arguments, never through a shell.
    pub(super) args: Vec<OsString>,
    /// A file the program reads as its standard input (opened when it runs).
    pub(super) stdin: Option<PathBuf>,
}

/// What the dump and restore runs need from an engine: how to find the database and
/// which program to run. The steps around them are the same for every engine.
#[async_trait]
pub(super) trait EngineTools: Sync {
    /// What finding the database tells the restore (PostgreSQL: its owner).
    type Found: Send;

    /// The server.
    fn address(&self) -> &ServerAddress;

    /// Looks the database up as the administrator; `None` when it does not exist.
    async fn find(&self, call: &Call<'_>) -> Result<Option<Self::Found>, DbError>;

    /// The dump program writing the dump of `call`'s database into `file`.
    fn dump_tool(&self, call: &Call<'_>, file: &Path) -> Tool;

    /// The restore program reading `src` into `call`'s database.
    fn restore_tool(
        &self,
        call: &Call<'_>,
        found: Self::Found,
        src: &Path,
    ) -> Result<Tool, DbError>;
}

/// [`DbServerApi::dump`](super::DbServerApi::dump) for any engine.
pub(super) async fn dump(
    engine: &impl EngineTools,
    database: &str,
    dest: &Path,
) -> Result<u64, DbError> {
    let call = Call::new(engine.address(), "dump", database);
    call.check(None)?;
    if engine.find(&call).await?.is_none() {
        return Err(call.no_database());
    }
    atomic_dump(&call, dest, |tmp| engine.dump_tool(&call, tmp)).await
}

/// [`DbServerApi::restore`](super::DbServerApi::restore) for any engine.
pub(super) async fn restore(
    engine: &impl EngineTools,
    database: &str,
    src: &Path,
) -> Result<(), DbError> {
    let call = Call::new(engine.address(), "restore", database);
    call.check(None)?;
    let Some(found) = engine.find(&call).await? else {
        return Err(call.no_database());
    };
    let tool = engine.restore_tool(&call, found, src)?;
    check_readable(&call, src)?;
    run_tool(&call, tool).await
}

/// `flag` followed by `path`, as one argument (`--file=/backups/blog.dump`).
pub(super) fn prefixed(flag: &str, path: &Path) -> OsString {
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

/// Whether `src` can be read, before anything runs.
fn check_readable(call: &Call<'_>, src: &Path) -> Result<(), DbError> {
    std::fs::metadata(src)
        .map(|_| ())
        .map_err(|e| call.file(src, e))
}

/// Runs `tool` as the administrator, the password passed through the environment.
async fn run_tool(call: &Call<'_>, tool: Tool) -> Result<(), DbError> {
    let stdin = match &tool.stdin {
        Some(path) => Stdio::from(std::fs::File::open(path).map_err(|e| call.file(path, e))?),
        None => Stdio::null(),
    };
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
    command.stdin(stdin);
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
    fn tails_are_cut_on_character_boundaries() {
        assert_eq!(tail("short", 10), "short");
        assert_eq!(tail("ééé", 3), "…é");
    }
}
