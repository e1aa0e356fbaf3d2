//! Data-driven tests of the state machine: scripts in `testdata/*.txt`, run against both
//! backends (memory and sled in a temp dir), must produce exactly the expected output.
//!
//! A script is a list of blocks. A block is one or more commands, a `----` line, and the
//! expected output, ended by a blank line. `#` starts a comment line. Indented lines belong to
//! the command above them (the body of a `txn`).
//!
//! ```text
//! put a 1 prev_kv                 put KEY VALUE [lease=ID] [prev_kv] [ignore_value] [ignore_lease] [events]
//! del a z prev_kv                 del KEY [END] [prev_kv] [events]
//! range a z rev=3 limit=1 sort=mod:desc keys_only count_only min_mod=N max_mod=N min_create=N max_create=N
//! txn [events]                    body lines: `if TARGET KEY [END] OP VALUE` (TARGET version|create|
//!   if mod a = 0                  mod|value|lease, OP = != > <), `then OP...`, `else OP...`, where OP
//!   then put a 1                  is put/del/range as above or `txn` with its own indented body
//! compact REV
//! lease-grant ID TTL | lease-revoke ID | lease-keys ID
//! reset                           start over with a fresh, empty store
//! reopen                          restart: checks the rebuilt state equals the old one at every
//!                                 revision (and the index tree is identical), prints a summary
//! corrupt rev MAIN [SUB] | corrupt meta NAME | corrupt lease ID
//!                                 flips a byte of a stored value through the Backend API
//! ```
//!
//! Keys and values are bare words or double-quoted strings with `\0`, `\xNN`, `\\`, `\"`
//! escapes. Requests go through the same validation the gRPC services run before proposing
//! (`check_put`, `check_txn_request`, empty keys), then `Applier::apply` and `Applier::commit`
//! one command per commit, as the node does for a group of one. Responses print as
//! `op rev=HEADER ...` with their key/values indented below; a key/value prints as
//! `key=value c=CREATE m=MOD v=VERSION [lease=ID]`; errors print their client-visible text.
//!
//! Set `KEELSON_GOLDEN_UPDATE=1` to rewrite the expected outputs from the memory run — and
//! then read every changed line against etcd's behaviour before keeping it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use keelson_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keelson_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keelson_proto::etcdserverpb::request_op::Request;
use keelson_proto::etcdserverpb::response_op::Response as OpResponse;
use keelson_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use keelson_proto::mvccpb::{event::EventType, KeyValue};

use super::{check_put, check_txn_request, Applier, Command, Response};
use crate::alarm::Alarms;
use crate::backend::{Backend, WriteBatch};
use crate::error::{Error, Result};
use crate::keys;
use crate::lease::Lessor;
use crate::mvcc::{Mvcc, Revision};

/// etcd's minimum TTL with the default 1 s election timeout.
const MIN_TTL: i64 = 2;
const MAX_TXN_OPS: usize = 128;

// ---------------------------------------------------------------------------------------------
// Script syntax

/// A token: bytes, whether any part was quoted, and where an unquoted `=` split it.
#[derive(Debug, Clone)]
struct Tok {
    text: Vec<u8>,
    quoted: bool,
    eq: Option<usize>,
}

impl Tok {
    fn word(&self) -> &str {
        std::str::from_utf8(&self.text).expect("words are UTF-8")
    }
    fn is_bare(&self, w: &str) -> bool {
        !self.quoted && self.eq.is_none() && self.text == w.as_bytes()
    }
}

fn tokenize(line: &str, at: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = line.trim().chars().peekable();
    while chars.peek().is_some() {
        let mut t = Tok {
            text: Vec::new(),
            quoted: false,
            eq: None,
        };
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            if c == '=' && t.eq.is_none() && !t.quoted {
                t.eq = Some(t.text.len());
                t.text.push(b'=');
            } else if c == '"' {
                t.quoted = true;
                loop {
                    match chars
                        .next()
                        .unwrap_or_else(|| panic!("{at}: unterminated quote"))
                    {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some('0') => t.text.push(0),
                            Some('n') => t.text.push(b'\n'),
                            Some('t') => t.text.push(b'\t'),
                            Some('x') => {
                                let h: String =
                                    [chars.next(), chars.next()].iter().flatten().collect();
                                t.text.push(
                                    u8::from_str_radix(&h, 16)
                                        .unwrap_or_else(|_| panic!("{at}: bad \\x{h}")),
                                );
                            }
                            Some(c @ ('\\' | '"')) => t.text.push(c as u8),
                            other => panic!("{at}: bad escape {other:?}"),
                        },
                        c => t.text.extend_from_slice(c.to_string().as_bytes()),
                    }
                }
            } else {
                t.text.extend_from_slice(c.to_string().as_bytes());
            }
        }
        out.push(t);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
    }
    out
}

