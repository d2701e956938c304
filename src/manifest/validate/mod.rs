//! Validation of a revision's documents, in layers: the envelope (`apiVersion`, `kind`),
//! the JSON Schema of the kind, typed deserialization ([`schema`]), then semantic checks
//! within each document (one file per kind) and across them ([`graph`]: unique names,
//! references, cycles, host and port clashes), then the host's policy ([`policy`]).
//!
//! Every problem is reported with the position of the value it is about, found by
//! walking the document's YAML tree along a JSON pointer.

mod app;
mod build;
mod database;
mod domain;
mod graph;
mod notifier;
mod policy;
mod runtime;
mod schema;
mod settings;
mod workflow;

use std::collections::BTreeMap;

use super::diagnostic::{Diagnostic, ResourceId};
use super::model::{
    AppSpec, DatabaseSpec, DomainSpec, Kind, NotifierSpec, SettingsSpec, WorkflowSpec,
};
use super::policy::Policy;
use super::syntax;
use super::yaml::{Mark, Node, Value};
use super::{Manifests, Origin, Resource};

/// The volume a managed database keeps its data in; its Docker volume is
/// `<database>-data`, named like an app's volume.
pub(crate) const MANAGED_DATA_VOLUME: &str = "data";

/// The Docker volume of volume `volume` of app (or managed database) `owner`.
pub(crate) fn docker_volume_name(owner: &str, volume: &str) -> String {
    format!("{owner}-{volume}")
}

/// A typed spec of any kind. Short-lived (one per document during validation), so the
/// size difference between kinds does not matter.
#[allow(clippy::large_enum_variant)]
enum Spec {
    Settings(SettingsSpec),
    App(AppSpec),
    Domain(DomainSpec),
    Database(DatabaseSpec),
    Notifier(NotifierSpec),
    Workflow(WorkflowSpec),
}

/// One parsed document and what is known of it so far.
struct Doc<'a> {
    file: &'a str,
    node: Node,
    id: Option<ResourceId>,
}

/// A document that passed the schema and deserialized.
struct Typed {
    doc: usize,
    name: String,
    labels: BTreeMap<String, String>,
    spec: Spec,
}

/// The most problems reported for one document; past it, one line says the rest are
/// not shown. Finding a position walks the document, so an unbounded number of
/// problems (a mapping of 100,000 unknown fields) would take quadratic time.
const MAX_PROBLEMS_PER_DOCUMENT: usize = 100;

/// Collects diagnostics, turning JSON pointers into positions.
struct Report<'a> {
    docs: &'a [Doc<'a>],
    out: Vec<Diagnostic>,
    /// How many problems each document has had so far.
    counts: Vec<usize>,
}

impl<'a> Report<'a> {
    fn new(docs: &'a [Doc<'a>]) -> Report<'a> {
        Report {
            docs,
            out: Vec::new(),
            counts: vec![0; docs.len()],
        }
    }

    /// A problem with the value at `pointer` in document `doc`.
    fn at(&mut self, doc: usize, pointer: &str, message: impl Into<String>) {
        if self.room(doc) {
            let mark = locate(&self.docs[doc].node, pointer, false);
            self.push(doc, mark, message.into());
        }
    }

    /// A problem with the key at `pointer` (an unknown or duplicate field).
    fn at_key(&mut self, doc: usize, pointer: &str, message: impl Into<String>) {
        if self.room(doc) {
            let mark = locate(&self.docs[doc].node, pointer, true);
            self.push(doc, mark, message.into());
        }
    }

    /// Counts one more problem of `doc`; whether it is still to be reported.
    fn room(&mut self, doc: usize) -> bool {
        self.counts[doc] += 1;
        if self.counts[doc] == MAX_PROBLEMS_PER_DOCUMENT + 1 {
            let mark = self.docs[doc].node.mark;
            self.push(
                doc,
                mark,
                format!(
                    "more than {MAX_PROBLEMS_PER_DOCUMENT} problems in this document; \
                     the rest are not shown, fix these first"
                ),
            );
        }
        self.counts[doc] <= MAX_PROBLEMS_PER_DOCUMENT
    }

    /// Reports `result`'s error at `pointer`.
    fn check(&mut self, doc: usize, pointer: &str, result: Result<(), String>) {
        if let Err(message) = result {
            self.at(doc, pointer, message);
        }
    }

    fn push(&mut self, doc: usize, mark: Mark, message: String) {
        let d = &self.docs[doc];
        self.out.push(Diagnostic {
            file: d.file.to_owned(),
            line: mark.line,
            column: mark.col,
            resource: d.id.clone(),
            message,
        });
    }
}

/// Escapes a key for use in a JSON pointer.
fn esc(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The position of the value (or key) at `pointer`, or of its deepest existing parent.
fn locate(root: &Node, pointer: &str, want_key: bool) -> Mark {
    let mut node = root;
    let mut key_mark = None;
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        let next = match &node.value {
            Value::Map(_) => node.entry(&seg).map(|(k, v)| (Some(k.mark), v)),
            Value::Seq(_) => seg
                .parse()
                .ok()
                .and_then(|i| node.item(i))
                .map(|v| (None, v)),
            _ => None,
        };
        match next {
            Some((k, v)) => {
                key_mark = k;
                node = v;
            }
            None => return node.mark,
        }
    }
    match (want_key, key_mark) {
        (true, Some(mark)) => mark,
        _ => node.mark,
    }
}

