//! Shared helpers for the policy tests: raw token forging and fixed keys.
#![allow(dead_code)]

use jsonwebtoken::{Algorithm, EncodingKey};
use railgate_policy::b64url_encode;
use railgate_policy::keys::{Key, KeySet};
use serde_json::{json, Value};

pub const SECRET: &[u8] = b"test-hs256-secret-0123456789abcdef";
pub const NOW: u64 = 1_800_000_000;

pub const RSA_PRIVATE: &[u8] = include_bytes!("../keys/rsa_private.pem");
pub const RSA_PUBLIC: &[u8] = include_bytes!("../keys/rsa_public.pem");
pub const RSA_PUBLIC_DER: &[u8] = include_bytes!("../keys/rsa_public.der");
pub const EC_PRIVATE: &[u8] = include_bytes!("../keys/ec_private.pem");
pub const EC_PUBLIC: &[u8] = include_bytes!("../keys/ec_public.pem");
pub const ED_PRIVATE: &[u8] = include_bytes!("../keys/ed_private.pem");
pub const ED_PUBLIC: &[u8] = include_bytes!("../keys/ed_public.pem");

/// Signs `header.payload` (both given as raw JSON text) with `key` under `alg`.
pub fn forge_raw(header: &str, payload: &str, key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!(
        "{}.{}",
        b64url_encode(header.as_bytes()),
        b64url_encode(payload.as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("sign");
    format!("{message}.{sig}")
}

pub fn forge(header: Value, payload: Value, key: &EncodingKey, alg: Algorithm) -> String {
    forge_raw(&header.to_string(), &payload.to_string(), key, alg)
}

pub fn hs_key() -> EncodingKey {
    EncodingKey::from_secret(SECRET)
}

pub fn claims() -> Value {
    json!({"sub": "user-1", "exp": NOW + 600, "tenant_id": "t_demo"})
}

pub fn hs256(payload: Value) -> String {
    forge(
        json!({"alg": "HS256", "typ": "JWT"}),
        payload,
        &hs_key(),
        Algorithm::HS256,
    )
}

pub fn rsa_enc() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("rsa")
}
pub fn ec_enc() -> EncodingKey {
    EncodingKey::from_ec_pem(EC_PRIVATE).expect("ec")
}
pub fn ed_enc() -> EncodingKey {
    EncodingKey::from_ed_pem(ED_PRIVATE).expect("ed")
}

/// HS256 secret (no kid) plus RSA `rsa1`, EC `ec1` and Ed25519 `ed1` public keys.
pub fn keyset() -> KeySet {
    let mut ks = KeySet::new();
    ks.add(Key::hs256(SECRET, None).expect("hs")).expect("add");
    ks.add(Key::from_pem(RSA_PUBLIC, Algorithm::RS256, Some("rsa1".into())).expect("rsa"))
        .expect("add");
    ks.add(Key::from_pem(EC_PUBLIC, Algorithm::ES256, Some("ec1".into())).expect("ec"))
        .expect("add");
    ks.add(Key::from_pem(ED_PUBLIC, Algorithm::EdDSA, Some("ed1".into())).expect("ed"))
        .expect("add");
    ks
}

/// The raw 32-byte Ed25519 public key of the fixture, base64url (a JWK's `x`).
pub fn ed_public_x() -> String {
    use base64::Engine;
    let pem = std::str::from_utf8(ED_PUBLIC).expect("utf8");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("der");
    b64url_encode(&der[der.len() - 32..])
}
