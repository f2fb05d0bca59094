//! Signing keys: ES256 key generation, encryption at rest under the master key, the in-memory key
//! ring every instance signs and verifies with, and the JWKS it publishes.
//!
//! Keys are parsed once when the ring is loaded (at start, on a rotation notice from another
//! instance, and periodically), never per request. Which key signs and which keys are published
//! are derived from the activation times alone, so every instance on one database agrees:
//! - the signing key is the most recently activated key;
//! - a key is published from its creation until `grace` after a newer key took over, where
//!   `grace` covers the longest access-token lifetime, so every token it signed can still be verified.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, ParsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::config::MasterKey;
use crate::store;

/// How long verifiers may cache the JWKS (`Cache-Control: max-age`).
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// Allowance for clock skew between Tessera and the servers that verify its tokens.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// A retired key stays published this long after it stopped signing: the longest access-token
/// lifetime plus clock skew, so every token it signed can still be verified.
pub fn signing_grace(longest_token_ttl: Duration) -> Duration {
    longest_token_ttl + CLOCK_SKEW
}

/// Default delay between `keys rotate` and the new key signing: long enough that verifiers
/// holding a cached JWKS have refetched it, and no shorter than the longest token lifetime.
pub fn default_rotation_delay(longest_token_ttl: Duration, configured: Option<Duration>) -> Duration {
    configured.unwrap_or_else(|| longest_token_ttl.max(JWKS_MAX_AGE))
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "TESSERA_MASTER_KEY: does not decrypt signing key {kid} stored in the database (wrong master key for this database?)"
    )]
    WrongMasterKey { kid: String },
    #[error("signing key {kid} in the database is corrupt: {what}")]
    Corrupt { kid: String, what: &'static str },
    #[error("key generation failed")]
    Generation,
    #[error("no signing key is active")]
    NoActiveKey,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The public half of a P-256 key as a JWK (RFC 7517/7518).
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PublicJwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub y: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub use_: String,
    pub alg: String,
}

/// A freshly generated key, ready to be stored.
pub struct NewKey {
    pub kid: String,
    pub public_jwk: PublicJwk,
    pub private_key_enc: Vec<u8>,
}

impl NewKey {
    /// The row that stores it.
    pub fn row(self) -> Result<store::keys::NewKeyRow, KeyError> {
        let public_jwk = serde_json::to_value(&self.public_jwk).map_err(|_| KeyError::Generation)?;
        Ok(store::keys::NewKeyRow { kid: self.kid, public_jwk, private_key_enc: self.private_key_enc })
    }
}

/// Generate an ES256 key pair and encrypt its PKCS#8 form under the master key (AAD: the kid).
pub fn generate(master: &MasterKey) -> Result<NewKey, KeyError> {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| KeyError::Generation)?;
    let pkcs8 = pair.to_pkcs8v1().map_err(|_| KeyError::Generation)?;
    let public_jwk = public_jwk(pair.public_key().as_ref()).ok_or(KeyError::Generation)?;
    let private_key_enc = encrypt(master, &public_jwk.kid, pkcs8.as_ref())?;
    Ok(NewKey { kid: public_jwk.kid.clone(), public_jwk, private_key_enc })
}

/// JWK of an uncompressed P-256 point (`04 || x || y`); the kid is its RFC 7638 thumbprint.
fn public_jwk(point: &[u8]) -> Option<PublicJwk> {
    if point.len() != 65 || point[0] != 4 {
        return None;
    }
    let x = B64URL.encode(&point[1..33]);
    let y = B64URL.encode(&point[33..65]);
    // RFC 7638 §3.2: required members only, lexicographic order, no whitespace.
    let thumbprint_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = B64URL.encode(Sha256::digest(thumbprint_input.as_bytes()));
    Some(PublicJwk { kty: "EC".into(), crv: "P-256".into(), x, y, kid, use_: "sig".into(), alg: "ES256".into() })
}

/// AES-256-GCM with a random 96-bit nonce; output is `nonce || ciphertext || tag`.
pub fn encrypt(master: &MasterKey, kid: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
    let key = RandomizedNonceKey::new(&AES_256_GCM, &master.0).map_err(|_| KeyError::Generation)?;
    let mut data = plaintext.to_vec();
    let nonce = key.seal_in_place_append_tag(Aad::from(kid.as_bytes()), &mut data).map_err(|_| KeyError::Generation)?;
    let mut out = nonce.as_ref().to_vec();
    out.extend_from_slice(&data);
    Ok(out)
}

