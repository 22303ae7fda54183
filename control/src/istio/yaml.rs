//! The located YAML tree: every document of a file parsed by serde-saphyr into nodes that keep
//! the 1-based line of every key and value, and the index from a field path to its line.
//!
//! serde-saphyr parses (multi-document, anchors, budgets); `Spanned<Raw>` gives each node its
//! location. Typed Istio structs are then deserialised from this tree (see [`super::parse`]),
//! so a typed error or a validation finding can name the exact line of the field it is about.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// One YAML node with the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// 1-based line of the node (0 when unknown).
    pub line: usize,
    pub value: Value,
}

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One key of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key as written (scalars are rendered as text: `8080:` is `"8080"`).
    pub key: String,
    /// 1-based line of the key.
    pub line: usize,
    /// When the key was moved or renamed by a compatibility mapping: the path the user wrote.
    pub written: Option<String>,
    pub value: Node,
}

impl Node {
    /// The entries, when the node is a mapping.
    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The mutable entries, when the node is a mapping.
    pub fn as_map_mut(&mut self) -> Option<&mut Vec<Entry>> {
        match &mut self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value under `key`, when the node is a mapping holding it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.value)
    }

    /// The entry under `key`, mutable.
    pub fn entry_mut(&mut self, key: &str) -> Option<&mut Entry> {
        self.as_map_mut()?.iter_mut().find(|e| e.key == key)
    }

    /// The string value, when the node is a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as JSON, for typed deserialisation. Keys stay strings; serde_json parses
    /// integer map keys (`portLevelMtls: {8080: ...}`) when the target type asks for them.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Where each field path of one document was written: `spec.rules[0].when[1].key` to its line
/// and to the path the user wrote (which differs when a compatibility mapping moved it).
#[derive(Debug, Clone, Default)]
pub struct Locator {
    lines: HashMap<String, (usize, Option<String>)>,
    root_line: usize,
}

impl Locator {
    /// Index every path under `root` (a document's top-level mapping).
    pub fn new(root: &Node) -> Self {
        let mut loc = Locator {
            lines: HashMap::new(),
            root_line: root.line,
        };
        loc.index("", root, None);
        loc
    }

    fn index(&mut self, path: &str, node: &Node, written: Option<&str>) {
        match &node.value {
            Value::Map(entries) => {
                for e in entries {
                    let p = join(path, &e.key);
                    let w = e
                        .written
                        .clone()
                        .or_else(|| written.map(|w| join(w, &e.key)));
                    self.lines.insert(p.clone(), (e.line, w.clone()));
                    self.index(&p, &e.value, w.as_deref());
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    let w = written.map(|w| format!("{w}[{i}]"));
                    self.lines.insert(p.clone(), (item.line, w.clone()));
                    self.index(&p, item, w.as_deref());
                }
            }
            _ => {}
        }
    }

    /// The line of `path`, or of its nearest written ancestor, or of the document.
    pub fn line(&self, path: &str) -> usize {
        self.lookup(path)
            .map(|(line, _)| line)
            .unwrap_or(self.root_line)
    }

    /// The path as the user wrote it (before compatibility mappings), for messages.
    pub fn written(&self, path: &str) -> String {
        let mut p = path;
        let mut suffix = String::new();
        loop {
            if let Some((_, w)) = self.lines.get(p) {
                return match w {
                    Some(w) => format!("{w}{suffix}"),
                    None => path.to_string(),
                };
            }
            match parent(p) {
                Some((parent, tail)) => {
                    suffix = format!("{tail}{suffix}");
                    p = parent;
                }
                None => return path.to_string(),
            }
        }
    }

    fn lookup(&self, path: &str) -> Option<(usize, Option<String>)> {
        let mut p = path;
        loop {
            if let Some(v) = self.lines.get(p) {
                return Some(v.clone());
            }
            p = parent(p)?.0;
        }
    }

