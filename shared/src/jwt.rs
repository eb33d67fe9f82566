//! Verifies end-user JWTs issued by a tenant's own login provider ("bring your own login") against the
//! JWKS that provider publishes, so the authorizer can accept them as `Principal::EndUser`.
//!
//! Only RS256 and ES256 are accepted, and only with a key of the matching type taken from the tenant's
//! JWKS. Nothing in the token chooses where keys come from (`jku`, `x5u` and embedded `jwk` headers are
//! ignored), and no HMAC key is ever built, so the "HS256 signed with the public key" and `alg: none`
//! attacks have nothing to work with.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How long a fetched JWKS is trusted before it is fetched again.
const DEFAULT_TTL: Duration = Duration::from_secs(10 * 60);
/// The least time between two fetches of one JWKS URL, so a stream of tokens with unknown `kid`s cannot
/// make us hammer the tenant's login provider.
const DEFAULT_MIN_REFETCH: Duration = Duration::from_secs(30);
/// Clock skew allowed on `exp` and `nbf`.
const DEFAULT_LEEWAY_SECS: u64 = 30;
/// A JWKS fetch happens while a request waits, so it must fail fast.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// API Gateway caps request headers near 10 KiB; anything longer is not a token anyone could send us,
/// and refusing it early bounds the work done on hostile input.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Real JWKS documents are a few KiB; the cap keeps a misconfigured URL from filling memory.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// RSA moduli shorter than this are refused: 1024-bit keys are within reach of a determined attacker.
const MIN_RSA_MODULUS_BYTES: usize = 256;
/// Longest piece of token-supplied text echoed back in an error message.
const MAX_ECHO_CHARS: usize = 64;

/// What a tenant configured for "bring your own login".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerConfig {
    /// Must equal the token's `iss` exactly.
    pub issuer: String,
    /// Where the login provider publishes its signing keys (`{"keys": [...]}`).
    pub jwks_url: String,
    /// Must be one of the token's `aud` values.
    pub audience: String,
}

/// The claims of a token that passed every check in [`JwtVerifier::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClaims {
    /// The end user's id at the tenant's login provider; never empty.
    pub sub: String,
    /// Equal to the configured issuer.
    pub iss: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: i64,
}

/// An unverified look at a token, made by [`peek`]. Nothing in it may be trusted: it only tells the caller
/// which tenant's [`IssuerConfig`] to verify the token against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peek {
    /// The header's `alg`, whatever it says (including `none`).
    pub alg: String,
    /// The header's `kid`, if any.
    pub kid: Option<String>,
    /// The payload's `iss`, if any.
    pub iss: Option<String>,
    /// The payload's `aud`: empty when absent, one entry when it is a string.
    pub aud: Vec<String>,
}

/// Why a token was refused. [`JwtError::code`] is the stable machine-readable form; the `Display` text
/// tells the caller what to fix.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("the bearer token is not a well-formed JWT: {0}; send the token exactly as your login provider issued it")]
    Malformed(String),
    #[error(
        "the token's signing algorithm is not accepted: {0}; the login provider must sign with RS256 (an RSA key) or ES256 (an EC P-256 key), using the JWKS key its `kid` names"
    )]
    UnsupportedAlgorithm(String),
    /// Carries the token's `kid`, empty when the token has none.
    #[error("{}", unknown_key_message(.0))]
    UnknownKey(String),
    #[error(
        "the token's signature does not verify with the login provider's key: the token was altered or signed by another key; get a fresh token from your login provider"
    )]
    InvalidSignature,
    #[error("the token has expired; get a fresh token from your login provider")]
    Expired,
    #[error(
        "the token is not valid yet (its `nbf` is in the future); check the clock of your login provider or retry in a moment"
    )]
    NotYetValid,
    #[error(
        "the token's `aud` does not include the audience configured for this tenant; request a token for that audience, or correct the audience in the tenant's login settings"
    )]
    WrongAudience,
    #[error(
        "the token's `iss` is not the issuer configured for this tenant; use a token from that issuer, or correct the issuer in the tenant's login settings"
    )]
    WrongIssuer,
    #[error(
        "the token has no `sub` claim, or an empty one; configure your login provider to put the user's id in `sub`"
    )]
    MissingSubject,
    #[error(
        "the login provider's signing keys could not be loaded: {0}; check that the tenant's jwks_url is reachable and serves a JWKS, then retry"
    )]
    JwksUnavailable(String),
}

fn unknown_key_message(kid: &str) -> String {
    if kid.is_empty() {
        "the token has no `kid` header and the login provider's JWKS does not hold exactly one key for its \
         algorithm; configure your login provider to set `kid`"
            .to_owned()
    } else {
        format!(
            "the token was signed with key id \"{}\", which is not in the login provider's JWKS; check that \
             the tenant's jwks_url belongs to the provider that issued this token",
            shorten(kid)
        )
    }
}

impl JwtError {
    /// Stable snake_case code for error bodies and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "token_malformed",
            Self::UnsupportedAlgorithm(_) => "token_unsupported_algorithm",
            Self::UnknownKey(_) => "token_unknown_key",
            Self::InvalidSignature => "token_bad_signature",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::WrongAudience => "token_wrong_audience",
            Self::WrongIssuer => "token_wrong_issuer",
            Self::MissingSubject => "token_missing_subject",
            Self::JwksUnavailable(_) => "jwks_unavailable",
        }
    }

    /// The HTTP status to answer with: 401 when the token is at fault, 503 when we could not get the keys
    /// to judge it (the same token may pass once the JWKS is reachable).
    pub fn status(&self) -> u16 {
        match self {
            Self::JwksUnavailable(_) => 503,
            _ => 401,
        }
    }
}

/// Reads a token's header and payload without verifying anything, to find which tenant's config applies.
///
/// Fails with [`JwtError::Malformed`] unless the token is three base64url segments whose first two are JSON
/// objects, the header has a string `alg`, `kid` and `iss` are strings when present, and `aud` is a string
/// or an array of strings when present.
pub fn peek(token: &str) -> Result<Peek, JwtError> {
    inspect(token).map(|(peeked, _)| peeked)
}

/// A cheap syntactic test that tells a JWT from an API key: three dot-separated base64url segments whose
/// header decodes to a JSON object with a string `alg`. API keys contain dots too, so the dots alone prove
/// nothing. An unsigned (`alg: none`) token counts as a JWT, so it is refused as one, with a clear reason.
pub fn looks_like_jwt(token: &str) -> bool {
    let Ok(segments) = split(token) else {
        return false;
    };
    segments.payload.bytes().all(is_base64url_byte)
        && decode_json_object(segments.header, "header")
            .is_ok_and(|header| header.get("alg").is_some_and(Value::is_string))
}

