//! Normalization of etcdctl 3.4 output, so that transcripts from two
//! different servers (real etcd vs keelson, or etcd vs etcd) can be compared
//! byte for byte.
//!
//! Everything lives behind one entry point, [`normalize`]. What it rewrites:
//!
//! * etcdctl's JSON log lines on stderr (`{"level":"warn","ts":...}`) →
//!   `<log LEVEL: MSG | error: ERROR>`; timestamps, callers, client UUIDs and
//!   sizes/durations are dropped, the gRPC code and message are kept.
//! * table output (`-w table`) → `| a | b |` rows without padding, borders
//!   `+-+`.
//! * literals given in the context (temp dir → `<TMP>`, client/peer URLs,
//!   the endpoint `127.0.0.1:PORT` → `<ENDPOINT>`).
//! * member/cluster/lease IDs known to the context, in decimal, `%x` and
//!   `%016x` forms → `<MEMBER_ID>`, `<CLUSTER_ID>`, `<LEASE1>`, `<LEASE2>`…
//!   (numbered in order of discovery). Forms of 8+ characters are replaced
//!   anywhere on a word boundary; shorter ones only as a whole line, a whole
//!   `, `-separated or table cell, or a JSON/fields value of an ID field.
//! * header/status fields: raft term (`<TERM>`), raft index / applied index
//!   (`<INDEX>`), db size (`<SIZE>`) — a zero is kept, it means "absent";
//!   `took` (`<DUR>`).
//! * `endpoint status`: version (`<VERSION>`), size, term, indexes.
//! * `endpoint hashkv`: hash (`<HASH>`).
//! * `endpoint health`: `took = …` / the TOOK cell / `"took"` → `<DUR>`.
//! * `lease timetolive`: the remaining TTL becomes `<REMAINING>` when it is
//!   plausible (1 ≤ remaining ≤ granted and remaining ≥ granted/2),
//!   otherwise it is left as is and will show up in a diff.
//! * `lease list`: the lease lines / JSON array are sorted, and so are the
//!   attached keys of `lease timetolive --keys` (etcd lists both in Go map
//!   order, i.e. randomly).
//!
//! Revisions, versions of keys, counts, keys, values, flags like `more`,
//! error texts and exit codes are never normalized.

/// Which output stream a text came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Per-server facts needed to normalize its output.
#[derive(Clone, Debug, Default)]
pub struct NormCtx {
    /// `(literal, placeholder)`, applied in order on word boundaries; put
    /// longer literals (URLs) before their substrings (the endpoint).
    pub literals: Vec<(String, String)>,
    pub member_id: Option<u64>,
    pub cluster_id: Option<u64>,
    /// Lease IDs in order of discovery: index 0 → `<LEASE1>`.
    pub leases: Vec<i64>,
}

impl NormCtx {
    /// Context for a server: `tmp_dir` → `<TMP>`, `http://<endpoint>` →
    /// `<CLIENT_URL>`, `peer_url` → `<PEER_URL>`, `endpoint` → `<ENDPOINT>`.
    pub fn for_server(endpoint: &str, peer_url: &str, tmp_dir: &str) -> Self {
        let mut c = NormCtx::default();
        if !tmp_dir.is_empty() {
            c.literals.push((tmp_dir.to_string(), "<TMP>".to_string()));
        }
        c.literals
            .push((format!("http://{endpoint}"), "<CLIENT_URL>".to_string()));
        c.literals
            .push((peer_url.to_string(), "<PEER_URL>".to_string()));
        c.literals
            .push((endpoint.to_string(), "<ENDPOINT>".to_string()));
        c
    }

    /// Remember a lease ID; returns false if it was already known.
    pub fn add_lease(&mut self, id: i64) -> bool {
        if self.leases.contains(&id) {
            return false;
        }
        self.leases.push(id);
        true
    }

    /// `(value, placeholder)` for every known ID.
    fn ids(&self) -> Vec<(u64, String)> {
        let mut v = Vec::new();
        if let Some(m) = self.member_id {
            v.push((m, "<MEMBER_ID>".to_string()));
        }
        if let Some(c) = self.cluster_id {
            v.push((c, "<CLUSTER_ID>".to_string()));
        }
        for (i, l) in self.leases.iter().enumerate() {
            v.push((*l as u64, format!("<LEASE{}>", i + 1)));
        }
        v
    }
}

/// The etcdctl command (first words of the step's arguments) and its output
/// format, as far as normalization cares.
struct Cmd<'a> {
    args: &'a [String],
    format: String,
}

