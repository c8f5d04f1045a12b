//! The admission phases every rail runs, in the contract's order:
//! route → credentials (401) → context (400, then 403) → ownership (404 / 403).
//! The first failure answers.

use crate::app::{now, Gateway};
use crate::auth::{bearer, Presented, Verified};
use crate::config::route::Captures;
use crate::config::Route;
use crate::mint::random_hex_id;
use http::HeaderMap;
use railgate_policy::context::HeaderSource;
use railgate_policy::field::{traceparent_trace_id, valid_value};
use railgate_policy::thread::check_access;
use railgate_policy::{
    build_context, ContextPolicy, Denial, ErrorCode, Hello, RequestContext, Sources,
};

/// `http::HeaderMap` seen by the policy crate.
pub struct Headers<'a>(pub &'a HeaderMap);

impl HeaderSource for Headers<'_> {
    fn values(&self, name: &str) -> Vec<&[u8]> {
        self.0.get_all(name).iter().map(|v| v.as_bytes()).collect()
    }
}

/// The trace id before the context is verified (used by early rejections): a well-formed single
/// `X-Request-Id`, else a valid `traceparent`'s trace-id, else a fresh random id.
pub fn early_trace_id(headers: &HeaderMap) -> String {
    let mut ids = headers.get_all("x-request-id").iter();
    if let (Some(one), None) = (ids.next(), ids.next()) {
        if valid_value(one.as_bytes()) {
            return String::from_utf8_lossy(one.as_bytes()).into_owned();
        }
    }
    let mut parents = headers.get_all("traceparent").iter();
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

/// What admission produced.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The verified context.
    pub ctx: RequestContext,
    /// The verified credentials.
    pub verified: Verified,
    /// The route's thread, if it has one.
    pub thread_id: Option<String>,
}

/// Runs credentials, context and ownership for one request on `route`.
pub async fn admit(
    gw: &Gateway,
    route: &Route,
    caps: &Captures,
    headers: &HeaderMap,
    query: Option<&str>,
    hello: Option<&Hello>,
    trace_id: &str,
) -> Result<Admitted, Denial> {
    let now = now();
    let presented = Presented {
        bearer: bearer(headers)?,
        ticket: query_ticket(query).or_else(|| hello.and_then(|h| h.ticket.clone())),
        grant: if route.kind == crate::config::RouteKind::Sse {
            cookie(headers, GRANT_COOKIE)
        } else {
            None
        },
    };
    let verified = gw
        .auth
        .verify(&presented, route.auth_jwt, route.auth_ticket, now)
        .await?;
    let thread_id = route.thread_id(caps).map(str::to_owned);
    let policy = ContextPolicy {
        gateway_env: &gw.config.env,
        allowed_modes: &gw.config.allowed_modes,
        require: &route.require,
    };
    // Scoped: `Sources` holds a `&dyn HeaderSource`, which must not live across an await.
    let ctx = {
        let headers_src = Headers(headers);
        let sources = Sources {
            headers: &headers_src,
            token: verified.token.as_ref(),
            ticket: verified.ticket.as_ref(),
            hello,
            path_thread: thread_id.as_deref(),
            fallback_trace_id: trace_id,
        };
        build_context(&policy, &sources)?
    };
    if let Some(thread) = &thread_id {
        let record = gw.registry.lookup(thread).await?;
        check_access(&ctx, record.as_ref(), route.hide_foreign_threads)?;
    }
    if let Some(t) = verified
        .ticket
        .as_ref()
        .filter(|_| !verified.ticket_resumed)
    {
        gw.auth.book.consume(&t.tid, t.exp, now)?;
    }
    Ok(Admitted {
        ctx,
        verified,
        thread_id,
    })
}

/// Whether a denial is a credential or context rejection (counted in `auth_rejections_total`).
pub fn is_auth_rejection(code: ErrorCode) -> bool {
    let s = code.as_str();
    s.starts_with("auth.") || s == "request.header_invalid"
}
