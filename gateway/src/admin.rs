//! The admin listener: `/metrics`, `/healthz`, `/readyz`, and `/admin/*` behind
//! `RAILGATE_ADMIN_TOKEN`.

use crate::app::Gateway;
use crate::body::{full, Body};
use crate::respond::json;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::json as j;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `None` when the request carries the admin bearer token, else the refusal to send.
fn refusal<B>(gw: &Gateway, req: &Request<B>) -> Option<Response<Body>> {
    let Some(expected) = &gw.admin_token else {
        return Some(json(
            StatusCode::FORBIDDEN,
            &j!({"error": "admin API disabled: RAILGATE_ADMIN_TOKEN is not set"}),
            "",
        ));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        None
    } else {
        Some(json(
            StatusCode::UNAUTHORIZED,
            &j!({"error": "admin bearer token required"}),
            "",
        ))
    }
}

/// Whether the default upstream accepts TCP connections (within 1 s).
async fn upstream_reachable(gw: &Gateway) -> bool {
    let Ok(uri) = gw.config.upstream.parse::<http::Uri>() else {
        return false;
    };
    let Some(auth) = uri.authority() else {
        return false;
    };
    let addr = format!("{}:{}", auth.host(), auth.port_u16().unwrap_or(80));
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Answers one admin request.
pub async fn handle<B>(gw: Arc<Gateway>, req: Request<B>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["metrics"]) => {
            let mut r = Response::new(full(gw.metrics.render()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (Method::GET, ["healthz"]) => text(StatusCode::OK, "ok\n"),
        (Method::GET, ["readyz"]) => {
            if gw.draining.is_cancelled() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if upstream_reachable(&gw).await {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "upstream unreachable\n")
            }
        }
        (method, ["admin", rest @ ..]) => {
            if let Some(resp) = refusal(&gw, &req) {
                return resp;
            }
            match (method, rest) {
                (Method::GET, ["presence", tenant, thread]) => {
                    json(StatusCode::OK, &gw.presence.members(tenant, thread), "")
                }
                (Method::DELETE, ["registry", id]) => {
                    let dropped = gw.registry.forget(id).await;
                    json(
                        StatusCode::OK,
                        &j!({"thread_id": id, "dropped": dropped}),
                        "",
                    )
                }
                _ => json(
                    StatusCode::NOT_FOUND,
                    &j!({"error": "no such admin endpoint"}),
                    "",
                ),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
