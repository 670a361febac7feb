//! YAML front end: a small node tree that remembers where every node came from.
//!
//! `yaml-rust2`'s own `Yaml` tree drops positions, so this drives its event parser with
//! `Parser::next_token` (iteratively: `Parser::load` recurses once per nesting level) and
//! builds [`Node`]s carrying a line and a column. On the way it substitutes `${NAME}` in
//! every scalar, resolves plain scalars with the YAML 1.2 core schema, expands aliases by
//! cloning, and reports duplicate keys. Nesting depth, total nodes and total scalar bytes
//! (aliases expanded) are capped so hostile input cannot exhaust the stack or memory.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::env::substitute;
use super::error::Problems;

/// Deeper nesting than this is refused (real compose files use about 6 levels).
const MAX_DEPTH: usize = 64;
/// Most nodes one file may expand to, counting every copy an alias makes.
const MAX_NODES: usize = 200_000;
/// Most scalar bytes (keys and values) one file may expand to, counting every copy an alias
/// makes, unless the file itself is larger: then [`EXPANSION_FACTOR`] times its size.
const MAX_EXPANDED_BYTES: usize = 32 << 20;
/// How many times its own size a file larger than [`MAX_EXPANDED_BYTES`] may expand to.
const EXPANSION_FACTOR: usize = 4;

/// The expansion budget of a file of `len` bytes.
fn byte_budget(len: usize) -> usize {
    MAX_EXPANDED_BYTES.max(len.saturating_mul(EXPANSION_FACTOR))
}

/// One YAML node and where it starts.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub value: Value,
    /// Scalar text after `${}` substitution (how `6` or `0x1F` was written); empty for
    /// collections.
    pub raw: String,
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in file order; keys are unique.
    Map(Vec<(Key, Node)>),
    /// A scalar whose `${}` substitution failed. The failure is already reported, so
    /// consumers skip this node without a second message.
    Invalid,
}

/// A mapping key: always a scalar, kept as text.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub text: String,
    pub line: usize,
    pub column: usize,
}

impl Node {
    /// The value under `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.text == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// How a message describes what was found here: `string "fast"`, `a sequence`, ...
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => format!("boolean {b}"),
            Value::Int(_) => format!("integer {}", self.raw),
            Value::Float(_) => format!("float {}", self.raw),
            Value::Str(s) if s.chars().count() > 40 => {
                format!("string {:?}...", s.chars().take(40).collect::<String>())
            }
            Value::Str(s) => format!("string {s:?}"),
            Value::Seq(_) => "a sequence".to_owned(),
            Value::Map(_) => "a mapping".to_owned(),
            Value::Invalid => "an invalid value".to_owned(),
        }
    }

    fn size(&self) -> usize {
        1 + match &self.value {
            Value::Seq(items) => items.iter().map(Node::size).sum(),
            Value::Map(entries) => entries.iter().map(|(_, v)| v.size()).sum::<usize>() + entries.len(),
            _ => 0,
        }
    }

    /// Scalar bytes in this node (keys included), as counted against the expansion budget.
    fn bytes(&self) -> usize {
        self.raw.len()
            + match &self.value {
                Value::Seq(items) => items.iter().map(Node::bytes).sum(),
                Value::Map(entries) => entries.iter().map(|(k, v)| k.text.len() + v.bytes()).sum(),
                _ => 0,
            }
    }
}

/// An anchored node and what one more copy of it costs.
struct Anchored {
    node: Node,
    nodes: usize,
    bytes: usize,
}

impl Anchored {
    fn new(node: &Node) -> Self {
        Anchored { node: node.clone(), nodes: node.size(), bytes: node.bytes() }
    }
}

/// A collection still being read.
struct Frame {
    anchor: usize,
    line: usize,
    column: usize,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    /// `pending`: `Some(Some(key))` once a key is read, `Some(None)` when the key was
    /// unusable (already reported) and its value must be skipped.
    Map {
        entries: Vec<(Key, Node)>,
        pending: Option<Option<Key>>,
    },
}

/// Parses one YAML document into a tree. Returns `None` (with a problem recorded) when the
/// text is not YAML; an empty document yields a null node.
pub(crate) fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>, problems: &mut Problems) -> Option<Node> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser::new_from_str(text);
    let mut tree = Tree {
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        nodes: 0,
        bytes: 0,
        budget: byte_budget(text.len()),
        env,
        problems,
    };
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(next) => next,
            Err(e) => {
                tree.problems.push(e.marker().line(), e.marker().col() + 1, syntax_error(text, &e));
                return None;
            }
        };
        match tree.event(event, mark)? {
            Flow::Go => {}
            Flow::End => break,
        }
    }
    Some(tree.root.unwrap_or(Node { value: Value::Null, raw: String::new(), line: 1, column: 1 }))
}