/// A suggestion for a mistyped word, when one of `choices` is close.
fn did_you_mean<'c>(word: &str, choices: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let lower = word.to_lowercase();
    choices
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn quoted_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items
        .into_iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Validates a revision's documents (against the host's `policy`, when given) and
/// builds its manifests.
pub(super) fn validate(
    documents: Vec<(&str, Node)>,
    policy: Option<&Policy>,
) -> Result<Manifests, Vec<Diagnostic>> {
    let mut docs: Vec<Doc> = documents
        .into_iter()
        .map(|(file, node)| Doc {
            file,
            node,
            id: None,
        })
        .collect();
    // Identify each document first so every later message names its resource.
    let kinds: Vec<Option<Kind>> = docs.iter_mut().map(schema::identify).collect();
    let mut report = Report::new(&docs);
    let mut typed = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        if let Some(t) = schema::check_document(&mut report, i, *kind) {
            typed.push(t);
        }
    }
    let mut manifests = check_revision(&mut report, typed, policy);
    if report.out.is_empty() {
        manifests.policy = policy.map(|p| std::sync::Arc::new(p.clone()));
        Ok(manifests)
    } else {
        Err(report.out)
    }
}

/// The semantic checks of the documents that passed the schema, then the manifests of
/// those that passed every check.
fn check_revision(
    report: &mut Report,
    mut typed: Vec<Typed>,
    policy: Option<&Policy>,
) -> Manifests {
    let (index, keep) = graph::index(report, &typed);
    let default_settings = SettingsSpec::default();
    let settings = index.settings.unwrap_or(&default_settings);

    let mut normalized_hosts: Vec<Option<Vec<String>>> = vec![None; typed.len()];
    for (n, t) in typed.iter().enumerate() {
        if !keep[n] {
            continue;
        }
        check_labels(report, t);
        match &t.spec {
            Spec::Settings(s) => settings::check_settings(report, t.doc, s),
            Spec::App(a) => app::check_app(report, &index, t, a),
            Spec::Domain(d) => {
                normalized_hosts[n] = Some(domain::check_domain(report, &index, settings, t, d));
            }
            Spec::Database(d) => database::check_database(report, settings, t, d),
            Spec::Notifier(nf) => notifier::check_notifier(report, t.doc, nf),
            Spec::Workflow(w) => workflow::check_workflow(report, &index, t.doc, w),
        }
    }
    graph::check_depends_on_cycles(report, &typed, &keep);
    graph::check_host_clashes(report, &typed, &normalized_hosts);
    graph::check_routed_replicas(report, &typed, &keep, settings);
    graph::check_published_ports(report, &typed, &keep);
    graph::check_volume_names(report, &typed, &keep);
    runtime::check_runtime(report, settings, &typed, &keep);
    if let Some(policy) = policy {
        policy::check_policy(report, &typed, &keep, policy);
    }

    let mut manifests = Manifests::default();
    for (n, t) in typed.drain(..).enumerate() {
        if !keep[n] {
            continue;
        }
        let doc = &report.docs[t.doc];
        let origin = Origin {
            file: doc.file.to_owned(),
            line: doc.node.mark.line,
        };
        let name = t.name;
        macro_rules! put {
            ($map:expr, $spec:expr) => {
                $map.insert(
                    name.clone(),
                    Resource {
                        name,
                        labels: t.labels,
                        spec: $spec,
                        origin,
                    },
                )
            };
        }
        match t.spec {
            Spec::Settings(s) => {
                manifests.settings = Some(Resource {
                    name,
                    labels: t.labels,
                    spec: s,
                    origin,
                });
            }
            Spec::App(a) => {
                put!(manifests.apps, a);
            }
            Spec::Domain(mut d) => {
                if let Some(hosts) = normalized_hosts[n].take() {
                    d.hosts = hosts;
                }
                put!(manifests.domains, d);
            }
            Spec::Database(d) => {
                put!(manifests.databases, d);
            }
            Spec::Notifier(nf) => {
                put!(manifests.notifiers, nf);
            }
            Spec::Workflow(w) => {
                put!(manifests.workflows, w);
            }
        }
    }
    manifests
}

fn kind_of(spec: &Spec) -> Kind {
    match spec {
        Spec::Settings(_) => Kind::Settings,
        Spec::App(_) => Kind::App,
        Spec::Domain(_) => Kind::Domain,
        Spec::Database(_) => Kind::Database,
        Spec::Notifier(_) => Kind::Notifier,
        Spec::Workflow(_) => Kind::Workflow,
    }
}

/// The labels of `metadata`, whatever the kind.
fn check_labels(report: &mut Report, t: &Typed) {
    for (key, value) in &t.labels {
        let at = format!("/metadata/labels/{}", esc(key));
        if let Err(m) = syntax::check_label_key(key) {
            report.at_key(t.doc, &at, m);
        }
        report.check(t.doc, &at, syntax::check_text("label value", value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_close_words_only() {
        assert_eq!(did_you_mean("imgae", ["image", "env"]), Some("image"));
        assert_eq!(did_you_mean("app", ["App", "Domain"]), Some("App"));
        assert_eq!(did_you_mean("zzzzzz", ["image", "env"]), None);
    }
}
