//! Signing keys: ES256 (access tokens) and RS256 (OpenID Connect ID tokens) key generation,
//! encryption at rest under the master key, the in-memory key ring every instance signs and
//! verifies with, and the JWKS it publishes.
//!
//! Keys are parsed once when the ring is loaded (at start, on a rotation notice from another
//! instance, and periodically), never per request. Which key signs and which keys are published
//! are derived from the activation times alone, so every instance on one database agrees:
//! - the signing key of an algorithm is its most recently activated key;
//! - a key is published from its creation until `grace` after a newer key of its algorithm took over, where
//!   `grace` covers the longest access-token lifetime, so every token it signed can still be verified.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, ParsedPublicKey,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
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

/// The algorithms Tessera signs with: ES256 for access tokens (and ID tokens where a client asks
/// for it), RS256 for ID tokens (OpenID Connect's mandatory algorithm).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    Es256,
    Rs256,
}

impl Alg {
    pub const ALL: [Alg; 2] = [Alg::Es256, Alg::Rs256];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "ES256" => Some(Self::Es256),
            "RS256" => Some(Self::Rs256),
            _ => None,
        }
    }
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
    pub alg: Alg,
    /// The public JWK (RFC 7517), `kid` included.
    pub public_jwk: serde_json::Value,
    pub private_key_enc: Vec<u8>,
}

impl NewKey {
    /// The row that stores it.
    pub fn row(self) -> store::keys::NewKeyRow {
        store::keys::NewKeyRow {
            kid: self.kid,
            alg: self.alg.as_str(),
            public_jwk: self.public_jwk,
            private_key_enc: self.private_key_enc,
        }
    }
}

/// Generate a key pair of `alg` (P-256, or RSA 2048) and encrypt its PKCS#8 form under the
/// master key (AAD: the kid).
pub fn generate(master: &MasterKey, alg: Alg) -> Result<NewKey, KeyError> {
    let (pkcs8, public_jwk) = match alg {
        Alg::Es256 => {
            let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| KeyError::Generation)?;
            let pkcs8 = pair.to_pkcs8v1().map_err(|_| KeyError::Generation)?.as_ref().to_vec();
            let jwk = public_jwk(pair.public_key().as_ref()).ok_or(KeyError::Generation)?;
            (pkcs8, serde_json::to_value(jwk).map_err(|_| KeyError::Generation)?)
        }
        Alg::Rs256 => {
            let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generation)?;
            let pkcs8 = AsDer::<Pkcs8V1Der<'_>>::as_der(&pair).map_err(|_| KeyError::Generation)?.as_ref().to_vec();
            (pkcs8, rsa_public_jwk(pair.public_key()))
        }
    };
    let kid = public_jwk["kid"].as_str().ok_or(KeyError::Generation)?.to_owned();
    let private_key_enc = encrypt(master, &kid, &pkcs8)?;
    Ok(NewKey { kid, alg, public_jwk, private_key_enc })
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

