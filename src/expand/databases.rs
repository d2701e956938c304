//! Databases as berth converges them: their credentials (generated into the secret
//! store), the variables a linked app gets, the container of a `managed` database, and
//! the record of the `shared` databases berth created (so that removing a manifest
//! knows what it owned and what its deletion policy was).

use std::collections::BTreeMap;

use serde_json::json;

use crate::manifest::model::{
    AppSpec, Backup, DatabaseMode, DatabaseSpec, DeletionPolicy, Engine, Placement, Runtime,
    ServerEngine,
};
use crate::manifest::{MANAGED_DATA_VOLUME, Manifests};
use crate::state::secrets::{Secret, SecretError, SecretSource};

/// One database as berth will provide it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredDatabase {
    /// The resource's name.
    pub name: String,
    /// The engine.
    pub engine: Engine,
    /// How it is provided.
    pub mode: DatabaseMode,
    /// The database's name on its server.
    pub database: String,
    /// The user that owns it.
    pub user: String,
    /// Where apps reach it: the container's name (managed) or the server's host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The user's password (managed and shared); `None` until generated.
    pub password: Option<Secret>,
    /// The connection URL (external), or `None` when its secret is missing.
    pub url: Option<Secret>,
    /// For `shared`: the server, with its admin credentials (`None` when the admin
    /// password secret is missing).
    pub server: Option<ServerAddress>,
    /// For `shared`: the server's name in Settings.
    pub server_name: Option<String>,
    /// What removing the manifest does to the data.
    pub deletion_policy: DeletionPolicy,
    /// Scheduled dumps.
    pub backup: Option<Backup>,
    /// The image of a managed database.
    pub image: String,
    /// Where Swarm runs a managed database's task (`runtime: swarm`).
    pub placement: Option<Placement>,
    /// Where a managed database runs: a container, or a Swarm service's task.
    pub runtime: Runtime,
}

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

/// The shared servers of Settings whose admin password the store holds, by name.
pub type Servers = BTreeMap<String, ServerAddress>;

/// Reads the servers of Settings, each admin password once.
pub fn servers(manifests: &Manifests, store: &dyn SecretSource) -> Servers {
    manifests
        .settings()
        .servers
        .iter()
        .filter_map(|(name, server)| {
            let address = store
                .get(&server.admin_password_secret)
                .ok()
                .map(|admin_password| ServerAddress {
                    name: name.clone(),
                    engine: server.engine,
                    host: server.host.clone(),
                    port: server.port.unwrap_or(match server.engine {
                        ServerEngine::Postgres => 5432,
                        ServerEngine::Mysql | ServerEngine::Mariadb => 3306,
                    }),
                    admin_user: server.admin_user.clone(),
                    admin_password,
                })?;
            Some((name.clone(), address))
        })
        .collect()
}

/// The secret holding a database user's password.
pub fn password_secret(database: &str) -> String {
    format!("db-{database}-password")
}

/// The secret holding a managed database's administrator password.
pub fn root_password_secret(database: &str) -> String {
    format!("db-{database}-root-password")
}

/// The name of the internal network managed databases live on: `<network>-db`
/// (`berth-db` with the default network).
pub fn network(shared_network: &str) -> String {
    format!("{shared_network}-db")
}

fn default_port(engine: Engine) -> u16 {
    match engine {
        Engine::Postgres => 5432,
        Engine::Mysql | Engine::Mariadb => 3306,
        Engine::Redis => 6379,
        Engine::Mongo => 27017,
    }
}

fn default_version(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => "16",
        Engine::Mysql => "8",
        Engine::Mariadb => "11",
        Engine::Redis => "7",
        Engine::Mongo => "7",
    }
}

/// The database's name on the server: `databaseName`, or the resource name with `_`.
pub fn database_name(name: &str, spec: &DatabaseSpec) -> String {
    spec.database_name
        .clone()
        .unwrap_or_else(|| name.replace('-', "_"))
}

/// A secret a database needs that the store lacks.
#[derive(Debug, thiserror::Error)]
#[error("Database/{database}: {source}")]
pub struct DatabaseSecretMissing {
    /// The database.
    pub database: String,
    /// Why.
    #[source]
    pub source: SecretError,
}

