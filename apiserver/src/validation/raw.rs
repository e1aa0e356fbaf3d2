//! JSON as the strict decoder sees it, and Go's ways of printing values in messages.
//!
//! [`Raw`] keeps every key of an object in order, duplicates included, so duplicates can be
//! reported before they collapse (last one wins, as in upstream's decoder).

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// A JSON value exactly as sent: object keys in order, duplicates kept.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Raw {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Raw>),
    Object(Vec<(String, Raw)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Raw, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> std::result::Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_bool<E>(self, b: bool) -> std::result::Result<Raw, E> {
                Ok(Raw::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> std::result::Result<Raw, E> {
                Ok(Raw::Number(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> std::result::Result<Raw, E> {
                Ok(Raw::Number(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> std::result::Result<Raw, E> {
                Ok(Number::from_f64(n).map_or(Raw::Null, Raw::Number))
            }
            fn visit_str<E>(self, s: &str) -> std::result::Result<Raw, E> {
                Ok(Raw::String(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> std::result::Result<Raw, E> {
                Ok(Raw::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> std::result::Result<Raw, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Raw::Array(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> std::result::Result<Raw, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = a.next_entry::<String, Raw>()? {
                    v.push((k, x));
                }
                Ok(Raw::Object(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl From<Value> for Raw {
    fn from(v: Value) -> Raw {
        match v {
            Value::Null => Raw::Null,
            Value::Bool(b) => Raw::Bool(b),
            Value::Number(n) => Raw::Number(n),
            Value::String(s) => Raw::String(s),
            Value::Array(a) => Raw::Array(a.into_iter().map(Raw::from).collect()),
            Value::Object(m) => Raw::Object(m.into_iter().map(|(k, x)| (k, x.into())).collect()),
        }
    }
}

impl From<Raw> for Value {
    /// Duplicate keys collapse to the last value.
    fn from(r: Raw) -> Value {
        match r {
            Raw::Null => Value::Null,
            Raw::Bool(b) => Value::Bool(b),
            Raw::Number(n) => Value::Number(n),
            Raw::String(s) => Value::String(s),
            Raw::Array(a) => Value::Array(a.into_iter().map(Value::from).collect()),
            Raw::Object(o) => Value::Object(o.into_iter().map(|(k, x)| (k, x.into())).collect()),
        }
    }
}

/// Go's `strconv.Quote`, which upstream's messages use.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%+v` of a decoded JSON value (`map[a:1 b:[x y]]`), as upstream shows a strategic
/// merge patch in its errors.
pub(crate) fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f != 0.0 && (f.abs() >= 1e21 || f.abs() < 1e-4) => {
                let s = format!("{f:e}");
                match s.split_once('e') {
                    Some((m, e)) if e.starts_with('-') => format!("{m}e-{:0>2}", &e[1..]),
                    Some((m, e)) => format!("{m}e+{e:0>2}"),
                    None => s,
                }
            }
            (None, Some(f)) => f.to_string(),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_value).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, x)| format!("{k}:{}", go_value(x)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}
