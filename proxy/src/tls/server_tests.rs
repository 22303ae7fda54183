//! Tests of the listener server TLS: file errors, key checks, and MUTUAL handshakes in memory.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A test "government" root and the files it issues.
struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    root_pem: String,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test Government Root");
        let key = KeyPair::generate().unwrap();
        let root = params.self_signed(&key).unwrap();
        Self {
            dir: tempfile::tempdir().unwrap(),
            issuer: Issuer::new(params, key),
            root_pem: root.pem(),
        }
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p: PathBuf = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    /// (chain pem, key pem) of a leaf with `sans`.
    fn leaf(&self, cn: &str, sans: Vec<SanType>) -> (String, KeyPair, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let pem = key.serialize_pem();
        (cert.pem(), key, pem)
    }

    fn server_tls(&self, mode: ServerTlsMode) -> ServerTls {
        let (cert, _, key) = self.leaf(
            "gw",
            vec![SanType::DnsName("gw.example.gov".try_into().unwrap())],
        );
        ServerTls {
            mode,
            certificate_chain: self.write("gw.pem", &cert),
            private_key: self.write("gw.key", &key),
            ca_certificates: Some(self.write("ca.pem", &self.root_pem)),
            subject_alt_names: Vec::new(),
            min_protocol_version: TlsProtocolVersion::Tls12,
            cipher_suites: Vec::new(),
        }
    }

    fn client(&self, cert: Option<(&str, &str)>) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.root_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let b = ClientConfig::builder_with_provider(TlsPolicy::GOVERNMENT.shared_provider())
            .with_protocol_versions(TlsPolicy::GOVERNMENT.versions())
            .unwrap()
            .with_root_certificates(roots);
        match cert {
            None => b.with_no_client_auth(),
            Some((c, k)) => {
                let chain = CertificateDer::pem_slice_iter(c.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                b.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(k.as_bytes()).unwrap())
                    .unwrap()
            }
        }
    }
}

/// Runs a handshake plus one byte each way over an in-memory pipe; Ok when both sides agree.
async fn handshake(server: Arc<ServerConfig>, client: ClientConfig) -> Result<(), String> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let srv = tokio::spawn(async move {
        let mut s = tokio_rustls::TlsAcceptor::from(server)
            .accept(a)
            .await
            .map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        s.write_all(&byte).await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())
    });
    let name = ServerName::try_from("gw.example.gov").unwrap();
    let cli = async move {
        let mut c = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, b)
            .await
            .map_err(|e| e.to_string())?;
        c.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        c.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    let client_result = cli.await;
    let server_result = srv.await.unwrap();
    server_result.and(client_result)
}

