//! The shared-database-server driver against real PostgreSQL and MariaDB servers.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use berth::drivers::dbserver::{self, DbServerApi, DbState};
use berth::manifest::model::ServerEngine;
use berth::state::secrets::Secret;

use crate::servers::{self, ServerFixture};

const NOTHING: DbState = DbState {
    database_exists: false,
    user_exists: false,
    login_ok: false,
    grants_ok: false,
};

const ALL: DbState = DbState {
    database_exists: true,
    user_exists: true,
    login_ok: true,
    grants_ok: true,
};

/// The first password holds what needs escaping in SQL literals of both engines.
const PASSWORD: &str = "it's a \\ \"first\" pass";
const NEW_PASSWORD: &str = "n3w'\\pass-word";
const OTHER_PASSWORD: &str = "other-password-123";

fn secret(value: &str) -> Secret {
    Secret::new("app-db-password", value)
}

/// Every password the tests use: none may appear in an error.
fn assert_no_password(server: &ServerFixture, text: &str) {
    for password in [
        PASSWORD,
        NEW_PASSWORD,
        OTHER_PASSWORD,
        server.admin_password.as_str(),
    ] {
        assert!(!text.contains(password), "a password leaked into: {text}");
    }
}

/// What the server holds about the user's password, rights and database, as the
/// administrator sees it; a second `ensure` must leave it byte for byte the same.
fn server_record(server: &ServerFixture, database: &str, user: &str) -> String {
    match server.engine {
        ServerEngine::Postgres => server.admin_sql(
            "postgres",
            &format!(
                "SELECT r.rolpassword, r.rolsuper, r.rolcreatedb, r.rolcreaterole, \
                 r.rolcanlogin, d.datacl::text, pg_get_userbyid(d.datdba) \
                 FROM pg_authid r, pg_database d \
                 WHERE r.rolname = '{user}' AND d.datname = '{database}'"
            ),
        ),
        _ => {
            let privileges = server.admin_sql(
                "mysql",
                &format!("SELECT Priv FROM mysql.global_priv WHERE User = '{user}'"),
            );
            let grants = server.admin_sql("mysql", &format!("SHOW GRANTS FOR '{user}'@'%'"));
            format!("{privileges}\n{grants}")
        }
    }
}

