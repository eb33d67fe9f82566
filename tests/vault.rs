//! `shared::vault` against moto's KMS: secrets open only in the context they were sealed for, altered or
//! foreign strings fail cleanly, data keys are reused within their bounds, and no key reaches Debug output.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_kms::primitives::Blob;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use shared::ids::{TenantId, UserId};
use shared::vault::{ExposeSecret, SecretContext, Vault, VaultError};

/// Each test's own KMS key, and the client to make more vaults on it.
struct World {
    sdk: aws_config::SdkConfig,
    kms: aws_sdk_kms::Client,
    key_id: String,
}

async fn world() -> anyhow::Result<World> {
    let sdk = shared::aws::sdk_config().await;
    let kms = aws_sdk_kms::Client::new(&sdk);
    let created = kms.create_key().description("vault test").send().await.context("creating a KMS key")?;
    let key_id = created.key_metadata().context("CreateKey returned no metadata")?.key_id().to_owned();
    Ok(World { sdk, kms, key_id })
}

impl World {
    /// A vault with empty caches.
    fn vault(&self) -> Vault {
        Vault::new(self.kms.clone(), &self.key_id)
    }
}

fn ana() -> SecretContext {
    SecretContext::user(TenantId::generate(), UserId::generate(), "oura")
}

/// The four parts of a sealed string, decoded.
fn parts(sealed: &str) -> anyhow::Result<[Vec<u8>; 4]> {
    let p: Vec<&str> = sealed.split('.').collect();
    anyhow::ensure!(p.len() == 4 && p[0] == "v1", "not a v1 sealed string: {sealed}");
    Ok([
        p[0].as_bytes().to_vec(),
        URL_SAFE_NO_PAD.decode(p[1])?,
        URL_SAFE_NO_PAD.decode(p[2])?,
        URL_SAFE_NO_PAD.decode(p[3])?,
    ])
}

fn join(parts: &[Vec<u8>; 4]) -> String {
    format!(
        "v1.{}.{}.{}",
        URL_SAFE_NO_PAD.encode(&parts[1]),
        URL_SAFE_NO_PAD.encode(&parts[2]),
        URL_SAFE_NO_PAD.encode(&parts[3])
    )
}

/// `sealed` with one bit of byte `at` of part `part` (1 key blob, 2 nonce, 3 ciphertext) flipped.
fn flipped(sealed: &str, part: usize, at: usize) -> anyhow::Result<String> {
    let mut p = parts(sealed)?;
    let byte = p[part].get_mut(at).context("no such byte")?;
    *byte ^= 0x01;
    Ok(join(&p))
}

/// The plaintext data key inside a sealed string, asked of KMS directly with the documented context.
async fn data_key_of(w: &World, ctx: &SecretContext, sealed: &str) -> anyhow::Result<Vec<u8>> {
    let blob = parts(sealed)?[1].clone();
    let user = ctx.user_id.as_ref().map_or("-".to_owned(), ToString::to_string);
    let context = HashMap::from([
        ("tenant".to_owned(), ctx.tenant_id.to_string()),
        ("user".to_owned(), user),
        ("provider".to_owned(), ctx.purpose.clone()),
    ]);
    let out = w.kms.decrypt().ciphertext_blob(Blob::new(blob)).set_encryption_context(Some(context)).send().await?;
    Ok(out.plaintext().context("Decrypt returned no plaintext")?.as_ref().to_vec())
}

#[tokio::test]
async fn a_sealed_secret_opens_with_the_same_context_and_the_sealed_string_contains_no_plaintext() -> anyhow::Result<()>
{
    let w = world().await?;
    let vault = w.vault();
    let user_ctx = ana();
    let app_ctx = SecretContext::tenant(user_ctx.tenant_id.clone(), "provider_app:oura");
    let token = "oura-refresh-token-0123456789";

    let sealed = vault.seal(&user_ctx, token.as_bytes()).await?;
    let app_sealed = vault.seal(&app_ctx, b"client-secret").await?;
    let empty_sealed = vault.seal(&user_ctx, b"").await?;

    assert!(sealed.is_ascii() && sealed.starts_with("v1.") && sealed.split('.').count() == 4, "{sealed}");
    assert!(
        !sealed.contains(token)
            && !sealed.contains(&URL_SAFE_NO_PAD.encode(token))
            && !sealed.contains(&STANDARD.encode(token))
    );
    assert_eq!(parts(&sealed)?[2].len(), 12, "a 96-bit nonce");
    assert_eq!(vault.open_string(&user_ctx, &sealed).await?.expose_secret(), token);
    assert_eq!(vault.open(&user_ctx, &sealed).await?.expose_secret(), token.as_bytes());
    assert_eq!(w.vault().open_string(&app_ctx, &app_sealed).await?.expose_secret(), "client-secret");
    assert!(w.vault().open(&user_ctx, &empty_sealed).await?.expose_secret().is_empty());
    Ok(())
}

