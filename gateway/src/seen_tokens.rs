//! Tokens verified before: a bounded map from a JWT's exact text to its claims and the key set
//! that verified them, so a client sending the same token on every request pays for its
//! signature and JSON once. A hit skips the signature and the parsing, never the clock: `exp` and
//! `nbf` are checked again on every use ([`token::times_valid`]). Entries verified with another
//! key set than the one in force (a JWKS refresh swapped it) are misses, and verified again. Only
//! tokens that passed verification go in; a reload starts an empty map (its rules may differ).

use crate::timed_cache::{bounded, Bounded};
use railgate_policy::keys::KeySet;
use railgate_policy::token::{self, Claims, Rules, TokenError};
use std::sync::Arc;
use std::time::Duration;

/// Most tokens remembered at once (about 1 KiB each).
pub const CAPACITY: u64 = 10_000;

/// How long a token is remembered after its verification, on the clock its checks use; its own
/// `exp` still ends it sooner.
pub const TTL: Duration = Duration::from_secs(300);

struct Entry {
    /// Forgotten from then on, on the clock `verify` is given (the next verification
    /// overwrites it).
    until: u64,
    keys: Arc<KeySet>,
    /// Shared with every request that presents the token (no copy of its claims per request).
    claims: Arc<Claims>,
}

/// The map of verified tokens, hashed with foldhash (seeded per process): only tokens that
/// verified are keys, and SipHash over a whole token was a visible share of a request's work.
/// A bounded cache without clocks of its own (`quick_cache`: a hit is a hash, a shard's read
/// lock and a lookup); an entry's age is checked on its hit.
pub struct SeenTokens {
    map: Bounded<Arc<Entry>>,
    #[cfg(test)]
    hits: std::sync::atomic::AtomicU64,
}

impl Default for SeenTokens {
    fn default() -> Self {
        SeenTokens {
            map: bounded(CAPACITY),
            #[cfg(test)]
            hits: Default::default(),
        }
    }
}

impl SeenTokens {
    /// Verifies `raw` against `keys` at `now`: from memory when the same text was verified
    /// against this same key set, in full otherwise ([`token::verify`]).
    pub fn verify(
        &self,
        raw: &str,
        keys: &Arc<KeySet>,
        now: u64,
        rules: &Rules,
    ) -> Result<Arc<Claims>, TokenError> {
        let fresh = |e: &Arc<Entry>| Arc::ptr_eq(&e.keys, keys) && now < e.until;
        if let Some(seen) = self.map.get(raw).filter(fresh) {
            token::times_valid(&seen.claims, now, rules.leeway_s)?;
            #[cfg(test)]
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(seen.claims.clone());
        }
        let claims = Arc::new(token::verify(raw, keys, now, rules)?);
        let entry = Entry {
            until: now.saturating_add(TTL.as_secs()),
            keys: keys.clone(),
            claims: claims.clone(),
        };
        self.map.insert(raw.to_owned(), Arc::new(entry));
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use railgate_policy::keys::Key;
    use std::sync::atomic::Ordering;

    fn keys(secret: &[u8]) -> Arc<KeySet> {
        let mut set = KeySet::new();
        set.add(Key::hs256(secret, None).expect("key"))
            .expect("add");
        Arc::new(set)
    }

    fn token(secret: &[u8], claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .expect("token")
    }

    fn rules() -> Rules {
        Rules {
            leeway_s: 0,
            issuer: None,
            audience: None,
        }
    }

    #[test]
    fn a_token_seen_again_is_served_from_memory_with_the_same_claims() {
        let seen = SeenTokens::default();
        let k = keys(b"secret");
        let raw = token(
            b"secret",
            serde_json::json!({"sub": "u", "tenant_id": "t_a", "exp": 2_000}),
        );
        let first = seen.verify(&raw, &k, 1_000, &rules()).expect("valid");
        let again = seen.verify(&raw, &k, 1_200, &rules()).expect("still valid");
        assert_eq!(first, again);
        assert_eq!(again.sub, "u");
        assert_eq!(again.tenants, ["t_a"]);
        assert_eq!(seen.hits.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_clock_is_checked_on_every_hit() {
        let seen = SeenTokens::default();
        let k = keys(b"secret");
        let raw = token(
            b"secret",
            serde_json::json!({"sub": "u", "tenant_id": "t_a", "nbf": 900, "exp": 2_000}),
        );
        seen.verify(&raw, &k, 1_000, &rules()).expect("valid");
        assert_eq!(
            seen.verify(&raw, &k, 2_000, &rules()),
            Err(TokenError::Expired)
        );
        assert_eq!(
            seen.verify(&raw, &k, 899, &rules()),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            seen.hits.load(Ordering::Relaxed),
            0,
            "no expired token is served"
        );
    }

    #[test]
    fn another_key_set_verifies_again_and_a_failure_is_not_remembered() {
        let seen = SeenTokens::default();
        let raw = token(
            b"secret",
            serde_json::json!({"sub": "u", "tenant_id": "t_a", "exp": 2_000}),
        );
        seen.verify(&raw, &keys(b"secret"), 1_000, &rules())
            .expect("valid");
        let rotated = keys(b"another-secret");
        assert!(seen.verify(&raw, &rotated, 1_000, &rules()).is_err());
        assert!(seen.verify(&raw, &rotated, 1_000, &rules()).is_err());
        assert_eq!(seen.hits.load(Ordering::Relaxed), 0);
        let forged = format!("{}x", raw);
        assert!(seen
            .verify(&forged, &keys(b"secret"), 1_000, &rules())
            .is_err());
    }

    #[test]
    fn a_token_is_verified_again_once_remembered_for_the_ttl() {
        let seen = SeenTokens::default();
        let k = keys(b"secret");
        let raw = token(
            b"secret",
            serde_json::json!({"sub": "u", "tenant_id": "t_a", "exp": 10_000}),
        );
        let ttl = TTL.as_secs();
        seen.verify(&raw, &k, 1_000, &rules()).expect("valid");
        seen.verify(&raw, &k, 1_000 + ttl - 1, &rules())
            .expect("still valid");
        assert_eq!(seen.hits.load(Ordering::Relaxed), 1, "remembered");
        seen.verify(&raw, &k, 1_000 + ttl, &rules())
            .expect("still valid");
        assert_eq!(seen.hits.load(Ordering::Relaxed), 1, "verified again");
        seen.verify(&raw, &k, 1_000 + ttl + 1, &rules())
            .expect("still valid");
        assert_eq!(
            seen.hits.load(Ordering::Relaxed),
            2,
            "remembered again from its new verification"
        );
    }

    #[test]
    fn at_most_the_capacity_is_remembered() {
        let seen = SeenTokens::default();
        let k = keys(b"secret");
        for i in 0..CAPACITY + 2_000 {
            let raw = token(
                b"secret",
                serde_json::json!({"sub": format!("u{i}"), "tenant_id": "t_a", "exp": 2_000}),
            );
            seen.verify(&raw, &k, 1_000, &rules()).expect("valid");
        }
        let held = seen.map.len() as u64;
        assert!(
            (CAPACITY / 2..=CAPACITY).contains(&held),
            "{held} tokens held"
        );
    }
}
