//! Converts the raw `r || s` ECDSA signature a PKCS#11 token returns (CKM_ECDSA) into the DER
//! `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` that X.509 carries (RFC 3279 §2.2.3).

/// Encodes `r || s` (two big-endian halves of equal length) as DER. Returns `None` when the input
/// is empty or of odd length.
pub fn raw_ecdsa_to_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = Vec::with_capacity(raw.len() + 8);
    der_integer(r, &mut body);
    der_integer(s, &mut body);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(0x30);
    der_len(body.len(), &mut out);
    out.extend_from_slice(&body);
    Some(out)
}

fn der_integer(unsigned_be: &[u8], out: &mut Vec<u8>) {
    let first_nonzero = unsigned_be.iter().position(|&b| b != 0);
    let digits = match first_nonzero {
        Some(i) => &unsigned_be[i..],
        None => &[0u8][..],
    };
    let pad = digits[0] & 0x80 != 0;
    out.push(0x02);
    der_len(digits.len() + usize::from(pad), out);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
}

fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_ASN1,
        ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
    };

    #[test]
    fn fixed_signatures_verify_after_conversion() {
        let rng = SystemRandom::new();
        for (fixed, asn1) in [
            (&ECDSA_P256_SHA256_FIXED_SIGNING, &ECDSA_P256_SHA256_ASN1),
            (&ECDSA_P384_SHA384_FIXED_SIGNING, &ECDSA_P384_SHA384_ASN1),
        ] {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(fixed, &rng).unwrap();
            let kp = EcdsaKeyPair::from_pkcs8(fixed, pkcs8.as_ref()).unwrap();
            // Many signatures so that leading-zero and high-bit cases both occur.
            for i in 0..64u8 {
                let msg = [i; 17];
                let sig = kp.sign(&rng, &msg).unwrap();
                let der = raw_ecdsa_to_der(sig.as_ref()).unwrap();
                UnparsedPublicKey::new(asn1, kp.public_key().as_ref())
                    .verify(&msg, &der)
                    .unwrap();
            }
        }
    }

    #[test]
    fn encodes_edge_cases() {
        assert_eq!(raw_ecdsa_to_der(&[]), None);
        assert_eq!(raw_ecdsa_to_der(&[1, 2, 3]), None);
        assert_eq!(
            raw_ecdsa_to_der(&[0x00, 0x80, 0x00, 0x01]).unwrap(),
            vec![0x30, 0x07, 0x02, 0x02, 0x00, 0x80, 0x02, 0x01, 0x01]
        );
        assert_eq!(
            raw_ecdsa_to_der(&[0, 0]).unwrap(),
            vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]
        );
    }
}