pub fn decrypt(master: &MasterKey, kid: &str, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
    const NONCE_LEN: usize = 12;
    if sealed.len() < NONCE_LEN + 16 {
        return Err(KeyError::Corrupt { kid: kid.to_owned(), what: "ciphertext too short" });
    }
    let key = RandomizedNonceKey::new(&AES_256_GCM, &master.0).map_err(|_| KeyError::Generation)?;
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| KeyError::Corrupt { kid: kid.to_owned(), what: "bad nonce" })?;
    let mut data = ciphertext.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut data)
        .map_err(|_| KeyError::WrongMasterKey { kid: kid.to_owned() })?;
    Ok(plain.to_vec())
}

/// One key, parsed and ready to sign and verify.
pub struct LoadedKey {
    pub kid: String,
    pub created_at: DateTime<Utc>,
    pub activates_at: DateTime<Utc>,
    pub jwk: PublicJwk,
    pair: EcdsaKeyPair,
    verifier: VerifyingKey,
    /// `base64url({"alg":"ES256","typ":"at+jwt","kid":...})`, computed once.
    access_token_header: String,
}

impl LoadedKey {
    pub fn from_row(master: &MasterKey, row: &store::keys::KeyRow) -> Result<Self, KeyError> {
        let corrupt = |what| KeyError::Corrupt { kid: row.kid.clone(), what };
        let pkcs8 = decrypt(master, &row.kid, &row.private_key_enc)?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
            .map_err(|_| corrupt("bad private key"))?;
        let jwk: PublicJwk = serde_json::from_value(row.public_jwk.clone()).map_err(|_| corrupt("bad public JWK"))?;
        if public_jwk(pair.public_key().as_ref()).as_ref() != Some(&jwk) || jwk.kid != row.kid {
            return Err(corrupt("public key does not match private key"));
        }
        let verifier = VerifyingKey::from_point(pair.public_key().as_ref()).ok_or_else(|| corrupt("bad public key"))?;
        let header = serde_json::json!({"alg": "ES256", "typ": "at+jwt", "kid": row.kid});
        Ok(Self {
            kid: row.kid.clone(),
            created_at: row.created_at,
            activates_at: row.activates_at,
            jwk,
            pair,
            verifier,
            access_token_header: B64URL.encode(header.to_string()),
        })
    }

    /// Sign `claims` as a compact JWS with header `typ: at+jwt` (RFC 9068).
    pub fn sign_access_token<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let payload = serde_json::to_vec(claims).map_err(|_| KeyError::Generation)?;
        let mut token = String::with_capacity(self.access_token_header.len() + payload.len() * 4 / 3 + 100);
        token.push_str(&self.access_token_header);
        token.push('.');
        B64URL.encode_string(&payload, &mut token);
        let sig = self
            .pair
            .sign(&aws_lc_rs::rand::SystemRandom::new(), token.as_bytes())
            .map_err(|_| KeyError::Generation)?;
        token.push('.');
        B64URL.encode_string(sig.as_ref(), &mut token);
        Ok(token)
    }

    /// Its public half.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.verifier
    }
}

/// The public half of an ES256 (P-256) key, parsed once, ready to verify signatures: ours, or
/// one read from an issuer's JWKS.
pub struct VerifyingKey(ParsedPublicKey);

impl VerifyingKey {
    /// From an uncompressed point (`04 || x || y`).
    pub fn from_point(point: &[u8]) -> Option<Self> {
        ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).ok().map(Self)
    }

    /// From a JWK (RFC 7518 §6.2): `kty` EC, `crv` P-256, 32-byte `x` and `y`.
    pub fn from_jwk(jwk: &serde_json::Value) -> Option<Self> {
        if jwk["kty"] != "EC" || jwk["crv"] != "P-256" || jwk.get("alg").is_some_and(|a| a != "ES256") {
            return None;
        }
        let coordinate = |name: &str| B64URL.decode(jwk[name].as_str()?).ok().filter(|c| c.len() == 32);
        let mut point = vec![4u8];
        point.extend(coordinate("x")?);
        point.extend(coordinate("y")?);
        Self::from_point(&point)
    }

    /// Verify an ES256 signature (fixed-length `r || s`) over `message` (`header.payload`).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.0.verify_sig(message, signature).is_ok()
    }
}

/// Status of a key at a moment, derived from activation times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStatus {
    /// Published, not signing yet.
    Pending,
    /// Published and signing.
    Active,
    /// Published until the given time so that tokens it signed still verify.
    Retiring(DateTime<Utc>),
    /// No longer published.
    Retired,
}

impl KeyStatus {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Retiring(_) => "retiring",
            Self::Retired => "retired",
        }
    }

    pub fn published_until(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::Retiring(t) => Some(*t),
            _ => None,
        }
    }
}

/// The status of key `index` among keys sorted by activation time.
pub fn status_of(activations: &[DateTime<Utc>], index: usize, grace: Duration, now: DateTime<Utc>) -> KeyStatus {
    if activations[index] > now {
        return KeyStatus::Pending;
    }
    // The first later key that has activated superseded this one.
    match activations[index + 1..].iter().find(|a| **a <= now) {
        None => KeyStatus::Active,
        Some(next) => {
            let until = *next + chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
            if now < until { KeyStatus::Retiring(until) } else { KeyStatus::Retired }
        }
    }
}

