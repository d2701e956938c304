//! The checks of the Settings document: port range, resync, proxy commands and
//! directories, shared servers.

use super::{Report, esc};
use crate::manifest::model::{AcmeSettings, LETS_ENCRYPT, Proxy, SettingsSpec};
use crate::manifest::syntax;

/// Checks a Settings spec.
pub(super) fn check_settings(report: &mut Report, doc: usize, s: &SettingsSpec) {
    if s.host_ports.from > s.host_ports.to {
        report.at(
            doc,
            "/spec/hostPorts",
            format!(
                "hostPorts is empty: `from` ({}) is greater than `to` ({})",
                s.host_ports.from, s.host_ports.to
            ),
        );
    }
    if ["host", "bridge", "none"].contains(&s.network.as_str()) {
        report.at(
            doc,
            "/spec/network",
            format!(
                "network `{}` is one of Docker's own networks, which apps cannot share with \
                 the proxy by name; choose another name, such as `berth`",
                s.network
            ),
        );
    }
    if s.resync.get().as_secs() < 10 {
        report.at(doc, "/spec/resync", "resync must be at least 10s");
    }
    check_acme(report, doc, &s.acme);
    match &s.proxy {
        Proxy::Nginx(n) => {
            report.check(
                doc,
                "/spec/proxy/configDir",
                syntax::check_fs_path(&n.config_dir),
            );
            for (field, cmd) in [("test", &n.test), ("reload", &n.reload)] {
                if cmd.words().is_empty() {
                    report.at(
                        doc,
                        &format!("/spec/proxy/{field}"),
                        format!("`{field}` is an empty command"),
                    );
                }
                for (w, word) in cmd.words().iter().enumerate() {
                    report.check(
                        doc,
                        &format!("/spec/proxy/{field}/{w}"),
                        syntax::check_text("command", word),
                    );
                }
            }
            if n.listen.http == n.listen.https {
                report.at(
                    doc,
                    "/spec/proxy/listen",
                    format!(
                        "http and https cannot both listen on port {}",
                        n.listen.http
                    ),
                );
            }
        }
        Proxy::Traefik(t) => {
            report.check(
                doc,
                "/spec/proxy/dynamicDir",
                syntax::check_fs_path(&t.dynamic_dir),
            );
            report.check(
                doc,
                "/spec/proxy/entryPoints/web",
                syntax::check_token("entry point", &t.entry_points.web),
            );
            report.check(
                doc,
                "/spec/proxy/entryPoints/websecure",
                syntax::check_token("entry point", &t.entry_points.websecure),
            );
            if let Some(r) = &t.cert_resolver {
                report.check(
                    doc,
                    "/spec/proxy/certResolver",
                    syntax::check_token("certificate resolver", r),
                );
            }
        }
        Proxy::None => {}
    }
    for (name, server) in &s.servers {
        let at = format!("/spec/servers/{}", esc(name));
        if let Err(m) = syntax::check_name(name) {
            report.at_key(doc, &at, m);
        }
        report.check(
            doc,
            &format!("{at}/host"),
            syntax::check_server_host(&server.host),
        );
        report.check(
            doc,
            &format!("{at}/adminUser"),
            syntax::check_token("admin user", &server.admin_user),
        );
        report.check(
            doc,
            &format!("{at}/adminPasswordSecret"),
            syntax::check_name(&server.admin_password_secret),
        );
    }
}

/// The ACME directory is an `https://` URL; the email an address; the CA bundle a path.
fn check_acme(report: &mut Report, doc: usize, acme: &AcmeSettings) {
    let url = acme.directory.as_str();
    let host = url
        .strip_prefix("https://")
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
    match host {
        None => report.at(
            doc,
            "/spec/acme/directory",
            format!(
                "the ACME directory `{}` is not an https:// URL; Let's Encrypt's is {LETS_ENCRYPT}",
                syntax::shown(url)
            ),
        ),
        Some(h)
            if h.is_empty()
                || h.contains('@')
                || url.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            report.at(
                doc,
                "/spec/acme/directory",
                format!(
                    "the ACME directory `{}` is not a valid URL",
                    syntax::shown(url)
                ),
            )
        }
        Some(_) => {}
    }
    if let Some(email) = &acme.email {
        let valid = email.split_once('@').is_some_and(|(user, domain)| {
            !user.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        }) && email.len() <= 254
            && !email
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"'".contains(c));
        if !valid {
            report.at(
                doc,
                "/spec/acme/email",
                format!(
                    "`{}` is not an email address (the CA writes to it about your certificates)",
                    syntax::shown(email)
                ),
            );
        }
    }
    if let Some(bundle) = &acme.ca_bundle {
        report.check(doc, "/spec/acme/caBundle", syntax::check_fs_path(bundle));
    }
}
