//! Reading the YAML that kiwipy writes (PyYAML, YAML 1.1) into JSON values.
//!
//! Built on a YAML event parser rather than a YAML value type, because the tags matter and
//! YAML value types drop them: `!!python/tuple` is a list, `!!set` a list of its members,
//! `!!binary` its base64 text, plumpy's `!uuid` (a pid) `{"$uuid": text}`, and any other
//! Python tag (an arbitrary object, a call) is refused rather than read as its plain data. Plain scalars are resolved as PyYAML resolves
//! them (YAML 1.1: `yes`/`on` are booleans, a float needs a `.`).

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::TScalarStyle;

/// Why a YAML text has no JSON value; the codec reports it as a
/// [`DecodeError`](super::codec::DecodeError).
#[derive(Debug)]
pub(crate) enum YamlError {
    /// Not YAML, or YAML this reader refuses (unbalanced, an unknown alias, too expanded).
    Syntax(String),
    /// Valid YAML with no JSON equivalent.
    Unsupported(String),
}

/// The tag prefix that `!!` stands for.
const CORE: &str = "tag:yaml.org,2002:";

/// Decodes one YAML document; at most `budget` nodes, aliases counted as often as they are
/// used.
pub(crate) fn to_json(text: &str, budget: usize) -> Result<Value, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut builder = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        documents: 0,
        budget,
    };
    loop {
        let (event, _) = parser
            .next_token()
            .map_err(|e| YamlError::Syntax(e.to_string()))?;
        if event == Event::StreamEnd {
            break;
        }
        builder.event(event)?;
    }
    Ok(builder.root.unwrap_or(Value::Null))
}

struct Builder {
    stack: Vec<Collection>,
    anchors: HashMap<usize, Value>,
    root: Option<Value>,
    documents: usize,
    budget: usize,
}

enum Collection {
    Sequence {
        items: Vec<Value>,
        anchor: usize,
    },
    Mapping {
        entries: Map<String, Value>,
        key: Option<String>,
        anchor: usize,
        /// A `!!set`: its keys are its members.
        set: bool,
    },
}

