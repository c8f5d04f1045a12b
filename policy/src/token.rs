//! JWT verification: header hygiene, key selection by `kid` / pinned algorithm, signature (via the
//! `jsonwebtoken` crate's crypto), then claims with an injected clock.
//!
//! `jsonwebtoken::decode` is deliberately not used: it reads the system clock, does not check
//! `nbf` by default, does not make `iss`/`aud` required when configured, accepts an `iss` array
//! that merely overlaps, ignores `crit`, `jku`, `x5u`, `jwk` and `x5c`, keeps the last of duplicate
//! claims and has no size limit. Every one of those is closed here.

use crate::field::Field;
use crate::keys::{Key, KeySet};
use crate::strict_json::{parse_object, StrictJsonError};
use crate::{b64url_decode, Denial, ErrorCode};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};
use std::str::FromStr;

/// Largest accepted token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Latest accepted NumericDate (9999-12-31T23:59:59Z); larger values are refused as malformed.
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// Header members that would make the verifier fetch or trust key material named by the token,
/// or demand extensions: a token carrying any of them is refused.
const FORBIDDEN_HEADERS: &[&str] = &["crit", "jku", "x5u", "jwk", "x5c", "b64"];

/// What a token must satisfy beyond its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// When set, `iss` is required and must equal it exactly.
    pub issuer: Option<String>,
    /// When set, `aud` is required and must contain it.
    pub audience: Option<String>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            leeway_s: 30,
            issuer: None,
            audience: None,
        }
    }
}

/// Why a token was refused. Every variant maps to `auth.token_invalid` except the time ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Over [`MAX_TOKEN_BYTES`].
    #[error("token is larger than 8 KiB")]
    Oversized,
    /// Not three base64url segments, or a segment is not a JSON object.
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    /// `alg: none` in any casing.
    #[error("unsigned tokens are refused")]
    AlgNone,
    /// The `alg` is unknown or not the one the key is pinned to.
    #[error("algorithm is not allowed for this key")]
    AlgNotAllowed,
    /// A header member that is never honoured.
    #[error("header member {0} is not accepted")]
    ForbiddenHeader(&'static str),
    /// The `kid` names no known key (the caller may refresh a JWKS once and retry).
    #[error("unknown key id")]
    UnknownKid(String),
    /// Signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// A header or claims member appears twice.
    #[error("duplicate member in token")]
    Duplicate,
    /// A claim is missing or has the wrong type or range.
    #[error("claim {0} is missing or malformed")]
    Claim(&'static str),
    /// `exp` (+ leeway) is past.
    #[error("token has expired")]
    Expired,
    /// `nbf` (- leeway) is in the future.
    #[error("token is not yet valid")]
    NotYetValid,
    /// `iss` differs from the configured issuer.
    #[error("issuer is not accepted")]
    Issuer,
    /// `aud` does not contain the configured audience.
    #[error("audience is not accepted")]
    Audience,
}

impl TokenError {
    /// The wire code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Expired | TokenError::NotYetValid => ErrorCode::TokenExpired,
            _ => ErrorCode::TokenInvalid,
        }
    }
}

impl From<TokenError> for Denial {
    fn from(e: TokenError) -> Self {
        Denial::with_message(e.code(), e.to_string())
    }
}

/// A token whose signature, times, issuer and audience were checked.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedJwt {
    /// The pinned algorithm that verified it.
    pub alg: Algorithm,
    /// The `kid` of the key, if the token named one.
    pub kid: Option<String>,
    /// Every claim.
    pub claims: Map<String, Value>,
    /// `exp`, seconds since the epoch.
    pub exp: u64,
}

/// The claims railgate acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// Subject: becomes `user_id` / `actor_id`.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Tenants the token grants (`tenant_id` and/or `tenants`).
    pub tenants: Vec<String>,
    /// `env` claim, if any.
    pub env: Option<String>,
    /// Every claim.
    pub all: Map<String, Value>,
    /// The string claims named like a context field (`mode`, `project_id`, ...), read out of
    /// `all` once: a verified token is kept and its fields read on every request.
    fields: [Option<String>; Field::ALL.len()],
    /// `nbf`, read out of `all` once (for the same reason).
    nbf: Option<u64>,
}

