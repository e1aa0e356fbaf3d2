//! The protobuf wire format, and one message of the schema turned into Go's JSON for it.
//!
//! Go's rules, which the JSON must follow: a struct field is always written (`omitempty` has
//! no effect on structs: an empty `status` is `{}`, a zero `Time` is `null`); a scalar, list
//! or map with `omitempty` is left out when zero or empty, unless it is a pointer; one
//! without `omitempty` is always written (a nil list or map as `null`); an inlined struct's
//! fields join its parent's. Go's marshaller writes every non-pointer field, so the wire
//! carries what the rules need; a required field missing from it is written as Go's zero.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::schema::{Field, Ty, SCHEMA};
use crate::error::{Error, Result};

pub(super) fn malformed(what: &str) -> Error {
    Error::BadRequest(format!("the protobuf body could not be decoded: {what}"))
}

/// One wire field's value.
#[derive(Clone, Copy)]
pub(super) enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed64(u64),
    Fixed32,
}

fn varint(buf: &mut &[u8]) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf
            .split_first()
            .ok_or_else(|| malformed("truncated varint"))?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(malformed("varint too long"))
}

/// Every field of a message, in wire order.
pub(super) fn fields(mut buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let take = |buf: &mut &[u8], n: usize| -> Result<u64> {
            let b = buf.get(..n).ok_or_else(|| malformed("truncated field"))?;
            *buf = &buf[n..];
            Ok(b.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
        };
        let w = match key & 7 {
            0 => Wire::Varint(varint(&mut buf)?),
            1 => Wire::Fixed64(take(&mut buf, 8)?),
            5 => {
                take(&mut buf, 4)?;
                Wire::Fixed32
            }
            2 => {
                let n =
                    usize::try_from(varint(&mut buf)?).map_err(|_| malformed("field too long"))?;
                let b = buf.get(..n).ok_or_else(|| malformed("truncated field"))?;
                buf = &buf[n..];
                Wire::Bytes(b)
            }
            _ => return Err(malformed("unsupported wire type")),
        };
        out.push((key >> 3, w));
    }
    Ok(out)
}

fn utf8(b: &[u8]) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| malformed("a string is not UTF-8"))
}

fn varint_of(buf: &[u8], num: u64) -> Result<i64> {
    Ok(fields(buf)?
        .iter()
        .rev()
        .find_map(|(n, w)| match w {
            Wire::Varint(v) if *n == num => Some(*v as i64),
            _ => None,
        })
        .unwrap_or(0))
}

fn bytes_of(buf: &[u8], num: u64) -> Result<Option<&[u8]>> {
    Ok(fields(buf)?.iter().rev().find_map(|(n, w)| match w {
        Wire::Bytes(b) if *n == num => Some(*b),
        _ => None,
    }))
}

/// Go's zero value of a field that is absent (a missing map value, a required field).
fn zero(ty: Ty) -> Result<Value> {
    match ty {
        Ty::Str | Ty::Bytes => Ok(json!("")),
        Ty::Bool => Ok(json!(false)),
        Ty::Int => Ok(json!(0)),
        Ty::Double => Ok(json!(0.0)),
        _ => value(ty, Wire::Bytes(&[])),
    }
}

/// One value of type `ty` from its wire form.
pub(super) fn value(ty: Ty, w: Wire<'_>) -> Result<Value> {
    Ok(match (ty, w) {
        (Ty::Str, Wire::Bytes(b)) => json!(utf8(b)?),
        (Ty::Bytes, Wire::Bytes(b)) => json!(STANDARD.encode(b)),
        (Ty::Bool, Wire::Varint(v)) => json!(v != 0),
        (Ty::Int, Wire::Varint(v)) => json!(v as i64),
        (Ty::Double, Wire::Fixed64(v)) => json!(f64::from_bits(v)),
        (Ty::Msg(m), Wire::Bytes(b)) => Value::Object(message(m, b)?),
        (Ty::Time | Ty::MicroTime, Wire::Bytes(b)) => {
            let (secs, nanos) = (varint_of(b, 1)?, varint_of(b, 2)?);
            match (secs, nanos, ty) {
                (0, 0, _) => Value::Null,
                (s, _, Ty::Time) => json!(crate::time::rfc3339(s)),
                (s, n, _) => {
                    let t = crate::time::rfc3339(s);
                    json!(format!("{}.{:06}Z", &t[..t.len() - 1], n / 1000))
                }
            }
        }
        (Ty::Duration, Wire::Bytes(b)) => json!(go_duration(varint_of(b, 1)?)),
        (Ty::IntStr, Wire::Bytes(b)) => match varint_of(b, 1)? {
            1 => json!(utf8(bytes_of(b, 3)?.unwrap_or_default())?),
            _ => json!(varint_of(b, 2)? as i32),
        },
        (Ty::Quantity, Wire::Bytes(b)) => match bytes_of(b, 1)? {
            Some(s) if !s.is_empty() => json!(utf8(s)?),
            _ => json!("0"),
        },
        (Ty::StrList, Wire::Bytes(b)) => {
            let mut items = Vec::new();
            for (n, w) in fields(b)? {
                if let (1, Wire::Bytes(s)) = (n, w) {
                    items.push(json!(utf8(s)?));
                }
            }
            Value::Array(items)
        }
        (Ty::Raw, Wire::Bytes(b)) => match bytes_of(b, 1)? {
            None | Some([]) => Value::Null,
            Some(raw) if raw.starts_with(super::MAGIC) => super::decode(raw)?,
            Some(raw) => serde_json::from_slice(raw).map_err(|_| malformed("embedded JSON"))?,
        },
        _ => return Err(malformed("a field has the wrong wire type")),
    })
}

