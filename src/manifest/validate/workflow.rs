//! The checks of a Workflow: triggers, node names, needs and branches (no cycle),
//! actions, notifications, rollbacks, and conditions reading only upstream nodes.

use std::collections::BTreeMap;

use super::graph::{Index, ancestors, find_cycle, missing_ref};
use super::{Report, did_you_mean, esc, quoted_list};
use crate::manifest::model::{Action, Kind, Trigger, When, WorkflowSpec};
use crate::manifest::syntax;
use crate::workflow::expr::{Expr, Placeholder, placeholders};

/// Checks a Workflow spec: its graph and every node.
pub(super) fn check_workflow(report: &mut Report, index: &Index, doc: usize, w: &WorkflowSpec) {
    for (i, trigger) in w.triggers.iter().enumerate() {
        if let Trigger::AppDeployed { app } | Trigger::AppFailed { app } = trigger {
            if !index.has(Kind::App, app) {
                report.at(
                    doc,
                    &format!("/spec/triggers/{i}/app"),
                    missing_ref(index, Kind::App, app),
                );
            }
        }
    }
    let mut positions: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, node) in w.nodes.iter().enumerate() {
        if let Some(first) = positions.insert(&node.name, i) {
            report.at(
                doc,
                &format!("/spec/nodes/{i}/name"),
                format!(
                    "node `{}` is declared twice (first as node {})",
                    node.name,
                    first + 1
                ),
            );
            positions.insert(&node.name, first);
        }
    }
    // Edges: `needs`, and each branch target implicitly needs its condition.
    let mut needs: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut gated_by: BTreeMap<&str, &str> = BTreeMap::new();
    for (i, node) in w.nodes.iter().enumerate() {
        let at = format!("/spec/nodes/{i}");
        let edges = needs.entry(&node.name).or_default();
        for (j, dep) in node.needs.iter().enumerate() {
            if dep == &node.name {
                report.at(doc, &format!("{at}/needs/{j}"), "a node cannot need itself");
            } else if !positions.contains_key(dep.as_str()) {
                report.at(
                    doc,
                    &format!("{at}/needs/{j}"),
                    missing_node(&positions, dep),
                );
            } else {
                edges.push(dep);
            }
        }
        let kinds = usize::from(node.action.is_some())
            + usize::from(node.condition.is_some())
            + usize::from(node.notify.is_some())
            + usize::from(node.rollback.is_some());
        if kinds != 1 {
            report.at(
                doc,
                &at,
                "a node needs exactly one of `action`, `condition`, `notify` or `rollback`",
            );
        }
        if node.retries > 0 && (node.condition.is_some() || node.notify.is_some()) {
            report.at(
                doc,
                &format!("{at}/retries"),
                "`retries` applies to `action` and `rollback` nodes: a condition is evaluated \
                 once and a message is queued once (the Notifier retries its deliveries)",
            );
        }
        if node.when == When::Always && node.condition.is_some() {
            report.at(
                doc,
                &format!("{at}/when"),
                "a condition runs once its needs finished, however they ended: remove `when`",
            );
        }
        if let Some(action) = &node.action {
            check_action(report, index, doc, &format!("{at}/action"), action);
        }
        if let Some(n) = &node.notify {
            if !index.has(Kind::Notifier, &n.notifier) {
                report.at(
                    doc,
                    &format!("{at}/notify/notifier"),
                    missing_ref(index, Kind::Notifier, &n.notifier),
                );
            }
            match placeholders(&n.message) {
                Ok(list) => {
                    for p in list {
                        if let Placeholder::Node(r) = p {
                            if !positions.contains_key(r.node()) {
                                report.at(
                                    doc,
                                    &format!("{at}/notify/message"),
                                    missing_node(&positions, r.node()),
                                );
                            }
                        }
                    }
                }
                Err(m) => report.at(doc, &format!("{at}/notify/message"), m),
            }
        }
        if let Some(r) = &node.rollback {
            if !index.has(Kind::App, &r.app) {
                report.at(
                    doc,
                    &format!("{at}/rollback/app"),
                    missing_ref(index, Kind::App, &r.app),
                );
            }
        }
        if let Some(c) = &node.condition {
            for (branch, list) in [("then", &c.then), ("else", &c.otherwise)] {
                for (j, target) in list.iter().enumerate() {
                    let tat = format!("{at}/condition/{branch}/{j}");
                    if target == &node.name {
                        report.at(doc, &tat, "a condition cannot branch to itself");
                    } else if !positions.contains_key(target.as_str()) {
                        report.at(doc, &tat, missing_node(&positions, target));
                    } else if let Some(other) = gated_by.insert(target, &node.name) {
                        if other == node.name {
                            report.at(
                                doc,
                                &tat,
                                format!("`{target}` is in both `then` and `else`"),
                            );
                        } else {
                            report.at(
                                doc,
                                &tat,
                                format!("`{target}` is already a branch of condition `{other}`"),
                            );
                        }
                    }
                }
            }
        }
    }
    for (target, condition) in &gated_by {
        needs.entry(target).or_default().push(condition);
    }
    if let Some(cycle) = find_cycle(&needs) {
        let first = cycle[0];
        let i = positions.get(first).copied().unwrap_or(0);
        report.at(
            doc,
            &format!("/spec/nodes/{i}/needs"),
            format!("nodes form a cycle: {}", cycle.join(" → ")),
        );
        return;
    }
    // Conditions may only look at nodes that finish before them.
    for (i, node) in w.nodes.iter().enumerate() {
        let Some(c) = &node.condition else { continue };
        let at = format!("/spec/nodes/{i}/condition/if");
        match Expr::parse(&c.expr) {
            Ok(expr) => {
                let upstream = ancestors(&needs, &node.name);
                for r in expr.refs() {
                    if !positions.contains_key(r.node()) {
                        report.at(doc, &at, missing_node(&positions, r.node()));
                    } else if !upstream.contains(r.node()) {
                        report.at(
                            doc,
                            &at,
                            format!(
                                "the condition reads node `{}`, which does not run before it; add it to `needs`",
                                r.node()
                            ),
                        );
                    }
                }
            }
            Err(m) => report.at(doc, &at, m),
        }
    }
}