impl<'a> Cmd<'a> {
    fn parse(args: &'a [String]) -> Self {
        let mut format = "simple".to_string();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "-w" || a == "--write-out" {
                if let Some(v) = it.next() {
                    format = v.clone();
                }
            } else if let Some(v) = a
                .strip_prefix("-w=")
                .or_else(|| a.strip_prefix("--write-out="))
            {
                format = v.to_string();
            }
        }
        Cmd { args, format }
    }

    fn is(&self, path: &[&str]) -> bool {
        self.args.len() >= path.len() && self.args.iter().zip(path).all(|(a, p)| a == p)
    }
}

/// Normalize one output stream of one etcdctl invocation. `args` are the
/// etcdctl arguments after the global flags (e.g. `["get", "foo", "-w",
/// "json"]`); they select command-specific rules.
pub fn normalize(args: &[String], stream: Stream, text: &str, ctx: &NormCtx) -> String {
    let cmd = Cmd::parse(args);
    let ids = ctx.ids();
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| {
            let mut l = reduce_log_line(line).unwrap_or_else(|| line.to_string());
            l = canonical_table_line(&l);
            for (lit, ph) in &ctx.literals {
                l = replace_bounded(&l, lit, ph);
            }
            for (v, ph) in &ids {
                for form in id_forms(*v) {
                    if form.len() >= 8 {
                        l = replace_bounded(&l, &form, ph);
                    }
                }
            }
            l = map_cells(&l, |_, cell| lookup_id(cell, &ids));
            if stream == Stream::Stdout {
                l = command_cells(&l, &cmd);
            }
            if let Some(i) = l.find("took = ") {
                l = format!("{}<DUR>", &l[..i + "took = ".len()]);
            }
            l
        })
        .collect();
    let mut text = lines.join("\n");
    text = map_fields(&text, |name, value| field_rule(name, value, &cmd, &ids));
    if cmd.is(&["lease", "timetolive"]) {
        text = normalize_remaining_ttl(&text);
        if stream == Stream::Stdout {
            text = sort_attached_keys(&text);
        }
    }
    if cmd.is(&["lease", "list"]) && stream == Stream::Stdout {
        text = sort_lease_list(&text, &cmd.format);
    }
    text
}

fn id_forms(v: u64) -> [String; 3] {
    [v.to_string(), format!("{v:x}"), format!("{v:016x}")]
}

/// Placeholder for `s` if it is exactly one form of a known ID.
fn lookup_id(s: &str, ids: &[(u64, String)]) -> Option<String> {
    ids.iter()
        .find(|(v, _)| id_forms(*v).iter().any(|f| f == s))
        .map(|(_, ph)| ph.clone())
}

/// etcdctl's zap JSON log line → `<log LEVEL: MSG | error: ERROR>`.
fn reduce_log_line(line: &str) -> Option<String> {
    let t = line.trim();
    if !t.starts_with("{\"level\":") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(t).ok()?;
    let level = v.get("level")?.as_str()?;
    let msg = v.get("msg").and_then(|m| m.as_str()).unwrap_or("");
    let mut s = format!("<log {level}: {msg}");
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        s.push_str(" | error: ");
        s.push_str(e);
    }
    s.push('>');
    Some(s)
}

fn is_table_row(l: &str) -> bool {
    l.len() >= 2 && l.starts_with('|') && l.ends_with('|')
}

/// `+----+---+` → `+-+`; `|  a |   b |` → `| a | b |`.
fn canonical_table_line(l: &str) -> String {
    if l.len() >= 2
        && l.starts_with('+')
        && l.ends_with('+')
        && l.chars().all(|c| c == '+' || c == '-')
    {
        return "+-+".to_string();
    }
    if is_table_row(l) {
        let cells: Vec<&str> = l[1..l.len() - 1].split('|').map(str::trim).collect();
        return format!("| {} |", cells.join(" | "));
    }
    l.to_string()
}

/// Split a line into cells (a canonical table row, or a `, `-separated
/// line, or the whole line as one cell), let `f(index, cell)` replace cells,
/// and join again.
fn map_cells(l: &str, mut f: impl FnMut(usize, &str) -> Option<String>) -> String {
    if is_table_row(l) && l.len() >= 4 {
        let inner = &l[2..l.len() - 2];
        let cells: Vec<String> = inner
            .split(" | ")
            .enumerate()
            .map(|(i, c)| f(i, c).unwrap_or_else(|| c.to_string()))
            .collect();
        return format!("| {} |", cells.join(" | "));
    }
    if l.contains(", ") {
        let cells: Vec<String> = l
            .split(", ")
            .enumerate()
            .map(|(i, c)| f(i, c).unwrap_or_else(|| c.to_string()))
            .collect();
        return cells.join(", ");
    }
    f(0, l).unwrap_or_else(|| l.to_string())
}

fn nonzero(value: &str, ph: &str) -> Option<String> {
    (value != "0" && value != "\"0\"").then(|| ph.to_string())
}