/// The whole life of a shared database, as berth drives it and as its app sees it.
async fn lifecycle(server: &ServerFixture, p: &str) {
    let db = format!("{p}_app");
    let user = format!("{p}_user");
    // `_` is a wildcard in MySQL grants: a grant on `<p>_app` written carelessly would
    // reach `<p>xapp` too.
    let other_db = format!("{p}xapp");
    let other_user = format!("{p}_other");
    let driver = dbserver::connect(server.address());
    let (password, new_password) = (secret(PASSWORD), secret(NEW_PASSWORD));

    assert_eq!(
        driver.observe(&db, &user, &password).await.unwrap(),
        NOTHING
    );

    driver.ensure(&db, &user, &password).await.unwrap();
    assert_eq!(driver.observe(&db, &user, &password).await.unwrap(), ALL);

    // The app writes with its own credentials.
    server
        .sql(
            &user,
            PASSWORD,
            &db,
            "CREATE TABLE notes (id int PRIMARY KEY, body text); \
             INSERT INTO notes VALUES (1, 'kept')",
        )
        .unwrap();
    let select = "SELECT id, body FROM notes ORDER BY id";
    assert_eq!(server.sql(&user, PASSWORD, &db, select).unwrap(), "1\tkept");

    // A second ensure changes nothing, not even the stored password hash.
    let before = server_record(server, &db, &user);
    if server.engine != ServerEngine::Postgres {
        // MariaDB records when a password was set, to the second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    driver.ensure(&db, &user, &password).await.unwrap();
    assert_eq!(server_record(server, &db, &user), before);
    assert_eq!(driver.observe(&db, &user, &password).await.unwrap(), ALL);
    assert_eq!(server.sql(&user, PASSWORD, &db, select).unwrap(), "1\tkept");

    // The user reaches no other database, and may create none.
    driver
        .ensure(&other_db, &other_user, &secret(OTHER_PASSWORD))
        .await
        .unwrap();
    let refused = server
        .sql(&user, PASSWORD, &other_db, "SELECT 1")
        .unwrap_err();
    let created = server
        .sql(&user, PASSWORD, &db, &format!("CREATE DATABASE {p}_mine"))
        .unwrap_err();
    match server.engine {
        ServerEngine::Postgres => {
            assert!(
                refused.contains(&format!("permission denied for database \"{other_db}\"")),
                "{refused}"
            );
            assert!(
                created.contains("permission denied to create database"),
                "{created}"
            );
            let rights = "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, \
                          rolbypassrls FROM pg_roles WHERE rolname = current_user";
            assert_eq!(
                server.sql(&user, PASSWORD, &db, rights).unwrap(),
                "f\tf\tf\tf\tf"
            );
        }
        _ => {
            assert!(
                refused.contains(&format!(
                    "Access denied for user '{user}'@'%' to database '{other_db}'"
                )),
                "{refused}"
            );
            assert!(
                created.contains(&format!(
                    "Access denied for user '{user}'@'%' to database '{p}_mine'"
                )),
                "{created}"
            );
            let grants = server.sql(&user, PASSWORD, &db, "SHOW GRANTS").unwrap();
            let grants: Vec<&str> = grants.lines().collect();
            assert_eq!(grants.len(), 2, "{grants:?}");
            assert!(
                grants[0].starts_with(&format!(
                    "GRANT USAGE ON *.* TO `{user}`@`%` IDENTIFIED BY PASSWORD '*"
                )),
                "{grants:?}"
            );
            assert_eq!(
                grants[1],
                format!(
                    "GRANT ALL PRIVILEGES ON `{}`.* TO `{user}`@`%`",
                    db.replace('_', "\\_")
                )
            );
        }
    }

    // A new password replaces the old one.
    driver.ensure(&db, &user, &new_password).await.unwrap();
    assert_eq!(
        driver.observe(&db, &user, &new_password).await.unwrap(),
        ALL
    );
    assert_eq!(
        driver.observe(&db, &user, &password).await.unwrap(),
        DbState {
            login_ok: false,
            ..ALL
        }
    );
    let old = server.sql(&user, PASSWORD, &db, "SELECT 1").unwrap_err();
    match server.engine {
        ServerEngine::Postgres => assert!(
            old.contains(&format!(
                "password authentication failed for user \"{user}\""
            )),
            "{old}"
        ),
        _ => assert!(
            old.contains(&format!("Access denied for user '{user}'@")),
            "{old}"
        ),
    }
    assert_eq!(
        server.sql(&user, NEW_PASSWORD, &db, select).unwrap(),
        "1\tkept"
    );

    // Dump, lose the table, restore.
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("backups").join(&db).join(format!(
        "20260101T000000.{}",
        dbserver::dump_extension(server.engine)
    ));
    let bytes = driver.dump(&db, &dest).await.unwrap();
    let content = std::fs::read(&dest).unwrap();
    assert_eq!(bytes, content.len() as u64);
    assert!(
        !dest
            .with_extension(format!("{}.tmp", dbserver::dump_extension(server.engine)))
            .exists()
    );
    match server.engine {
        ServerEngine::Postgres => {
            assert!(content.starts_with(b"PGDMP"), "not a custom-format dump")
        }
        _ => {
            let text = String::from_utf8_lossy(&content);
            assert!(text.contains("INSERT INTO `notes` VALUES"), "{text}");
            assert!(text.contains("(1,'kept')"), "{text}");
        }
    }
    server
        .sql(&user, NEW_PASSWORD, &db, "DROP TABLE notes")
        .unwrap();
    assert!(server.sql(&user, NEW_PASSWORD, &db, select).is_err());
    driver.restore(&db, &dest).await.unwrap();
    assert_eq!(
        server.sql(&user, NEW_PASSWORD, &db, select).unwrap(),
        "1\tkept"
    );
    // The restored table is the user's again: it writes to it.
    server
        .sql(
            &user,
            NEW_PASSWORD,
            &db,
            "INSERT INTO notes VALUES (2, 'after restore')",
        )
        .unwrap();
    assert_eq!(
        server.sql(&user, NEW_PASSWORD, &db, select).unwrap(),
        "1\tkept\n2\tafter restore"
    );
    // Restoring over existing tables replaces them.
    driver.restore(&db, &dest).await.unwrap();
    assert_eq!(
        server.sql(&user, NEW_PASSWORD, &db, select).unwrap(),
        "1\tkept"
    );

    // Drop, twice: the second finds nothing to do.
    DbServerApi::drop(&*driver, &db, &user).await.unwrap();
    assert_eq!(
        driver.observe(&db, &user, &new_password).await.unwrap(),
        NOTHING
    );
    DbServerApi::drop(&*driver, &db, &user).await.unwrap();
    // The other database was not touched.
    assert_eq!(
        driver
            .observe(&other_db, &other_user, &secret(OTHER_PASSWORD))
            .await
            .unwrap(),
        ALL
    );
    DbServerApi::drop(&*driver, &other_db, &other_user)
        .await
        .unwrap();
    assert_eq!(
        driver
            .observe(&other_db, &other_user, &secret(OTHER_PASSWORD))
            .await
            .unwrap(),
        NOTHING
    );
}

#[tokio::test]
async fn postgres_database_lifecycle() {
    lifecycle(servers::postgres(), "pglife").await;
}

#[tokio::test]
async fn mariadb_database_lifecycle() {
    lifecycle(servers::mariadb(), "mylife").await;
}

/// Rights and ownership changed by hand are put back by the next ensure.
async fn ensure_repairs(server: &ServerFixture, p: &str) {
    let db = format!("{p}_app");
    let user = format!("{p}_user");
    let intruder = format!("{p}_intruder");
    let driver = dbserver::connect(server.address());
    let password = secret(PASSWORD);
    driver.ensure(&db, &user, &password).await.unwrap();
    let admin_db = server.admin_database();
    match server.engine {
        ServerEngine::Postgres => {
            server.admin_sql(
                admin_db,
                &format!(
                    "CREATE ROLE {intruder}; ALTER DATABASE {db} OWNER TO {intruder}; \
                     ALTER ROLE {user} CREATEDB NOLOGIN"
                ),
            );
        }
        _ => {
            server.admin_sql(
                admin_db,
                &format!(
                    "REVOKE ALL PRIVILEGES ON `{}`.* FROM '{user}'@'%'",
                    db.replace('_', "\\_")
                ),
            );
        }
    }
    assert_eq!(
        driver.observe(&db, &user, &password).await.unwrap(),
        DbState {
            login_ok: false,
            grants_ok: false,
            ..ALL
        }
    );
    driver.ensure(&db, &user, &password).await.unwrap();
    assert_eq!(driver.observe(&db, &user, &password).await.unwrap(), ALL);
    if server.engine == ServerEngine::Postgres {
        let flags = server.admin_sql(
            admin_db,
            &format!("SELECT rolcreatedb, rolcanlogin FROM pg_roles WHERE rolname = '{user}'"),
        );
        assert_eq!(flags, "f\tt");
        server.admin_sql(admin_db, &format!("DROP ROLE {intruder}"));
    }
    DbServerApi::drop(&*driver, &db, &user).await.unwrap();
}

#[tokio::test]
async fn postgres_ensure_repairs_changes_made_by_hand() {
    ensure_repairs(servers::postgres(), "pgfix").await;
}

#[tokio::test]
async fn mariadb_ensure_repairs_changes_made_by_hand() {
    ensure_repairs(servers::mariadb(), "myfix").await;
}

#[tokio::test]
async fn postgres_drop_ends_the_sessions_still_open() {
    let server = servers::postgres();
    let (db, user) = ("pgbusy_app", "pgbusy_user");
    let driver = dbserver::connect(server.address());
    driver.ensure(db, user, &secret(PASSWORD)).await.unwrap();
    let session = server
        .sql_command(user, PASSWORD, db, "SELECT pg_sleep(60)")
        .spawn()
        .unwrap();
    let count = format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'");
    let start = Instant::now();
    while server.admin_sql("postgres", &count) != "1" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the session never started: {}",
            server.admin_sql(
                "postgres",
                "SELECT datname, usename, state FROM pg_stat_activity"
            )
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    DbServerApi::drop(&*driver, db, user).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(20));
    let ended = session.wait_with_output().unwrap();
    assert!(!ended.status.success());
    assert!(
        String::from_utf8_lossy(&ended.stderr)
            .contains("terminating connection due to administrator command"),
        "{}",
        String::from_utf8_lossy(&ended.stderr)
    );
    assert_eq!(
        driver.observe(db, user, &secret(PASSWORD)).await.unwrap(),
        NOTHING
    );
}

