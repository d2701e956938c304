//! Real database servers for the tests: one PostgreSQL and one MariaDB per test process,
//! on loopback, on free ports, in fresh temp dirs, stopped by a watchdog when the process
//! ends, however it ends.
//!
//! Needs the Debian packages `postgresql` (for `/usr/lib/postgresql/<v>/bin`, and its
//! `postgres` system user when the tests run as root) and `mariadb-server` (with
//! `mariadb-client`); the system services may stay stopped.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use berth::drivers::dbserver::ServerAddress;
use berth::manifest::model::ServerEngine;
use berth::state::secrets::Secret;

/// The administrative user of both test servers.
pub const ADMIN: &str = "berth_admin";

/// How long a server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running test server and how to reach it.
pub struct ServerFixture {
    /// Its engine.
    pub engine: ServerEngine,
    /// Always `127.0.0.1`.
    pub host: String,
    /// The TCP port it listens on.
    pub port: u16,
    /// The administrative user ([`ADMIN`]).
    pub admin_user: String,
    /// That user's password.
    pub admin_password: String,
    /// The engine's command-line client.
    client: PathBuf,
    /// Held open for the life of the process: the watchdog stops the server when it
    /// reads end-of-file here.
    _watchdog: ChildStdin,
}

impl ServerFixture {
    /// The server's address for the driver, its admin password in secret
    /// `<engine>-admin-password`.
    pub fn address(&self) -> ServerAddress {
        let secret = format!("{}-admin-password", self.engine_name());
        self.address_with(Secret::new(&secret, &self.admin_password))
    }

    /// The server's address with another admin password.
    pub fn address_with(&self, admin_password: Secret) -> ServerAddress {
        ServerAddress {
            name: format!("{}-test", self.engine_name()),
            engine: self.engine,
            host: self.host.clone(),
            port: self.port,
            admin_user: self.admin_user.clone(),
            admin_password,
        }
    }

    fn engine_name(&self) -> &'static str {
        match self.engine {
            ServerEngine::Postgres => "postgres",
            ServerEngine::Mysql => "mysql",
            ServerEngine::Mariadb => "mariadb",
        }
    }

    /// Runs `sql` as `user` (over TCP, with `password`) in `database` with the engine's
    /// own command-line client: the rows it printed, tab-separated, or its error text.
    pub fn sql(
        &self,
        user: &str,
        password: &str,
        database: &str,
        sql: &str,
    ) -> Result<String, String> {
        let output = self
            .sql_command(user, password, database, sql)
            .output()
            .expect("the database client runs");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout)
                .trim_end()
                .to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr)
                .trim_end()
                .to_owned())
        }
    }

    /// [`ServerFixture::sql`] as the administrator.
    pub fn admin_sql(&self, database: &str, sql: &str) -> String {
        self.sql(&self.admin_user, &self.admin_password, database, sql)
            .unwrap_or_else(|e| panic!("admin SQL `{sql}` failed: {e}"))
    }

    /// The maintenance database the administrator can always use.
    pub fn admin_database(&self) -> &'static str {
        match self.engine {
            ServerEngine::Postgres => "postgres",
            ServerEngine::Mysql | ServerEngine::Mariadb => "mysql",
        }
    }

    /// The client command for [`ServerFixture::sql`], not yet started (for sessions
    /// kept open in the background).
    pub fn sql_command(&self, user: &str, password: &str, database: &str, sql: &str) -> Command {
        let mut command = Command::new(&self.client);
        match self.engine {
            ServerEngine::Postgres => {
                command
                    .args([
                        "-X",
                        "-q",
                        "-A",
                        "-t",
                        "-w",
                        "-v",
                        "ON_ERROR_STOP=1",
                        "-F",
                        "\t",
                    ])
                    .args(["-h", &self.host, "-p", &self.port.to_string()])
                    .args(["-U", user, "-d", database, "-c", sql])
                    .env("PGPASSWORD", password)
                    .env("PGCONNECT_TIMEOUT", "5");
            }
            ServerEngine::Mysql | ServerEngine::Mariadb => {
                command
                    .args([
                        "--no-defaults",
                        "--protocol=TCP",
                        "--connect-timeout=5",
                        "-N",
                        "-B",
                        "--raw",
                    ])
                    .args(["-h", &self.host, "-P", &self.port.to_string()])
                    .args(["-u", user, "-e", sql, database])
                    .env("MYSQL_PWD", password);
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }
}

/// The test PostgreSQL server, started on first use.
pub fn postgres() -> &'static ServerFixture {
    static SERVER: OnceLock<ServerFixture> = OnceLock::new();
    SERVER.get_or_init(start_postgres)
}

