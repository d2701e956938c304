//! Validation of a revision's documents, in layers: the envelope (`apiVersion`, `kind`),
//! the JSON Schema of the kind, typed deserialization, then semantic checks within each
//! document and across them (unique names, references, cycles, host clashes).
//!
//! Every problem is reported with the position of the value it is about, found by
//! walking the document's YAML tree along a JSON pointer.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use super::diagnostic::{Diagnostic, ResourceId};
use super::model::{
    API_VERSION, Action, AppSpec, DatabaseMode, DatabaseSpec, Document, DomainSpec, Engine, Kind,
    NotifierSpec, NotifierType, Proxy, ServerEngine, SettingsSpec, Tls, Trigger, WorkflowSpec,
};
use super::schema::validator;
use super::syntax;
use super::yaml::{Mark, Node, Value};
use super::{Manifests, Origin, Resource};
use crate::workflow::expr::{Expr, Placeholder, placeholders};

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

/// Collects diagnostics, turning JSON pointers into positions.
struct Report<'a> {
    docs: &'a [Doc<'a>],
    out: Vec<Diagnostic>,
}

impl Report<'_> {
    /// A problem with the value at `pointer` in document `doc`.
    fn at(&mut self, doc: usize, pointer: &str, message: impl Into<String>) {
        let mark = locate(&self.docs[doc].node, pointer, false);
        self.push(doc, mark, message.into());
    }

    /// A problem with the key at `pointer` (an unknown or duplicate field).
    fn at_key(&mut self, doc: usize, pointer: &str, message: impl Into<String>) {
        let mark = locate(&self.docs[doc].node, pointer, true);
        self.push(doc, mark, message.into());
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

/// Validates a revision's documents and builds its manifests.
pub(super) fn validate(documents: Vec<(&str, Node)>) -> Result<Manifests, Vec<Diagnostic>> {
    let mut docs: Vec<Doc> = documents
        .into_iter()
        .map(|(file, node)| Doc {
            file,
            node,
            id: None,
        })
        .collect();
    // Identify each document first so every later message names its resource.
    let kinds: Vec<Option<Kind>> = docs.iter_mut().map(identify).collect();
    let mut report = Report {
        docs: &docs,
        out: Vec::new(),
    };
    let mut typed = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        if let Some(t) = check_document(&mut report, i, *kind) {
            typed.push(t);
        }
    }
    let manifests = check_revision(&mut report, typed);
    if report.out.is_empty() {
        Ok(manifests)
    } else {
        Err(report.out)
    }
}

/// Reads `kind` and `metadata.name` so that messages can name the resource.
fn identify(doc: &mut Doc) -> Option<Kind> {
    let kind = doc
        .node
        .get("kind")
        .and_then(Node::as_str)
        .and_then(Kind::parse)?;
    let name = doc
        .node
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str)
        .filter(|n| syntax::check_name(n).is_ok());
    if let Some(name) = name {
        doc.id = Some(ResourceId {
            kind,
            name: name.to_owned(),
        });
    }
    Some(kind)
}

/// The envelope, the schema and deserialization of one document.
fn check_document(report: &mut Report, i: usize, kind: Option<Kind>) -> Option<Typed> {
    let node = &report.docs[i].node;
    let before = report.out.len();
    if !matches!(node.value, Value::Map(_)) {
        report.at(
            i,
            "",
            "a document must be a mapping with apiVersion, kind, metadata and spec",
        );
        return None;
    }
    match node.get("apiVersion") {
        None => report.at(
            i,
            "",
            format!("missing `apiVersion`; add `apiVersion: {API_VERSION}`"),
        ),
        Some(v) if v.as_str() == Some(API_VERSION) => {}
        Some(v) => {
            let shown = v.as_str().map(syntax::shown).unwrap_or_else(|| "?".into());
            report.at(
                i,
                "/apiVersion",
                format!("unsupported apiVersion `{shown}`; expected `{API_VERSION}`"),
            );
        }
    }
    let kinds = Kind::ALL.map(Kind::as_str);
    let Some(kind) = kind else {
        match node.get("kind") {
            None => report.at(
                i,
                "",
                format!("missing `kind`; expected one of {}", quoted_list(kinds)),
            ),
            Some(k) => {
                let text = k.as_str().map(syntax::shown).unwrap_or_default();
                let hint = did_you_mean(&text, kinds)
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                report.at(
                    i,
                    "/kind",
                    format!(
                        "unknown kind `{text}`; {hint}expected one of {}",
                        quoted_list(kinds)
                    ),
                );
            }
        }
        return None;
    };
    let json = node.to_json();
    for error in validator(kind).iter_errors(&json) {
        let path = error.instance_path().as_str().to_owned();
        if path == "/apiVersion" || path == "/kind" || is_envelope_required(&error) {
            continue;
        }
        schema_error(report, i, kind, &path, &error);
    }
    if report.out.len() > before {
        return None;
    }
    match kind {
        Kind::Settings => typed(report, i, json, Spec::Settings),
        Kind::App => typed(report, i, json, Spec::App),
        Kind::Domain => typed(report, i, json, Spec::Domain),
        Kind::Database => typed(report, i, json, Spec::Database),
        Kind::Notifier => typed(report, i, json, Spec::Notifier),
        Kind::Workflow => typed(report, i, json, Spec::Workflow),
    }
}