async fn closed_port_fails_at_once(server: &ServerFixture, engine: &str) {
    let port = servers::closed_port();
    let mut address = server.address();
    address.port = port;
    let driver = dbserver::connect(address);
    let start = Instant::now();
    let err = driver
        .observe("blog", "blog", &secret(PASSWORD))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        err.starts_with(&format!(
            "failed to observe database `blog` on {engine} server `{engine}-test` \
             (127.0.0.1:{port}): cannot connect as `berth_admin`: "
        )),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");
    assert_no_password(server, &err);
}

#[tokio::test]
async fn postgres_closed_port_fails_at_once_with_a_clear_error() {
    closed_port_fails_at_once(servers::postgres(), "postgres").await;
}

#[tokio::test]
async fn mariadb_closed_port_fails_at_once_with_a_clear_error() {
    closed_port_fails_at_once(servers::mariadb(), "mariadb").await;
}

/// A server that accepts connections and never answers: the call gives up after the
/// connect timeout (time is paused, so the test does not wait 10 s).
async fn silent_server_times_out(engine: ServerEngine, name: &str) {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let driver = dbserver::connect(dbserver::ServerAddress {
        name: "silent".to_owned(),
        engine,
        host: "127.0.0.1".to_owned(),
        port,
        admin_user: "berth_admin".to_owned(),
        admin_password: Secret::new("silent-admin-password", "silent-password-42"),
    });
    let virtual_start = tokio::time::Instant::now();
    let err = driver
        .ensure("blog", "blog", &secret(PASSWORD))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "failed to ensure database `blog` on {name} server `silent` (127.0.0.1:{port}): \
             no answer within 10 s when connecting as `berth_admin`; check that the server \
             runs and that this host can reach it"
        )
    );
    assert_eq!(virtual_start.elapsed().as_secs(), 10);
    drop(silent);
}

