//! The first layers, one document at a time: the envelope (`apiVersion`, `kind`), the
//! JSON Schema of the kind, then typed deserialization. Schema errors are turned into
//! messages in words, with a suggestion where a word is close to an allowed one.

use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use super::{Doc, Report, Spec, Typed, did_you_mean, esc, quoted_list};
use crate::manifest::diagnostic::ResourceId;
use crate::manifest::model::{API_VERSION, Document, Kind};
use crate::manifest::schema::validator;
use crate::manifest::syntax;
use crate::manifest::yaml::{Node, Value};

/// Reads `kind` and `metadata.name` so that messages can name the resource.
pub(super) fn identify(doc: &mut Doc) -> Option<Kind> {
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
pub(super) fn check_document(report: &mut Report, i: usize, kind: Option<Kind>) -> Option<Typed> {
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

/// Deserializes the document into its kind's spec, or reports where it fails.
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
            // Past the per-document limit the rest are not shown: no hint to compute.
            for field in unexpected.iter().take(super::MAX_PROBLEMS_PER_DOCUMENT + 1) {
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
    let schemas = SCHEMAS.get_or_init(|| {
        Kind::ALL
            .iter()
            .map(|k| crate::manifest::kind_schema(*k))
            .collect()
    });
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
    use crate::manifest::units::{Cron, Duration, Size};
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
