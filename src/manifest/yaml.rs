//! YAML text → a tree of nodes that remember their line and column, with hard limits.
//!
//! serde_yaml reports positions only for its own errors; berth needs the position of
//! any value a semantic check complains about, so documents are parsed into [`Node`]s
//! from the parser's event stream. The builder refuses what a hostile file could use
//! to exhaust memory: alias expansion is budgeted, nesting depth is bounded, and
//! duplicate keys are errors rather than a silent "last one wins".

use std::collections::{HashMap, HashSet};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Nodes that aliases may add to one file before it is refused as an alias bomb.
pub const MAX_ALIAS_NODES: usize = 100_000;
/// How deeply collections may nest.
pub const MAX_DEPTH: usize = 64;

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Mark {
    /// Line, starting at 1.
    pub line: usize,
    /// Column, starting at 1.
    pub col: usize,
}

impl Mark {
    fn from_marker(m: Marker) -> Mark {
        Mark {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

/// One YAML value and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the value starts.
    pub mark: Mark,
    /// The value.
    pub value: Value,
}

/// A YAML value, resolved with the YAML 1.2 core schema (`yes` and `on` stay strings).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping in source order; keys are unique.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The value as a string, when it is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The entry of a mapping whose key is the string `key`, as (key node, value node).
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The value under `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The `index`th item of a sequence.
    pub fn item(&self, index: usize) -> Option<&Node> {
        match &self.value {
            Value::Seq(items) => items.get(index),
            _ => None,
        }
    }

    /// How many levels of collections this subtree nests (0 for a scalar).
    fn depth(&self) -> usize {
        match &self.value {
            Value::Seq(items) => 1 + items.iter().map(Node::depth).max().unwrap_or(0),
            Value::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.depth().max(v.depth()))
                    .max()
                    .unwrap_or(0)
            }
            _ => 0,
        }
    }

    /// How many nodes this subtree holds.
    fn size(&self) -> usize {
        1 + match &self.value {
            Value::Seq(items) => items.iter().map(Node::size).sum(),
            Value::Map(entries) => entries.iter().map(|(k, v)| k.size() + v.size()).sum(),
            _ => 0,
        }
    }

    /// Converts the tree to JSON for schema validation and deserialization.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            // Non-finite floats are refused while building, so this always succeeds.
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (key_text(k), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// The text of a scalar key (keys are checked to be scalars while building).
fn key_text(key: &Node) -> String {
    match &key.value {
        Value::Str(s) => s.clone(),
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Seq(_) | Value::Map(_) => String::new(),
    }
}

/// A problem in a YAML file, at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// Where it was found.
    pub mark: Mark,
    /// What is wrong and what to do.
    pub message: String,
}

/// Parses every document of `text`. Empty documents are dropped.
///
/// Parsing stops at the first syntax error (the parser cannot resynchronise), but the
/// documents before it are still returned so that their own errors can be reported.
pub fn parse_documents(text: &str) -> (Vec<Node>, Option<YamlError>) {
    // Editors on Windows save UTF-8 with a byte-order mark; it is not part of the text.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    loop {
        match parser.next_token() {
            Ok((event, marker)) => {
                let end = matches!(event, Event::StreamEnd);
                builder.on_event(event, marker);
                if end || builder.error.is_some() {
                    break;
                }
            }
            // The scanner has its own bound on flow nesting (`[[[…` or `{a: {a: …`).
            Err(e) if e.info() == "recursion limit exceeded" => {
                builder.fail(Mark::from_marker(*e.marker()), too_deep());
                break;
            }
            Err(e) => {
                let message = format!("YAML syntax error: {}", e.info());
                builder.fail(Mark::from_marker(*e.marker()), message);
                break;
            }
        }
    }
    (builder.documents, builder.error)
}

enum Frame {
    Seq {
        mark: Mark,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        mark: Mark,
        anchor: usize,
        /// The entries so far, and where each key's text sits in them: duplicate
        /// checks are one lookup, so a map of many keys parses in linear time.
        entries: Entries,
        pending_key: Option<Node>,
        /// Whether the pending key is the plain merge key `<<`.
        pending_merge: bool,
        /// Keys that came from a `<<` merge and may be overridden.
        merged: HashSet<String>,
    },
}

/// A mapping's entries in source order, indexed by key text.
#[derive(Default)]
struct Entries {
    list: Vec<(Node, Node)>,
    index: HashMap<String, usize>,
}

impl Entries {
    fn position(&self, text: &str) -> Option<usize> {
        self.index.get(text).copied()
    }

    fn push(&mut self, text: String, key: Node, value: Node) {
        self.index.insert(text, self.list.len());
        self.list.push((key, value));
    }
}

#[derive(Default)]
struct Builder {
    documents: Vec<Node>,
    stack: Vec<Frame>,
    /// Anchored nodes and how deeply each nests.
    anchors: HashMap<usize, (Node, usize)>,
    alias_nodes: usize,
    /// Whether the scalar being completed is a plain `<<`, the merge key.
    merge_key: bool,
    error: Option<YamlError>,
}

impl Builder {
    fn fail(&mut self, mark: Mark, message: String) {
        if self.error.is_none() {
            self.error = Some(YamlError { mark, message });
        }
    }

    fn push_frame(&mut self, frame: Frame, mark: Mark) {
        if self.stack.len() >= MAX_DEPTH {
            self.fail(mark, too_deep());
        }
        self.stack.push(frame);
    }

    /// Places a finished node into its parent (or as a whole document).
    fn complete(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            let depth = node.depth();
            self.anchors.insert(anchor, (node.clone(), depth));
        }
        match self.stack.last_mut() {
            None => {
                if node.value != Value::Null {
                    self.documents.push(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                pending_merge,
                merged,
                ..
            }) => match pending_key.take() {
                None => {
                    if matches!(node.value, Value::Seq(_) | Value::Map(_)) {
                        let mark = node.mark;
                        self.fail(mark, "mapping keys must be plain scalars".to_owned());
                    } else {
                        *pending_merge = self.merge_key;
                        *pending_key = Some(node);
                    }
                }
                Some(key) => {
                    if std::mem::take(pending_merge) {
                        if let Err(e) = merge_into(entries, merged, node) {
                            self.fail(e.mark, e.message);
                        }
                        return;
                    }
                    let text = key_text(&key);
                    if let Some(pos) = entries.position(&text) {
                        if merged.remove(&text) {
                            // An explicit key overrides one brought in by `<<`.
                            entries.list[pos] = (key, node);
                        } else {
                            let first = entries.list[pos].0.mark.line;
                            self.fail(
                                key.mark,
                                format!(
                                    "duplicate key `{text}` (first defined at line {first}); \
                                     remove one of them"
                                ),
                            );
                        }
                    } else {
                        entries.push(text, key, node);
                    }
                }
            },
        }
    }

    fn alias(&mut self, id: usize, mark: Mark) {
        let Some((node, depth)) = self.anchors.get(&id) else {
            self.fail(mark, "alias refers to an unknown anchor".to_owned());
            return;
        };
        // An alias pastes its anchor's whole tree here: aliases of deep anchors placed
        // deep down would otherwise stack up past the limit.
        if self.stack.len() + depth > MAX_DEPTH {
            self.fail(mark, too_deep());
            return;
        }
        let size = node.size();
        self.alias_nodes += size;
        if self.alias_nodes > MAX_ALIAS_NODES {
            self.fail(
                mark,
                format!(
                    "YAML aliases expand to more than {MAX_ALIAS_NODES} nodes \
                     (an alias bomb?); write the values out or use fewer aliases"
                ),
            );
            return;
        }
        let mut node = node.clone();
        node.mark = mark;
        self.complete(node, 0);
    }
}

fn too_deep() -> String {
    format!("YAML nests deeper than {MAX_DEPTH} levels; flatten the document")
}

/// Applies a YAML merge (`<<: *defaults` or `<<: [*a, *b]`): keys already present win.
fn merge_into(
    entries: &mut Entries,
    merged: &mut HashSet<String>,
    source: Node,
) -> Result<(), YamlError> {
    let maps = match source.value {
        Value::Map(m) => vec![m],
        Value::Seq(items) => {
            let mut maps = Vec::new();
            for item in items {
                match item.value {
                    Value::Map(m) => maps.push(m),
                    _ => {
                        return Err(YamlError {
                            mark: item.mark,
                            message: "`<<` merges only mappings".to_owned(),
                        });
                    }
                }
            }
            maps
        }
        _ => {
            return Err(YamlError {
                mark: source.mark,
                message: "`<<` merges only mappings".to_owned(),
            });
        }
    };
    for map in maps {
        for (k, v) in map {
            let text = key_text(&k);
            if entries.position(&text).is_none() {
                merged.insert(text.clone());
                entries.push(text, k, v);
            }
        }
    }
    Ok(())
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, marker: Marker) {
        if self.error.is_some() {
            return;
        }
        let mark = Mark::from_marker(marker);
        match event {
            Event::DocumentStart => self.anchors.clear(),
            Event::Scalar(text, style, anchor, tag) => {
                self.merge_key = style == TScalarStyle::Plain && tag.is_none() && text == "<<";
                match scalar(text, style, tag.as_ref()) {
                    Ok(value) => self.complete(Node { mark, value }, anchor),
                    Err(message) => self.fail(mark, message),
                }
                self.merge_key = false;
            }
            Event::Alias(id) => self.alias(id, mark),
            Event::SequenceStart(anchor, _) => self.push_frame(
                Frame::Seq {
                    mark,
                    anchor,
                    items: Vec::new(),
                },
                mark,
            ),
            Event::MappingStart(anchor, _) => self.push_frame(
                Frame::Map {
                    mark,
                    anchor,
                    entries: Entries::default(),
                    pending_key: None,
                    pending_merge: false,
                    merged: HashSet::new(),
                },
                mark,
            ),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    mark,
                    anchor,
                    items,
                }) => self.complete(
                    Node {
                        mark,
                        value: Value::Seq(items),
                    },
                    anchor,
                ),
                Some(Frame::Map {
                    mark,
                    anchor,
                    entries,
                    ..
                }) => {
                    // The parser marks a block mapping where its first value starts;
                    // people expect the mapping to start at its first key.
                    let list = entries.list;
                    let mark = list.first().map_or(mark, |(k, _)| k.mark.min(mark));
                    self.complete(
                        Node {
                            mark,
                            value: Value::Map(list),
                        },
                        anchor,
                    )
                }
                None => {}
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

/// Resolves a scalar with the YAML 1.2 core schema; quoted scalars are always strings.
fn scalar(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    if let Some(tag) = tag {
        // `!!str 80` and friends: honour the standard tags, refuse the rest.
        if tag.handle == "tag:yaml.org,2002:" || tag.handle == "!!" {
            return match tag.suffix.as_str() {
                "str" => Ok(Value::Str(text)),
                "int" | "float" | "bool" | "null" => plain(&text).map(|v| match v {
                    Value::Str(_) => Value::Str(text.clone()),
                    v => v,
                }),
                other => Err(format!("unsupported YAML tag `!!{other}`")),
            };
        }
        return Err(format!(
            "unsupported YAML tag `{}{}`; berth reads plain YAML values only",
            tag.handle, tag.suffix
        ));
    }
    if style != TScalarStyle::Plain {
        return Ok(Value::Str(text));
    }
    plain(&text)
}

fn plain(text: &str) -> Result<Value, String> {
    Ok(match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => {
            return Err(format!(
                "`{text}` is not a finite number; quote it if you meant a string"
            ));
        }
        _ => {
            if let Some(i) = parse_int(text) {
                Value::Int(i)
            } else if is_float(text) {
                match text.parse::<f64>() {
                    Ok(f) if f.is_finite() => Value::Float(f),
                    _ => return Err(format!("`{text}` is not a finite number")),
                }
            } else {
                Value::Str(text.to_owned())
            }
        }
    })
}

fn parse_int(text: &str) -> Option<i64> {
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok();
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).ok();
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok()
}

fn is_float(text: &str) -> bool {
    // [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let b = text.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = i - s;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        let (mut docs, err) = parse_documents(text);
        assert_eq!(err, None);
        assert_eq!(docs.len(), 1);
        docs.remove(0)
    }

    #[test]
    fn positions_are_one_based_and_point_at_values() {
        let doc = one("kind: App\nspec:\n  image: ghost:5\n  port: 80\n");
        let spec = doc.get("spec").unwrap();
        assert_eq!(spec.get("image").unwrap().mark, Mark { line: 3, col: 10 });
        let (key, value) = spec.entry("port").unwrap();
        assert_eq!(key.mark, Mark { line: 4, col: 3 });
        assert_eq!(value.mark, Mark { line: 4, col: 9 });
    }

    #[test]
    fn core_schema_keeps_yes_and_on_as_strings() {
        let doc = one("a: yes\nb: on\nc: true\nd: 010\ne: 0x1f\nf: 1.5\ng: '80'\nh: ~\n");
        assert_eq!(doc.get("a").unwrap().value, Value::Str("yes".into()));
        assert_eq!(doc.get("b").unwrap().value, Value::Str("on".into()));
        assert_eq!(doc.get("c").unwrap().value, Value::Bool(true));
        assert_eq!(doc.get("d").unwrap().value, Value::Int(10));
        assert_eq!(doc.get("e").unwrap().value, Value::Int(31));
        assert_eq!(doc.get("f").unwrap().value, Value::Float(1.5));
        assert_eq!(doc.get("g").unwrap().value, Value::Str("80".into()));
        assert_eq!(doc.get("h").unwrap().value, Value::Null);
    }

    #[test]
    fn duplicate_keys_are_refused_at_the_second() {
        let (_, err) = parse_documents("a: 1\nb: 2\na: 3\n");
        let err = err.unwrap();
        assert_eq!(err.mark, Mark { line: 3, col: 1 });
        assert!(
            err.message
                .contains("duplicate key `a` (first defined at line 1)")
        );
    }

    #[test]
    fn merge_keys_bring_in_defaults_that_explicit_keys_override() {
        let doc = one("base: &b {x: 1, y: 2}\nmine:\n  <<: *b\n  y: 3\n");
        let mine = doc.get("mine").unwrap();
        assert_eq!(mine.get("x").unwrap().value, Value::Int(1));
        assert_eq!(mine.get("y").unwrap().value, Value::Int(3));
    }

    #[test]
    fn alias_bomb_fails_fast() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = (b'a' + i - 1) as char;
            let cur = (b'a' + i) as char;
            text.push_str(&format!(
                "{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        let (_, err) = parse_documents(&text);
        assert!(err.unwrap().message.contains("alias bomb"));
    }

    #[test]
    fn several_documents_and_empty_ones() {
        let (docs, err) = parse_documents("---\na: 1\n---\n---\nb: 2\n");
        assert_eq!(err, None);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].mark.line, 5);
    }

    #[test]
    fn syntax_errors_keep_earlier_documents() {
        let (docs, err) = parse_documents("a: 1\n---\nb: [1, 2\n");
        assert_eq!(docs.len(), 1);
        assert!(err.unwrap().message.starts_with("YAML syntax error"));
    }

    #[test]
    fn a_utf8_bom_at_the_start_is_accepted() {
        let doc = one("\u{feff}kind: App\nport: 80\n");
        let (key, value) = doc.entry("kind").unwrap();
        assert_eq!(key.mark, Mark { line: 1, col: 1 });
        assert_eq!(value.as_str(), Some("App"));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(200) + &"]".repeat(200);
        let (_, err) = parse_documents(&text);
        assert!(err.unwrap().message.contains("nests deeper"));
    }

    #[test]
    fn a_10000_deep_document_is_refused_at_a_position() {
        let flow_seq = "[".repeat(10_000) + &"]".repeat(10_000);
        let flow_map = "{a: ".repeat(10_000) + "1" + &"}".repeat(10_000);
        let block = "- ".repeat(10_000) + "x\n";
        for (text, col) in [(flow_seq, 256), (flow_map, 1021), (block, 129)] {
            let (_, err) = parse_documents(&text);
            assert_eq!(
                err,
                Some(YamlError {
                    mark: Mark { line: 1, col },
                    message: "YAML nests deeper than 64 levels; flatten the document".into(),
                })
            );
        }
    }

    #[test]
    fn aliases_cannot_stack_nesting_past_the_limit() {
        // Each anchor holds the previous one 40 levels down: without a bound the tree
        // would nest 40 levels more per line.
        let mut text = format!("a0: &a0 {}x{}\n", "[".repeat(40), "]".repeat(40));
        for i in 1..5 {
            let _ = std::fmt::Write::write_fmt(
                &mut text,
                format_args!(
                    "a{i}: &a{i} {}*a{} {}\n",
                    "[".repeat(40),
                    i - 1,
                    "]".repeat(40)
                ),
            );
        }
        let (_, err) = parse_documents(&text);
        let err = err.unwrap();
        assert_eq!(err.mark, Mark { line: 2, col: 49 });
        assert_eq!(err.message, too_deep());
    }

    #[test]
    fn a_map_of_many_keys_parses_in_linear_time() {
        // 160,000 keys took minutes when each key was compared with every earlier one.
        let mut text = String::new();
        for i in 0..160_000 {
            let _ = std::fmt::Write::write_fmt(&mut text, format_args!("k{i}: {i}\n"));
        }
        let start = std::time::Instant::now();
        let doc = one(&text);
        let elapsed = start.elapsed();
        assert_eq!(doc.get("k159999").unwrap().value, Value::Int(159_999));
        assert!(elapsed.as_secs() < 10, "took {elapsed:?}");
        let (_, err) = parse_documents(&(text + "k5: again\n"));
        assert!(
            err.unwrap()
                .message
                .contains("duplicate key `k5` (first defined at line 6)")
        );
    }
}
