//! What resources know of each other: the index of names (duplicates, name clashes),
//! references to other resources, dependency cycles, and hosts and ports claimed twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{
    MANAGED_DATA_VOLUME, Report, Spec, Typed, did_you_mean, docker_volume_name, kind_of, locate,
};
use crate::manifest::model::{DatabaseMode, Kind, Protocol, SettingsSpec};
use crate::manifest::syntax;

/// What cross-document checks need to know about every resource.
pub(super) struct Index<'t> {
    by_id: HashMap<(Kind, &'t str), usize>,
    /// Every resource declared, valid or not: a reference to an invalid resource is not
    /// reported again as dangling.
    declared: BTreeSet<(Kind, String)>,
    /// The `port` of every valid app.
    pub(super) app_ports: HashMap<&'t str, Option<u16>>,
    /// The first Settings document's spec, when there is one.
    pub(super) settings: Option<&'t SettingsSpec>,
}

impl Index<'_> {
    /// Whether a resource of `kind` named `name` is declared, valid or not.
    pub(super) fn has(&self, kind: Kind, name: &str) -> bool {
        self.declared.contains(&(kind, name.to_owned()))
    }
}

/// Indexes the resources by kind and name, refusing a second Settings, a duplicate
/// name, and an App and a managed Database of the same name. Returns the index and,
/// for each typed document, whether it is kept for the per-kind checks.
pub(super) fn index<'t>(report: &mut Report, typed: &'t [Typed]) -> (Index<'t>, Vec<bool>) {
    let mut index = Index {
        by_id: HashMap::new(),
        declared: report
            .docs
            .iter()
            .filter_map(|d| d.id.as_ref().map(|id| (id.kind, id.name.clone())))
            .collect(),
        app_ports: typed
            .iter()
            .filter_map(|t| match &t.spec {
                Spec::App(a) => Some((t.name.as_str(), a.port)),
                _ => None,
            })
            .collect(),
        settings: None,
    };
    let mut first_settings: Option<usize> = None;
    let mut keep = vec![true; typed.len()];
    for (n, t) in typed.iter().enumerate() {
        let kind = kind_of(&t.spec);
        if kind == Kind::Settings {
            if let Some(first) = first_settings {
                let f = &report.docs[typed[first].doc];
                let message = format!(
                    "a second Settings document; there can be only one (the first is at {}:{})",
                    f.file, f.node.mark.line
                );
                report.at(t.doc, "/kind", message);
                keep[n] = false;
                continue;
            }
            first_settings = Some(n);
        }
        if let Some(&other) = index.by_id.get(&(kind, t.name.as_str())) {
            let message = format!(
                "duplicate {kind} `{}`; the first is at {}",
                t.name,
                name_at(report, &typed[other])
            );
            report.at(t.doc, "/metadata/name", message);
            keep[n] = false;
            continue;
        }
        // A managed database is a container named after it: it cannot share an app's name.
        let clash = match (&t.spec, kind) {
            (Spec::Database(d), _) if d.mode == DatabaseMode::Managed => {
                index.by_id.get(&(Kind::App, t.name.as_str())).copied()
            }
            (_, Kind::App) => index
                .by_id
                .get(&(Kind::Database, t.name.as_str()))
                .copied()
                .filter(|&o| {
                    matches!(&typed[o].spec, Spec::Database(d) if d.mode == DatabaseMode::Managed)
                }),
            _ => None,
        };
        if let Some(other) = clash {
            let message = format!(
                "`{}` names both an App and a managed Database (at {}); their containers \
                 would share the name: rename one",
                t.name,
                name_at(report, &typed[other])
            );
            report.at(t.doc, "/metadata/name", message);
            keep[n] = false;
            continue;
        }
        index.by_id.insert((kind, t.name.as_str()), n);
    }
    check_replica_names(report, typed, &index, &mut keep);
    if let Some(s) = first_settings {
        if let Spec::Settings(spec) = &typed[s].spec {
            index.settings = Some(spec);
        }
    }
    (index, keep)
}

