//! The checks of a Domain: hosts (normalized to punycode), its app and port, path,
//! TLS and headers.

use std::collections::BTreeSet;

use super::graph::{Index, missing_ref};
use super::{Report, Typed, esc};
use crate::manifest::model::{DomainSpec, Kind, Proxy, SettingsSpec, Tls};
use crate::manifest::syntax;

/// Checks a Domain spec; returns its hosts normalized (punycode).
pub(super) fn check_domain(
    report: &mut Report,
    index: &Index,
    settings: &SettingsSpec,
    t: &Typed,
    d: &DomainSpec,
) -> Vec<String> {
    let doc = t.doc;
    if matches!(settings.proxy, Proxy::None) {
        report.at(doc, "/kind", "Settings has `proxy: {kind: none}`, so domains cannot be served; choose nginx or traefik");
    }
    let mut hosts = Vec::new();
    let mut seen = BTreeSet::new();
    for (n, host) in d.hosts.iter().enumerate() {
        let at = format!("/spec/hosts/{n}");
        match syntax::normalize_host(host) {
            Ok(ascii) => {
                if !seen.insert(ascii.clone()) {
                    report.at(doc, &at, format!("host `{ascii}` is listed twice"));
                }
                hosts.push(ascii);
            }
            Err(m) => report.at(doc, &at, m),
        }
    }
    if !index.has(Kind::App, &d.app) {
        report.at(doc, "/spec/app", missing_ref(index, Kind::App, &d.app));
    } else if d.port.is_none() && index.app_ports.get(d.app.as_str()) == Some(&None) {
        report.at(
            doc,
            "/spec/app",
            format!(
                "App `{}` has no `port`; set the port on the app or on this domain",
                d.app
            ),
        );
    }
    report.check(doc, "/spec/path", syntax::check_url_path(&d.path));
    if d.private && d.path != "/" {
        // A private domain is served under `/p/<token>/` only; a path would be a second,
        // public route to the app.
        report.at(
            doc,
            "/spec/path",
            "a private domain is served only under its generated `/p/<token>/` path; \
             remove `path` or `private`",
        );
    }
    if d.max_body_size.is_some_and(|s| s.bytes() == 0) {
        report.at(
            doc,
            "/spec/maxBodySize",
            "maxBodySize `0` lifts the limit entirely (nginx reads 0 as no limit); give the \
             largest body to accept, such as `100Mi`",
        );
    }
    match &d.tls {
        Tls::Files { certificate, key } => {
            report.check(
                doc,
                "/spec/tls/certificate",
                syntax::check_fs_path(certificate),
            );
            report.check(doc, "/spec/tls/key", syntax::check_fs_path(key));
        }
        Tls::Secrets {
            certificate_secret,
            key_secret,
        } => {
            report.check(
                doc,
                "/spec/tls/certificateSecret",
                syntax::check_name(certificate_secret),
            );
            report.check(doc, "/spec/tls/keySecret", syntax::check_name(key_secret));
        }
        Tls::Acme { acme: true } => {
            if let Proxy::Traefik(tr) = &settings.proxy {
                if tr.cert_resolver.is_none() {
                    report.at(
                        doc,
                        "/spec/tls/acme",
                        "ACME with Traefik needs `certResolver` in Settings proxy",
                    );
                }
            }
            // With nginx, berth's own ACME client orders the certificate (Settings acme).
        }
        Tls::Off | Tls::Acme { acme: false } => {
            if d.redirect_https == Some(true) {
                report.at(
                    doc,
                    "/spec/redirectHttps",
                    "redirectHttps needs TLS; set `tls` or remove the redirect",
                );
            }
        }
    }
    for (name, value) in &d.headers {
        let at = format!("/spec/headers/{}", esc(name));
        if let Err(m) = syntax::check_header_name(name) {
            report.at_key(doc, &at, m);
        }
        report.check(doc, &at, syntax::check_header_value(value));
    }
    hosts
}
