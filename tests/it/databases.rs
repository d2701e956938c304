//! Databases through `berth apply` and `berth backup`: shared databases on real
//! PostgreSQL and MariaDB servers, linked into an app whose injected credentials work;
//! managed databases as containers (with a stand-in image: no registry is reachable).

use std::fs;

use crate::docker::{Scenario, docker, image, text};
use crate::servers::{self, ServerFixture};
use berth::manifest::model::ServerEngine;

fn engine_name(f: &ServerFixture) -> &'static str {
    match f.engine {
        ServerEngine::Postgres => "postgres",
        ServerEngine::Mysql => "mysql",
        ServerEngine::Mariadb => "mariadb",
    }
}

/// Settings with the scenario's network and `server` as shared server `main`.
fn settings(s: &Scenario, server: &ServerFixture) -> String {
    format!(
        "apiVersion: berth/v1\nkind: Settings\nmetadata: {{name: host}}\nspec:\n  network: {}-net\n  \
         servers:\n    main: {{engine: {}, host: {}, port: {}, adminUser: {}, adminPasswordSecret: main-admin}}\n",
        s.prefix,
        engine_name(server),
        server.host,
        server.port,
        server.admin_user
    )
}

fn database(s: &Scenario, name: &str, engine: &str, extra: &str) -> String {
    format!(
        "apiVersion: berth/v1\nkind: Database\nmetadata: {{name: {}}}\nspec:\n  engine: {engine}\n{extra}",
        s.name(name)
    )
}