/// The text of a YAML syntax error, with a hint for `${NAME}` inside a flow collection.
fn syntax_error(text: &str, e: &yaml_rust2::scanner::ScanError) -> String {
    let near = text.lines().nth(e.marker().line().saturating_sub(1)).unwrap_or_default();
    let hint = if e.info().contains("flow") && near.contains("${") {
        " (inside `{...}` or `[...]`, quote `\"${NAME}\"`, or use block style where a number is expected)"
    } else {
        ""
    };
    format!("invalid YAML: {}{hint}", e.info())
}

/// Whether to read on after an event.
enum Flow {
    Go,
    End,
}

/// The tree being built from parser events, with the budgets that bound it.
struct Tree<'a> {
    /// Collections still open, innermost last.
    stack: Vec<Frame>,
    /// Completed anchored nodes by anchor id, for aliases.
    anchors: HashMap<usize, Anchored>,
    root: Option<Node>,
    /// Nodes so far, aliases expanded (at most [`MAX_NODES`]).
    nodes: usize,
    /// Scalar bytes so far, aliases expanded (at most `budget`).
    bytes: usize,
    budget: usize,
    env: &'a dyn Fn(&str) -> Option<String>,
    problems: &'a mut Problems,
}

impl Tree<'_> {
    /// Takes one event; `None` when the document must be refused (a problem is recorded).
    fn event(&mut self, event: Event, mark: Marker) -> Option<Flow> {
        let (line, column) = (mark.line(), mark.col() + 1);
        let done = match event {
            Event::StreamEnd => return Some(Flow::End),
            Event::DocumentStart if self.root.is_some() => {
                self.problems.push(line, column, "only one YAML document is allowed (remove the `---`)");
                return Some(Flow::End);
            }
            Event::Nothing | Event::StreamStart | Event::DocumentStart | Event::DocumentEnd => None,
            Event::Alias(id) => self.alias(id, line, column)?,
            Event::Scalar(text, style, anchor, tag) => {
                self.nodes += 1;
                let node = scalar(&text, style, tag.as_ref(), mark, self.env, self.problems);
                self.bytes = self.bytes.saturating_add(node.raw.len());
                if anchor > 0 {
                    self.anchors.insert(anchor, Anchored::new(&node));
                }
                Some(node)
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.problems.push(line, column, format!("nesting deeper than {MAX_DEPTH} levels"));
                    return None;
                }
                let kind = if matches!(event, Event::SequenceStart(..)) {
                    FrameKind::Seq(Vec::new())
                } else {
                    FrameKind::Map { entries: Vec::new(), pending: None }
                };
                self.stack.push(Frame { anchor, line, column, kind });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => self.stack.pop().map(|frame| {
                self.nodes += 1;
                let anchor = frame.anchor;
                let node = close(frame);
                if anchor > 0 {
                    self.anchors.insert(anchor, Anchored::new(&node));
                }
                node
            }),
        };
        if self.nodes > MAX_NODES {
            let msg = format!("document too large (more than {MAX_NODES} nodes, aliases expanded)");
            self.problems.push(line, column, msg);
            return None;
        }
        if let Some(node) = done {
            match self.stack.last_mut() {
                Some(frame) => add_child(frame, node, self.problems),
                None => self.root = Some(node),
            }
        }
        Some(Flow::Go)
    }

    /// A copy of the anchored node, counted against the budgets before it is made (so a
    /// refused alias allocates nothing); `Some(None)` when the node count is already over.
    fn alias(&mut self, id: usize, line: usize, column: usize) -> Option<Option<Node>> {
        let Some(anchored) = self.anchors.get(&id) else {
            let msg = "alias refers to an anchor that is not complete here (recursive alias)";
            self.problems.push(line, column, msg);
            return None;
        };
        self.nodes += anchored.nodes;
        self.bytes = self.bytes.saturating_add(anchored.bytes);
        if self.bytes > self.budget {
            let budget = self.budget;
            self.problems.push(
                line,
                column,
                format!(
                    "document too large: this alias expands the scalars to more than {budget} bytes \
                     (the limit is the larger of {MAX_EXPANDED_BYTES} bytes and {EXPANSION_FACTOR} times \
                     the file's size)"
                ),
            );
            return None;
        }
        if self.nodes > MAX_NODES {
            return Some(None);
        }
        let mut copy = anchored.node.clone();
        copy.line = line;
        copy.column = column;
        Some(Some(copy))
    }
}

