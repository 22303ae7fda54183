//! Recovers a field path (`listeners[1].address`) from a line of block-style YAML, so parse
//! errors, which carry only a line, also say which field they are about.
//!
//! It follows indentation, which is all block-style YAML has; for flow style (`{ a: 1 }`) it
//! names the enclosing block key, which is still the right place to look.

/// One step of a path: a mapping key or a sequence index, with the column it starts at.
#[derive(Debug)]
enum Step {
    Key(usize, String),
    Index(usize, usize),
}

impl Step {
    fn indent(&self) -> usize {
        match self {
            Step::Key(i, _) | Step::Index(i, _) => *i,
        }
    }
}

/// The path of the field on 1-based `line` of `text`.
pub fn yaml_path_at(text: &str, line: usize) -> String {
    let mut stack: Vec<Step> = Vec::new();
    for raw in text.lines().take(line) {
        let trimmed = raw.trim_start_matches(' ');
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let mut indent = raw.len() - trimmed.len();
        let mut rest = trimmed;
        if rest == "-" || rest.starts_with("- ") {
            stack.retain(|s| s.indent() <= indent);
            let index = match stack.last() {
                Some(Step::Index(i, n)) if *i == indent => {
                    let next = n + 1;
                    stack.pop();
                    next
                }
                _ => 0,
            };
            stack.push(Step::Index(indent, index));
            let after = rest.get(1..).unwrap_or("");
            let item = after.trim_start_matches(' ');
            indent += 1 + after.len() - item.len();
            rest = item;
        } else {
            stack.retain(|s| s.indent() < indent);
        }
        if let Some(key) = key_of(rest) {
            stack.push(Step::Key(indent, key));
        }
    }
    let mut out = String::new();
    for step in &stack {
        match step {
            Step::Key(_, k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(_, n) => {
                out.push('[');
                out.push_str(&n.to_string());
                out.push(']');
            }
        }
    }
    out
}

fn key_of(s: &str) -> Option<String> {
    if s.starts_with('{') || s.starts_with('[') {
        return None;
    }
    let colon = s
        .find(": ")
        .or_else(|| s.strip_suffix(':').map(|k| k.len()))?;
    let key = s[..colon].trim().trim_matches(|c| c == '"' || c == '\'');
    (!key.is_empty()).then(|| key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::yaml_path_at;

    const DOC: &str = "\
admin:
  address: 1
listeners:
- name: a
  address: x
- name: b
  service: y
services:
  - name: s
    endpoints:
      - address: e1
      - address: e2
        weight: 2
";

    #[test]
    fn paths_follow_indentation() {
        assert_eq!(yaml_path_at(DOC, 2), "admin.address");
        assert_eq!(yaml_path_at(DOC, 5), "listeners[0].address");
        assert_eq!(yaml_path_at(DOC, 7), "listeners[1].service");
        assert_eq!(yaml_path_at(DOC, 9), "services[0].name");
        assert_eq!(yaml_path_at(DOC, 12), "services[0].endpoints[1].address");
        assert_eq!(yaml_path_at(DOC, 13), "services[0].endpoints[1].weight");
    }
}