/// Whether the error is a missing `apiVersion` or `kind`, already reported.
fn is_envelope_required(error: &jsonschema::ValidationError) -> bool {
    matches!(
        error.kind(),
        jsonschema::error::ValidationErrorKind::Required { property }
            if property == "apiVersion" || property == "kind"
    ) && error.instance_path().as_str().is_empty()
}

fn typed<S: DeserializeOwned>(
    report: &mut Report,
    i: usize,
    json: Json,
    wrap: fn(S) -> Spec,
) -> Option<Typed> {
    match serde_path_to_error::deserialize::<_, Document<S>>(json) {
        Ok(doc) => Some(Typed {
            doc: i,
            name: doc.metadata.name,
            labels: doc.metadata.labels,
            spec: wrap(doc.spec),
        }),
        Err(e) => {
            let pointer: String = e
                .path()
                .iter()
                .map(|seg| match seg {
                    serde_path_to_error::Segment::Seq { index } => format!("/{index}"),
                    serde_path_to_error::Segment::Map { key } => format!("/{}", esc(key)),
                    serde_path_to_error::Segment::Enum { variant } => format!("/{}", esc(variant)),
                    serde_path_to_error::Segment::Unknown => String::new(),
                })
                .collect();
            report.at(i, &pointer, e.into_inner().to_string());
            None
        }
    }
}

fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "nothing",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

fn type_name(t: &str) -> &str {
    match t {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean (true or false)",
        "array" => "a list",
        "object" => "a mapping",
        "null" => "nothing",
        other => other,
    }
}

fn shown_json(v: &Json) -> String {
    match v {
        Json::String(s) => syntax::shown(s),
        other => syntax::shown(&other.to_string()),
    }
}