/// The header and payload segments of a compact JWS whose shape `split` has checked.
struct Segments<'a> {
    header: &'a str,
    payload: &'a str,
}

fn split(token: &str) -> Result<Segments<'_>, JwtError> {
    if token.is_empty() {
        return Err(JwtError::Malformed("the token is empty".to_owned()));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed(format!(
            "the token is {} bytes long, over the {MAX_TOKEN_LEN}-byte limit",
            token.len()
        )));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err(JwtError::Malformed(if parts.len() == 5 {
            "it has five parts, which makes it an encrypted JWT (JWE); only signed JWTs are accepted".to_owned()
        } else {
            format!("a JWT has three dot-separated parts (header.payload.signature), this has {}", parts.len())
        }));
    };
    if header.is_empty() || payload.is_empty() {
        return Err(JwtError::Malformed("its header or payload is empty".to_owned()));
    }
    // The signature is decoded by jsonwebtoken later; checking its alphabet here makes `peek` and
    // `looks_like_jwt` refuse obvious non-tokens too. It may be empty: that is an unsigned token, which
    // verification refuses for its algorithm.
    if !signature.bytes().all(is_base64url_byte) {
        return Err(JwtError::Malformed("its signature is not base64url".to_owned()));
    }
    Ok(Segments { header, payload })
}

fn is_base64url_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn decode_json_object(segment: &str, what: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtError::Malformed(format!("its {what} is not unpadded base64url")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(JwtError::Malformed(format!("its {what} is not a JSON object"))),
        Err(_) => Err(JwtError::Malformed(format!("its {what} is not JSON"))),
    }
}

fn optional_string(map: &Map<String, Value>, name: &str, what: &str) -> Result<Option<String>, JwtError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(JwtError::Malformed(format!("the {what}'s `{name}` is not a string"))),
    }
}

/// [`peek`], plus whether the header lists critical extensions (`crit`), which we must refuse since we
/// understand none (RFC 7515 §4.1.11).
fn inspect(token: &str) -> Result<(Peek, bool), JwtError> {
    let segments = split(token)?;
    let header = decode_json_object(segments.header, "header")?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        Some(_) => {
            return Err(JwtError::Malformed("the header's `alg` is not a string".to_owned()));
        }
        None => return Err(JwtError::Malformed("the header has no `alg`".to_owned())),
    };
    let kid = optional_string(&header, "kid", "header")?;
    let payload = decode_json_object(segments.payload, "payload")?;
    let iss = optional_string(&payload, "iss", "payload")?;
    let aud = match payload.get("aud") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| JwtError::Malformed("the payload's `aud` array holds a non-string".to_owned()))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(JwtError::Malformed(
                "the payload's `aud` is neither a string nor an array of strings".to_owned(),
            ));
        }
    };
    Ok((Peek { alg, kid, iss, aud }, header.contains_key("crit")))
}

/// The only algorithms we verify. Everything else, `none` and the HMAC family included, is refused
/// before any key is looked up.
fn accepted_algorithm(alg: &str) -> Result<Algorithm, JwtError> {
    match alg {
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        other => Err(JwtError::UnsupportedAlgorithm(format!("the token says \"alg\": \"{}\"", shorten(other)))),
    }
}

/// Token-supplied text is echoed in messages; this keeps a hostile value from bloating them.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHO_CHARS) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

/// The claims we read after jsonwebtoken has verified the token. Every field is optional so that a missing
/// claim surfaces as jsonwebtoken's `MissingRequiredClaim` (which names the claim) rather than as a
/// deserialization error; a claim of the wrong type is still a deserialization error, so an array `iss`,
/// which jsonwebtoken would otherwise accept if any element matched, is refused as malformed.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    iss: Option<String>,
    /// NumericDate may be fractional (RFC 7519 §2).
    exp: Option<f64>,
}

/// Verifies tenant-issued JWTs, caching each tenant's JWKS. `Send + Sync`; share one per process via `Arc`.
/// The HTTP client for JWKS fetches: no redirects, since a tenant-chosen URL must not be able to bounce
/// the fetch somewhere else.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap_or_default()
}

pub struct JwtVerifier {
    http: reqwest::Client,
    ttl: Duration,
    min_refetch: Duration,
    leeway_secs: u64,
    /// One slot per JWKS URL. Grows with the number of distinct URLs seen, which is bounded by the number
    /// of tenants using their own login.
    slots: Mutex<HashMap<String, Arc<JwksSlot>>>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("ttl", &self.ttl)
            .field("min_refetch", &self.min_refetch)
            .field("leeway_secs", &self.leeway_secs)
            .finish_non_exhaustive()
    }
}