/// The test MariaDB server, started on first use.
pub fn mariadb() -> &'static ServerFixture {
    static SERVER: OnceLock<ServerFixture> = OnceLock::new();
    SERVER.get_or_init(start_mariadb)
}

/// A port nobody listens on (bound, then released).
pub fn closed_port() -> u16 {
    crate::free_port()
}

/// A password for a test server: random, long, with punctuation but no quote.
fn new_password() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    format!("Adm-{:016x}-%+=", hasher.finish())
}

/// A fresh directory that outlives this handle (the watchdog removes it).
fn fresh_dir(prefix: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("a temp dir")
        .keep()
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Starts a process that waits for this test process to end (its standard input
/// closes, whatever the way the process ended), then stops the server whose pid is in
/// `pid_file` with `signal` and removes `dir`. It runs in its own process group, so a
/// Ctrl-C aimed at the tests does not take it down before it has cleaned up.
// Never waited for: it must outlive this process, and init reaps it.
#[allow(clippy::zombie_processes)]
fn start_watchdog(dir: &Path, pid_file: &Path, signal: &str) -> ChildStdin {
    const SCRIPT: &str = r#"
        read -r _ignored
        pid=$(head -n 1 "$2" 2>/dev/null)
        if [ -n "$pid" ]; then
            kill -"$3" "$pid" 2>/dev/null
            i=0
            while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
            kill -KILL "$pid" 2>/dev/null
        fi
        rm -rf "$1"
    "#;
    let mut child = Command::new("sh")
        .args(["-c", SCRIPT, "berth-test-watchdog"])
        .arg(dir)
        .arg(pid_file)
        .arg(signal)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("sh runs");
    child.stdin.take().expect("the watchdog's stdin")
}

/// Runs a setup command, panicking with its output when it fails.
fn run(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("failed to run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Waits until `ready` holds or `server` exits; on exit, the log decides between a
/// retry on another port (`Err`) and a panic.
fn wait_until_ready(
    server: &mut Child,
    log: &Path,
    what: &str,
    ready: impl Fn() -> bool,
) -> Result<(), ()> {
    let start = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        let log_text = || std::fs::read_to_string(log).unwrap_or_default();
        if let Some(status) = server.try_wait().expect("try_wait") {
            let text = log_text();
            if text.contains("Address already in use") || text.contains("Can't start server: Bind")
            {
                return Err(());
            }
            panic!("{what} exited ({status}) while starting; its log:\n{text}");
        }
        if start.elapsed() > START_TIMEOUT {
            let _ = server.kill();
            panic!(
                "{what} was not ready within {START_TIMEOUT:?}; its log:\n{}",
                log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or `BERTH_TEST_PG_BIN`.
fn postgres_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (apt-get install postgresql), or set BERTH_TEST_PG_BIN")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL server under /usr/lib/postgresql")
        .1
}

/// The uid and gid of the `postgres` system user (PostgreSQL refuses to run as root).
fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .expect("a `postgres` system user (the postgresql package creates it)")
}

fn start_postgres() -> ServerFixture {
    let bin = postgres_bin();
    let dir = fresh_dir("berth-it-pg-");
    let data = dir.join("data");
    let log = dir.join("server.log");
    let password = new_password();
    let ids = running_as_root().then(postgres_ids);
    let as_server_user = |command: &mut Command| {
        if let Some((uid, gid)) = ids {
            command.uid(uid).gid(gid);
        }
    };
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the temp dir");
    }
    let pwfile = dir.join("pwfile");
    std::fs::write(&pwfile, &password).expect("write the password file");
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).expect("chown the password file");
    }
    let watchdog = start_watchdog(&dir, &data.join("postmaster.pid"), "INT");

    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("--pgdata")
        .arg(&data)
        .args([
            "--username",
            ADMIN,
            "--auth",
            "scram-sha-256",
            "--encoding",
            "UTF8",
        ])
        .args(["--locale", "C", "--no-sync"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .current_dir(&dir);
    as_server_user(&mut initdb);
    run(&mut initdb, "initdb");

    let mut fixture = ServerFixture {
        engine: ServerEngine::Postgres,
        host: "127.0.0.1".to_owned(),
        port: 0,
        admin_user: ADMIN.to_owned(),
        admin_password: password,
        client: bin.join("psql"),
        _watchdog: watchdog,
    };
    for _attempt in 0..5 {
        fixture.port = closed_port();
        let log_file = std::fs::File::create(&log).expect("create the server log");
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&log, Some(uid), Some(gid)).expect("chown the server log");
        }
        let mut server = Command::new(bin.join("postgres"));
        server
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", &format!("port={}", fixture.port)])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .args(["-c", "max_connections=100", "-c", "shared_buffers=32MB"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone the log"))
            .stderr(log_file);
        as_server_user(&mut server);
        let mut server = server.spawn().expect("postgres starts");
        let ready = || {
            fixture
                .sql(ADMIN, &fixture.admin_password, "postgres", "SELECT 1")
                .is_ok()
        };
        if wait_until_ready(&mut server, &log, "postgres", ready).is_ok() {
            return fixture;
        }
    }
    panic!("postgres found no free port in 5 attempts");
}

