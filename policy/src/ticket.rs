//! Single-use tickets for browsers that cannot set headers.
//!
//! Wire form: `v1.<base64url(JSON payload)>.<base64url(HMAC-SHA256(secret, "v1." + payload_b64))>`.
//! This module mints and verifies; enforcing single use (remembering `tid` until `exp`) is the
//! caller's job, because it needs shared state.

use crate::strict_json::parse_object;
use crate::{b64url_decode, b64url_encode, Denial, ErrorCode};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Default ticket lifetime.
pub const DEFAULT_TTL_S: u64 = 60;
/// Longest ticket lifetime; longer requests are capped.
pub const MAX_TTL_S: u64 = 300;
/// Longest session a ticket-opened stream may have (`sx - iat`).
pub const MAX_SESSION_S: u64 = 3600;
/// Largest accepted ticket, in bytes.
pub const MAX_TICKET_BYTES: usize = 4096;
/// How far in the future `iat` may lie (issuer clock skew).
const IAT_SKEW_S: u64 = 30;
const PREFIX: &str = "v1.";

/// The payload a ticket carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketClaims {
    /// Random ticket id; the single-use key.
    pub tid: String,
    /// Subject (user id).
    pub sub: String,
    /// Tenant.
    pub tenant_id: String,
    /// Deployment env.
    pub env: String,
    /// The one thread this ticket opens.
    pub thread_id: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issue time.
    pub iat: u64,
    /// Session expiry: how long a stream opened by this ticket may live.
    pub sx: u64,
    /// Optional context fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Optional context fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Optional context fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// Optional context fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surface_id: Option<String>,
}

/// What a caller asks a ticket for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketRequest {
    /// Subject.
    pub sub: String,
    /// Tenant.
    pub tenant_id: String,
    /// Env.
    pub env: String,
    /// Thread.
    pub thread_id: String,
    /// Requested lifetime (default 60 s, capped at 300 s, at least 1 s).
    pub ttl_s: Option<u64>,
    /// When the issuing credential expires; the session ends then, and at most 1 h after issue.
    pub session_expires_at: Option<u64>,
    /// Optional mode.
    pub mode: Option<String>,
    /// Optional project.
    pub project_id: Option<String>,
    /// Optional app.
    pub app_id: Option<String>,
    /// Optional surface.
    pub surface_id: Option<String>,
}

impl TicketRequest {
    /// Turns the request into claims issued at `now` with id `tid`, applying the caps.
    pub fn issue(self, tid: String, now: u64) -> TicketClaims {
        let ttl = self.ttl_s.unwrap_or(DEFAULT_TTL_S).clamp(1, MAX_TTL_S);
        let session_cap = now + MAX_SESSION_S;
        // Neither the ticket nor the stream it opens outlives the credential that minted it.
        let sx = self
            .session_expires_at
            .unwrap_or(session_cap)
            .min(session_cap);
        let exp = (now + ttl).min(sx);
        TicketClaims {
            tid,
            sub: self.sub,
            tenant_id: self.tenant_id,
            env: self.env,
            thread_id: self.thread_id,
            exp,
            iat: now,
            sx,
            mode: self.mode,
            project_id: self.project_id,
            app_id: self.app_id,
            surface_id: self.surface_id,
        }
    }
}

/// The HMAC keys: the current one signs and verifies, the previous one only verifies (rotation).
/// Kept as keyed MAC states so each use only clones them.
#[derive(Clone)]
pub struct TicketSecrets {
    current: HmacSha256,
    previous: Option<HmacSha256>,
}

impl std::fmt::Debug for TicketSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketSecrets(..)")
    }
}

/// Why a ticket secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ticket secret is empty")]
pub struct BlankTicketSecret;

impl TicketSecrets {
    /// Builds the key pair; blank secrets are refused (a blank previous secret is ignored).
    pub fn new(current: &[u8], previous: Option<&[u8]>) -> Result<Self, BlankTicketSecret> {
        let blank = |s: &[u8]| s.iter().all(|b| b.is_ascii_whitespace());
        if blank(current) {
            return Err(BlankTicketSecret);
        }
        let keyed = |k: &[u8]| HmacSha256::new_from_slice(k).map_err(|_| BlankTicketSecret);
        let previous = match previous.filter(|p| !blank(p)) {
            Some(p) => Some(keyed(p)?),
            None => None,
        };
        Ok(TicketSecrets {
            current: keyed(current)?,
            previous,
        })
    }
}

impl TicketSecrets {
    /// Whether `tag` is the MAC of `signed` under the current or the previous key (the
    /// comparison is constant-time).
    fn verifies(&self, signed: &str, tag: &[u8]) -> bool {
        let check = |key: &HmacSha256| {
            let mut mac = key.clone();
            mac.update(signed.as_bytes());
            mac.verify_slice(tag).is_ok()
        };
        check(&self.current) || self.previous.as_ref().is_some_and(check)
    }
}

/// Signs claims into the wire form.
pub fn encode(claims: &TicketClaims, secrets: &TicketSecrets) -> String {
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let mut out = String::with_capacity(PREFIX.len() + json.len() * 4 / 3 + 48);
    out.push_str(PREFIX);
    out.push_str(&b64url_encode(&json));
    let mut mac = secrets.current.clone();
    mac.update(out.as_bytes());
    let tag = mac.finalize().into_bytes();
    out.push('.');
    out.push_str(&b64url_encode(&tag));
    out
}