/// Every declared database, resolved: credentials from the store, shared servers from
/// `servers`. Missing generated passwords are not errors (apply generates them);
/// missing URL or admin secrets are returned.
pub fn desired(
    manifests: &Manifests,
    store: &dyn SecretSource,
    servers: &Servers,
) -> (
    BTreeMap<String, DesiredDatabase>,
    Vec<DatabaseSecretMissing>,
) {
    let mut out = BTreeMap::new();
    let mut missing = Vec::new();
    for (name, resource) in &manifests.databases {
        let spec = &resource.spec;
        let database = database_name(name, spec);
        let user = spec.user.clone().unwrap_or_else(|| database.clone());
        let mut db = DesiredDatabase {
            name: name.clone(),
            engine: spec.engine,
            mode: spec.mode,
            database,
            user,
            host: name.clone(),
            port: default_port(spec.engine),
            password: store.get(&password_secret(name)).ok(),
            url: None,
            server: None,
            server_name: None,
            deletion_policy: spec.deletion_policy,
            backup: spec.backup.clone(),
            image: format!(
                "{}:{}",
                spec.engine.as_str(),
                spec.version
                    .as_deref()
                    .unwrap_or(default_version(spec.engine))
            ),
            placement: spec.placement.clone(),
            runtime: manifests.settings().runtime,
        };
        match spec.mode {
            DatabaseMode::Managed => {}
            DatabaseMode::Shared => {
                let server_name = spec.server.clone().unwrap_or_default();
                if let Some(server) = servers.get(&server_name) {
                    db.host = server.host.clone();
                    db.port = server.port;
                    db.server = Some(server.clone());
                } else if let Some(server) = manifests.settings().servers.get(&server_name) {
                    // Its admin password is missing: say why (validation refuses an
                    // unknown server).
                    db.host = server.host.clone();
                    db.port = server.port.unwrap_or(db.port);
                    if let Err(source) = store.get(&server.admin_password_secret) {
                        missing.push(DatabaseSecretMissing {
                            database: name.clone(),
                            source,
                        });
                    }
                }
                db.server_name = Some(server_name);
            }
            DatabaseMode::External => {
                let secret = spec.url_secret.clone().unwrap_or_default();
                match store.get(&secret) {
                    Ok(url) => {
                        if let Some(parts) = UrlParts::parse(url.expose()) {
                            db.host = parts.host;
                            db.port = parts.port.unwrap_or(db.port);
                            db.database = parts.database.unwrap_or(db.database);
                            db.user = parts.user.unwrap_or(db.user);
                            db.password = parts.password.map(|p| Secret::new(&secret, &p));
                        }
                        db.url = Some(url);
                    }
                    Err(source) => missing.push(DatabaseSecretMissing {
                        database: name.clone(),
                        source,
                    }),
                }
            }
        }
        out.insert(name.clone(), db);
    }
    (out, missing)
}

/// The pieces of a connection URL (`scheme://user:password@host:port/database`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct UrlParts {
    user: Option<String>,
    password: Option<String>,
    host: String,
    port: Option<u16>,
    database: Option<String>,
}

impl UrlParts {
    fn parse(url: &str) -> Option<UrlParts> {
        let (_, rest) = url.split_once("://")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (credentials, host_port) = match authority.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, authority),
        };
        let (user, password) = match credentials {
            Some(c) => match c.split_once(':') {
                Some((u, p)) => (Some(decode(u)), Some(decode(p))),
                None => (Some(decode(c)), None),
            },
            None => (None, None),
        };
        let (host, port) = match host_port.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().ok()),
            _ => (host_port, None),
        };
        let database = path
            .trim_start_matches('/')
            .split(['?', '#'])
            .next()
            .filter(|d| !d.is_empty())
            .map(decode);
        Some(UrlParts {
            user: user.filter(|u| !u.is_empty()),
            password,
            host: host.to_owned(),
            port,
            database,
        })
    }
}