impl Builder {
    fn event(&mut self, event: Event) -> Result<(), YamlError> {
        match event {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(unsupported("more than one YAML document in a body"));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let value = scalar(text, style, tag.as_ref())?;
                self.add(value, anchor)?;
            }
            Event::SequenceStart(anchor, tag) => {
                check_sequence_tag(tag.as_ref())?;
                self.stack.push(Collection::Sequence {
                    items: Vec::new(),
                    anchor,
                });
            }
            Event::MappingStart(anchor, tag) => {
                let set = check_mapping_tag(tag.as_ref())?;
                self.stack.push(Collection::Mapping {
                    entries: Map::new(),
                    key: None,
                    anchor,
                    set,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, anchor) = match self.stack.pop() {
                    Some(Collection::Sequence { items, anchor }) => (Value::Array(items), anchor),
                    Some(Collection::Mapping {
                        entries,
                        anchor,
                        set,
                        ..
                    }) => {
                        let value = if set {
                            Value::Array(
                                entries.into_iter().map(|(k, _)| Value::String(k)).collect(),
                            )
                        } else {
                            Value::Object(entries)
                        };
                        (value, anchor)
                    }
                    None => return Err(YamlError::Syntax("unbalanced YAML".to_owned())),
                };
                self.add(value, anchor)?;
            }
            Event::Alias(anchor) => {
                let value = self.anchors.get(&anchor).cloned().ok_or_else(|| {
                    YamlError::Syntax(format!("an alias to an unknown anchor ({anchor})"))
                })?;
                self.spend(nodes(&value))?;
                self.attach(value)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn add(&mut self, value: Value, anchor: usize) -> Result<(), YamlError> {
        self.spend(1)?;
        if anchor != 0 {
            self.anchors.insert(anchor, value.clone());
        }
        self.attach(value)
    }

    fn spend(&mut self, count: usize) -> Result<(), YamlError> {
        self.budget = self.budget.checked_sub(count).ok_or_else(|| {
            unsupported("a body that expands to too many nodes (aliases repeated too often)")
        })?;
        Ok(())
    }

    fn attach(&mut self, value: Value) -> Result<(), YamlError> {
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Collection::Sequence { items, .. }) => items.push(value),
            Some(Collection::Mapping { entries, key, .. }) => match key.take() {
                None => *key = Some(key_text(value)?),
                Some(name) => {
                    entries.insert(name, value);
                }
            },
        }
        Ok(())
    }
}

fn unsupported(what: &str) -> YamlError {
    YamlError::Unsupported(what.to_owned())
}

/// The tag's name, with `!!` spelled out as PyYAML writes it.
fn tag_name(tag: &Tag) -> String {
    if tag.handle == CORE {
        format!("!!{}", tag.suffix)
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

fn core_suffix(tag: &Tag) -> Option<&str> {
    (tag.handle == CORE).then_some(tag.suffix.as_str())
}

fn refuse(tag: &Tag) -> YamlError {
    YamlError::Unsupported(format!(
        "the YAML tag {} (a Python object or a tag no peer understands; only !!python/tuple, \
         !!set, !!binary, !uuid and YAML's own types are read)",
        tag_name(tag)
    ))
}

fn check_sequence_tag(tag: Option<&Tag>) -> Result<(), YamlError> {
    match tag {
        None => Ok(()),
        Some(tag) => match core_suffix(tag) {
            Some("seq" | "python/tuple" | "python/list") => Ok(()),
            _ => Err(refuse(tag)),
        },
    }
}

/// Whether the mapping is a `!!set`.
fn check_mapping_tag(tag: Option<&Tag>) -> Result<bool, YamlError> {
    match tag {
        None => Ok(false),
        Some(tag) => match core_suffix(tag) {
            Some("map" | "python/dict") => Ok(false),
            Some("set") => Ok(true),
            _ => Err(refuse(tag)),
        },
    }
}

/// plumpy's tag for a pid (`yaml.add_representer(uuid.UUID, ...)` as `!uuid`).
fn is_uuid_tag(tag: &Tag) -> bool {
    tag.handle == "!" && tag.suffix == "uuid"
}

fn scalar(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Result<Value, YamlError> {
    if let Some(tag) = tag.filter(|tag| is_uuid_tag(tag)) {
        // Read as `{"$uuid": text}`, which is written back as `!uuid` (see `UUID_KEY`).
        return uuid::Uuid::parse_str(text.trim())
            .map(crate::messaging::uuid_value)
            .map_err(|e| {
                YamlError::Syntax(format!("{} {text:?} is not a UUID: {e}", tag_name(tag)))
            });
    }
    if let Some(tag) = tag {
        return match core_suffix(tag) {
            Some("str" | "python/str" | "python/unicode") => Ok(Value::String(text)),
            // The base64 text, without the line breaks PyYAML puts in long ones.
            Some("binary" | "python/bytes") => Ok(Value::String(
                text.chars().filter(|c| !c.is_whitespace()).collect(),
            )),
            Some("null") => Ok(Value::Null),
            Some("bool" | "python/bool") => boolean(&text)
                .map(Value::Bool)
                .ok_or_else(|| YamlError::Syntax(format!("{text:?} is not a boolean"))),
            Some("int" | "python/int") => integer(&text)
                .ok_or_else(|| YamlError::Syntax(format!("{text:?} is not an integer")))?,
            Some("float" | "python/float") => {
                float(&text).ok_or_else(|| YamlError::Syntax(format!("{text:?} is not a float")))?
            }
            _ => Err(refuse(tag)),
        };
    }
    if style != TScalarStyle::Plain {
        return Ok(Value::String(text));
    }
    resolve_plain(text)
}

/// PyYAML's implicit resolver (YAML 1.1).
fn resolve_plain(text: String) -> Result<Value, YamlError> {
    if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Value::Null);
    }
    if let Some(flag) = boolean(&text) {
        return Ok(Value::Bool(flag));
    }
    if let Some(number) = integer(&text) {
        return number;
    }
    if looks_like_float(&text)
        && let Some(number) = float(&text)
    {
        return number;
    }
    Ok(Value::String(text))
}

fn boolean(text: &str) -> Option<bool> {
    match text {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// A YAML 1.1 integer (decimal, `0x`, `0b`, or `0`-prefixed octal; `_` separators), or an
/// error for one JSON cannot hold; `None` if the text is not an integer.
fn integer(text: &str) -> Option<Result<Value, YamlError>> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let digits = digits.replace('_', "");
    let (radix, body) = if let Some(hex) = digits.strip_prefix("0x") {
        (16, hex)
    } else if let Some(binary) = digits.strip_prefix("0b") {
        (2, binary)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits.as_str())
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = match u128::from_str_radix(body, radix) {
        Ok(magnitude) => magnitude,
        Err(_) => return Some(Err(too_large(text))),
    };
    let value = if negative {
        match i64::try_from(magnitude) {
            Ok(m) => Value::from(-m),
            Err(_) if magnitude == 1 << 63 => Value::from(i64::MIN),
            Err(_) => return Some(Err(too_large(text))),
        }
    } else {
        match u64::try_from(magnitude) {
            Ok(m) => Value::from(m),
            Err(_) => return Some(Err(too_large(text))),
        }
    };
    Some(Ok(value))
}

fn too_large(text: &str) -> YamlError {
    YamlError::Unsupported(format!("the integer {text} (larger than 64 bits)"))
}

/// PyYAML reads a plain scalar as a float only with a `.` in it (or `.inf`, `.nan`).
fn looks_like_float(text: &str) -> bool {
    let body = text.trim_start_matches(['-', '+']);
    let decimal = body.contains('.')
        && (body.chars())
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '_' | 'e' | 'E' | '-' | '+'));
    decimal || matches!(body, ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN")
}

/// A float as JSON, or an error for one JSON cannot hold; `None` if the text is not a float.
fn float(text: &str) -> Option<Result<Value, YamlError>> {
    let body = text.trim_start_matches(['-', '+']);
    if matches!(body, ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN") {
        return Some(Err(YamlError::Unsupported(format!(
            "the float {text} (JSON has no infinities or NaN)"
        ))));
    }
    let parsed: f64 = text.replace('_', "").parse().ok()?;
    Some(
        Number::from_f64(parsed)
            .map(Value::Number)
            .ok_or_else(|| YamlError::Unsupported(format!("the float {text}"))),
    )
}

/// Mapping keys become strings, as Python's `json` writes them (`1: a` has the key `"1"`).
fn key_text(key: Value) -> Result<String, YamlError> {
    match key {
        Value::String(text) => Ok(text),
        Value::Null => Ok("null".to_owned()),
        Value::Bool(flag) => Ok(flag.to_string()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Array(_) | Value::Object(_) => Err(unsupported(
            "a mapping key that is a sequence or a mapping (JSON keys are strings)",
        )),
    }
}

/// How many nodes a value has (what repeating it through an alias costs).
fn nodes(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(nodes).sum::<usize>(),
        Value::Object(entries) => 1 + entries.values().map(nodes).sum::<usize>(),
        _ => 1,
    }
}
