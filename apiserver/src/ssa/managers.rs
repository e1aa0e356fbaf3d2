//! `metadata.managedFields` and the updater: who owns which fields, and how an apply or an
//! update moves ownership (structured-merge-diff's `merge.Updater`).
//!
//! Invariants:
//! - A manager is identified by its name, operation, subresource and, for `Update` entries
//!   only, apiVersion (upstream's `BuildManagerIdentifier`): one `Apply` entry per applier,
//!   one `Update` entry per updater and version.
//! - A write takes from every other manager the fields it changes (an apply without force
//!   fails instead, listing them) and the fields it removes; a manager left owning nothing
//!   is dropped.
//! - An applier owns exactly what its last configuration sets; an updater owns what it
//!   changed, added to what it owned before. Neither owns the server's metadata (`strip`)
//!   nor the fields the endpoint resets (status on the main resource, spec on `/status`).
//! - Entries are written sorted as upstream sorts them: Apply before Update, then by time,
//!   manager, apiVersion and subresource.

use serde_json::{json, Map, Value};

use super::fieldpath::{self, Path, Pe, Set};
use super::schema::Ty;
use super::typed::{self, Comparison, TypeError};

pub(crate) const APPLY: &str = "Apply";
pub(crate) const UPDATE: &str = "Update";

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub(crate) manager: String,
    pub(crate) operation: String,
    pub(crate) api_version: String,
    pub(crate) time: Option<String>,
    pub(crate) subresource: String,
    pub(crate) fields: Set,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str, api_version: &str, subresource: &str) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource == subresource
            && (operation == APPLY || self.api_version == api_version)
    }

    /// As conflict messages name it (upstream's `printManager`).
    pub(crate) fn label(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {:?}", self.subresource);
        }
        if self.operation == UPDATE {
            s = format!("{s} using {}", self.api_version);
        }
        s
    }

    fn sort_key(&self) -> (bool, i64, &str, &str, &str) {
        let secs = self
            .time
            .as_deref()
            .and_then(crate::time::parse_rfc3339)
            .unwrap_or(0);
        (
            self.operation != APPLY,
            secs,
            &self.manager,
            &self.api_version,
            &self.subresource,
        )
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> Result<Entry, String> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let fields = match v.get("fieldsV1") {
            Some(f) => Set::from_fields_v1(f)?,
            None => Set::default(),
        };
        Ok(Entry {
            manager: s("manager"),
            operation: s("operation"),
            api_version: s("apiVersion"),
            time: v.get("time").and_then(Value::as_str).map(str::to_string),
            subresource: s("subresource"),
            fields,
        })
    }
}

/// The entries of `obj`'s `metadata.managedFields`.
pub(crate) fn decode(obj: &Value) -> Result<Vec<Entry>, String> {
    match obj.pointer("/metadata/managedFields") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a.iter().map(Entry::from_json).collect(),
        Some(_) => Err("metadata.managedFields must be a list".into()),
    }
}

/// Sets `obj`'s `metadata.managedFields` to `entries`, sorted (removed when empty).
pub(crate) fn encode(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.fields.is_empty());
    entries.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let meta = crate::object::meta_mut(obj);
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        let list = entries.iter().map(Entry::to_json).collect();
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// Fields nobody owns: the server's metadata (upstream's `stripMetaManager`).
pub(crate) fn strip_set() -> Set {
    let mut s = Set::default();
    for p in ["apiVersion", "kind", "metadata"] {
        s.insert(&[Pe::Field(p.into())]);
    }
    for p in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        s.insert(&[Pe::Field("metadata".into()), Pe::Field(p.into())]);
    }
    s
}

/// A field another manager owns that this write would change.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Conflict {
    pub(crate) manager: Entry,
    pub(crate) path: Path,
}

/// What one write does, and as whom.
pub(crate) struct Write<'a> {
    pub(crate) ty: Ty,
    pub(crate) api_version: &'a str,
    pub(crate) manager: &'a str,
    pub(crate) subresource: &'a str,
    /// Fields the endpoint resets: nobody owns them through it.
    pub(crate) ignored: Set,
    pub(crate) now: String,
}

impl Write<'_> {
    fn owned(&self, s: Set) -> Set {
        s.difference(&strip_set())
            .recursive_difference(&self.ignored)
    }

    fn compare(&self, old: &Value, new: &Value) -> Result<Comparison, TypeError> {
        Ok(typed::compare(self.ty, old, new)?.exclude(&self.ignored))
    }
}