/// An immutable snapshot of every key, ordered by activation time (oldest first).
pub struct KeySet {
    keys: Vec<Arc<LoadedKey>>,
    activations: Vec<DateTime<Utc>>,
    grace: Duration,
}

impl KeySet {
    pub fn new(mut keys: Vec<LoadedKey>, grace: Duration) -> Self {
        keys.sort_by(|a, b| a.activates_at.cmp(&b.activates_at).then_with(|| a.kid.cmp(&b.kid)));
        let activations = keys.iter().map(|k| k.activates_at).collect();
        Self { keys: keys.into_iter().map(Arc::new).collect(), activations, grace }
    }

    pub fn keys(&self) -> &[Arc<LoadedKey>] {
        &self.keys
    }

    pub fn status(&self, index: usize, now: DateTime<Utc>) -> KeyStatus {
        status_of(&self.activations, index, self.grace, now)
    }

    /// The key that signs now: the most recently activated one.
    pub fn signing_key(&self, now: DateTime<Utc>) -> Option<&Arc<LoadedKey>> {
        self.keys.iter().rev().find(|k| k.activates_at <= now)
    }

    /// A published key by kid, for verifying a token.
    pub fn verification_key(&self, kid: &str, now: DateTime<Utc>) -> Option<&Arc<LoadedKey>> {
        let index = self.keys.iter().position(|k| k.kid == kid)?;
        (self.status(index, now) != KeyStatus::Retired).then(|| &self.keys[index])
    }

    /// The JWKS document (RFC 7517 §5): every published key, newest first.
    pub fn jwks_json(&self, now: DateTime<Utc>) -> Vec<u8> {
        let keys: Vec<&PublicJwk> = (0..self.keys.len())
            .rev()
            .filter(|&i| self.status(i, now) != KeyStatus::Retired)
            .map(|i| &self.keys[i].jwk)
            .collect();
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap_or_default()
    }

    /// When the published set next changes by the passage of time alone (a retiring key drops out).
    fn next_change(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        (0..self.keys.len())
            .filter_map(|i| match self.status(i, now) {
                KeyStatus::Retiring(until) => Some(until),
                KeyStatus::Pending => Some(self.keys[i].activates_at),
                _ => None,
            })
            .min()
    }
}

/// The serialized JWKS, valid until the published set changes.
struct JwksCache {
    body: axum::body::Bytes,
    valid_until: Option<DateTime<Utc>>,
}

/// The key ring shared by every request of one instance: swapped whole when reloaded.
pub struct KeyRing {
    master: MasterKey,
    set: ArcSwap<KeySet>,
    jwks: ArcSwap<JwksCache>,
}

impl KeyRing {
    /// Load every key from the database, creating the first one if there is none.
    pub async fn load(pool: &sqlx::PgPool, master: MasterKey, grace: Duration) -> Result<Self, KeyError> {
        store::keys::ensure_initial_key(pool, || generate(&master)?.row()).await?;
        let set = Self::read(pool, &master, grace).await?;
        let ring = Self {
            master,
            set: ArcSwap::from_pointee(KeySet::new(Vec::new(), grace)),
            jwks: ArcSwap::from_pointee(JwksCache { body: Default::default(), valid_until: None }),
        };
        ring.install(set);
        Ok(ring)
    }

    async fn read(pool: &sqlx::PgPool, master: &MasterKey, grace: Duration) -> Result<KeySet, KeyError> {
        let rows = store::keys::list(pool).await?;
        let keys = rows.iter().map(|row| LoadedKey::from_row(master, row)).collect::<Result<Vec<_>, _>>()?;
        Ok(KeySet::new(keys, grace))
    }

    /// Re-read the keys (after a rotation on any instance).
    pub async fn reload(&self, pool: &sqlx::PgPool, grace: Duration) -> Result<(), KeyError> {
        let set = Self::read(pool, &self.master, grace).await?;
        self.install(set);
        Ok(())
    }

    fn install(&self, set: KeySet) {
        let now = Utc::now();
        self.jwks.store(Arc::new(JwksCache { body: set.jwks_json(now).into(), valid_until: set.next_change(now) }));
        self.set.store(Arc::new(set));
    }

    pub fn snapshot(&self) -> Arc<KeySet> {
        self.set.load_full()
    }

    /// The JWKS body; recomputed only when the published set changes.
    pub fn jwks(&self) -> axum::body::Bytes {
        let now = Utc::now();
        let cached = self.jwks.load();
        if cached.valid_until.is_none_or(|t| now < t) {
            return cached.body.clone();
        }
        let set = self.set.load();
        let body: axum::body::Bytes = set.jwks_json(now).into();
        self.jwks.store(Arc::new(JwksCache { body: body.clone(), valid_until: set.next_change(now) }));
        body
    }