fn start_mariadb() -> ServerFixture {
    let dir = fresh_dir("berth-it-mariadb-");
    let data = dir.join("data");
    let socket = dir.join("mariadb.sock");
    let pid_file = dir.join("mariadb.pid");
    let log = dir.join("server.log");
    let password = new_password();
    let root = running_as_root();
    let watchdog = start_watchdog(&dir, &pid_file, "TERM");

    let mut install = Command::new("mariadb-install-db");
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .current_dir(&dir);
    if root {
        install.arg("--user=root");
    }
    run(
        &mut install,
        "mariadb-install-db (apt-get install mariadb-server)",
    );

    for _attempt in 0..5 {
        let port = closed_port();
        let _ = std::fs::remove_file(&log);
        let mut server = Command::new(find_mariadbd());
        server
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", pid_file.display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-networking=0",
                "--skip-log-bin",
            ])
            .args([
                "--innodb-buffer-pool-size=64M",
                "--innodb-flush-log-at-trx-commit=0",
            ])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if root {
            server.arg("--user=root");
        }
        let mut server = server.spawn().expect("mariadbd starts");
        let over_socket = |sql: &str| {
            Command::new("mariadb")
                .arg("--no-defaults")
                .arg(format!("--socket={}", socket.display()))
                .args(["-u", "root", "-N", "-B", "-e", sql])
                .stdin(Stdio::null())
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if wait_until_ready(&mut server, &log, "mariadbd", || over_socket("SELECT 1")).is_err() {
            continue;
        }
        // The anonymous users mariadb-install-db creates would shadow `user@%` for
        // connections from localhost, as on a fresh server; a real server has them
        // removed (mariadb-secure-installation).
        let setup = format!(
            "DELETE FROM mysql.global_priv WHERE User = ''; FLUSH PRIVILEGES; \
             CREATE USER '{ADMIN}'@'%' IDENTIFIED BY '{password}'; \
             GRANT ALL PRIVILEGES ON *.* TO '{ADMIN}'@'%' WITH GRANT OPTION;"
        );
        assert!(
            over_socket(&setup),
            "failed to create the MariaDB admin user"
        );
        return ServerFixture {
            engine: ServerEngine::Mariadb,
            host: "127.0.0.1".to_owned(),
            port,
            admin_user: ADMIN.to_owned(),
            admin_password: password,
            client: PathBuf::from("mariadb"),
            _watchdog: watchdog,
        };
    }
    panic!("mariadbd found no free port in 5 attempts");
}

fn find_mariadbd() -> PathBuf {
    [
        "/usr/sbin/mariadbd",
        "/usr/bin/mariadbd",
        "/usr/sbin/mysqld",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .expect("mariadbd is installed (apt-get install mariadb-server)")
}