/// The cache for one JWKS URL.
#[derive(Default)]
struct JwksSlot {
    /// Read on every verification; never held across an await.
    state: RwLock<SlotState>,
    /// Held while fetching, so concurrent callers wait for one fetch instead of each starting their own.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default, Clone)]
struct SlotState {
    keys: Option<Arc<KeySet>>,
    /// When a fetch was last started, successful or not; rate-limits refetches.
    last_attempt: Option<Instant>,
    /// Why the last fetch failed; cleared by a successful one.
    last_error: Option<String>,
}

impl JwksSlot {
    fn snapshot(&self) -> SlotState {
        self.state.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// A fetched JWKS, each key already turned into a verifying key or a reason it cannot be used.
struct KeySet {
    fetched_at: Instant,
    entries: Vec<JwkEntry>,
}

struct JwkEntry {
    kid: Option<String>,
    usable: Result<UsableKey, String>,
}

#[derive(Clone)]
struct UsableKey {
    alg: Algorithm,
    key: DecodingKey,
}

enum Lookup {
    Found(UsableKey),
    /// The key exists but cannot verify this token; refetching would not change that.
    Refused(JwtError),
    Missing,
}

impl KeySet {
    fn is_fresh(&self, ttl: Duration) -> bool {
        self.fetched_at.elapsed() < ttl
    }

    /// Finds the key for a token: by `kid` when it has one, else the only key for its algorithm.
    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        let Some(kid) = kid else {
            let mut fitting =
                self.entries.iter().filter_map(|entry| entry.usable.as_ref().ok()).filter(|key| key.alg == alg);
            return match (fitting.next(), fitting.next()) {
                (Some(key), None) => Lookup::Found(key.clone()),
                _ => Lookup::Missing,
            };
        };
        let mut refusal = None;
        for entry in self.entries.iter().filter(|entry| entry.kid.as_deref() == Some(kid)) {
            match &entry.usable {
                Ok(key) if key.alg == alg => return Lookup::Found(key.clone()),
                Ok(key) => {
                    refusal.get_or_insert_with(|| {
                        format!("the token says {alg:?} but JWKS key \"{}\" is for {:?}", shorten(kid), key.alg)
                    });
                }
                Err(why) => {
                    refusal.get_or_insert_with(|| format!("JWKS key \"{}\" cannot verify tokens: {why}", shorten(kid)));
                }
            }
        }
        match refusal {
            Some(why) => Lookup::Refused(JwtError::UnsupportedAlgorithm(why)),
            None => Lookup::Missing,
        }
    }
}

/// The JWK members we read. Unknown members (`key_ops`, `x5c`, ...) are ignored.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Turns one JWKS entry into a key. A bad entry is kept with its reason rather than failing the whole
/// set: providers publish encryption keys and other algorithms next to their signing keys.
fn parse_jwk(value: &Value) -> JwkEntry {
    let kid = value.get("kid").and_then(Value::as_str).map(str::to_owned);
    let usable = RawJwk::deserialize(value)
        .map_err(|_| "it is not a well-formed JWK".to_owned())
        .and_then(|raw| usable_key(&raw));
    JwkEntry { kid, usable }
}

/// Builds a verifying key only for an RSA key (RS256) or an EC P-256 key (ES256), honouring the JWK's `alg`
/// and `use`. Keys of any other type, `oct` in particular, are never turned into keys: an HMAC secret
/// built from public JWKS material is exactly what the algorithm-confusion attack needs.
fn usable_key(raw: &RawJwk) -> Result<UsableKey, String> {
    if let Some(use_) = raw.use_.as_deref().filter(|u| *u != "sig") {
        return Err(format!("it is marked \"use\": \"{}\", not \"sig\"", shorten(use_)));
    }
    let (alg, key) = match raw.kty.as_str() {
        "RSA" => {
            require_alg(raw, "RS256", "an RSA")?;
            let (Some(n), Some(e)) = (&raw.n, &raw.e) else {
                return Err("the RSA key lacks `n` or `e`".to_owned());
            };
            let modulus = URL_SAFE_NO_PAD.decode(n).map_err(|_| "its `n` is not unpadded base64url".to_owned())?;
            let significant = modulus.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_MODULUS_BYTES {
                return Err(format!(
                    "it is a {}-bit RSA key; keys shorter than 2048 bits are refused",
                    significant * 8
                ));
            }
            let key = DecodingKey::from_rsa_components(n, e)
                .map_err(|_| "its `n` or `e` is not unpadded base64url".to_owned())?;
            (Algorithm::RS256, key)
        }
        "EC" => {
            match raw.crv.as_deref() {
                Some("P-256") => {}
                Some(other) => {
                    return Err(format!("it is on curve \"{}\"; only P-256 (ES256) is accepted", shorten(other)));
                }
                None => return Err("the EC key has no `crv`".to_owned()),
            }
            require_alg(raw, "ES256", "an EC P-256")?;
            let (Some(x), Some(y)) = (&raw.x, &raw.y) else {
                return Err("the EC key lacks `x` or `y`".to_owned());
            };
            let key = DecodingKey::from_ec_components(x, y)
                .map_err(|_| "its `x` or `y` is not unpadded base64url".to_owned())?;
            (Algorithm::ES256, key)
        }
        other => {
            return Err(format!(
                "it is a \"{}\" key; only RSA (RS256) and EC P-256 (ES256) keys are accepted",
                shorten(other)
            ));
        }
    };
    // jsonwebtoken parses the key material only when verifying. A probe now tells "this JWKS key is
    // broken" (the provider's fault) apart from "the token's signature is bad" (the token's fault): the
    // probe's empty signature never verifies, so only a key that cannot be parsed yields an error.
    match jsonwebtoken::crypto::verify("", b"", &key, alg) {
        Ok(_) => Ok(UsableKey { alg, key }),
        Err(_) => Err("its public key is not a valid key".to_owned()),
    }
}

fn require_alg(raw: &RawJwk, wanted: &str, kind: &str) -> Result<(), String> {
    match raw.alg.as_deref() {
        None => Ok(()),
        Some(alg) if alg == wanted => Ok(()),
        Some(alg) => {
            Err(format!("it is {kind} key marked \"alg\": \"{}\"; only {wanted} is accepted for it", shorten(alg)))
        }
    }
}

impl JwtVerifier {
    /// A verifier with the defaults: JWKS cached 10 minutes, a URL refetched at most every 30 s, and 30 s
    /// of clock skew allowed on `exp` and `nbf`.
    pub fn new(http: reqwest::Client) -> Self {
        Self::with_settings(http, DEFAULT_TTL, DEFAULT_MIN_REFETCH, DEFAULT_LEEWAY_SECS)
    }

    /// `ttl`: how long a fetched JWKS is used before refetching. `min_refetch`: the least time between two
    /// fetches of one URL, including refetches for an unknown `kid` and retries after a failure.
    /// `leeway_secs`: clock skew allowed on `exp` and `nbf`.
    pub fn with_settings(http: reqwest::Client, ttl: Duration, min_refetch: Duration, leeway_secs: u64) -> Self {
        Self { http, ttl, min_refetch, leeway_secs, slots: Mutex::new(HashMap::new()) }
    }

    /// Verifies `token` against the tenant's `cfg`: the algorithm is RS256 or ES256 and matches the JWKS
    /// key named by `kid`, the signature verifies, `exp` is present and not past, `nbf` (if present) is not
    /// in the future, `iss` equals `cfg.issuer`, `aud` contains `cfg.audience`, and `sub` is non-empty.
    /// Claims are only judged once the signature has verified.
    pub async fn verify(&self, token: &str, cfg: &IssuerConfig) -> Result<VerifiedClaims, JwtError> {
        let (peeked, has_crit) = inspect(token)?;
        let alg = accepted_algorithm(&peeked.alg)?;
        if has_crit {
            return Err(JwtError::Malformed(
                "its header lists critical extensions (`crit`), which we do not support".to_owned(),
            ));
        }
        let key = self.key_for(&cfg.jwks_url, peeked.kid.as_deref(), alg).await?;

        let mut validation = Validation::new(key.alg);
        validation.leeway = self.leeway_secs;
        validation.validate_exp = true;
        // jsonwebtoken ignores `nbf` unless asked.
        validation.validate_nbf = true;
        // jsonwebtoken checks `iss` and `aud` only when present, so they must be required too.
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[cfg.issuer.as_str()]);
        validation.set_audience(&[cfg.audience.as_str()]);

        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(from_jsonwebtoken)?;
        let Claims { sub, iss, exp } = data.claims;
        let sub = sub.filter(|sub| !sub.trim().is_empty()).ok_or(JwtError::MissingSubject)?;
        // Already checked by jsonwebtoken; repeated so the returned `iss` is the configured one by
        // construction, whatever the library does.
        let iss = iss.filter(|iss| *iss == cfg.issuer).ok_or(JwtError::WrongIssuer)?;
        let exp = exp.ok_or_else(|| JwtError::Malformed("the token has no `exp` claim".to_owned()))?;
        Ok(VerifiedClaims { sub, iss, exp: exp.round() as i64 })
    }