#[tokio::test]
async fn sealing_the_same_secret_twice_gives_two_different_strings() -> anyhow::Result<()> {
    let w = world().await?;
    let vault = w.vault();
    let ctx = ana();
    let (a, b) = (vault.seal(&ctx, b"same").await?, vault.seal(&ctx, b"same").await?);
    let (pa, pb) = (parts(&a)?, parts(&b)?);
    assert_eq!(pa[1], pb[1], "the cached data key is reused");
    assert_ne!(pa[2], pb[2], "but every seal has its own nonce");
    assert_ne!(pa[3], pb[3]);
    Ok(())
}

#[tokio::test]
async fn a_ciphertext_copied_onto_another_users_row_fails_to_decrypt_with_a_warm_or_a_cold_cache() -> anyhow::Result<()>
{
    let w = world().await?;
    let warm = w.vault();
    let ctx = ana();
    let sealed = warm.seal(&ctx, b"ana's token").await?;
    // Opened once, so the warm vault holds the decrypted data key for this blob.
    assert_eq!(warm.open(&ctx, &sealed).await?.expose_secret(), b"ana's token");

    let user = ctx.user_id.clone().context("a user context")?;
    let elsewhere = [
        ("another user", SecretContext::user(ctx.tenant_id.clone(), UserId::generate(), "oura")),
        ("another tenant", SecretContext::user(TenantId::generate(), user.clone(), "oura")),
        ("another purpose", SecretContext::user(ctx.tenant_id.clone(), user, "whoop")),
        ("the tenant's own secrets", SecretContext::tenant(ctx.tenant_id.clone(), "oura")),
    ];
    for (what, other) in elsewhere {
        let on_warm = warm.open(&other, &sealed).await;
        assert!(matches!(on_warm, Err(VaultError::WrongContext)), "{what}, warm cache: {on_warm:?}");
        let on_cold = w.vault().open(&other, &sealed).await;
        assert!(matches!(on_cold, Err(VaultError::WrongContext)), "{what}, cold cache: {on_cold:?}");
    }
    assert_eq!(warm.open(&ctx, &sealed).await?.expose_secret(), b"ana's token", "the right row still opens");
    Ok(())
}

