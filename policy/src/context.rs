//! One `RequestContext` from every place a field may arrive: headers, token claims, a ticket and
//! the WebSocket hello. Checks run in the contract's order: field syntax and presence (400), then
//! env and tenant membership and agreement (403).

use crate::field::{traceparent_trace_id, valid_value, Field};
use crate::ticket::TicketClaims;
use crate::token::Claims;
use crate::{Denial, ErrorCode};
use serde_json::{Map, Value};

/// What was sent for one header, as far as the context needs to know: nothing, one value, or
/// more than one (a repeated context header is refused whatever its values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values<'a> {
    /// Not sent.
    None,
    /// Sent once, with this value.
    One(&'a [u8]),
    /// Sent more than once.
    Several,
}

impl<'a> Values<'a> {
    /// Tells the values of a header from an iterator over them (reading at most two).
    pub fn of(mut values: impl Iterator<Item = &'a [u8]>) -> Values<'a> {
        match (values.next(), values.next()) {
            (None, _) => Values::None,
            (Some(one), None) => Values::One(one),
            (Some(_), Some(_)) => Values::Several,
        }
    }
}

/// Read access to request headers (names given in lower case).
pub trait HeaderSource {
    /// What was sent for `name`.
    fn values(&self, name: &str) -> Values<'_>;

    /// What was sent for a context field's header ([`Field::header`]); a source that can find a
    /// known field faster than by its name's text overrides this.
    fn field_values(&self, field: Field) -> Values<'_> {
        self.values(field.header())
    }
}

/// Name/value pairs, as tests and simple callers hold them.
impl<N: AsRef<str>, V: AsRef<[u8]>> HeaderSource for Vec<(N, V)> {
    fn values(&self, name: &str) -> Values<'_> {
        Values::of(
            self.iter()
                .filter(|(n, _)| n.as_ref().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_ref()),
        )
    }
}

/// The first WebSocket message: `{"type":"hello","context":{...},"last_event_id":..,"ticket":..}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hello {
    /// The `context` object.
    pub context: Map<String, Value>,
    /// Resume cursor.
    pub last_event_id: Option<String>,
    /// A ticket, for clients that cannot send headers.
    pub ticket: Option<String>,
}

/// Parses a hello. Anything else as the first message is `request.header_invalid`.
pub fn parse_hello(bytes: &[u8]) -> Result<Hello, Denial> {
    let bad = |why: &'static str| Denial::with_message(ErrorCode::HeaderInvalid, why);
    let map = crate::strict_json::parse_object(bytes)
        .map_err(|_| bad("first message must be a JSON hello object"))?;
    if map.get("type").and_then(Value::as_str) != Some("hello") {
        return Err(bad("first message must have \"type\":\"hello\""));
    }
    let context = match map.get("context") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(c)) => c.clone(),
        Some(_) => return Err(bad("hello context must be an object")),
    };
    let opt_str = |key: &str| match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad("hello last_event_id and ticket must be strings")),
    };
    Ok(Hello {
        context,
        last_event_id: opt_str("last_event_id")?,
        ticket: opt_str("ticket")?,
    })
}

/// Deployment-wide and per-route settings the context is checked against.
#[derive(Debug, Clone, Copy)]
pub struct ContextPolicy<'a> {
    /// The gateway's `ENV`.
    pub gateway_env: &'a str,
    /// Allowed values of `mode`.
    pub allowed_modes: &'a [String],
    /// Fields the route requires.
    pub require: &'a [Field],
}

/// Everything the request presented. At least one of `token` and `ticket` must be verified.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    /// Request headers.
    pub headers: &'a dyn HeaderSource,
    /// Verified JWT claims.
    pub token: Option<&'a Claims>,
    /// Verified ticket claims.
    pub ticket: Option<&'a TicketClaims>,
    /// WebSocket hello.
    pub hello: Option<&'a Hello>,
    /// The owned resource's id from the route's path (`{thread_id}`, `{canvas_id}`, …), if any
    /// (a ticket must be bound to it).
    pub path_thread: Option<&'a str>,
    /// Path variables named like a context field (`{canvas_id}`, `{panel_id}`, …): one more
    /// source of that field, which must agree with the others.
    pub path_fields: &'a [(Field, &'a str)],
    /// A fresh random 32-hex id, used when neither `X-Request-Id` nor `traceparent` gives one.
    pub fallback_trace_id: &'a str,
}

/// The verified context of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    values: [Option<String>; 10],
    /// The credential's subject.
    pub user_id: String,
    /// `X-Request-Id`, else the `traceparent` trace-id, else a fresh id.
    pub trace_id: String,
    /// When the credential ends (token `exp`, ticket session `sx`; the earlier if both).
    pub expires_at: u64,
    /// The ticket id, when a ticket was presented (for single use).
    pub ticket_id: Option<String>,
}

impl RequestContext {
    /// A field's value.
    pub fn get(&self, field: Field) -> Option<&str> {
        self.values[field.index()].as_deref()
    }

    /// The tenant (always present once built).
    pub fn tenant_id(&self) -> &str {
        self.get(Field::Tenant).unwrap_or_default()
    }

