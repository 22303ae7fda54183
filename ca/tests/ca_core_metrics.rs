//! CA metrics, rendered by the Prometheus exporter: expiry days of the intermediate and root,
//! issuance counts by auth method and failures by reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use jalin_ca::chain::certs_from_pem;
use jalin_ca::issue::{AuditContext, AuditLog, TtlPolicy, WorkloadCa, check_csr, new_workload_csr};
use jalin_ca::signer::CaSigner;
use jalin_ca::spiffe::SpiffeId;
use metrics_exporter_prometheus::PrometheusBuilder;

const DAY: Duration = Duration::from_secs(86_400);

#[test]
fn expiry_gauges_and_issuance_counters() {
    let now = SystemTime::now();
    let dev = jalin_ca::cli::make_dev_ca("cluster.local", 400 * DAY, 45 * DAY, now).unwrap();
    let chain = certs_from_pem(dev.intermediate_pem.as_bytes(), "i".as_ref()).unwrap();
    let roots = certs_from_pem(dev.root_pem.as_bytes(), "r".as_ref()).unwrap();
    let signer = CaSigner::from_pkcs8_pem(&dev.intermediate_key_pem).unwrap();
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let ttl = TtlPolicy {
            default_ttl: Duration::from_secs(3600),
            max_ttl: DAY,
        };
        let ca = WorkloadCa::new(
            "cluster.local",
            chain,
            roots,
            signer,
            ttl,
            AuditLog::in_memory().0,
            now,
        )
        .unwrap();
        let id = SpiffeId::new_workload("cluster.local", "default", "web").unwrap();
        let csr = check_csr(&new_workload_csr(&id).unwrap().0).unwrap();
        let ctx = AuditContext {
            auth_method: Some("join_token"),
            ..Default::default()
        };
        ca.issue(&ctx, &id, &csr, 0, now).unwrap();
        ca.issue(&ctx, &id, &csr, 60, now).unwrap();
        ca.issue(&ctx, &id, &csr, 2 * 86_400, now).unwrap_err();
        let foreign = SpiffeId::new_workload("other.example", "default", "web").unwrap();
        ca.issue(&ctx, &foreign, &csr, 0, now).unwrap_err();
    });
    let text = handle.render();
    for want in [
        "jalin_ca_cert_expiry_days{cert=\"intermediate\"} 45",
        "jalin_ca_cert_expiry_days{cert=\"root\"} 400",
        "jalin_ca_certificates_issued_total{auth_method=\"join_token\"} 2",
        "jalin_ca_issuance_failures_total{reason=\"ttl_too_long\"} 1",
        "jalin_ca_issuance_failures_total{reason=\"trust_domain\"} 1",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}
