//! KMS envelope encryption for provider tokens and tenant secrets: a KMS data key encrypts each secret with
//! AES-256-GCM, and both the data key (KMS encryption context) and the ciphertext (GCM associated data) are
//! bound to the secret's tenant, user and purpose, so a ciphertext copied onto another row fails to open.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use aes_gcm::aead::{AeadCore, AeadInPlace, OsRng};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use anyhow::Context;
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::zeroize::Zeroizing;
use secrecy::{SecretSlice, SecretString};
use tracing::instrument;

use crate::ids::{TenantId, UserId};

/// Re-exported so callers of [`Vault::open`] can read the secret without naming `secrecy` themselves.
pub use secrecy::ExposeSecret;

/// A data key seals for at most this long, and a decrypted one stays cached for at most this long.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// Seals per data key. Random 96-bit nonces stay far from collision well past 2^32 uses; the bound is
/// about how much one leaked data key exposes.
const DEFAULT_MAX_USES: u32 = 10_000;
/// Entries per cache: a Lambda instance serves few tenants, and the bound keeps a busy one's memory flat.
const MAX_CACHED_KEYS: usize = 1_000;

const VERSION: &str = "v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const DATA_KEY_LEN: usize = 32;
/// The largest ciphertext blob KMS returns.
const MAX_KEY_BLOB_LEN: usize = 6144;

/// What a secret belongs to. It becomes the KMS encryption context `{"tenant", "user", "provider"}` of its
/// data key and the AES-GCM associated data of its ciphertext: a secret opens only with the context it was
/// sealed with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretContext {
    pub tenant_id: TenantId,
    /// `None` for tenant-level secrets (a provider app's client secret); written as `-`, which no `UserId`
    /// can be.
    pub user_id: Option<UserId>,
    /// The provider name for a user's tokens (`oura`), `provider_app:<provider>` for a provider app's
    /// credentials.
    pub purpose: String,
}

impl SecretContext {
    /// A tenant-level secret, such as `provider_app:oura` for the tenant's Oura client secret.
    pub fn tenant(tenant_id: TenantId, purpose: impl Into<String>) -> Self {
        Self { tenant_id, user_id: None, purpose: purpose.into() }
    }

    /// One user's secret, such as their `oura` tokens.
    pub fn user(tenant_id: TenantId, user_id: UserId, purpose: impl Into<String>) -> Self {
        Self { tenant_id, user_id: Some(user_id), purpose: purpose.into() }
    }

    fn user_value(&self) -> &str {
        self.user_id.as_ref().map_or("-", UserId::as_str)
    }

    fn kms_context(&self) -> HashMap<String, String> {
        HashMap::from([
            ("tenant".to_owned(), self.tenant_id.to_string()),
            ("user".to_owned(), self.user_value().to_owned()),
            ("provider".to_owned(), self.purpose.clone()),
        ])
    }

    /// The GCM associated data. Unambiguous because ids cannot contain `;` or `=` and the free-form purpose
    /// comes last; the version keeps a future format from accepting today's ciphertexts.
    fn aad(&self) -> String {
        format!(
            "tenantry-vault.{VERSION};tenant={};user={};purpose={}",
            self.tenant_id,
            self.user_value(),
            self.purpose
        )
    }
}

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// KMS was unreachable, throttled or refused the request: retryable, the stored secret is not at fault.
    #[error("KMS request failed: {0:#}")]
    Kms(anyhow::Error),
    /// The stored string is not a sealed secret of this format: retrying will not help.
    #[error("sealed secret is malformed: {0}")]
    Corrupt(&'static str),
    /// The sealed secret belongs to another tenant, user or purpose, or was altered: KMS refused to decrypt
    /// its data key or the authentication tag did not match. Not retryable.
    #[error("sealed secret does not belong to this context or was altered")]
    WrongContext,
}

impl VaultError {
    /// Whether the same call may succeed later (only KMS failures).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Kms(_))
    }
}

type DataKey = Zeroizing<[u8; DATA_KEY_LEN]>;

