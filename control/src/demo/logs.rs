//! Reading the sidecars' JSON logs as they grow: each authorization denial names its deciding
//! policy, or — when ALLOW policies apply and none matched — the policies it considered. The
//! decision metric counts denials; the log says which policy decided each one.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// Most bytes read from one log per refresh; the rest is read on the next ones.
const MAX_READ: u64 = 4 << 20;
/// A line longer than this is dropped (a denial line is a few hundred bytes).
const MAX_LINE: usize = 64 << 10;
/// The message the proxy logs for a refused request.
const DENY_MESSAGE: &str = "RBAC: access denied";

/// One log file, read from where the last read stopped.
#[derive(Debug)]
pub struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl LogTail {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// Adds the denials logged since the last call to `out`, by deciding policy.
    pub fn read_denials(&mut self, out: &mut BTreeMap<String, u64>) {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let Ok(n) = f.take(MAX_READ).read_to_end(&mut buf) else {
            return;
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let Some(last_newline) = self.partial.iter().rposition(|b| *b == b'\n') else {
            if self.partial.len() > MAX_LINE {
                self.partial.clear();
            }
            return;
        };
        let rest = self.partial.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        for line in complete.split(|b| *b == b'\n') {
            if let Some(key) = denial(line) {
                *out.entry(key).or_insert(0) += 1;
            }
        }
    }
}

/// The deciding policy of a denial line, e.g. `emergency/emergency-access-policy (DENY rule 0)`
/// or `no ALLOW rule matched in child-services/child-profile-access-policy`.
pub fn denial(line: &[u8]) -> Option<String> {
    if line.len() > MAX_LINE {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let fields = v.get("fields")?;
    if fields.get("message")?.as_str()? != DENY_MESSAGE {
        return None;
    }
    let text = |k: &str| {
        fields
            .get(k)
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    let policy = text("policy");
    if policy.is_empty() || policy == "-" {
        let considered = text("considered");
        let reason = text("reason");
        return Some(if considered.is_empty() {
            format!("denied: {reason}")
        } else {
            format!("no ALLOW rule matched in {considered}")
        });
    }
    Some(format!(
        "{policy} ({} rule {})",
        text("action").trim_matches('"'),
        text("rule")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denial_lines_name_the_deciding_or_considered_policies() {
        let none = br#"{"timestamp":"t","level":"INFO","fields":{"message":"RBAC: access denied","policy":"-","rule":-1,"action":"NONE","reason":"NoAllowMatched","considered":"child-services/child-profile-access-policy"},"target":"jalin_proxy::authz::check"}"#;
        assert_eq!(
            denial(none).unwrap(),
            "no ALLOW rule matched in child-services/child-profile-access-policy"
        );
        let deny = br#"{"fields":{"message":"RBAC: access denied","policy":"ns/block","rule":0,"action":"DENY"}}"#;
        assert_eq!(denial(deny).unwrap(), "ns/block (DENY rule 0)");
        assert!(denial(br#"{"fields":{"message":"listening"}}"#).is_none());
        assert!(denial(b"not json").is_none());
    }

    #[test]
    fn tail_reads_only_new_complete_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        let line = r#"{"fields":{"message":"RBAC: access denied","policy":"ns/p","rule":1,"action":"DENY"}}"#;
        std::fs::write(&path, format!("{line}\n{}", &line[..10])).unwrap();
        let mut tail = LogTail::new(path.clone());
        let mut out = BTreeMap::new();
        tail.read_denials(&mut out);
        assert_eq!(out["ns/p (DENY rule 1)"], 1);
        std::fs::write(&path, format!("{line}\n{line}\n")).unwrap();
        tail.read_denials(&mut out);
        assert_eq!(out["ns/p (DENY rule 1)"], 2);
    }
}