/// Verifies MAC (current, then previous secret; constant-time), format and expiry at `now`.
/// Returns the claims; the caller enforces single use by `tid`.
pub fn verify(raw: &str, secrets: &TicketSecrets, now: u64) -> Result<TicketClaims, Denial> {
    let claims = open(raw, secrets, now)?;
    if now >= claims.exp {
        return Err(Denial::with_message(
            ErrorCode::TicketInvalid,
            "ticket has expired",
        ));
    }
    Ok(claims)
}

/// Like [`verify`], but a ticket past its own `exp` is returned as long as its session (`sx`)
/// lasts: a stream it opened may resume with a grant until then. The caller decides.
pub fn open(raw: &str, secrets: &TicketSecrets, now: u64) -> Result<TicketClaims, Denial> {
    let invalid = |why: &'static str| Denial::with_message(ErrorCode::TicketInvalid, why);
    if raw.len() > MAX_TICKET_BYTES {
        return Err(invalid("ticket is too large"));
    }
    let Some(rest) = raw.strip_prefix(PREFIX) else {
        return Err(invalid("unknown ticket version"));
    };
    let Some((payload_b64, tag_b64)) = rest.split_once('.') else {
        return Err(invalid("ticket is malformed"));
    };
    let tag = b64url_decode(tag_b64).ok_or_else(|| invalid("ticket is malformed"))?;
    let signed = &raw[..PREFIX.len() + payload_b64.len()];
    if !secrets.verifies(signed, &tag) {
        return Err(invalid("ticket signature does not verify"));
    }
    let payload = b64url_decode(payload_b64).ok_or_else(|| invalid("ticket is malformed"))?;
    let map = parse_object(&payload).map_err(|_| invalid("ticket payload is malformed"))?;
    let claims: TicketClaims = serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|_| invalid("ticket payload is malformed"))?;
    check_claims(&claims, now)?;
    Ok(claims)
}

fn check_claims(c: &TicketClaims, now: u64) -> Result<(), Denial> {
    let invalid = |why: &'static str| Denial::with_message(ErrorCode::TicketInvalid, why);
    if c.tid.is_empty() || c.sub.is_empty() || c.tenant_id.is_empty() || c.thread_id.is_empty() {
        return Err(invalid("ticket payload is incomplete"));
    }
    if c.exp <= c.iat || c.exp - c.iat > MAX_TTL_S {
        return Err(invalid("ticket lifetime exceeds the cap"));
    }
    if c.sx < c.exp || c.sx - c.iat > MAX_SESSION_S {
        return Err(invalid("ticket session exceeds the cap"));
    }
    if c.iat > now + IAT_SKEW_S {
        return Err(invalid("ticket is not yet valid"));
    }
    if now >= c.sx {
        return Err(invalid("ticket has expired"));
    }
    Ok(())
}

/// Proof that a browser opened an SSE stream with a ticket, so its `EventSource` may reconnect
/// with the same (already used) ticket until the session ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The ticket it extends.
    pub tid: String,
    /// Subject.
    pub sub: String,
    /// Tenant.
    pub tenant_id: String,
    /// Env.
    pub env: String,
    /// Thread.
    pub thread_id: String,
    /// Valid until (the ticket's `sx`).
    pub exp: u64,
}

impl Grant {
    /// The grant a ticket earns.
    pub fn for_ticket(t: &TicketClaims) -> Grant {
        Grant {
            tid: t.tid.clone(),
            sub: t.sub.clone(),
            tenant_id: t.tenant_id.clone(),
            env: t.env.clone(),
            thread_id: t.thread_id.clone(),
            exp: t.sx,
        }
    }

    /// Whether this grant extends exactly this ticket.
    pub fn covers(&self, t: &TicketClaims) -> bool {
        self.tid == t.tid
            && self.sub == t.sub
            && self.tenant_id == t.tenant_id
            && self.env == t.env
            && self.thread_id == t.thread_id
    }
}

/// Grants are MAC'd under a different label than tickets, so one can never pass for the other.
const GRANT_PREFIX: &str = "g1.";

/// Signs a grant (cookie-safe text).
pub fn encode_grant(grant: &Grant, secrets: &TicketSecrets) -> String {
    let json = serde_json::to_vec(grant).unwrap_or_default();
    let mut out = String::from(GRANT_PREFIX);
    out.push_str(&b64url_encode(&json));
    let mut mac = secrets.current.clone();
    mac.update(out.as_bytes());
    let tag = mac.finalize().into_bytes();
    out.push('.');
    out.push_str(&b64url_encode(&tag));
    out
}

/// Verifies a grant's MAC (current or previous secret) and expiry.
pub fn verify_grant(raw: &str, secrets: &TicketSecrets, now: u64) -> Option<Grant> {
    if raw.len() > MAX_TICKET_BYTES {
        return None;
    }
    let rest = raw.strip_prefix(GRANT_PREFIX)?;
    let (payload_b64, tag_b64) = rest.split_once('.')?;
    let tag = b64url_decode(tag_b64)?;
    let signed = &raw[..GRANT_PREFIX.len() + payload_b64.len()];
    if !secrets.verifies(signed, &tag) {
        return None;
    }
    let grant: Grant = serde_json::from_slice(&b64url_decode(payload_b64)?).ok()?;
    (now < grant.exp).then_some(grant)
}
