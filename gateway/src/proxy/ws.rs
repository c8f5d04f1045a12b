//! The WebSocket rail's entry: the upgrade's own checks before the 101 ([`check_upgrade`]; the
//! dispatcher then runs [`crate::admission::precheck`]), and the upgrade ([`upgrade`]), which
//! hands the connection to a session ([`super::ws_hello`]).

use crate::app::Gateway;
use crate::body::{empty, Body};
use crate::config::route::Captures;
use crate::config::Route;
use crate::proxy::ws_hello::{Session, Upgrade};
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use railgate_policy::{Denial, ErrorCode};
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

/// The upgrade's shape (version 13) and `Origin`. Returns the `Sec-WebSocket-Accept` value.
pub fn check_upgrade(route: &Route, req: &Request<Incoming>) -> Result<String, Denial> {
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
        header_is(req, header::UPGRADE, "websocket"),
        header_is(req, header::CONNECTION, "upgrade"),
    ) else {
        return Err(Denial::with_message(
            ErrorCode::HeaderInvalid,
            "a WebSocket upgrade (version 13) is required",
        ));
    };
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if !origin_allowed(&route.allowed_origins, origin) {
        return Err(Denial::new(ErrorCode::OriginForbidden));
    }
    Ok(accept)
}

/// Answers 101 and starts the session.
pub fn upgrade(
    gw: &Arc<Gateway>,
    route: &Arc<Route>,
    caps: &Captures,
    mut req: Request<Incoming>,
    up: Upgrade,
) -> Response<Body> {
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    let accept = up.accept.clone();
    let session = Session::new(gw.clone(), route.clone(), caps.clone(), parts, up);
    gw.streams.spawn(Box::new(session).run(on_upgrade));
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
