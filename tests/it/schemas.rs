//! The JSON Schemas: the checked-in files match the code, and they accept the
//! examples and refuse bad documents on their own (as an editor would use them).

use std::fs;

use berth::manifest::{self, yaml};
use serde_json::Value;

use crate::root;

#[test]
fn checked_in_schemas_are_up_to_date() {
    let files = manifest::schema_files();
    for (name, text) in &files {
        let path = root().join("schemas").join(name);
        let on_disk = fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == *text,
            "schemas/{name} is stale: run `cargo run -- schema --out schemas/`"
        );
    }
    // A file `berth schema` no longer writes (a kind that was removed or renamed) would
    // still be offered to editors: it must go too.
    let written: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    let extra: Vec<String> = fs::read_dir(root().join("schemas"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !written.contains(&name.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "schemas/ holds {extra:?}, which `berth schema` does not write: remove it"
    );
}

fn documents(dir: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let (files, problems) = manifest::read_source_dir(&root().join(dir));
    assert!(problems.is_empty());
    for f in files {
        let (docs, err) = yaml::parse_documents(&f.text);
        assert!(err.is_none());
        out.extend(docs.iter().map(|d| (f.path.clone(), d.to_json())));
    }
    out
}

fn any_document_validator() -> jsonschema::Validator {
    let text = fs::read_to_string(root().join("schemas/berth.json")).unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
}

#[test]
fn the_any_document_schema_accepts_every_example() {
    let validator = any_document_validator();
    for dir in [
        "examples/wordpress",
        "examples/python-postgres",
        "examples/static-site",
        "state-repo-template",
    ] {
        for (file, doc) in documents(dir) {
            let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{dir}/{file}: {errors:?}");
        }
    }
}

#[test]
fn the_schemas_refuse_typos_and_wrong_types() {
    let validator = any_document_validator();
    for case in [
        "unknown-field-typo",
        "wrong-type-port",
        "port-out-of-range",
        "enum-typo",
        "bad-duration",
    ] {
        let docs = documents(&format!("tests/bad/{case}"));
        assert!(
            docs.iter().any(|(_, d)| !validator.is_valid(d)),
            "schemas/berth.json accepts tests/bad/{case}"
        );
    }
}

#[test]
fn kind_schemas_pin_kind_and_api_version() {
    for kind in manifest::Kind::ALL {
        let schema = manifest::kind_schema(kind);
        assert_eq!(schema["properties"]["kind"]["const"], kind.as_str());
        assert_eq!(schema["properties"]["apiVersion"]["const"], "berth/v1");
        assert_eq!(schema["additionalProperties"], false);
    }
}

#[test]
fn the_manifest_reference_is_up_to_date() {
    let on_disk = fs::read_to_string(root().join("docs/manifests.md")).unwrap_or_default();
    assert!(
        on_disk == manifest::reference_markdown(),
        "docs/manifests.md is stale: run `cargo run -- schema --reference > docs/manifests.md`"
    );
}
