//! Findings: errors, warnings (mappings of non-standard fields), unsupported fields and skipped
//! documents, each with the file, line, resource and field path it is about.
//!
//! Every finding renders as `file:line: Kind/namespace/name: spec.path: message`, the one format
//! users see from `jalin validate`, `jalin import` and `jalin lint`.

use std::fmt;

use serde::Serialize;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The resource is invalid: it is not imported.
    Error,
    /// A non-standard field was accepted and mapped; the message names the mapping.
    Warning,
    /// A field was accepted but jalin does not act on it; the message says why.
    Unsupported,
    /// A document of a kind jalin does not import (ConfigMap, CronJob, ...).
    Skipped,
    /// A linter finding: valid configuration that probably does not mean what it says.
    Lint,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Unsupported => "unsupported",
            Severity::Skipped => "skipped",
            Severity::Lint => "lint",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub file: String,
    pub line: usize,
    /// `Kind/namespace/name`, when the finding is about a resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Field path as written (`spec.rules[0].when[1].key`); empty for a whole document.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    pub message: String,
    /// A stable code for the lint or check rule (`lint/separate-rules`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl Finding {
    /// A finding about `path` of `resource` (a path after compatibility mappings), at the line
    /// `locator` has for it and showing the path the user wrote.
    pub fn located(
        severity: Severity,
        file: String,
        resource: String,
        locator: &super::yaml::Locator,
        path: &str,
        message: impl Into<String>,
    ) -> Finding {
        Finding {
            severity,
            file,
            line: locator.line(path),
            resource: Some(resource),
            path: locator.written(path),
            message: message.into(),
            code: None,
        }
    }
}

impl fmt::Display for Finding {
    /// `file:line: Kind/ns/name: path: message` (the severity is added by the caller).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if let Some(r) = &self.resource {
            write!(f, "{r}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// What the configuration is read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `jalin validate`, `lint`, `check`: every rule Istio enforces is an error.
    #[default]
    Validate,
    /// `jalin import`: a `when` condition jalin cannot evaluate (unknown key, Envoy metadata) is
    /// `unsupported:` and imported fail-closed instead of rejecting the whole policy.
    Import,
}

/// Where findings about one document go: its file, resource name and field locator.
#[derive(Debug)]
pub struct Sink<'a> {
    pub file: &'a str,
    pub resource: String,
    pub locator: &'a super::yaml::Locator,
    pub findings: Vec<Finding>,
    pub mode: Mode,
}

impl<'a> Sink<'a> {
    pub fn new(file: &'a str, resource: String, locator: &'a super::yaml::Locator) -> Self {
        Sink {
            file,
            resource,
            locator,
            findings: Vec::new(),
            mode: Mode::Validate,
        }
    }

    /// Record a finding about `path` (a path in the document after compatibility mappings;
    /// the message shows the path the user wrote).
    pub fn push(&mut self, severity: Severity, path: &str, message: impl Into<String>) {
        self.findings.push(Finding::located(
            severity,
            self.file.to_string(),
            self.resource.clone(),
            self.locator,
            path,
            message,
        ));
    }

    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, path, message);
    }

    pub fn unsupported(&mut self, path: &str, message: impl Into<String>) {
        self.push(Severity::Unsupported, path, message);
    }

    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}
