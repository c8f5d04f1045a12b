//! Credentials: which keys verify JWTs (static keys plus a refreshed JWKS), which tickets were
//! used, and turning what a request presented into verified claims via the policy crate.

use crate::client::HttpClient;
use crate::config::{Accepts, AuthConfig};
use crate::env::Env;
use railgate_policy::keys::{load_jwks, parse_alg, Key, KeySet};
use railgate_policy::ticket::{self, TicketClaims, TicketSecrets};
use railgate_policy::token::{self, Claims, Rules, TokenError};
use railgate_policy::{Denial, ErrorCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Why the key configuration is unusable (start-up error).
#[derive(Debug)]
pub struct KeyConfigError(pub Vec<String>);

/// Verification keys: the static ones (HS256 secret, PEM files, JWKS file) and, when a JWKS URL is
/// configured, the last good fetch of it (kept when a refresh fails).
pub struct KeyStore {
    static_keys: Vec<Key>,
    current: RwLock<Arc<KeySet>>,
    jwks_url: Option<String>,
    min_refresh: Duration,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    client: HttpClient,
}

impl KeyStore {
    /// Loads the static keys. The JWKS URL is fetched by [`KeyStore::refresh`].
    pub fn new(
        config: &AuthConfig,
        env: &dyn Env,
        client: HttpClient,
    ) -> Result<Arc<KeyStore>, KeyConfigError> {
        let mut problems = Vec::new();
        let mut keys = Vec::new();
        if let Some(secret) = env
            .get(&config.jwt_hs256_secret_env)
            .filter(|s| !s.trim().is_empty())
        {
            match Key::hs256(secret.as_bytes(), None) {
                Ok(k) => keys.push(k),
                Err(e) => problems.push(format!("{}: {e}", config.jwt_hs256_secret_env)),
            }
        }
        for (i, pk) in config.public_keys.iter().enumerate() {
            let loaded = std::fs::read(&pk.pem_file)
                .map_err(|e| {
                    format!(
                        "auth.public_keys[{i}].pem_file {}: {e}",
                        pk.pem_file.display()
                    )
                })
                .and_then(|pem| {
                    let alg = parse_alg(&pk.alg)
                        .ok_or_else(|| format!("auth.public_keys[{i}].alg: unknown"))?;
                    Key::from_pem(&pem, alg, pk.kid.clone())
                        .map_err(|e| format!("auth.public_keys[{i}]: {e}"))
                });
            match loaded {
                Ok(k) => keys.push(k),
                Err(e) => problems.push(e),
            }
        }
        if let Some(path) = &config.jwks_file {
            match std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|b| load_jwks(&b).map_err(|e| e.to_string()))
            {
                Ok(load) => {
                    for (kid, why) in &load.skipped {
                        tracing::warn!(kid = kid.as_deref().unwrap_or(""), reason = %why, "JWKS key skipped");
                    }
                    keys.extend(load.keys);
                }
                Err(e) => problems.push(format!("auth.jwks_file {}: {e}", path.display())),
            }
        }
        if !problems.is_empty() {
            return Err(KeyConfigError(problems));
        }
        let store = KeyStore {
            static_keys: keys,
            current: RwLock::new(Arc::new(KeySet::new())),
            jwks_url: config.jwks_url.clone(),
            min_refresh: config.jwks_min_refresh,
            last_fetch: tokio::sync::Mutex::new(None),
            client,
        };
        store
            .install(Vec::new())
            .map_err(|e| KeyConfigError(vec![e]))?;
        Ok(Arc::new(store))
    }

    fn install(&self, fetched: Vec<Key>) -> Result<(), String> {
        let mut set = KeySet::new();
        for k in self.static_keys.iter().cloned().chain(fetched) {
            set.add(k).map_err(|e| e.to_string())?;
        }
        if let Ok(mut cur) = self.current.write() {
            *cur = Arc::new(set);
        }
        Ok(())
    }

    /// The keys in force.
    pub fn keys(&self) -> Arc<KeySet> {
        self.current.read().map(|k| k.clone()).unwrap_or_default()
    }

    /// Whether a JWKS URL is configured.
    pub fn has_url(&self) -> bool {
        self.jwks_url.is_some()
    }

    /// Fetches the JWKS URL now. On failure the previous keys stay in force.
    pub async fn refresh(&self) -> Result<usize, String> {
        let Some(url) = &self.jwks_url else {
            return Ok(0);
        };
        *self.last_fetch.lock().await = Some(Instant::now());
        let (status, body) = self
            .client
            .get_small(url, Duration::from_secs(5), MAX_JWKS_BYTES)
            .await
            .map_err(|e| format!("{e:?}"))?;
        if status != 200 {
            return Err(format!("JWKS answered {status}"));
        }
        let load = load_jwks(&body).map_err(|e| e.to_string())?;
        for (kid, why) in &load.skipped {
            tracing::warn!(kid = kid.as_deref().unwrap_or(""), reason = %why, "JWKS key skipped");
        }
        let n = load.keys.len();
        self.install(load.keys)?;
        Ok(n)
    }

    /// On an unknown `kid`: refetch, at most once per `jwks_min_refresh`. Returns whether it did.
    async fn refresh_for_unknown_kid(&self) -> bool {
        if self.jwks_url.is_none() {
            return false;
        }
        {
            let last = self.last_fetch.lock().await;
            if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
                return false;
            }
        }
        match self.refresh().await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refetch for an unknown kid failed; keeping the previous keys");
                false
            }
        }
    }
}

