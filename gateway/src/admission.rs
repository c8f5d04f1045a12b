//! Admission: what every request passes before a rail serves it, in the contract's order
//! (first failure answers): credentials (401) → context (400, then 403) → ownership (404 / 403).
//! Each phase is one function below; [`admit`] runs them all, and [`precheck`] runs the ones a
//! WebSocket upgrade can already fail before its hello arrives. A first-use ticket is spent by
//! [`spend_ticket`] once the rail's own checks passed too (an SSE cursor, a hello's cursor), so a
//! request refused for any reason leaves its ticket usable.
//!
//! What a route accepts and demands is an [`Admission`]; what the caller sent is a [`Caller`].

use crate::app::{Gateway, Live};
use crate::auth::{bearer, Credentials, Verified};
use crate::clock;
use crate::config::route::Captures;
use crate::config::{Accepts, Route};
use crate::header_names::{TRACEPARENT, X_REQUEST_ID};
use crate::mint::random_hex_id;
use http::{HeaderMap, HeaderName};
use railgate_policy::context::{check_headers, HeaderSource, Values};
use railgate_policy::field::{traceparent_trace_id, valid_value};
use railgate_policy::thread::check_access;
use railgate_policy::{
    build_context, ContextPolicy, Denial, ErrorCode, Field, Hello, RequestContext, Sources,
};

/// What a route accepts and demands of a caller.
#[derive(Debug, Clone)]
pub struct Admission<'a> {
    /// Credentials accepted.
    pub accepts: Accepts,
    /// Context fields that must be present.
    pub require: &'a [Field],
    /// The resource the request opens (its kind and id), whose owner must be the caller's
    /// tenant and env.
    pub resource: Option<(&'a str, &'a str)>,
    /// Path variables named like context fields (`{canvas_id}`, …): a source of those fields.
    pub path_fields: Vec<(Field, &'a str)>,
    /// Answer 404 rather than 403 for a thread of another tenant.
    pub hide_foreign: bool,
    /// The route's name, which a tenant's flags may switch off.
    pub route: Option<&'a str>,
}

impl<'a> Admission<'a> {
    /// What `route` demands for a request whose path gave `caps`.
    pub fn for_route(route: &'a Route, caps: &'a Captures) -> Admission<'a> {
        Admission {
            accepts: route.accepts,
            require: &route.require,
            resource: route
                .resource_id(caps)
                .map(|id| (route.resource_kind.as_str(), id)),
            path_fields: route.path_fields(caps),
            hide_foreign: route.hide_foreign_threads,
            route: Some(&route.name),
        }
    }
}

/// What the caller sent: its request head and, on a WebSocket, its hello.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Request query string.
    pub query: Option<&'a str>,
    /// The WebSocket hello, once received.
    pub hello: Option<&'a Hello>,
    /// The trace id chosen before the context was known.
    pub trace_id: &'a str,
}

/// What admission produced.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The verified context (shared with the request's outcome, for its log line).
    pub ctx: std::sync::Arc<RequestContext>,
    /// The verified credentials.
    pub verified: Verified,
    /// The id of the resource the request opens (a thread, a canvas, …), if any.
    pub thread_id: Option<String>,
}

/// Where a request goes: the configuration in force, its route, what the route's pattern
/// captured, its admission and what the upstream learns of the peer.
pub type At<'a> = (
    &'a Live,
    &'a std::sync::Arc<crate::config::Route>,
    &'a crate::config::route::Captures,
    &'a Admission<'a>,
    &'a crate::proxy::forwarded::Forwarding,
);

/// Runs every admission phase for one request. The ticket is not spent yet: see
/// [`spend_ticket`]. `live` is the configuration in force for the whole request.
pub async fn admit(
    live: &Live,
    adm: &Admission<'_>,
    caller: &Caller<'_>,
) -> Result<Admitted, Denial> {
    let now = clock::now();
    let verified = credentials(live, adm, caller, now).await?;
    let ctx = context(live, adm, adm.require, caller, &verified)?;
    switched_on(live, adm.route, ctx.tenant_id())?;
    if let Some((kind, id)) = adm.resource {
        ownership(live, &ctx, (kind, id), adm.route, adm.hide_foreign).await?;
    }
    Ok(Admitted {
        ctx: std::sync::Arc::new(ctx),
        verified,
        thread_id: adm.resource.map(|(_, id)| id.to_owned()),
    })
}

