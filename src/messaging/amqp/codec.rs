//! Message bodies on the wire: written as JSON that PyYAML reads back unchanged, read as JSON or
//! as the YAML that kiwipy writes.
//!
//! kiwipy encodes with PyYAML and decodes with PyYAML's YAML 1.1 loader, which accepts JSON, so
//! JSON is the common language. Two details of YAML 1.1 need care when writing it: a float must
//! have a `.` and a signed exponent to be read as a float (`1e100` would be read as a string),
//! and PyYAML refuses or folds a few characters that JSON may leave unescaped (C1 controls, the
//! Unicode line separators, U+FFFE/FFFF), so those are written as `\u` escapes.

use std::io;

use super::yaml;
use crate::messaging::message::tagged_uuid;

use serde_json::Value;
use serde_json::ser::Formatter;

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Larger than the configured limit.
    #[error("the body is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Neither JSON nor YAML.
    #[error("the body is neither JSON nor YAML: {0}")]
    Syntax(String),
    /// Valid YAML that has no JSON equivalent (a Python object, a non-finite float, ...).
    #[error("the body has no JSON equivalent: {0}")]
    Unsupported(String),
}

/// Encodes a value as JSON bytes that PyYAML decodes to the same value.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    if holds_uuid(value) {
        write_with_uuids(&mut out, value);
        return out;
    }
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, YamlSafe);
    // Writing a `Value` into a `Vec` cannot fail: its keys are strings and its numbers finite.
    if serde::Serialize::serialize(value, &mut serializer).is_err() {
        out.clear();
        out.extend_from_slice(b"null");
    }
    out
}

/// Whether `value` holds a `{"$uuid": text}` mapping anywhere, which JSON cannot carry as such.
fn holds_uuid(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(holds_uuid),
        Value::Object(entries) => tagged_uuid(value).is_some() || entries.values().any(holds_uuid),
        _ => false,
    }
}

/// Writes `value` as [`encode`] does, but each `{"$uuid": text}` as plumpy's `!uuid` scalar:
/// JSON in YAML flow style with tags, which PyYAML (and this crate's reader) read.
fn write_with_uuids(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (at, item) in items.iter().enumerate() {
                if at > 0 {
                    out.push(b',');
                }
                write_with_uuids(out, item);
            }
            out.push(b']');
        }
        Value::Object(entries) => {
            if let Some(uuid) = tagged_uuid(value) {
                out.extend_from_slice(format!("!uuid '{uuid}'").as_bytes());
                return;
            }
            out.push(b'{');
            for (at, (key, item)) in entries.iter().enumerate() {
                if at > 0 {
                    out.push(b',');
                }
                write_plain(out, &Value::String(key.clone()));
                // A space after the colon: before a tag, YAML wants one.
                out.extend_from_slice(b": ");
                write_with_uuids(out, item);
            }
            out.push(b'}');
        }
        scalar => write_plain(out, scalar),
    }
}