/// A data key that seals for one context until it is too old or too used.
struct SealingKey {
    key: DataKey,
    blob: Arc<[u8]>,
    created: Instant,
    uses: u32,
}

/// A decrypted data key is cached for the encrypted blob and the context KMS accepted it with, so the same
/// blob under another context still goes to KMS (and is refused).
type OpeningCacheKey = (Arc<[u8]>, SecretContext);

/// A data key KMS decrypted for one (blob, context) pair.
struct OpeningKey {
    key: DataKey,
    created: Instant,
}

/// Seals and opens secrets with KMS envelope encryption (see the module doc), caching data keys in memory
/// to spare KMS calls: a sealing key per context until it is `max_age` old or sealed `max_uses` secrets,
/// and decrypted keys per (key blob, context) for `max_age`, each cache holding at most 1,000 keys.
/// Cached keys are zeroed when dropped. Cheap to share: `Send + Sync`, build one per process.
pub struct Vault {
    kms: aws_sdk_kms::Client,
    key_id: String,
    max_age: Duration,
    max_uses: u32,
    sealing: Mutex<HashMap<SecretContext, SealingKey>>,
    opening: Mutex<HashMap<OpeningCacheKey, OpeningKey>>,
    generate_calls: AtomicU64,
    decrypt_calls: AtomicU64,
}

impl fmt::Debug for Vault {
    // Only sizes and settings: the caches hold plaintext data keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("key_id", &self.key_id)
            .field("max_age", &self.max_age)
            .field("max_uses", &self.max_uses)
            .field("sealing_keys", &lock(&self.sealing).len())
            .field("opening_keys", &lock(&self.opening).len())
            .field("kms_calls", &self.kms_calls())
            .finish()
    }
}

