//! Sans-I/O detection of a TLS ClientHello in the first bytes a client sent, and the per-port
//! PeerAuthentication decision (STRICT / PERMISSIVE / DISABLE) built on it.
//!
//! A ClientHello starts with a TLS record header and a handshake header:
//! `0x16` (handshake) · `0x03 0x0N` (legacy record version, N ≤ 4) · 2-byte length
//! (1..=2^14 + 2048) · `0x01` (client_hello). Six bytes decide; fewer may say "need more".

use super::reason::{Refusal, RefusalReason};

/// Bytes needed to decide with certainty.
pub const DETECT_BYTES: usize = 6;
/// RFC 8446 §5.1: a record's plaintext length must not exceed 2^14; RFC 5246 §6.2.3 allows
/// 2^14 + 2048 for ciphertext, the loosest bound a first record can legitimately carry.
const MAX_RECORD_LEN: usize = (1 << 14) + 2048;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// A TLS ClientHello.
    Tls,
    /// Not TLS (HTTP/1.1, HTTP/2 prior knowledge, an opaque protocol, or SSLv2).
    Plaintext,
    /// The bytes so far are a prefix of a ClientHello; peek again with at least this many.
    NeedMore(usize),
}

/// Classifies the first bytes read (peeked) from a connection.
///
/// An empty slice needs more bytes; the caller bounds how long it waits (a detect timeout)
/// and how many bytes it peeks ([`DETECT_BYTES`] suffice).
pub fn classify(first: &[u8]) -> Detection {
    let checks: [&dyn Fn(u8) -> bool; 3] = [&|b| b == 0x16, &|b| b == 0x03, &|b| b <= 0x04];
    for (i, check) in checks.iter().enumerate() {
        match first.get(i) {
            None => return Detection::NeedMore(DETECT_BYTES),
            Some(&b) if !check(b) => return Detection::Plaintext,
            Some(_) => {}
        }
    }
    let (Some(&hi), Some(&lo)) = (first.get(3), first.get(4)) else {
        return Detection::NeedMore(DETECT_BYTES);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len == 0 || len > MAX_RECORD_LEN {
        return Detection::Plaintext;
    }
    match first.get(5) {
        None => Detection::NeedMore(DETECT_BYTES),
        Some(0x01) => Detection::Tls,
        Some(_) => Detection::Plaintext,
    }
}

/// A port's peer-authentication mode (Istio PeerAuthentication `mtls.mode` / `portLevelMtls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortMtlsMode {
    /// Only mTLS is accepted.
    #[default]
    Strict,
    /// mTLS and plaintext are both accepted, detected per connection.
    Permissive,
    /// Plaintext only: TLS is not terminated by the proxy (passed through to the app).
    Disable,
}

/// What the inbound listener does with a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundAction {
    /// Terminate mTLS with the inbound server config.
    TerminateMtls,
    /// Serve as plaintext, with no peer identity.
    Plaintext,
    /// Close the connection; the refusal says why (log it with `record_refusal`).
    Refuse(Refusal),
    /// Read more bytes, then decide again.
    NeedMore(usize),
}

/// Decides what to do with a connection on a port in `mode`, given its first bytes.
pub fn inbound_action(mode: PortMtlsMode, first: &[u8]) -> InboundAction {
    match mode {
        PortMtlsMode::Disable => InboundAction::Plaintext,
        PortMtlsMode::Strict | PortMtlsMode::Permissive => match classify(first) {
            Detection::NeedMore(n) => InboundAction::NeedMore(n),
            Detection::Tls => InboundAction::TerminateMtls,
            Detection::Plaintext if mode == PortMtlsMode::Permissive => InboundAction::Plaintext,
            Detection::Plaintext => InboundAction::Refuse(Refusal::new(
                RefusalReason::PlaintextOnStrictPort,
                format!(
                    "first bytes {:?} are not a TLS ClientHello",
                    String::from_utf8_lossy(&first[..first.len().min(16)])
                ),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];

    #[test]
    fn classifies_client_hello_prefixes() {
        assert_eq!(classify(HELLO), Detection::Tls);
        assert_eq!(classify(&HELLO[..6]), Detection::Tls);
        for n in 0..6 {
            assert_eq!(classify(&HELLO[..n]), Detection::NeedMore(6), "prefix {n}");
        }
    }

    #[test]
    fn classifies_plaintext() {
        for input in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PRI * HTTP/2.0\r\n",
            b"\x16\x02\x01\x02\x00\x01",
            b"\x16\x03\x05\x02\x00\x01",
            b"\x16\x03\x01\x00\x00\x01",
            b"\x16\x03\x01\xff\xff\x01",
            b"\x16\x03\x03\x00\x10\x02",
            b"\x80\x2e\x01\x03\x01",
            b"\x17\x03\x03",
        ] {
            assert_eq!(classify(input), Detection::Plaintext, "{input:?}");
        }
    }

    #[test]
    fn port_modes() {
        assert_eq!(
            inbound_action(PortMtlsMode::Strict, HELLO),
            InboundAction::TerminateMtls
        );
        assert_eq!(
            inbound_action(PortMtlsMode::Permissive, HELLO),
            InboundAction::TerminateMtls
        );
        assert_eq!(
            inbound_action(PortMtlsMode::Permissive, b"GET / HTTP/1.1\r\n"),
            InboundAction::Plaintext
        );
        assert_eq!(
            inbound_action(PortMtlsMode::Disable, HELLO),
            InboundAction::Plaintext
        );
        assert_eq!(
            inbound_action(PortMtlsMode::Strict, b"GE"),
            InboundAction::Refuse(Refusal::new(
                RefusalReason::PlaintextOnStrictPort,
                "first bytes \"GE\" are not a TLS ClientHello"
            ))
        );
        match inbound_action(PortMtlsMode::Strict, b"GET / HTTP/1.1\r\n") {
            InboundAction::Refuse(r) => assert_eq!(r.reason, RefusalReason::PlaintextOnStrictPort),
            other => panic!("expected refusal, got {other:?}"),
        }
        assert_eq!(
            inbound_action(PortMtlsMode::Strict, &HELLO[..2]),
            InboundAction::NeedMore(6)
        );
    }

    #[test]
    fn random_prefixes_are_classified_consistently() {
        use rand::Rng;
        let mut rng = rand::rng();
        for _ in 0..20_000 {
            let len = rng.random_range(0..12);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if rng.random_bool(0.5) && !bytes.is_empty() {
                bytes[0] = 0x16;
            }
            let verdict = classify(&bytes);
            // A decision on a prefix never changes when more bytes arrive.
            if verdict != Detection::NeedMore(DETECT_BYTES) {
                let mut longer = bytes.clone();
                longer.extend_from_slice(&[0x01, 0x02, 0x03]);
                assert_eq!(classify(&longer), verdict, "{bytes:?}");
            } else {
                assert!(bytes.len() < DETECT_BYTES);
            }
        }
    }
}