/// One command line and the indented lines under it.
#[derive(Debug, Clone)]
struct Node {
    at: String,
    toks: Vec<Tok>,
    body: Vec<Node>,
}

struct Block {
    at: String,
    commands: Vec<Node>,
    expected: String,
    /// Line range of the expected output in the file (for rewriting).
    expected_lines: (usize, usize),
}

fn parse_script(path: &Path, text: &str) -> Vec<Block> {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.trim().is_empty() || l.starts_with('#') {
            i += 1;
            continue;
        }
        let at = format!("{name}:{}", i + 1);
        // Commands up to `----`, nested by indentation.
        let mut stack: Vec<(usize, Node)> = Vec::new();
        let mut commands = Vec::new();
        while i < lines.len() && lines[i] != "----" {
            let l = lines[i];
            assert!(
                !l.trim().is_empty(),
                "{name}:{}: blank line before ----",
                i + 1
            );
            let indent = l.len() - l.trim_start().len();
            let node = Node {
                at: format!("{name}:{}", i + 1),
                toks: tokenize(l, &format!("{name}:{}", i + 1)),
                body: vec![],
            };
            while let Some((d, _)) = stack.last() {
                if *d < indent {
                    break;
                }
                let (_, done) = stack.pop().unwrap();
                match stack.last_mut() {
                    Some((_, parent)) => parent.body.push(done),
                    None => commands.push(done),
                }
            }
            assert!(
                indent == 0 || !stack.is_empty(),
                "{name}:{}: indented line without a command",
                i + 1
            );
            stack.push((indent, node));
            i += 1;
        }
        while let Some((_, done)) = stack.pop() {
            match stack.last_mut() {
                Some((_, parent)) => parent.body.push(done),
                None => commands.push(done),
            }
        }
        assert!(i < lines.len(), "{at}: block without ----");
        i += 1;
        let start = i;
        let mut expected = String::new();
        while i < lines.len() && !lines[i].trim().is_empty() {
            expected.push_str(lines[i]);
            expected.push('\n');
            i += 1;
        }
        blocks.push(Block {
            at,
            commands,
            expected,
            expected_lines: (start, i),
        });
    }
    blocks
}

/// A command's arguments: positionals, `name=value` options and bare flags.
struct Args {
    at: String,
    pos: Vec<Bytes>,
    opts: BTreeMap<String, Bytes>,
    flags: Vec<String>,
}

impl Args {
    fn parse(at: &str, toks: &[Tok], flags: &[&str]) -> Args {
        let mut a = Args {
            at: at.to_string(),
            pos: vec![],
            opts: BTreeMap::new(),
            flags: vec![],
        };
        for t in toks {
            if let Some(eq) = t.eq {
                let name = String::from_utf8(t.text[..eq].to_vec()).unwrap();
                a.opts
                    .insert(name, Bytes::copy_from_slice(&t.text[eq + 1..]));
            } else if !t.quoted && flags.contains(&t.word()) {
                a.flags.push(t.word().to_string());
            } else {
                a.pos.push(Bytes::copy_from_slice(&t.text));
            }
        }
        a
    }
    fn pos(&self, i: usize) -> Bytes {
        self.pos
            .get(i)
            .cloned()
            .unwrap_or_else(|| panic!("{}: missing argument {}", self.at, i + 1))
    }
    fn pos_or_empty(&self, i: usize) -> Bytes {
        self.pos.get(i).cloned().unwrap_or_default()
    }
    fn flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
    fn int(&mut self, name: &str) -> i64 {
        self.opts.remove(name).map_or(0, |v| {
            std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{}: {name} is not a number", self.at))
        })
    }
    fn done(&self, max_pos: usize) {
        assert!(
            self.opts.is_empty(),
            "{}: unknown options {:?}",
            self.at,
            self.opts.keys()
        );
        assert!(self.pos.len() <= max_pos, "{}: too many arguments", self.at);
    }
}