/// The caches stay consistent even if a holder panicked (every update is a single insert or remove), so a
/// poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Vault {
    /// A vault sealing under the KMS key `key_id` (id, ARN or alias). Data keys seal for 5 minutes or
    /// 10,000 secrets, decrypted keys stay cached for 5 minutes.
    pub fn new(kms: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            kms,
            key_id: key_id.into(),
            max_age: DEFAULT_MAX_AGE,
            max_uses: DEFAULT_MAX_USES,
            sealing: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashMap::new()),
            generate_calls: AtomicU64::new(0),
            decrypt_calls: AtomicU64::new(0),
        }
    }

    /// Sets how long a data key is used and cached (for sealing and for opening) and how many secrets one
    /// data key seals. A `max_age` of zero turns both caches off.
    pub fn with_limits(mut self, max_age: Duration, max_uses: u32) -> Self {
        self.max_age = max_age;
        self.max_uses = max_uses;
        self
    }

    /// Counts of KMS calls made so far, failed ones included: (GenerateDataKey, Decrypt).
    pub fn kms_calls(&self) -> (u64, u64) {
        (self.generate_calls.load(Ordering::Relaxed), self.decrypt_calls.load(Ordering::Relaxed))
    }

    /// Encrypts `plaintext` for `ctx`. The result is one compact ASCII string, safe in a DynamoDB string
    /// attribute: `v1.<encrypted data key>.<96-bit nonce>.<ciphertext and tag>`, each part base64url
    /// without padding. It contains nothing secret and opens only with the same `ctx`.
    #[instrument(skip_all, err, fields(tenant_id = %ctx.tenant_id, user_id = ctx.user_value(), provider = %ctx.purpose))]
    pub async fn seal(&self, ctx: &SecretContext, plaintext: &[u8]) -> Result<String, VaultError> {
        let (key, blob) = match self.cached_sealing_key(ctx) {
            Some(cached) => cached,
            None => self.generate_data_key(ctx).await?,
        };
        let cipher = cipher(&key);
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        // Room for the tag up front, so appending it does not reallocate.
        let mut data = Vec::with_capacity(plaintext.len() + TAG_LEN);
        data.extend_from_slice(plaintext);
        let tag = cipher
            .encrypt_in_place_detached(&nonce, ctx.aad().as_bytes(), &mut data)
            .map_err(|_| VaultError::Corrupt("the secret is too long to encrypt"))?;
        data.extend_from_slice(&tag);
        Ok(format!(
            "{VERSION}.{}.{}.{}",
            URL_SAFE_NO_PAD.encode(&blob),
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(&data)
        ))
    }

    /// Decrypts a string made by [`Self::seal`] with the same `ctx`. A secret sealed for another tenant,
    /// user or purpose, or altered, is [`VaultError::WrongContext`]; a string of another shape is
    /// [`VaultError::Corrupt`].
    #[instrument(skip_all, err, fields(tenant_id = %ctx.tenant_id, user_id = ctx.user_value(), provider = %ctx.purpose))]
    pub async fn open(&self, ctx: &SecretContext, sealed: &str) -> Result<SecretSlice<u8>, VaultError> {
        self.open_bytes(ctx, sealed).await.map(SecretSlice::from)
    }

    /// [`Self::open`] for secrets that are UTF-8 text, such as OAuth tokens; other bytes are
    /// [`VaultError::Corrupt`].
    #[instrument(skip_all, err, fields(tenant_id = %ctx.tenant_id, user_id = ctx.user_value(), provider = %ctx.purpose))]
    pub async fn open_string(&self, ctx: &SecretContext, sealed: &str) -> Result<SecretString, VaultError> {
        let bytes = self.open_bytes(ctx, sealed).await?;
        match String::from_utf8(bytes) {
            Ok(text) => Ok(SecretString::from(text)),
            Err(not_text) => {
                drop(Zeroizing::new(not_text.into_bytes()));
                Err(VaultError::Corrupt("the secret is not UTF-8 text"))
            }
        }
    }

    /// The plaintext in a vector whose capacity equals its length, so that boxing it into a secret does not
    /// reallocate and leave an unzeroed copy behind.
    async fn open_bytes(&self, ctx: &SecretContext, sealed: &str) -> Result<Vec<u8>, VaultError> {
        let sealed = Sealed::parse(sealed)?;
        let key = match self.cached_opening_key(&sealed.key_blob, ctx) {
            Some(key) => key,
            None => self.decrypt_data_key(ctx, sealed.key_blob).await?,
        };
        // Decrypted in place in a buffer of exactly the plaintext's size; it is zeroed if the tag fails.
        let mut buffer = Zeroizing::new(sealed.ciphertext);
        cipher(&key)
            .decrypt_in_place_detached(
                &Nonce::from(sealed.nonce),
                ctx.aad().as_bytes(),
                &mut buffer,
                &Tag::from(sealed.tag),
            )
            .map_err(|_| VaultError::WrongContext)?;
        Ok(std::mem::take(&mut *buffer))
    }

    /// A copy of the context's sealing key if it may seal once more, counting this use.
    fn cached_sealing_key(&self, ctx: &SecretContext) -> Option<(DataKey, Arc<[u8]>)> {
        let mut sealing = lock(&self.sealing);
        let entry = sealing.get_mut(ctx)?;
        if entry.created.elapsed() >= self.max_age || entry.uses >= self.max_uses {
            sealing.remove(ctx);
            return None;
        }
        entry.uses += 1;
        Some((entry.key.clone(), entry.blob.clone()))
    }

    /// A new data key for `ctx`, cached for further seals with this one counted. Two seals racing for the
    /// same context may each make one; both are valid, the later one stays cached.
    async fn generate_data_key(&self, ctx: &SecretContext) -> Result<(DataKey, Arc<[u8]>), VaultError> {
        self.generate_calls.fetch_add(1, Ordering::Relaxed);
        let mut out = self
            .kms
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(ctx.kms_context()))
            .send()
            .await
            .context("generating a data key")
            .map_err(VaultError::Kms)?;
        let plaintext = out.plaintext.take().map(|b| Zeroizing::new(b.into_inner()));
        let blob = out.ciphertext_blob.take().map(Blob::into_inner);
        let (Some(plaintext), Some(blob)) = (plaintext, blob) else {
            return Err(VaultError::Kms(anyhow::anyhow!("GenerateDataKey returned no key")));
        };
        let key = data_key(&plaintext)
            .ok_or_else(|| VaultError::Kms(anyhow::anyhow!("GenerateDataKey returned a key that is not 256 bits")))?;
        let blob: Arc<[u8]> = blob.into();
        if self.max_age > Duration::ZERO {
            let mut sealing = lock(&self.sealing);
            make_room(&mut sealing, self.max_age, |k| k.created);
            sealing.insert(
                ctx.clone(),
                SealingKey { key: key.clone(), blob: blob.clone(), created: Instant::now(), uses: 1 },
            );
        }
        tracing::debug!("generated a data key");
        Ok((key, blob))
    }

    fn cached_opening_key(&self, blob: &Arc<[u8]>, ctx: &SecretContext) -> Option<DataKey> {
        let cache_key = (blob.clone(), ctx.clone());
        let mut opening = lock(&self.opening);
        let entry = opening.get(&cache_key)?;
        if entry.created.elapsed() >= self.max_age {
            opening.remove(&cache_key);
            return None;
        }
        Some(entry.key.clone())
    }

    /// Asks KMS for the data key under `ctx`'s encryption context and caches it. The KMS key is named so that
    /// a blob made under any other key is refused, even one this function's role could use.
    async fn decrypt_data_key(&self, ctx: &SecretContext, blob: Arc<[u8]>) -> Result<DataKey, VaultError> {
        self.decrypt_calls.fetch_add(1, Ordering::Relaxed);
        let result = self
            .kms
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(blob.to_vec()))
            .set_encryption_context(Some(ctx.kms_context()))
            .send()
            .await;
        let mut out = match result {
            Ok(out) => out,
            Err(e) => {
                // KMS answers a wrong encryption context, like any altered blob, with InvalidCiphertext.
                let refused = matches!(
                    e.as_service_error(),
                    Some(DecryptError::InvalidCiphertextException(_) | DecryptError::IncorrectKeyException(_))
                );
                return Err(if refused {
                    VaultError::WrongContext
                } else {
                    VaultError::Kms(anyhow::Error::new(e).context("decrypting a data key"))
                });
            }
        };
        let plaintext = out
            .plaintext
            .take()
            .map(|b| Zeroizing::new(b.into_inner()))
            .ok_or_else(|| VaultError::Kms(anyhow::anyhow!("Decrypt returned no plaintext")))?;
        // KMS decrypted it, so the blob is a genuine KMS ciphertext of something other than a data key.
        let key = data_key(&plaintext).ok_or(VaultError::Corrupt("the encrypted data key is not a 256-bit key"))?;
        if self.max_age > Duration::ZERO {
            let mut opening = lock(&self.opening);
            make_room(&mut opening, self.max_age, |k| k.created);
            opening.insert((blob, ctx.clone()), OpeningKey { key: key.clone(), created: Instant::now() });
        }
        Ok(key)
    }
}

