//! The checks that depend on where apps run (`Settings.runtime`): Swarm's fields
//! (placement, endpoint mode, publish modes, reservations) are refused under `docker`,
//! and what Swarm cannot do is refused under `swarm`, such as a managed database that
//! is not pinned to the node its volume lives on.

use super::{Report, Spec, Typed};
use crate::manifest::model::{
    AppSpec, DatabaseMode, DatabaseSpec, EndpointMode, Placement, Proxy, PublishMode, Runtime,
    SettingsSpec, Upstream,
};
use crate::manifest::syntax;

/// Checks every App and Database against the runtime of the Settings.
pub(super) fn check_runtime(
    report: &mut Report,
    settings: &SettingsSpec,
    typed: &[Typed],
    keep: &[bool],
) {
    // Apps the proxy reaches on a published port of the host.
    let proxy_on_host = match &settings.proxy {
        Proxy::Nginx(n) => n.upstream == Upstream::HostPort,
        Proxy::Traefik(t) => t.upstream == Upstream::HostPort,
        Proxy::None => false,
    };
    let routed: Vec<&str> = typed
        .iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .filter_map(|(t, _)| match &t.spec {
            Spec::Domain(d) if proxy_on_host => Some(d.app.as_str()),
            _ => None,
        })
        .collect();
    for (t, _) in typed.iter().zip(keep).filter(|(_, k)| **k) {
        match (&t.spec, settings.runtime) {
            (Spec::App(a), Runtime::Docker) => check_app_docker(report, t.doc, a),
            (Spec::App(a), Runtime::Swarm) => {
                check_app_swarm(report, t.doc, a, routed.contains(&t.name.as_str()))
            }
            (Spec::Database(d), runtime) => check_database(report, t.doc, d, runtime),
            _ => {}
        }
    }
}

const SWARM_ONLY: &str = "is for `runtime: swarm` (Settings); under `runtime: docker` apps \
                          run as containers on the one daemon berth talks to";

fn check_app_docker(report: &mut Report, doc: usize, a: &AppSpec) {
    if a.placement.is_some() {
        report.at(doc, "/spec/placement", format!("`placement` {SWARM_ONLY}"));
    }
    if a.endpoint_mode.is_some() {
        report.at(
            doc,
            "/spec/endpointMode",
            format!("`endpointMode` {SWARM_ONLY}"),
        );
    }
    for (n, p) in a.ports.iter().enumerate() {
        if p.mode == Some(PublishMode::Ingress) {
            report.at(
                doc,
                &format!("/spec/ports/{n}/mode"),
                "mode `ingress` is Swarm's routing mesh (`runtime: swarm`); under \
                 `runtime: docker` a port is published on this host (mode `host`, the default)",
            );
        }
    }
    if a.resources
        .as_ref()
        .is_some_and(|r| r.reservations.is_some())
    {
        report.at(
            doc,
            "/spec/resources/reservations",
            "reservations are what Swarm keeps free on a node for each task (`runtime: \
             swarm`); under `runtime: docker` only the limits `cpus` and `memory` apply",
        );
    }
}

fn check_app_swarm(report: &mut Report, doc: usize, a: &AppSpec, routed_on_host: bool) {
    if a.build.is_some() {
        report.at(
            doc,
            "/spec/build",
            "`build` makes the image on the daemon berth talks to, which the other nodes of a \
             swarm cannot pull from: under `runtime: swarm`, build and push the image to a \
             registry and name it in `image`",
        );
    }
    if let Some(p) = &a.placement {
        check_placement(report, doc, "/spec/placement", p);
    }
    let dnsrr = a.endpoint_mode == Some(EndpointMode::Dnsrr);
    for (n, p) in a.ports.iter().enumerate() {
        if p.host_ip.is_some() {
            report.at(
                doc,
                &format!("/spec/ports/{n}/hostIp"),
                "Swarm publishes a port on every address of a node: `hostIp` is for \
                 `runtime: docker`",
            );
        }
        if dnsrr && p.mode.unwrap_or(PublishMode::Ingress) == PublishMode::Ingress {
            report.at(
                doc,
                &format!("/spec/ports/{n}"),
                "with `endpointMode: dnsrr` Swarm publishes ports in `host` mode only: add \
                 `mode: host`, or use `endpointMode: vip`",
            );
        }
    }
    if dnsrr && routed_on_host {
        report.at(
            doc,
            "/spec/endpointMode",
            "a Domain routes to this app through the proxy on the host, which reaches it on \
             a port published through Swarm's ingress, and `endpointMode: dnsrr` has none: \
             use `endpointMode: vip`, or a proxy on the overlay network (`upstream: network`)",
        );
    }
}

