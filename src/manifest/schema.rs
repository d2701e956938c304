//! JSON Schemas generated from the model, and the compiled validators built from them.

use std::sync::OnceLock;

use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use super::model::{
    API_VERSION, AppSpec, DatabaseSpec, Document, DomainSpec, Kind, NotifierSpec, SettingsSpec,
    WorkflowSpec,
};

fn generator() -> SchemaGenerator {
    // Draft 7 is what editors (yaml-language-server) understand best.
    SchemaSettings::draft07().for_deserialize().into_generator()
}

/// The file name of a kind's schema (`app.json`), or of the any-document schema.
pub fn schema_file_name(kind: Option<Kind>) -> String {
    match kind {
        Some(k) => format!("{}.json", k.as_str().to_lowercase()),
        None => "berth.json".to_owned(),
    }
}

fn document_schema<S: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.root_schema_for::<Document<S>>().to_value()
}

/// The JSON Schema of one kind's documents.
pub fn kind_schema(kind: Kind) -> Value {
    let mut generator = generator();
    let mut schema = match kind {
        Kind::Settings => document_schema::<SettingsSpec>(&mut generator),
        Kind::App => document_schema::<AppSpec>(&mut generator),
        Kind::Domain => document_schema::<DomainSpec>(&mut generator),
        Kind::Database => document_schema::<DatabaseSpec>(&mut generator),
        Kind::Notifier => document_schema::<NotifierSpec>(&mut generator),
        Kind::Workflow => document_schema::<WorkflowSpec>(&mut generator),
    };
    let object = schema.as_object_mut().expect("a schema object");
    object.insert("title".into(), format!("berth {kind}").into());
    pin_envelope(object, kind);
    schema
}

/// Makes `apiVersion` and `kind` constants in a document schema.
fn pin_envelope(object: &mut Map<String, Value>, kind: Kind) {
    if let Some(Value::Object(props)) = object.get_mut("properties") {
        props.insert(
            "apiVersion".into(),
            json!({"description": "Always `berth/v1`.", "const": API_VERSION}),
        );
        props.insert(
            "kind".into(),
            json!({"description": "The kind of resource.", "const": kind.as_str()}),
        );
    }
}

/// A schema accepting any berth document: it dispatches on `kind`.
pub fn any_document_schema() -> Value {
    let mut definitions = Map::new();
    let mut branches = Vec::new();
    for kind in Kind::ALL {
        let mut schema = kind_schema(kind);
        let object = schema.as_object_mut().expect("a schema object");
        if let Some(Value::Object(defs)) = object.remove("definitions") {
            definitions.extend(defs);
        }
        object.remove("$schema");
        object.remove("title");
        let name = format!("{kind}Document");
        definitions.insert(name.clone(), schema);
        branches.push(json!({
            "if": {"properties": {"kind": {"const": kind.as_str()}}, "required": ["kind"]},
            "then": {"$ref": format!("#/definitions/{name}")},
        }));
    }
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "berth document",
        "description": "Any berth manifest; the schema of its kind applies.",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"kind": {"enum": kinds}},
        "allOf": branches,
        "definitions": definitions,
    })
}

/// The compiled validator of a kind, built once.
pub(crate) fn validator(kind: Kind) -> &'static jsonschema::Validator {
    static VALIDATORS: OnceLock<Vec<jsonschema::Validator>> = OnceLock::new();
    let all = VALIDATORS.get_or_init(|| {
        Kind::ALL
            .iter()
            .map(|k| {
                jsonschema::validator_for(&kind_schema(*k))
                    .expect("the generated schemas are valid JSON Schemas")
            })
            .collect()
    });
    let index = Kind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("a known kind");
    &all[index]
}

/// Every schema file as (file name, pretty JSON text ending in a newline): one per kind
/// and `berth.json` for any document.
pub fn schema_files() -> Vec<(String, String)> {
    let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("a schema serializes") + "\n";
    let mut files: Vec<(String, String)> = Kind::ALL
        .iter()
        .map(|k| (schema_file_name(Some(*k)), pretty(&kind_schema(*k))))
        .collect();
    files.push((schema_file_name(None), pretty(&any_document_schema())));
    files
}