/// Go's `time.Duration.String()` of `nanos`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let frac = |v: u64, digits: u32| {
        let s = format!("{:0width$}", v, width = digits as usize);
        let s = s.trim_end_matches('0');
        if s.is_empty() {
            String::new()
        } else {
            format!(".{s}")
        }
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}{}µs", n / 1_000, frac(n % 1_000, 3));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}{}ms", n / 1_000_000, frac(n % 1_000_000, 6));
    }
    let (secs, sub) = (n / 1_000_000_000, n % 1_000_000_000);
    let s = format!("{}{}s", secs % 60, frac(sub, 9));
    match (secs / 3600, (secs / 60) % 60) {
        (0, 0) => format!("{sign}{s}"),
        (0, m) => format!("{sign}{m}m{s}"),
        (h, m) => format!("{sign}{h}h{m}m{s}"),
    }
}

/// Whether `omitempty` drops `v` (scalars only: Go never omits a struct).
fn omitted(ty: Ty, v: &Value) -> bool {
    match (ty, v) {
        (Ty::Str | Ty::Bytes, Value::String(s)) => s.is_empty(),
        (Ty::Bool, Value::Bool(b)) => !b,
        (Ty::Int | Ty::Double, Value::Number(n)) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

fn map_entry(fd: &Field, entry: &[u8], out: &mut Map<String, Value>) -> Result<()> {
    let (mut key, mut val) = (String::new(), None);
    for (n, w) in fields(entry)? {
        match (n, w) {
            (1, Wire::Bytes(b)) => key = utf8(b)?,
            (2, w) => val = Some(value(fd.ty, w)?),
            _ => {}
        }
    }
    let val = match val {
        Some(v) => v,
        None => zero(fd.ty)?,
    };
    let m = out.entry(fd.name).or_insert_with(|| json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    m[key] = val;
    Ok(())
}

fn push(fd: &Field, w: Wire<'_>, out: &mut Map<String, Value>) -> Result<()> {
    let packed = matches!(fd.ty, Ty::Int | Ty::Bool | Ty::Double);
    let mut vals = Vec::new();
    match w {
        Wire::Bytes(mut b) if packed => {
            while !b.is_empty() {
                if fd.ty == Ty::Double {
                    let chunk = b.get(..8).ok_or_else(|| malformed("packed double"))?;
                    vals.push(json!(f64::from_le_bytes(
                        chunk.try_into().expect("8 bytes")
                    )));
                    b = &b[8..];
                } else {
                    vals.push(value(fd.ty, Wire::Varint(varint(&mut b)?))?);
                }
            }
        }
        w => vals.push(value(fd.ty, w)?),
    }
    let list = out.entry(fd.name).or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    list.as_array_mut().expect("array").extend(vals);
    Ok(())
}

/// Message `msg` of the schema, decoded from `buf`, as Go's JSON encodes it.
pub(super) fn message(msg: usize, buf: &[u8]) -> Result<Map<String, Value>> {
    let schema = &*SCHEMA;
    let mut out = Map::new();
    let mut seen = Vec::new();
    for (num, w) in fields(buf)? {
        let Some(fd) = schema.field(msg, num) else {
            continue; // a newer client's field
        };
        seen.push(num);
        if fd.map {
            let Wire::Bytes(entry) = w else {
                return Err(malformed("a map entry has the wrong wire type"));
            };
            map_entry(fd, entry, &mut out)?;
        } else if fd.repeated {
            push(fd, w, &mut out)?;
        } else if fd.inline {
            let Value::Object(inner) = value(fd.ty, w)? else {
                return Err(malformed("an inlined field is not a message"));
            };
            out.extend(inner);
        } else {
            let v = value(fd.ty, w)?;
            if fd.ptr || fd.required || !omitted(fd.ty, &v) {
                out.insert(fd.name.to_string(), v);
            } else {
                out.remove(fd.name);
            }
        }
    }
    for fd in &schema.messages[msg] {
        if !fd.required || fd.inline || seen.contains(&fd.num) {
            continue;
        }
        let v = match fd.ty {
            _ if fd.map || fd.repeated => Value::Null,
            Ty::Msg(_) => continue, // a pointer in Go, or a struct Go always writes
            ty => zero(ty)?,
        };
        out.insert(fd.name.to_string(), v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_prints_them() {
        let s = 1_000_000_000;
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1500), "1.5µs");
        assert_eq!(go_duration(2_000_000), "2ms");
        assert_eq!(go_duration(90 * s), "1m30s");
        assert_eq!(go_duration(3600 * s), "1h0m0s");
        assert_eq!(go_duration(s + s / 2), "1.5s");
        assert_eq!(go_duration(-5 * s), "-5s");
    }
}