/// Turns a schema error into a message at the right place.
fn schema_error(
    report: &mut Report,
    i: usize,
    kind: Kind,
    path: &str,
    error: &jsonschema::ValidationError,
) {
    use jsonschema::error::{TypeKind, ValidationErrorKind as K};
    let instance = error.instance();
    match error.kind() {
        K::AdditionalProperties { unexpected } => {
            let allowed = allowed_fields(kind, error.schema_path().as_str());
            for field in unexpected {
                let hint = match did_you_mean(field, allowed.iter().map(String::as_str)) {
                    Some(s) => format!("; did you mean `{s}`?"),
                    None if allowed.is_empty() => String::new(),
                    None => format!(
                        "; expected one of {}",
                        quoted_list(allowed.iter().map(String::as_str))
                    ),
                };
                report.at_key(
                    i,
                    &format!("{path}/{}", esc(field)),
                    format!("unknown field `{}`{hint}", syntax::shown(field)),
                );
            }
        }
        K::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            report.at(i, path, format!("missing required field `{name}`"));
        }
        K::Type { kind: expected } => {
            let expected = match expected {
                TypeKind::Single(t) => type_name(&t.to_string()).to_owned(),
                // `null` is allowed for optional fields, but saying so only confuses.
                TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| t.to_string())
                    .filter(|t| t != "null")
                    .map(|t| type_name(&t).to_owned())
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            report.at(
                i,
                path,
                format!(
                    "expected {expected}, found {} `{}`",
                    json_type(instance),
                    shown_json(instance)
                ),
            );
        }
        K::Enum { options } => {
            let choices: Vec<&str> = options
                .as_array()
                .map(|a| a.iter().filter_map(Json::as_str).collect())
                .unwrap_or_default();
            let text = shown_json(instance);
            let hint = did_you_mean(&text, choices.iter().copied())
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            report.at(
                i,
                path,
                format!(
                    "`{text}` is not allowed here; {hint}expected one of {}",
                    quoted_list(choices)
                ),
            );
        }
        K::Constant { expected_value } => {
            report.at(
                i,
                path,
                format!(
                    "expected `{}`, found `{}`",
                    shown_json(expected_value),
                    shown_json(instance)
                ),
            );
        }
        K::Pattern { pattern } => {
            let text = instance.as_str().unwrap_or_default();
            report.at(i, path, pattern_message(pattern, text));
        }
        K::Minimum { limit } | K::ExclusiveMinimum { limit } => report.at(
            i,
            path,
            format!(
                "`{}` is too small: the minimum is {limit}",
                shown_json(instance)
            ),
        ),
        K::Maximum { limit } | K::ExclusiveMaximum { limit } => report.at(
            i,
            path,
            format!(
                "`{}` is too large: the maximum is {limit}",
                shown_json(instance)
            ),
        ),
        K::MinItems { limit } => report.at(
            i,
            path,
            format!(
                "needs at least {limit} item{}",
                if *limit == 1 { "" } else { "s" }
            ),
        ),
        K::MaxItems { limit } => report.at(i, path, format!("has more than {limit} items")),
        K::OneOfNotValid { context } | K::AnyOf { context } => {
            // Report the branch that came closest: one whose type matched, fewest errors.
            let best = context
                .iter()
                .filter(|errors| {
                    !errors.iter().any(|e| {
                        matches!(
                            e.kind(),
                            K::Type { .. } | K::Enum { .. } | K::Constant { .. }
                        ) && e.instance_path().as_str() == path
                    })
                })
                .min_by_key(|errors| errors.len());
            match best {
                Some(errors) if !errors.is_empty() => {
                    for e in errors {
                        let p = e.instance_path().as_str().to_owned();
                        schema_error(report, i, kind, &p, e);
                    }
                }
                _ => {
                    let (expected, words) = expected_shapes(context);
                    let hint = instance
                        .as_str()
                        .and_then(|text| did_you_mean(text, words.iter().map(String::as_str)))
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    report.at(
                        i,
                        path,
                        format!(
                            "expected {expected}, found {} `{}`{hint}",
                            json_type(instance),
                            shown_json(instance)
                        ),
                    );
                }
            }
        }
        _ => report.at(i, path, error.to_string()),
    }
}