    /// The env (always present once built).
    pub fn env(&self) -> &str {
        self.get(Field::Env).unwrap_or_default()
    }

    /// Every present field, in [`Field::ALL`] order.
    pub fn fields(&self) -> impl Iterator<Item = (Field, &str)> {
        Field::ALL
            .into_iter()
            .filter_map(|f| self.get(f).map(|v| (f, v)))
    }

    /// Builds a context directly (for tests and internal callers that already verified it).
    pub fn from_parts(fields: &[(Field, &str)], user_id: &str, trace_id: &str) -> Self {
        let mut values: [Option<String>; 10] = Default::default();
        for (f, v) in fields {
            values[f.index()] = Some((*v).to_owned());
        }
        RequestContext {
            values,
            user_id: user_id.to_owned(),
            trace_id: trace_id.to_owned(),
            expires_at: u64::MAX,
            ticket_id: None,
        }
    }
}

/// What the sources say of one field, read in precedence order (header, path, hello, ticket,
/// token): the first value, and whether any later one differs from it.
#[derive(Clone, Copy, Default)]
struct Candidates<'a> {
    first: Option<&'a str>,
    differs: bool,
}

impl<'a> Candidates<'a> {
    fn add(&mut self, v: &'a str) {
        match self.first {
            None => self.first = Some(v),
            Some(first) => self.differs |= first != v,
        }
    }
}

/// The syntax rule for context headers alone (each at most once, each a valid value), for a
/// caller that must refuse malformed headers before the other sources are known (a WebSocket
/// upgrade whose hello is still to come). [`build`] applies the same rule.
pub fn check_headers(headers: &dyn HeaderSource) -> Result<(), Denial> {
    for f in Field::ALL {
        field_header_value(headers, f)?;
    }
    Ok(())
}

/// Builds and checks the context. The first failing check, in contract order, answers.
pub fn build(policy: &ContextPolicy<'_>, src: &Sources<'_>) -> Result<RequestContext, Denial> {
    if src.token.is_none() && src.ticket.is_none() {
        return Err(Denial::new(ErrorCode::TokenMissing));
    }
    let candidates = collect(src)?;
    let mut values: [Option<String>; 10] = candidates.map(|c| c.first.map(str::to_owned));
    for f in Field::ALL {
        if values[f.index()].is_none() && policy.require.contains(&f) {
            return Err(Denial::new(f.missing_code()));
        }
    }
    if let Some(mode) = &values[Field::Mode.index()] {
        if !policy.allowed_modes.iter().any(|m| m == mode) {
            return Err(Denial::new(ErrorCode::ModeInvalid));
        }
    }
    let tenant = candidates[Field::Tenant.index()]
        .first
        .ok_or(Denial::new(ErrorCode::TenantMissing))?;
    check_env(policy, src, candidates[Field::Env.index()])?;
    values[Field::Env.index()] = Some(policy.gateway_env.to_owned());
    if let Some(token) = src.token {
        if !token.tenants.iter().any(|t| t == tenant) {
            return Err(Denial::new(ErrorCode::TenantMismatch));
        }
    }
    check_agreement(&candidates)?;
    let user_id = user_id(src)?;
    let trace_id = trace_id(src)?;
    if let (Some(ticket), Some(thread)) = (src.ticket, src.path_thread) {
        if ticket.thread_id != thread {
            return Err(mismatch("ticket is bound to another thread"));
        }
    }
    let expires_at = match (src.token, src.ticket) {
        (Some(t), Some(k)) => t.exp.min(k.sx),
        (Some(t), None) => t.exp,
        (None, Some(k)) => k.sx,
        (None, None) => 0,
    };
    Ok(RequestContext {
        values,
        user_id,
        trace_id,
        expires_at,
        ticket_id: src.ticket.map(|t| t.tid.clone()),
    })
}

fn mismatch(why: &'static str) -> Denial {
    Denial::with_message(ErrorCode::ContextMismatch, why)
}

fn invalid(field: &str, why: &str) -> Denial {
    Denial::with_message(ErrorCode::HeaderInvalid, format!("{field} {why}"))
}

/// A single header value, syntax-checked; a repeated header is invalid.
fn header_value(headers: &dyn HeaderSource, name: &str) -> Result<Option<String>, Denial> {
    one_value(headers.values(name), name)
}

/// A context field's header, syntax-checked.
fn field_header_value(headers: &dyn HeaderSource, f: Field) -> Result<Option<String>, Denial> {
    one_value(headers.field_values(f), f.header())
}

fn one_value(values: Values<'_>, name: &str) -> Result<Option<String>, Denial> {
    Ok(one_str(values, name)?.map(str::to_owned))
}

/// A single valid value (ASCII, so text as it is), or why not.
fn one_str<'a>(values: Values<'a>, name: &str) -> Result<Option<&'a str>, Denial> {
    match values {
        Values::None => Ok(None),
        Values::One(one) if valid_value(one) => Ok(Some(
            std::str::from_utf8(one).map_err(|_| invalid(name, "is malformed"))?,
        )),
        Values::One(_) => Err(invalid(name, "is malformed")),
        Values::Several => Err(invalid(name, "was sent more than once")),
    }
}

