//! The YAML text as a tree of nodes that know where they were written.
//!
//! Rules are read from this generic tree rather than straight into serde structs so that one
//! pass can report every problem, each at its own line and column. Plain scalars that YAML
//! would type as booleans or numbers (`y`, `007`, `1e3`) keep the text as written, because a
//! project or agent type named `y` is a name, not `true`.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DefaultMessageFormatter, Location, MessageFormatter, Spanned};

use super::Position;

/// One YAML node and where it was written.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) value: Value,
    pub(super) at: Position,
    /// The source text of a plain scalar YAML typed as a boolean or a number.
    written: Option<String>,
}

#[derive(Debug)]
pub(super) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The node as text: a string, or a boolean or number as written. `None` for nothing,
    /// lists and mappings.
    pub(super) fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            Value::Bool(_) | Value::Int(_) | Value::Float(_) => self.written.as_deref(),
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// What the node is, for messages: "a list", "a mapping", "nothing", ...
    pub(super) fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The node as it would be quoted in a message: `5`, `"x"`, or its kind.
    pub(super) fn shown(&self) -> String {
        match &self.value {
            Value::Str(s) => format!("{s:?}"),
            Value::Bool(_) | Value::Int(_) | Value::Float(_) => {
                format!("`{}`", self.as_str().unwrap_or_default())
            }
            Value::Null | Value::Seq(_) | Value::Map(_) => self.kind().to_string(),
        }
    }
}

/// A YAML syntax error: the parser's own message and position.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SyntaxError {
    pub(super) at: Position,
    pub(super) message: String,
}

/// Parses `text`; `Ok(None)` for a file with no document (empty, or only comments).
pub(super) fn load(text: &str) -> Result<Option<Node>, SyntaxError> {
    // Byte offsets in spans are taken against the text we hand over, so strip a BOM here
    // rather than let the parser do it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match serde_saphyr::from_str::<Option<Spanned<Raw>>>(text) {
        Ok(root) => Ok(root.map(|root| build(root, text))),
        Err(e) => Err(syntax_error(&e)),
    }
}

fn syntax_error(e: &serde_saphyr::Error) -> SyntaxError {
    let at = e
        .location()
        .map_or(Position { line: 1, column: 1 }, position);
    let message = DefaultMessageFormatter.format_message(e.without_snippet());
    // The parser's advice for duplicate keys is about its own API, not the user's file.
    let message = message
        .split(", set DuplicateKeyPolicy")
        .next()
        .unwrap_or_default();
    let message = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    SyntaxError { at, message }
}

fn position(l: Location) -> Position {
    let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX).max(1);
    Position {
        line: clamp(l.line()),
        column: clamp(l.column()),
    }
}

/// Converts the parser's tree into [`Node`]s, recovering typed plain scalars' text.
fn build(raw: Spanned<Raw>, text: &str) -> Node {
    let at = position(raw.referenced);
    let value = match raw.value {
        Raw::Null => Value::Null,
        Raw::Bool(b) => Value::Bool(b),
        Raw::Int(i) => Value::Int(i),
        Raw::Float(f) => Value::Float(f),
        Raw::Str(s) => Value::Str(s),
        Raw::Seq(items) => Value::Seq(items.into_iter().map(|n| build(n, text)).collect()),
        Raw::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = build(k, text);
                    let mut value = build(v, text);
                    // `run-on:` with nothing after it: point at `run-on`, not past its colon.
                    if matches!(value.value, Value::Null) && value.written.is_none() {
                        value.at = key.at;
                    }
                    (key, value)
                })
                .collect(),
        ),
    };
    let written = match &value {
        Value::Bool(_) | Value::Int(_) | Value::Float(_) => {
            let span = raw.defined.span();
            let from_source = span.byte_offset().zip(span.byte_len()).and_then(|(o, l)| {
                let o = usize::try_from(o).ok()?;
                let l = usize::try_from(l).ok()?;
                text.get(o..o.checked_add(l)?)
            });
            Some(match (from_source, &value) {
                (Some(s), _) if !s.trim().is_empty() => s.trim().to_string(),
                (_, Value::Bool(b)) => b.to_string(),
                (_, Value::Int(i)) => i.to_string(),
                (_, Value::Float(f)) => f.to_string(),
                _ => String::new(),
            })
        }
        _ => None,
    };
    Node { value, at, written }
}

/// What the parser gives us: a YAML value with spanned children.
enum Raw {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Raw, D::Error> {
        deserializer.deserialize_any(RawVisitor)
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

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        Raw::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        Ok(i128::try_from(v).map_or(Raw::Float(v as f64), Raw::Int))
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

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Raw, E> {
        Ok(Raw::Str(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Raw::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: u32, column: u32) -> Position {
        Position { line, column }
    }

    #[test]
    fn empty_and_comment_only_files_have_no_document() {
        assert!(load("").unwrap().is_none());
        assert!(load("# nothing here\n\n").unwrap().is_none());
    }

    #[test]
    fn typed_plain_scalars_keep_their_text() {
        let root = load("- y\n- 007\n- 1.50\n- 0x10\n- '5'\n- 5\n")
            .unwrap()
            .unwrap();
        let Value::Seq(items) = root.value else {
            panic!("not a list")
        };
        let texts: Vec<_> = items.iter().map(|n| n.as_str().unwrap()).collect();
        assert_eq!(texts, ["y", "007", "1.50", "0x10", "5", "5"]);
        assert!(matches!(items[5].value, Value::Int(5)));
        assert!(matches!(items[4].value, Value::Str(_)));
    }

    #[test]
    fn nodes_know_their_positions() {
        let root = load("a:\n  - b: 1\n").unwrap().unwrap();
        let Value::Map(entries) = &root.value else {
            panic!("not a mapping")
        };
        assert_eq!(entries[0].0.at, at(1, 1));
        let Value::Seq(items) = &entries[0].1.value else {
            panic!("not a list")
        };
        assert_eq!(items[0].at, at(2, 5));
    }

    #[test]
    fn syntax_errors_are_one_line_with_the_parsers_position() {
        let e = load("a: [1, 2\n").unwrap_err();
        assert_eq!(e.at, at(1, 4));
        assert_eq!(e.message, "unclosed bracket '['");
        let e = load("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.at, at(2, 1));
        assert_eq!(e.message, "duplicate mapping key: a");
    }
}