/// The phases a WebSocket upgrade can fail before its hello: credentials if it carries any, the
/// context headers' syntax, and — when the upgrade already names a tenant (header or ticket) —
/// context and ownership. Required fields may still come in the hello; nothing is spent.
pub async fn precheck(
    gw: &Gateway,
    adm: &Admission<'_>,
    caller: &Caller<'_>,
) -> Result<(), Denial> {
    let presented = presented(adm, caller)?;
    let live = gw.live();
    let verified = match presented.bearer.is_some() || presented.ticket.is_some() {
        true => Some(
            live.auth
                .verify(&presented, adm.accepts, clock::now())
                .await?,
        ),
        false => None,
    };
    let headers = FieldHeaders::scan(caller.headers);
    check_headers(&headers)?;
    let Some(verified) = verified else {
        return Ok(());
    };
    let names_tenant =
        verified.ticket.is_some() || headers.field_values(Field::Tenant) != Values::None;
    if !names_tenant {
        return Ok(());
    }
    let ctx = context(&live, adm, &[], caller, &verified)?;
    switched_on(&live, adm.route, ctx.tenant_id())?;
    match adm.resource {
        Some(resource) => ownership(&live, &ctx, resource, adm.route, adm.hide_foreign).await,
        None => Ok(()),
    }
}

/// After the tenant is verified: a route its flags switch off is `403 feature.disabled`.
fn switched_on(live: &Live, route: Option<&str>, tenant: &str) -> Result<(), Denial> {
    let flags = live.config.tenants.get(tenant);
    switched_off(route, flags.map(|f| f.disabled_routes.as_slice()), "tenant")
}

/// `403 feature.disabled` when `route` is among `disabled` (a tenant's or a resource's flags).
fn switched_off(
    route: Option<&str>,
    disabled: Option<&[String]>,
    whose: &str,
) -> Result<(), Denial> {
    match (route, disabled) {
        (Some(r), Some(off)) if off.iter().any(|d| d == r) => Err(Denial::with_message(
            ErrorCode::FeatureDisabled,
            format!("route {r} is switched off for this {whose}"),
        )),
        _ => Ok(()),
    }
}

/// Phase 1: the credentials the route accepts, verified (401).
pub async fn credentials(
    live: &Live,
    adm: &Admission<'_>,
    caller: &Caller<'_>,
    now: u64,
) -> Result<Verified, Denial> {
    let presented = presented(adm, caller)?;
    live.auth.verify(&presented, adm.accepts, now).await
}

fn presented(adm: &Admission<'_>, caller: &Caller<'_>) -> Result<Credentials, Denial> {
    Ok(Credentials {
        bearer: bearer(caller.headers)?,
        ticket: query_ticket(caller.query).or_else(|| caller.hello.and_then(|h| h.ticket.clone())),
        grant: adm
            .accepts
            .resume_grant
            .then(|| cookie(caller.headers, GRANT_COOKIE))
            .flatten(),
    })
}

/// Phase 2: one context from headers, token, ticket and hello (400, then 403).
pub fn context(
    live: &Live,
    adm: &Admission<'_>,
    require: &[Field],
    caller: &Caller<'_>,
    verified: &Verified,
) -> Result<RequestContext, Denial> {
    let policy = ContextPolicy {
        gateway_env: &live.config.env,
        allowed_modes: &live.config.allowed_modes,
        require,
    };
    let headers = FieldHeaders::scan(caller.headers);
    let sources = Sources {
        headers: &headers,
        token: verified.token.as_deref(),
        ticket: verified.ticket.as_ref(),
        hello: caller.hello,
        path_thread: adm.resource.map(|(_, id)| id),
        path_fields: &adm.path_fields,
        fallback_trace_id: caller.trace_id,
    };
    build_context(&policy, &sources)
}

/// Phase 3: the resource (`kind`, `id`) belongs to the context's tenant and env (404 / 403),
/// and its record does not switch `route` off (403 `feature.disabled`).
pub async fn ownership(
    live: &Live,
    ctx: &RequestContext,
    (kind, id): (&str, &str),
    route: Option<&str>,
    hide_foreign: bool,
) -> Result<(), Denial> {
    let record = live.registry.lookup(kind, id).await?;
    check_access(ctx, record.as_deref(), hide_foreign).map_err(|d| match (kind, d.code) {
        ("thread", _) => d,
        (_, ErrorCode::ThreadNotFound) => Denial::with_message(d.code, format!("no {kind} {id}")),
        _ => Denial::with_message(d.code, format!("{kind} {id} belongs to another tenant")),
    })?;
    let disabled = record.as_ref().map(|r| r.disabled_routes.as_slice());
    switched_off(route, disabled, kind)
}

/// The last phase, after the rail's own checks: a first-use ticket is marked used (a second
/// request racing with it gets `auth.ticket_replayed` here).
pub async fn spend_ticket(gw: &Gateway, admitted: &Admitted) -> Result<(), Denial> {
    let verified = &admitted.verified;
    match verified.ticket.as_ref() {
        Some(t) if !verified.ticket_resumed => {
            Box::pin(gw.live().auth.book.spend(t, clock::now())).await
        }
        _ => Ok(()),
    }
}

/// `http::HeaderMap` seen by the policy crate, a header looked up by its name.
struct Headers<'a>(&'a HeaderMap);