/// Refuses an App or managed Database named like a replica of another app: replica 2
/// of `web` is the container `web-2`, so an app named `web-2` would take its name.
fn check_replica_names(report: &mut Report, typed: &[Typed], index: &Index, keep: &mut [bool]) {
    for (n, t) in typed.iter().enumerate() {
        let container = match &t.spec {
            Spec::App(_) => true,
            Spec::Database(d) => d.mode == DatabaseMode::Managed,
            _ => false,
        };
        let Some((base, replica)) = t.name.rsplit_once('-') else {
            continue;
        };
        let Ok(replica) = replica.parse::<u32>() else {
            continue;
        };
        if !keep[n] || !container || replica < 2 || replica.to_string() != t.name[base.len() + 1..]
        {
            continue;
        }
        let Some(&other) = index.by_id.get(&(Kind::App, base)) else {
            continue;
        };
        let Spec::App(app) = &typed[other].spec else {
            continue;
        };
        if app.replicas >= replica {
            let message = format!(
                "`{}` is also the container name of replica {replica} of App `{base}` (at {}, \
                 `replicas: {}`); rename one of them",
                t.name,
                name_at(report, &typed[other]),
                app.replicas
            );
            report.at(t.doc, "/metadata/name", message);
            keep[n] = false;
        }
    }
}

/// Where a resource is named: `file:line` of its `metadata.name`.
fn name_at(report: &Report, t: &Typed) -> String {
    let doc = &report.docs[t.doc];
    let line = locate(&doc.node, "/metadata/name", false).line;
    format!("{}:{line}", doc.file)
}

/// The message for a reference to a resource that does not exist.
pub(super) fn missing_ref(index: &Index, kind: Kind, name: &str) -> String {
    let names = index
        .declared
        .iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, n)| n.as_str());
    let article = if kind == Kind::App { "an" } else { "a" };
    let hint = did_you_mean(name, names)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_else(|| format!("; declare {article} {kind} named `{}`", syntax::shown(name)));
    format!("no {kind} named `{}`{hint}", syntax::shown(name))
}

/// Finds a cycle in a graph given as node → the nodes it needs; returns its path with
/// the first node repeated at the end.
pub(super) fn find_cycle<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>) -> Option<Vec<&'a str>> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Visiting,
        Done,
    }
    let mut state: HashMap<&str, State> = HashMap::new();
    for &start in graph.keys() {
        if state.contains_key(start) {
            continue;
        }
        // Iterative depth-first search keeping the current path.
        let mut path: Vec<(&str, usize)> = vec![(start, 0)];
        state.insert(start, State::Visiting);
        while let Some((node, next)) = path.last().copied() {
            let edges = graph.get(node).map(Vec::as_slice).unwrap_or(&[]);
            if next < edges.len() {
                path.last_mut().expect("non-empty").1 += 1;
                let dep = edges[next];
                match state.get(dep) {
                    Some(State::Visiting) => {
                        let from = path.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                        let mut cycle: Vec<&str> = path[from..].iter().map(|(n, _)| *n).collect();
                        cycle.push(dep);
                        return Some(cycle);
                    }
                    Some(State::Done) => {}
                    None => {
                        state.insert(dep, State::Visiting);
                        path.push((dep, 0));
                    }
                }
            } else {
                state.insert(node, State::Done);
                path.pop();
            }
        }
    }
    None
}

/// Every node that finishes before `node` (transitively needed).
pub(super) fn ancestors<'a>(
    graph: &BTreeMap<&'a str, Vec<&'a str>>,
    node: &str,
) -> BTreeSet<&'a str> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<&str> = graph.get(node).cloned().unwrap_or_default();
    while let Some(n) = stack.pop() {
        if out.insert(n) {
            stack.extend(graph.get(n).cloned().unwrap_or_default());
        }
    }
    out
}