impl Claims {
    /// Claims from their parts; the context fields are read out of `all`.
    pub fn new(
        sub: String,
        exp: u64,
        tenants: Vec<String>,
        env: Option<String>,
        all: Map<String, Value>,
    ) -> Claims {
        let fields =
            Field::ALL.map(|f| all.get(f.key()).and_then(Value::as_str).map(str::to_owned));
        let nbf = numeric_date(&all, "nbf").ok().flatten();
        Claims {
            sub,
            exp,
            tenants,
            env,
            all,
            fields,
            nbf,
        }
    }

    /// The string claim named like context field `f` ([`Field::key`]), if any.
    pub fn field(&self, f: Field) -> Option<&str> {
        self.fields[f.index()].as_deref()
    }
}

/// Verifies `raw` against `keys` at time `now` (seconds since the epoch) and extracts [`Claims`].
pub fn verify(raw: &str, keys: &KeySet, now: u64, rules: &Rules) -> Result<Claims, TokenError> {
    let jwt = verify_signed(raw, keys, now, rules)?;
    claims_of(jwt)
}

/// Checks structure, header, signature, `exp`, `nbf`, `iss` and `aud`; does not require `sub`.
pub fn verify_signed(
    raw: &str,
    keys: &KeySet,
    now: u64,
    rules: &Rules,
) -> Result<VerifiedJwt, TokenError> {
    if raw.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Oversized);
    }
    let mut parts = raw.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("expected three segments"));
    };
    if h64.is_empty() || p64.is_empty() || s64.is_empty() {
        return Err(TokenError::Malformed("empty segment"));
    }
    let header = decode_object(h64)?;
    let (alg, kid) = check_header(&header)?;
    let key = select_key(
        keys,
        alg,
        kid.as_deref(),
        &raw[..h64.len() + 1 + p64.len()],
        s64,
    )?;
    let claims = decode_object(p64)?;
    let exp = check_times(&claims, now, rules.leeway_s)?;
    check_issuer_audience(&claims, rules)?;
    Ok(VerifiedJwt {
        alg: key.alg,
        kid,
        claims,
        exp,
    })
}

/// Whether verified claims are still in force at `now`: the `exp` and `nbf` rule of [`verify`],
/// for a token verified before and remembered.
pub fn times_valid(claims: &Claims, now: u64, leeway: u64) -> Result<(), TokenError> {
    within(claims.exp, claims.nbf, now, leeway)
}

fn decode_object(segment: &str) -> Result<Map<String, Value>, TokenError> {
    let bytes = b64url_decode(segment).ok_or(TokenError::Malformed("bad base64url"))?;
    parse_object(&bytes).map_err(|e| match e {
        StrictJsonError::DuplicateMember => TokenError::Duplicate,
        StrictJsonError::NotAnObject => TokenError::Malformed("segment is not a JSON object"),
    })
}

fn check_header(header: &Map<String, Value>) -> Result<(Algorithm, Option<String>), TokenError> {
    for name in FORBIDDEN_HEADERS {
        if header.contains_key(*name) {
            return Err(TokenError::ForbiddenHeader(name));
        }
    }
    let alg = match header.get("alg") {
        Some(Value::String(s)) if s.eq_ignore_ascii_case("none") => {
            return Err(TokenError::AlgNone)
        }
        Some(Value::String(s)) => Algorithm::from_str(s).map_err(|_| TokenError::AlgNotAllowed)?,
        _ => return Err(TokenError::Malformed("alg must be a string")),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(TokenError::Malformed("kid must be a string")),
    };
    Ok((alg, kid))
}