/// Tickets already used, remembered until they expire. Bounded: when full of unexpired tickets,
/// new tickets are refused (`rate.limited`) rather than forgetting a used one.
pub struct TicketBook {
    used: Mutex<HashMap<String, u64>>,
    cap: usize,
}

impl TicketBook {
    /// A book holding at most `cap` tickets.
    pub fn new(cap: usize) -> TicketBook {
        TicketBook {
            used: Mutex::new(HashMap::new()),
            cap: cap.max(1),
        }
    }

    /// Whether `tid` was used.
    pub fn is_used(&self, tid: &str) -> bool {
        self.used
            .lock()
            .map(|u| u.contains_key(tid))
            .unwrap_or(true)
    }

    /// Marks `tid` (expiring at `exp`) used; fails if it already was.
    pub fn consume(&self, tid: &str, exp: u64, now: u64) -> Result<(), Denial> {
        let mut used = self
            .used
            .lock()
            .map_err(|_| Denial::new(ErrorCode::TicketReplayed))?;
        if used.contains_key(tid) {
            return Err(Denial::new(ErrorCode::TicketReplayed));
        }
        if used.len() >= self.cap {
            used.retain(|_, e| *e > now);
            if used.len() >= self.cap {
                return Err(Denial::with_message(
                    ErrorCode::RateLimited,
                    "too many live tickets",
                ));
            }
        }
        used.insert(tid.to_owned(), exp);
        Ok(())
    }
}

/// Everything credential-related the gateway holds.
pub struct Auth {
    /// JWT keys.
    pub keys: Arc<KeyStore>,
    /// JWT rules.
    pub rules: Rules,
    /// Ticket keys (`None`: tickets are refused).
    pub tickets: Option<TicketSecrets>,
    /// Used tickets.
    pub book: TicketBook,
}

/// The credentials a request presented.
#[derive(Debug, Default, Clone)]
pub struct Credentials {
    /// `Authorization: Bearer` value.
    pub bearer: Option<String>,
    /// `?ticket=` or a hello `ticket`.
    pub ticket: Option<String>,
    /// The `railgate_resume` cookie (SSE resume grant).
    pub grant: Option<String>,
}

/// Verified credentials.
#[derive(Debug, Default, Clone)]
pub struct Verified {
    /// JWT claims.
    pub token: Option<Claims>,
    /// Ticket claims.
    pub ticket: Option<TicketClaims>,
    /// The ticket was used before and a valid resume grant for it came along.
    pub ticket_resumed: bool,
}

/// Reads `Authorization: Bearer <jwt>`. Another scheme, or the header twice, is `token_invalid`.
pub fn bearer(headers: &http::HeaderMap) -> Result<Option<String>, Denial> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Denial::with_message(
            ErrorCode::TokenInvalid,
            "Authorization sent more than once",
        ));
    }
    let text = v
        .to_str()
        .map_err(|_| Denial::new(ErrorCode::TokenInvalid))?;
    match text.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim().to_owned()))
        }
        _ => Err(Denial::with_message(
            ErrorCode::TokenInvalid,
            "Authorization must be a Bearer token",
        )),
    }
}

