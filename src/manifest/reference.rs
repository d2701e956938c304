//! The manifest reference in Markdown, generated from the JSON Schemas so that the
//! documentation cannot drift from what validation accepts.

use std::fmt::Write as _;

use serde_json::Value;

use super::model::Kind;
use super::schema::kind_schema;

/// One row of a kind's field table.
struct Row {
    path: String,
    shape: String,
    description: String,
}

/// The whole reference: one section per kind with a table of every field.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Manifest reference\n\n\
         Generated from the JSON Schemas in `schemas/` (`berth schema --reference`); do not edit.\n\
         Every document has `apiVersion: berth/v1`, a `kind`, `metadata` (`name`: a DNS label, \
         and optional `labels`) and a `spec`. Unknown fields are errors. Durations are written \
         `500ms`, `10s`, `5m`, `1h30m`, `2d`; sizes `512Mi`, `1Gi`; schedules in five-field cron \
         syntax (`0 3 * * *`).\n",
    );
    for kind in Kind::ALL {
        let schema = kind_schema(kind);
        let spec = resolve(&schema, &schema["properties"]["spec"]);
        let _ = writeln!(out, "\n## {kind}\n");
        if let Some(d) = spec.get("description").and_then(Value::as_str) {
            let _ = writeln!(out, "{}\n", one_line(d));
        }
        let mut rows = Vec::new();
        fields(&schema, spec, "", &mut rows, 0, false);
        out.push_str("| field | type | description |\n| --- | --- | --- |\n");
        for r in rows {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} |",
                r.path,
                r.shape,
                r.description.replace('|', "\\|")
            );
        }
    }
    out
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Follows `$ref`, single-element `allOf`, and `anyOf [X, null]` (optional fields).
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    let mut node = node;
    for _ in 0..8 {
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(target) => node = target,
                None => return node,
            }
        } else if let Some([only]) = node
            .get("allOf")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            node = only;
        } else if let Some(list) = node.get("anyOf").and_then(Value::as_array) {
            let not_null: Vec<&Value> = list.iter().filter(|v| v["type"] != "null").collect();
            match not_null.as_slice() {
                [one] if list.len() == 2 => node = one,
                _ => return node,
            }
        } else {
            return node;
        }
    }
    node
}

/// The name of a `$ref`'d definition, for scalar types like Duration.
fn ref_name(node: &Value) -> Option<&str> {
    let direct = node.get("$ref").and_then(Value::as_str);
    let via_all_of = node
        .get("allOf")
        .and_then(|a| a.get(0))
        .and_then(|v| v.get("$ref"))
        .and_then(Value::as_str);
    let via_any_of = node
        .get("anyOf")
        .and_then(Value::as_array)
        .and_then(|list| {
            list.iter()
                .find_map(|v| v.get("$ref").and_then(Value::as_str))
        });
    direct
        .or(via_all_of)
        .or(via_any_of)
        .and_then(|r| r.rsplit('/').next())
}

/// A short description of the value a field takes.
fn shape(root: &Value, node: &Value) -> String {
    if let Some(name @ ("Duration" | "Size" | "Cron")) = ref_name(node) {
        return name.to_lowercase();
    }
    let node = resolve(root, node);
    if let Some(c) = node.get("const") {
        return format!("`{}`", c.as_str().unwrap_or_default());
    }
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        return words(values.iter());
    }
    if let Some(variants) = node
        .get("oneOf")
        .or_else(|| node.get("anyOf"))
        .and_then(Value::as_array)
    {
        let consts: Vec<&Value> = variants.iter().filter_map(|v| v.get("const")).collect();
        if consts.len() == variants.len() {
            return words(consts.into_iter());
        }
        let parts: Vec<String> = variants.iter().map(|v| shape(root, v)).collect();
        return dedup(parts).join(" or ");
    }
    let types: Vec<&str> = match node.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => vec![],
    };
    match types.as_slice() {
        ["array"] => format!("list of {}", shape(root, &node["items"])),
        ["object"] if node.get("properties").is_some() => "mapping".to_owned(),
        ["object"] => match node.get("additionalProperties") {
            Some(v @ Value::Object(_)) => format!("map of {}", shape(root, v)),
            _ => "mapping".to_owned(),
        },
        ["integer"] => match (node.get("minimum"), node.get("maximum")) {
            (Some(lo), Some(hi)) => format!("integer {lo}–{hi}"),
            _ => "integer".to_owned(),
        },
        ["number"] => "number".to_owned(),
        ["string"] => "string".to_owned(),
        ["boolean"] => "boolean".to_owned(),
        [] => "value".to_owned(),
        many => many.join(" or "),
    }
}

fn words<'a>(values: impl Iterator<Item = &'a Value>) -> String {
    values
        .filter_map(Value::as_str)
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Appends a row per field of an object schema, descending into nested objects, maps
/// and the variants of unions (whose fields are required only in their own variant).
fn fields(
    root: &Value,
    node: &Value,
    prefix: &str,
    rows: &mut Vec<Row>,
    depth: usize,
    variant: bool,
) {
    if depth > 5 {
        return;
    }
    let node = resolve(root, node);
    if let Some(variants) = node
        .get("oneOf")
        .or_else(|| node.get("anyOf"))
        .and_then(Value::as_array)
    {
        for v in variants {
            let v = resolve(root, v);
            if v.get("properties").is_some() {
                fields(root, v, prefix, rows, depth + 1, true);
            } else if v["type"] == "array" {
                fields(
                    root,
                    &v["items"],
                    &format!("{prefix}[]"),
                    rows,
                    depth + 1,
                    variant,
                );
            }
        }
        return;
    }
    if node["type"] == "array" {
        fields(
            root,
            &node["items"],
            &format!("{prefix}[]"),
            rows,
            depth + 1,
            variant,
        );
        return;
    }
    if let Some(values @ Value::Object(_)) = node.get("additionalProperties") {
        fields(
            root,
            values,
            &format!("{prefix}.<name>"),
            rows,
            depth + 1,
            variant,
        );
        return;
    }
    let Some(props) = node.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, prop) in props {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let shape = shape(root, prop);
        if let Some(row) = rows.iter_mut().find(|r| r.path == path) {
            // The tag of another variant (`kind: traefik`): list it beside the first.
            if prop.get("const").is_some() && !row.shape.contains(&shape) {
                row.shape = format!("{}, {shape}", row.shape);
            }
            continue;
        }
        let mut description = prop
            .get("description")
            .or_else(|| resolve(root, prop).get("description"))
            .and_then(Value::as_str)
            .map(one_line)
            .unwrap_or_default();
        if required.contains(&name.as_str()) && !variant {
            description = format!("**Required.** {description}");
        }
        rows.push(Row {
            path: path.clone(),
            shape,
            description,
        });
        fields(root, prop, &path, rows, depth + 1, variant);
    }
}
