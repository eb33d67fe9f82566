//! Tenant API keys: `tnty_<tenant_id>.<key_id>.<secret>`, the secret being 32 random bytes. The ids in the
//! key let the authorizer read exactly one tenant-keyed item; only a SHA-256 of the secret is stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::ids::{KeyId, TenantId};

const SCHEME: &str = "tnty_";
const SECRET_LEN: usize = 43;

/// A freshly minted key: the full secret is shown to the caller once and never stored.
pub struct NewKey {
    pub tenant_id: TenantId,
    pub key_id: KeyId,
    pub full: SecretString,
    pub secret_hash: String,
    pub prefix: String,
}

/// 32 random bytes, base64url: the secret of an API key, a Connect link or an OAuth state.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Compares two secrets (or their hashes) without an early exit, so timing says nothing about them.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn mint(tenant_id: &TenantId) -> NewKey {
    let secret = random_secret();
    let key_id = KeyId::generate();
    NewKey {
        full: SecretString::from(format!("{SCHEME}{tenant_id}.{key_id}.{secret}")),
        secret_hash: hash_secret(&secret),
        prefix: display_prefix(&secret),
        tenant_id: tenant_id.clone(),
        key_id,
    }
}

/// The part of a key shown in listings so a person can tell keys apart.
fn display_prefix(secret: &str) -> String {
    format!("{SCHEME}…{}", secret.get(..6).unwrap_or_default())
}

pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A presented key split into its parts. Parsing proves only the shape; the secret is checked against the
/// stored hash by [`PresentedKey::matches`].
pub struct PresentedKey {
    pub tenant_id: TenantId,
    pub key_id: KeyId,
    secret: SecretString,
}

impl PresentedKey {
    pub fn parse(raw: &str) -> Option<Self> {
        let rest = raw.strip_prefix(SCHEME)?;
        let mut parts = rest.split('.');
        let (tenant, key, secret) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || secret.len() != SECRET_LEN {
            return None;
        }
        Some(Self {
            tenant_id: TenantId::parse(tenant).ok()?,
            key_id: KeyId::parse(key).ok()?,
            secret: SecretString::from(secret.to_owned()),
        })
    }

    /// Constant-time comparison of the secret's hash with the stored one.
    pub fn matches(&self, stored_hash: &str) -> bool {
        constant_time_eq(hash_secret(self.secret.expose_secret()).as_bytes(), stored_hash.as_bytes())
    }
}

/// Whether a bearer value has the shape of one of our keys (as opposed to a JWT).
pub fn looks_like_api_key(raw: &str) -> bool {
    raw.starts_with(SCHEME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_key_parses_and_matches_only_its_own_hash() {
        let tenant = TenantId::generate();
        let key = mint(&tenant);
        let presented = PresentedKey::parse(key.full.expose_secret());
        assert!(presented.as_ref().is_some_and(|p| p.tenant_id == tenant && p.key_id == key.key_id));
        assert!(presented.as_ref().is_some_and(|p| p.matches(&key.secret_hash)));
        let other = mint(&tenant);
        assert!(presented.is_some_and(|p| !p.matches(&other.secret_hash)));
    }

    #[test]
    fn the_stored_prefix_does_not_reveal_the_secret() {
        let key = mint(&TenantId::generate());
        assert!(key.prefix.chars().count() < 16);
        assert!(!key.secret_hash.contains(key.full.expose_secret()));
    }

    #[test]
    fn garbled_keys_do_not_parse() {
        let key = mint(&TenantId::generate());
        let full = key.full.expose_secret();
        assert!(PresentedKey::parse(&full[..full.len() - 1]).is_none());
        assert!(PresentedKey::parse(&format!("{full}.x")).is_none());
        assert!(PresentedKey::parse("tnty_nonsense").is_none());
        assert!(PresentedKey::parse("").is_none());
    }
}