fn check_database(report: &mut Report, doc: usize, d: &DatabaseSpec, runtime: Runtime) {
    let Some(placement) = &d.placement else {
        if runtime == Runtime::Swarm && d.mode == DatabaseMode::Managed {
            report.at(doc, "/spec", UNPINNED);
        }
        return;
    };
    if d.mode != DatabaseMode::Managed {
        report.at(
            doc,
            "/spec/placement",
            "`placement` is only for `mode: managed` (a database berth runs)",
        );
        return;
    }
    match runtime {
        Runtime::Docker => {
            report.at(doc, "/spec/placement", format!("`placement` {SWARM_ONLY}"));
        }
        Runtime::Swarm => {
            check_placement(report, doc, "/spec/placement", placement);
            if placement.constraints.is_empty() {
                report.at(doc, "/spec/placement", UNPINNED);
            }
        }
    }
}

const UNPINNED: &str = "a managed database under `runtime: swarm` must be pinned to the node \
                        its volume lives on: add `placement: {constraints: \
                        [node.labels.berth-db==main]}` and label that node (`docker node \
                        update --label-add berth-db=main NODE`)";

/// The node attributes a constraint may test.
const ATTRIBUTES: [&str; 5] = [
    "node.id",
    "node.hostname",
    "node.role",
    "node.platform.os",
    "node.platform.arch",
];

fn check_placement(report: &mut Report, doc: usize, at: &str, p: &Placement) {
    for (n, c) in p.constraints.iter().enumerate() {
        report.check(doc, &format!("{at}/constraints/{n}"), check_constraint(c));
    }
    for (n, pref) in p.preferences.iter().enumerate() {
        let label = pref.spread.trim();
        let ok = label
            .strip_prefix("node.labels.")
            .is_some_and(|l| syntax::check_token("label", l).is_ok());
        if !ok {
            report.at(
                doc,
                &format!("{at}/preferences/{n}/spread"),
                format!(
                    "spread `{}` must name a node label: `node.labels.<label>`",
                    syntax::shown(&pref.spread)
                ),
            );
        }
    }
}

/// A constraint in Docker's syntax: `<attribute>==<value>` or `<attribute>!=<value>`.
fn check_constraint(c: &str) -> Result<(), String> {
    let shown = syntax::shown(c);
    let (key, value) = c
        .split_once("==")
        .or_else(|| c.split_once("!="))
        .ok_or_else(|| {
            format!("constraint `{shown}` must be `<attribute>==<value>` or `<attribute>!=<value>`")
        })?;
    let key = key.trim();
    let known = ATTRIBUTES.contains(&key)
        || ["node.labels.", "engine.labels."].iter().any(|p| {
            key.strip_prefix(p)
                .is_some_and(|l| syntax::check_token("label", l).is_ok())
        });
    if !known {
        return Err(format!(
            "constraint `{shown}` tests `{}`, which is not a node attribute: use one of {}, \
             `node.labels.<label>` or `engine.labels.<label>`",
            syntax::shown(key),
            super::quoted_list(ATTRIBUTES)
        ));
    }
    let value = value.trim();
    if value.is_empty() || value.contains(['=', '!']) || value.chars().any(char::is_control) {
        return Err(format!(
            "constraint `{shown}` needs one value after the operator"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_constraint;

    #[test]
    fn constraints_are_attribute_operator_value() {
        for ok in [
            "node.labels.zone==eu",
            "node.role != manager",
            "node.hostname==web-1",
            "engine.labels.disk==ssd",
        ] {
            assert_eq!(check_constraint(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            check_constraint("zone=eu"),
            Err(
                "constraint `zone=eu` must be `<attribute>==<value>` or `<attribute>!=<value>`"
                    .into()
            )
        );
        assert!(
            check_constraint("node.zone==eu")
                .unwrap_err()
                .contains("`node.zone`, which is not a node attribute")
        );
        assert!(check_constraint("node.role==").is_err());
        assert!(check_constraint("node.role==a==b").is_err());
    }
}
