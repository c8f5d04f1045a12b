//! Verification keys, each pinned to exactly one algorithm.
//!
//! A token's `alg` header never chooses how it is verified: it must equal the algorithm the
//! selected key is pinned to. Keys come from an HS256 secret, PEM public keys, or JWKS JSON; the
//! caller reads files and URLs, this module only sees bytes.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use std::str::FromStr;

/// One verification key.
#[derive(Clone)]
pub struct Key {
    /// `kid` it answers to, if any.
    pub kid: Option<String>,
    /// The one algorithm it verifies.
    pub alg: Algorithm,
    pub(crate) decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material is never printed.
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

/// Why a key could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// An HMAC secret that is empty or blank.
    #[error("HMAC secret is empty")]
    BlankSecret,
    /// The algorithm cannot be used with this kind of key.
    #[error("algorithm {0} is not valid for this key")]
    AlgorithmNotAllowed(String),
    /// PEM or JWK material did not parse.
    #[error("key material is malformed: {0}")]
    Malformed(String),
    /// A JWK whose `use` is not `sig`, or whose `alg` disagrees with its key type.
    #[error("JWK is not usable for signatures: {0}")]
    UnusableJwk(String),
    /// Two keys share a `kid`.
    #[error("duplicate kid {0}")]
    DuplicateKid(String),
}

/// The asymmetric algorithms a public key may be pinned to.
pub const ASYMMETRIC_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Parses an algorithm name as configured (`RS256`, `ES256`, `EdDSA`, ...).
pub fn parse_alg(name: &str) -> Option<Algorithm> {
    Algorithm::from_str(name).ok()
}

/// A set of keys; lookups by `kid` or by algorithm.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

/// Result of loading a JWKS: the usable keys and the ones skipped, with why.
#[derive(Debug, Clone)]
pub struct JwksLoad {
    /// Keys that loaded.
    pub keys: Vec<Key>,
    /// `(kid, reason)` for each key that was skipped.
    pub skipped: Vec<(Option<String>, KeyError)>,
}

impl KeySet {
    /// An empty set (every token is refused).
    pub fn new() -> Self {
        KeySet::default()
    }

    /// Adds a key; refuses a second key with the same `kid`.
    pub fn add(&mut self, key: Key) -> Result<(), KeyError> {
        if let Some(kid) = &key.kid {
            if self.keys.iter().any(|k| k.kid.as_deref() == Some(kid)) {
                return Err(KeyError::DuplicateKid(kid.clone()));
            }
        }
        self.keys.push(key);
        Ok(())
    }

    /// Adds every key of a JWKS load; duplicates are reported as skipped.
    pub fn extend_jwks(&mut self, load: JwksLoad) -> Vec<(Option<String>, KeyError)> {
        let mut skipped = load.skipped;
        for key in load.keys {
            let kid = key.kid.clone();
            if let Err(e) = self.add(key) {
                skipped.push((kid, e));
            }
        }
        skipped
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key with this `kid`.
    pub fn by_kid(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }

    /// Keys pinned to `alg` (used when a token names no `kid`).
    pub fn by_alg(&self, alg: Algorithm) -> impl Iterator<Item = &Key> {
        self.keys.iter().filter(move |k| k.alg == alg)
    }

    /// Whether any key carries this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.by_kid(kid).is_some()
    }
}

impl Key {
    /// An HS256 shared secret. Blank secrets are refused: they would make forgery trivial.
    pub fn hs256(secret: &[u8], kid: Option<String>) -> Result<Key, KeyError> {
        if secret.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(KeyError::BlankSecret);
        }
        Ok(Key {
            kid,
            alg: Algorithm::HS256,
            decoding: DecodingKey::from_secret(secret),
        })
    }

    /// A PEM public key pinned to `alg` (RSA, EC P-256/P-384 or Ed25519 to match).
    pub fn from_pem(pem: &[u8], alg: Algorithm, kid: Option<String>) -> Result<Key, KeyError> {
        let decoding = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => DecodingKey::from_rsa_pem(pem),
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            other => return Err(KeyError::AlgorithmNotAllowed(format!("{other:?}"))),
        }
        .map_err(|e| KeyError::Malformed(e.to_string()))?;
        Ok(Key { kid, alg, decoding })
    }

    /// One JWK, honouring its `use` and `alg` (which jsonwebtoken's `from_jwk` ignores).
    ///
    /// Symmetric (`oct`) keys are refused: a JWKS is public material.
    pub fn from_jwk(jwk: &Jwk) -> Result<Key, KeyError> {
        let kid = jwk.common.key_id.clone();
        match &jwk.common.public_key_use {
            None | Some(PublicKeyUse::Signature) => {}
            Some(other) => return Err(KeyError::UnusableJwk(format!("use {other:?}"))),
        }
        let implied = implied_alg(&jwk.algorithm)?;
        let alg = match jwk.common.key_algorithm {
            None => implied[0],
            Some(declared) => {
                let alg = key_algorithm(declared)?;
                if !implied.contains(&alg) {
                    return Err(KeyError::UnusableJwk(format!(
                        "alg {alg:?} does not fit the key type"
                    )));
                }
                alg
            }
        };
        let decoding =
            DecodingKey::from_jwk(jwk).map_err(|e| KeyError::Malformed(e.to_string()))?;
        Ok(Key { kid, alg, decoding })
    }
}

/// Algorithms a JWK's key type allows; the first is the one assumed when `alg` is absent.
fn implied_alg(params: &AlgorithmParameters) -> Result<&'static [Algorithm], KeyError> {
    match params {
        AlgorithmParameters::RSA(_) => Ok(&[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ]),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Ok(&[Algorithm::ES256]),
            EllipticCurve::P384 => Ok(&[Algorithm::ES384]),
            _ => Err(KeyError::UnusableJwk("unsupported curve".into())),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => Ok(&[Algorithm::EdDSA]),
            _ => Err(KeyError::UnusableJwk("unsupported curve".into())),
        },
        AlgorithmParameters::OctetKey(_) => Err(KeyError::UnusableJwk(
            "symmetric keys are not accepted from a JWKS".into(),
        )),
    }
}

fn key_algorithm(alg: KeyAlgorithm) -> Result<Algorithm, KeyError> {
    let name = format!("{alg:?}");
    match parse_alg(&name) {
        Some(a) if ASYMMETRIC_ALGS.contains(&a) => Ok(a),
        _ => Err(KeyError::UnusableJwk(format!(
            "alg {name} is not a signature algorithm"
        ))),
    }
}

/// Parses JWKS JSON (`{"keys": [...]}`). Unusable keys are skipped and reported, so one odd key
/// published by an identity provider does not take every other key down with it.
pub fn load_jwks(json: &[u8]) -> Result<JwksLoad, KeyError> {
    let doc: Value =
        serde_json::from_slice(json).map_err(|e| KeyError::Malformed(format!("JWKS: {e}")))?;
    let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
        return Err(KeyError::Malformed("JWKS has no \"keys\" array".into()));
    };
    let mut load = JwksLoad {
        keys: Vec::new(),
        skipped: Vec::new(),
    };
    for entry in entries {
        let kid = entry.get("kid").and_then(Value::as_str).map(str::to_owned);
        let parsed = serde_json::from_value::<Jwk>(entry.clone())
            .map_err(|e| KeyError::Malformed(e.to_string()))
            .and_then(|jwk| Key::from_jwk(&jwk));
        match parsed {
            Ok(key) => load.keys.push(key),
            Err(e) => load.skipped.push((kid, e)),
        }
    }
    Ok(load)
}