/// Apps whose `dependsOn` form a cycle, each cycle reported once.
pub(super) fn check_depends_on_cycles(report: &mut Report, typed: &[Typed], keep: &[bool]) {
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut docs: BTreeMap<&str, usize> = BTreeMap::new();
    for (n, t) in typed.iter().enumerate() {
        if let (true, Spec::App(a)) = (keep[n], &t.spec) {
            // Self-dependencies are reported on their own; keep them out of cycles.
            let deps = a
                .depends_on
                .iter()
                .map(String::as_str)
                .filter(|d| *d != t.name);
            graph.insert(&t.name, deps.collect());
            docs.insert(&t.name, t.doc);
        }
    }
    // Report each cycle once, at the app it is found from.
    let mut reported: BTreeSet<Vec<&str>> = BTreeSet::new();
    while let Some(cycle) = find_cycle(&graph) {
        let mut key = cycle[..cycle.len() - 1].to_vec();
        key.sort_unstable();
        let first = cycle[0];
        if reported.insert(key) {
            let doc = docs[first];
            let dep = cycle[1];
            let i = match &typed
                .iter()
                .find(|t| t.name == first && t.doc == doc)
                .map(|t| &t.spec)
            {
                Some(Spec::App(a)) => a.depends_on.iter().position(|d| d == dep).unwrap_or(0),
                _ => 0,
            };
            report.at(
                doc,
                &format!("/spec/dependsOn/{i}"),
                format!("dependsOn forms a cycle: {}", cycle.join(" → ")),
            );
        }
        // Break the cycle's first edge and look again.
        if let Some(edges) = graph.get_mut(first) {
            edges.retain(|d| *d != cycle[1]);
        }
    }
}

/// Two domains may not claim the same host and path. Domains sharing a host serve it
/// with one certificate: theirs must agree (ACME Domains each order their own, and any
/// of them covers the host).
pub(super) fn check_host_clashes(
    report: &mut Report,
    typed: &[Typed],
    hosts: &[Option<Vec<String>>],
) {
    let mut claimed: BTreeMap<(String, String), &str> = BTreeMap::new();
    let mut served: BTreeMap<String, (&str, Option<String>)> = BTreeMap::new();
    for (n, t) in typed.iter().enumerate() {
        let (Some(list), Spec::Domain(d)) = (&hosts[n], &t.spec) else {
            continue;
        };
        let path = d.path.trim_end_matches('/').to_lowercase();
        let certificate = certificate_of(&d.tls);
        for (h, host) in list.iter().enumerate() {
            let key = (host.to_lowercase(), path.clone());
            match claimed.get(&key) {
                Some(other) if *other != t.name => {
                    let shown_path = if path.is_empty() { "/" } else { &path };
                    report.at(
                        t.doc,
                        &format!("/spec/hosts/{h}"),
                        format!("host `{host}` with path `{shown_path}` is already claimed by Domain `{other}`"),
                    );
                    continue;
                }
                Some(_) => {}
                None => {
                    claimed.insert(key, &t.name);
                }
            }
            match served.get(&host.to_lowercase()) {
                Some((other, theirs))
                    if *other != t.name
                        && certificate.is_some()
                        && theirs.is_some()
                        && *theirs != certificate =>
                {
                    report.at(
                        t.doc,
                        "/spec/tls",
                        format!(
                            "host `{host}` is also served by Domain `{other}`, with another \
                             certificate; a host is served with one: give both Domains the \
                             same `tls`"
                        ),
                    );
                }
                Some((_, theirs)) if theirs.is_none() && certificate.is_some() => {
                    served.insert(host.to_lowercase(), (&t.name, certificate.clone()));
                }
                Some(_) => {}
                None => {
                    served.insert(host.to_lowercase(), (&t.name, certificate.clone()));
                }
            }
        }
    }
}

/// Where a Domain's certificate comes from, for comparing Domains that share a host;
/// `None` without TLS.
fn certificate_of(tls: &crate::manifest::model::Tls) -> Option<String> {
    use crate::manifest::model::Tls;
    match tls {
        Tls::Off | Tls::Acme { acme: false } => None,
        Tls::Acme { acme: true } => Some("ACME".to_owned()),
        Tls::Files { certificate, key } => Some(format!("files {certificate} {key}")),
        Tls::Secrets {
            certificate_secret,
            key_secret,
        } => Some(format!("secrets {certificate_secret} {key_secret}")),
    }
}

