//! The checks of a Database: what each mode needs, its shared server, names and users.

use super::{Report, Typed, did_you_mean};
use crate::manifest::model::{DatabaseMode, DatabaseSpec, Engine, ServerEngine, SettingsSpec};
use crate::manifest::syntax;

/// Checks a Database spec against its mode and the Settings servers.
pub(super) fn check_database(
    report: &mut Report,
    settings: &SettingsSpec,
    t: &Typed,
    d: &DatabaseSpec,
) {
    let doc = t.doc;
    let engine = d.engine.as_str();
    if d.server.is_some() && d.mode != DatabaseMode::Shared {
        report.at(doc, "/spec/server", "`server` is only for `mode: shared`");
    }
    if d.url_secret.is_some() && d.mode != DatabaseMode::External {
        report.at(
            doc,
            "/spec/urlSecret",
            "`urlSecret` is only for `mode: external`",
        );
    }
    match d.mode {
        DatabaseMode::Managed => {}
        DatabaseMode::Shared => {
            if matches!(d.engine, Engine::Redis | Engine::Mongo) {
                report.at(
                    doc,
                    "/spec/mode",
                    format!("{engine} cannot be `shared`; use `managed` or `external`"),
                );
            }
            match &d.server {
                None => report.at(
                    doc,
                    "/spec",
                    "`mode: shared` needs `server`, one of Settings `servers`",
                ),
                Some(name) => match settings.servers.get(name) {
                    None => {
                        let names = settings.servers.keys().map(String::as_str);
                        let hint = did_you_mean(name, names)
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_else(|| "; declare it under Settings `servers`".to_owned());
                        report.at(
                            doc,
                            "/spec/server",
                            format!("no server named `{}`{hint}", syntax::shown(name)),
                        );
                    }
                    Some(server) => {
                        let compatible = matches!(
                            (server.engine, d.engine),
                            (ServerEngine::Postgres, Engine::Postgres)
                                | (
                                    ServerEngine::Mysql | ServerEngine::Mariadb,
                                    Engine::Mysql | Engine::Mariadb
                                )
                        );
                        if !compatible {
                            report.at(
                                doc,
                                "/spec/engine",
                                format!("engine `{engine}` does not match server `{name}`, which is {:?}", server.engine)
                                    .to_lowercase(),
                            );
                        }
                    }
                },
            }
        }
        DatabaseMode::External => {
            match &d.url_secret {
                None => report.at(
                    doc,
                    "/spec",
                    "`mode: external` needs `urlSecret`, the secret holding the URL",
                ),
                Some(s) => report.check(doc, "/spec/urlSecret", syntax::check_name(s)),
            }
            if d.backup.is_some() {
                report.at(
                    doc,
                    "/spec/backup",
                    "berth does not back up external databases",
                );
            }
        }
    }
    if let Some(v) = &d.version {
        report.check(doc, "/spec/version", syntax::check_token("version", v));
    }
    let max_user = if matches!(d.engine, Engine::Mysql | Engine::Mariadb) {
        32
    } else {
        63
    };
    if let Some(n) = &d.database_name {
        report.check(
            doc,
            "/spec/databaseName",
            syntax::check_sql_identifier("database name", n, 63),
        );
    }
    if let Some(u) = &d.user {
        report.check(
            doc,
            "/spec/user",
            syntax::check_sql_identifier("user", u, max_user),
        );
    }
}