#[tokio::test(start_paused = true)]
async fn postgres_silent_server_times_out_after_10_s() {
    silent_server_times_out(ServerEngine::Postgres, "postgres").await;
}

#[tokio::test(start_paused = true)]
async fn mariadb_silent_server_times_out_after_10_s() {
    silent_server_times_out(ServerEngine::Mariadb, "mariadb").await;
}

/// A wrong admin password: every call says so, names the secret, and shows no password.
async fn wrong_admin_password(server: &ServerFixture, engine: &str, refusal: &str) {
    let wrong = "wrong-admin-password-4711";
    let driver = dbserver::connect(server.address_with(Secret::new("db-admin", wrong)));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("blog.dump");
    let password = secret(PASSWORD);
    let errors = [
        driver.observe("blog", "blog", &password).await.unwrap_err(),
        driver.ensure("blog", "blog", &password).await.unwrap_err(),
        DbServerApi::drop(&*driver, "blog", "blog")
            .await
            .unwrap_err(),
        driver.dump("blog", &dest).await.unwrap_err(),
        driver.restore("blog", &dest).await.unwrap_err(),
    ];
    for (err, action) in errors
        .iter()
        .zip(["observe", "ensure", "drop", "dump", "restore"])
    {
        let err = err.to_string();
        let expected_start = format!(
            "failed to {action} database `blog` on {engine} server `{engine}-test` \
             (127.0.0.1:{}): the server refused the password of `berth_admin` ({refusal}",
            server.port
        );
        assert!(
            err.starts_with(&expected_start),
            "{err}\nexpected: {expected_start}"
        );
        assert!(err.ends_with("); check the secret `db-admin`"), "{err}");
        assert!(!err.contains(wrong), "{err}");
        assert_no_password(server, &err);
    }
    assert!(!dest.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no file is left behind"
    );
}

#[tokio::test]
async fn postgres_wrong_admin_password_names_the_secret() {
    wrong_admin_password(
        servers::postgres(),
        "postgres",
        "password authentication failed for user \"berth_admin\"",
    )
    .await;
}

#[tokio::test]
async fn mariadb_wrong_admin_password_names_the_secret() {
    wrong_admin_password(
        servers::mariadb(),
        "mariadb",
        "Access denied for user 'berth_admin'@",
    )
    .await;
}