#[tokio::test]
async fn a_ciphertext_spliced_onto_another_rows_data_key_fails_to_decrypt() -> anyhow::Result<()> {
    // GIVEN two users' sealed tokens
    let w = world().await?;
    let vault = w.vault();
    let (ana, bob) = (ana(), ana());
    let ana_sealed = parts(&vault.seal(&ana, b"ana's token").await?)?;
    let bob_sealed = parts(&vault.seal(&bob, b"bob's token").await?)?;
    // WHEN Ana's nonce and ciphertext are joined to Bob's encrypted data key
    let spliced = join(&[ana_sealed[0].clone(), bob_sealed[1].clone(), ana_sealed[2].clone(), ana_sealed[3].clone()]);
    // THEN it opens neither as Ana's (KMS refuses Bob's key) nor as Bob's (the tag fails)
    for ctx in [&ana, &bob] {
        let opened = w.vault().open(ctx, &spliced).await;
        assert!(matches!(opened, Err(VaultError::WrongContext)), "{ctx:?}: {opened:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_tampered_ciphertext_nonce_or_key_blob_fails_as_wrong_context() -> anyhow::Result<()> {
    let w = world().await?;
    let warm = w.vault();
    let ctx = ana();
    let sealed = warm.seal(&ctx, b"a token worth stealing").await?;
    warm.open(&ctx, &sealed).await?;
    let [_, blob, nonce, data] = parts(&sealed)?;

    let mut tampered = vec![
        ("nonce, first byte", flipped(&sealed, 2, 0)?),
        ("nonce, last byte", flipped(&sealed, 2, nonce.len() - 1)?),
        ("ciphertext, first byte", flipped(&sealed, 3, 0)?),
        ("tag, last byte", flipped(&sealed, 3, data.len() - 1)?),
        // The end of a KMS ciphertext blob is inside what KMS authenticates (moto: its GCM tag).
        ("key blob, last byte", flipped(&sealed, 1, blob.len() - 1)?),
    ];
    let mut one_byte_short = parts(&sealed)?;
    one_byte_short[3].pop();
    tampered.push(("ciphertext one byte short", join(&one_byte_short)));
    let mut one_byte_long = parts(&sealed)?;
    one_byte_long[3].push(0);
    tampered.push(("ciphertext one byte long", join(&one_byte_long)));

    for (what, s) in tampered {
        let on_warm = warm.open(&ctx, &s).await;
        assert!(matches!(on_warm, Err(VaultError::WrongContext)), "{what}, warm: {on_warm:?}");
        let on_cold = w.vault().open(&ctx, &s).await;
        assert!(matches!(on_cold, Err(VaultError::WrongContext)), "{what}, cold: {on_cold:?}");
    }
    Ok(())
}

#[tokio::test]
async fn garbage_strings_are_corrupt_and_never_reach_kms() -> anyhow::Result<()> {
    let w = world().await?;
    let vault = w.vault();
    let ctx = ana();
    let sealed = vault.seal(&ctx, b"token").await?;
    let [_, blob, nonce, _] = parts(&sealed)?;
    let (blob, nonce) = (URL_SAFE_NO_PAD.encode(blob), URL_SAFE_NO_PAD.encode(nonce));
    let garbage = [
        String::new(),
        "token".to_owned(),
        "v1".to_owned(),
        "v1...".to_owned(),
        sealed.replacen("v1.", "v2.", 1),
        format!("{sealed}.AAAA"),
        sealed.replacen('.', "..", 1),
        format!("v1.{blob}.{nonce}.{}", URL_SAFE_NO_PAD.encode([0u8; 15])),
        format!("v1.{blob}.{}.{}", URL_SAFE_NO_PAD.encode([0u8; 16]), URL_SAFE_NO_PAD.encode([0u8; 32])),
        format!("v1.{blob}.{nonce}.not*base64"),
        format!("v1..{nonce}.{}", URL_SAFE_NO_PAD.encode([0u8; 32])),
        sealed.replace('-', "+").replace('_', "/") + "==",
        "v1.é.é.é".to_owned(),
        "\u{0}".repeat(10_000),
    ];
    let before = vault.kms_calls();
    for s in &garbage {
        let opened = vault.open(&ctx, s).await;
        assert!(matches!(opened, Err(VaultError::Corrupt(_))), "{s:?}: {opened:?}");
        let opened = vault.open_string(&ctx, s).await;
        assert!(matches!(opened, Err(VaultError::Corrupt(_))), "{s:?}: {opened:?}");
    }
    assert_eq!(vault.kms_calls(), before);
    Ok(())
}

#[tokio::test]
async fn bytes_that_are_not_utf8_open_as_bytes_but_not_as_a_string() -> anyhow::Result<()> {
    let w = world().await?;
    let vault = w.vault();
    let ctx = ana();
    let sealed = vault.seal(&ctx, &[0xff, 0xfe, 0x00]).await?;
    assert_eq!(vault.open(&ctx, &sealed).await?.expose_secret(), &[0xff, 0xfe, 0x00]);
    assert!(matches!(vault.open_string(&ctx, &sealed).await, Err(VaultError::Corrupt(_))));
    Ok(())
}

#[tokio::test]
async fn a_hundred_seals_for_one_context_make_one_generate_data_key_call() -> anyhow::Result<()> {
    let w = world().await?;
    let vault = w.vault();
    let ctx = ana();
    for i in 0..100 {
        vault.seal(&ctx, format!("token {i}").as_bytes()).await?;
    }
    assert_eq!(vault.kms_calls(), (1, 0));
    // Another context never shares that data key.
    vault.seal(&ana(), b"token").await?;
    assert_eq!(vault.kms_calls(), (2, 0));
    Ok(())
}

#[tokio::test]
async fn with_ten_uses_per_data_key_twenty_five_seals_make_three_generate_data_key_calls() -> anyhow::Result<()> {
    let w = world().await?;
    let vault = w.vault().with_limits(Duration::from_secs(300), 10);
    let ctx = ana();
    let mut blobs = Vec::new();
    for _ in 0..25 {
        blobs.push(parts(&vault.seal(&ctx, b"token").await?)?[1].clone());
    }
    assert_eq!(vault.kms_calls(), (3, 0));
    blobs.dedup();
    assert_eq!(blobs.len(), 3, "10 + 10 + 5 seals");
    Ok(())
}

#[tokio::test]
async fn with_a_max_age_of_zero_every_seal_makes_a_new_data_key() -> anyhow::Result<()> {
    let w = world().await?;
    let vault = w.vault().with_limits(Duration::ZERO, 10_000);
    let ctx = ana();
    for _ in 0..5 {
        vault.seal(&ctx, b"token").await?;
    }
    assert_eq!(vault.kms_calls(), (5, 0));
    Ok(())
}

#[tokio::test]
async fn a_data_key_older_than_its_max_age_is_replaced_and_its_decrypted_copy_forgotten() -> anyhow::Result<()> {
    let w = world().await?;
    let vault = w.vault().with_limits(Duration::from_millis(300), 10_000);
    let ctx = ana();
    let sealed = vault.seal(&ctx, b"token").await?;
    vault.open(&ctx, &sealed).await?;
    vault.seal(&ctx, b"token").await?;
    vault.open(&ctx, &sealed).await?;
    assert_eq!(vault.kms_calls(), (1, 1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    vault.seal(&ctx, b"token").await?;
    vault.open(&ctx, &sealed).await?;
    assert_eq!(vault.kms_calls(), (2, 2));
    Ok(())
}

#[tokio::test]
async fn a_hundred_opens_of_the_same_sealed_value_make_one_decrypt_call() -> anyhow::Result<()> {
    let w = world().await?;
    let vault = w.vault();
    let ctx = ana();
    let sealed = vault.seal(&ctx, b"token").await?;
    for _ in 0..100 {
        assert_eq!(vault.open_string(&ctx, &sealed).await?.expose_secret(), "token");
    }
    assert_eq!(vault.kms_calls(), (1, 1));
    Ok(())
}

#[tokio::test]
async fn many_tasks_sealing_and_opening_at_once_all_get_their_own_secret_back() -> anyhow::Result<()> {
    let w = world().await?;
    let vault = Arc::new(w.vault());
    let contexts: Vec<SecretContext> = (0..5).map(|_| ana()).collect();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (vault, ctx) = (vault.clone(), contexts[i % contexts.len()].clone());
            tokio::spawn(async move {
                let secret = format!("secret {i}");
                let sealed = vault.seal(&ctx, secret.as_bytes()).await?;
                let opened = vault.open_string(&ctx, &sealed).await?;
                anyhow::ensure!(opened.expose_secret() == secret, "task {i} got another secret");
                Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let (generated, _) = vault.kms_calls();
    assert!((5..=50).contains(&generated), "{generated}");
    Ok(())
}

#[tokio::test]
async fn when_kms_is_unreachable_sealing_and_opening_fail_quickly_as_retryable_kms_errors() -> anyhow::Result<()> {
    let w = world().await?;
    let ctx = ana();
    let sealed = w.vault().seal(&ctx, b"token").await?;
    let config = aws_sdk_kms::config::Builder::from(&w.sdk)
        .endpoint_url("http://127.0.0.1:9")
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(aws_config::timeout::TimeoutConfig::builder().connect_timeout(Duration::from_secs(2)).build())
        .build();
    let offline = Vault::new(aws_sdk_kms::Client::from_conf(config), &w.key_id);

    let started = Instant::now();
    let sealing = offline.seal(&ctx, b"token").await;
    let opening = offline.open(&ctx, &sealed).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    for result in [sealing.map(|_| ()), opening.map(|_| ())] {
        let Err(e) = result else { anyhow::bail!("KMS is unreachable yet the call succeeded") };
        assert!(matches!(e, VaultError::Kms(_)) && e.is_retryable(), "{e:?}");
    }
    assert_eq!(offline.kms_calls(), (1, 1));
    Ok(())
}

#[tokio::test]
async fn debug_output_of_a_vault_and_of_an_opened_secret_contains_no_key_material() -> anyhow::Result<()> {
    // GIVEN a vault whose caches hold a data key for sealing and for opening
    let w = world().await?;
    let vault = w.vault();
    let ctx = SecretContext::tenant(TenantId::generate(), "provider_app:oura");
    let sealed = vault.seal(&ctx, b"client-secret-xyz").await?;
    let opened = vault.open(&ctx, &sealed).await?;
    let opened_text = vault.open_string(&ctx, &sealed).await?;
    // (KMS gives the data key back only with the documented encryption context)
    let key = data_key_of(&w, &ctx, &sealed).await?;
    assert_eq!(key.len(), 32);
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let forms =
        [hex.clone(), hex.to_uppercase(), STANDARD.encode(&key), URL_SAFE_NO_PAD.encode(&key), format!("{key:?}")];
    // WHEN everything a log line could show is formatted
    let debug = format!(
        "{vault:?} {vault:#?} {ctx:?} {opened:?} {opened_text:?} {:?} {:?}",
        vault.open(&ctx, "garbage").await,
        w.vault().open(&SecretContext::tenant(TenantId::generate(), "x"), &sealed).await
    );
    // THEN neither the data key nor the secret is in it, nor is the data key in the sealed string
    for form in &forms {
        assert!(!debug.contains(form.as_str()), "{form} in {debug}");
        assert!(!sealed.contains(form.as_str()), "{form} in {sealed}");
    }
    assert!(!debug.contains("client-secret"), "{debug}");
    Ok(())
}
