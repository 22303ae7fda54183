//! Non-standard fields users really write, rewritten on the located tree into Istio's own
//! spelling before typed parsing, each with a warning naming the mapping (see the README's "Policy import" section).
//!
//! Invariant: a rewrite never loses a value. A field is moved or renamed (keeping its line and
//! the path the user wrote), or, when it collides with a field already set, reported.

use super::diag::{Finding, Severity};
use super::yaml::{Entry, Node, Value, join};

/// Outlier-detection fields users place under `connectionPool.http` (or in a `circuitBreaker:`
/// block): these belong to `outlierDetection`.
pub const OUTLIER_FIELDS: &[&str] = &[
    "consecutiveErrors",
    "consecutive5xxErrors",
    "consecutiveGatewayErrors",
    "consecutiveLocalOriginFailures",
    "splitExternalLocalOriginErrors",
    "interval",
    "baseEjectionTime",
    "maxEjectionPercent",
    "minHealthPercent",
];

/// Collects the warnings (and conflicts) of the rewrites of one document.
#[derive(Debug)]
pub struct Notes<'a> {
    pub file: &'a str,
    pub resource: String,
    pub findings: Vec<Finding>,
}

impl Notes<'_> {
    fn push(&mut self, severity: Severity, line: usize, path: &str, message: String) {
        self.findings.push(Finding {
            severity,
            file: self.file.to_string(),
            line,
            resource: Some(self.resource.clone()),
            path: path.to_string(),
            message,
            code: None,
        });
    }
    fn warn(&mut self, line: usize, path: &str, message: String) {
        self.push(Severity::Warning, line, path, message);
    }
    fn error(&mut self, line: usize, path: &str, message: String) {
        self.push(Severity::Error, line, path, message);
    }
}

/// Rewrite a DestinationRule `spec`.
pub fn destination_rule(spec: &mut Node, notes: &mut Notes<'_>) {
    // `spec.portLevelSettings` belongs under `spec.trafficPolicy`.
    if let Some(map) = spec.as_map_mut()
        && let Some(pos) = map.iter().position(|e| e.key == "portLevelSettings")
    {
        let mut moved = map.remove(pos);
        notes.warn(
            moved.line,
            "spec.portLevelSettings",
            "`portLevelSettings` is not a field of the DestinationRule spec; mapped to \
             `spec.trafficPolicy.portLevelSettings`"
                .into(),
        );
        moved.written = Some("spec.portLevelSettings".into());
        let line = moved.line;
        let tp = ensure_map(map, "trafficPolicy", line);
        if tp.get("portLevelSettings").is_some() {
            notes.error(
                line,
                "spec.portLevelSettings",
                "both `spec.portLevelSettings` and `spec.trafficPolicy.portLevelSettings` are \
                 set; keep only `spec.trafficPolicy.portLevelSettings`"
                    .into(),
            );
        } else if let Some(tp_map) = tp.as_map_mut() {
            tp_map.push(moved);
        }
    }
    if let Some(tp) = spec.entry_mut("trafficPolicy") {
        traffic_policy(&mut tp.value, "spec.trafficPolicy", notes);
    }
    if let Some(subsets) = spec.entry_mut("subsets")
        && let Value::Seq(items) = &mut subsets.value.value
    {
        for (i, item) in items.iter_mut().enumerate() {
            if let Some(tp) = item.entry_mut("trafficPolicy") {
                traffic_policy(
                    &mut tp.value,
                    &format!("spec.subsets[{i}].trafficPolicy"),
                    notes,
                );
            }
        }
    }
}

