//! Acceptance: real TLS clients (`openssl s_client -verify_return_error`, curl) reach an inbound
//! listener built with jalin's server config and a jalin-issued certificate, present a
//! jalin-issued client certificate, and are refused without one.

// Test crate: helpers panic on broken fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ca_tls_support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ca_tls_support::*;
use jalin_ca::tls::{PortMtlsMode, RefusalReason, TlsPolicy, server_config};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const HOST: &str = "jalin-inbound.test";
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: jalin-inbound.test\r\nconnection: close\r\n\r\n";

struct Files {
    _dir: tempfile::TempDir,
    root: String,
    leaf: String,
    chain: String,
    intermediate: String,
    key: String,
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

async fn run(cmd: &mut Command, stdin: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn client tool");
    let mut input = child.stdin.take().unwrap();
    // A client that was refused may exit before it reads its input: a closed pipe is expected
    // then, and the exit status and output below say what happened.
    if let Err(e) = input.write_all(stdin).await {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    // s_client: keep stdin open is not needed; the server closes after `connection: close`.
    drop(input);
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("client tool finishes within 30 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_and_curl_with_and_without_client_certificates() {
    recorder();
    let (ca, trust) = test_ca(Duration::from_secs(3600));
    let server_id = id("mesh", "inbound");
    let client_id = id("ops", "curl");
    let (chain, key) = ca.issue(&server_id, &[HOST]).unwrap();
    let cfg = server_config(&TlsPolicy::DEFAULT, trust, static_certs(chain, &key)).unwrap();
    let mut server = spawn_server(cfg, PortMtlsMode::Strict).await;
    let port = server.addr.port();

    let dir = tempfile::tempdir().unwrap();
    let (leaf_pem, key_pem) = ca.issue_pem(&client_id, &[]).unwrap();
    let files = Files {
        root: write(dir.path(), "root.pem", ca.root_pem()),
        leaf: write(dir.path(), "leaf.pem", &leaf_pem),
        chain: write(
            dir.path(),
            "chain.pem",
            &format!("{leaf_pem}{}", ca.intermediate_pem()),
        ),
        intermediate: write(dir.path(), "intermediate.pem", ca.intermediate_pem()),
        key: write(dir.path(), "key.pem", &key_pem),
        _dir: dir,
    };
    let connect = format!("127.0.0.1:{port}");

    // openssl s_client with a client certificate: verified both ways, gets the echoed identity.
    let out = run(
        Command::new("openssl").args([
            "s_client",
            "-connect",
            &connect,
            "-servername",
            HOST,
            "-CAfile",
            &files.root,
            "-verify_return_error",
            "-cert",
            &files.leaf,
            "-cert_chain",
            &files.intermediate,
            "-key",
            &files.key,
            "-ign_eof",
        ]),
        REQUEST,
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Verify return code: 0 (ok)"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("HTTP/1.1 200 OK"), "{stdout}");
    assert!(stdout.contains(&client_id.to_string()), "{stdout}");
    assert!(
        matches!(server.next_event().await, ServerEvent::Accepted(p) if p.spiffe_id == client_id)
    );

    // openssl s_client without a client certificate: refused.
    let out = run(
        Command::new("openssl").args([
            "s_client",
            "-connect",
            &connect,
            "-servername",
            HOST,
            "-CAfile",
            &files.root,
            "-verify_return_error",
            "-ign_eof",
        ]),
        REQUEST,
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("HTTP/1.1 200"), "{stdout}");
    match server.next_event().await {
        ServerEvent::Refused(r) => assert_eq!(r.reason, RefusalReason::NoClientCert),
        other => panic!("openssl without cert: {other:?}"),
    }

    // curl with a client certificate (host name verified against the DNS SAN).
    let resolve = format!("{HOST}:{port}:127.0.0.1");
    let url = format!("https://{HOST}:{port}/");
    let out = run(
        Command::new("curl").args([
            "-sS",
            "--http1.1",
            "--max-time",
            "20",
            "--resolve",
            &resolve,
            "--cacert",
            &files.root,
            "--cert",
            &files.chain,
            "--key",
            &files.key,
            &url,
        ]),
        b"",
    )
    .await;
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), client_id.to_string());
    assert!(
        matches!(server.next_event().await, ServerEvent::Accepted(p) if p.spiffe_id == client_id)
    );

    // curl without a client certificate: refused.
    let out = run(
        Command::new("curl").args([
            "-sS",
            "--http1.1",
            "--max-time",
            "20",
            "--resolve",
            &resolve,
            "--cacert",
            &files.root,
            &url,
        ]),
        b"",
    )
    .await;
    assert!(
        !out.status.success(),
        "curl without a certificate succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    match server.next_event().await {
        ServerEvent::Refused(r) => assert_eq!(r.reason, RefusalReason::NoClientCert),
        other => panic!("curl without cert: {other:?}"),
    }
}

/// Runs `openssl s_client` with a client certificate and extra arguments; returns stdout.
async fn s_client(files: &Files, connect: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "s_client",
        "-connect",
        connect,
        "-servername",
        HOST,
        "-CAfile",
        &files.root,
        "-verify_return_error",
        "-cert",
        &files.leaf,
        "-cert_chain",
        &files.intermediate,
        "-key",
        &files.key,
        "-ign_eof",
    ];
    args.extend_from_slice(extra);
    let out = run(Command::new("openssl").args(&args), REQUEST).await;
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_sees_the_government_and_default_policies() {
    recorder();
    let (ca, trust) = test_ca(Duration::from_secs(3600));
    let server_id = id("mesh", "inbound");
    let client_id = id("ops", "openssl");
    let (chain, key) = ca.issue(&server_id, &[HOST]).unwrap();
    let certs = static_certs(chain, &key);
    let gov = TlsPolicy::GOVERNMENT.with_tls12(true);
    let mut gov_server = spawn_server(
        server_config(&gov, trust.clone(), certs.clone()).unwrap(),
        PortMtlsMode::Strict,
    )
    .await;
    let mut default_server = spawn_server(
        server_config(&TlsPolicy::DEFAULT, trust, certs).unwrap(),
        PortMtlsMode::Strict,
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let (leaf_pem, key_pem) = ca.issue_pem(&client_id, &[]).unwrap();
    let files = Files {
        root: write(dir.path(), "root.pem", ca.root_pem()),
        leaf: write(dir.path(), "leaf.pem", &leaf_pem),
        chain: String::new(),
        intermediate: write(dir.path(), "intermediate.pem", ca.intermediate_pem()),
        key: write(dir.path(), "key.pem", &key_pem),
        _dir: dir,
    };
    let gov_addr = format!("127.0.0.1:{}", gov_server.addr.port());
    let default_addr = format!("127.0.0.1:{}", default_server.addr.port());

    // Government, TLS 1.3 on P-256: AES-256-GCM.
    let out = s_client(&files, &gov_addr, &["-tls1_3", "-groups", "P-256"]).await;
    assert!(out.contains("TLS_AES_256_GCM_SHA384"), "{out}");
    assert!(out.contains(&client_id.to_string()), "{out}");
    assert!(matches!(
        gov_server.next_event().await,
        ServerEvent::Accepted(_)
    ));

    // Government with TLS 1.2 enabled: ECDHE-ECDSA-AES-GCM is accepted ...
    let out = s_client(
        &files,
        &gov_addr,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
    )
    .await;
    assert!(out.contains("ECDHE-ECDSA-AES128-GCM-SHA256"), "{out}");
    assert!(out.contains(&client_id.to_string()), "{out}");
    assert!(matches!(
        gov_server.next_event().await,
        ServerEvent::Accepted(_)
    ));

    // ... ChaCha20 (1.2 or 1.3) and X25519 are not.
    for extra in [
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"][..],
        &["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"][..],
        &["-tls1_3", "-groups", "X25519"][..],
    ] {
        let out = s_client(&files, &gov_addr, extra).await;
        assert!(!out.contains("HTTP/1.1 200"), "{extra:?}: {out}");
        match gov_server.next_event().await {
            ServerEvent::Refused(r) => {
                assert_eq!(r.reason, RefusalReason::ProtocolMismatch, "{extra:?}")
            }
            other => panic!("{extra:?}: {other:?}"),
        }
    }

    // Default: TLS 1.3 only.
    let out = s_client(&files, &default_addr, &["-tls1_2"]).await;
    assert!(!out.contains("HTTP/1.1 200"), "{out}");
    match default_server.next_event().await {
        ServerEvent::Refused(r) => assert_eq!(r.reason, RefusalReason::ProtocolMismatch),
        other => panic!("default policy with TLS 1.2: {other:?}"),
    }
    let out = s_client(&files, &default_addr, &[]).await;
    assert!(out.contains("TLSv1.3"), "{out}");
    assert!(out.contains(&client_id.to_string()), "{out}");
}
