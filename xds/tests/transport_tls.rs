//! ADS over mutual TLS with rcgen-minted certificates: a proxy with a certificate from the mesh CA
//! gets its configuration; one without a client certificate is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod transport_support;

use jalin_xds::transport::{Kind, Snapshot, XdsClient, XdsServer, encode};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use transport_support::*;

struct Pki {
    ca_pem: String,
    server: Identity,
    client: Identity,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "jalin test mesh CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |sans: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(sans).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        Identity::from_pem(cert.pem(), key.serialize_pem())
    };
    Pki {
        ca_pem: ca_cert.pem(),
        server: leaf(vec!["jalin-control.jalin-system".into()]),
        client: leaf(vec!["proxy.child-services".into()]),
    }
}

#[tokio::test]
async fn mtls_client_gets_config_and_a_client_without_certificate_is_refused() {
    let pki = pki();
    let server = XdsServer::default();
    server.push(Snapshot::new([encode(
        Kind::TrustBundle,
        "gov.example",
        &"-----BEGIN CERTIFICATE-----",
    )
    .unwrap()]));
    let tls = ServerTlsConfig::new()
        .identity(pki.server.clone())
        .client_ca_root(Certificate::from_pem(&pki.ca_pem));
    let running = serve(
        &server,
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Some(tls),
    );
    let url = format!("https://{}", running.addr);

    let client_tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .identity(pki.client.clone())
        .domain_name("jalin-control.jalin-system");
    let good = XdsClient::connect(
        &url,
        Some(client_tls),
        config("proxy-tls"),
        TestApplier::default(),
    )
    .unwrap();
    let st = wait_status(&mut good.status(), "config over mTLS", |s| {
        s.applied.len() == 1
    })
    .await;
    assert!(
        st.applied
            .get(Kind::TrustBundle.type_url(), "gov.example")
            .is_some()
    );
    assert!(server.status("proxy-tls").unwrap().streams >= 1);

    let anonymous_tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("jalin-control.jalin-system");
    let anonymous = XdsClient::connect(
        &url,
        Some(anonymous_tls),
        config("intruder"),
        TestApplier::default(),
    )
    .unwrap();
    let st = wait_status(&mut anonymous.status(), "refusal", |s| {
        s.last_disconnect.is_some()
    })
    .await;
    assert!(st.applied.is_empty());
    assert!(
        server.status("intruder").is_none(),
        "no stream was opened for a client without a certificate"
    );

    drop((good, anonymous));
    running.stop().await;
}