/// Rewrite one traffic policy (`trafficPolicy` or a `portLevelSettings` item).
fn traffic_policy(tp: &mut Node, path: &str, notes: &mut Notes<'_>) {
    let Some(map) = tp.as_map_mut() else { return };

    // `circuitBreaker:` -> `outlierDetection:`.
    if let Some(pos) = map.iter().position(|e| e.key == "circuitBreaker") {
        let cb_path = join(path, "circuitBreaker");
        if map.iter().any(|e| e.key == "outlierDetection") {
            notes.error(
                map[pos].line,
                &cb_path,
                "both `circuitBreaker` and `outlierDetection` are set; `circuitBreaker` is not \
                 an Istio field: move its fields into `outlierDetection`"
                    .into(),
            );
        } else {
            notes.warn(
                map[pos].line,
                &cb_path,
                "`circuitBreaker` is not an Istio field; mapped to `outlierDetection` (in Istio, \
                 circuit breaking is `connectionPool` limits plus `outlierDetection`)"
                    .into(),
            );
            map[pos].key = "outlierDetection".into();
            map[pos].written = Some(cb_path);
        }
    }

    // Outlier fields placed under `connectionPool.http`.
    let mut stray: Vec<Entry> = Vec::new();
    if let Some(pool) = map.iter_mut().find(|e| e.key == "connectionPool")
        && let Some(http) = pool.value.entry_mut("http")
        && let Some(http_map) = http.value.as_map_mut()
    {
        let mut i = 0;
        while i < http_map.len() {
            if OUTLIER_FIELDS.contains(&http_map[i].key.as_str()) {
                let mut e = http_map.remove(i);
                e.written = Some(format!("{path}.connectionPool.http.{}", e.key));
                stray.push(e);
            } else {
                i += 1;
            }
        }
    }
    // `connectionPool.tcp.keepAlive` -> `tcpKeepalive`.
    if let Some(pool) = map.iter_mut().find(|e| e.key == "connectionPool")
        && let Some(tcp) = pool.value.entry_mut("tcp")
        && let Some(tcp_map) = tcp.value.as_map_mut()
        && let Some(pos) = tcp_map.iter().position(|e| e.key == "keepAlive")
    {
        let written = format!("{path}.connectionPool.tcp.keepAlive");
        let line = tcp_map[pos].line;
        if tcp_map.iter().any(|e| e.key == "tcpKeepalive") {
            notes.error(
                line,
                &written,
                "both `keepAlive` and `tcpKeepalive` are set; keep only `tcpKeepalive`".into(),
            );
        } else {
            notes.warn(
                line,
                &written,
                "`keepAlive` is not an Istio field; mapped to `tcpKeepalive`".into(),
            );
            tcp_map[pos].key = "tcpKeepalive".into();
            tcp_map[pos].written = Some(written);
        }
    }
    if !stray.is_empty() {
        let line = stray[0].line;
        let od = ensure_map(map, "outlierDetection", line);
        let od_path = format!("{path}.outlierDetection");
        for e in stray {
            let written = e.written.clone().unwrap_or_default();
            let existing = od.get(&e.key).map(|n| n.value.clone());
            match existing {
                Some(v) if v == e.value.value => notes.warn(
                    e.line,
                    &written,
                    format!(
                        "`{}` is an outlier-detection field, not a connection-pool one; \
                         `{od_path}.{}` already sets the same value, which is used",
                        e.key, e.key
                    ),
                ),
                Some(_) => notes.warn(
                    e.line,
                    &written,
                    format!(
                        "`{}` is an outlier-detection field, not a connection-pool one; \
                         `{od_path}.{}` sets a different value, which is used and this one is \
                         ignored: remove one of the two",
                        e.key, e.key
                    ),
                ),
                None => {
                    notes.warn(
                        e.line,
                        &written,
                        format!(
                            "`{}` is an outlier-detection field, not a connection-pool one; \
                             mapped to `{od_path}.{}`",
                            e.key, e.key
                        ),
                    );
                    if let Some(od_map) = od.as_map_mut() {
                        od_map.push(e);
                    }
                }
            }
        }
    }

    // `outlierDetection.consecutiveErrors` -> `consecutive5xxErrors`.
    if let Some(od) = map.iter_mut().find(|e| e.key == "outlierDetection") {
        let od_written = od
            .written
            .clone()
            .unwrap_or_else(|| join(path, "outlierDetection"));
        if let Some(od_map) = od.value.as_map_mut()
            && let Some(pos) = od_map.iter().position(|e| e.key == "consecutiveErrors")
        {
            let written = od_map[pos]
                .written
                .clone()
                .unwrap_or_else(|| format!("{od_written}.consecutiveErrors"));
            if od_map.iter().any(|e| e.key == "consecutive5xxErrors") {
                notes.error(
                    od_map[pos].line,
                    &written,
                    "both `consecutiveErrors` and `consecutive5xxErrors` are set; \
                     `consecutiveErrors` is deprecated: keep only `consecutive5xxErrors`"
                        .into(),
                );
            } else {
                notes.warn(
                    od_map[pos].line,
                    &written,
                    "`consecutiveErrors` is deprecated; mapped to `consecutive5xxErrors`".into(),
                );
                od_map[pos].key = "consecutive5xxErrors".into();
                od_map[pos].written = Some(written);
            }
        }
    }

    // `loadBalancer.simple: LEAST_CONN` -> `LEAST_REQUEST`.
    if let Some(lb) = map.iter_mut().find(|e| e.key == "loadBalancer")
        && let Some(simple) = lb.value.entry_mut("simple")
        && simple.value.as_str() == Some("LEAST_CONN")
    {
        notes.warn(
            simple.line,
            &format!("{path}.loadBalancer.simple"),
            "`LEAST_CONN` is deprecated; mapped to `LEAST_REQUEST`".into(),
        );
        simple.value.value = Value::Str("LEAST_REQUEST".into());
    }

    // Port-level settings are traffic policies too.
    if let Some(pls) = map.iter_mut().find(|e| e.key == "portLevelSettings") {
        let base = pls
            .written
            .clone()
            .unwrap_or_else(|| join(path, "portLevelSettings"));
        if let Value::Seq(items) = &mut pls.value.value {
            for (i, item) in items.iter_mut().enumerate() {
                traffic_policy(item, &format!("{base}[{i}]"), notes);
            }
        }
    }
}