/// Percent-decoding for URL parts.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encoding for URL parts (everything but unreserved characters).
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A variable a linked app gets: plain, or a secret (`None` while the password is
/// not generated yet, in a dry run).
#[derive(Debug, Clone, PartialEq)]
pub enum LinkValue {
    /// Shown as is in plans.
    Plain(String),
    /// Redacted everywhere.
    Secret(Option<Secret>),
}

/// The variables an app linking `db` gets, each name prefixed with `prefix`:
/// `DATABASE_URL` (`REDIS_URL` for redis, `MONGODB_URI` for mongo), `DB_HOST`,
/// `DB_PORT`, `DB_NAME`, `DB_USER`, `DB_PASSWORD`.
pub fn link_env(db: &DesiredDatabase, prefix: &str) -> BTreeMap<String, LinkValue> {
    let url_var = match db.engine {
        Engine::Redis => "REDIS_URL",
        Engine::Mongo => "MONGODB_URI",
        _ => "DATABASE_URL",
    };
    let url = match (&db.url, &db.password) {
        (Some(url), _) => Some(url.clone()),
        (None, Some(password)) => {
            let user = encode(&db.user);
            let pass = encode(password.expose());
            let (host, port, name) = (&db.host, db.port, encode(&db.database));
            let text = match db.engine {
                Engine::Postgres => format!("postgres://{user}:{pass}@{host}:{port}/{name}"),
                Engine::Mysql | Engine::Mariadb => {
                    format!("mysql://{user}:{pass}@{host}:{port}/{name}")
                }
                Engine::Redis => format!("redis://:{pass}@{host}:{port}/0"),
                Engine::Mongo => {
                    format!("mongodb://{user}:{pass}@{host}:{port}/{name}?authSource=admin")
                }
            };
            Some(Secret::new(&format!("db-{}-url", db.name), &text))
        }
        (None, None) => None,
    };
    let mut env = BTreeMap::new();
    let mut put = |name: &str, value: LinkValue| {
        env.insert(format!("{prefix}{name}"), value);
    };
    put(url_var, LinkValue::Secret(url));
    put("DB_HOST", LinkValue::Plain(db.host.clone()));
    put("DB_PORT", LinkValue::Plain(db.port.to_string()));
    put("DB_NAME", LinkValue::Plain(db.database.clone()));
    put("DB_USER", LinkValue::Plain(db.user.clone()));
    put("DB_PASSWORD", LinkValue::Secret(db.password.clone()));
    env
}

/// The managed redis's server command: the password is written into the configuration
/// redis reads from its standard input, quoted as its configuration quotes strings
/// (`printf` is the shell's own, so the value is in no process's argv).
pub const REDIS_SERVER: &str = r#"pass=$(printf '%s' "$REDIS_PASSWORD" | sed 's/[\\"]/\\&/g')
exec redis-server - <<EOF
appendonly yes
requirepass "$pass"
EOF"#;

/// The managed redis's health check: redis-cli takes the password from `REDISCLI_AUTH`.
pub const REDIS_PING: &str = "REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli ping | grep -q PONG";

/// The app spec of a managed database's container: the official image with its
/// documented environment, a named volume and a health check.
pub fn managed_app_spec(db: &DesiredDatabase) -> AppSpec {
    let password = password_secret(&db.name);
    let root = root_password_secret(&db.name);
    let (env, secret_env, mount, command, check): (
        serde_json::Value,
        serde_json::Value,
        &str,
        Option<Vec<&str>>,
        Vec<String>,
    ) = match db.engine {
        Engine::Postgres => (
            json!({"POSTGRES_USER": db.user, "POSTGRES_DB": db.database}),
            json!({"POSTGRES_PASSWORD": password}),
            "/var/lib/postgresql/data",
            None,
            vec![
                "pg_isready".into(),
                "-U".into(),
                db.user.clone(),
                "-d".into(),
                db.database.clone(),
            ],
        ),
        Engine::Mysql => (
            json!({"MYSQL_USER": db.user, "MYSQL_DATABASE": db.database}),
            json!({"MYSQL_PASSWORD": password, "MYSQL_ROOT_PASSWORD": root}),
            "/var/lib/mysql",
            None,
            vec![
                "sh".into(),
                "-c".into(),
                "mysqladmin ping -h 127.0.0.1 -u root --password=\"$MYSQL_ROOT_PASSWORD\"".into(),
            ],
        ),
        Engine::Mariadb => (
            json!({"MARIADB_USER": db.user, "MARIADB_DATABASE": db.database}),
            json!({"MARIADB_PASSWORD": password, "MARIADB_ROOT_PASSWORD": root}),
            "/var/lib/mysql",
            None,
            vec![
                "healthcheck.sh".into(),
                "--connect".into(),
                "--innodb_initialized".into(),
            ],
        ),
        Engine::Redis => (
            json!({}),
            json!({"REDIS_PASSWORD": password}),
            "/data",
            // The password reaches redis through the environment and its standard input
            // (a configuration given with `-`), never an argv: `ps` would show it.
            Some(vec!["sh", "-c", REDIS_SERVER]),
            vec!["sh".into(), "-c".into(), REDIS_PING.into()],
        ),
        Engine::Mongo => (
            json!({"MONGO_INITDB_ROOT_USERNAME": db.user, "MONGO_INITDB_DATABASE": db.database}),
            json!({"MONGO_INITDB_ROOT_PASSWORD": password}),
            "/data/db",
            None,
            vec![
                "mongosh".into(),
                "--quiet".into(),
                "--eval".into(),
                "db.adminCommand('ping').ok".into(),
            ],
        ),
    };
    let value = json!({
        "image": db.image,
        "command": command,
        "env": env,
        "secretEnv": secret_env,
        "volumes": [{"name": MANAGED_DATA_VOLUME, "mount": mount}],
        "health": {"cmd": check, "interval": "2s", "timeout": "5s", "retries": 30, "startPeriod": "5s"},
        "deletionPolicy": match db.deletion_policy {
            DeletionPolicy::Retain => "retain",
            DeletionPolicy::Delete => "delete",
        },
        "placement": db.placement,
        // Under Swarm: the name resolves to its one task, with no virtual address in
        // between (which kernels without IPVS cannot route).
        "endpointMode": "dnsrr",
    });
    let value = match value {
        serde_json::Value::Object(mut map) => {
            map.retain(|_, v| !v.is_null());
            serde_json::Value::Object(map)
        }
        v => v,
    };
    serde_json::from_value(value).expect("a managed database's spec is a valid App spec")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(engine: Engine, mode: DatabaseMode) -> DesiredDatabase {
        DesiredDatabase {
            name: "blog-db".into(),
            engine,
            mode,
            database: "blog_db".into(),
            user: "blog".into(),
            host: "blog-db".into(),
            port: 5432,
            password: Some(Secret::new("db-blog-db-password", "s3cr3t/pw")),
            url: None,
            server: None,
            server_name: None,
            deletion_policy: DeletionPolicy::Retain,
            backup: None,
            image: "postgres:16".into(),
            placement: None,
            runtime: Runtime::Docker,
        }
    }

    fn shown(env: &BTreeMap<String, LinkValue>) -> Vec<(String, String)> {
        env.iter()
            .map(|(k, v)| {
                let v = match v {
                    LinkValue::Plain(p) => p.clone(),
                    LinkValue::Secret(Some(s)) => s.expose().to_owned(),
                    LinkValue::Secret(None) => "<none>".into(),
                };
                (k.clone(), v)
            })
            .collect()
    }

    #[test]
    fn linked_variables_per_engine_and_prefix() {
        let env = link_env(&db(Engine::Postgres, DatabaseMode::Managed), "");
        assert_eq!(
            shown(&env),
            [
                (
                    "DATABASE_URL",
                    "postgres://blog:s3cr3t%2Fpw@blog-db:5432/blog_db"
                ),
                ("DB_HOST", "blog-db"),
                ("DB_NAME", "blog_db"),
                ("DB_PASSWORD", "s3cr3t/pw"),
                ("DB_PORT", "5432"),
                ("DB_USER", "blog"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let mut redis = db(Engine::Redis, DatabaseMode::Managed);
        redis.port = 6379;
        let env = link_env(&redis, "CACHE_");
        assert_eq!(
            env["CACHE_REDIS_URL"],
            LinkValue::Secret(Some(Secret::new(
                "db-blog-db-url",
                "redis://:s3cr3t%2Fpw@blog-db:6379/0"
            )))
        );
        assert!(env.keys().all(|k| k.starts_with("CACHE_")));
        let env = link_env(&db(Engine::Mongo, DatabaseMode::Managed), "");
        assert!(env.contains_key("MONGODB_URI"));
        let mut none = db(Engine::Postgres, DatabaseMode::Managed);
        none.password = None;
        assert_eq!(link_env(&none, "")["DATABASE_URL"], LinkValue::Secret(None));
    }

    #[test]
    fn urls_parse_into_their_parts() {
        let p = UrlParts::parse("postgres://app:p%40ss@db.example.com:6432/shop?sslmode=require")
            .unwrap();
        assert_eq!(p.user.as_deref(), Some("app"));
        assert_eq!(p.password.as_deref(), Some("p@ss"));
        assert_eq!(p.host, "db.example.com");
        assert_eq!(p.port, Some(6432));
        assert_eq!(p.database.as_deref(), Some("shop"));
        let p = UrlParts::parse("redis://cache:6379").unwrap();
        assert_eq!((p.user, p.password, p.database), (None, None, None));
        assert!(UrlParts::parse("not a url").is_none());
    }

    #[test]
    fn managed_containers_follow_the_official_images() {
        let spec = managed_app_spec(&db(Engine::Postgres, DatabaseMode::Managed));
        assert_eq!(spec.image, "postgres:16");
        assert_eq!(spec.env["POSTGRES_DB"].0, "blog_db");
        assert_eq!(spec.env["POSTGRES_USER"].0, "blog");
        assert_eq!(spec.secret_env["POSTGRES_PASSWORD"], "db-blog-db-password");
        assert_eq!(spec.volumes[0].mount, "/var/lib/postgresql/data");
        assert_eq!(
            spec.health.as_ref().unwrap().cmd.as_ref().unwrap()[0],
            "pg_isready"
        );
        let mut maria = db(Engine::Mariadb, DatabaseMode::Managed);
        maria.image = "mariadb:11".into();
        let spec = managed_app_spec(&maria);
        assert_eq!(
            spec.secret_env["MARIADB_ROOT_PASSWORD"],
            "db-blog-db-root-password"
        );
        let spec = managed_app_spec(&db(Engine::Redis, DatabaseMode::Managed));
        assert!(
            !spec.command.unwrap().join(" ").contains("s3cr3t"),
            "no password on a command line"
        );
    }

    /// `redis-server --requirepass "$REDIS_PASSWORD"` and `redis-cli -a …` put the
    /// password in an argv, which `ps` shows: the server and its health check run here
    /// under the shells redis images have, against stand-ins that record their argv.
    #[test]
    fn the_redis_password_is_in_no_argv_of_its_server_or_health_check() {
        let spec = managed_app_spec(&db(Engine::Redis, DatabaseMode::Managed));
        assert_eq!(spec.command.as_deref().unwrap()[2], REDIS_SERVER);
        let health = spec.health.as_ref().and_then(|h| h.cmd.clone()).unwrap();
        assert_eq!(health[2], REDIS_PING);

        let bin = tempfile::tempdir().unwrap();
        let record = |name: &str, tail: &str| {
            let path = bin.path().join(name);
            std::fs::write(
                &path,
                format!(
                    "#!/bin/sh\nprintf '%s\\n' \"$0 $*\" >> \"$(dirname \"$0\")/argv\"\n{tail}"
                ),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        record("redis-server", "cat > \"$(dirname \"$0\")/config\"\n");
        record(
            "redis-cli",
            "[ \"$REDISCLI_AUTH\" = \"$REDIS_PASSWORD\" ] && echo PONG\n",
        );
        let password = r#"pa"ss\word x"#;
        let path = format!(
            "{}:{}",
            bin.path().display(),
            std::env::var("PATH").unwrap()
        );
        let shells: Vec<Vec<&str>> = [vec!["/bin/sh"], vec!["/bin/busybox", "sh"]]
            .into_iter()
            .filter(|s| std::path::Path::new(s[0]).exists())
            .collect();
        for shell in shells {
            for script in [REDIS_SERVER, REDIS_PING] {
                let out = std::process::Command::new(shell[0])
                    .args(&shell[1..])
                    .args(["-c", script])
                    .env("PATH", &path)
                    .env("REDIS_PASSWORD", password)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{shell:?} -c {script}: {out:?}");
            }
            let argv = std::fs::read_to_string(bin.path().join("argv")).unwrap();
            assert!(!argv.contains("pa\"ss"), "{shell:?}: {argv}");
            assert!(argv.contains("redis-server -\n"), "{shell:?}: {argv}");
            let config = std::fs::read_to_string(bin.path().join("config")).unwrap();
            assert_eq!(
                config, "appendonly yes\nrequirepass \"pa\\\"ss\\\\word x\"\n",
                "{shell:?}"
            );
            std::fs::remove_file(bin.path().join("argv")).unwrap();
        }
    }
}