fn env_map(s: &Scenario, container: &str) -> std::collections::BTreeMap<String, String> {
    s.inspect(container)["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn berth_backup(s: &Scenario, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("backup")
        .args(args)
        .args(["--state-dir", s.state_path().to_str().unwrap()])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (out.status.code(), text(&out))
}

fn shared_lifecycle(server: &ServerFixture) {
    let s = Scenario::new();
    let engine = engine_name(server);
    fs::write(
        s.state_path().join("secrets/main-admin"),
        &server.admin_password,
    )
    .unwrap();
    s.write("settings.yaml", &settings(&s, server));
    let db_file = |policy: &str| {
        database(
            &s,
            "blog",
            engine,
            &format!("  mode: shared\n  server: main\n  deletionPolicy: {policy}\n"),
        )
    };
    s.write("blog.yaml", &db_file("retain"));
    let linked = s.app(
        "web",
        image(),
        &format!("  port: 80\n  databases: [{}]\n", s.name("blog")),
    );
    s.write("web.yaml", &linked);
    let db_name = s.name("blog").replace('-', "_");

    // The plan says what will happen, before the password exists.
    let (code, plan) = s.dry_run();
    assert_eq!(code, Some(2), "{plan}");
    assert!(
        plan.contains(&format!(
            "+ create database {}: create database {db_name} on main with user {db_name}",
            s.name("blog")
        )),
        "{plan}"
    );
    assert!(
        !s.state_path()
            .join(format!("secrets/db-{}-password", s.name("blog")))
            .exists(),
        "a dry run generates nothing"
    );

    let out = s.apply();
    let password = fs::read_to_string(
        s.state_path()
            .join(format!("secrets/db-{}-password", s.name("blog"))),
    )
    .unwrap();
    assert!(password.len() >= 32);
    assert!(!out.contains(&password), "the password leaked:\n{out}");

    // The app got the credentials, and they work against the server.
    let env = env_map(&s, &s.name("web"));
    assert_eq!(env["DB_HOST"], server.host);
    assert_eq!(env["DB_PORT"], server.port.to_string());
    assert_eq!(env["DB_NAME"], db_name);
    assert_eq!(env["DB_USER"], db_name);
    assert_eq!(env["DB_PASSWORD"], password);
    let scheme = if engine == "postgres" {
        "postgres"
    } else {
        "mysql"
    };
    assert_eq!(
        env["DATABASE_URL"],
        format!(
            "{scheme}://{db_name}:{password}@{}:{}/{db_name}",
            server.host, server.port
        )
    );
    server
        .sql(
            &env["DB_USER"],
            &env["DB_PASSWORD"],
            &env["DB_NAME"],
            "CREATE TABLE posts (id INT PRIMARY KEY, title VARCHAR(40)); \
             INSERT INTO posts VALUES (1, 'hello from berth');",
        )
        .expect("the injected credentials work");
    let (_, spec) = s.dry_run();
    assert!(!spec.contains(&password), "{spec}");

    // Converged: the next plan is empty.
    let (code, plan) = s.dry_run();
    assert_eq!(
        code,
        Some(0),
        "a second apply would change something:\n{plan}"
    );

    // Backup, lose the row, restore: the row is back.
    let manifests = s.manifests_path().to_str().unwrap().to_owned();
    let (code, out) = berth_backup(&s, &["run", &s.name("blog"), &manifests]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("backed up Database/{}", s.name("blog"))),
        "{out}"
    );
    let (code, listed) = berth_backup(&s, &["list", &s.name("blog"), "-o", "json"]);
    assert_eq!(code, Some(0), "{listed}");
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let file = listed[0]["path"].as_str().unwrap().to_owned();
    assert!(
        file.starts_with(
            s.state_path()
                .join("backups")
                .join(s.name("blog"))
                .to_str()
                .unwrap()
        ),
        "{file}"
    );
    assert!(listed[0]["bytes"].as_u64().unwrap() > 0);
    server
        .sql(&db_name, &password, &db_name, "DELETE FROM posts;")
        .unwrap();
    let (code, out) = berth_backup(&s, &["restore", &s.name("blog"), &file, &manifests]);
    assert_eq!(code, Some(0), "{out}");
    let rows = server
        .sql(&db_name, &password, &db_name, "SELECT title FROM posts;")
        .unwrap();
    assert!(rows.contains("hello from berth"), "{rows}");

    // A new password in the secret store: the user's password is reset and the app that
    // links the database is re-created with it.
    let old_id = s.inspect(&s.name("web"))["Id"].clone();
    let secret_file = s
        .state_path()
        .join(format!("secrets/db-{}-password", s.name("blog")));
    let password = "rotated0password0for0the0test0000".to_owned();
    fs::write(&secret_file, &password).unwrap();
    let (_, plan) = s.dry_run();
    assert!(
        plan.contains(&format!(
            "~ update database {}: user {db_name} cannot log in with the password in secret db-{}-password: reset",
            s.name("blog"),
            s.name("blog")
        )),
        "{plan}"
    );
    assert!(plan.contains("secret DB_PASSWORD changed"), "{plan}");
    assert!(!plan.contains(&password), "{plan}");
    s.apply();
    assert_ne!(
        s.inspect(&s.name("web"))["Id"],
        old_id,
        "the app is re-created"
    );
    assert_eq!(env_map(&s, &s.name("web"))["DB_PASSWORD"], password);
    server
        .sql(&db_name, &password, &db_name, "SELECT title FROM posts;")
        .expect("the new password works");

    // Removed with deletionPolicy: retain: berth lets go, the data stays.
    s.remove("blog.yaml");
    s.write("web.yaml", &s.app("web", image(), "  port: 80\n"));
    let (_, plan) = s.dry_run();
    assert!(
        plan.contains(&format!(
            "no longer declared; database {db_name} and user {db_name} on main kept with its data \
             (deletionPolicy: retain), berth stops managing it"
        )),
        "{plan}"
    );
    s.apply();
    let rows = server
        .sql(&db_name, &password, &db_name, "SELECT title FROM posts;")
        .expect("the data is kept");
    assert!(rows.contains("hello from berth"), "{rows}");
    let (code, plan) = s.dry_run();
    assert_eq!(code, Some(0), "{plan}");

    // Declared again with deletionPolicy: delete: adopted, then dropped on removal.
    s.write("blog.yaml", &db_file("delete"));
    let (_, plan) = s.dry_run();
    assert!(plan.contains("adopt the existing database"), "{plan}");
    s.apply();
    s.remove("blog.yaml");
    let (_, plan) = s.dry_run();
    assert!(
        plan.contains("(deletionPolicy: delete): THE DATA IS DELETED"),
        "{plan}"
    );
    s.apply();
    let gone = server.sql(&db_name, &password, &db_name, "SELECT 1;");
    assert!(gone.is_err(), "the database and its user are dropped");
    let (code, plan) = s.dry_run();
    assert_eq!(code, Some(0), "{plan}");
}