/// Rewrite a Telemetry `spec`.
pub fn telemetry(spec: &mut Node, notes: &mut Notes<'_>) {
    if let Some(metrics) = spec.entry_mut("metrics")
        && let Value::Seq(items) = &mut metrics.value.value
    {
        for (i, item) in items.iter_mut().enumerate() {
            let Some(ovs) = item.entry_mut("overrides") else {
                continue;
            };
            let Value::Seq(ovs) = &mut ovs.value.value else {
                continue;
            };
            for (j, ov) in ovs.iter_mut().enumerate() {
                let Some(tags) = ov.entry_mut("tagOverrides") else {
                    continue;
                };
                let Some(tags) = tags.value.as_map_mut() else {
                    continue;
                };
                for tag in tags.iter_mut() {
                    let path = format!("spec.metrics[{i}].overrides[{j}].tagOverrides.{}", tag.key);
                    if let Value::Str(s) = &tag.value.value {
                        let (expr, note) = match header_expression(s) {
                            Some(e) => {
                                (e.clone(), format!("; `{s}` mapped to the expression `{e}`"))
                            }
                            None => (s.clone(), String::new()),
                        };
                        notes.warn(
                            tag.line,
                            &path,
                            format!(
                                "a tag override is `{{operation, value}}`; the string shorthand \
                                 is mapped to `{{operation: UPSERT, value: ...}}`{note}"
                            ),
                        );
                        let line = tag.value.line;
                        tag.value.value = Value::Map(vec![
                            scalar_entry("operation", "UPSERT", line),
                            scalar_entry("value", &expr, line),
                        ]);
                    }
                }
            }
        }
    }

    if let Some(al) = spec.entry_mut("accessLogging")
        && let Value::Seq(items) = &mut al.value.value
    {
        let first_providers = items.iter().find_map(|n| n.get("providers").cloned());
        let mut out: Vec<Node> = Vec::new();
        for (i, mut item) in std::mem::take(items).into_iter().enumerate() {
            let overrides = item.as_map_mut().and_then(|m| {
                let pos = m.iter().position(|e| e.key == "overrides")?;
                Some(m.remove(pos))
            });
            if let Some(f) = item.get("format") {
                notes.warn(
                    f.line.saturating_sub(1).max(item.line),
                    &format!("spec.accessLogging[{i}].format"),
                    "`format` is a jalin extension (Istio sets access-log formats on the \
                     MeshConfig extension provider); used as this entry's access-log format"
                        .into(),
                );
            }
            let own_providers = item.get("providers").cloned();
            let keep = item.as_map().is_some_and(|m| !m.is_empty());
            if keep {
                out.push(item);
            }
            let Some(ovs) = overrides else { continue };
            let Value::Seq(ovs_items) = ovs.value.value else {
                notes.error(
                    ovs.line,
                    &format!("spec.accessLogging[{i}].overrides"),
                    "expected a list of `{match, disabled, format}` entries".into(),
                );
                continue;
            };
            notes.warn(
                ovs.line,
                &format!("spec.accessLogging[{i}].overrides"),
                "`overrides` is not an Istio access-logging field; each entry is mapped to an \
                 `accessLogging` entry of its own (its `match`, `disabled` and jalin `format`), \
                 with the providers of this entry or else of the first entry naming providers"
                    .into(),
            );
            for (j, mut ov) in ovs_items.into_iter().enumerate() {
                let orig = format!("spec.accessLogging[{i}].overrides[{j}]");
                let ov_line = ov.line;
                if let Some(m) = ov.as_map_mut() {
                    for e in m.iter_mut() {
                        e.written = Some(join(&orig, &e.key));
                    }
                    if !m.iter().any(|e| e.key == "providers")
                        && let Some(p) = own_providers.clone().or_else(|| first_providers.clone())
                    {
                        m.push(Entry {
                            key: "providers".into(),
                            line: ov_line,
                            written: Some(orig.clone()),
                            value: p,
                        });
                    }
                }
                out.push(ov);
            }
        }
        *items = out;
    }
}