fn int(at: &str, b: &[u8]) -> i64 {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{at}: {b:?} is not a number"))
}

fn put_request(at: &str, toks: &[Tok]) -> PutRequest {
    let mut a = Args::parse(
        at,
        toks,
        &["prev_kv", "ignore_value", "ignore_lease", "events"],
    );
    let r = PutRequest {
        key: a.pos(0),
        value: a.pos_or_empty(1),
        lease: a.int("lease"),
        prev_kv: a.flag("prev_kv"),
        ignore_value: a.flag("ignore_value"),
        ignore_lease: a.flag("ignore_lease"),
    };
    a.done(2);
    r
}

fn del_request(at: &str, toks: &[Tok]) -> DeleteRangeRequest {
    let a = Args::parse(at, toks, &["prev_kv", "events"]);
    let r = DeleteRangeRequest {
        key: a.pos(0),
        range_end: a.pos_or_empty(1),
        prev_kv: a.flag("prev_kv"),
    };
    a.done(2);
    r
}

fn range_request(at: &str, toks: &[Tok]) -> RangeRequest {
    let mut a = Args::parse(at, toks, &["keys_only", "count_only"]);
    let (sort_target, sort_order) = match a.opts.remove("sort") {
        None => (SortTarget::Key, SortOrder::None),
        Some(s) => {
            let s = String::from_utf8(s.to_vec()).unwrap();
            let (t, o) = s.split_once(':').unwrap_or((&s, "none"));
            let t = match t {
                "key" => SortTarget::Key,
                "version" => SortTarget::Version,
                "create" => SortTarget::Create,
                "mod" => SortTarget::Mod,
                "value" => SortTarget::Value,
                _ => panic!("{at}: sort target {t}"),
            };
            let o = match o {
                "none" => SortOrder::None,
                "asc" => SortOrder::Ascend,
                "desc" => SortOrder::Descend,
                _ => panic!("{at}: sort order {o}"),
            };
            (t, o)
        }
    };
    let r = RangeRequest {
        key: a.pos(0),
        range_end: a.pos_or_empty(1),
        limit: a.int("limit"),
        revision: a.int("rev"),
        sort_order: sort_order as i32,
        sort_target: sort_target as i32,
        serializable: false,
        keys_only: a.flag("keys_only"),
        count_only: a.flag("count_only"),
        min_mod_revision: a.int("min_mod"),
        max_mod_revision: a.int("max_mod"),
        min_create_revision: a.int("min_create"),
        max_create_revision: a.int("max_create"),
    };
    a.done(2);
    r
}

fn compare(n: &Node) -> Compare {
    let t = &n.toks[1..];
    assert!(
        t.len() == 4 || t.len() == 5,
        "{}: if TARGET KEY [END] OP VALUE",
        n.at
    );
    let (op, value) = (&t[t.len() - 2], &t[t.len() - 1]);
    let result = match op.word() {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        o => panic!("{}: compare op {o}", n.at),
    };
    let (target, union) = match t[0].word() {
        "version" => (
            CompareTarget::Version,
            TargetUnion::Version(int(&n.at, &value.text)),
        ),
        "create" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(int(&n.at, &value.text)),
        ),
        "mod" => (
            CompareTarget::Mod,
            TargetUnion::ModRevision(int(&n.at, &value.text)),
        ),
        "value" => (
            CompareTarget::Value,
            TargetUnion::Value(value.text.clone().into()),
        ),
        "lease" => (
            CompareTarget::Lease,
            TargetUnion::Lease(int(&n.at, &value.text)),
        ),
        w => panic!("{}: compare target {w}", n.at),
    };
    Compare {
        result: result as i32,
        target: target as i32,
        key: t[1].text.clone().into(),
        range_end: if t.len() == 5 {
            t[2].text.clone().into()
        } else {
            Bytes::new()
        },
        target_union: Some(union),
    }
}

