//! The checks of an App's `build`: a context folder inside the repository, a Dockerfile
//! inside the context, a stage name, build arguments and the secrets it mounts.

use super::{Report, esc};
use crate::manifest::model::Build;
use crate::manifest::syntax;

/// Checks `build` (at `/spec/build` of document `doc`).
pub(super) fn check_build(report: &mut Report, doc: usize, build: &Build) {
    report.check(
        doc,
        "/spec/build/context",
        check_relative("context", &build.context),
    );
    if let Some(dockerfile) = &build.dockerfile {
        report.check(
            doc,
            "/spec/build/dockerfile",
            check_relative("dockerfile", dockerfile).and_then(
                |()| match syntax::normalize_relative(dockerfile).is_empty() {
                    true => Err("dockerfile must name a file inside the context".to_owned()),
                    false => Ok(()),
                },
            ),
        );
    }
    if let Some(target) = &build.target {
        report.check(
            doc,
            "/spec/build/target",
            syntax::check_token("target", target),
        );
    }
    for (key, value) in &build.args {
        let at = format!("/spec/build/args/{}", esc(key));
        if let Err(m) = syntax::check_env_name(key) {
            report.at_key(
                doc,
                &at,
                m.replace("environment variable", "build argument"),
            );
        }
        report.check(doc, &at, syntax::check_text("value", &value.0));
    }
    for (key, secret) in &build.secret_args {
        let at = format!("/spec/build/secretArgs/{}", esc(key));
        if let Err(m) = syntax::check_env_name(key) {
            report.at_key(doc, &at, m.replace("environment variable", "secret id"));
        }
        if build.args.contains_key(key) {
            report.at_key(
                doc,
                &at,
                format!("`{key}` is in both args and secretArgs; keep one"),
            );
        }
        report.check(
            doc,
            &at,
            syntax::check_name(secret).map_err(|m| format!("secret {m}")),
        );
    }
    if build.timeout.get().is_zero() {
        report.at(doc, "/spec/build/timeout", "timeout must be more than 0s");
    }
}

/// A path inside the repository: relative, no `..`, no control or hostile characters.
fn check_relative(what: &str, path: &str) -> Result<(), String> {
    if path.starts_with('/') {
        let relative = match what {
            "context" => "inside the repository, relative to its root (such as `apps/web`)",
            _ => "inside the context, relative to it (such as `docker/web.Dockerfile`)",
        };
        return Err(format!(
            "{what} `{}` must be a path {relative}, not an absolute path",
            syntax::shown(path)
        ));
    }
    if path.split('/').any(|seg| seg == "..") {
        return Err(format!(
            "{what} `{}` contains a `..` segment; it must stay inside the repository",
            syntax::shown(path)
        ));
    }
    if path.is_empty() || path.len() > 1024 {
        return Err(format!("{what} must have 1 to 1024 characters"));
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err(format!(
            "{what} `{}` contains a control character or `\\`",
            syntax::shown(path)
        ));
    }
    Ok(())
}