/// Takes from the managers `others` selects the fields `cmp` changes or removes; with
/// conflicts and no `force`, changes nothing and returns them.
fn take_from_others(
    entries: &mut [Entry],
    others: impl Fn(&Entry) -> bool,
    cmp: &Comparison,
    force: bool,
) -> Result<(), Vec<Conflict>> {
    let changed = cmp.changed();
    let mut conflicts = Vec::new();
    for e in entries.iter().filter(|e| others(e)) {
        for path in e.fields.intersection(&changed).paths() {
            conflicts.push(Conflict {
                manager: e.clone(),
                path,
            });
        }
    }
    if !force && !conflicts.is_empty() {
        // Grouped by manager, sorted as upstream sorts its manager identifiers.
        conflicts.sort_by(|a, b| {
            let key = |c: &Conflict| {
                let m = &c.manager;
                (
                    m.manager.clone(),
                    m.operation.clone(),
                    m.api_version.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        return Err(conflicts);
    }
    for e in entries.iter_mut().filter(|e| others(e)) {
        e.fields = e.fields.difference(&changed).difference(&cmp.removed);
    }
    Ok(())
}

/// Why an apply failed.
#[derive(Debug)]
pub(crate) enum ApplyError {
    Conflicts(Vec<Conflict>),
    Type(TypeError),
}

impl From<TypeError> for ApplyError {
    fn from(e: TypeError) -> ApplyError {
        ApplyError::Type(e)
    }
}

/// Applies `config` to `live` (without its managedFields) as `w.manager`: the merged and
/// pruned object, and the new entries.
pub(crate) fn apply(
    w: &Write,
    live: &Value,
    config: &Value,
    mut entries: Vec<Entry>,
    force: bool,
) -> Result<(Value, Vec<Entry>), ApplyError> {
    let mut merged = typed::merge(w.ty, Some(live), config)?;
    let mine = |e: &Entry| e.is(w.manager, APPLY, w.api_version, w.subresource);
    let last = entries
        .iter()
        .find(|e| mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let fields = w.owned(typed::field_set(w.ty, config)?);
    entries.retain(|e| !mine(e));
    entries.push(Entry {
        manager: w.manager.to_string(),
        operation: APPLY.into(),
        api_version: w.api_version.to_string(),
        time: Some(w.now.clone()),
        subresource: w.subresource.to_string(),
        fields,
    });
    if !last.is_empty() {
        let managed = entries
            .iter()
            .fold(Set::default(), |acc, e| acc.union(&e.fields));
        typed::prune(w.ty, &mut merged, &last, &managed)?;
    }
    let cmp = w.compare(live, &merged)?;
    take_from_others(&mut entries, |e| !mine(e), &cmp, force).map_err(ApplyError::Conflicts)?;
    entries.retain(|e| !e.fields.is_empty());
    Ok((merged, entries))
}

/// Records a non-apply write from `old` to `new` (both without managedFields) as
/// `w.manager`'s `Update`.
pub(crate) fn update(
    w: &Write,
    old: &Value,
    new: &Value,
    mut entries: Vec<Entry>,
) -> Result<Vec<Entry>, TypeError> {
    let cmp = w.compare(old, new)?;
    // Forced: an update never conflicts. Its own earlier entry gives up what it changes
    // too, and takes it back below.
    let _ = take_from_others(&mut entries, |_| true, &cmp, true);
    let changed = w.owned(cmp.changed());
    if !changed.is_empty() {
        let mine = |e: &Entry| e.is(w.manager, UPDATE, w.api_version, w.subresource);
        match entries.iter_mut().find(|e| mine(e)) {
            Some(e) => {
                e.fields = e.fields.union(&changed);
                e.time = Some(w.now.clone());
            }
            None => entries.push(Entry {
                manager: w.manager.to_string(),
                operation: UPDATE.into(),
                api_version: w.api_version.to_string(),
                time: Some(w.now.clone()),
                subresource: w.subresource.to_string(),
                fields: changed,
            }),
        }
    }
    entries.retain(|e| !e.fields.is_empty());
    Ok(entries)
}

/// Upstream's conflict message: one conflict on one line, more grouped by manager.
pub(crate) fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [one] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.manager.label(),
            fieldpath::display(&one.path)
        );
    }
    let mut lines = Vec::new();
    let mut last: Option<String> = None;
    for c in conflicts {
        let label = c.manager.label();
        if last.as_ref() != Some(&label) {
            lines.push(format!("conflicts with {label}:"));
            last = Some(label);
        }
        lines.push(format!("- {}", fieldpath::display(&c.path)));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}