fn request_op(n: &Node, toks: &[Tok]) -> RequestOp {
    let request = match toks[0].word() {
        "put" => Request::RequestPut(put_request(&n.at, &toks[1..])),
        "del" => Request::RequestDeleteRange(del_request(&n.at, &toks[1..])),
        "range" => Request::RequestRange(range_request(&n.at, &toks[1..])),
        "txn" => Request::RequestTxn(txn_request(n)),
        w => panic!("{}: unknown txn op {w}", n.at),
    };
    RequestOp {
        request: Some(request),
    }
}

fn txn_request(n: &Node) -> TxnRequest {
    let mut r = TxnRequest::default();
    for line in &n.body {
        match line.toks[0].word() {
            "if" => r.compare.push(compare(line)),
            "then" => r.success.push(request_op(line, &line.toks[1..])),
            "else" => r.failure.push(request_op(line, &line.toks[1..])),
            w => panic!("{}: expected if/then/else, got {w}", line.at),
        }
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Output

fn fmt_bytes(b: &[u8]) -> String {
    let plain = !b.is_empty()
        && b.iter()
            .all(|&c| c.is_ascii_graphic() && !b"\"\\=()".contains(&c));
    if plain {
        return String::from_utf8(b.to_vec()).unwrap();
    }
    let mut s = String::from("\"");
    for &c in b {
        match c {
            0 => s.push_str("\\0"),
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            c if c.is_ascii_graphic() || c == b' ' => s.push(c as char),
            c => write!(s, "\\x{c:02x}").unwrap(),
        }
    }
    s.push('"');
    s
}

fn fmt_kv(kv: &KeyValue) -> String {
    let mut s = format!(
        "{}={} c={} m={} v={}",
        fmt_bytes(&kv.key),
        fmt_bytes(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version
    );
    if kv.lease != 0 {
        write!(s, " lease={}", kv.lease).unwrap();
    }
    s
}

fn rev_of(h: &Option<keelson_proto::etcdserverpb::ResponseHeader>) -> String {
    h.as_ref().map_or("none".into(), |h| h.revision.to_string())
}

fn render_range(out: &mut Vec<String>, indent: &str, r: &RangeResponse) {
    out.push(format!(
        "{indent}range rev={} count={}{}",
        rev_of(&r.header),
        r.count,
        if r.more { " more" } else { "" }
    ));
    out.extend(r.kvs.iter().map(|kv| format!("{indent}  {}", fmt_kv(kv))));
}

fn render_txn(out: &mut Vec<String>, indent: &str, r: &TxnResponse) {
    out.push(format!(
        "{indent}txn rev={} succeeded={}",
        rev_of(&r.header),
        r.succeeded
    ));
    let inner = format!("{indent}  ");
    for op in &r.responses {
        match op.response.as_ref().expect("a response per op") {
            OpResponse::ResponseRange(r) => render_range(out, &inner, r),
            OpResponse::ResponsePut(p) => {
                out.push(format!("{inner}put rev={}", rev_of(&p.header)));
                out.extend(
                    p.prev_kv
                        .iter()
                        .map(|kv| format!("{inner}  prev: {}", fmt_kv(kv))),
                );
            }
            OpResponse::ResponseDeleteRange(d) => {
                out.push(format!(
                    "{inner}del rev={} deleted={}",
                    rev_of(&d.header),
                    d.deleted
                ));
                out.extend(
                    d.prev_kvs
                        .iter()
                        .map(|kv| format!("{inner}  prev: {}", fmt_kv(kv))),
                );
            }
            OpResponse::ResponseTxn(t) => render_txn(out, &inner, t),
        }
    }
}

fn render(out: &mut Vec<String>, resp: &Response) {
    match resp {
        Response::Put(p) => {
            out.push(format!("put rev={}", rev_of(&p.header)));
            out.extend(p.prev_kv.iter().map(|kv| format!("  prev: {}", fmt_kv(kv))));
        }
        Response::DeleteRange(d) => {
            out.push(format!(
                "del rev={} deleted={}",
                rev_of(&d.header),
                d.deleted
            ));
            out.extend(
                d.prev_kvs
                    .iter()
                    .map(|kv| format!("  prev: {}", fmt_kv(kv))),
            );
        }
        Response::Txn(t) => render_txn(out, "", t),
        Response::Compact(c) => out.push(format!("compact rev={}", rev_of(&c.header))),
        Response::LeaseGrant(g) => out.push(format!(
            "lease-grant rev={} id={} ttl={}",
            rev_of(&g.header),
            g.id,
            g.ttl
        )),
        Response::LeaseRevoke(r) => out.push(format!("lease-revoke rev={}", rev_of(&r.header))),
        Response::Alarm(a) => out.push(format!("alarm {:?}", a.alarms)),
        Response::Auth => out.push("auth".into()),
    }
}

fn fmt_err(e: &Error) -> String {
    match e {
        Error::Corrupt(_) => "error: corrupt".into(),
        e => format!("error: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The harness

use crate::backend::{Disk, Kind};

struct Harness {
    kind: Kind,
    disk: Disk,
    /// `None` after a reopen failed (corrupt data): the member would not start.
    applier: Option<Applier>,
    index: u64,
}

fn open(disk: &Disk) -> Result<Applier> {
    let backend = disk.open()?;
    let mvcc = Arc::new(Mvcc::open(&*backend)?);
    let lessor = Arc::new(Lessor::open(&*backend, MIN_TTL)?);
    // What `Core::open_with` does at start: lease attachments are not stored, they are rebuilt
    // from the live keys.
    for (k, ki) in mvcc.state.read().tree.iter() {
        if let Some(kv) = ki.latest() {
            if kv.lease != 0 {
                lessor.reattach(k, 0, kv.lease);
            }
        }
    }
    let alarms = Arc::new(Alarms::open(&*backend)?);
    let auth = Arc::new(crate::auth::AuthStore::open(&*backend)?);
    let a = Applier {
        mvcc,
        lessor,
        alarms,
        backend,
        auth,
    };
    // The node reads the applied index as it starts.
    a.consistent_index()?;
    Ok(a)
}

/// Everything a restart must reproduce: the index tree itself, every readable revision, the
/// compaction point, the leases with their keys, and the applied index.
fn snapshot(a: &Applier) -> String {
    let mut s = String::new();
    let st = a.mvcc.state.read();
    writeln!(
        s,
        "current={} pending={} compacted={}",
        st.current, st.pending, st.compacted
    )
    .unwrap();
    writeln!(s, "tree={:?}", st.tree).unwrap();
    for rev in (st.compacted - 1).max(1)..=st.current + 1 {
        let all = RangeRequest {
            key: vec![0].into(),
            range_end: vec![0].into(),
            revision: rev,
            ..Default::default()
        };
        match st.range(&all, st.current) {
            Ok(r) => writeln!(
                s,
                "@{rev}: {}",
                r.kvs.iter().map(fmt_kv).collect::<Vec<_>>().join(" ")
            )
            .unwrap(),
            Err(e) => writeln!(s, "@{rev}: {e}").unwrap(),
        }
    }
    drop(st);
    let mut ids = a.lessor.leases();
    ids.sort();
    for id in ids {
        let l = a.lessor.time_to_live(id).unwrap();
        writeln!(s, "lease {id} granted={} keys={:?}", l.granted, l.keys).unwrap();
    }
    writeln!(
        s,
        "alarms={:?} index={:?}",
        a.alarms.list(),
        a.consistent_index()
    )
    .unwrap();
    s
}

impl Harness {
    fn new(kind: Kind) -> Harness {
        let disk = Disk::new(kind);
        let applier = open(&disk).expect("a fresh store opens");
        Harness {
            kind,
            disk,
            applier: Some(applier),
            index: 0,
        }
    }

    /// Validates like the gRPC layer, then applies and commits one command.
    fn propose(&mut self, cmd: Command) -> (Result<Response>, Vec<crate::mvcc::RevisionEvents>) {
        let Some(a) = &self.applier else {
            return (Err(Error::Stopped), vec![]);
        };
        let checked = match &cmd {
            Command::Put(p) => check_put(p),
            Command::DeleteRange(d) if d.key.is_empty() => Err(Error::EmptyKey),
            Command::Txn(t) => check_txn_request(t, MAX_TXN_OPS),
            _ => Ok(()),
        };
        if let Err(e) = checked {
            return (Err(e), vec![]);
        }
        let mut batch = WriteBatch::default();
        let mut events = Vec::new();
        let r = a.apply(&cmd, &mut batch, &mut events);
        if let Err(e) = &r {
            assert!(
                e.is_deterministic(),
                "apply returned a non-deterministic error {e}"
            );
        }
        self.index += 1;
        a.commit(Some(self.index), batch, super::Durability::Fsync)
            .expect("the backend commits");
        let st = a.mvcc.state.read();
        assert_eq!(
            st.current, st.pending,
            "commit publishes everything applied"
        );
        (r, events)
    }

    fn reopen(&mut self, out: &mut Vec<String>) {
        let before = self.applier.as_ref().map(snapshot);
        // Every handle on the backend must go before sled can open the directory again.
        self.applier = None;
        match open(&self.disk) {
            Ok(a) => {
                let after = snapshot(&a);
                if let Some(before) = before {
                    assert_eq!(before, after, "restart must rebuild the same state");
                }
                let st = a.mvcc.state.read();
                out.push(format!(
                    "reopened current={} compacted={}",
                    st.current, st.compacted
                ));
                drop(st);
                self.index = a.consistent_index().unwrap();
                self.applier = Some(a);
            }
            Err(e) => out.push(fmt_err(&e)),
        }
    }

    fn backend(&self) -> Arc<dyn Backend> {
        self.applier
            .as_ref()
            .expect("store is open")
            .backend
            .clone()
    }

    fn corrupt(&mut self, n: &Node) {
        let w: Vec<&str> = n.toks.iter().map(|t| t.word()).collect();
        let b = self.backend();
        let key = match w[1..] {
            ["rev", main] | ["rev", main, _] => {
                let sub = w.get(3).map_or(0, |s| s.parse().unwrap());
                let r = Revision {
                    main: main.parse().unwrap(),
                    sub,
                };
                let live = keys::rev_key(r, false);
                if b.get(&live).unwrap().is_some() {
                    live
                } else {
                    keys::rev_key(r, true)
                }
            }
            ["meta", name] => keys::meta_key(name),
            ["lease", id] => keys::lease_key(id.parse().unwrap()),
            _ => panic!("{}: corrupt rev MAIN [SUB] | meta NAME | lease ID", n.at),
        };
        let mut v = b
            .get(&key)
            .unwrap()
            .unwrap_or_else(|| panic!("{}: no record {key:?}", n.at));
        *v.last_mut().unwrap() ^= 0x20;
        let mut batch = WriteBatch::default();
        batch.put(key, v);
        b.write(batch).unwrap();
        b.flush().unwrap();
    }

    fn run(&mut self, n: &Node, out: &mut Vec<String>) {
        let w = n.toks[0].word();
        let events_flag = n.toks.iter().any(|t| t.is_bare("events"));
        let cmd = match w {
            "put" => Command::Put(put_request(&n.at, &n.toks[1..])),
            "del" => Command::DeleteRange(del_request(&n.at, &n.toks[1..])),
            "txn" => {
                assert!(
                    n.toks[1..].iter().all(|t| t.is_bare("events")),
                    "{}: txn [events]",
                    n.at
                );
                Command::Txn(txn_request(n))
            }
            "compact" => Command::Compact(CompactionRequest {
                revision: int(&n.at, &n.toks[1].text),
                physical: false,
            }),
            "lease-grant" => Command::LeaseGrant(LeaseGrantRequest {
                id: int(&n.at, &n.toks[1].text),
                ttl: int(&n.at, &n.toks[2].text),
            }),
            "lease-revoke" => Command::LeaseRevoke(LeaseRevokeRequest {
                id: int(&n.at, &n.toks[1].text),
            }),
            "range" => {
                let r = range_request(&n.at, &n.toks[1..]);
                let Some(a) = &self.applier else {
                    return out.push(fmt_err(&Error::Stopped));
                };
                // What the KV service does: read at the durable revision.
                let st = a.mvcc.state.read();
                let res = if r.key.is_empty() {
                    Err(Error::EmptyKey)
                } else {
                    st.range(&r, st.current)
                };
                match res {
                    Ok(rr) => render_range(
                        out,
                        "",
                        &RangeResponse {
                            header: super::header(st.current),
                            kvs: rr.kvs,
                            more: rr.more,
                            count: rr.count,
                        },
                    ),
                    Err(e) => out.push(fmt_err(&e)),
                }
                return;
            }
            "lease-keys" => {
                let Some(a) = &self.applier else {
                    return out.push(fmt_err(&Error::Stopped));
                };
                match a.lessor.time_to_live(int(&n.at, &n.toks[1].text)) {
                    Ok(s) => out.push(format!(
                        "lease granted={} keys=[{}]",
                        s.granted,
                        s.keys
                            .iter()
                            .map(|k| fmt_bytes(k))
                            .collect::<Vec<_>>()
                            .join(" ")
                    )),
                    Err(e) => out.push(fmt_err(&e)),
                }
                return;
            }
            "reopen" => return self.reopen(out),
            "reset" => {
                *self = Harness::new(self.kind);
                return;
            }
            "corrupt" => return self.corrupt(n),
            _ => panic!("{}: unknown command {w}", n.at),
        };
        let (r, events) = self.propose(cmd);
        match r {
            Ok(resp) => render(out, &resp),
            Err(e) => out.push(fmt_err(&e)),
        }
        if events_flag {
            for re in &events {
                for ev in &re.events {
                    let t = if ev.r#type == EventType::Delete as i32 {
                        "DELETE"
                    } else {
                        "PUT"
                    };
                    let prev = ev.prev_kv.as_ref().map_or("none".into(), fmt_kv);
                    out.push(format!(
                        "  event {t} {} prev=({prev})",
                        fmt_kv(ev.kv.as_ref().unwrap())
                    ));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running scripts

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/apply/testdata")
}

/// Runs one script; returns the actual output per block.
fn run_script(path: &Path, kind: Kind) -> (Vec<Block>, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let blocks = parse_script(path, &text);
    let mut h = Harness::new(kind);
    let mut actual = Vec::new();
    for b in &blocks {
        let mut out = Vec::new();
        for c in &b.commands {
            h.run(c, &mut out);
        }
        let mut s = out.join("\n");
        s.push('\n');
        actual.push(s);
    }
    (blocks, actual)
}

fn check_script(name: &str, kind: Kind) {
    let path = testdata().join(format!("{name}.txt"));
    let (blocks, actual) = run_script(&path, kind);
    if std::env::var_os("KEELSON_GOLDEN_UPDATE").is_some() && matches!(kind, Kind::Mem) {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut out = String::new();
        let mut next = 0;
        for (b, a) in blocks.iter().zip(&actual) {
            for l in &lines[next..b.expected_lines.0] {
                out.push_str(l);
                out.push('\n');
            }
            out.push_str(a);
            next = b.expected_lines.1;
        }
        for l in &lines[next..] {
            out.push_str(l);
            out.push('\n');
        }
        std::fs::write(&path, out).unwrap();
        return;
    }
    let mut failures = String::new();
    for (b, a) in blocks.iter().zip(&actual) {
        if &b.expected != a {
            writeln!(
                failures,
                "--- {} ({kind:?})\nexpected:\n{}actual:\n{}",
                b.at, b.expected, a
            )
            .unwrap();
        }
    }
    assert!(failures.is_empty(), "script {name} failed:\n{failures}");
}

macro_rules! scripts {
    ($($name:ident),* $(,)?) => {
        const SCRIPTS: &[&str] = &[$(stringify!($name)),*];
        $(
            mod $name {
                #[test]
                fn memory() {
                    super::check_script(stringify!($name), super::Kind::Mem);
                }
                #[test]
                fn sled() {
                    super::check_script(stringify!($name), super::Kind::Sled);
                }
            }
        )*
    };
}

scripts!(revisions, range, txn, compaction, lease, corruption);

#[test]
fn every_script_is_run() {
    let mut on_disk: Vec<String> = std::fs::read_dir(testdata())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().to_string())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = SCRIPTS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "add new scripts to the scripts! list");
}

#[test]
fn tokenizer_handles_quotes_and_escapes() {
    let t = tokenize(r#"put "a b" "\0\x41\"" v="x y" k=1 "q=r""#, "t");
    let texts: Vec<&[u8]> = t.iter().map(|t| &t.text[..]).collect();
    assert_eq!(
        texts,
        vec![&b"put"[..], b"a b", b"\0A\"", b"v=x y", b"k=1", b"q=r"]
    );
    assert_eq!(t[3].eq, Some(1));
    assert_eq!(t[5].eq, None, "a quoted = is not an option");
    assert_eq!(fmt_bytes(b"\0ab"), r#""\0ab""#);
    assert_eq!(fmt_bytes(b""), r#""""#);
}
