//! A capped JSON5 reader: OpenClaw's config files are JSON5 (comments, trailing commas,
//! unquoted keys) even when named `.json`. The grammar is the `json5` crate's; what this module
//! adds is what an untrusted input needs: a size cap checked before parsing, a nesting cap
//! checked before each descent (the crate's recursive descent has none, so a deep input would
//! overflow the stack), objects that keep their keys' order for the report, and duplicate keys
//! refused (a second `network` must not silently win over the first).

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// Inputs larger than this are refused before parsing.
pub const MAX_INPUT_BYTES: usize = 1 << 20;
/// Objects and arrays nested deeper than this are refused (OpenClaw's deepest sandbox key is
/// six levels down).
pub const MAX_DEPTH: usize = 64;

/// A JSON5 number as written: integers stay exact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i64),
    Uint(u64),
    Float(f64),
}

impl Number {
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(n) => n as f64,
            Number::Uint(n) => n as f64,
            Number::Float(f) => f,
        }
    }

    /// The value as a whole number, if it is one (`3`, `3.0`), else `None`.
    pub fn as_i64(self) -> Option<i64> {
        match self {
            Number::Int(n) => Some(n),
            Number::Uint(n) => i64::try_from(n).ok(),
            Number::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
            Number::Float(_) => None,
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(n) => write!(f, "{n}"),
            Number::Uint(n) => write!(f, "{n}"),
            Number::Float(x) => write!(f, "{x}"),
        }
    }
}

/// A parsed JSON5 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Value>),
    Object(Object),
}

/// An object's members in the order written; keys are unique.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object(Vec<(String, Value)>);

impl Object {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Value {
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<Number> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum Json5Error {
    #[error("larger than {limit} bytes ({size} bytes)")]
    TooLarge { size: usize, limit: usize },
    #[error("not JSON5: {message}")]
    Syntax { message: String },
}

/// Parses `text` as one JSON5 value (a leading byte-order mark is skipped; anything after the
/// value but whitespace and comments is an error).
pub fn parse(text: &str) -> Result<Value, Json5Error> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(Json5Error::TooLarge {
            size: text.len(),
            limit: MAX_INPUT_BYTES,
        });
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    json5::from_str::<Value>(text).map_err(|e| Json5Error::Syntax {
        message: e.to_string(),
    })
}

impl<'de> de::Deserialize<'de> for Value {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        Seed { depth: 0 }.deserialize(deserializer)
    }
}

/// Deserializes one value `depth` containers down.
#[derive(Clone, Copy)]
struct Seed {
    depth: usize,
}

impl Seed {
    /// The seed for a container's members, refused before the parser descends.
    fn inner<E: de::Error>(self) -> Result<Seed, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Seed {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON5 value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(Number::Int(n)))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(Number::Uint(n)))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Value::Number(Number::Float(n)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.inner()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.inner()?;
        let mut members: Vec<(String, Value)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {key:?} (which one was meant?)"
                )));
            }
            let value = map.next_value_seed(inner)?;
            members.push((key, value));
        }
        Ok(Value::Object(Object(members)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn json5_syntax_is_read() {
        let v = parse(
            "\u{feff}// comment\n{ a: 1, 'b': [true, null, 'x',], \"c\": { d: -2.5 }, /* c */ e: 0x10, }",
        )
        .unwrap();
        let o = v.as_object().unwrap();
        let keys: Vec<&str> = o.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b", "c", "e"]);
        assert_eq!(o.get("a"), Some(&Value::Number(Number::Uint(1))));
        assert_eq!(
            o.get("b"),
            Some(&Value::Array(vec![
                Value::Bool(true),
                Value::Null,
                Value::String("x".into())
            ]))
        );
        let c = o.get("c").and_then(Value::as_object).unwrap();
        assert_eq!(
            c.get("d").and_then(Value::as_number).map(Number::as_f64),
            Some(-2.5)
        );
        assert_eq!(
            o.get("e")
                .and_then(Value::as_number)
                .and_then(Number::as_i64),
            Some(16)
        );
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let err = parse("{ network: 'none', network: 'host' }").unwrap_err();
        assert!(
            err.to_string().contains("duplicate key \"network\""),
            "{err}"
        );
        // The same name in different objects is fine.
        assert!(parse("{ a: { network: 1 }, b: { network: 2 } }").is_ok());
    }

    #[test]
    fn trailing_values_are_refused() {
        assert!(parse("{} // fine").is_ok());
        assert!(parse("{} {}").is_err());
        assert!(parse("{a: 1} x").is_err());
    }

    #[test]
    fn nesting_is_capped_before_descent() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let err = parse(&deep).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
        // Far deeper than any stack allows: refused, not a stack overflow.
        let bomb = "{a:".repeat(200_000);
        assert!(parse(&bomb)
            .unwrap_err()
            .to_string()
            .contains("nested deeper"));
    }

    #[test]
    fn size_is_capped_before_parsing() {
        let big = format!("\"{}\"", "x".repeat(MAX_INPUT_BYTES));
        assert_eq!(
            parse(&big),
            Err(Json5Error::TooLarge {
                size: MAX_INPUT_BYTES + 2,
                limit: MAX_INPUT_BYTES
            })
        );
    }

    fn depth(v: &Value) -> usize {
        match v {
            Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            Value::Object(o) => 1 + o.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn json5_ish() -> impl Strategy<Value = String> {
        // Fragments of JSON5 shuffled together reach far more of the grammar than random bytes.
        let piece = prop_oneof![
            Just("{".to_string()),
            Just("}".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just(",".to_string()),
            Just(":".to_string()),
            Just("//c\n".to_string()),
            Just("/*".to_string()),
            Just("*/".to_string()),
            Just("'s'".to_string()),
            Just("\"\\u00e9\"".to_string()),
            Just("key".to_string()),
            Just("0x1F".to_string()),
            Just("-.5e3".to_string()),
            Just("Infinity".to_string()),
            Just("NaN".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            "[ -~]{0,4}",
            "\\PC{0,2}",
        ];
        prop::collection::vec(piece, 0..64).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,256}") {
            let _ = parse(&text);
        }

        #[test]
        fn json5_fragments_never_panic_and_respect_the_depth_cap(text in json5_ish()) {
            if let Ok(v) = parse(&text) {
                prop_assert!(depth(&v) <= MAX_DEPTH);
            }
        }

        #[test]
        fn deep_nesting_is_an_error_not_a_crash(n in (MAX_DEPTH + 1)..(MAX_DEPTH * 40), open in prop_oneof![Just("["), Just("{a:")]) {
            let text = open.repeat(n);
            let err = parse(&text).unwrap_err();
            prop_assert!(err.to_string().contains("nested deeper"), "{}", err);
        }
    }
}