/// A restore that fails shows the tool's own words, without the admin password even
/// when the tool echoes it back.
async fn failing_restore(server: &ServerFixture, p: &str, expected: &str) {
    let db = format!("{p}_app");
    let user = format!("{p}_user");
    let driver = dbserver::connect(server.address());
    driver.ensure(&db, &user, &secret(PASSWORD)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.dump");
    std::fs::write(
        &bad,
        format!("SELEC '{}' FROM nowhere;\n", server.admin_password),
    )
    .unwrap();
    let err = driver.restore(&db, &bad).await.unwrap_err().to_string();
    let engine = match server.engine {
        ServerEngine::Postgres => "postgres",
        _ => "mariadb",
    };
    assert!(
        err.starts_with(&format!(
            "failed to restore database `{db}` on {engine} server `{engine}-test` (127.0.0.1:{}): ",
            server.port
        )),
        "{err}"
    );
    assert!(err.contains(expected), "{err}");
    assert_no_password(server, &err);

    let missing = driver
        .restore(&db, &dir.path().join("missing.dump"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("missing.dump: No such file or directory"),
        "{missing}"
    );

    DbServerApi::drop(&*driver, &db, &user).await.unwrap();
    let gone = driver.restore(&db, &bad).await.unwrap_err().to_string();
    assert!(
        gone.ends_with(&format!(
            "`{db}` on {engine} server `{engine}-test` (127.0.0.1:{}): the database does not exist",
            server.port
        )),
        "{gone}"
    );
    let gone = driver
        .dump(&db, &dir.path().join("x.dump"))
        .await
        .unwrap_err()
        .to_string();
    assert!(gone.ends_with("the database does not exist"), "{gone}");
}

#[tokio::test]
async fn postgres_failing_restore_shows_the_tool_s_error() {
    failing_restore(
        servers::postgres(),
        "pgbad",
        "pg_restore exited with status 1: pg_restore: error: input file does not appear to be a valid archive",
    )
    .await;
}

#[tokio::test]
async fn mariadb_failing_restore_shows_the_tool_s_error_without_the_password() {
    let server = servers::mariadb();
    failing_restore(
        server,
        "mybad",
        "ERROR 1064 (42000) at line 1: You have an error in your SQL syntax",
    )
    .await;
    // MariaDB quotes the statement back: the password it held is shown redacted.
    let db = "myecho_app";
    let driver = dbserver::connect(server.address());
    driver
        .ensure(db, "myecho_user", &secret(PASSWORD))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.sql");
    std::fs::write(
        &bad,
        format!("SELEC '{}' FROM nowhere;\n", server.admin_password),
    )
    .unwrap();
    let err = driver.restore(db, &bad).await.unwrap_err().to_string();
    let secret = server.address().admin_password;
    assert!(err.contains(&secret.redacted()), "{err}");
    assert_no_password(server, &err);
    DbServerApi::drop(&*driver, db, "myecho_user")
        .await
        .unwrap();
}

/// Names are checked before any connection: the server here does not exist, so any
/// attempt to reach it would give another error.
#[tokio::test]
async fn unsafe_or_reserved_names_are_refused_before_connecting() {
    let port = servers::closed_port();
    let address = |engine| dbserver::ServerAddress {
        name: "main".to_owned(),
        engine,
        host: "127.0.0.1".to_owned(),
        port,
        admin_user: "berth_admin".to_owned(),
        admin_password: Secret::new("admin", "admin-password"),
    };
    let pg = dbserver::connect(address(ServerEngine::Postgres));
    let my = dbserver::connect(address(ServerEngine::Mysql));
    let password = secret(PASSWORD);
    let server = |engine: &str| format!("{engine} server `main` (127.0.0.1:{port})");
    let cases: Vec<(String, String)> = vec![
        (
            pg.ensure("blog\"; DROP", "blog", &password)
                .await
                .unwrap_err()
                .to_string(),
            format!(
                "failed to ensure database `blog\"; DROP` on {}: invalid database name \
                 `blog\"; DROP`: `\"` is not allowed: use lowercase letters, digits and `_`",
                server("postgres")
            ),
        ),
        (
            my.ensure("blog", "Blog", &password)
                .await
                .unwrap_err()
                .to_string(),
            format!(
                "failed to ensure database `blog` on {}: invalid user name `Blog`: `B` is not \
                 allowed: use lowercase letters, digits and `_`",
                server("mysql")
            ),
        ),
        (
            DbServerApi::drop(&*pg, "blog", "berth_admin")
                .await
                .unwrap_err()
                .to_string(),
            format!(
                "failed to drop database `blog` on {}: invalid user name `berth_admin`: it is \
                 the server's administrative user",
                server("postgres")
            ),
        ),
        (
            DbServerApi::drop(&*my, "mysql", "blog")
                .await
                .unwrap_err()
                .to_string(),
            format!(
                "failed to drop database `mysql` on {}: invalid database name `mysql`: it \
                 belongs to the server itself",
                server("mysql")
            ),
        ),
        (
            pg.dump("template1", Path::new("/tmp/x"))
                .await
                .unwrap_err()
                .to_string(),
            format!(
                "failed to dump database `template1` on {}: invalid database name \
                 `template1`: it belongs to the server itself",
                server("postgres")
            ),
        ),
        (
            my.ensure("blog", &"u".repeat(33), &password)
                .await
                .unwrap_err()
                .to_string(),
            format!(
                "failed to ensure database `blog` on {}: invalid user name `{}`: it is longer \
                 than 32 characters",
                server("mysql"),
                "u".repeat(33)
            ),
        ),
    ];
    for (got, expected) in cases {
        assert_eq!(got, expected);
    }
}

#[test]
fn dumps_have_the_engine_s_extension() {
    assert_eq!(dbserver::dump_extension(ServerEngine::Postgres), "dump");
    assert_eq!(dbserver::dump_extension(ServerEngine::Mysql), "sql");
    assert_eq!(dbserver::dump_extension(ServerEngine::Mariadb), "sql");
}
