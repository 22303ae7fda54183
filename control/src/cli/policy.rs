//! `jalin validate`, `jalin import`, `jalin lint` and `jalin check`: load, report, exit code.
//!
//! Exit codes: 0 when everything is valid (and, for `lint` and `check`, nothing was flagged),
//! 1 when a finding fails the command, 2 when the command could not run (bad arguments, I/O).

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use super::{Format, Inputs};
use crate::istio::{Finding, Loaded, Mode, Severity, convert, load_paths, load_paths_with};

/// A finding as a person reads it: errors exactly `file:line: Kind/ns/name: path: message`,
/// other findings prefixed with their severity.
pub fn render(f: &Finding) -> String {
    match f.severity {
        Severity::Error => f.to_string(),
        s => format!("{}: {f}", s.as_str()),
    }
}

#[derive(Serialize)]
struct Report<'a> {
    ok: bool,
    files: usize,
    resources: usize,
    findings: &'a [Finding],
}

fn emit(format: Format, ok: bool, loaded: &Loaded, findings: &[Finding]) {
    match format {
        Format::Text => {
            for f in findings {
                println!("{}", render(f));
            }
            let errors = findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count();
            eprintln!(
                "{} file(s), {} resource(s) valid, {} error(s), {} warning(s), {} skipped",
                loaded.files.len(),
                loaded.resources.len(),
                errors,
                findings
                    .iter()
                    .filter(|f| f.severity == Severity::Warning)
                    .count(),
                findings
                    .iter()
                    .filter(|f| f.severity == Severity::Skipped)
                    .count(),
            );
        }
        Format::Json => {
            let r = Report {
                ok,
                files: loaded.files.len(),
                resources: loaded.resources.len(),
                findings,
            };
            match serde_json::to_string_pretty(&r) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("jalin: cannot render JSON: {e}"),
            }
        }
    }
}

fn code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `jalin validate`.
pub fn validate(inputs: &Inputs) -> ExitCode {
    let loaded = load_paths(&inputs.paths);
    let ok = !loaded.has_errors();
    emit(inputs.format, ok, &loaded, &loaded.findings);
    code(ok)
}

/// `jalin import`: writes `native.yaml`, `native.json`, `import-report.txt` and
/// `import-report.json` to `out`. With errors, only the report is written unless `keep_going`.
pub fn import(inputs: &Inputs, out: &Path, keep_going: bool) -> ExitCode {
    let mut loaded = load_paths_with(&inputs.paths, Mode::Import);
    // Converted and bound once: the binding findings go where `convert::convert` puts them,
    // and the same bindings make the gateway summary.
    let native = convert::convert_only(&loaded.resources, &mut loaded.findings);
    let bound = crate::istio::gateway::bind(&native, &crate::lint::fqdn);
    let gateways = crate::istio::gateway::summary(&native, &bound);
    loaded.findings.extend(bound.findings);
    let ok = !loaded.has_errors();
    if let Err(e) = std::fs::create_dir_all(out) {
        eprintln!(
            "jalin: cannot create {}: {e}; check the path and its permissions",
            out.display()
        );
        return ExitCode::from(2);
    }
    let mut text = String::new();
    for r in &loaded.resources {
        text.push_str(&format!("imported: {}:{}: {}\n", r.file, r.line, r.id()));
    }
    for line in &gateways {
        text.push_str(line);
        text.push('\n');
    }
    for f in &loaded.findings {
        text.push_str(&render(f));
        text.push('\n');
    }
    let report = Report {
        ok,
        files: loaded.files.len(),
        resources: loaded.resources.len(),
        findings: &loaded.findings,
    };
    let mut writes: Vec<(&str, Result<String, String>)> = vec![
        ("import-report.txt", Ok(text)),
        (
            "import-report.json",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string()),
        ),
    ];
    if ok || keep_going {
        writes.push((
            "native.yaml",
            serde_saphyr::to_string(&native).map_err(|e| e.to_string()),
        ));
        writes.push((
            "native.json",
            serde_json::to_string_pretty(&native).map_err(|e| e.to_string()),
        ));
    }
    for (name, body) in writes {
        let path = out.join(name);
        let res = body.and_then(|b| std::fs::write(&path, b).map_err(|e| e.to_string()));
        if let Err(e) = res {
            eprintln!("jalin: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    emit(inputs.format, ok, &loaded, &loaded.findings);
    if inputs.format == Format::Text {
        for line in &gateways {
            eprintln!("{line}");
        }
    }
    if ok || keep_going {
        eprintln!("wrote {}", out.display());
    } else {
        eprintln!(
            "not imported: fix the errors above (report in {})",
            out.join("import-report.txt").display()
        );
    }
    code(ok)
}

/// `jalin lint`.
pub fn lint(inputs: &Inputs, workloads: Option<&Path>) -> ExitCode {
    let loaded = load_paths(&inputs.paths);
    let known = match workloads.map(crate::lint::load_workloads) {
        Some(Ok(w)) => w,
        Some(Err(f)) => {
            eprintln!("{}", render(&f));
            return ExitCode::from(2);
        }
        None => Vec::new(),
    };
    let mut findings: Vec<Finding> = loaded
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .cloned()
        .collect();
    findings.extend(crate::lint::lint(&loaded, &known));
    let ok = findings.is_empty();
    emit(inputs.format, ok, &loaded, &findings);
    code(ok)
}

/// `jalin check --rules FILE`.
pub fn check(inputs: &Inputs, rules: &Path) -> ExitCode {
    let rules = match crate::check::load_rules(rules) {
        Ok(r) => r,
        Err(f) => {
            eprintln!("{}", render(&f));
            return ExitCode::from(2);
        }
    };
    let loaded = load_paths(&inputs.paths);
    let mut findings: Vec<Finding> = loaded
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .cloned()
        .collect();
    findings.extend(crate::check::evaluate(&rules, &loaded.resources));
    let ok = findings.is_empty();
    emit(inputs.format, ok, &loaded, &findings);
    code(ok)
}