impl HeaderSource for Headers<'_> {
    fn values(&self, name: &str) -> Values<'_> {
        // The names asked for on every request, made once (a name's text is parsed per lookup).
        match name {
            "x-request-id" => self.all(X_REQUEST_ID),
            "traceparent" => self.all(TRACEPARENT),
            _ => self.all(name),
        }
    }
}

impl Headers<'_> {
    fn all(&self, name: impl http::header::AsHeaderName) -> Values<'_> {
        Values::of(self.0.get_all(name).iter().map(|v| v.as_bytes()))
    }
}

/// Request headers with the context fields' headers found in one pass over them (rather than
/// ten lookups, each hashing a name): how admission reads a request's context headers.
struct FieldHeaders<'a> {
    all: Headers<'a>,
    fields: [Values<'a>; Field::ALL.len()],
}

impl<'a> FieldHeaders<'a> {
    fn scan(map: &'a HeaderMap) -> FieldHeaders<'a> {
        let mut fields = [Values::None; Field::ALL.len()];
        for (name, value) in map {
            let name = name.as_str();
            if !name.starts_with("x-") {
                continue;
            }
            if let Some(f) = Field::ALL.into_iter().find(|f| f.header() == name) {
                let slot = &mut fields[f.index()];
                *slot = match slot {
                    Values::None => Values::One(value.as_bytes()),
                    _ => Values::Several,
                };
            }
        }
        FieldHeaders {
            all: Headers(map),
            fields,
        }
    }
}

impl HeaderSource for FieldHeaders<'_> {
    fn values(&self, name: &str) -> Values<'_> {
        self.all.values(name)
    }

    fn field_values(&self, field: Field) -> Values<'_> {
        self.fields[field.index()]
    }
}

/// The context fields' header names, made once: looking one up by its text parses the text
/// again on every request.
static FIELD_HEADERS: std::sync::LazyLock<[HeaderName; Field::ALL.len()]> =
    std::sync::LazyLock::new(|| Field::ALL.map(|f| HeaderName::from_static(f.header())));

/// The header name of context field `field` (made once).
pub fn field_header(field: Field) -> &'static HeaderName {
    &FIELD_HEADERS[field.index()]
}

/// The trace id before the context is verified (used by early rejections): a well-formed single
/// `X-Request-Id`, else a valid `traceparent`'s trace-id, else a fresh random id.
pub fn early_trace_id(headers: &HeaderMap) -> String {
    let mut ids = headers.get_all(X_REQUEST_ID).iter();
    if let (Some(one), None) = (ids.next(), ids.next()) {
        if valid_value(one.as_bytes()) {
            return String::from_utf8_lossy(one.as_bytes()).into_owned();
        }
    }
    let mut parents = headers.get_all(TRACEPARENT).iter();
    if let (Some(one), None) = (parents.next(), parents.next()) {
        if let Some(t) = traceparent_trace_id(one.as_bytes()) {
            return t.to_owned();
        }
    }
    random_hex_id()
}

/// The `ticket` query parameter, if any.
pub fn query_ticket(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "ticket")
        .map(|(_, v)| v.into_owned())
}

/// The cookie carrying an SSE resume grant.
pub const GRANT_COOKIE: &str = "railgate_resume";

/// A cookie's value from the `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Headers as `pairs` sends them, in order (a name may repeat).
    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, http::HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn a_fields_header_is_found_in_one_pass_as_by_its_text() {
        let h = headers(&[
            ("X-Tenant-Id", "t_a"),
            ("x-tenant-id", "t_b"),
            ("X-App-Id", "app"),
        ]);
        let headers = FieldHeaders::scan(&h);
        for f in Field::ALL {
            assert_eq!(headers.field_values(f), headers.values(f.header()), "{f:?}");
        }
        assert_eq!(headers.field_values(Field::Tenant), Values::Several);
        assert_eq!(headers.field_values(Field::App), Values::One(b"app"));
        assert_eq!(headers.field_values(Field::Mode), Values::None);
    }

    #[test]
    fn one_pass_over_the_headers_finds_what_a_lookup_per_field_finds() {
        let h = headers(&[
            ("X-Tenant-Id", "t_a"),
            ("x-tenant-id", "t_b"),
            ("X-App-Id", "app"),
            ("x-panel-id", "p1"),
            ("x-env-extra", "no"),
            ("x-request-id", "r1"),
            ("host", "x"),
            ("x-mode", "lab"),
            ("x-mode", "lab"),
            ("x-mode", "lab"),
        ]);
        let (scanned, looked_up) = (FieldHeaders::scan(&h), Headers(&h));
        for f in Field::ALL {
            assert_eq!(scanned.field_values(f), looked_up.field_values(f), "{f:?}");
        }
        assert_eq!(scanned.field_values(Field::Panel), Values::One(b"p1"));
        assert_eq!(scanned.field_values(Field::Mode), Values::Several);
        assert_eq!(scanned.values("x-request-id"), Values::One(b"r1"));
    }
}
