//! The checks of an App: image, command, environment, volumes, ports, database links,
//! health, limits, dependencies, labels and user.

use std::collections::{BTreeMap, BTreeSet};

use super::graph::{Index, missing_ref};
use super::{Report, Typed, esc};
use crate::manifest::model::{AppSpec, Kind};
use crate::manifest::syntax;

/// Checks an App spec and its references to databases and other apps.
pub(super) fn check_app(report: &mut Report, index: &Index, t: &Typed, a: &AppSpec) {
    let doc = t.doc;
    match (&a.build, a.image.is_empty()) {
        (None, true) => report.at(
            doc,
            "/spec",
            "give `image` (an image to run) or `build` (a folder to build it from)",
        ),
        (None, false) => report.check(doc, "/spec/image", syntax::check_image(&a.image)),
        (Some(_), false) => report.at(
            doc,
            "/spec/build",
            "give either `image` or `build`: a built image is tagged berth/<app>:<hash>",
        ),
        (Some(build), true) => super::build::check_build(report, doc, build),
    }
    if let Some(cmd) = &a.command {
        if cmd.is_empty() {
            report.at(
                doc,
                "/spec/command",
                "command is empty; remove it to use the image's",
            );
        }
        for (n, word) in cmd.iter().enumerate() {
            report.check(
                doc,
                &format!("/spec/command/{n}"),
                syntax::check_text("command", word),
            );
        }
    }
    for (key, value) in &a.env {
        let at = format!("/spec/env/{}", esc(key));
        if let Err(m) = syntax::check_env_name(key) {
            report.at_key(doc, &at, m);
        }
        report.check(doc, &at, syntax::check_text("value", &value.0));
    }
    for (key, secret) in &a.secret_env {
        let at = format!("/spec/secretEnv/{}", esc(key));
        if let Err(m) = syntax::check_env_name(key) {
            report.at_key(doc, &at, m);
        }
        if a.env.contains_key(key) {
            report.at_key(
                doc,
                &at,
                format!("`{key}` is set in both env and secretEnv; keep one"),
            );
        }
        report.check(
            doc,
            &at,
            syntax::check_name(secret).map_err(|m| format!("secret {m}")),
        );
    }
    let mut mounts = BTreeMap::new();
    let mut names = BTreeSet::new();
    for (n, v) in a.volumes.iter().enumerate() {
        let at = format!("/spec/volumes/{n}");
        match (&v.name, &v.host_path) {
            (Some(name), None) => {
                report.check(doc, &format!("{at}/name"), syntax::check_name(name));
                if !names.insert(name.as_str()) {
                    report.at(
                        doc,
                        &format!("{at}/name"),
                        format!("volume `{name}` is listed twice"),
                    );
                }
            }
            (None, Some(path)) => {
                report.check(doc, &format!("{at}/hostPath"), syntax::check_fs_path(path))
            }
            _ => report.at(
                doc,
                &at,
                "give either `name` (a named volume) or `hostPath` (a bind mount)",
            ),
        }
        report.check(doc, &format!("{at}/mount"), syntax::check_fs_path(&v.mount));
        // `/b`, `//b` and `/b/` are one directory in the container.
        let normalized: Vec<&str> = v.mount.split('/').filter(|s| !s.is_empty()).collect();
        let first = match mounts.entry(normalized) {
            std::collections::btree_map::Entry::Occupied(e) => Some(*e.get()),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(v.mount.as_str());
                None
            }
        };
        if let Some(first) = first {
            let same = if first == v.mount {
                String::new()
            } else {
                format!(" (as `{}`)", syntax::shown(first))
            };
            report.at(
                doc,
                &format!("{at}/mount"),
                format!("`{}` is mounted twice{same}", syntax::shown(&v.mount)),
            );
        }
    }
    for (n, p) in a.ports.iter().enumerate() {
        if let Some(ip) = &p.host_ip {
            if ip.parse::<std::net::IpAddr>().is_err() {
                report.at(
                    doc,
                    &format!("/spec/ports/{n}/hostIp"),
                    format!("`{}` is not an IP address", syntax::shown(ip)),
                );
            }
        }
    }
    let mut prefixes = BTreeMap::new();
    for (n, link) in a.databases.iter().enumerate() {
        let at = format!("/spec/databases/{n}");
        if !index.has(Kind::Database, &link.name) {
            report.at(doc, &at, missing_ref(index, Kind::Database, &link.name));
        }
        if let Some(prefix) = &link.prefix {
            let ok = prefix.starts_with(|c: char| c.is_ascii_uppercase())
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                report.at(
                    doc,
                    &format!("{at}/prefix"),
                    format!(
                        "prefix `{}` must be uppercase letters, digits and `_`, such as `ANALYTICS_`",
                        syntax::shown(prefix)
                    ),
                );
            }
        }
        let prefix = link.prefix.clone().unwrap_or_default();
        if let Some(other) = prefixes.insert(prefix.clone(), link.name.clone()) {
            report.at(
                doc,
                &at,
                format!(
                    "databases `{other}` and `{}` would both set {prefix}DATABASE_URL; give one \
                     of them a `prefix`",
                    link.name
                ),
            );
        }
    }
    if let Some(h) = &a.health {
        let probes = usize::from(h.http.is_some())
            + usize::from(h.tcp.is_some())
            + usize::from(h.cmd.is_some());
        if probes != 1 {
            report.at(
                doc,
                "/spec/health",
                "health needs exactly one of `http`, `tcp` or `cmd`",
            );
        }
        if let Some(path) = &h.http {
            report.check(doc, "/spec/health/http", syntax::check_url_path(path));
            if a.port.is_none() {
                report.at(
                    doc,
                    "/spec/health/http",
                    "an http health check needs the app's `port`",
                );
            }
        }
        if let Some(cmd) = &h.cmd {
            match cmd.first() {
                None => report.at(doc, "/spec/health/cmd", "the health command is empty"),
                Some(program) if program.trim().is_empty() => report.at(
                    doc,
                    "/spec/health/cmd/0",
                    "the health command's program is empty; name the program to run, such \
                     as `[pg_isready]`",
                ),
                Some(_) => {}
            }
            for (n, word) in cmd.iter().enumerate() {
                report.check(
                    doc,
                    &format!("/spec/health/cmd/{n}"),
                    syntax::check_text("health command", word),
                );
            }
        }
        if h.interval.get().is_zero() {
            report.at(
                doc,
                "/spec/health/interval",
                "interval must be more than 0s",
            );
        }
        if h.timeout.get().is_zero() {
            report.at(doc, "/spec/health/timeout", "timeout must be more than 0s");
        }
    }
    if let Some(r) = &a.resources {
        if let Some(m) = r.memory {
            if m.bytes() < 6 << 20 {
                report.at(
                    doc,
                    "/spec/resources/memory",
                    format!("memory `{m}` is below Docker's minimum of 6Mi"),
                );
            }
        }
    }
    let mut seen = BTreeSet::new();
    for (n, dep) in a.depends_on.iter().enumerate() {
        let at = format!("/spec/dependsOn/{n}");
        if dep == &t.name {
            report.at(doc, &at, "an app cannot depend on itself");
        } else if !index.has(Kind::App, dep) && !index.has(Kind::Database, dep) {
            report.at(
                doc,
                &at,
                format!(
                    "dependsOn `{}` names no App or Database",
                    syntax::shown(dep)
                ),
            );
        }
        if !seen.insert(dep) {
            report.at(doc, &at, format!("`{dep}` is listed twice"));
        }
    }
    for (key, value) in &a.labels {
        let at = format!("/spec/labels/{}", esc(key));
        if let Err(m) = syntax::check_label_key(key) {
            report.at_key(doc, &at, m);
        } else if key.starts_with("berth.") {
            report.at_key(
                doc,
                &at,
                format!("label `{key}`: keys under `berth.` are reserved for berth"),
            );
        }
        report.check(doc, &at, syntax::check_text("label value", value));
    }
    if let Some(user) = &a.user {
        report.check(
            doc,
            "/spec/user",
            syntax::check_token("user", &user.replacen(':', "", 1)),
        );
    }
}
