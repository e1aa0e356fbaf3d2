//! `--token-auth-file`: static bearer tokens, read once at start, in kube-apiserver's format.
//!
//! The file is CSV as Go's `encoding/csv` reads it (upstream `tokenfile.NewCSV`): one record
//! per line, `token,user,uid[,"group1,group2"[,…]]`. Fields may be quoted (`""` is a quote
//! inside a quoted field, which may span lines); a quote inside an unquoted field is an
//! error; empty lines are skipped; nothing else is trimmed and `#` starts no comment.
//!
//! Invariants (as upstream):
//! - A record with fewer than three fields fails the whole file: the apiserver does not start.
//! - A record with an empty token is skipped (it would otherwise match `Bearer ` with nothing
//!   after it); a repeated token is kept, the later record winning, with a warning.
//! - The fourth field is split on every comma into groups, so an empty fourth field is one
//!   empty group name. Fields after the fourth are ignored.

use std::collections::HashMap;
use std::path::Path;

use super::UserInfo;
use crate::error::{Error, Result};

/// The tokens of one file, by token.
#[derive(Debug, Default)]
pub(crate) struct Tokens(HashMap<String, UserInfo>);

impl Tokens {
    pub(crate) fn load(path: &Path) -> Result<Tokens> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
        Tokens::parse(&text, &path.display().to_string())
    }

    /// Parses the file's text; `name` is the path as it appears in messages.
    pub(crate) fn parse(text: &str, name: &str) -> Result<Tokens> {
        let mut tokens = HashMap::new();
        let records = read_csv(text).map_err(|e| Error::Internal(format!("{name}: {e}")))?;
        for (n, record) in records.into_iter().enumerate() {
            let number = n + 1;
            if record.len() < 3 {
                return Err(Error::Internal(format!(
                    "token file '{name}' must have at least 3 columns (token, user name, user \
                     uid), found {}",
                    record.len()
                )));
            }
            if record[0].is_empty() {
                tracing::warn!(
                    "empty token has been found in token file '{name}', record number '{number}'"
                );
                continue;
            }
            let mut user = UserInfo {
                name: record[1].clone(),
                uid: record[2].clone(),
                ..UserInfo::default()
            };
            if let Some(groups) = record.get(3) {
                user.groups = groups.split(',').map(str::to_string).collect();
            }
            if tokens.insert(record[0].clone(), user).is_some() {
                tracing::warn!(
                    "duplicate token has been found in token file '{name}', record number \
                     '{number}'"
                );
            }
        }
        Ok(Tokens(tokens))
    }

    /// The user a token belongs to.
    pub(crate) fn get(&self, token: &str) -> Option<&UserInfo> {
        self.0.get(token)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// Go `encoding/csv` with its defaults (comma separator, no comments, strict quotes, a
/// variable number of fields): the records of `text`, or `parse error on line L, column C:
/// …` naming the first offending character (1-based, in bytes).
fn read_csv(text: &str) -> std::result::Result<Vec<Vec<String>>, String> {
    let text = text.replace("\r\n", "\n");
    let bytes = text.as_bytes();
    let (mut records, mut record, mut field) = (Vec::new(), Vec::new(), Vec::<u8>::new());
    let (mut i, mut line, mut line_start) = (0usize, 1usize, 0usize);
    let err = |line: usize, col: usize, what: &str| {
        format!("parse error on line {line}, column {col}: {what}")
    };
    // Empty lines are no records.
    while bytes.get(i) == Some(&b'\n') {
        i += 1;
        line += 1;
        line_start = i;
    }
    while i < bytes.len() {
        // At the start of a field.
        if bytes[i] == b'"' {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => {
                        return Err(err(
                            line,
                            i - line_start + 1,
                            "extraneous or missing \" in quoted-field",
                        ))
                    }
                    Some(b'"') if bytes.get(i + 1) == Some(&b'"') => {
                        field.push(b'"');
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        match bytes.get(i) {
                            None | Some(b',') | Some(b'\n') => break,
                            Some(_) => {
                                return Err(err(
                                    line,
                                    i - line_start + 1,
                                    "extraneous or missing \" in quoted-field",
                                ))
                            }
                        }
                    }
                    Some(b'\n') => {
                        field.push(b'\n');
                        i += 1;
                        line += 1;
                        line_start = i;
                    }
                    Some(&c) => {
                        field.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while let Some(&c) = bytes.get(i) {
                match c {
                    b',' | b'\n' => break,
                    b'"' => {
                        return Err(err(line, i - line_start + 1, "bare \" in non-quoted-field"))
                    }
                    _ => {
                        field.push(c);
                        i += 1;
                    }
                }
            }
        }
        record.push(String::from_utf8_lossy(&std::mem::take(&mut field)).into_owned());
        match bytes.get(i) {
            Some(b',') => {
                i += 1;
                if i == bytes.len() {
                    record.push(String::new());
                    records.push(std::mem::take(&mut record));
                }
            }
            _ => {
                // End of the record (a newline or the end of the text).
                records.push(std::mem::take(&mut record));
                i += 1;
                line += 1;
                line_start = i;
                // Empty lines are no records.
                while bytes.get(i) == Some(&b'\n') {
                    i += 1;
                    line += 1;
                    line_start = i;
                }
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Tokens {
        Tokens::parse(text, "tokens.csv").unwrap()
    }

    #[test]
    fn upstream_format_with_and_without_groups() {
        let t = parse(
            "abc,alice,1001,\"devs,ops\"\n\
             def,bob,1002\n\
             ghi,carol,1003,admins\n",
        );
        assert_eq!(t.len(), 3);
        let alice = t.get("abc").unwrap();
        assert_eq!((alice.name.as_str(), alice.uid.as_str()), ("alice", "1001"));
        assert_eq!(alice.groups, ["devs", "ops"]);
        assert!(t.get("def").unwrap().groups.is_empty());
        assert_eq!(t.get("ghi").unwrap().groups, ["admins"]);
        assert!(t.get("nope").is_none() && t.get("").is_none());
    }

    #[test]
    fn edge_cases_follow_go_csv() {
        // CRLF, blank lines, no final newline, spaces kept, `#` is data, "" inside quotes.
        let t = parse("\r\n a , b ,c\r\n\n#t,hash,3\ntok,\"say \"\"hi\"\"\",4,\nlast,u,5,\"x\ny\"");
        assert_eq!(t.get(" a ").unwrap().name, " b ");
        assert_eq!(t.get("#t").unwrap().name, "hash");
        let hi = t.get("tok").unwrap();
        assert_eq!(hi.name, "say \"hi\"");
        // An empty fourth field is one empty group, as strings.Split gives.
        assert_eq!(hi.groups, [""]);
        assert_eq!(t.get("last").unwrap().groups, ["x\ny"]);
        // A trailing comma adds an empty field.
        assert_eq!(parse("t,u,i,").get("t").unwrap().groups, [""]);
    }

    #[test]
    fn empty_and_duplicate_tokens() {
        let t = parse(",nobody,0\ndup,first,1\ndup,second,2\n");
        assert!(t.get("").is_none());
        assert_eq!(t.get("dup").unwrap().name, "second");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn malformed_files_are_refused() {
        let e = Tokens::parse("good,u,1\ntoken,user\n", "/etc/t.csv").unwrap_err();
        assert_eq!(
            e.to_string(),
            "token file '/etc/t.csv' must have at least 3 columns (token, user name, user uid), \
             found 2"
        );
        let e = Tokens::parse("t,u\"x,1\n", "f").unwrap_err().to_string();
        assert!(
            e.ends_with("parse error on line 1, column 4: bare \" in non-quoted-field"),
            "{e}"
        );
        let e = Tokens::parse("t,u,1\n\"t\"x,u,1\n", "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2") && e.contains("extraneous or missing"),
            "{e}"
        );
        let e = Tokens::parse("t,u,\"1\n", "f").unwrap_err().to_string();
        assert!(e.contains("extraneous or missing"), "{e}");
    }
}