/// Turns a finished collection into a node, placed at its first child when that comes
/// earlier (block collections are reported one column after their first key otherwise).
fn close(frame: Frame) -> Node {
    let (mut line, mut column) = (frame.line, frame.column);
    let first = match &frame.kind {
        FrameKind::Seq(items) => items.first().map(|n| (n.line, n.column)),
        FrameKind::Map { entries, .. } => entries.first().map(|(k, _)| (k.line, k.column)),
    };
    if let Some(first) = first
        && first < (line, column)
    {
        (line, column) = first;
    }
    let value = match frame.kind {
        FrameKind::Seq(items) => Value::Seq(items),
        FrameKind::Map { entries, .. } => Value::Map(entries),
    };
    Node { value, raw: String::new(), line, column }
}

fn add_child(frame: &mut Frame, node: Node, problems: &mut Problems) {
    match &mut frame.kind {
        FrameKind::Seq(items) => items.push(node),
        FrameKind::Map { entries, pending } => match pending.take() {
            None => {
                let key = match node.value {
                    Value::Seq(_) | Value::Map(_) => {
                        problems.push(node.line, node.column, "mapping keys must be plain scalars");
                        None
                    }
                    Value::Invalid => None,
                    Value::Null => Some(Key { text: String::new(), line: node.line, column: node.column }),
                    _ => Some(Key { text: node.raw, line: node.line, column: node.column }),
                };
                *pending = Some(key);
            }
            Some(None) => {}
            Some(Some(key)) => {
                if let Some((first, _)) = entries.iter().find(|(k, _)| k.text == key.text) {
                    let msg = format!("duplicate key `{}` (first defined on line {})", key.text, first.line);
                    problems.push(key.line, key.column, msg);
                } else {
                    entries.push((key, node));
                }
            }
        },
    }
}

/// Builds a scalar node: substitutes `${}` first, then resolves plain scalars by schema.
fn scalar(
    text: &str,
    style: TScalarStyle,
    tag: Option<&Tag>,
    mark: Marker,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Node {
    let (line, column) = (mark.line(), mark.col() + 1);
    let raw = match substitute(text, env) {
        Ok(raw) => raw,
        Err(errors) => {
            for e in errors {
                problems.push(line, column, e);
            }
            return Node { value: Value::Invalid, raw: text.to_owned(), line, column };
        }
    };
    let explicit_str = tag.is_some_and(|t| t.handle == "tag:yaml.org,2002:" && t.suffix == "str");
    let value = if style == TScalarStyle::Plain && !explicit_str { resolve(&raw) } else { Value::Str(raw.clone()) };
    Node { value, raw, line, column }
}

/// YAML 1.2 core schema for plain scalars: null, booleans, integers, floats, else string.
fn resolve(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") {
        return Value::Float(if negative { f64::NEG_INFINITY } else { f64::INFINITY });
    }
    if !unsigned.is_empty()
        && unsigned.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = s.parse::<i128>()
    {
        return Value::Int(n);
    }
    for (prefix, radix) in [("0o", 8), ("0x", 16)] {
        if let Some(digits) = s.strip_prefix(prefix)
            && !digits.starts_with(['+', '-'])
            && let Ok(n) = i128::from_str_radix(digits, radix)
        {
            return Value::Int(n);
        }
    }
    if is_float(unsigned)
        && let Ok(f) = s.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(s.to_owned())
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` without the sign.
fn is_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac {
        None => !int.is_empty() && digits(int),
        Some(f) => digits(int) && digits(f) && !(int.is_empty() && f.is_empty()),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> String {
        format!("{:?}", resolve(s))
    }

    #[test]
    fn core_schema() {
        assert_eq!(value("~"), "Null");
        assert_eq!(value("True"), "Bool(true)");
        assert_eq!(value("-12"), "Int(-12)");
        assert_eq!(value("0x1F"), "Int(31)");
        assert_eq!(value("0o17"), "Int(15)");
        assert_eq!(value("1.5e3"), "Float(1500.0)");
        assert_eq!(value(".5"), "Float(0.5)");
        assert_eq!(value("-.inf"), "Float(-inf)");
        assert_eq!(value("5s"), "Str(\"5s\")");
        assert_eq!(value("0x-1"), "Str(\"0x-1\")");
        assert_eq!(value("1_000"), "Str(\"1_000\")");
        assert_eq!(value("yes"), "Str(\"yes\")");
    }
}