impl Auth {
    /// Builds the credential state.
    pub fn new(config: &AuthConfig, env: &dyn Env, keys: Arc<KeyStore>) -> Result<Auth, String> {
        let tickets = match env
            .get(&config.ticket_secret_env)
            .filter(|s| !s.trim().is_empty())
        {
            Some(cur) => {
                let prev = env.get(&config.ticket_secret_previous_env);
                Some(
                    TicketSecrets::new(cur.as_bytes(), prev.as_deref().map(str::as_bytes))
                        .map_err(|e| e.to_string())?,
                )
            }
            None => None,
        };
        Ok(Auth {
            keys,
            rules: Rules {
                leeway_s: config.leeway_s,
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
            },
            tickets,
            book: TicketBook::new(config.max_used_tickets),
        })
    }

    /// Verifies a JWT; an unknown `kid` triggers one rate-limited JWKS refetch and a retry.
    pub async fn verify_jwt(&self, raw: &str, now: u64) -> Result<Claims, Denial> {
        match token::verify(raw, &self.keys.keys(), now, &self.rules) {
            Err(TokenError::UnknownKid(_)) if self.keys.refresh_for_unknown_kid().await => {
                token::verify(raw, &self.keys.keys(), now, &self.rules).map_err(Denial::from)
            }
            other => other.map_err(Denial::from),
        }
    }

    /// Verifies a ticket's MAC and expiry (single use is checked by the caller).
    pub fn verify_ticket(&self, raw: &str, now: u64) -> Result<TicketClaims, Denial> {
        let secrets = self.tickets.as_ref().ok_or_else(|| {
            Denial::with_message(ErrorCode::TicketInvalid, "tickets are not enabled")
        })?;
        ticket::verify(raw, secrets, now)
    }

    /// Verifies whatever was presented that the route accepts.
    pub async fn verify(
        &self,
        presented: &Credentials,
        accepts: Accepts,
        now: u64,
    ) -> Result<Verified, Denial> {
        let mut out = Verified::default();
        if let (Some(raw), true) = (&presented.bearer, accepts.jwt) {
            out.token = Some(self.verify_jwt(raw, now).await?);
        }
        if let (Some(raw), true) = (&presented.ticket, accepts.ticket) {
            let t = self.verify_ticket(raw, now)?;
            if self.book.is_used(&t.tid) {
                let granted = match (&presented.grant, &self.tickets) {
                    (Some(g), Some(secrets)) => {
                        ticket::verify_grant(g, secrets, now).is_some_and(|g| g.covers(&t))
                    }
                    _ => false,
                };
                if !granted {
                    return Err(Denial::new(ErrorCode::TicketReplayed));
                }
                out.ticket_resumed = true;
            }
            out.ticket = Some(t);
        }
        if out.token.is_none() && out.ticket.is_none() {
            return Err(Denial::new(ErrorCode::TokenMissing));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_book_refuses_a_second_use() {
        let book = TicketBook::new(10);
        assert!(book.consume("a", 100, 50).is_ok());
        assert!(book.is_used("a"));
        assert_eq!(
            book.consume("a", 100, 50).map_err(|d| d.code),
            Err(ErrorCode::TicketReplayed)
        );
    }

    #[test]
    fn ticket_book_forgets_only_expired_tickets_when_full() {
        let book = TicketBook::new(2);
        book.consume("a", 100, 50).expect("a");
        book.consume("b", 200, 50).expect("b");
        assert_eq!(
            book.consume("c", 300, 60).map_err(|d| d.code),
            Err(ErrorCode::RateLimited)
        );
        book.consume("c", 300, 150)
            .expect("a expired and is forgotten");
        assert!(!book.is_used("a"));
        assert!(book.is_used("b"));
    }

    #[test]
    fn bearer_parsing() {
        let mut h = http::HeaderMap::new();
        assert_eq!(bearer(&h), Ok(None));
        h.insert("authorization", "Bearer abc".parse().expect("v"));
        assert_eq!(bearer(&h), Ok(Some("abc".into())));
        h.insert("authorization", "bearer  abc ".parse().expect("v"));
        assert_eq!(bearer(&h), Ok(Some("abc".into())));
        h.insert("authorization", "Basic abc".parse().expect("v"));
        assert_eq!(bearer(&h).map_err(|d| d.code), Err(ErrorCode::TokenInvalid));
        h.append("authorization", "Bearer x".parse().expect("v"));
        assert_eq!(bearer(&h).map_err(|d| d.code), Err(ErrorCode::TokenInvalid));
    }
}