/// Positional cells of `endpoint status` / `endpoint hashkv` in simple and
/// table format (header rows start with `ENDPOINT`).
fn command_cells(l: &str, cmd: &Cmd) -> String {
    let table = cmd.format == "table";
    if !(cmd.format == "simple" || table) {
        return l.to_string();
    }
    if table && !is_table_row(l) {
        return l.to_string();
    }
    if cmd.is(&["endpoint", "status"]) {
        let n = cell_count(l);
        if n < 9 {
            return l.to_string();
        }
        let header = first_cell(l) == "ENDPOINT";
        return map_cells(l, |i, c| match (header, i) {
            (true, _) => None,
            (_, 2) => Some("<VERSION>".to_string()),
            (_, 3) => nonzero(c, "<SIZE>"),
            (_, 6) => nonzero(c, "<TERM>"),
            (_, 7) | (_, 8) => nonzero(c, "<INDEX>"),
            _ => None,
        });
    }
    if cmd.is(&["endpoint", "health"]) && table {
        // | ENDPOINT | HEALTH | TOOK | ERROR |
        if cell_count(l) != 4 || first_cell(l) == "ENDPOINT" {
            return l.to_string();
        }
        return map_cells(l, |i, _| (i == 2).then(|| "<DUR>".to_string()));
    }
    if cmd.is(&["endpoint", "hashkv"]) {
        if cell_count(l) != 2 || first_cell(l) == "ENDPOINT" {
            return l.to_string();
        }
        return map_cells(l, |i, _| (i == 1).then(|| "<HASH>".to_string()));
    }
    l.to_string()
}

fn cell_count(l: &str) -> usize {
    let mut n = 0;
    map_cells(l, |_, _| {
        n += 1;
        None
    });
    n
}

fn first_cell(l: &str) -> String {
    let mut first = String::new();
    map_cells(l, |i, c| {
        if i == 0 {
            first = c.to_string();
        }
        None
    });
    first
}

/// Rules for `"name":value` (JSON) and `"Name" : value` (fields) pairs.
fn field_rule(name: &str, value: &str, cmd: &Cmd, ids: &[(u64, String)]) -> Option<String> {
    match name {
        "raft_term" | "raftTerm" | "RaftTerm" => nonzero(value, "<TERM>"),
        "raftIndex" | "RaftIndex" | "raftAppliedIndex" | "RaftAppliedIndex" | "raft_index" => {
            nonzero(value, "<INDEX>")
        }
        "dbSize" | "DBSize" | "dbSizeInUse" | "DBSizeInUse" => nonzero(value, "<SIZE>"),
        "took" | "Took" => Some("<DUR>".to_string()),
        "version" | "Version" if cmd.is(&["endpoint", "status"]) => Some("<VERSION>".to_string()),
        "hash" | "Hash" if cmd.is(&["endpoint", "hashkv"]) => Some("<HASH>".to_string()),
        "cluster_id" | "ClusterID" | "member_id" | "MemberID" | "ID" | "id" | "leader"
        | "Leader" | "lease" | "Lease" => lookup_id(value.trim_matches('"'), ids),
        _ => None,
    }
}

/// Find every `"name"` followed by optional spaces, `:`, optional spaces and
/// a scalar value (string, number, bool, null), and let `f(name, value)`
/// return a replacement for the value token. Strings are skipped as a whole,
/// so keys inside string values are not touched.
fn map_fields(text: &str, mut f: impl FnMut(&str, &str) -> Option<String>) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        let name_start = i + 1;
        let Some(name_end) = string_end(b, i) else {
            break;
        };
        // name_end is the index of the closing quote.
        let mut j = name_end + 1;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        if j >= b.len() || b[j] != b':' {
            i = name_end + 1;
            continue;
        }
        j += 1;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        let v_start = j;
        let v_end = if j < b.len() && b[j] == b'"' {
            match string_end(b, j) {
                Some(e) => e + 1,
                None => b.len(),
            }
        } else if j < b.len() && (b[j] == b'{' || b[j] == b'[') {
            i = j;
            continue;
        } else {
            let mut e = j;
            while e < b.len() && !matches!(b[e], b',' | b'}' | b']' | b'\n' | b'\r' | b' ') {
                e += 1;
            }
            e
        };
        let name = &text[name_start..name_end];
        let value = &text[v_start..v_end];
        if let Some(rep) = f(name, value) {
            out.push_str(&text[copied..v_start]);
            out.push_str(&rep);
            copied = v_end;
        }
        i = v_end.max(name_end + 1);
    }
    out.push_str(&text[copied..]);
    out
}

/// Index of the closing quote of the string starting at `b[start] == '"'`.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut k = start + 1;
    while k < b.len() {
        match b[k] {
            b'\\' => k += 2,
            b'"' => return Some(k),
            _ => k += 1,
        }
    }
    None
}