/// A hello context value, syntax-checked.
fn hello_value(hello: Option<&Hello>, key: &str) -> Result<Option<String>, Denial> {
    Ok(hello_str(hello, key)?.map(str::to_owned))
}

fn hello_str<'a>(hello: Option<&'a Hello>, key: &str) -> Result<Option<&'a str>, Denial> {
    match hello.and_then(|h| h.context.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if valid_value(s.as_bytes()) => Ok(Some(s)),
        Some(_) => Err(invalid(key, "in hello is malformed")),
    }
}

/// A context value a credential carries: the same syntax rule as a header, or the credential is
/// invalid (`code`).
fn credential_value<'a>(v: &'a str, key: &str, code: ErrorCode) -> Result<&'a str, Denial> {
    if valid_value(v.as_bytes()) {
        Ok(v)
    } else {
        Err(Denial::with_message(
            code,
            format!("{key} in the credential is malformed"),
        ))
    }
}

fn ticket_value(ticket: &TicketClaims, field: Field) -> Option<&str> {
    match field {
        Field::Tenant => Some(&ticket.tenant_id),
        Field::Env => Some(&ticket.env),
        Field::Mode => ticket.mode.as_deref(),
        Field::Project => ticket.project_id.as_deref(),
        Field::App => ticket.app_id.as_deref(),
        Field::Surface => ticket.surface_id.as_deref(),
        _ => None,
    }
}

fn collect<'a>(src: &Sources<'a>) -> Result<[Candidates<'a>; 10], Denial> {
    let mut out = [Candidates::default(); 10];
    for f in Field::ALL {
        let slot = &mut out[f.index()];
        if let Some(v) = one_str(src.headers.field_values(f), f.header())? {
            slot.add(v);
        }
        for (_, v) in src.path_fields.iter().filter(|(pf, _)| *pf == f) {
            if !valid_value(v.as_bytes()) {
                return Err(Denial::with_message(
                    ErrorCode::PathInvalid,
                    format!("{} in the path is malformed", f.key()),
                ));
            }
            slot.add(v);
        }
        if let Some(v) = hello_str(src.hello, f.key())? {
            slot.add(v);
        }
        if let Some(v) = src.ticket.and_then(|t| ticket_value(t, f)) {
            slot.add(credential_value(v, f.key(), ErrorCode::TicketInvalid)?);
        }
        // A token bounds the tenant and env (membership) rather than supplying them.
        if !matches!(f, Field::Tenant | Field::Env) {
            if let Some(v) = src.token.and_then(|t| t.field(f)) {
                slot.add(credential_value(v, f.key(), ErrorCode::TokenInvalid)?);
            }
        }
    }
    Ok(out)
}

/// Every env a source names (and the token's) must be the gateway's: the first sent and any
/// other that differs from it.
fn check_env(
    policy: &ContextPolicy<'_>,
    src: &Sources<'_>,
    sent: Candidates<'_>,
) -> Result<(), Denial> {
    let token_env = src.token.and_then(|t| t.env.as_deref());
    let wrong = |e: Option<&str>| e.is_some_and(|e| e != policy.gateway_env);
    if wrong(sent.first) || sent.differs || wrong(token_env) {
        return Err(Denial::new(ErrorCode::EnvMismatch));
    }
    Ok(())
}

fn check_agreement(candidates: &[Candidates<'_>; 10]) -> Result<(), Denial> {
    for f in Field::ALL {
        if candidates[f.index()].differs {
            return Err(Denial::with_message(
                ErrorCode::ContextMismatch,
                format!("{} differs between its sources", f.key()),
            ));
        }
    }
    Ok(())
}

fn user_id(src: &Sources<'_>) -> Result<String, Denial> {
    let sub = match (src.token, src.ticket) {
        (Some(t), Some(k)) if t.sub != k.sub => {
            return Err(mismatch("ticket subject differs from token"))
        }
        (Some(t), _) => credential_value(&t.sub, "sub", ErrorCode::TokenInvalid)?.to_owned(),
        (None, Some(k)) => credential_value(&k.sub, "sub", ErrorCode::TicketInvalid)?.to_owned(),
        (None, None) => return Err(Denial::new(ErrorCode::TokenMissing)),
    };
    if let Some(claimed) = hello_str(src.hello, "user_id")? {
        if claimed != sub {
            return Err(mismatch("user_id differs from the credential's subject"));
        }
    }
    Ok(sub)
}

fn trace_id(src: &Sources<'_>) -> Result<String, Denial> {
    let header = header_value(src.headers, "x-request-id")?;
    let hello = hello_value(src.hello, "request_id")?;
    match (header, hello) {
        (Some(h), Some(k)) if h != k => Err(mismatch("request_id differs between its sources")),
        (Some(id), _) | (None, Some(id)) => Ok(id),
        (None, None) => {
            let from_parent = match src.headers.values("traceparent") {
                Values::One(one) => traceparent_trace_id(one),
                _ => None,
            };
            Ok(from_parent.unwrap_or(src.fallback_trace_id).to_owned())
        }
    }
}
