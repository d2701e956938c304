//! Domains: each one's proxy file written when new or changed (or edited by hand), left
//! alone when another program wrote it, removed when the Domain is gone. With nginx,
//! Domains sharing a host share one file (named after the first): each of them gets
//! its action, and the batch writes the file once. An app handed over to a new
//! container loses its old one in the action of the Domain that routes to it, after
//! the proxy has switched.

use std::collections::{BTreeMap, BTreeSet};

use super::resolve::{redact_tokens, shown_token};
use super::{Action, Need, Op, Phase, Step, Target, unified_diff};
use crate::desired::Desired;
use crate::desired::routes::{FileState, Upstream};
use crate::observe::Observed;

/// The action of every declared Domain, and of the files of Domains no longer declared
/// (prunes, when pruning). `after_switch` holds, per app, the steps that wait until
/// the proxy reaches the app's new container.
pub(super) fn plan_domains(
    desired: &Desired,
    observed: &Observed,
    after_switch: &BTreeMap<String, Vec<Step>>,
    options: super::PlanOptions,
) -> (Vec<Action>, Vec<Action>) {
    let mut actions: BTreeMap<&str, Action> = BTreeMap::new();
    for (domain, route) in &desired.routes {
        let Some(key) = desired.file_of(domain) else {
            continue;
        };
        let file = &desired.proxy_files[key];
        let mut a = Action::new(Target::Domain, domain, Op::Noop);
        a.phase = Phase::Proxy;
        let shared = (key != domain.as_str()).then(|| {
            format!(" (in berth-{key}.conf, shared with Domain {key}: one server block per host)")
        });
        match observed.proxy_files.get(key) {
            None => {
                a.op = Op::Create;
                let path = match &route.private_token {
                    Some(token) => format!("/p/{}/", shown_token(domain, token)),
                    None => route.public_path(),
                };
                a.reasons.push(format!(
                    "new route {} at {path} → {}{}",
                    route.hosts.join(", "),
                    route.upstream.address(),
                    shared.as_deref().unwrap_or_default()
                ));
            }
            Some((FileState::Foreign, _)) => {
                a.op = Op::Conflict;
                a.reasons.push(format!(
                    "its proxy file{} exists and was not written by berth (no berth header); \
                     move it away or rename the domain",
                    shared_file(key, domain)
                ));
            }
            Some((FileState::OtherInstance(owner), _)) => {
                a.op = Op::Conflict;
                a.reasons.push(format!(
                    "its proxy file{} belongs to berth instance `{owner}`; one domain name \
                     cannot be declared by two instances: rename it in one of them",
                    shared_file(key, domain)
                ));
            }
            Some((state, current)) if *current != file.content || *state != FileState::Intact => {
                a.op = Op::Update;
                if *state == FileState::Legacy {
                    a.reasons.push(
                        "proxy file of an earlier berth (no instance in its header): taken over"
                            .into(),
                    );
                } else if *state == FileState::Edited {
                    a.drift = true;
                    a.reasons.push("proxy file edited by hand (drift)".into());
                } else {
                    a.reasons.push(format!(
                        "proxy config changed{}",
                        shared.as_deref().unwrap_or_default()
                    ));
                }
                if let Some(switch) = switch_reason(desired, observed, route) {
                    a.reasons.push(switch);
                }
                // The diff once, in the action of the Domain the file is named after.
                // Tokens are secrets: shown redacted, as the reasons show them.
                if key == domain.as_str() {
                    a.diff = Some(unified_diff(
                        &redact_tokens(desired, file, current),
                        &redact_tokens(desired, file, &file.content),
                    ));
                }
            }
            Some(_) => {}
        }
        if matches!(a.op, Op::Create | Op::Update) {
            a.steps.push(Step::WriteProxyFile {
                domain: key.to_owned(),
            });
        }
        if let Some(c) = desired.certificates.get(domain.as_str()) {
            if !c.usable(options.now) {
                a.reasons
                    .push("served over plain HTTP until its certificate is issued".into());
                a.waiting = true;
            }
        }
        actions.insert(domain, a);
    }
    // Files of Domains that now share another Domain's file go with that change.
    let mut prunes = Vec::new();
    for (key, (state, _)) in &observed.proxy_files {
        // Only this instance's own files; another's, a foreign one or an earlier
        // berth's unnamed one is never removed.
        let ours = matches!(state, FileState::Intact | FileState::Edited);
        if !ours || desired.proxy_files.contains_key(key) {
            continue;
        }
        let remove = Step::RemoveProxyFile {
            domain: key.clone(),
        };
        match actions.get_mut(key.as_str()) {
            Some(a) => {
                let into = desired.file_of(key).unwrap_or_default();
                a.reasons.push(format!(
                    "its routes move to berth-{into}.conf, shared with Domain {into}"
                ));
                if a.op == Op::Noop {
                    a.op = Op::Update;
                }
                a.steps.push(remove);
            }
            None if options.prune => {
                let mut a = Action::new(Target::Domain, key, Op::Delete);
                a.reasons.push("no longer declared".into());
                a.steps.push(remove);
                prunes.push(a);
            }
            None => {}
        }
    }
    // An app handed over: its old container goes once every Domain routing to it has
    // switched, in the action of the last of them.
    for (app, steps) in after_switch {
        let routing: Vec<&str> = desired
            .routes
            .keys()
            .map(String::as_str)
            .filter(|d| routes_to(desired, d, app))
            .collect();
        let Some(last) = routing.last().copied() else {
            continue;
        };
        let others: BTreeSet<&str> = routing[..routing.len() - 1].iter().copied().collect();
        let Some(a) = actions.get_mut(last) else {
            continue;
        };
        if a.op == Op::Noop {
            a.op = Op::Update;
            a.reasons.push(format!(
                "the proxy already reaches app {app}'s new container: its old one goes"
            ));
        } else {
            a.reasons
                .push(format!("then app {app}'s old container goes"));
        }
        a.steps.extend(steps.iter().cloned());
        a.needs.push(Need {
            target: Target::App,
            name: app.clone(),
        });
        a.needs.extend(others.into_iter().map(|d| Need {
            target: Target::Domain,
            name: d.to_owned(),
        }));
    }
    (actions.into_values().collect(), prunes)
}

/// The file named after another Domain, when a Domain's routes are in one.
fn shared_file(key: &str, domain: &str) -> String {
    match key == domain {
        true => String::new(),
        false => format!(" berth-{key}.conf (shared with Domain {key})"),
    }
}

/// Whether Domain `domain` routes to `app`.
fn routes_to(desired: &Desired, domain: &str, app: &str) -> bool {
    desired.routes.get(domain).is_some_and(|r| {
        let port = desired
            .apps
            .get(app)
            .and_then(|a| a.host_port)
            .map(|h| h.host);
        matches!(r.upstream, Upstream::HostPort { port: p } if Some(p) == port)
    })
}

/// Why a route's upstream moves: the app's new container listens on another host port.
fn switch_reason(
    desired: &Desired,
    observed: &Observed,
    route: &crate::desired::routes::Route,
) -> Option<String> {
    let Upstream::HostPort { port } = route.upstream else {
        return None;
    };
    let (name, _) = desired
        .apps
        .iter()
        .find(|(_, a)| a.host_port.is_some_and(|h| h.host == port))?;
    let serving = observed
        .containers
        .iter()
        .filter(|c| c.app == *name && c.name == *name)
        .find_map(|c| observed.host_port_of(c))?;
    (serving != port).then(|| {
        format!(
            "switches app {name} from 127.0.0.1:{serving} to its new container on 127.0.0.1:{port}"
        )
    })
}