/// With a `kid`: exactly that key, and its pinned algorithm must be the token's. Without: every
/// key pinned to the token's algorithm is tried (a handful at most).
fn select_key<'k>(
    keys: &'k KeySet,
    alg: Algorithm,
    kid: Option<&str>,
    message: &str,
    signature: &str,
) -> Result<&'k Key, TokenError> {
    let sig_ok = |key: &Key| {
        key.alg == alg
            && jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key.decoding, key.alg)
                .unwrap_or(false)
    };
    if b64url_decode(signature).is_none() {
        return Err(TokenError::Malformed("bad base64url"));
    }
    match kid {
        Some(kid) => {
            let key = keys
                .by_kid(kid)
                .ok_or_else(|| TokenError::UnknownKid(kid.to_owned()))?;
            if key.alg != alg {
                return Err(TokenError::AlgNotAllowed);
            }
            if sig_ok(key) {
                Ok(key)
            } else {
                Err(TokenError::BadSignature)
            }
        }
        None => {
            let mut candidates = keys.by_alg(alg).peekable();
            if candidates.peek().is_none() {
                return Err(TokenError::AlgNotAllowed);
            }
            candidates
                .find(|k| sig_ok(k))
                .ok_or(TokenError::BadSignature)
        }
    }
}

/// A NumericDate claim: a JSON number in `0..=MAX_NUMERIC_DATE` (fractions truncated).
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, TokenError> {
    let Some(v) = claims.get(name) else {
        return Ok(None);
    };
    let Value::Number(n) = v else {
        return Err(TokenError::Claim(name));
    };
    let secs = if let Some(u) = n.as_u64() {
        u
    } else {
        match n.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 && f <= MAX_NUMERIC_DATE as f64 => f as u64,
            _ => return Err(TokenError::Claim(name)),
        }
    };
    if secs > MAX_NUMERIC_DATE {
        return Err(TokenError::Claim(name));
    }
    Ok(Some(secs))
}

fn check_times(claims: &Map<String, Value>, now: u64, leeway: u64) -> Result<u64, TokenError> {
    let exp = numeric_date(claims, "exp")?.ok_or(TokenError::Claim("exp"))?;
    let nbf = numeric_date(claims, "nbf")?;
    within(exp, nbf, now, leeway)?;
    Ok(exp)
}

/// `now` is before `exp` and not before `nbf`, each with `leeway`.
fn within(exp: u64, nbf: Option<u64>, now: u64, leeway: u64) -> Result<(), TokenError> {
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if nbf.is_some_and(|nbf| now.saturating_add(leeway) < nbf) {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

fn check_issuer_audience(claims: &Map<String, Value>, rules: &Rules) -> Result<(), TokenError> {
    if let Some(want) = &rules.issuer {
        match claims.get("iss") {
            Some(Value::String(iss)) if iss == want => {}
            _ => return Err(TokenError::Issuer),
        }
    }
    if let Some(want) = &rules.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(aud)) => aud == want,
            Some(Value::Array(list)) => {
                list.iter().all(Value::is_string) && list.iter().any(|a| a.as_str() == Some(want))
            }
            _ => false,
        };
        if !ok {
            return Err(TokenError::Audience);
        }
    }
    Ok(())
}

fn claims_of(jwt: VerifiedJwt) -> Result<Claims, TokenError> {
    let all = jwt.claims;
    let sub = match all.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(TokenError::Claim("sub")),
    };
    let mut tenants = Vec::new();
    match all.get("tenant_id") {
        None => {}
        Some(Value::String(t)) => tenants.push(t.clone()),
        Some(_) => return Err(TokenError::Claim("tenant_id")),
    }
    match all.get("tenants") {
        None => {}
        Some(Value::Array(list)) => {
            for t in list {
                let t = t.as_str().ok_or(TokenError::Claim("tenants"))?;
                tenants.push(t.to_owned());
            }
        }
        Some(_) => return Err(TokenError::Claim("tenants")),
    }
    let env = match all.get("env") {
        None => None,
        Some(Value::String(e)) => Some(e.clone()),
        Some(_) => return Err(TokenError::Claim("env")),
    };
    Ok(Claims::new(sub, jwt.exp, tenants, env, all))
}