fn missing_node(positions: &BTreeMap<&str, usize>, name: &str) -> String {
    let hint = did_you_mean(name, positions.keys().copied())
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    format!(
        "no node named `{}` in this workflow{hint}",
        syntax::shown(name)
    )
}

fn check_action(report: &mut Report, index: &Index, doc: usize, at: &str, action: &Action) {
    match action {
        Action::Deploy { app } | Action::Restart { app } | Action::Exec { app, .. } => {
            let variant = match action {
                Action::Deploy { .. } => "deploy",
                Action::Restart { .. } => "restart",
                _ => "exec",
            };
            if !index.has(Kind::App, app) {
                report.at(
                    doc,
                    &format!("{at}/{variant}/app"),
                    missing_ref(index, Kind::App, app),
                );
            }
        }
        Action::Backup { database } => {
            if !index.has(Kind::Database, database) {
                report.at(
                    doc,
                    &format!("{at}/backup/database"),
                    missing_ref(index, Kind::Database, database),
                );
            }
        }
        Action::Http {
            url,
            method,
            headers,
            ..
        } => {
            let ok_scheme = url.starts_with("http://") || url.starts_with("https://");
            if !ok_scheme || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                report.at(
                    doc,
                    &format!("{at}/http/url"),
                    format!("`{}` is not an http:// or https:// URL", syntax::shown(url)),
                );
            }
            const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
            if !METHODS.contains(&method.as_str()) {
                report.at(
                    doc,
                    &format!("{at}/http/method"),
                    format!(
                        "method `{}` is not one of {}",
                        syntax::shown(method),
                        quoted_list(METHODS)
                    ),
                );
            }
            for (name, value) in headers {
                let hat = format!("{at}/http/headers/{}", esc(name));
                if let Err(m) = syntax::check_header_name(name) {
                    report.at_key(doc, &hat, m);
                }
                report.check(doc, &hat, syntax::check_header_value(value));
            }
        }
    }
}
