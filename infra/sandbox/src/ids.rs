//! Random secrets (codes, tokens) and deterministic values derived from a seed (ids, profiles, data).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// A fresh unguessable value: `prefix` followed by 32 random bytes, base64url.
pub(crate) fn secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part.as_bytes());
        h.update([0x1f]);
    }
    h.finalize().into()
}

/// A stable 64-bit number for the seed parts.
pub(crate) fn seed(parts: &[&str]) -> u64 {
    let d = digest(parts);
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// A stable number in `lo..=hi` for the seed parts.
pub(crate) fn in_range(parts: &[&str], lo: u64, hi: u64) -> u64 {
    lo + seed(parts) % (hi - lo + 1)
}

/// A stable UUID-shaped id (version 4 layout) for the seed parts.
pub(crate) fn uuid_like(parts: &[&str]) -> String {
    let mut d = digest(parts);
    d[6] = (d[6] & 0x0f) | 0x40;
    d[8] = (d[8] & 0x3f) | 0x80;
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// `BASE64URL(SHA256(verifier))`, the S256 code challenge of RFC 7636.
pub(crate) fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// RFC 7636 allows 43 to 128 unreserved characters for verifiers and S256 challenges.
pub(crate) fn is_pkce_string(s: &str) -> bool {
    (43..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_is_unpadded_base64url_of_the_sha256() {
        // Computed independently: printf VERIFIER | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d =
        assert_eq!(s256("dBjftJeZ4CVP-mJ0aFOVuYhAXnvC-sbSvfe9Fw9bTDk"), "zmJauKCW5STd1uiEXMKSsKC8uX0q0wWRIESo46qNmMk");
    }

    #[test]
    fn derived_values_are_stable_and_differ_by_seed() {
        assert_eq!(seed(&["a", "b"]), seed(&["a", "b"]));
        assert_ne!(seed(&["a", "b"]), seed(&["ab"]));
        assert_eq!(uuid_like(&["x"]).len(), 36);
        assert!((5..=7).contains(&in_range(&["y"], 5, 7)));
        assert_ne!(secret("t-"), secret("t-"));
    }
}