/// Replace `needle` where it is not glued to an alphanumeric character on
/// either side.
fn replace_bounded(text: &str, needle: &str, rep: &str) -> String {
    if needle.is_empty() || !text.contains(needle) {
        return text.to_string();
    }
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut prev: Option<char> = None;
    while let Some(pos) = rest.find(needle) {
        let before = if pos == 0 {
            prev
        } else {
            rest[..pos].chars().next_back()
        };
        let after = rest[pos + needle.len()..].chars().next();
        let first = needle.chars().next();
        let last = needle.chars().next_back();
        // Only demand a boundary where the needle itself starts/ends with a
        // word character (paths like "/tmp/x" may follow anything).
        let glued_before = is_word(first) && is_word(before);
        let glued_after = is_word(last) && is_word(after);
        let ok = !glued_before && !glued_after;
        let take = if ok {
            pos
        } else {
            pos + needle.chars().next().map_or(1, |c| c.len_utf8())
        };
        out.push_str(&rest[..take]);
        if ok {
            out.push_str(rep);
            rest = &rest[pos + needle.len()..];
            prev = last;
        } else {
            prev = rest[..take].chars().next_back();
            rest = &rest[take..];
        }
    }
    out.push_str(rest);
    out
}

fn ttl_plausible(remaining: i64, granted: i64) -> bool {
    remaining >= 1 && remaining <= granted && remaining * 2 >= granted
}