/// JWK of an RSA public key; the kid is its RFC 7638 thumbprint (`e`, `kty`, `n`).
fn rsa_public_jwk(public: &aws_lc_rs::rsa::PublicKey) -> serde_json::Value {
    let n = B64URL.encode(public.modulus().big_endian_without_leading_zero());
    let e = B64URL.encode(public.exponent().big_endian_without_leading_zero());
    let thumbprint_input = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    let kid = B64URL.encode(Sha256::digest(thumbprint_input.as_bytes()));
    serde_json::json!({"kty": "RSA", "n": n, "e": e, "kid": kid, "use": "sig", "alg": "RS256"})
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

/// A private key, parsed.
enum Signer {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

/// One key, parsed and ready to sign and verify.
pub struct LoadedKey {
    pub kid: String,
    pub alg: Alg,
    pub created_at: DateTime<Utc>,
    pub activates_at: DateTime<Utc>,
    /// The public JWK it is published as.
    pub jwk: serde_json::Value,
    signer: Signer,
    verifier: VerifyingKey,
    /// `base64url({"alg":...,"typ":"at+jwt","kid":...})`, computed once.
    access_token_header: String,
    /// `base64url({"alg":...,"typ":"JWT","kid":...})`, for ID tokens.
    id_token_header: String,
}

impl LoadedKey {
    pub fn from_row(master: &MasterKey, row: &store::keys::KeyRow) -> Result<Self, KeyError> {
        let corrupt = |what| KeyError::Corrupt { kid: row.kid.clone(), what };
        let alg = Alg::parse(&row.alg).ok_or_else(|| corrupt("unknown algorithm"))?;
        let pkcs8 = decrypt(master, &row.kid, &row.private_key_enc)?;
        let (signer, verifier, derived_jwk) = match alg {
            Alg::Es256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
                    .map_err(|_| corrupt("bad private key"))?;
                let jwk = public_jwk(pair.public_key().as_ref()).ok_or_else(|| corrupt("bad public key"))?;
                let verifier =
                    VerifyingKey::from_point(pair.public_key().as_ref()).ok_or_else(|| corrupt("bad public key"))?;
                (Signer::Es256(pair), verifier, serde_json::to_value(jwk).map_err(|_| corrupt("bad public key"))?)
            }
            Alg::Rs256 => {
                let pair = RsaKeyPair::from_pkcs8(&pkcs8).map_err(|_| corrupt("bad private key"))?;
                let verifier =
                    VerifyingKey::rsa(pair.public_key().as_ref()).ok_or_else(|| corrupt("bad public key"))?;
                let jwk = rsa_public_jwk(pair.public_key());
                (Signer::Rs256(pair), verifier, jwk)
            }
        };
        if derived_jwk != row.public_jwk || row.public_jwk["kid"] != row.kid.as_str() {
            return Err(corrupt("public key does not match private key"));
        }
        let header =
            |typ: &str| B64URL.encode(serde_json::json!({"alg": alg.as_str(), "typ": typ, "kid": row.kid}).to_string());
        Ok(Self {
            kid: row.kid.clone(),
            alg,
            created_at: row.created_at,
            activates_at: row.activates_at,
            jwk: derived_jwk,
            access_token_header: header("at+jwt"),
            id_token_header: header("JWT"),
            signer,
            verifier,
        })
    }

    /// Sign `claims` as a compact JWS with header `typ: at+jwt` (RFC 9068).
    pub fn sign_access_token<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        self.sign(&self.access_token_header, claims)
    }

    /// Sign `claims` as an ID token (OpenID Connect Core §2), header `typ: JWT`.
    pub fn sign_id_token<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        self.sign(&self.id_token_header, claims)
    }

    fn sign<T: Serialize>(&self, header: &str, claims: &T) -> Result<String, KeyError> {
        let payload = serde_json::to_vec(claims).map_err(|_| KeyError::Generation)?;
        let mut token = String::with_capacity(header.len() + payload.len() * 4 / 3 + 400);
        token.push_str(header);
        token.push('.');
        B64URL.encode_string(&payload, &mut token);
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let signature = match &self.signer {
            Signer::Es256(pair) => {
                pair.sign(&rng, token.as_bytes()).map_err(|_| KeyError::Generation)?.as_ref().to_vec()
            }
            Signer::Rs256(pair) => {
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, token.as_bytes(), &mut sig).map_err(|_| KeyError::Generation)?;
                sig
            }
        };
        token.push('.');
        B64URL.encode_string(&signature, &mut token);
        Ok(token)
    }

    /// Its public half.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.verifier
    }
}

/// The public half of an ES256 (P-256) or RS256 key, parsed once, ready to verify signatures:
/// ours, or one read from an issuer's JWKS.
pub struct VerifyingKey {
    alg: Alg,
    key: ParsedPublicKey,
}