/// A cipher for one seal or open. The cached raw key is zeroed on drop, but `aes` zeroes its round keys only
/// with its `zeroize` feature (which `aes-gcm` does not turn on), so the expanded key lives for one call only.
fn cipher(key: &DataKey) -> Aes256Gcm {
    <Aes256Gcm as KeyInit>::new(&(**key).into())
}

fn data_key(plaintext: &[u8]) -> Option<DataKey> {
    let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
    if plaintext.len() != DATA_KEY_LEN {
        return None;
    }
    key.copy_from_slice(plaintext);
    Some(key)
}

/// Keeps a cache under [`MAX_CACHED_KEYS`] before an insert: expired entries go first, then the oldest.
fn make_room<K: Clone + Eq + std::hash::Hash, V>(
    cache: &mut HashMap<K, V>,
    max_age: Duration,
    created: impl Fn(&V) -> Instant,
) {
    if cache.len() < MAX_CACHED_KEYS {
        return;
    }
    cache.retain(|_, v| created(v).elapsed() < max_age);
    while cache.len() >= MAX_CACHED_KEYS {
        let Some(oldest) = cache.iter().min_by_key(|(_, v)| created(v)).map(|(k, _)| k.clone()) else {
            break;
        };
        cache.remove(&oldest);
    }
}