/// An app the proxy reaches through a host port runs one replica: each replica would
/// need a port of its own behind one route.
pub(super) fn check_routed_replicas(
    report: &mut Report,
    typed: &[Typed],
    keep: &[bool],
    settings: &crate::manifest::model::SettingsSpec,
) {
    use crate::manifest::model::{Proxy, Upstream};
    let on_host = match &settings.proxy {
        Proxy::Nginx(n) => n.upstream == Upstream::HostPort,
        Proxy::Traefik(t) => t.upstream == Upstream::HostPort,
        Proxy::None => false,
    };
    if !on_host {
        return;
    }
    let mut routed: BTreeMap<&str, &str> = BTreeMap::new();
    for (n, t) in typed.iter().enumerate() {
        if let (true, Spec::Domain(d)) = (keep[n], &t.spec) {
            routed.entry(d.app.as_str()).or_insert(t.name.as_str());
        }
    }
    for (n, t) in typed.iter().enumerate() {
        let (true, Spec::App(a)) = (keep[n], &t.spec) else {
            continue;
        };
        if let Some(domain) = routed.get(t.name.as_str()).filter(|_| a.replicas > 1) {
            report.at(
                t.doc,
                "/spec/replicas",
                format!(
                    "Domain `{domain}` reaches this app through one host port (the proxy's \
                     `upstream: hostPort`), so it runs one replica; run the proxy in Docker \
                     (`upstream: network`) to route several"
                ),
            );
        }
    }
}

/// A host port (and protocol) published by two apps, or twice by one.
pub(super) fn check_published_ports(report: &mut Report, typed: &[Typed], keep: &[bool]) {
    let mut taken: BTreeMap<(u16, bool), &str> = BTreeMap::new();
    for (n, t) in typed.iter().enumerate() {
        let (true, Spec::App(a)) = (keep[n], &t.spec) else {
            continue;
        };
        for (i, p) in a.ports.iter().enumerate() {
            let host = p.host.unwrap_or(p.container);
            let udp = p.protocol == Protocol::Udp;
            if let Some(other) = taken.insert((host, udp), &t.name) {
                let whom = if other == t.name {
                    "this app".to_owned()
                } else {
                    format!("App `{other}`")
                };
                report.at(
                    t.doc,
                    &format!("/spec/ports/{i}"),
                    format!("host port {host} is already published by {whom}"),
                );
            }
        }
    }
}

/// Refuses two resources whose volumes get the same Docker name: App `x`'s volume
/// `db-data` and managed Database `x-db`'s data are both `x-db-data`, and one would
/// mount (and, pruned, delete) the other's data.
pub(super) fn check_volume_names(report: &mut Report, typed: &[Typed], keep: &[bool]) {
    // Docker name → (the resource, a description of its volume and where it is).
    let mut taken: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (n, t) in typed.iter().enumerate() {
        if !keep[n] {
            continue;
        }
        let doc = &report.docs[t.doc];
        let volumes: Vec<(String, String, String)> = match &t.spec {
            Spec::App(a) => a
                .volumes
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let volume = v.name.as_ref()?;
                    Some((
                        docker_volume_name(&t.name, volume),
                        format!("/spec/volumes/{i}/name"),
                        format!("volume `{volume}` of App `{}`", t.name),
                    ))
                })
                .collect(),
            Spec::Database(d) if d.mode == DatabaseMode::Managed => vec![(
                docker_volume_name(&t.name, MANAGED_DATA_VOLUME),
                "/metadata/name".to_owned(),
                format!("the data volume of managed Database `{}`", t.name),
            )],
            _ => Vec::new(),
        };
        for (docker, pointer, what) in volumes {
            let at = format!("{}:{}", doc.file, locate(&doc.node, &pointer, false).line);
            match taken.get(&docker) {
                Some((other, theirs)) if *other != n => {
                    let message = format!(
                        "{what} is the Docker volume `{docker}`, which is also {theirs}; \
                         each would use the other's data: rename one of them"
                    );
                    report.at(t.doc, &pointer, message);
                }
                Some(_) => {}
                None => {
                    taken.insert(docker, (n, format!("{what} (at {at})")));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_found_with_their_path() {
        let mut g: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        g.insert("a", vec!["b"]);
        g.insert("b", vec!["c"]);
        g.insert("c", vec!["a"]);
        g.insert("d", vec!["a"]);
        assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
        g.insert("c", vec![]);
        assert_eq!(find_cycle(&g), None);
    }
}