#[tokio::test]
async fn simple_serves_the_listener_certificate_with_the_given_alpn() {
    let pki = Pki::new();
    let tls = pki.server_tls(ServerTlsMode::Simple);
    let config = server_config(&tls, &[b"h2", b"http/1.1"]).unwrap();
    assert_eq!(
        config.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    handshake(config, pki.client(None)).await.unwrap();
}

#[tokio::test]
async fn mutual_requires_a_client_certificate_from_the_roots_with_a_listed_san() {
    let pki = Pki::new();
    let mut tls = pki.server_tls(ServerTlsMode::Mutual);
    tls.subject_alt_names = vec![
        "spiffe://agency.gov/client".into(),
        "client.agency.gov".into(),
    ];
    let config = server_config(&tls, &[b"h2"]).unwrap();

    let err = handshake(config.clone(), pki.client(None))
        .await
        .unwrap_err();
    assert!(
        err.contains("no certificates") || err.contains("NoCertificates"),
        "{err}"
    );

    let uri = SanType::URI("spiffe://agency.gov/client".try_into().unwrap());
    let (c, _, k) = pki.leaf("client", vec![uri]);
    handshake(config.clone(), pki.client(Some((&c, &k))))
        .await
        .unwrap();

    let dns = SanType::DnsName("client.agency.gov".try_into().unwrap());
    let (c, _, k) = pki.leaf("client", vec![dns]);
    handshake(config.clone(), pki.client(Some((&c, &k))))
        .await
        .unwrap();

    let other = SanType::DnsName("intruder.agency.gov".try_into().unwrap());
    let (c, _, k) = pki.leaf("intruder", vec![other]);
    let err = handshake(config.clone(), pki.client(Some((&c, &k))))
        .await
        .unwrap_err();
    assert!(err.contains("subject_alt_names"), "{err}");

    // A certificate from another root is refused even with the right SAN.
    let stranger = Pki::new();
    let uri = SanType::URI("spiffe://agency.gov/client".try_into().unwrap());
    let (c, _, k) = stranger.leaf("client", vec![uri]);
    let client = pki.client(Some((&c, &k)));
    // (Same issuer name as the real root: the chain is found but its signature is wrong.)
    let err = handshake(config, client).await.unwrap_err();
    assert!(
        err.contains("BadSignature") || err.contains("UnknownIssuer"),
        "{err}"
    );
}

#[test]
fn a_key_of_another_certificate_is_refused_naming_both_files() {
    let pki = Pki::new();
    let mut tls = pki.server_tls(ServerTlsMode::Simple);
    let (_, _, other_key) = pki.leaf("other", Vec::new());
    tls.private_key = pki.write("other.key", &other_key);
    let err = server_config(&tls, &[]).unwrap_err();
    assert_eq!(err.field(), "private_key");
    let text = err.to_string();
    assert!(
        text.contains("other.key") && text.contains("gw.pem"),
        "{text}"
    );
    assert!(!text.contains("PRIVATE KEY"), "{text}");
}

#[test]
fn unreadable_empty_and_garbled_files_name_the_field_and_never_echo_the_key() {
    let pki = Pki::new();
    let base = pki.server_tls(ServerTlsMode::Simple);

    let mut tls = base.clone();
    tls.certificate_chain = pki.dir.path().join("missing.pem").display().to_string();
    let err = server_config(&tls, &[]).unwrap_err();
    assert_eq!(err.field(), "certificate_chain");
    assert!(err.to_string().contains("missing.pem"), "{err}");

    let mut tls = base.clone();
    tls.private_key = pki.write("empty.key", "");
    let err = server_config(&tls, &[]).unwrap_err();
    assert_eq!(err.field(), "private_key");
    assert!(err.to_string().contains("no PRIVATE KEY"), "{err}");

    let mut tls = base.clone();
    let secret = "-----BEGIN PRIVATE KEY-----\nTOPSECRET!!!notbase64\n-----END PRIVATE KEY-----\n";
    tls.private_key = pki.write("bad.key", secret);
    let err = server_config(&tls, &[]).unwrap_err();
    assert_eq!(err.field(), "private_key");
    assert!(!err.to_string().contains("TOPSECRET"), "{err}");
    assert!(!err.hint().is_empty());

    let mut tls = base;
    tls.mode = ServerTlsMode::Mutual;
    tls.ca_certificates = None;
    let err = server_config(&tls, &[]).unwrap_err();
    assert_eq!(err, ServerTlsError::MutualWithoutCa);
    assert_eq!(err.field(), "ca_certificates");
}

#[tokio::test]
async fn tls13_minimum_refuses_a_tls12_client() {
    let pki = Pki::new();
    let mut tls = pki.server_tls(ServerTlsMode::Simple);
    tls.min_protocol_version = TlsProtocolVersion::Tls13;
    let config = server_config(&tls, &[]).unwrap();
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.root_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls12 = ClientConfig::builder_with_provider(TlsPolicy::GOVERNMENT.shared_provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    assert!(handshake(config.clone(), tls12).await.is_err());
    handshake(config, pki.client(None)).await.unwrap();
}

/// A client that offers exactly `suites` (IANA names) over `versions`.
fn client_offering(
    pki: &Pki,
    suites: &[&str],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.root_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut provider = TlsPolicy::GOVERNMENT.provider();
    provider
        .cipher_suites
        .retain(|s| suites.contains(&s.suite().as_str().unwrap_or_default()));
    ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::test]
async fn cipher_suites_narrow_tls12_and_leave_tls13_as_envoy_does() {
    let pki = Pki::new();
    let mut tls = pki.server_tls(ServerTlsMode::Simple);
    tls.cipher_suites = vec!["ECDHE-ECDSA-AES256-GCM-SHA384".into()];
    let config = server_config(&tls, &[]).unwrap();
    let tls12 = [&rustls::version::TLS12];
    let aes256 = "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384";
    let aes128 = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256";
    handshake(config.clone(), client_offering(&pki, &[aes256], &tls12))
        .await
        .unwrap();
    // The suite left out of the list is not offered: a client with only that one is refused.
    assert!(
        handshake(config.clone(), client_offering(&pki, &[aes128], &tls12))
            .await
            .is_err()
    );
    // The list names no TLS 1.3 suite, so TLS 1.3 keeps both of the policy's.
    let tls13 = [&rustls::version::TLS13];
    handshake(
        config.clone(),
        client_offering(&pki, &["TLS13_AES_128_GCM_SHA256"], &tls13),
    )
    .await
    .unwrap();
    // Listing a TLS 1.3 suite narrows TLS 1.3 too.
    tls.cipher_suites.push("TLS_AES_256_GCM_SHA384".into());
    let config = server_config(&tls, &[]).unwrap();
    assert!(
        handshake(
            config.clone(),
            client_offering(&pki, &["TLS13_AES_128_GCM_SHA256"], &tls13)
        )
        .await
        .is_err()
    );
    handshake(
        config,
        client_offering(&pki, &["TLS13_AES_256_GCM_SHA384"], &tls13),
    )
    .await
    .unwrap();
}

#[test]
fn a_cipher_suite_outside_the_policy_names_the_field() {
    let pki = Pki::new();
    let mut tls = pki.server_tls(ServerTlsMode::Simple);
    tls.cipher_suites = vec!["ECDHE-RSA-AES128-SHA".into()];
    let err = server_config(&tls, &[]).unwrap_err();
    assert_eq!(err.field(), "cipher_suites");
    assert_eq!(
        err.to_string(),
        "`ECDHE-RSA-AES128-SHA` is not a cipher suite of the government TLS policy"
    );
}

#[tokio::test]
async fn an_rsa_certificate_serves_tls12_clients_with_ecdhe_rsa() {
    let pki = Pki::new();
    let mut params = CertificateParams::new(vec!["gw.example.gov".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gw");
    let key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = params.signed_by(&key, &pki.issuer).unwrap();
    let mut tls = pki.server_tls(ServerTlsMode::Simple);
    tls.certificate_chain = pki.write("rsa.pem", &cert.pem());
    tls.private_key = pki.write("rsa.key", &key.serialize_pem());
    let config = server_config(&tls, &[]).unwrap();
    let tls12 = [&rustls::version::TLS12];
    let rsa_suite = "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384";
    handshake(config.clone(), client_offering(&pki, &[rsa_suite], &tls12))
        .await
        .unwrap();
    // An ECDSA-only TLS 1.2 client has no suite this certificate can sign for.
    let ecdsa_suite = "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384";
    assert!(
        handshake(
            config.clone(),
            client_offering(&pki, &[ecdsa_suite], &tls12)
        )
        .await
        .is_err()
    );
    handshake(config, pki.client(None)).await.unwrap();
}

#[test]
fn a_tls12_suite_list_that_fits_no_key_of_the_certificate_is_refused() {
    let pki = Pki::new();
    // The test certificates are ECDSA: a list with only ECDHE-RSA suites leaves TLS 1.2 none.
    let mut tls = pki.server_tls(ServerTlsMode::Simple);
    tls.cipher_suites = vec!["ECDHE-RSA-AES256-GCM-SHA384".into()];
    let err = server_config(&tls, &[]).unwrap_err();
    assert_eq!(err.field(), "cipher_suites");
    assert_eq!(
        err.to_string(),
        "no TLS 1.2 suite left in cipher_suites can be used with the ECDSA key of certificate_chain, so TLS 1.2 clients could never connect"
    );
    // TLS 1.3 only: TLS 1.2 suites do not matter.
    tls.min_protocol_version = TlsProtocolVersion::Tls13;
    server_config(&tls, &[]).unwrap();
    // One ECDSA suite in the list is enough.
    tls.min_protocol_version = TlsProtocolVersion::Tls12;
    tls.cipher_suites
        .push("ECDHE-ECDSA-AES128-GCM-SHA256".into());
    server_config(&tls, &[]).unwrap();
}