/// What the branches of a oneOf/anyOf accept, in words, and the literal words allowed.
fn expected_shapes(context: &[Vec<jsonschema::ValidationError<'static>>]) -> (String, Vec<String>) {
    use jsonschema::error::{TypeKind, ValidationErrorKind as K};
    let mut shapes: Vec<String> = Vec::new();
    let mut words: Vec<String> = Vec::new();
    for errors in context {
        for e in errors {
            let shape = match e.kind() {
                K::Type {
                    kind: TypeKind::Single(t),
                } => type_name(&t.to_string()).to_owned(),
                K::Constant { expected_value } => {
                    words.extend(expected_value.as_str().map(str::to_owned));
                    format!("`{}`", shown_json(expected_value))
                }
                K::Enum { options } => {
                    let list: Vec<&str> = options
                        .as_array()
                        .map(|a| a.iter().filter_map(Json::as_str).collect())
                        .unwrap_or_default();
                    words.extend(list.iter().map(|w| (*w).to_owned()));
                    list.iter()
                        .map(|w| format!("`{w}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                }
                _ => continue,
            };
            if !shapes.contains(&shape) {
                shapes.push(shape);
            }
        }
    }
    let text = if shapes.is_empty() {
        "another shape of value".to_owned()
    } else {
        shapes.join(" or ")
    };
    (text, words)
}

/// The property names the schema allows where an unknown field was found.
fn allowed_fields(kind: Kind, schema_path: &str) -> Vec<String> {
    static SCHEMAS: std::sync::OnceLock<Vec<Json>> = std::sync::OnceLock::new();
    let schemas =
        SCHEMAS.get_or_init(|| Kind::ALL.iter().map(|k| super::kind_schema(*k)).collect());
    let index = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
    let root = &schemas[index];
    // Follow the schema path, resolving `$ref`s into `definitions` as they come.
    let parent = schema_path
        .strip_suffix("/additionalProperties")
        .unwrap_or(schema_path);
    let mut node = root;
    for raw in parent.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        node = match node
            .get(&seg)
            .or_else(|| seg.parse::<usize>().ok().and_then(|n| node.get(n)))
        {
            Some(n) => n,
            None => return Vec::new(),
        };
        while let Some(target) = node.get("$ref").and_then(Json::as_str) {
            match target.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(t) => node = t,
                None => return Vec::new(),
            }
        }
    }
    node.get("properties")
        .and_then(Json::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// A message for a value that does not match one of the model's patterns.
fn pattern_message(pattern: &str, text: &str) -> String {
    use super::units::{Cron, Duration, Size};
    let parsed = match pattern {
        p if p.starts_with("^([0-9]+(ms") => text.parse::<Duration>().err(),
        p if p.starts_with("^[0-9]+([kKmMgGtT]") => text.parse::<Size>().err(),
        p if p.starts_with("^(@[a-z]+") => text.parse::<Cron>().err(),
        p if p.starts_with("^[a-z0-9]([-a-z0-9]") => syntax::check_name(text).err(),
        p if p.starts_with("^[a-zA-Z0-9][a-zA-Z0-9_.-]") => Some(format!(
            "`{}` is not a valid Docker network name: letters, digits and `_.-`, \
             starting with a letter or digit",
            syntax::shown(text)
        )),
        _ => None,
    };
    parsed.unwrap_or_else(|| format!("`{}` does not match `{pattern}`", syntax::shown(text)))
}

// ---------------------------------------------------------------------------------
// Semantic checks

/// What cross-document checks need to know about every resource.
struct Index<'t> {
    by_id: HashMap<(Kind, &'t str), usize>,
    /// Every resource declared, valid or not: a reference to an invalid resource is not
    /// reported again as dangling.
    declared: BTreeSet<(Kind, String)>,
    /// The `port` of every valid app.
    app_ports: HashMap<&'t str, Option<u16>>,
    settings: Option<&'t SettingsSpec>,
}

impl Index<'_> {
    fn has(&self, kind: Kind, name: &str) -> bool {
        self.declared.contains(&(kind, name.to_owned()))
    }
}

fn check_revision(report: &mut Report, mut typed: Vec<Typed>) -> Manifests {
    // Unique kind + name, at most one Settings.
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
            let f = &report.docs[typed[other].doc];
            let message = format!(
                "duplicate {kind} `{}`; the first is at {}:{}",
                t.name,
                f.file,
                locate(&f.node, "/metadata/name", false).line
            );
            report.at(t.doc, "/metadata/name", message);
            keep[n] = false;
            continue;
        }
        // A managed database is a container named after it: it cannot share an app's name.
        let clash = match (&t.spec, kind) {
            (Spec::Database(d), _) if d.mode == super::model::DatabaseMode::Managed => {
                index.by_id.get(&(Kind::App, t.name.as_str())).copied()
            }
            (_, Kind::App) => index
                .by_id
                .get(&(Kind::Database, t.name.as_str()))
                .copied()
                .filter(|&o| {
                    matches!(&typed[o].spec, Spec::Database(d) if d.mode == super::model::DatabaseMode::Managed)
                }),
            _ => None,
        };
        if let Some(other) = clash {
            let f = &report.docs[typed[other].doc];
            let message = format!(
                "`{}` names both an App and a managed Database (at {}:{}); their containers \
                 would share the name: rename one",
                t.name,
                f.file,
                locate(&f.node, "/metadata/name", false).line
            );
            report.at(t.doc, "/metadata/name", message);
            keep[n] = false;
            continue;
        }
        index.by_id.insert((kind, t.name.as_str()), n);
    }
    if let Some(s) = first_settings {
        if let Spec::Settings(spec) = &typed[s].spec {
            index.settings = Some(spec);
        }
    }
    let default_settings = SettingsSpec::default();
    let settings = index.settings.unwrap_or(&default_settings);

    let mut normalized_hosts: Vec<Option<Vec<String>>> = vec![None; typed.len()];
    for (n, t) in typed.iter().enumerate() {
        if !keep[n] {
            continue;
        }
        check_labels(report, t);
        match &t.spec {
            Spec::Settings(s) => check_settings(report, t.doc, s),
            Spec::App(a) => check_app(report, &index, t, a),
            Spec::Domain(d) => {
                normalized_hosts[n] = Some(check_domain(report, &index, settings, t, d));
            }
            Spec::Database(d) => check_database(report, settings, t, d),
            Spec::Notifier(nf) => check_notifier(report, t.doc, nf),
            Spec::Workflow(w) => check_workflow(report, &index, t.doc, w),
        }
    }
    check_depends_on_cycles(report, &typed, &keep);
    let per_host = matches!(settings.proxy, Proxy::Nginx(_));
    check_host_clashes(report, &typed, &normalized_hosts, per_host);
    check_published_ports(report, &typed, &keep);

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

fn check_labels(report: &mut Report, t: &Typed) {
    for (key, value) in &t.labels {
        let at = format!("/metadata/labels/{}", esc(key));
        if let Err(m) = syntax::check_label_key(key) {
            report.at_key(t.doc, &at, m);
        }
        report.check(t.doc, &at, syntax::check_text("label value", value));
    }
}

fn check_settings(report: &mut Report, doc: usize, s: &SettingsSpec) {
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
    if s.resync.get().as_secs() < 10 {
        report.at(doc, "/spec/resync", "resync must be at least 10s");
    }
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

fn check_app(report: &mut Report, index: &Index, t: &Typed, a: &AppSpec) {
    let doc = t.doc;
    report.check(doc, "/spec/image", syntax::check_image(&a.image));
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
    let mut mounts = BTreeSet::new();
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
        if !mounts.insert(v.mount.trim_end_matches('/')) {
            report.at(
                doc,
                &format!("{at}/mount"),
                format!("`{}` is mounted twice", v.mount),
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
            if cmd.is_empty() {
                report.at(doc, "/spec/health/cmd", "the health command is empty");
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

/// The message for a reference to a resource that does not exist.
fn missing_ref(index: &Index, kind: Kind, name: &str) -> String {
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

fn check_domain(
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

fn check_database(report: &mut Report, settings: &SettingsSpec, t: &Typed, d: &DatabaseSpec) {
    let doc = t.doc;
    let engine = d.engine.as_str();
    match d.mode {
        DatabaseMode::Managed => {
            if d.server.is_some() {
                report.at(doc, "/spec/server", "`server` is only for `mode: shared`");
            }
            if d.url_secret.is_some() {
                report.at(
                    doc,
                    "/spec/urlSecret",
                    "`urlSecret` is only for `mode: external`",
                );
            }
        }
        DatabaseMode::Shared => {
            if matches!(d.engine, Engine::Redis | Engine::Mongo) {
                report.at(
                    doc,
                    "/spec/mode",
                    format!("{engine} cannot be `shared`; use `managed` or `external`"),
                );
            }
            match &d.server {
                None => report.at(
                    doc,
                    "/spec",
                    "`mode: shared` needs `server`, one of Settings `servers`",
                ),
                Some(name) => match settings.servers.get(name) {
                    None => {
                        let names = settings.servers.keys().map(String::as_str);
                        let hint = did_you_mean(name, names)
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_else(|| "; declare it under Settings `servers`".to_owned());
                        report.at(
                            doc,
                            "/spec/server",
                            format!("no server named `{}`{hint}", syntax::shown(name)),
                        );
                    }
                    Some(server) => {
                        let compatible = matches!(
                            (server.engine, d.engine),
                            (ServerEngine::Postgres, Engine::Postgres)
                                | (
                                    ServerEngine::Mysql | ServerEngine::Mariadb,
                                    Engine::Mysql | Engine::Mariadb
                                )
                        );
                        if !compatible {
                            report.at(
                                doc,
                                "/spec/engine",
                                format!("engine `{engine}` does not match server `{name}`, which is {:?}", server.engine)
                                    .to_lowercase(),
                            );
                        }
                    }
                },
            }
            if d.url_secret.is_some() {
                report.at(
                    doc,
                    "/spec/urlSecret",
                    "`urlSecret` is only for `mode: external`",
                );
            }
        }
        DatabaseMode::External => {
            match &d.url_secret {
                None => report.at(
                    doc,
                    "/spec",
                    "`mode: external` needs `urlSecret`, the secret holding the URL",
                ),
                Some(s) => report.check(doc, "/spec/urlSecret", syntax::check_name(s)),
            }
            if d.server.is_some() {
                report.at(doc, "/spec/server", "`server` is only for `mode: shared`");
            }
            if d.backup.is_some() {
                report.at(
                    doc,
                    "/spec/backup",
                    "berth does not back up external databases",
                );
            }
        }
    }
    if let Some(v) = &d.version {
        report.check(doc, "/spec/version", syntax::check_token("version", v));
    }
    let max_user = if matches!(d.engine, Engine::Mysql | Engine::Mariadb) {
        32
    } else {
        63
    };
    if let Some(n) = &d.database_name {
        report.check(
            doc,
            "/spec/databaseName",
            syntax::check_sql_identifier("database name", n, 63),
        );
    }
    if let Some(u) = &d.user {
        report.check(
            doc,
            "/spec/user",
            syntax::check_sql_identifier("user", u, max_user),
        );
    }
}

fn check_notifier(report: &mut Report, doc: usize, n: &NotifierSpec) {
    report.check(doc, "/spec/urlSecret", syntax::check_name(&n.url_secret));
    if let Some(s) = &n.signing_secret {
        if n.kind != NotifierType::Webhook {
            report.at(
                doc,
                "/spec/signingSecret",
                "`signingSecret` is only for `type: webhook`",
            );
        }
        report.check(doc, "/spec/signingSecret", syntax::check_name(s));
    }
    let mut seen = BTreeSet::new();
    for (i, e) in n.events.iter().enumerate() {
        if !seen.insert(e) {
            report.at(
                doc,
                &format!("/spec/events/{i}"),
                format!("event `{e:?}` is listed twice"),
            );
        }
    }
    if n.repeat_after.get().as_secs() < 60 {
        report.at(doc, "/spec/repeatAfter", "repeatAfter must be at least 1m");
    }
}

fn check_workflow(report: &mut Report, index: &Index, doc: usize, w: &WorkflowSpec) {
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

/// Finds a cycle in a graph given as node → the nodes it needs; returns its path with
/// the first node repeated at the end.
fn find_cycle<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>) -> Option<Vec<&'a str>> {
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
fn ancestors<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>, node: &str) -> BTreeSet<&'a str> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<&str> = graph.get(node).cloned().unwrap_or_default();
    while let Some(n) = stack.pop() {
        if out.insert(n) {
            stack.extend(graph.get(n).cloned().unwrap_or_default());
        }
    }
    out
}

fn check_depends_on_cycles(report: &mut Report, typed: &[Typed], keep: &[bool]) {
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

/// Two domains may not claim the same host and path. With nginx, whose server blocks
/// are per host and whose files are per domain, a host belongs to one domain only.
fn check_host_clashes(
    report: &mut Report,
    typed: &[Typed],
    hosts: &[Option<Vec<String>>],
    per_host: bool,
) {
    let mut claimed: BTreeMap<(String, String), (&str, usize)> = BTreeMap::new();
    for (n, t) in typed.iter().enumerate() {
        let (Some(list), Spec::Domain(d)) = (&hosts[n], &t.spec) else {
            continue;
        };
        let path = if per_host {
            String::new()
        } else {
            d.path.trim_end_matches('/').to_lowercase()
        };
        for (h, host) in list.iter().enumerate() {
            let key = (host.to_lowercase(), path.clone());
            match claimed.get(&key) {
                Some((other, _)) if *other != t.name && per_host => {
                    report.at(
                        t.doc,
                        &format!("/spec/hosts/{h}"),
                        format!(
                            "host `{host}` is already served by Domain `{other}`; with nginx a \
                             host belongs to one Domain (route its paths in the app, or use Traefik)"
                        ),
                    );
                }
                Some((other, _)) if *other != t.name => {
                    let shown_path = if path.is_empty() { "/" } else { &path };
                    report.at(
                        t.doc,
                        &format!("/spec/hosts/{h}"),
                        format!("host `{host}` with path `{shown_path}` is already claimed by Domain `{other}`"),
                    );
                }
                Some(_) => {}
                None => {
                    claimed.insert(key, (&t.name, t.doc));
                }
            }
        }
    }
}

fn check_published_ports(report: &mut Report, typed: &[Typed], keep: &[bool]) {
    let mut taken: BTreeMap<(u16, bool), &str> = BTreeMap::new();
    for (n, t) in typed.iter().enumerate() {
        let (true, Spec::App(a)) = (keep[n], &t.spec) else {
            continue;
        };
        for (i, p) in a.ports.iter().enumerate() {
            let host = p.host.unwrap_or(p.container);
            let udp = p.protocol == super::model::Protocol::Udp;
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

    #[test]
    fn suggestions_are_close_words_only() {
        assert_eq!(did_you_mean("imgae", ["image", "env"]), Some("image"));
        assert_eq!(did_you_mean("app", ["App", "Domain"]), Some("App"));
        assert_eq!(did_you_mean("zzzzzz", ["image", "env"]), None);
    }
}
