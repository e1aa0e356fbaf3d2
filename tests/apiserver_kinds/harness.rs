//! What `apiserver_kinds.rs` compares kubectl's output through: [`normalize`]. The
//! apiserver process and the kubectl runs themselves are `common::apiserver`'s.

/// Normalizes what varies between runs: AGE-like cells (`5s`, `2y3d`) → `<age>`, RFC 3339
/// words → `<timestamp>`, uid/creationTimestamp/resourceVersion YAML values, and runs of
/// blanks (tabwriter padding) → one space.
pub fn normalize(s: &str) -> String {
    s.lines()
        .map(|l| {
            let t = l.trim_start();
            let indent = &l[..l.len() - t.len()];
            if let Some((k, _)) = t.split_once(": ") {
                if ["uid", "creationTimestamp", "resourceVersion"].contains(&k) {
                    return format!("{indent}{k}: <{k}>");
                }
            }
            let words: Vec<&str> = t
                .split_whitespace()
                .map(|w| {
                    let units = "smhdy";
                    let age = w.len() > 1
                        && w.starts_with(|c: char| c.is_ascii_digit())
                        && w.chars().all(|c| c.is_ascii_digit() || units.contains(c))
                        && w.ends_with(|c: char| units.contains(c));
                    let stamp = w.len() == 20 && w.as_bytes()[10] == b'T' && w.ends_with('Z');
                    if age {
                        "<age>"
                    } else if stamp {
                        "<timestamp>"
                    } else {
                        w
                    }
                })
                .collect();
            format!("{indent}{}", words.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
