//! CA metrics: expiry of the intermediate and root (`jalin_ca_cert_expiry_days{cert=...}`),
//! issuance counts by auth method and failures by reason, and the 30-day expiry warning.

use std::time::SystemTime;

use crate::chain::{CertRole, ChainReport};

/// A warning is logged when the intermediate or root has fewer days left than this.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// Publishes expiry gauges for the issuing intermediate and the root; warns near expiry.
/// Returns the warnings it logged.
pub fn record_chain_expiry(report: &ChainReport, now: SystemTime) -> Vec<String> {
    let mut warnings = Vec::new();
    for cert in &report.certs {
        let label = match cert.role {
            CertRole::IssuingIntermediate => "intermediate",
            CertRole::Root => "root",
            CertRole::Intermediate => continue,
        };
        let days = cert.days_left(now);
        metrics::gauge!("jalin_ca_cert_expiry_days", "cert" => label).set(days as f64);
        if days < EXPIRY_WARNING_DAYS {
            let msg = format!(
                "CA {label} certificate \"{}\" expires in {days} day(s): obtain a new one from the agency PKI and import it before it lapses",
                cert.subject
            );
            tracing::warn!(cert = label, days_left = days, "{msg}");
            warnings.push(msg);
        }
    }
    warnings
}

/// Counts one issued certificate.
pub fn record_issued(auth_method: &'static str) {
    metrics::counter!("jalin_ca_certificates_issued_total", "auth_method" => auth_method)
        .increment(1);
}

/// Counts one refusal.
pub fn record_refused(reason: &'static str) {
    metrics::counter!("jalin_ca_issuance_failures_total", "reason" => reason).increment(1);
}