#[test]
fn a_shared_postgres_database_is_created_linked_backed_up_kept_and_dropped() {
    shared_lifecycle(servers::postgres());
}

#[test]
fn a_shared_mariadb_database_is_created_linked_backed_up_kept_and_dropped() {
    shared_lifecycle(servers::mariadb());
}

#[test]
fn a_managed_database_is_a_container_with_the_images_contract() {
    let mut s = Scenario::new();
    // A stand-in tagged with the official repository's name and a tag of the test's
    // own, removed with the scenario.
    let version = format!("16-berthtest-{}", s.prefix);
    let tag = format!("postgres:{version}");
    s.remove_with(&tag);
    let built = std::process::Command::new("bash")
        .arg(crate::root().join("tests/image/build-standin.sh"))
        .args([&tag, image(), "pg_isready"])
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", text(&built));
    s.write(
        "db.yaml",
        &database(&s, "pg", "postgres", &format!("  version: {version}\n")),
    );
    s.write(
        "web.yaml",
        &s.app(
            "web",
            image(),
            &format!(
                "  port: 80\n  databases: [{{name: {}, prefix: MAIN_}}]\n",
                s.name("pg")
            ),
        ),
    );
    let (_, plan) = s.dry_run();
    assert!(
        plan.contains(&format!("+ create database {}", s.name("pg"))),
        "{plan}"
    );
    assert!(
        plan.contains(&format!(
            "+ create network {}-net-db: new internal network",
            s.prefix
        )),
        "{plan}"
    );
    s.apply();
    let password = fs::read_to_string(
        s.state_path()
            .join(format!("secrets/db-{}-password", s.name("pg"))),
    )
    .unwrap();
    let user = s.name("pg").replace('-', "_");

    let db = s.inspect(&s.name("pg"));
    assert_eq!(db["Config"]["Image"], tag);
    assert_eq!(db["Config"]["Labels"]["berth.kind"], "database");
    let env = env_map(&s, &s.name("pg"));
    assert_eq!(env["POSTGRES_USER"], user);
    assert_eq!(env["POSTGRES_DB"], user);
    assert_eq!(env["POSTGRES_PASSWORD"], password);
    assert_eq!(db["Mounts"][0]["Name"], format!("{}-data", s.name("pg")));
    assert_eq!(db["Mounts"][0]["Destination"], "/var/lib/postgresql/data");
    assert_eq!(
        db["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "pg_isready", "-U", user, "-d", user])
    );
    assert_eq!(db["State"]["Health"]["Status"], "healthy");
    let networks = db["NetworkSettings"]["Networks"].as_object().unwrap();
    assert_eq!(
        networks.keys().collect::<Vec<_>>(),
        [&format!("{}-net-db", s.prefix)]
    );
    let net = docker(&[
        "network",
        "inspect",
        "-f",
        "{{.Internal}}",
        &format!("{}-net-db", s.prefix),
    ]);
    assert_eq!(
        text(&net).trim(),
        "true",
        "the databases' network is internal"
    );
    assert!(!text(&docker(&["inspect", &s.name("pg")])).contains("\"HostPort\": \"5432\""));

    // The app is on both networks, with the prefixed variables.
    let web = s.inspect(&s.name("web"));
    let joined = web["NetworkSettings"]["Networks"].as_object().unwrap();
    assert!(
        joined.contains_key(&format!("{}-net", s.prefix)),
        "{joined:?}"
    );
    assert!(
        joined.contains_key(&format!("{}-net-db", s.prefix)),
        "{joined:?}"
    );
    let env = env_map(&s, &s.name("web"));
    assert_eq!(
        env["MAIN_DATABASE_URL"],
        format!("postgres://{user}:{password}@{}:5432/{user}", s.name("pg"))
    );
    assert_eq!(env["MAIN_DB_HOST"], s.name("pg"));
    let (code, plan) = s.dry_run();
    assert_eq!(code, Some(0), "{plan}");

    // Removed (deletionPolicy: retain): the container goes, the volume stays.
    s.remove("db.yaml");
    s.write("web.yaml", &s.app("web", image(), "  port: 80\n"));
    let (_, plan) = s.dry_run();
    assert!(
        plan.contains(&format!(
            "- delete database {}: no longer declared",
            s.name("pg")
        )),
        "{plan}"
    );
    s.apply();
    assert!(!docker(&["inspect", &s.name("pg")]).status.success());
    assert!(
        docker(&["volume", "inspect", &format!("{}-data", s.name("pg"))])
            .status
            .success(),
        "the data volume is kept"
    );
    let _ = docker(&["volume", "rm", &format!("{}-data", s.name("pg"))]);
}

#[test]
fn berth_run_backs_up_on_schedule_and_rotates() {
    let server = servers::postgres();
    let s = Scenario::new();
    fs::write(
        s.state_path().join("secrets/main-admin"),
        &server.admin_password,
    )
    .unwrap();
    s.write("settings.yaml", &settings(&s, server));
    s.write(
        "blog.yaml",
        &database(
            &s,
            "logs",
            "postgres",
            "  mode: shared\n  server: main\n  backup: {schedule: \"* * * * *\", keep: 1}\n",
        ),
    );
    let source = s.manifests_path().display().to_string();
    let c = crate::run::Controller::start_with(&s, &source, &[]);
    let name = s.name("logs");
    // Every minute: the first dump within 60 s of the pass, and the status says where.
    crate::run::eventually(&c, 80, "a scheduled backup is recorded", || {
        c.api("/api/v1/status")["backups"][&name]["file"].is_string()
    });
    let status = c.api("/api/v1/status");
    let file = status["backups"][&name]["file"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(fs::metadata(&file).unwrap().len() > 0, "{file}");
    assert!(
        status["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "BackedUp"),
        "{status}"
    );
    let dir = s.state_path().join("backups").join(&name);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "keep: 1");
    let password =
        fs::read_to_string(s.state_path().join(format!("secrets/db-{name}-password"))).unwrap();
    assert!(!c.log().contains(&password));
    assert!(!c.log().contains(&server.admin_password));
    assert!(!status.to_string().contains(&password));
}

#[test]
fn a_failing_scheduled_backup_is_reported_and_notified() {
    let server = servers::mariadb();
    let s = Scenario::new();
    let hook = crate::listener::Listener::start(200);
    fs::write(
        s.state_path().join("secrets/main-admin"),
        &server.admin_password,
    )
    .unwrap();
    fs::write(
        s.state_path().join("secrets/hook-url"),
        format!("{}/hook", hook.base),
    )
    .unwrap();
    s.write("settings.yaml", &settings(&s, server));
    s.write(
        "notify.yaml",
        "apiVersion: berth/v1\nkind: Notifier\nmetadata: {name: ops}\n\
         spec: {type: webhook, urlSecret: hook-url, events: [BackupFailed]}\n",
    );
    s.write(
        "db.yaml",
        &database(
            &s,
            "shop",
            "mariadb",
            "  mode: shared\n  server: main\n  backup: {schedule: \"* * * * *\", keep: 3}\n",
        ),
    );
    // The backup folder cannot be made: a file is in the way.
    let name = s.name("shop");
    fs::create_dir_all(s.state_path().join("backups")).unwrap();
    fs::write(s.state_path().join("backups").join(&name), "in the way").unwrap();
    let source = s.manifests_path().display().to_string();
    let c = crate::run::Controller::start_with(&s, &source, &[]);
    crate::run::eventually(&c, 80, "the failed backup is recorded", || {
        c.api("/api/v1/status")["backups"][&name]["error"].is_string()
    });
    let status = c.api("/api/v1/status");
    let error = status["backups"][&name]["error"].as_str().unwrap();
    assert!(error.starts_with("failed to create "), "{error}");
    crate::run::eventually(&c, 10, "the notifier hears of it", || {
        hook.received()
            .iter()
            .any(|r| r.json()["event"] == "BackupFailed")
    });
    let sent: Vec<serde_json::Value> = hook.received().iter().map(|r| r.json()).collect();
    assert!(
        sent.iter().all(|m| m["event"] == "BackupFailed"),
        "{sent:?}"
    );
    assert_eq!(
        sent[0]["summary"],
        format!("backup of Database/{name} failed"),
        "{sent:?}"
    );
}

#[test]
fn a_managed_database_is_dumped_and_restored_in_its_container() {
    let mut s = Scenario::new();
    // A stand-in whose pg_dump and pg_restore record what berth runs: the engine's own
    // tools are not here (no registry), berth's part is the exec, the files and the
    // arguments.
    let version = format!("16-berthtest-backup-{}", s.prefix);
    let tag = format!("postgres:{version}");
    s.remove_with(&tag);
    let ctx = tempfile::tempdir().unwrap();
    let scripts = [
        ("pg_isready", "#!/bin/sh\nexit 0\n"),
        ("pg_dump", "#!/bin/sh\necho \"PGDMP stand-in dump: $*\"\n"),
        (
            "pg_restore",
            "#!/bin/sh\ncat > /www/restored\necho \"$*\" > /www/restore-args\n",
        ),
    ];
    let mut dockerfile = format!("FROM {}\n", image());
    for (name, body) in scripts {
        fs::write(ctx.path().join(name), body).unwrap();
        dockerfile.push_str(&format!("COPY {name} /usr/local/bin/{name}\n"));
    }
    dockerfile.push_str("RUN [\"/bin/chmod\", \"755\", \"/usr/local/bin/pg_isready\", \"/usr/local/bin/pg_dump\", \"/usr/local/bin/pg_restore\"]\n");
    fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let built = docker(&["build", "-q", "-t", &tag, ctx.path().to_str().unwrap()]);
    assert!(built.status.success(), "{}", text(&built));
    s.write(
        "db.yaml",
        &database(
            &s,
            "pg",
            "postgres",
            &format!("  version: {version}\n  backup: {{schedule: \"0 3 * * *\", keep: 2}}\n"),
        ),
    );
    s.apply();
    let user = s.name("pg").replace('-', "_");
    let manifests = s.manifests_path().to_str().unwrap().to_owned();

    let (code, out) = berth_backup(&s, &["run", &s.name("pg"), &manifests]);
    assert_eq!(code, Some(0), "{out}");
    let (_, listed) = berth_backup(&s, &["list", &s.name("pg"), "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let file = listed[0]["path"].as_str().unwrap().to_owned();
    assert!(file.ends_with(".dump"), "{file}");
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        format!("PGDMP stand-in dump: -Fc -U {user} {user}\n")
    );

    let (code, out) = berth_backup(&s, &["restore", &s.name("pg"), &file, &manifests]);
    assert_eq!(code, Some(0), "{out}");
    let restored = docker(&["exec", &s.name("pg"), "cat", "/www/restored"]);
    assert_eq!(text(&restored), fs::read_to_string(&file).unwrap());
    let args = docker(&["exec", &s.name("pg"), "cat", "/www/restore-args"]);
    assert_eq!(
        text(&args).trim(),
        format!(
            "--clean --if-exists --no-owner --single-transaction --exit-on-error -U {user} -d {user}"
        )
    );

    // A dump tool that fails: the error says which and why, no file is left.
    let failing = docker(&[
        "exec",
        &s.name("pg"),
        "sh",
        "-c",
        "printf '#!/bin/sh\\necho \"pg_dump: error: connection refused\" >&2\\nexit 1\\n' > /usr/local/bin/pg_dump",
    ]);
    assert!(failing.status.success(), "{}", text(&failing));
    let (code, out) = berth_backup(&s, &["run", &s.name("pg"), &manifests]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("`pg_dump` exited with code 1: pg_dump: error: connection refused"),
        "{out}"
    );
    let (_, listed) = berth_backup(&s, &["list", &s.name("pg"), "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let leftovers: Vec<_> = fs::read_dir(s.state_path().join("backups").join(s.name("pg")))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}
