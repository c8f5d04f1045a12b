//! The WebSocket rail's entry: checks before the 101, then the upgrade.
//!
//! Before the 101: the upgrade shape, `Origin` (when `allowed_origins` is set), and whatever
//! credentials and context the upgrade request carries — failures answer with their HTTP status
//! and the envelope. A client without `Authorization` may bring `?ticket=` or put the ticket in
//! its hello; then the remaining checks run on the hello (see [`super::ws_session`]).

use crate::app::{now, Gateway};
use crate::auth::{bearer, Presented};
use crate::body::{empty, Body};
use crate::config::route::Captures;
use crate::config::Route;
use crate::pipeline::{query_ticket, Headers};
use crate::respond::respond;
use crate::server::Outcome;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use railgate_policy::context::HeaderSource;
use railgate_policy::field::valid_value;
use railgate_policy::thread::check_access;
use railgate_policy::{build_context, ContextPolicy, Denial, ErrorCode, Field, Sources};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

fn header_is(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `Origin` is allowed when the list is empty or holds it exactly (`null` never matches).
pub fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match origin {
        Some(o) if o != "null" => allowed.iter().any(|a| a.eq_ignore_ascii_case(o)),
        _ => false,
    }
}

/// Checks what the upgrade request carries. Returns `Ok` when the hello may proceed.
async fn precheck(
    gw: &Gateway,
    route: &Route,
    caps: &Captures,
    req: &Request<Incoming>,
    trace: &str,
) -> Result<(), Denial> {
    let headers = req.headers();
    let presented = Presented {
        bearer: bearer(headers)?,
        ticket: query_ticket(req.uri().query()),
        grant: None,
    };
    let hs = Headers(headers);
    for f in Field::ALL {
        let values = hs.values(f.header());
        if values.len() > 1 || values.iter().any(|v| !valid_value(v)) {
            return Err(Denial::with_message(
                ErrorCode::HeaderInvalid,
                format!("{} is malformed or repeated", f.header()),
            ));
        }
    }
    if presented.bearer.is_none() && presented.ticket.is_none() {
        return Ok(());
    }
    let verified = gw
        .auth
        .verify(&presented, route.auth_jwt, route.auth_ticket, now())
        .await?;
    if hs.values(Field::Tenant.header()).is_empty() && verified.ticket.is_none() {
        return Ok(());
    }
    let thread = route.thread_id(caps).map(str::to_owned);
    let policy = ContextPolicy {
        gateway_env: &gw.config.env,
        allowed_modes: &gw.config.allowed_modes,
        require: &[],
    };
    let ctx = {
        let sources = Sources {
            headers: &hs,
            token: verified.token.as_ref(),
            ticket: verified.ticket.as_ref(),
            hello: None,
            path_thread: thread.as_deref(),
            fallback_trace_id: trace,
        };
        build_context(&policy, &sources)?
    };
    if let Some(t) = &thread {
        let record = gw.registry.lookup(t).await?;
        check_access(&ctx, record.as_ref(), route.hide_foreign_threads)?;
    }
    Ok(())
}

/// Serves one WebSocket upgrade request.
pub async fn serve(
    gw: &Arc<Gateway>,
    route: &Route,
    caps: &Captures,
    mut req: Request<Incoming>,
    out: &mut Outcome,
) -> Response<Body> {
    let fail = |out: &mut Outcome, d: Denial| {
        out.code = d.code.as_str();
        respond(&d, &out.trace_id)
    };
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()));
    let version_ok = req
        .headers()
        .get("sec-websocket-version")
        .is_some_and(|v| v == "13");
    let (Some(accept), true, true, true) = (
        key,
        version_ok,
        header_is(&req, header::UPGRADE, "websocket"),
        header_is(&req, header::CONNECTION, "upgrade"),
    ) else {
        return fail(
            out,
            Denial::with_message(
                ErrorCode::HeaderInvalid,
                "a WebSocket upgrade (version 13) is required",
            ),
        );
    };
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if !origin_allowed(&route.allowed_origins, origin) {
        return fail(out, Denial::new(ErrorCode::OriginForbidden));
    }
    if let Err(d) = precheck(gw, route, caps, &req, &out.trace_id).await {
        return fail(out, d);
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    out.deferred = true;
    let session = super::ws_session::Session::new(
        gw.clone(),
        route.clone(),
        caps.clone(),
        parts,
        out.trace_id.clone(),
    );
    gw.streams.spawn(session.run(on_upgrade));
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    #[test]
    fn origins_match_exactly_and_null_never_does() {
        let allowed = vec!["https://app.example.com".to_string()];
        assert!(origin_allowed(&[], None));
        assert!(origin_allowed(&allowed, Some("https://app.example.com")));
        assert!(origin_allowed(&allowed, Some("HTTPS://APP.EXAMPLE.COM")));
        for bad in [
            "null",
            "https://app.example.com.evil.net",
            "https://evil-app.example.com",
            "http://app.example.com",
            "https://app.example.com:8443",
        ] {
            assert!(!origin_allowed(&allowed, Some(bad)), "{bad}");
        }
        assert!(!origin_allowed(&allowed, None));
    }
}
