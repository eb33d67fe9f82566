//! Stripe's webhook signature: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`
//! (several `v1` while a secret is rolled), accepted within 300 seconds of now.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a signature's timestamp may be from now.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing or has no `t=` and `v1=`")]
    Missing,
    #[error("the Stripe-Signature timestamp is more than 300 seconds from now; Stripe signs each attempt afresh")]
    Stale,
    #[error("the Stripe-Signature does not match this tenant's webhook secret and the raw body")]
    Mismatch,
}

/// The hex `v1` signature of `body` at `t`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks `header` over the raw `body` at `now` (unix seconds).
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1.push(v),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Missing)?;
    if v1.is_empty() {
        return Err(SignatureError::Missing);
    }
    if (now - t).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| SignatureError::Mismatch)?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let ok = v1.iter().any(|hex| decode_hex(hex).is_some_and(|sig| mac.clone().verify_slice(&sig).is_ok()));
    if ok { Ok(()) } else { Err(SignatureError::Mismatch) }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"evt_test_webhook","object":"event"}"#;
    const V1: &str = "ddfd02b511b32e75f640cd68a239fa54407bf16354b543697b1cd8e8377a223d";

    #[test]
    fn the_signature_matches_the_documented_vector() {
        assert_eq!(sign("whsec_test_secret", 1_735_689_600, BODY), V1);
        let header = format!("t=1735689600,v1=00ff,v1={V1}");
        assert_eq!(verify("whsec_test_secret", &header, BODY, 1_735_689_600 + 299), Ok(()));
    }

    #[test]
    fn a_changed_body_a_wrong_secret_or_an_old_timestamp_is_refused() {
        let header = format!("t=1735689600,v1={V1}");
        let now = 1_735_689_600;
        assert_eq!(verify("whsec_test_secret", &header, b"{}", now), Err(SignatureError::Mismatch));
        assert_eq!(verify("whsec_other", &header, BODY, now), Err(SignatureError::Mismatch));
        assert_eq!(verify("whsec_test_secret", &header, BODY, now + 301), Err(SignatureError::Stale));
        assert_eq!(verify("whsec_test_secret", "", BODY, now), Err(SignatureError::Missing));
        assert_eq!(verify("whsec_test_secret", "t=1735689600", BODY, now), Err(SignatureError::Missing));
    }
}
