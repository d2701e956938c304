//! Database: managed, shared or external, and its backups.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::DeletionPolicy;
use crate::manifest::units::Cron;

/// A database: a container berth runs (`managed`), a database on a shared server
/// (`shared`), or a URL from a secret (`external`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatabaseSpec {
    /// `postgres`, `mysql`, `mariadb`, `redis` or `mongo`.
    pub engine: Engine,
    /// The engine's version, the official image's tag for `managed`. Default: postgres
    /// 16, mysql 8, mariadb 11, redis 7, mongo 7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `managed`, `shared` or `external`. Default: `managed`.
    #[serde(default)]
    pub mode: DatabaseMode,
    /// For `shared`: the server in Settings `servers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// For `external`: the secret holding the connection URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret: Option<String>,
    /// The database's name on the server. Default: the resource name with `-` as `_`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_name: Option<String>,
    /// The user that owns it. Default: the database name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Scheduled dumps (`managed` and `shared` only). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Backup>,
    /// What removing the manifest does to the data: `retain` keeps it, `delete` drops
    /// it. Default: `retain`.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// For `managed` under `runtime: swarm` (and required there): the node its single
    /// task runs on, pinned by a constraint such as `node.labels.berth-db==main`, since
    /// its volume lives on that node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<super::app::Placement>,
}

/// Database engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Engine {
    /// PostgreSQL.
    Postgres,
    /// MySQL.
    Mysql,
    /// MariaDB.
    Mariadb,
    /// Redis.
    Redis,
    /// MongoDB.
    Mongo,
}

impl Engine {
    /// The name written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
            Engine::Mariadb => "mariadb",
            Engine::Redis => "redis",
            Engine::Mongo => "mongo",
        }
    }
}

/// How a database is provided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DatabaseMode {
    /// A container from the engine's official image, with a named volume.
    #[default]
    Managed,
    /// A database and user of its own on a server in Settings `servers`.
    Shared,
    /// A database berth does not run: the URL comes from a secret.
    External,
}

/// Scheduled backups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backup {
    /// When to dump, in cron syntax (host local time), such as `0 3 * * *`.
    pub schedule: Cron,
    /// How many dumps to keep. Default: 7.
    #[serde(default = "default_keep")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep: u32,
}

fn default_keep() -> u32 {
    7
}