/// The parts of a sealed string, decoded and checked for size.
struct Sealed {
    key_blob: Arc<[u8]>,
    nonce: [u8; NONCE_LEN],
    /// Sized exactly, so the plaintext decrypted into it needs no reallocation.
    ciphertext: Vec<u8>,
    tag: [u8; TAG_LEN],
}

impl Sealed {
    fn parse(raw: &str) -> Result<Self, VaultError> {
        let mut parts = raw.split('.');
        let (Some(version), Some(blob), Some(nonce), Some(data), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VaultError::Corrupt("expected four dot-separated parts"));
        };
        if version != VERSION {
            return Err(VaultError::Corrupt("unknown version"));
        }
        let decode =
            |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| VaultError::Corrupt("a part is not base64url"));
        let key_blob = decode(blob)?;
        if key_blob.is_empty() || key_blob.len() > MAX_KEY_BLOB_LEN {
            return Err(VaultError::Corrupt("the encrypted data key has an impossible length"));
        }
        let nonce: [u8; NONCE_LEN] =
            decode(nonce)?.try_into().map_err(|_| VaultError::Corrupt("the nonce is not 96 bits"))?;
        let data = decode(data)?;
        let Some(split) = data.len().checked_sub(TAG_LEN) else {
            return Err(VaultError::Corrupt("the ciphertext is shorter than its tag"));
        };
        let (ciphertext, tag) = data.split_at(split);
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| VaultError::Corrupt("the tag is not 128 bits"))?;
        Ok(Self { key_blob: key_blob.into(), nonce, ciphertext: ciphertext.to_vec(), tag })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offline_vault() -> Vault {
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new("us-east-1"))
            .build();
        Vault::new(aws_sdk_kms::Client::from_conf(config), "alias/test")
    }

    /// Puts `key` in both caches as if KMS had made it, so sealing and opening need no KMS.
    fn with_key(vault: &Vault, ctx: &SecretContext, key: [u8; 32], blob: &[u8]) {
        let blob: Arc<[u8]> = blob.into();
        let sealing_key = SealingKey { key: Zeroizing::new(key), blob: blob.clone(), created: Instant::now(), uses: 0 };
        lock(&vault.sealing).insert(ctx.clone(), sealing_key);
        lock(&vault.opening)
            .insert((blob, ctx.clone()), OpeningKey { key: Zeroizing::new(key), created: Instant::now() });
    }

    #[test]
    fn a_vault_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Vault>();
    }

    #[test]
    fn every_part_of_a_context_changes_its_associated_data() {
        let (t, u) = (TenantId::generate(), UserId::generate());
        let base = SecretContext::user(t.clone(), u.clone(), "oura");
        let others = [
            SecretContext::user(TenantId::generate(), u.clone(), "oura"),
            SecretContext::user(t.clone(), UserId::generate(), "oura"),
            SecretContext::user(t.clone(), u, "whoop"),
            SecretContext::tenant(t, "oura"),
        ];
        for other in others {
            assert_ne!(base.aad(), other.aad(), "{other:?}");
        }
        assert!(base.aad().ends_with(";purpose=oura"));
    }

    #[test]
    fn a_tenant_level_secret_has_the_user_dash_in_its_kms_context() {
        let ctx = SecretContext::tenant(TenantId::generate(), "provider_app:oura");
        let kms = ctx.kms_context();
        assert_eq!(kms.get("user").map(String::as_str), Some("-"));
        assert_eq!(kms.get("provider").map(String::as_str), Some("provider_app:oura"));
        assert_eq!(kms.get("tenant"), Some(&ctx.tenant_id.to_string()));
        assert_eq!(kms.len(), 3);
    }

    #[test]
    fn strings_of_another_shape_are_corrupt() {
        let ok_nonce = URL_SAFE_NO_PAD.encode([0u8; 12]);
        let ok_data = URL_SAFE_NO_PAD.encode([0u8; 16]);
        let cases = [
            String::new(),
            "garbage".to_owned(),
            "v1...".to_owned(),
            format!("v2.AAAA.{ok_nonce}.{ok_data}"),
            format!("v1.AAAA.{ok_nonce}.{ok_data}.AAAA"),
            format!("v1.!!!!.{ok_nonce}.{ok_data}"),
            format!("v1.AAAA.{}.{ok_data}", URL_SAFE_NO_PAD.encode([0u8; 11])),
            format!("v1.AAAA.{ok_nonce}.{}", URL_SAFE_NO_PAD.encode([0u8; 15])),
            format!("v1.{}.{ok_nonce}.{ok_data}", URL_SAFE_NO_PAD.encode(vec![0u8; 6145])),
            format!("v1.AAAA=.{ok_nonce}.{ok_data}"),
        ];
        for case in cases {
            assert!(matches!(Sealed::parse(&case), Err(VaultError::Corrupt(_))), "{case:?}");
        }
        assert!(Sealed::parse(&format!("v1.AAAA.{ok_nonce}.{ok_data}")).is_ok());
    }

    #[tokio::test]
    async fn even_with_the_data_key_in_hand_a_ciphertext_moved_to_another_context_fails_its_tag() {
        // GIVEN a vault that holds the same data key for two users, as a KMS ignoring contexts would give it
        let vault = offline_vault();
        let tenant = TenantId::generate();
        let (ana, bob) = (
            SecretContext::user(tenant.clone(), UserId::generate(), "oura"),
            SecretContext::user(tenant, UserId::generate(), "oura"),
        );
        with_key(&vault, &ana, [7; 32], b"blob");
        with_key(&vault, &bob, [7; 32], b"blob");
        // WHEN Ana's secret is opened as Bob's
        let sealed = vault.seal(&ana, b"ana's refresh token").await;
        let sealed = sealed.unwrap_or_default();
        let as_bob = vault.open(&bob, &sealed).await;
        // THEN only Ana's context opens it, and KMS was never asked
        assert!(matches!(as_bob, Err(VaultError::WrongContext)), "{as_bob:?}");
        let as_ana = vault.open_string(&ana, &sealed).await.map(|s| s.expose_secret().to_owned());
        assert_eq!(as_ana.ok().as_deref(), Some("ana's refresh token"));
        assert_eq!(vault.kms_calls(), (0, 0));
    }

    #[tokio::test]
    async fn the_debug_output_of_a_vault_holding_keys_shows_none_of_them() {
        let vault = offline_vault();
        let ctx = SecretContext::user(TenantId::generate(), UserId::generate(), "oura");
        with_key(&vault, &ctx, [0xAB; 32], b"blob");
        let debug = format!("{vault:?} {vault:#?}");
        assert!(!debug.contains("171"), "{debug}");
        assert!(!debug.to_lowercase().contains("abab"), "{debug}");
        assert!(debug.contains("sealing_keys: 1"), "{debug}");
    }

    #[tokio::test]
    async fn an_opened_secret_does_not_show_itself_in_debug_output() {
        let vault = offline_vault();
        let ctx = SecretContext::tenant(TenantId::generate(), "provider_app:oura");
        with_key(&vault, &ctx, [1; 32], b"blob");
        let sealed = vault.seal(&ctx, b"client-secret-xyz").await.unwrap_or_default();
        assert!(!sealed.contains("client-secret-xyz"));
        let opened = vault.open(&ctx, &sealed).await;
        assert!(opened.as_ref().is_ok_and(|s| s.expose_secret() == b"client-secret-xyz"));
        assert!(!format!("{opened:?}").contains("client-secret"), "{opened:?}");
    }
}
