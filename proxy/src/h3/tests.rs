//! Tests of the HTTP/3 endpoint's configuration; the protocol itself is tested end to end in
//! `tests/tests/http3.rs`.

use super::*;

fn tls(versions: &[&'static rustls::SupportedProtocolVersion]) -> rustls::ServerConfig {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["gw.example.gov".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    c.alpn_protocols = vec![b"h2".to_vec()];
    c
}

#[test]
fn alt_svc_names_the_port_for_a_day() {
    assert_eq!(alt_svc(443), "h3=\":443\"; ma=86400");
    assert_eq!(alt_svc(8443), "h3=\":8443\"; ma=86400");
}

#[test]
fn the_quic_config_is_h3_only_and_refuses_tls12_only_settings() {
    assert!(server_config(&tls(rustls::ALL_VERSIONS)).is_ok());
    let err = server_config(&tls(&[&rustls::version::TLS12])).unwrap_err();
    assert!(matches!(err, H3Error::Tls(_)), "{err}");
    assert!(err.to_string().contains("TLS 1.3"), "{err}");
    assert!(err.to_string().contains("http3: false"), "{err}");
}

#[tokio::test]
async fn the_quic_config_offers_h3_alone() {
    let config = server_config(&tls(rustls::ALL_VERSIONS)).unwrap();
    // A client offering only h2 is refused by ALPN: the endpoint speaks h3 alone.
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let mut client = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client).unwrap();
    let mut c = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    c.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let server = tokio::spawn(async move {
        let incoming = endpoint.accept().await.unwrap();
        incoming.accept().unwrap().await.map(|_| ())
    });
    let refused = c
        .connect(addr, "gw.example.gov")
        .unwrap()
        .await
        .expect_err("a client without h3 was accepted");
    // TLS alert 120, no_application_protocol: refused for ALPN, not for the certificate.
    assert!(refused.to_string().contains("error 120"), "{refused}");
    assert!(server.await.unwrap().is_err());
}

/// Accepts any server certificate: this test is about ALPN, not trust.
#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[test]
fn the_request_body_costs_hyper_s_path_at_most_a_word() {
    // HTTP/3's body is boxed so the HTTP/1.1 and HTTP/2 path moves hyper's body and a tag.
    let ours = std::mem::size_of::<crate::http::body::RequestBody>();
    let hyper = std::mem::size_of::<hyper::body::Incoming>();
    assert!(
        ours <= hyper + std::mem::size_of::<usize>(),
        "{ours} vs {hyper}"
    );
}
