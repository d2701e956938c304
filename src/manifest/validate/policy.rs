//! The host policy's checks: each value a repository gives that reaches the host (bind
//! mounts, proxy files and commands, TLS files, health intervals, resources, private
//! workflow targets) against the policy the host set.

use super::super::model::{AppSpec, DomainSpec, Proxy, SettingsSpec, Tls};
use super::super::policy::Policy;
use super::super::syntax;
use super::{Report, Spec, Typed};

/// Checks every document that passed the earlier checks against `policy`.
pub(super) fn check_policy(report: &mut Report, typed: &[Typed], keep: &[bool], policy: &Policy) {
    for (n, t) in typed.iter().enumerate() {
        if !keep[n] {
            continue;
        }
        match &t.spec {
            Spec::App(a) => check_app(report, t.doc, a, policy),
            Spec::Domain(d) => check_domain(report, t.doc, d, policy),
            Spec::Settings(s) => check_settings(report, t.doc, s, policy),
            Spec::Database(_) | Spec::Notifier(_) | Spec::Workflow(_) => {}
        }
    }
}

fn check_app(report: &mut Report, doc: usize, a: &AppSpec, policy: &Policy) {
    for (i, v) in a.volumes.iter().enumerate() {
        // A path the syntax check refuses is reported there already.
        if let Some(path) = v
            .host_path
            .as_deref()
            .filter(|p| syntax::check_fs_path(p).is_ok())
        {
            let at = format!("/spec/volumes/{i}/hostPath");
            report.check(doc, &at, policy.check_host_path(path));
        }
    }
    if let Some(h) = &a.health {
        report.check(
            doc,
            "/spec/health/interval",
            policy.check_health_interval(h.interval),
        );
    }
    let resources = a.resources.as_ref();
    let memory = resources.and_then(|r| r.memory);
    let cpus = resources.and_then(|r| r.cpus);
    let at = |field: &str, set: bool| match (resources.is_some(), set) {
        (_, true) => format!("/spec/resources/{field}"),
        (true, false) => "/spec/resources".to_owned(),
        (false, false) => "/spec".to_owned(),
    };
    report.check(
        doc,
        &at("memory", memory.is_some()),
        policy.check_memory(memory),
    );
    report.check(doc, &at("cpus", cpus.is_some()), policy.check_cpus(cpus));
}

fn check_domain(report: &mut Report, doc: usize, d: &DomainSpec, policy: &Policy) {
    if let Tls::Files { certificate, key } = &d.tls {
        for (field, path) in [("certificate", certificate), ("key", key)] {
            if syntax::check_fs_path(path).is_ok() {
                let at = format!("/spec/tls/{field}");
                report.check(doc, &at, policy.check_tls_file(path));
            }
        }
    }
}

fn check_settings(report: &mut Report, doc: usize, s: &SettingsSpec, policy: &Policy) {
    match &s.proxy {
        Proxy::Nginx(n) => {
            for (field, path) in [("configDir", &n.config_dir), ("mainConfig", &n.main_config)] {
                if syntax::check_fs_path(path).is_ok() {
                    let at = format!("/spec/proxy/{field}");
                    report.check(doc, &at, policy.check_proxy_path(path));
                }
            }
            for (field, command) in [("test", &n.test), ("reload", &n.reload)] {
                let at = format!("/spec/proxy/{field}");
                report.check(doc, &at, policy.check_proxy_command(&command.words()));
            }
        }
        Proxy::Traefik(t) => {
            if syntax::check_fs_path(&t.dynamic_dir).is_ok() {
                report.check(
                    doc,
                    "/spec/proxy/dynamicDir",
                    policy.check_proxy_path(&t.dynamic_dir),
                );
            }
        }
        Proxy::None => {}
    }
    if let Some(bundle) = s
        .acme
        .ca_bundle
        .as_deref()
        .filter(|p| syntax::check_fs_path(p).is_ok())
    {
        // berth reads it, as it reads a Domain's certificate files.
        report.check(doc, "/spec/acme/caBundle", policy.check_tls_file(bundle));
    }
    if s.workflows.allow_private_targets && !policy.allows_private_targets() {
        report.at(
            doc,
            "/spec/workflows/allowPrivateTargets",
            format!(
                "private workflow targets are outside the host policy ({}); the Settings \
                 may narrow the policy, not widen it: remove `allowPrivateTargets` or ask \
                 the host's administrator to add the networks to httpTargets",
                policy.http_targets_rule()
            ),
        );
    }
}