/// `%{REQUEST_HEADERS[x-name]}` (a non-standard spelling) as Istio's CEL `request.headers['x-name']`.
pub fn header_expression(s: &str) -> Option<String> {
    let inner = s.strip_prefix("%{REQUEST_HEADERS[")?.strip_suffix("]}")?;
    (!inner.is_empty() && !inner.contains(['\'', ']', '[']))
        .then(|| format!("request.headers['{inner}']"))
}

fn scalar_entry(key: &str, value: &str, line: usize) -> Entry {
    Entry {
        key: key.into(),
        line,
        written: None,
        value: Node {
            line,
            value: Value::Str(value.into()),
        },
    }
}

/// The mapping under `key`, created (empty) when absent.
fn ensure_map<'m>(map: &'m mut Vec<Entry>, key: &str, line: usize) -> &'m mut Node {
    let pos = match map.iter().position(|e| e.key == key) {
        Some(p) => p,
        None => {
            map.push(Entry {
                key: key.into(),
                line,
                written: None,
                value: Node {
                    line,
                    value: Value::Map(Vec::new()),
                },
            });
            map.len() - 1
        }
    };
    &mut map[pos].value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::istio::yaml::parse_documents;

    fn notes() -> Notes<'static> {
        Notes {
            file: "f.yaml",
            resource: "DestinationRule/ns/x".into(),
            findings: Vec::new(),
        }
    }

    #[test]
    fn circuit_breaker_and_stray_http_fields_become_outlier_detection() {
        let text = "trafficPolicy:\n  circuitBreaker:\n    consecutiveErrors: 2\n    interval: 10s\n  connectionPool:\n    http:\n      maxRetries: 5\n      consecutiveGatewayErrors: 3\n      interval: 30s\n  loadBalancer:\n    simple: LEAST_CONN\n";
        let mut doc = parse_documents(text).unwrap().remove(0).root;
        let mut n = notes();
        destination_rule(&mut doc, &mut n);
        let json = doc.to_json();
        let od = &json["trafficPolicy"]["outlierDetection"];
        assert_eq!(od["consecutive5xxErrors"], 2);
        assert_eq!(od["interval"], "10s");
        assert_eq!(od["consecutiveGatewayErrors"], 3);
        assert_eq!(
            json["trafficPolicy"]["connectionPool"]["http"]["maxRetries"],
            5
        );
        assert!(
            json["trafficPolicy"]["connectionPool"]["http"]
                .get("interval")
                .is_none()
        );
        assert_eq!(
            json["trafficPolicy"]["loadBalancer"]["simple"],
            "LEAST_REQUEST"
        );
        n.findings.sort_by_key(|f| f.line);
        let lines: Vec<String> = n
            .findings
            .iter()
            .map(|f| format!("{}:{}", f.line, f.path))
            .collect();
        assert_eq!(
            lines,
            [
                "2:spec.trafficPolicy.circuitBreaker",
                "3:spec.trafficPolicy.circuitBreaker.consecutiveErrors",
                "8:spec.trafficPolicy.connectionPool.http.consecutiveGatewayErrors",
                "9:spec.trafficPolicy.connectionPool.http.interval",
                "11:spec.trafficPolicy.loadBalancer.simple",
            ]
            .map(String::from)
        );
        assert!(
            n.findings[3].message.contains("different value"),
            "{}",
            n.findings[3].message
        );
    }

    #[test]
    fn header_shorthand_becomes_cel() {
        assert_eq!(
            header_expression("%{REQUEST_HEADERS[x-a]}").as_deref(),
            Some("request.headers['x-a']")
        );
        assert_eq!(header_expression("plain"), None);
    }
}
