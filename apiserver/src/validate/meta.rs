//! Metadata, label and selector rules (upstream `apimachinery/pkg/util/validation`,
//! `api/validation/objectmeta.go`, `apis/meta/v1/validation`).

use serde_json::Value;

use super::{go_str, Errs};
use crate::resources::ResourceDef;

pub(crate) const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower \
    case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric \
    character (e.g. 'example.com', regex used for validation is \
    '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
pub(crate) const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case \
    alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. \
    'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
pub(crate) const DNS1035_LABEL: &str = "a DNS-1035 label must consist of lower case alphanumeric \
    characters or '-', start with an alphabetic character, and end with an alphanumeric character \
    (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME: &str = "must consist of alphanumeric characters, '-', '_' or '.', and \
    must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
    '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric \
    characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. \
    'MyValue',  or 'my_value',  or '12345', regex used for validation is \
    '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
/// Upstream's `TotalAnnotationSizeLimitB`.
const ANNOTATIONS_MAX: usize = 256 * 1024;

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// `IsDNS1123Label`'s messages.
pub(crate) fn dns1123_label(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push("must be no more than 63 characters".to_string());
    }
    if !is_label(s) {
        out.push(DNS1123_LABEL.to_string());
    }
    out
}

/// `IsDNS1123Subdomain`'s messages.
pub(crate) fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 253 {
        out.push("must be no more than 253 characters".to_string());
    }
    if !s.split('.').all(is_label) {
        out.push(DNS1123_SUBDOMAIN.to_string());
    }
    out
}

/// Why `name` is not a valid name for `def` (None: valid).
pub(crate) fn name_problem(def: &ResourceDef, name: &str) -> Option<String> {
    match def.resource {
        "namespaces" => dns1123_label(name).into_iter().next(),
        "services" => {
            if name.len() > 63 {
                Some("must be no more than 63 characters".into())
            } else if !is_label(name) || !name.as_bytes()[0].is_ascii_lowercase() {
                Some(DNS1035_LABEL.into())
            } else {
                None
            }
        }
        _ => dns1123_subdomain(name).into_iter().next(),
    }
}

fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// `IsQualifiedName`'s messages (label and annotation keys).
pub(crate) fn qualified_name(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                out.push("prefix part must be non-empty".to_string());
            } else {
                out.extend(
                    dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {QUALIFIED_NAME} with an optional DNS subdomain prefix and '/' \
                 (e.g. 'example.com/MyName')"
            )]
        }
    };
    if name.is_empty() {
        out.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        out.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_part(name) {
        out.push(format!("name part {QUALIFIED_NAME}"));
    }
    out
}

/// `IsValidLabelValue`'s messages.
pub(crate) fn label_value(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push("must be no more than 63 characters".to_string());
    }
    if !s.is_empty() && !is_qualified_part(s) {
        out.push(LABEL_VALUE.to_string());
    }
    out
}

/// `ValidateLabels` at `path`.
pub(crate) fn labels(v: &Value, path: &str, e: &mut Errs) {
    for (k, val) in v.as_object().into_iter().flatten() {
        for m in qualified_name(k) {
            e.invalid(path, &go_str(k), &m);
        }
        let s = val.as_str().unwrap_or("");
        for m in label_value(s) {
            e.invalid(path, &go_str(s), &m);
        }
    }
}

/// `ValidateAnnotations` at `path`.
pub(crate) fn annotations(v: &Value, path: &str, e: &mut Errs) {
    let Some(m) = v.as_object() else { return };
    let mut total = 0;
    for (k, val) in m {
        for msg in qualified_name(&k.to_lowercase()) {
            e.invalid(path, &go_str(k), &msg);
        }
        total += k.len() + val.as_str().map_or(0, str::len);
    }
    if total > ANNOTATIONS_MAX {
        e.push(
            "FieldValueTooLong",
            path,
            format!("Too long: may not be more than {ANNOTATIONS_MAX} bytes"),
        );
    }
}

/// `ValidateObjectMeta` minus what `object::prepare_create` has checked already (name
/// presence, namespace).
pub(crate) fn object_meta(def: &ResourceDef, obj: &Value, e: &mut Errs) {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    if !name.is_empty() {
        if let Some(why) = name_problem(def, name) {
            e.invalid("metadata.name", &go_str(name), &why);
        }
    }
    labels(&obj["metadata"]["labels"], "metadata.labels", e);
    annotations(&obj["metadata"]["annotations"], "metadata.annotations", e);
}

/// `ValidateLabelSelector` at `path`.
pub(crate) fn label_selector(sel: &Value, path: &str, e: &mut Errs) {
    for (i, r) in sel["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("{path}.matchExpressions[{i}]");
        let has_values = r["values"].as_array().is_some_and(|v| !v.is_empty());
        match r["operator"].as_str().unwrap_or("") {
            "In" | "NotIn" if !has_values => e.required(
                &format!("{at}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            ),
            "Exists" | "DoesNotExist" if has_values => e.forbidden(
                &format!("{at}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => e.invalid(
                &format!("{at}.operator"),
                &go_str(op),
                "not a valid selector operator",
            ),
        }
        let key = r["key"].as_str().unwrap_or("");
        for m in qualified_name(key) {
            e.invalid(&format!("{at}.key"), &go_str(key), &m);
        }
    }
    labels(&sel["matchLabels"], &format!("{path}.matchLabels"), e);
}

/// Whether a `metav1.LabelSelector` selects `labels`. A null selector selects nothing, an
/// empty one everything (`LabelSelectorAsSelector`).
pub(crate) fn selects(sel: &Value, labels: &Value) -> bool {
    if sel.is_null() {
        return false;
    }
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let equal = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| get(k) == v.as_str());
    equal
        && sel["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|r| {
                let key = r["key"].as_str().unwrap_or("");
                let values: Vec<&str> = r["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                match r["operator"].as_str().unwrap_or("") {
                    "In" => get(key).is_some_and(|v| values.contains(&v)),
                    "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
                    "Exists" => get(key).is_some(),
                    "DoesNotExist" => get(key).is_none(),
                    _ => false,
                }
            })
}

/// Whether a selector is empty (selects everything): no labels and no expressions.
pub(crate) fn is_empty_selector(sel: &Value) -> bool {
    let n = |f: &str| {
        sel[f].as_object().map_or(0, |m| m.len()) + sel[f].as_array().map_or(0, |a| a.len())
    };
    sel.is_object() && n("matchLabels") + n("matchExpressions") == 0
}
