//! Development helpers: mint an HS256 JWT (`railgate token`) or a ticket (`railgate ticket`).

use crate::env::{names, Env};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use railgate_policy::ticket::{self, TicketRequest, TicketSecrets};
use serde_json::{Map, Value};
use std::time::Duration;

/// Why minting failed (usage or configuration: exit 64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintError(pub String);

impl std::fmt::Display for MintError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses `1h`, `90s`, `15m` or a bare number of seconds.
pub fn parse_ttl(text: &str) -> Result<Duration, MintError> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text)
        .map_err(|e| MintError(format!("invalid duration {text:?}: {e}")))
}

/// What `railgate token` was asked for.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    /// `tenant_id` claim.
    pub tenant: String,
    /// `sub` claim.
    pub sub: String,
    /// `env` claim, if any.
    pub env: Option<String>,
    /// Lifetime.
    pub ttl: Duration,
    /// Extra `k=v` claims; `v` is JSON when it parses as JSON, else a string.
    pub claims: Vec<String>,
}

/// Mints an HS256 JWT signed with `AUTH_JWT_SIGNING`, issued at `now`.
pub fn token(spec: &TokenSpec, env: &dyn Env, now: u64) -> Result<String, MintError> {
    let secret = secret(env, names::JWT_SIGNING)?;
    let mut claims = Map::new();
    claims.insert("sub".into(), Value::String(spec.sub.clone()));
    claims.insert("tenant_id".into(), Value::String(spec.tenant.clone()));
    if let Some(e) = &spec.env {
        claims.insert("env".into(), Value::String(e.clone()));
    }
    claims.insert("iat".into(), Value::from(now));
    claims.insert("exp".into(), Value::from(now + spec.ttl.as_secs()));
    for kv in &spec.claims {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| MintError(format!("--claim {kv:?} is not k=v")))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
        claims.insert(k.to_owned(), value);
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| MintError(format!("cannot sign: {e}")))
}

/// Mints a ticket signed with `ENGINES_TICKET_SECRET`, issued at `now` with id `tid`.
pub fn ticket(
    request: TicketRequest,
    env: &dyn Env,
    now: u64,
    tid: String,
) -> Result<String, MintError> {
    let current = secret(env, names::TICKET_SECRET)?;
    let secrets =
        TicketSecrets::new(current.as_bytes(), None).map_err(|e| MintError(e.to_string()))?;
    Ok(ticket::encode(&request.issue(tid, now), &secrets))
}

fn secret(env: &dyn Env, name: &str) -> Result<String, MintError> {
    match env.get(name) {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(MintError(format!("{name} is not set"))),
    }
}

/// A random 128-bit id as 32 lower-case hex digits (trace ids, ticket ids).
pub fn random_hex_id() -> String {
    let mut id = String::with_capacity(32);
    push_hex(&mut id, rand::random::<u128>(), 32);
    id
}

/// Appends the low `digits` hex digits of `value` (lower case, zero-padded) to `out`, without
/// the formatting machinery (ids are minted on every request).
pub fn push_hex(out: &mut String, value: u128, digits: u32) {
    let mut text = [b'0'; 32];
    let digits = digits.min(32) as usize;
    write_hex(&mut text[32 - digits..], value);
    // Hex digits only: always UTF-8.
    out.push_str(std::str::from_utf8(&text[32 - digits..]).unwrap_or_default());
}

/// Fills `out` with the low `out.len()` hex digits of `value` (lower case, zero-padded).
pub fn write_hex(out: &mut [u8], value: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, d) in out.iter_mut().rev().enumerate() {
        *d = HEX[((value >> (4 * i)) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use railgate_policy::keys::{Key, KeySet};
    use railgate_policy::token::{verify, Rules};
    use std::collections::HashMap;

    fn env() -> HashMap<String, String> {
        HashMap::from([
            (names::JWT_SIGNING.to_string(), "s3cret".to_string()),
            (names::TICKET_SECRET.to_string(), "t1cket".to_string()),
        ])
    }

    #[test]
    fn minted_token_verifies_with_the_same_secret() {
        let spec = TokenSpec {
            tenant: "t_demo".into(),
            sub: "u1".into(),
            env: Some("dev".into()),
            ttl: Duration::from_secs(3600),
            claims: vec!["mode=lab".into(), "tenants=[\"t_demo\",\"t_b\"]".into()],
        };
        let t = token(&spec, &env(), 1_800_000_000).expect("mint");
        let mut ks = KeySet::new();
        ks.add(Key::hs256(b"s3cret", None).expect("key"))
            .expect("add");
        let c = verify(&t, &ks, 1_800_000_100, &Rules::default()).expect("verifies");
        assert_eq!(c.sub, "u1");
        assert_eq!(c.exp, 1_800_003_600);
        assert_eq!(c.env.as_deref(), Some("dev"));
        assert_eq!(c.field(railgate_policy::Field::Mode), Some("lab"));
        assert_eq!(c.tenants, vec!["t_demo", "t_demo", "t_b"]);
    }

    #[test]
    fn missing_secret_is_a_usage_error() {
        let spec = TokenSpec {
            tenant: "t".into(),
            sub: "u".into(),
            ..Default::default()
        };
        let err = token(&spec, &HashMap::new(), 1).expect_err("no secret");
        assert_eq!(err.0, "AUTH_JWT_SIGNING is not set");
        let req = TicketRequest::default();
        assert!(ticket(req, &HashMap::new(), 1, "x".into()).is_err());
    }

    #[test]
    fn minted_ticket_verifies() {
        let req = TicketRequest {
            sub: "u".into(),
            tenant_id: "t".into(),
            env: "dev".into(),
            thread_id: "th".into(),
            ..Default::default()
        };
        let raw = ticket(req, &env(), 1_800_000_000, "tid".into()).expect("mint");
        let secrets = TicketSecrets::new(b"t1cket", None).expect("s");
        let c = railgate_policy::ticket::verify(&raw, &secrets, 1_800_000_010).expect("verifies");
        assert_eq!((c.thread_id.as_str(), c.exp), ("th", 1_800_000_060));
    }

    #[test]
    fn ttl_parses_units_and_bare_seconds() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn random_ids_are_32_hex() {
        let mut hex = String::new();
        push_hex(&mut hex, 0xabc, 5);
        assert_eq!(hex, "00abc");
        push_hex(&mut hex, u128::MAX, 32);
        assert_eq!(&hex[5..], "f".repeat(32));
        push_hex(&mut hex, 0x0123_4567_89ab_cdef_u128 << 64 | 0xfedc, 32);
        assert_eq!(
            &hex[37..],
            format!("{:032x}", 0x0123_4567_89ab_cdef_u128 << 64 | 0xfedc)
        );
        let a = random_hex_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_hex_id());
    }
}