impl VerifyingKey {
    /// A P-256 key from an uncompressed point (`04 || x || y`).
    pub fn from_point(point: &[u8]) -> Option<Self> {
        let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).ok()?;
        Some(Self { alg: Alg::Es256, key })
    }

    /// An RSA key from its DER `RSAPublicKey` (RFC 8017).
    fn rsa(der: &[u8]) -> Option<Self> {
        let key = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der).ok()?;
        Some(Self { alg: Alg::Rs256, key })
    }

    /// From a JWK (RFC 7518 §6.2): `kty` EC, `crv` P-256, 32-byte `x` and `y`. (Only ES256 keys
    /// are read from other issuers: their access tokens are ES256.)
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

    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// Verify a signature over `message` (`header.payload`): ES256 fixed-length `r || s`, or
    /// RS256 PKCS #1 v1.5.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
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

/// The status of key `index` among keys sorted by activation time: only a later key of the same
/// algorithm supersedes it.
pub fn status_of(keys: &[(Alg, DateTime<Utc>)], index: usize, grace: Duration, now: DateTime<Utc>) -> KeyStatus {
    let (alg, activates_at) = keys[index];
    if activates_at > now {
        return KeyStatus::Pending;
    }
    // The first later key of its algorithm that has activated superseded this one.
    match keys[index + 1..].iter().find(|(a, at)| *a == alg && *at <= now) {
        None => KeyStatus::Active,
        Some((_, next)) => {
            let until = *next + chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
            if now < until { KeyStatus::Retiring(until) } else { KeyStatus::Retired }
        }
    }
}

/// An immutable snapshot of every key, ordered by activation time (oldest first).
pub struct KeySet {
    keys: Vec<Arc<LoadedKey>>,
    activations: Vec<(Alg, DateTime<Utc>)>,
    grace: Duration,
}

impl KeySet {
    pub fn new(mut keys: Vec<LoadedKey>, grace: Duration) -> Self {
        keys.sort_by(|a, b| a.activates_at.cmp(&b.activates_at).then_with(|| a.kid.cmp(&b.kid)));
        let activations = keys.iter().map(|k| (k.alg, k.activates_at)).collect();
        Self { keys: keys.into_iter().map(Arc::new).collect(), activations, grace }
    }

    pub fn status(&self, index: usize, now: DateTime<Utc>) -> KeyStatus {
        status_of(&self.activations, index, self.grace, now)
    }

    /// The key of `alg` that signs now: the most recently activated one.
    pub fn signing_key(&self, alg: Alg, now: DateTime<Utc>) -> Option<&Arc<LoadedKey>> {
        self.keys.iter().rev().find(|k| k.alg == alg && k.activates_at <= now)
    }

    /// A published key by kid, for verifying a token.
    pub fn verification_key(&self, kid: &str, now: DateTime<Utc>) -> Option<&Arc<LoadedKey>> {
        let index = self.keys.iter().position(|k| k.kid == kid)?;
        (self.status(index, now) != KeyStatus::Retired).then(|| &self.keys[index])
    }