/// `lease timetolive`: replace a plausible remaining TTL by `<REMAINING>`.
fn normalize_remaining_ttl(text: &str) -> String {
    // simple: "lease X granted with TTL(60s), remaining(59s)[, attached keys(...)]"
    let text: String = text
        .split('\n')
        .map(|l| {
            let g = between(l, "granted with TTL(", "s)");
            let r = between(l, "remaining(", "s)");
            match (g, r) {
                (Some(g), Some(r)) if ttl_plausible(r, g) => {
                    l.replacen(&format!("remaining({r}s)"), "remaining(<REMAINING>)", 1)
                }
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    // json: "ttl":59,"granted-ttl":60   fields: "TTL" : 59 / "GrantedTTL" : 60
    let mut granted = None;
    map_fields(&text, |name, value| {
        if name == "granted-ttl" || name == "GrantedTTL" {
            granted = value.parse::<i64>().ok();
        }
        None
    });
    let Some(g) = granted else { return text };
    map_fields(&text, |name, value| match (name, value.parse::<i64>()) {
        ("ttl" | "TTL", Ok(r)) if ttl_plausible(r, g) => Some("<REMAINING>".to_string()),
        _ => None,
    })
}

fn between(l: &str, open: &str, close: &str) -> Option<i64> {
    let s = l.find(open)? + open.len();
    let e = l[s..].find(close)? + s;
    l[s..e].parse().ok()
}

/// `lease list`: sort the ID lines (simple) or the `"leases":[...]` array
/// elements (json).
fn sort_lease_list(text: &str, format: &str) -> String {
    if format == "simple" {
        let mut lines: Vec<&str> = text.split('\n').collect();
        if lines.len() > 2 && lines[0].starts_with("found ") {
            let end = if lines.last() == Some(&"") {
                lines.len() - 1
            } else {
                lines.len()
            };
            lines[1..end].sort_unstable();
        }
        return lines.join("\n");
    }
    sort_json_array(text, "\"leases\":[")
}

/// Sort the top-level elements of the JSON array that follows `key` (which
/// ends with `[`), textually.
fn sort_json_array(text: &str, key: &str) -> String {
    let Some(start) = text.find(key).map(|p| p + key.len()) else {
        return text.to_string();
    };
    let b = text.as_bytes();
    let mut depth = 0i32;
    let mut elems = Vec::new();
    let mut elem_start = start;
    let mut k = start;
    while k < b.len() {
        match b[k] {
            b'"' => {
                k = string_end(b, k).unwrap_or(b.len());
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => depth -= 1,
            b']' => break,
            b',' if depth == 0 => {
                elems.push(&text[elem_start..k]);
                elem_start = k + 1;
            }
            _ => {}
        }
        k += 1;
    }
    if k >= b.len() {
        return text.to_string();
    }
    if k > elem_start {
        elems.push(&text[elem_start..k]);
    }
    elems.sort_unstable();
    format!("{}{}{}", &text[..start], elems.join(","), &text[k..])
}

/// `lease timetolive --keys`: etcd lists attached keys in Go map order
/// (random); sort them in all three formats.
fn sort_attached_keys(text: &str) -> String {
    // simple: "attached keys([b a])"
    let mut text = text
        .split('\n')
        .map(|l| {
            let open = "attached keys([";
            let (Some(s), Some(e)) = (l.find(open), l.rfind("])")) else {
                return l.to_string();
            };
            let s = s + open.len();
            if e < s {
                return l.to_string();
            }
            let mut keys: Vec<&str> = l[s..e].split(' ').collect();
            keys.sort_unstable();
            format!("{}{}{}", &l[..s], keys.join(" "), &l[e..])
        })
        .collect::<Vec<_>>()
        .join("\n");
    // json: "keys":["Yg==","YQ=="]
    text = sort_json_array(&text, "\"keys\":[");
    // fields: consecutive `"Key" : "…"` lines
    let mut lines: Vec<&str> = text.split('\n').collect();
    let mut i = 0;
    while i < lines.len() {
        let mut j = i;
        while j < lines.len() && lines[j].starts_with("\"Key\" : ") {
            j += 1;
        }
        if j > i + 1 {
            lines[i..j].sort_unstable();
        }
        i = j.max(i + 1);
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMBER: u64 = 7404571517323144648; // 66c252905c056dc8
    const CLUSTER: u64 = 6462830574194900898;
    const LEASE1: i64 = 7910750868487772451; // 6dc8a2007ed39923
    const LEASE2: i64 = 7910750868487772449; // 6dc8a2007ed39921

    fn ctx() -> NormCtx {
        let mut c = NormCtx::for_server(
            "127.0.0.1:23790",
            "http://127.0.0.1:23791",
            "/tmp/keelson-test-etcd-abc",
        );
        c.member_id = Some(MEMBER);
        c.cluster_id = Some(CLUSTER);
        c.add_lease(LEASE1);
        c.add_lease(LEASE2);
        c
    }

    fn n(args: &str, text: &str) -> String {
        let args: Vec<String> = args.split_whitespace().map(String::from).collect();
        normalize(&args, Stream::Stdout, text, &ctx())
    }

    fn n_err(args: &str, text: &str) -> String {
        let args: Vec<String> = args.split_whitespace().map(String::from).collect();
        normalize(&args, Stream::Stderr, text, &ctx())
    }

    #[test]
    fn header_ids_and_term_in_json_but_not_revision() {
        let t = r#"{"header":{"cluster_id":6462830574194900898,"member_id":7404571517323144648,"revision":4,"raft_term":2}}"#;
        assert_eq!(
            n("put foo q -w json", t),
            r#"{"header":{"cluster_id":<CLUSTER_ID>,"member_id":<MEMBER_ID>,"revision":4,"raft_term":<TERM>}}"#
        );
    }

    #[test]
    fn fields_format_and_zero_term_of_nested_headers_kept() {
        let t = "\"ClusterID\" : 6462830574194900898\n\"MemberID\" : 7404571517323144648\n\"Revision\" : 14\n\"RaftTerm\" : 2\n\"Succeeded\" : true\n\"ClusterID\" : 0\n\"MemberID\" : 0\n\"Revision\" : 14\n\"RaftTerm\" : 0\n";
        assert_eq!(
            n("txn -w fields", t),
            "\"ClusterID\" : <CLUSTER_ID>\n\"MemberID\" : <MEMBER_ID>\n\"Revision\" : 14\n\"RaftTerm\" : <TERM>\n\"Succeeded\" : true\n\"ClusterID\" : 0\n\"MemberID\" : 0\n\"Revision\" : 14\n\"RaftTerm\" : 0\n"
        );
    }

    #[test]
    fn kv_values_that_look_like_fields_are_untouched() {
        // Key version (not server version) and values stay as they are.
        let t = r#"{"header":{"revision":5},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":5,"version":4,"value":"cTI="}],"count":1}"#;
        assert_eq!(n("get foo -w json", t), t);
        let s = "foo\n\"raft_term\":7\n";
        // A value printed in simple format is not JSON, but the field scan
        // would see it; that is acceptable because both sides print the same
        // value. Here it is just documented.
        assert_eq!(n("get foo", s), "foo\n\"raft_term\":<TERM>\n");
    }

    #[test]
    fn endpoint_status_all_formats() {
        assert_eq!(
            n(
                "endpoint status",
                "127.0.0.1:23790, 66c252905c056dc8, 3.4.23, 20 kB, true, false, 2, 8, 8, \n"
            ),
            "<ENDPOINT>, <MEMBER_ID>, <VERSION>, <SIZE>, true, false, <TERM>, <INDEX>, <INDEX>, \n"
        );
        let j = r#"[{"Endpoint":"127.0.0.1:23790","Status":{"header":{"cluster_id":6462830574194900898,"member_id":7404571517323144648,"revision":5,"raft_term":2},"version":"3.4.23","dbSize":20480,"leader":7404571517323144648,"raftIndex":8,"raftTerm":2,"raftAppliedIndex":8,"dbSizeInUse":16384}}]"#;
        assert_eq!(
            n("endpoint status -w json", j),
            r#"[{"Endpoint":"<ENDPOINT>","Status":{"header":{"cluster_id":<CLUSTER_ID>,"member_id":<MEMBER_ID>,"revision":5,"raft_term":<TERM>},"version":<VERSION>,"dbSize":<SIZE>,"leader":<MEMBER_ID>,"raftIndex":<INDEX>,"raftTerm":<TERM>,"raftAppliedIndex":<INDEX>,"dbSizeInUse":<SIZE>}}]"#
        );
        let f = "\"Version\" : \"3.4.23\"\n\"DBSize\" : 20480\n\"Leader\" : 7404571517323144648\n\"IsLearner\" : false\n\"RaftIndex\" : 8\n\"Errors\" : []\n\"Endpoint\" : \"127.0.0.1:23790\"\n";
        assert_eq!(
            n("endpoint status -w fields", f),
            "\"Version\" : <VERSION>\n\"DBSize\" : <SIZE>\n\"Leader\" : <MEMBER_ID>\n\"IsLearner\" : false\n\"RaftIndex\" : <INDEX>\n\"Errors\" : []\n\"Endpoint\" : \"<ENDPOINT>\"\n"
        );
        let table = "+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+\n\
|    ENDPOINT     |        ID        | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS |\n\
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+\n\
| 127.0.0.1:23790 | 66c252905c056dc8 |  3.4.23 |   20 kB |      true |      false |         2 |         22 |                 22 |        |\n\
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+\n";
        assert_eq!(
            n("endpoint status -w table", table),
            "+-+\n| ENDPOINT | ID | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS |\n+-+\n\
| <ENDPOINT> | <MEMBER_ID> | <VERSION> | <SIZE> | true | false | <TERM> | <INDEX> | <INDEX> |  |\n+-+\n"
        );
    }

    #[test]
    fn member_list_simple_and_table() {
        assert_eq!(
            n("member list", "66c252905c056dc8, started, default, http://127.0.0.1:23791, http://127.0.0.1:23790, false\n"),
            "<MEMBER_ID>, started, default, <PEER_URL>, <CLIENT_URL>, false\n"
        );
        let t = "| 66c252905c056dc8 | started |   default | http://127.0.0.1:23791 | http://127.0.0.1:23790 |      false |";
        assert_eq!(
            n("member list -w table", t),
            "| <MEMBER_ID> | started | default | <PEER_URL> | <CLIENT_URL> | false |"
        );
    }

    #[test]
    fn health_hashkv_and_other_endpoints() {
        assert_eq!(
            n(
                "endpoint health",
                "127.0.0.1:23790 is healthy: successfully committed proposal: took = 750.428µs\n"
            ),
            "<ENDPOINT> is healthy: successfully committed proposal: took = <DUR>\n"
        );
        assert_eq!(
            n(
                "endpoint health -w json",
                r#"[{"endpoint":"127.0.0.1:23790","health":true,"took":"963.809µs"}]"#
            ),
            r#"[{"endpoint":"<ENDPOINT>","health":true,"took":<DUR>}]"#
        );
        assert_eq!(
            n("endpoint health -w table", "| ENDPOINT | HEALTH | TOOK | ERROR |\n| 127.0.0.1:23790 |   true | 834.88µs |       |"),
            "| ENDPOINT | HEALTH | TOOK | ERROR |\n| <ENDPOINT> | true | <DUR> |  |"
        );
        assert_eq!(
            n("endpoint hashkv", "127.0.0.1:23790, 2787634905\n"),
            "<ENDPOINT>, <HASH>\n"
        );
        assert_eq!(
            n(
                "endpoint hashkv -w table",
                "| 127.0.0.1:23790 | 1434474774 |\n|    ENDPOINT     |    HASH    |"
            ),
            "| <ENDPOINT> | <HASH> |\n| ENDPOINT | HASH |"
        );
        assert_eq!(
            n(
                "endpoint hashkv -w json",
                r#"[{"Endpoint":"127.0.0.1:23790","HashKV":{"header":{"revision":18,"raft_term":2},"hash":168415639,"compact_revision":5}}]"#
            ),
            r#"[{"Endpoint":"<ENDPOINT>","HashKV":{"header":{"revision":18,"raft_term":<TERM>},"hash":<HASH>,"compact_revision":5}}]"#
        );
        // A hash is not touched outside hashkv, nor a port that merely
        // starts with our port.
        assert_eq!(
            n("get x", "\"hash\":5 127.0.0.1:237901\n"),
            "\"hash\":5 127.0.0.1:237901\n"
        );
        assert_eq!(
            n(
                "defrag",
                "Finished defragmenting etcd member[127.0.0.1:23790]\n"
            ),
            "Finished defragmenting etcd member[<ENDPOINT>]\n"
        );
    }

    #[test]
    fn log_lines_keep_level_msg_and_grpc_error() {
        let t = r#"{"level":"warn","ts":"2026-11-21T23:44:32.204Z","caller":"clientv3/retry_interceptor.go:62","msg":"retrying of unary invoker failed","target":"endpoint://client-f04b3e6b-dea6-4286-9e8e-5992ee604bc5/127.0.0.1:23790","attempt":0,"error":"rpc error: code = OutOfRange desc = etcdserver: mvcc: required revision is a future revision"}
Error: etcdserver: mvcc: required revision is a future revision
"#;
        assert_eq!(
            n_err("get foo --rev 100", t),
            "<log warn: retrying of unary invoker failed | error: rpc error: code = OutOfRange desc = etcdserver: mvcc: required revision is a future revision>\nError: etcdserver: mvcc: required revision is a future revision\n"
        );
        let s = r#"{"level":"info","ts":1795304642.7308497,"caller":"snapshot/v3_snapshot.go:142","msg":"fetched snapshot","endpoint":"127.0.0.1:23790","size":"20 kB","took":0.001884456}"#;
        assert_eq!(n_err("snapshot save x", s), "<log info: fetched snapshot>");
        // Not a log line: left alone.
        assert_eq!(n_err("get", "{\"level\": broken"), "{\"level\": broken");
    }

    #[test]
    fn lease_ids_in_all_forms() {
        assert_eq!(
            n(
                "lease grant 30",
                "lease 6dc8a2007ed39923 granted with TTL(30s)\n"
            ),
            "lease <LEASE1> granted with TTL(30s)\n"
        );
        assert_eq!(
            n(
                "lease grant 30 -w json",
                r#"{"cluster_id":6462830574194900898,"member_id":7404571517323144648,"revision":8,"raft_term":2,"ID":7910750868487772449,"TTL":50,"Error":""}"#
            ),
            r#"{"cluster_id":<CLUSTER_ID>,"member_id":<MEMBER_ID>,"revision":8,"raft_term":<TERM>,"ID":<LEASE2>,"TTL":50,"Error":""}"#
        );
        assert_eq!(
            n(
                "get lk -w json",
                r#"{"kvs":[{"key":"bGs=","value":"dg==","lease":7910750868487772451}],"count":1}"#
            ),
            r#"{"kvs":[{"key":"bGs=","value":"dg==","lease":<LEASE1>}],"count":1}"#
        );
        assert_eq!(
            n(
                "get mylock --prefix --keys-only",
                "mylock/6dc8a2007ed39923\n"
            ),
            "mylock/<LEASE1>\n"
        );
        // Unknown lease IDs stay visible.
        assert_eq!(
            n("lease revoke 1", "lease 000000001234abcd revoked\n"),
            "lease 000000001234abcd revoked\n"
        );
    }

    #[test]
    fn short_ids_only_in_id_positions() {
        let mut c = NormCtx::for_server("127.0.0.1:1", "http://127.0.0.1:2", "");
        c.member_id = Some(1);
        c.add_lease(2);
        let args: Vec<String> = ["lease", "list"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            normalize(&args, Stream::Stdout, "found 1 leases\n2\n", &c),
            "found 1 leases\n<LEASE1>\n"
        );
        let args: Vec<String> = ["get", "k", "-w", "json"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            normalize(
                &args,
                Stream::Stdout,
                r#"{"header":{"member_id":1,"revision":2},"kvs":[{"key":"MQ==","version":1,"value":"Mg==","lease":2}]}"#,
                &c
            ),
            r#"{"header":{"member_id":<MEMBER_ID>,"revision":2},"kvs":[{"key":"MQ==","version":1,"value":"Mg==","lease":<LEASE1>}]}"#
        );
        // "%016x" form is long enough to be replaced anywhere.
        let args: Vec<String> = ["lease", "grant", "5"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            normalize(
                &args,
                Stream::Stdout,
                "lease 0000000000000002 granted with TTL(5s)\n",
                &c
            ),
            "lease <LEASE1> granted with TTL(5s)\n"
        );
    }

    #[test]
    fn timetolive_remaining_tolerance() {
        assert_eq!(
            n("lease timetolive 6dc8a2007ed39923 --keys", "lease 6dc8a2007ed39923 granted with TTL(300s), remaining(299s), attached keys([a b])\n"),
            "lease <LEASE1> granted with TTL(300s), remaining(<REMAINING>), attached keys([a b])\n"
        );
        // Implausible remaining values are kept so they show up in the diff.
        assert_eq!(
            n(
                "lease timetolive x",
                "lease 6dc8a2007ed39923 granted with TTL(300s), remaining(0s)\n"
            ),
            "lease <LEASE1> granted with TTL(300s), remaining(0s)\n"
        );
        assert_eq!(
            n(
                "lease timetolive x",
                "lease 6dc8a2007ed39923 granted with TTL(300s), remaining(301s)\n"
            ),
            "lease <LEASE1> granted with TTL(300s), remaining(301s)\n"
        );
        assert_eq!(
            n(
                "lease timetolive x --keys -w json",
                r#"{"cluster_id":6462830574194900898,"member_id":7404571517323144648,"revision":10,"raft_term":2,"id":7910750868487772451,"ttl":29,"granted-ttl":30,"keys":["bGs=","bGsy"]}"#
            ),
            r#"{"cluster_id":<CLUSTER_ID>,"member_id":<MEMBER_ID>,"revision":10,"raft_term":<TERM>,"id":<LEASE1>,"ttl":<REMAINING>,"granted-ttl":30,"keys":["bGs=","bGsy"]}"#
        );
        assert_eq!(
            n(
                "lease timetolive x -w fields",
                "\"ID\" : 7910750868487772451\n\"TTL\" : 29\n\"GrantedTTL\" : 30\n"
            ),
            "\"ID\" : <LEASE1>\n\"TTL\" : <REMAINING>\n\"GrantedTTL\" : 30\n"
        );
        // Expired lease: -1 is exact.
        let t = r#"{"id":7910750868487772451,"ttl":-1,"granted-ttl":0,"keys":null}"#;
        assert_eq!(
            n("lease timetolive x -w json", t),
            r#"{"id":<LEASE1>,"ttl":-1,"granted-ttl":0,"keys":null}"#
        );
        // TTL of grant / keep-alive is exact.
        assert_eq!(
            n(
                "lease keep-alive --once x -w json",
                r#"{"ID":7910750868487772451,"TTL":29}"#
            ),
            r#"{"ID":<LEASE1>,"TTL":29}"#
        );
    }

    #[test]
    fn attached_keys_are_sorted() {
        assert_eq!(
            n("lease timetolive x --keys", "lease 000000000000000a granted with TTL(0s), remaining(0s), attached keys([l/b l/a])\n"),
            "lease 000000000000000a granted with TTL(0s), remaining(0s), attached keys([l/a l/b])\n"
        );
        assert_eq!(
            n(
                "lease timetolive x --keys -w json",
                r#"{"ttl":-1,"granted-ttl":0,"keys":["bC9i","bC9h"]}"#
            ),
            r#"{"ttl":-1,"granted-ttl":0,"keys":["bC9h","bC9i"]}"#
        );
        assert_eq!(
            n("lease timetolive x --keys -w json", r#"{"keys":null}"#),
            r#"{"keys":null}"#
        );
        assert_eq!(
            n(
                "lease timetolive x --keys -w fields",
                "\"GrantedTTL\" : 0\n\"Key\" : \"l/b\"\n\"Key\" : \"l/a\"\n"
            ),
            "\"GrantedTTL\" : 0\n\"Key\" : \"l/a\"\n\"Key\" : \"l/b\"\n"
        );
    }

    #[test]
    fn lease_list_is_sorted() {
        assert_eq!(
            n(
                "lease list",
                "found 2 leases\n6dc8a2007ed39923\n6dc8a2007ed39921\n"
            ),
            "found 2 leases\n<LEASE1>\n<LEASE2>\n"
        );
        assert_eq!(
            n(
                "lease list",
                "found 2 leases\n6dc8a2007ed39921\n6dc8a2007ed39923\n"
            ),
            "found 2 leases\n<LEASE1>\n<LEASE2>\n"
        );
        assert_eq!(
            n(
                "lease list -w json",
                r#"{"revision":8,"raft_term":2,"leases":[{"id":7910750868487772449},{"id":7910750868487772451}]}"#
            ),
            r#"{"revision":8,"raft_term":<TERM>,"leases":[{"id":<LEASE1>},{"id":<LEASE2>}]}"#
        );
    }

    #[test]
    fn snapshot_path_and_helpers() {
        assert_eq!(
            n(
                "snapshot save /tmp/keelson-test-etcd-abc/snap.db",
                "Snapshot saved at /tmp/keelson-test-etcd-abc/snap.db\n"
            ),
            "Snapshot saved at <TMP>/snap.db\n"
        );
        assert_eq!(replace_bounded("a1b 1 [1] 11", "1", "X"), "a1b X [X] 11");
        assert_eq!(replace_bounded("/p/x/p", "/p", "P"), "P/xP");
        assert_eq!(
            map_fields(r#"{"a":"x\"y","b":1}"#, |n, _| (n == "b")
                .then(|| "B".into())),
            r#"{"a":"x\"y","b":B}"#
        );
        assert_eq!(
            map_fields(r#""s" : "v" "t":[1]"#, |_, v| Some(format!("<{v}>"))),
            r#""s" : <"v"> "t":[1]"#
        );
    }
}