    pub fn signing_key(&self) -> Result<Arc<LoadedKey>, KeyError> {
        self.set.load().signing_key(Utc::now()).cloned().ok_or(KeyError::NoActiveKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(master: &MasterKey, activates_at: DateTime<Utc>) -> LoadedKey {
        let new = generate(master).unwrap();
        let row = store::keys::KeyRow {
            kid: new.kid.clone(),
            public_jwk: serde_json::to_value(&new.public_jwk).unwrap(),
            private_key_enc: new.private_key_enc,
            created_at: activates_at,
            activates_at,
        };
        LoadedKey::from_row(master, &row).unwrap()
    }

    #[test]
    fn encryption_round_trip_and_wrong_key() {
        let master = MasterKey::generate();
        let sealed = encrypt(&master, "kid-1", b"secret pkcs8").unwrap();
        assert_ne!(&sealed[12..sealed.len() - 16], b"secret pkcs8");
        assert_eq!(decrypt(&master, "kid-1", &sealed).unwrap(), b"secret pkcs8");
        // Wrong master key, and a ciphertext moved to another kid, both fail.
        assert!(matches!(decrypt(&MasterKey::generate(), "kid-1", &sealed), Err(KeyError::WrongMasterKey { .. })));
        assert!(matches!(decrypt(&master, "kid-2", &sealed), Err(KeyError::WrongMasterKey { .. })));
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(decrypt(&master, "kid-1", &tampered).is_err());
    }

    #[test]
    fn kid_is_rfc7638_thumbprint() {
        // RFC 7638 has no EC example; check the shape and determinism instead.
        let master = MasterKey::generate();
        let key = generate(&master).unwrap();
        assert_eq!(key.kid.len(), 43);
        assert_eq!(key.public_jwk.x.len(), 43);
        let again = public_jwk(&{
            let mut p = vec![4u8];
            p.extend(B64URL.decode(&key.public_jwk.x).unwrap());
            p.extend(B64URL.decode(&key.public_jwk.y).unwrap());
            p
        })
        .unwrap();
        assert_eq!(again, key.public_jwk);
    }

    #[test]
    fn signed_token_verifies_with_jsonwebtoken() {
        let master = MasterKey::generate();
        let key = loaded(&master, Utc::now());
        let token = key.sign_access_token(&serde_json::json!({"sub": "a", "exp": 4102444800u64})).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
        let decoding = jsonwebtoken::DecodingKey::from_ec_components(&key.jwk.x, &key.jwk.y).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
        assert_eq!(data.claims["sub"], "a");
        let (message, sig) = token.rsplit_once('.').unwrap();
        assert!(key.verifying_key().verify(message.as_bytes(), &B64URL.decode(sig).unwrap()));
        assert!(!key.verifying_key().verify(b"other", &B64URL.decode(sig).unwrap()));
        let from_jwk = VerifyingKey::from_jwk(&serde_json::to_value(&key.jwk).unwrap()).unwrap();
        assert!(from_jwk.verify(message.as_bytes(), &B64URL.decode(sig).unwrap()), "the published JWK verifies");
    }

    #[test]
    fn rotation_schedule() {
        let master = MasterKey::generate();
        let t0 = Utc::now() - chrono::Duration::hours(2);
        let old = loaded(&master, t0);
        let new_at = Utc::now() + chrono::Duration::minutes(10);
        let new = loaded(&master, new_at);
        let (old_kid, new_kid) = (old.kid.clone(), new.kid.clone());
        let set = KeySet::new(vec![new, old], Duration::from_secs(600));
        let now = Utc::now();
        // Before activation: old signs, both are published.
        assert_eq!(set.signing_key(now).unwrap().kid, old_kid);
        assert_eq!(set.status(1, now), KeyStatus::Pending);
        let jwks: serde_json::Value = serde_json::from_slice(&set.jwks_json(now)).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        // After activation: new signs, old is still published for the grace period.
        let later = new_at + chrono::Duration::minutes(1);
        assert_eq!(set.signing_key(later).unwrap().kid, new_kid);
        assert!(matches!(set.status(0, later), KeyStatus::Retiring(_)));
        assert!(set.verification_key(&old_kid, later).is_some());
        // After the grace period: only the new key is published.
        let much_later = new_at + chrono::Duration::minutes(11);
        assert_eq!(set.status(0, much_later), KeyStatus::Retired);
        assert!(set.verification_key(&old_kid, much_later).is_none());
        let jwks: serde_json::Value = serde_json::from_slice(&set.jwks_json(much_later)).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
        assert_eq!(jwks["keys"][0]["kid"], new_kid.as_str());
    }
}
