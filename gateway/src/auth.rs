//! Credentials: which keys verify JWTs (static keys plus a refreshed JWKS), which tickets were
//! used, and turning what a request presented into verified claims via the policy crate.

use crate::client::HttpClient;
use crate::config::{Accepts, AuthConfig};
use crate::env::Env;
use crate::seen_tokens::SeenTokens;
pub use crate::ticket_book::TicketBook;
use railgate_policy::keys::{load_jwks, parse_alg, Key, KeySet};
use railgate_policy::ticket::{self, TicketClaims, TicketSecrets};
use railgate_policy::token::{Claims, Rules, TokenError};
use railgate_policy::{Denial, ErrorCode};
use std::sync::{Arc, RwLock};
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
    oidc_issuer: Option<String>,
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
            oidc_issuer: config.oidc_issuer.clone(),
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
        self.jwks_url.is_some() || self.oidc_issuer.is_some()
    }

    /// Fetches the JWKS URL now. On failure the previous keys stay in force.
    pub async fn refresh(&self) -> Result<usize, String> {
        let mut last = self.last_fetch.lock().await;
        self.fetch(&mut last).await
    }

    /// Fetches with the fetch gate held (`last` is its guarded time), so no other fetch starts
    /// before this one is recorded.
    async fn fetch(&self, last: &mut Option<Instant>) -> Result<usize, String> {
        *last = Some(Instant::now());
        let url = match (&self.oidc_issuer, &self.jwks_url) {
            (Some(issuer), _) => self.discover(issuer).await?,
            (None, Some(url)) => url.clone(),
            (None, None) => return Ok(0),
        };
        let url = &url;
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

    /// OpenID discovery: the JWKS URL `issuer`'s configuration names, once its `issuer`
    /// matches exactly.
    async fn discover(&self, issuer: &str) -> Result<String, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let (status, body) = self
            .client
            .get_small(&url, Duration::from_secs(5), MAX_JWKS_BYTES)
            .await
            .map_err(|e| format!("{url}: {e:?}"))?;
        if status != 200 {
            return Err(format!("{url} answered {status}"));
        }
        let doc: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))?;
        if doc["issuer"].as_str() != Some(issuer) {
            return Err(format!(
                "{url}: its issuer {} is not {issuer:?}",
                doc["issuer"]
            ));
        }
        doc["jwks_uri"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{url}: no jwks_uri"))
    }

    /// On an unknown `kid`: refetch, at most once per `jwks_min_refresh`. Returns whether the
    /// keys may have changed since the caller looked (it fetched, or another caller fetched while
    /// this one waited at the gate): then verification is worth retrying. A burst of unknown kids
    /// makes one fetch: the gate is held from the check until the fetch is recorded and done.
    async fn refresh_for_unknown_kid(&self) -> bool {
        if !self.has_url() {
            return false;
        }
        let asked = Instant::now();
        let mut last = self.last_fetch.lock().await;
        match *last {
            Some(t) if t >= asked => return true,
            Some(t) if t.elapsed() < self.min_refresh => return false,
            _ => {}
        }
        match self.fetch(&mut last).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refetch for an unknown kid failed; keeping the previous keys");
                false
            }
        }
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
    /// Used tickets (one book for the process, shared by the credentials of every reload).
    pub book: Arc<TicketBook>,
    /// Tokens verified before (this configuration's).
    seen: SeenTokens,
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
    pub token: Option<Arc<Claims>>,
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
    /// The ticket secrets the environment holds (`None`: tickets are refused).
    pub fn ticket_secrets(
        config: &AuthConfig,
        env: &dyn Env,
    ) -> Result<Option<TicketSecrets>, String> {
        let Some(cur) = env
            .get(&config.ticket_secret_env)
            .filter(|s| !s.trim().is_empty())
        else {
            return Ok(None);
        };
        let prev = env.get(&config.ticket_secret_previous_env);
        TicketSecrets::new(cur.as_bytes(), prev.as_deref().map(str::as_bytes))
            .map(Some)
            .map_err(|e| format!("{}: {e}", config.ticket_secret_env))
    }

    /// Builds the credential state.
    pub fn new(
        config: &AuthConfig,
        keys: Arc<KeyStore>,
        tickets: Option<TicketSecrets>,
        book: Arc<TicketBook>,
    ) -> Auth {
        Auth {
            keys,
            rules: Rules {
                leeway_s: config.leeway_s,
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
            },
            tickets,
            book,
            seen: SeenTokens::default(),
        }
    }

    /// Verifies a JWT; an unknown `kid` triggers one rate-limited JWKS refetch and a retry.
    pub async fn verify_jwt(&self, raw: &str, now: u64) -> Result<Arc<Claims>, Denial> {
        match self.seen.verify(raw, &self.keys.keys(), now, &self.rules) {
            Err(TokenError::UnknownKid(_))
                if Box::pin(self.keys.refresh_for_unknown_kid()).await =>
            {
                self.seen
                    .verify(raw, &self.keys.keys(), now, &self.rules)
                    .map_err(Denial::from)
            }
            other => other.map_err(Denial::from),
        }
    }

    fn secrets(&self) -> Result<&TicketSecrets, Denial> {
        self.tickets.as_ref().ok_or_else(|| {
            Denial::with_message(ErrorCode::TicketInvalid, "tickets are not enabled")
        })
    }

    /// A ticket, checked: a resume its grant covers until the ticket's session end (`sx`), even
    /// past the ticket's own `exp` (decided without the used-ticket book, so resumes go on while
    /// a cluster's state is unreachable); else a first use (fresh, unexpired, unused).
    async fn verify_ticket(
        &self,
        raw: &str,
        grant: Option<&str>,
        now: u64,
    ) -> Result<(TicketClaims, bool), Denial> {
        let secrets = self.secrets()?;
        let t = ticket::open(raw, secrets, now)?;
        let granted = grant
            .and_then(|g| ticket::verify_grant(g, secrets, now))
            .is_some_and(|g| g.covers(&t));
        if granted {
            return Ok((t, true));
        }
        if now >= t.exp {
            return Err(Denial::with_message(
                ErrorCode::TicketInvalid,
                "ticket has expired",
            ));
        }
        match Box::pin(self.book.spent(&t)).await? {
            false => Ok((t, false)),
            true => Err(Denial::new(ErrorCode::TicketReplayed)),
        }
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
            let (t, resumed) = self
                .verify_ticket(raw, presented.grant.as_deref(), now)
                .await?;
            out.ticket_resumed = resumed;
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

    /// A JWKS endpoint that answers `{"keys":[]}` after 50 ms and counts its requests.
    async fn slow_jwks() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let fetches = Arc::new(AtomicUsize::new(0));
        let counted = fetches.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let body = r#"{"keys":[]}"#;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                });
            }
        });
        (addr, fetches)
    }

    /// The burst is lined up at the fetch gate before it opens (a current-thread runtime runs
    /// every spawned task up to the gate on one yield), which is where a gate released between
    /// the check and the recorded fetch lets every waiter fetch.
    #[tokio::test(flavor = "current_thread")]
    async fn a_burst_of_unknown_kids_makes_exactly_one_refetch() {
        let (addr, fetches) = slow_jwks().await;
        let text =
            format!("[auth]\njwks_url = \"http://{addr}/jwks.json\"\njwks_min_refresh_s = 30\n");
        let env = std::collections::HashMap::<String, String>::new();
        let config = crate::config::load(Some(&text), &env, &Default::default()).expect("config");
        let outbound = crate::app::Outbound::new(&config).expect("outbound");
        let keys = KeyStore::new(&config.auth, &env, outbound.http.clone())
            .map_err(|e| e.0)
            .expect("keys");
        let book = Arc::new(TicketBook::new(10, 10, 0));
        let auth = Arc::new(Auth::new(&config.auth, keys, None, book));
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("not-published".into());
        let claims = serde_json::json!({"sub": "u", "tenant_id": "t", "exp": 4_000_000_000u64});
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"secret"),
        )
        .expect("token");
        let gate = auth.keys.last_fetch.lock().await;
        let burst: Vec<_> = (0..500)
            .map(|_| {
                let (auth, token) = (auth.clone(), token.clone());
                tokio::spawn(async move { auth.verify_jwt(&token, 1_000).await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(
            burst.iter().all(|t| !t.is_finished()),
            "all wait at the gate"
        );
        drop(gate);
        for r in burst {
            assert!(r.await.expect("task").is_err(), "the kid stays unknown");
        }
        assert_eq!(
            fetches.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one refetch for the whole burst"
        );
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