    fn slot(&self, jwks_url: &str) -> Arc<JwksSlot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(slots.entry(jwks_url.to_owned()).or_default())
    }

    /// The key for a token, from the cache when it is fresh and has it, otherwise after (at most) one
    /// fetch. A stale JWKS that has the key is used when a refetch fails: a login provider's brief outage
    /// should not sign every user out.
    async fn key_for(&self, jwks_url: &str, kid: Option<&str>, alg: Algorithm) -> Result<UsableKey, JwtError> {
        let slot = self.slot(jwks_url);
        let unknown = || JwtError::UnknownKey(kid.unwrap_or_default().to_owned());

        if let Some(keys) = slot.snapshot().keys.filter(|keys| keys.is_fresh(self.ttl)) {
            match keys.lookup(kid, alg) {
                Lookup::Found(key) => return Ok(key),
                Lookup::Refused(err) => return Err(err),
                Lookup::Missing => {}
            }
        }

        let _fetching = slot.fetching.lock().await;
        // Another caller may have fetched while we waited for the lock.
        let state = slot.snapshot();
        let cached = state.keys.as_ref().map(|keys| (keys.lookup(kid, alg), keys.is_fresh(self.ttl)));
        match cached {
            Some((Lookup::Found(key), true)) => return Ok(key),
            Some((Lookup::Refused(err), true)) => return Err(err),
            _ => {}
        }

        let recently_attempted = state.last_attempt.is_some_and(|at| at.elapsed() < self.min_refetch);
        if recently_attempted {
            return match cached {
                Some((Lookup::Found(key), _)) => Ok(key),
                Some((Lookup::Refused(err), _)) => Err(err),
                _ => Err(match state.last_error {
                    Some(why) => JwtError::JwksUnavailable(why),
                    None => unknown(),
                }),
            };
        }

        let fetched = self.fetch(jwks_url).await;
        let mut guard = slot.state.write().unwrap_or_else(PoisonError::into_inner);
        guard.last_attempt = Some(Instant::now());
        match fetched {
            Ok(keys) => {
                let keys = Arc::new(keys);
                guard.keys = Some(Arc::clone(&keys));
                guard.last_error = None;
                drop(guard);
                match keys.lookup(kid, alg) {
                    Lookup::Found(key) => Ok(key),
                    Lookup::Refused(err) => Err(err),
                    Lookup::Missing => Err(unknown()),
                }
            }
            Err(why) => {
                guard.last_error = Some(why.clone());
                drop(guard);
                match cached {
                    Some((Lookup::Found(key), _)) => {
                        tracing::warn!(jwks_url, error = %why, "JWKS refetch failed; using the cached JWKS");
                        Ok(key)
                    }
                    Some((Lookup::Refused(err), _)) => Err(err),
                    _ => {
                        tracing::warn!(jwks_url, error = %why, "JWKS fetch failed");
                        Err(JwtError::JwksUnavailable(why))
                    }
                }
            }
        }
    }

    /// Fetches and parses a JWKS. The error says what went wrong in words a tenant can act on.
    async fn fetch(&self, jwks_url: &str) -> Result<KeySet, String> {
        tracing::debug!(jwks_url, "fetching JWKS");
        let mut response = self
            .http
            .get(jwks_url)
            .timeout(FETCH_TIMEOUT)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|err| format!("fetching {jwks_url} failed: {}", error_chain(&err)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("{jwks_url} answered HTTP {status}"));
        }
        let mut body = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|err| format!("reading {jwks_url} failed: {}", error_chain(&err)))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("{jwks_url} returned more than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let document: Value =
            serde_json::from_slice(&body).map_err(|err| format!("{jwks_url} did not return JSON ({err})"))?;
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{jwks_url} returned JSON without a `keys` array"))?;
        let entries: Vec<JwkEntry> = keys.iter().map(parse_jwk).collect();
        for entry in &entries {
            if let Err(why) = &entry.usable {
                tracing::debug!(jwks_url, kid = ?entry.kid, why, "JWKS key skipped");
            }
        }
        Ok(KeySet { fetched_at: Instant::now(), entries })
    }
}