/// Appends a value with no UUID in it, as [`encode`] writes one.
fn write_plain(out: &mut Vec<u8>, value: &Value) {
    let mut serializer = serde_json::Serializer::with_formatter(&mut *out, YamlSafe);
    if serde::Serialize::serialize(value, &mut serializer).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// Decodes a body: JSON first (what this crate and most peers send), then YAML (what kiwipy
/// sends by default). Bodies over `limit` bytes are refused before parsing.
///
/// # Errors
///
/// [`DecodeError::TooLarge`] over `limit`; [`DecodeError::Syntax`] for a body that is neither JSON
/// nor YAML; [`DecodeError::Unsupported`] for YAML with no JSON equivalent.
pub fn decode(body: &[u8], limit: usize) -> Result<Value, DecodeError> {
    if body.len() > limit {
        return Err(DecodeError::TooLarge {
            size: body.len(),
            limit,
        });
    }
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let text =
        std::str::from_utf8(body).map_err(|e| DecodeError::Syntax(format!("not UTF-8 ({e})")))?;
    // Aliases can repeat a node many times over: bound what a body may expand to.
    yaml::to_json(text, 16 * body.len() + 1024).map_err(|error| match error {
        yaml::YamlError::Syntax(reason) => DecodeError::Syntax(reason),
        yaml::YamlError::Unsupported(reason) => DecodeError::Unsupported(reason),
    })
}

/// Compact JSON, except that floats always have a `.` and a signed exponent, and the
/// characters PyYAML's reader refuses are escaped.
struct YamlSafe;

impl Formatter for YamlSafe {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        // Debug is the shortest text that reads back as the same float.
        writer.write_all(yaml_float(&format!("{value:?}")).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(writer, f64::from(value))
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (at, c) in fragment.char_indices() {
            if unsafe_in_yaml(c) {
                writer.write_all(&fragment.as_bytes()[start..at])?;
                write!(writer, "\\u{:04x}", u32::from(c))?;
                start = at + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// `1e100` -> `1.0e+100`, `2.5e-7` stays with its sign, `3.0` unchanged: YAML 1.1's float
/// pattern needs a `.` in the mantissa and a sign in the exponent.
fn yaml_float(text: &str) -> String {
    let Some((mantissa, exponent)) = text.split_once('e') else {
        return text.to_owned();
    };
    let dot = if mantissa.contains('.') { "" } else { ".0" };
    let sign = if exponent.starts_with('-') { "" } else { "+" };
    format!("{mantissa}{dot}e{sign}{exponent}")
}

/// Characters PyYAML refuses in a stream (outside its printable set) or reads as line breaks,
/// which would fold inside a quoted string; serde_json escapes C0 controls itself.
fn unsafe_in_yaml(c: char) -> bool {
    matches!(
        c,
        '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LIMIT: usize = 1 << 20;

    #[test]
    fn floats_are_written_as_yaml_floats() {
        assert_eq!(yaml_float("1e100"), "1.0e+100");
        assert_eq!(yaml_float("1.5e-7"), "1.5e-7");
        assert_eq!(yaml_float("2.5"), "2.5");
        let bytes = encode(&json!([1e100, 1.5e-7, 0.1, 3.0, -2e20]));
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "[1.0e+100,1.5e-7,0.1,3.0,-2.0e+20]"
        );
        assert_eq!(
            decode(&bytes, LIMIT).unwrap(),
            json!([1e100, 1.5e-7, 0.1, 3.0, -2e20])
        );
    }

    #[test]
    fn characters_yaml_refuses_or_folds_are_escaped() {
        let text = "a\u{85}b\u{9f}c\u{ffff}d\u{2028}e é 😀";
        let bytes = encode(&json!(text));
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "\"a\\u0085b\\u009fc\\uffffd\\u2028e é 😀\""
        );
        assert_eq!(decode(&bytes, LIMIT).unwrap(), json!(text));
    }

    #[test]
    fn kiwipy_yaml_bodies_decode() {
        let request = b"a: 1\nl:\n- 1\n- 2.5\n- null\n- true\nt: !!python/tuple\n- 1\n- 2\n";
        assert_eq!(
            decode(request, LIMIT).unwrap(),
            json!({"a": 1, "l": [1, 2.5, null, true], "t": [1, 2]})
        );
        assert_eq!(decode(b"x\n...\n", LIMIT).unwrap(), json!("x"));
        assert_eq!(decode(b"null\n...\n", LIMIT).unwrap(), json!(null));
        assert_eq!(
            decode(b"!!python/tuple\n- 21\n- false\n", LIMIT).unwrap(),
            json!([21, false])
        );
        let broadcast = b"body:\n  k: v\ncorrelation_id: cid-1\nsender: me\nsubject: sub.ject\n";
        assert_eq!(
            decode(broadcast, LIMIT).unwrap(),
            json!({"body": {"k": "v"}, "correlation_id": "cid-1", "sender": "me", "subject": "sub.ject"})
        );
        assert_eq!(decode(b"caf\\xE9\n", LIMIT).unwrap(), json!("caf\\xE9"));
        assert_eq!(decode(b"\"caf\\xE9\"\n", LIMIT).unwrap(), json!("café"));
        assert_eq!(
            decode(b"x: 1.0e+100\n", LIMIT).unwrap(),
            json!({"x": 1e100})
        );
        assert_eq!(decode(b"1: a\n", LIMIT).unwrap(), json!({"1": "a"}));
        assert_eq!(
            decode(b"!!binary |\n  aGVs\n  bG8=\n", LIMIT).unwrap(),
            json!("aGVsbG8=")
        );
        // PyYAML's YAML 1.1: these plain scalars are booleans and octal, and an anchored
        // value used twice appears twice.
        assert_eq!(
            decode(b"a: yes\nb: off\nc: 010\nd: 0x1F\ne: ~\nf: 1e5\n", LIMIT).unwrap(),
            json!({"a": true, "b": false, "c": 8, "d": 31, "e": null, "f": "1e5"})
        );
        assert_eq!(
            decode(b"a: &id001 [1, 2]\nb: *id001\n", LIMIT).unwrap(),
            json!({"a": [1, 2], "b": [1, 2]})
        );
        assert_eq!(decode(b"!!set {a: null}\n", LIMIT).unwrap(), json!(["a"]));
    }

    #[test]
    fn plumpys_uuid_tag_reads_as_a_uuid_value_and_is_written_back() {
        let body = b"{intent: status, pid: !uuid 'B1E9B8A2-5D43-4E0C-9C2D-3E4F5A6B7C8D'}\n";
        let pid = "b1e9b8a2-5d43-4e0c-9c2d-3e4f5a6b7c8d";
        let read = decode(body, LIMIT).unwrap();
        assert_eq!(read, json!({"intent": "status", "pid": {"$uuid": pid}}));
        let written = encode(&read);
        assert_eq!(
            std::str::from_utf8(&written).unwrap(),
            format!("{{\"intent\": \"status\",\"pid\": !uuid '{pid}'}}")
        );
        assert_eq!(decode(&written, LIMIT).unwrap(), read);
        let nested = json!([{"$uuid": pid}, {"$uuid": pid, "other": 1}, {"$uuid": "no"}, 1.5e300]);
        assert_eq!(decode(&encode(&nested), LIMIT).unwrap(), nested);
        assert_eq!(
            decode(&encode(&json!({"$uuid": pid})), LIMIT).unwrap(),
            json!({"$uuid": pid})
        );
        let error = decode(b"!uuid not-a-uuid\n", LIMIT).unwrap_err();
        assert!(matches!(error, DecodeError::Syntax(_)), "{error}");
        assert!(error.to_string().contains("!uuid"), "{error}");
    }

    #[test]
    fn undecodable_bodies_are_clear_errors() {
        assert!(matches!(
            decode(b"{\"a\": [1, 2", LIMIT),
            Err(DecodeError::Syntax(_))
        ));
        assert!(matches!(
            decode(&[0xff, 0xfe, 0x00], LIMIT),
            Err(DecodeError::Syntax(_))
        ));
        let object = b"!!python/object:os.system {}\n";
        let error = decode(object, LIMIT).unwrap_err();
        assert!(matches!(error, DecodeError::Unsupported(_)), "{error}");
        assert!(error.to_string().contains("python/object"), "{error}");
        assert!(matches!(
            decode(b".inf\n", LIMIT),
            Err(DecodeError::Unsupported(_))
        ));
        let call = b"a: !!python/object/apply:os.system ['ls']\n";
        assert!(matches!(
            decode(call, LIMIT),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(matches!(
            decode(b"x: 99999999999999999999999\n", LIMIT),
            Err(DecodeError::Unsupported(_))
        ));
        // A billion laughs: each level doubles the one before.
        let mut bomb = String::from("a0: &a0 [x, x]\n");
        for level in 1..40 {
            bomb.push_str(&format!(
                "a{level}: &a{level} [*a{}, *a{}]\n",
                level - 1,
                level - 1
            ));
        }
        let error = decode(bomb.as_bytes(), LIMIT).unwrap_err();
        assert!(error.to_string().contains("too many nodes"), "{error}");
        assert_eq!(
            decode(&[b' '; 11], 10),
            Err(DecodeError::TooLarge {
                size: 11,
                limit: 10
            })
        );
    }
}