    /// Whether `path` was written (after compatibility mappings).
    pub fn has(&self, path: &str) -> bool {
        self.lines.contains_key(path)
    }
}

/// `a.b` joined; a key with a `.` or `[` is written as `["a.b"]` so the path stays unambiguous.
pub fn join(path: &str, key: &str) -> String {
    let simple = !key.is_empty() && !key.contains(['.', '[', ']', '"']);
    match (path.is_empty(), simple) {
        (true, true) => key.to_string(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{key:?}]"),
    }
}

/// The parent of a path and the tail that was cut off (`a.b[0]` -> (`a.b`, `[0]`)).
fn parent(path: &str) -> Option<(&str, &str)> {
    if path.ends_with(']') {
        let open = path.rfind('[')?;
        return Some((&path[..open], &path[open..]));
    }
    let dot = path.rfind('.')?;
    Some((&path[..dot], &path[dot..]))
}

/// One parsed document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    pub root: Node,
}

/// A YAML syntax error with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// Parse every document of `text`. Empty documents are skipped, as Kubernetes does.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    };
    let docs: Vec<Spanned<Raw>> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| SyntaxError {
            line: e.location().map(|l| l.line() as usize).unwrap_or(0),
            message: first_line(&e.to_string()),
        })?;
    Ok(docs
        .into_iter()
        .map(|d| Document { root: d.into() })
        .collect())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// The raw form serde-saphyr fills in; converted into [`Node`].
#[derive(Debug)]
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl From<Spanned<Raw>> for Node {
    fn from(s: Spanned<Raw>) -> Node {
        let line = s.referenced.line() as usize;
        let value = match s.value {
            Raw::Null => Value::Null,
            Raw::Bool(b) => Value::Bool(b),
            Raw::Int(i) => Value::Int(i),
            Raw::Float(f) => Value::Float(f),
            Raw::Str(s) => Value::Str(s),
            Raw::Seq(items) => Value::Seq(items.into_iter().map(Node::from).collect()),
            Raw::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| Entry {
                        line: k.referenced.line() as usize,
                        key: scalar_text(&k.value),
                        written: None,
                        value: v.into(),
                    })
                    .collect(),
            ),
        };
        Node { line, value }
    }
}

fn scalar_text(raw: &Raw) -> String {
    match raw {
        Raw::Null => "null".into(),
        Raw::Bool(b) => b.to_string(),
        Raw::Int(i) => i.to_string(),
        Raw::Float(f) => f.to_string(),
        Raw::Str(s) => s.clone(),
        Raw::Seq(_) | Raw::Map(_) => "<complex key>".into(),
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(i64::try_from(v)
            .map(Raw::Int)
            .unwrap_or(Raw::Float(v as f64)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<Spanned<Raw>>()? {
            let v = map.next_value::<Spanned<Raw>>()?;
            entries.push((k, v));
        }
        Ok(Raw::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_lines_of_keys_and_items_across_documents() {
        let text = "# c\na: 1\nb:\n  c: [x, y]\n  8080:\n    mode: STRICT\n---\nkind: Z\nlist:\n- p: 1\n- q: 2\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        let loc = Locator::new(&docs[0].root);
        assert_eq!(loc.line("a"), 2);
        assert_eq!(loc.line("b.c"), 4);
        assert_eq!(loc.line("b.8080.mode"), 6);
        assert_eq!(loc.line("b.8080.missing.deeper"), 5);
        let loc2 = Locator::new(&docs[1].root);
        assert_eq!(loc2.line("kind"), 8);
        assert_eq!(loc2.line("list[1].q"), 11);
        assert_eq!(docs[0].root.to_json()["b"]["8080"]["mode"], "STRICT");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let err = parse_documents("a: 1\nb: [\n").unwrap_err();
        assert!(err.line >= 2, "{err:?}");
        let dup = parse_documents("a: 1\na: 2\n").unwrap_err();
        assert_eq!(dup.line, 2, "{dup:?}");
    }
}