/// reqwest's top-level message ("error sending request") hides the cause a tenant needs (refused, DNS,
/// TLS, timeout), so the whole chain is spelled out.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn from_jsonwebtoken(err: jsonwebtoken::errors::Error) -> JwtError {
    match err.kind() {
        ErrorKind::InvalidSignature => JwtError::InvalidSignature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "sub" => JwtError::MissingSubject,
            "iss" => JwtError::WrongIssuer,
            "aud" => JwtError::WrongAudience,
            other => JwtError::Malformed(format!("the token has no `{other}` claim")),
        },
        ErrorKind::InvalidClaimFormat(claim) => {
            JwtError::Malformed(format!("its `{claim}` claim is not a valid NumericDate"))
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::InvalidAlgorithmName => {
            JwtError::UnsupportedAlgorithm("the token's algorithm does not match the key".to_owned())
        }
        ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => {
            JwtError::JwksUnavailable("the JWKS key for this token is not a valid public key".to_owned())
        }
        ErrorKind::Json(json) => {
            JwtError::Malformed(format!("its header or claims do not have the expected types ({json})"))
        }
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
            JwtError::Malformed("it is not valid base64url-encoded JSON".to_owned())
        }
        _ => JwtError::Malformed(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use axum::Json;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const RSA_PEM: &str = include_str!("../../tests/fixtures/jwt/rsa.pem");
    const RSA_PUBLIC_PEM: &str = include_str!("../../tests/fixtures/jwt/rsa_pub.pem");
    const RSA_OTHER_PEM: &str = include_str!("../../tests/fixtures/jwt/rsa_other.pem");
    const EC_PEM: &str = include_str!("../../tests/fixtures/jwt/ec.pem");
    const JWKS: &str = include_str!("../../tests/fixtures/jwt/jwks.json");
    const JWKS_OTHER: &str = include_str!("../../tests/fixtures/jwt/jwks_other.json");

    const ISSUER: &str = "https://login.acme.example/";
    const AUDIENCE: &str = "tenantry-api";

    fn jwks() -> Value {
        serde_json::from_str(JWKS).expect("jwks.json fixture is JSON")
    }

    /// The fixture JWKS plus the key of rsa_other.pem as "rsa-2": the provider after a key rotation.
    fn rotated_jwks() -> Value {
        let other: Value = serde_json::from_str(JWKS_OTHER).expect("jwks_other.json fixture is JSON");
        let mut keys = jwks()["keys"].as_array().cloned().unwrap_or_default();
        keys.extend(other["keys"].as_array().cloned().unwrap_or_default());
        json!({ "keys": keys })
    }

    fn rsa_1_modulus() -> String {
        jwks()["keys"][0]["n"].as_str().expect("rsa-1 has n").to_owned()
    }

    /// Serves a JWKS on 127.0.0.1 and counts how often it is fetched.
    struct JwksServer {
        url: String,
        fetches: Arc<AtomicUsize>,
        jwks: Arc<RwLock<Value>>,
        failing: Arc<AtomicBool>,
    }

    #[derive(Clone)]
    struct ServerState {
        fetches: Arc<AtomicUsize>,
        jwks: Arc<RwLock<Value>>,
        failing: Arc<AtomicBool>,
    }

    async fn serve_jwks(state: State<ServerState>) -> Response {
        state.fetches.fetch_add(1, Ordering::SeqCst);
        if state.failing.load(Ordering::SeqCst) {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        let jwks = state.jwks.read().unwrap_or_else(PoisonError::into_inner).clone();
        Json(jwks).into_response()
    }

    impl JwksServer {
        async fn start(jwks: Value) -> Self {
            let state = ServerState {
                fetches: Arc::new(AtomicUsize::new(0)),
                jwks: Arc::new(RwLock::new(jwks)),
                failing: Arc::new(AtomicBool::new(false)),
            };
            let app = axum::Router::new().route("/jwks.json", get(serve_jwks)).with_state(state.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a local port");
            let addr = listener.local_addr().expect("local address");
            tokio::spawn(async move { axum::serve(listener, app).await });
            Self {
                url: format!("http://{addr}/jwks.json"),
                fetches: state.fetches,
                jwks: state.jwks,
                failing: state.failing,
            }
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }

        fn publish(&self, jwks: Value) {
            *self.jwks.write().unwrap_or_else(PoisonError::into_inner) = jwks;
        }

        fn config(&self) -> IssuerConfig {
            IssuerConfig { issuer: ISSUER.to_owned(), jwks_url: self.url.clone(), audience: AUDIENCE.to_owned() }
        }
    }

    fn http() -> reqwest::Client {
        // No proxy: a proxy set in the environment must not intercept the local JWKS server.
        reqwest::Client::builder().no_proxy().build().expect("build an HTTP client")
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn claims() -> Value {
        json!({ "sub": "user-42", "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600 })
    }

    fn claims_with(changes: Value) -> Value {
        let mut claims = claims();
        if let (Some(target), Some(changes)) = (claims.as_object_mut(), changes.as_object()) {
            for (name, value) in changes {
                if value.is_null() {
                    target.remove(name);
                } else {
                    target.insert(name.clone(), value.clone());
                }
            }
        }
        claims
    }

    fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key).expect("sign a test token")
    }

    fn rsa_key() -> EncodingKey {
        EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).expect("rsa.pem fixture")
    }

    fn rsa_other_key() -> EncodingKey {
        EncodingKey::from_rsa_pem(RSA_OTHER_PEM.as_bytes()).expect("rsa_other.pem fixture")
    }

    fn ec_key() -> EncodingKey {
        EncodingKey::from_ec_pem(EC_PEM.as_bytes()).expect("ec.pem fixture")
    }

    fn rs256(claims: &Value) -> String {
        sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), claims)
    }

    /// A token assembled by hand, for headers jsonwebtoken refuses to produce.
    fn hand_built(header: &Value, claims: &Value, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    async fn verify_with_fixture_jwks(token: &str) -> (Result<VerifiedClaims, JwtError>, JwksServer) {
        let server = JwksServer::start(jwks()).await;
        let result = JwtVerifier::new(http()).verify(token, &server.config()).await;
        (result, server)
    }

    #[tokio::test]
    async fn a_valid_rs256_token_is_accepted() {
        let (result, _server) = verify_with_fixture_jwks(&rs256(&claims())).await;
        let verified = result.expect("a valid RS256 token verifies");
        assert_eq!(verified.sub, "user-42");
        assert_eq!(verified.iss, ISSUER);
        assert!(verified.exp > now());
    }

    #[tokio::test]
    async fn a_valid_es256_token_is_accepted() {
        let token = sign(Algorithm::ES256, Some("ec-1"), &ec_key(), &claims());
        let (result, _server) = verify_with_fixture_jwks(&token).await;
        assert_eq!(result.expect("a valid ES256 token verifies").sub, "user-42");
    }

    #[tokio::test]
    async fn a_token_without_kid_is_verified_with_the_only_key_of_its_type() {
        let token = sign(Algorithm::ES256, None, &ec_key(), &claims());
        let (result, _server) = verify_with_fixture_jwks(&token).await;
        assert_eq!(result.expect("the only EC key is used").sub, "user-42");
    }

    #[tokio::test]
    async fn a_token_without_kid_is_refused_when_several_keys_of_its_type_are_published() {
        let server = JwksServer::start(rotated_jwks()).await;
        let token = sign(Algorithm::RS256, None, &rsa_key(), &claims());
        let result = JwtVerifier::new(http()).verify(&token, &server.config()).await;
        assert!(matches!(result, Err(JwtError::UnknownKey(ref kid)) if kid.is_empty()), "{result:?}");
    }

    #[tokio::test]
    async fn an_expired_token_is_refused() {
        let token = rs256(&claims_with(json!({ "iat": now() - 7200, "exp": now() - 3600 })));
        let (result, _server) = verify_with_fixture_jwks(&token).await;
        assert!(matches!(result, Err(JwtError::Expired)), "{result:?}");
    }

    #[tokio::test]
    async fn a_token_expired_within_the_leeway_is_still_accepted() {
        let token = rs256(&claims_with(json!({ "exp": now() - 10 })));
        let (result, _server) = verify_with_fixture_jwks(&token).await;
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn a_token_whose_nbf_is_in_the_future_is_refused() {
        let token = rs256(&claims_with(json!({ "nbf": now() + 3600 })));
        let (result, _server) = verify_with_fixture_jwks(&token).await;
        assert!(matches!(result, Err(JwtError::NotYetValid)), "{result:?}");
    }

    #[tokio::test]
    async fn a_token_for_another_audience_is_refused() {
        for aud in [json!("someone-else"), json!(["someone-else", "another"]), json!([])] {
            let token = rs256(&claims_with(json!({ "aud": aud })));
            let (result, _server) = verify_with_fixture_jwks(&token).await;
            assert!(matches!(result, Err(JwtError::WrongAudience)), "aud {aud}: {result:?}");
        }
    }

    #[tokio::test]
    async fn a_token_without_an_audience_is_refused() {
        let token = rs256(&claims_with(json!({ "aud": null })));
        let (result, _server) = verify_with_fixture_jwks(&token).await;
        assert!(matches!(result, Err(JwtError::WrongAudience)), "{result:?}");
    }

    #[tokio::test]
    async fn a_token_whose_audience_list_includes_ours_is_accepted() {
        let token = rs256(&claims_with(json!({ "aud": ["someone-else", AUDIENCE] })));
        let (result, _server) = verify_with_fixture_jwks(&token).await;
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn a_token_from_another_issuer_is_refused() {
        let token = rs256(&claims_with(json!({ "iss": "https://evil.example/" })));
        let (result, _server) = verify_with_fixture_jwks(&token).await;
        assert!(matches!(result, Err(JwtError::WrongIssuer)), "{result:?}");
    }

    #[tokio::test]
    async fn a_token_without_an_issuer_or_with_an_issuer_list_is_refused() {
        let token = rs256(&claims_with(json!({ "iss": null })));
        let (result, _server) = verify_with_fixture_jwks(&token).await;
        assert!(matches!(result, Err(JwtError::WrongIssuer)), "{result:?}");

        // jsonwebtoken would accept an array `iss` containing the issuer; a JWT's `iss` is one string.
        let token = rs256(&claims_with(json!({ "iss": [ISSUER, "https://evil.example/"] })));
        let (result, _server) = verify_with_fixture_jwks(&token).await;
        assert!(matches!(result, Err(JwtError::Malformed(_))), "{result:?}");
    }

    #[tokio::test]
    async fn a_token_signed_by_a_key_not_in_the_jwks_is_refused() {
        let token = sign(Algorithm::RS256, Some("rsa-9"), &rsa_other_key(), &claims());
        let (result, server) = verify_with_fixture_jwks(&token).await;
        assert!(matches!(result, Err(JwtError::UnknownKey(ref kid)) if kid == "rsa-9"), "{result:?}");
        assert_eq!(server.fetches(), 1);
    }

    #[tokio::test]
    async fn a_token_naming_a_published_kid_but_signed_by_another_key_is_refused() {
        let token = sign(Algorithm::RS256, Some("rsa-1"), &rsa_other_key(), &claims());
        let (result, _server) = verify_with_fixture_jwks(&token).await;
        assert!(matches!(result, Err(JwtError::InvalidSignature)), "{result:?}");
    }

    #[tokio::test]
    async fn a_token_whose_payload_was_altered_after_signing_is_refused() {
        let token = rs256(&claims());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(claims_with(json!({ "sub": "admin" })).to_string());
        let (result, _server) = verify_with_fixture_jwks(&parts.join(".")).await;
        assert!(matches!(result, Err(JwtError::InvalidSignature)), "{result:?}");
    }

    #[tokio::test]
    async fn an_unsigned_alg_none_token_is_refused_without_fetching_keys() {
        for header in [json!({ "alg": "none", "typ": "JWT" }), json!({ "alg": "none", "kid": "rsa-1" })] {
            let token = hand_built(&header, &claims(), b"");
            let (result, server) = verify_with_fixture_jwks(&token).await;
            assert!(matches!(result, Err(JwtError::UnsupportedAlgorithm(_))), "{result:?}");
            assert_eq!(server.fetches(), 0);
        }
    }

    #[tokio::test]
    async fn an_hs256_token_keyed_with_the_rsa_public_key_pem_is_refused() {
        let secret = EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes());
        let token = sign(Algorithm::HS256, Some("rsa-1"), &secret, &claims());
        let (result, server) = verify_with_fixture_jwks(&token).await;
        assert!(matches!(result, Err(JwtError::UnsupportedAlgorithm(_))), "{result:?}");
        assert_eq!(server.fetches(), 0);
    }

    #[tokio::test]
    async fn an_hmac_token_keyed_with_the_jwk_modulus_is_refused() {
        let n = rsa_1_modulus();
        let n_bytes = URL_SAFE_NO_PAD.decode(&n).expect("n is base64url");
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            for secret in [n.as_bytes(), n_bytes.as_slice()] {
                let token = sign(alg, Some("rsa-1"), &EncodingKey::from_secret(secret), &claims());
                let (result, _server) = verify_with_fixture_jwks(&token).await;
                assert!(matches!(result, Err(JwtError::UnsupportedAlgorithm(_))), "{alg:?}: {result:?}");
            }
        }
    }

    #[tokio::test]
    async fn algorithms_other_than_rs256_and_es256_are_refused() {
        for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
            let token = sign(alg, Some("rsa-1"), &rsa_key(), &claims());
            let (result, _server) = verify_with_fixture_jwks(&token).await;
            assert!(matches!(result, Err(JwtError::UnsupportedAlgorithm(_))), "{alg:?}: {result:?}");
        }
    }

    #[tokio::test]
    async fn a_token_whose_algorithm_does_not_match_the_kid_key_type_is_refused() {
        // ES256 header naming the RSA key.
        let token = sign(Algorithm::ES256, Some("rsa-1"), &ec_key(), &claims());
        let (result, _server) = verify_with_fixture_jwks(&token).await;
        assert!(matches!(result, Err(JwtError::UnsupportedAlgorithm(_))), "{result:?}");
        // RS256 header naming the EC key.
        let token = sign(Algorithm::RS256, Some("ec-1"), &rsa_key(), &claims());
        let (result, _server) = verify_with_fixture_jwks(&token).await;
        assert!(matches!(result, Err(JwtError::UnsupportedAlgorithm(_))), "{result:?}");
    }

    #[tokio::test]
    async fn jwks_keys_that_cannot_be_used_are_skipped_without_breaking_the_others() {
        let mut keys = jwks()["keys"].as_array().cloned().unwrap_or_default();
        keys.push(json!({ "kty": "oct", "kid": "hmac-1", "k": rsa_1_modulus() }));
        keys.push(
            json!({ "kty": "RSA", "kid": "enc-1", "use": "enc", "alg": "RSA-OAEP", "n": rsa_1_modulus(), "e": "AQAB" }),
        );
        keys.push(json!({ "kty": "RSA", "kid": "small-1", "alg": "RS256", "n": "AQAB", "e": "AQAB" }));
        keys.push(json!({ "kid": "nonsense", "kty": 7 }));
        let server = JwksServer::start(json!({ "keys": keys })).await;
        let verifier = JwtVerifier::new(http());

        for kid in ["hmac-1", "enc-1", "small-1", "nonsense"] {
            let token = sign(Algorithm::RS256, Some(kid), &rsa_key(), &claims());
            let result = verifier.verify(&token, &server.config()).await;
            assert!(matches!(result, Err(JwtError::UnsupportedAlgorithm(_))), "{kid}: {result:?}");
        }
        let hs = sign(Algorithm::HS256, Some("hmac-1"), &EncodingKey::from_secret(b"k"), &claims());
        let result = verifier.verify(&hs, &server.config()).await;
        assert!(matches!(result, Err(JwtError::UnsupportedAlgorithm(_))), "{result:?}");

        let result = verifier.verify(&rs256(&claims()), &server.config()).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(server.fetches(), 1);
    }

    #[tokio::test]
    async fn a_token_without_a_subject_or_with_an_empty_one_is_refused() {
        for sub in [json!(null), json!(""), json!("  ")] {
            let token = rs256(&claims_with(json!({ "sub": sub })));
            let (result, _server) = verify_with_fixture_jwks(&token).await;
            assert!(matches!(result, Err(JwtError::MissingSubject)), "sub {sub}: {result:?}");
        }
    }

    #[tokio::test]
    async fn a_token_without_exp_is_refused() {
        let token = rs256(&claims_with(json!({ "exp": null })));
        let (result, _server) = verify_with_fixture_jwks(&token).await;
        assert!(matches!(result, Err(JwtError::Malformed(_))), "{result:?}");
    }

    #[tokio::test]
    async fn a_token_with_critical_header_extensions_is_refused() {
        let token = hand_built(&json!({ "alg": "RS256", "kid": "rsa-1", "crit": ["b64"] }), &claims(), b"sig");
        let (result, server) = verify_with_fixture_jwks(&token).await;
        assert!(matches!(result, Err(JwtError::Malformed(_))), "{result:?}");
        assert_eq!(server.fetches(), 0);
    }

    fn garbage() -> Vec<String> {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
        vec![
            String::new(),
            "not a token".to_owned(),
            "a.b.c".to_owned(),
            "....".to_owned(),
            "tnty_ten_abc.key_def.secret".to_owned(),
            format!("{header}.{payload}"),
            format!("{header}.{payload}.sig.extra"),
            format!("{header}.{payload}.sig.extra.more"),
            format!("{header}.!!!.sig"),
            format!("{header}.{payload}.s*g"),
            format!("{header}=.{payload}.sig"),
            format!("{}.{payload}.sig", URL_SAFE_NO_PAD.encode("[1,2]")),
            format!("{}.{payload}.sig", URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT"}"#)),
            format!("{}.{payload}.sig", URL_SAFE_NO_PAD.encode(r#"{"alg":256}"#)),
            format!("{header}.{}.sig", URL_SAFE_NO_PAD.encode("not json")),
            format!("{header}.{}.sig", URL_SAFE_NO_PAD.encode(r#"{"aud":42}"#)),
            format!("{header}.{payload}.{}", "A".repeat(MAX_TOKEN_LEN)),
        ]
    }

    #[tokio::test]
    async fn garbage_is_malformed() {
        let server = JwksServer::start(jwks()).await;
        let verifier = JwtVerifier::new(http());
        for token in garbage() {
            let shown = shorten(&token);
            assert!(matches!(peek(&token), Err(JwtError::Malformed(_))), "peek {shown}");
            let result = verifier.verify(&token, &server.config()).await;
            assert!(matches!(result, Err(JwtError::Malformed(_))), "verify {shown}: {result:?}");
        }
        assert_eq!(server.fetches(), 0);
    }

    #[tokio::test]
    async fn the_jwks_is_fetched_once_and_then_served_from_the_cache() {
        let server = JwksServer::start(jwks()).await;
        let verifier = JwtVerifier::new(http());
        let es256 = sign(Algorithm::ES256, Some("ec-1"), &ec_key(), &claims());
        for token in [rs256(&claims()), es256, rs256(&claims())] {
            let result = verifier.verify(&token, &server.config()).await;
            assert!(result.is_ok(), "{result:?}");
        }
        assert_eq!(server.fetches(), 1);
    }

    #[tokio::test]
    async fn concurrent_verifications_share_one_jwks_fetch() {
        let server = JwksServer::start(jwks()).await;
        let verifier = Arc::new(JwtVerifier::new(http()));
        let token = rs256(&claims());
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (verifier, token, cfg) = (Arc::clone(&verifier), token.clone(), server.config());
                tokio::spawn(async move { verifier.verify(&token, &cfg).await })
            })
            .collect();
        for task in tasks {
            let result = task.await.expect("verification task");
            assert!(result.is_ok(), "{result:?}");
        }
        assert_eq!(server.fetches(), 1);
    }

    #[tokio::test]
    async fn an_expired_cache_is_refetched() {
        let server = JwksServer::start(jwks()).await;
        let verifier = JwtVerifier::with_settings(http(), Duration::ZERO, Duration::ZERO, 30);
        for _ in 0..2 {
            let result = verifier.verify(&rs256(&claims()), &server.config()).await;
            assert!(result.is_ok(), "{result:?}");
        }
        assert_eq!(server.fetches(), 2);
    }

    #[tokio::test]
    async fn an_unknown_kid_triggers_one_refetch_so_key_rotation_works() {
        let server = JwksServer::start(jwks()).await;
        let verifier = JwtVerifier::with_settings(http(), DEFAULT_TTL, Duration::ZERO, 30);
        let rotated = sign(Algorithm::RS256, Some("rsa-2"), &rsa_other_key(), &claims());

        assert!(verifier.verify(&rs256(&claims()), &server.config()).await.is_ok());
        assert_eq!(server.fetches(), 1);

        server.publish(rotated_jwks());
        let result = verifier.verify(&rotated, &server.config()).await;
        assert_eq!(result.expect("the rotated-in key verifies").sub, "user-42");
        assert_eq!(server.fetches(), 2);

        // Both keys are now cached.
        assert!(verifier.verify(&rs256(&claims()), &server.config()).await.is_ok());
        assert!(verifier.verify(&rotated, &server.config()).await.is_ok());
        assert_eq!(server.fetches(), 2);
    }

    #[tokio::test]
    async fn an_unknown_kid_does_not_refetch_within_the_minimum_interval() {
        let server = JwksServer::start(jwks()).await;
        let verifier = JwtVerifier::new(http());
        assert!(verifier.verify(&rs256(&claims()), &server.config()).await.is_ok());

        server.publish(rotated_jwks());
        let rotated = sign(Algorithm::RS256, Some("rsa-2"), &rsa_other_key(), &claims());
        for _ in 0..3 {
            let result = verifier.verify(&rotated, &server.config()).await;
            assert!(matches!(result, Err(JwtError::UnknownKey(ref kid)) if kid == "rsa-2"), "{result:?}");
        }
        assert_eq!(server.fetches(), 1);
    }

    #[tokio::test]
    async fn an_unreachable_jwks_server_means_jwks_unavailable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a local port");
        let addr = listener.local_addr().expect("local address");
        drop(listener);
        let cfg = IssuerConfig {
            issuer: ISSUER.to_owned(),
            jwks_url: format!("http://{addr}/jwks.json"),
            audience: AUDIENCE.to_owned(),
        };
        let result = JwtVerifier::new(http()).verify(&rs256(&claims()), &cfg).await;
        let Err(err @ JwtError::JwksUnavailable(_)) = result else {
            panic!("expected JwksUnavailable, got {result:?}");
        };
        assert_eq!(err.code(), "jwks_unavailable");
        assert_eq!(err.status(), 503);
        assert!(err.to_string().contains(&cfg.jwks_url), "{err}");
    }

    #[tokio::test]
    async fn a_jwks_server_answering_an_error_means_jwks_unavailable() {
        let server = JwksServer::start(jwks()).await;
        server.failing.store(true, Ordering::SeqCst);
        let result = JwtVerifier::new(http()).verify(&rs256(&claims()), &server.config()).await;
        assert!(matches!(result, Err(JwtError::JwksUnavailable(ref why)) if why.contains("500")), "{result:?}");
    }

    #[tokio::test]
    async fn a_stale_jwks_still_serves_a_known_kid_when_a_refetch_fails() {
        let server = JwksServer::start(jwks()).await;
        let verifier = JwtVerifier::with_settings(http(), Duration::ZERO, Duration::ZERO, 30);
        assert!(verifier.verify(&rs256(&claims()), &server.config()).await.is_ok());

        server.failing.store(true, Ordering::SeqCst);
        let result = verifier.verify(&rs256(&claims()), &server.config()).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(server.fetches(), 2);

        let unknown = sign(Algorithm::RS256, Some("rsa-2"), &rsa_other_key(), &claims());
        let result = verifier.verify(&unknown, &server.config()).await;
        assert!(matches!(result, Err(JwtError::JwksUnavailable(_))), "{result:?}");
    }

    #[tokio::test]
    async fn a_failed_fetch_is_not_retried_within_the_minimum_interval() {
        let server = JwksServer::start(jwks()).await;
        server.failing.store(true, Ordering::SeqCst);
        let verifier = JwtVerifier::new(http());
        for _ in 0..3 {
            let result = verifier.verify(&rs256(&claims()), &server.config()).await;
            assert!(matches!(result, Err(JwtError::JwksUnavailable(_))), "{result:?}");
        }
        assert_eq!(server.fetches(), 1);
    }

    #[test]
    fn peek_reads_alg_kid_iss_and_aud_without_verifying() {
        let token = rs256(&claims());
        assert_eq!(
            peek(&token).expect("peek a signed token"),
            Peek {
                alg: "RS256".to_owned(),
                kid: Some("rsa-1".to_owned()),
                iss: Some(ISSUER.to_owned()),
                aud: vec![AUDIENCE.to_owned()],
            }
        );

        let token = hand_built(&json!({ "alg": "none" }), &json!({ "aud": ["a", "b"] }), b"");
        assert_eq!(
            peek(&token).expect("peek an unsigned token"),
            Peek { alg: "none".to_owned(), kid: None, iss: None, aud: vec!["a".to_owned(), "b".to_owned()] }
        );
    }

    #[test]
    fn looks_like_jwt_tells_a_jwt_from_an_api_key() {
        assert!(looks_like_jwt(&rs256(&claims())));
        assert!(looks_like_jwt(&sign(Algorithm::ES256, Some("ec-1"), &ec_key(), &claims())));
        assert!(looks_like_jwt(&hand_built(&json!({ "alg": "none" }), &claims(), b"")));

        for not_a_jwt in [
            "tnty_ten_abc.key_def.secret",
            "tnty_ten_01JDX3K6ZQ9V.key_01JDX3K7B2M4.Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg",
            "eyJhbGciOiJSUzI1NiJ9", // a header alone
            "e30.e30.sig",          // header `{}` has no alg
            "",
            "Bearer",
        ] {
            assert!(!looks_like_jwt(not_a_jwt), "{not_a_jwt}");
        }
    }

    #[test]
    fn every_error_has_its_own_code_and_says_what_to_fix() {
        let errors = [
            JwtError::Malformed("x".to_owned()),
            JwtError::UnsupportedAlgorithm("x".to_owned()),
            JwtError::UnknownKey("rsa-9".to_owned()),
            JwtError::UnknownKey(String::new()),
            JwtError::InvalidSignature,
            JwtError::Expired,
            JwtError::NotYetValid,
            JwtError::WrongAudience,
            JwtError::WrongIssuer,
            JwtError::MissingSubject,
            JwtError::JwksUnavailable("x".to_owned()),
        ];
        let mut codes: Vec<&str> = errors.iter().map(JwtError::code).collect();
        codes.dedup(); // the two UnknownKey errors share a code
        let mut unique = codes.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(codes.len(), unique.len());
        assert_eq!(codes.len(), 10);
        for err in &errors {
            assert!(err.code().chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{}", err.code());
            assert!(err.to_string().contains("; "), "no advice in: {err}");
        }
        assert!(JwtError::UnknownKey("rsa-9".to_owned()).to_string().contains("\"rsa-9\""));
    }

    #[test]
    fn the_verifier_can_be_shared_across_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<JwtVerifier>();
    }
}