    /// The JWKS document (RFC 7517 §5): every published key, newest first.
    pub fn jwks_json(&self, now: DateTime<Utc>) -> Vec<u8> {
        let keys: Vec<&serde_json::Value> = (0..self.keys.len())
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
    /// Load every key from the database, creating the first key of each algorithm if there is none.
    pub async fn load(pool: &sqlx::PgPool, master: MasterKey, grace: Duration) -> Result<Self, KeyError> {
        for alg in Alg::ALL {
            store::keys::ensure_initial_key(pool, alg.as_str(), || Ok::<_, KeyError>(generate(&master, alg)?.row()))
                .await?;
        }
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

    /// The key that signs access tokens (ES256).
    pub fn signing_key(&self) -> Result<Arc<LoadedKey>, KeyError> {
        self.signing_key_for(Alg::Es256)
    }

    /// The key of `alg` that signs now.
    pub fn signing_key_for(&self, alg: Alg) -> Result<Arc<LoadedKey>, KeyError> {
        self.set.load().signing_key(alg, Utc::now()).cloned().ok_or(KeyError::NoActiveKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded_alg(master: &MasterKey, alg: Alg, activates_at: DateTime<Utc>) -> LoadedKey {
        let new = generate(master, alg).unwrap().row();
        let row = store::keys::KeyRow {
            kid: new.kid.clone(),
            alg: new.alg.to_owned(),
            public_jwk: new.public_jwk,
            private_key_enc: new.private_key_enc,
            created_at: activates_at,
            activates_at,
        };
        LoadedKey::from_row(master, &row).unwrap()
    }

    fn loaded(master: &MasterKey, activates_at: DateTime<Utc>) -> LoadedKey {
        loaded_alg(master, Alg::Es256, activates_at)
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
        let key = generate(&master, Alg::Es256).unwrap();
        assert_eq!(key.kid.len(), 43);
        let coordinate = |name: &str| B64URL.decode(key.public_jwk[name].as_str().unwrap()).unwrap();
        let again = public_jwk(&[vec![4u8], coordinate("x"), coordinate("y")].concat()).unwrap();
        assert_eq!(serde_json::to_value(again).unwrap(), key.public_jwk);
        let rsa = generate(&master, Alg::Rs256).unwrap();
        assert_eq!(rsa.public_jwk["kty"], "RSA");
        assert_eq!(rsa.public_jwk["e"], "AQAB");
        assert_eq!(rsa.kid.len(), 43);
    }

    #[test]
    fn rs256_id_tokens_verify_with_jsonwebtoken() {
        let master = MasterKey::generate();
        let key = loaded_alg(&master, Alg::Rs256, Utc::now());
        let token = key.sign_id_token(&serde_json::json!({"sub": "a", "exp": 4102444800u64})).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!((header.alg, header.typ.as_deref()), (jsonwebtoken::Algorithm::RS256, Some("JWT")));
        let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
            key.jwk["n"].as_str().unwrap(),
            key.jwk["e"].as_str().unwrap(),
        )
        .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.validate_aud = false;
        assert_eq!(
            jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap().claims["sub"],
            "a"
        );
        let (message, sig) = token.rsplit_once('.').unwrap();
        assert!(key.verifying_key().verify(message.as_bytes(), &B64URL.decode(sig).unwrap()));
        // Each algorithm rotates on its own: a new ES256 key does not retire the RS256 one.
        let es = loaded(&master, Utc::now() + chrono::Duration::seconds(-1));
        let set = KeySet::new(vec![key, es], Duration::from_secs(60));
        let now = Utc::now();
        assert!(set.signing_key(Alg::Rs256, now).is_some() && set.signing_key(Alg::Es256, now).is_some());
        assert_eq!((set.status(0, now), set.status(1, now)), (KeyStatus::Active, KeyStatus::Active));
    }

    #[test]
    fn signed_token_verifies_with_jsonwebtoken() {
        let master = MasterKey::generate();
        let key = loaded(&master, Utc::now());
        let token = key.sign_access_token(&serde_json::json!({"sub": "a", "exp": 4102444800u64})).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
        let decoding = jsonwebtoken::DecodingKey::from_ec_components(
            key.jwk["x"].as_str().unwrap(),
            key.jwk["y"].as_str().unwrap(),
        )
        .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
        assert_eq!(data.claims["sub"], "a");
        let (message, sig) = token.rsplit_once('.').unwrap();
        assert!(key.verifying_key().verify(message.as_bytes(), &B64URL.decode(sig).unwrap()));
        assert!(!key.verifying_key().verify(b"other", &B64URL.decode(sig).unwrap()));
        let from_jwk = VerifyingKey::from_jwk(&key.jwk).unwrap();
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
        assert_eq!(set.signing_key(Alg::Es256, now).unwrap().kid, old_kid);
        assert_eq!(set.status(1, now), KeyStatus::Pending);
        let jwks: serde_json::Value = serde_json::from_slice(&set.jwks_json(now)).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        // After activation: new signs, old is still published for the grace period.
        let later = new_at + chrono::Duration::minutes(1);
        assert_eq!(set.signing_key(Alg::Es256, later).unwrap().kid, new_kid);
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
