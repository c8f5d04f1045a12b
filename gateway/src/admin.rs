//! The admin listener: `/metrics`, `/healthz`, `/readyz`, and `/admin/*` behind
//! `RAILGATE_ADMIN_TOKEN`. It sees only the parts of the gateway it reports on ([`Admin`]).

use crate::app::Gateway;
use crate::auth::bearer;
use crate::body::{full, Body};
use crate::respond::{self, json};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use railgate_policy::{Denial, ErrorCode};
use serde_json::json as j;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// What the admin endpoints read and act on: the gateway (its metrics, presence, drain state,
/// and the registry and upstream of the configuration in force) and the admin token.
pub struct Admin {
    /// The gateway.
    pub gw: Arc<Gateway>,
    /// The admin bearer token (`None`: `/admin/*` is refused).
    pub token: Option<String>,
}

/// Drops a cached owner here and, in cluster mode, on every other replica.
async fn forget(admin: &Admin, key: String) -> bool {
    let dropped = admin.gw.live().registry.forget(&key).await;
    if let Some(c) = &admin.gw.cluster {
        c.publish(&crate::cluster::events::Change::Forget { key })
            .await;
    }
    dropped
}

/// `/readyz`: ready unless draining or the upstream is unreachable; the body says what each
/// dependency is doing (the cluster's state degrades tickets only, so it does not fail it).
async fn readyz(admin: &Admin) -> Response<Body> {
    let cluster = match &admin.gw.cluster {
        None => "cluster: off (single node)",
        Some(c) if c.is_up() => "cluster: up",
        Some(_) => "cluster: down (first uses of tickets are refused; streams go on)",
    };
    let (status, head) = if admin.gw.draining.is_started() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if upstream_reachable(admin).await {
        (StatusCode::OK, "ready\nupstream: reachable")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "upstream unreachable")
    };
    let mut r = Response::new(full(format!("{head}\n{cluster}\n")));
    *r.status_mut() = status;
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A refusal of the admin listener, as the envelope every refusal carries.
fn deny(code: ErrorCode, message: &'static str) -> Response<Body> {
    respond::http(
        &Denial::with_message(code, message),
        &crate::mint::random_hex_id(),
    )
}

/// Answers a request head the connection's guard refused; the connection then closes.
pub fn refused(denial: &Denial) -> Response<Body> {
    respond::closing(respond::http(denial, &crate::mint::random_hex_id()))
}

/// `None` when the request carries the admin bearer token, else the refusal to send.
fn refusal<B>(admin: &Admin, req: &Request<B>) -> Option<Response<Body>> {
    let Some(expected) = &admin.token else {
        return Some(deny(
            ErrorCode::FeatureDisabled,
            "admin API disabled: RAILGATE_ADMIN_TOKEN is not set",
        ));
    };
    match bearer(req.headers()).ok().flatten() {
        None => Some(deny(ErrorCode::TokenMissing, "admin bearer token required")),
        Some(p) if bool::from(p.as_bytes().ct_eq(expected.as_bytes())) => None,
        Some(_) => Some(deny(ErrorCode::TokenInvalid, "admin bearer token is wrong")),
    }
}

/// `POST /admin/reload`: 200 with what changed, or 400 with every problem (the
/// running configuration stays).
async fn reload(admin: &Admin) -> Response<Body> {
    match crate::reload::reload_logged(&admin.gw, &crate::env::ProcessEnv, "admin").await {
        Ok(r) => json(
            StatusCode::OK,
            &j!({"reloaded": true, "routes": r.routes, "restart_needed": r.restart_needed}),
            "",
        ),
        Err(problems) => json(
            StatusCode::BAD_REQUEST,
            &j!({"reloaded": false, "problems": problems}),
            "",
        ),
    }
}

/// Whether the default upstream accepts TCP connections (within 1 s).
async fn upstream_reachable(admin: &Admin) -> bool {
    let upstream = admin.gw.live().config.upstream.clone();
    let Ok(uri) = upstream.parse::<http::Uri>() else {
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
pub async fn handle<B>(admin: Arc<Admin>, req: Request<B>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["metrics"]) => {
            let mut r = Response::new(full(admin.gw.metrics.render()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (Method::GET, ["healthz"]) => text(StatusCode::OK, "ok\n"),
        (Method::GET, ["readyz"]) => readyz(&admin).await,
        (method, ["admin", rest @ ..]) => {
            if let Some(resp) = refusal(&admin, &req) {
                return resp;
            }
            match (method, rest) {
                (Method::GET, ["presence", tenant, thread]) => json(
                    StatusCode::OK,
                    &admin.gw.presence.members(tenant, thread),
                    "",
                ),
                (Method::POST, ["reload"]) => reload(&admin).await,
                (Method::DELETE, ["registry", id]) => {
                    let dropped = forget(&admin, id.to_string()).await;
                    json(
                        StatusCode::OK,
                        &j!({"thread_id": id, "dropped": dropped}),
                        "",
                    )
                }
                (Method::DELETE, ["registry", kind, id]) => {
                    let dropped = forget(&admin, crate::registry::key(kind, id)).await;
                    json(
                        StatusCode::OK,
                        &j!({"kind": kind, "id": id, "dropped": dropped}),
                        "",
                    )
                }
                _ => deny(ErrorCode::RouteNotFound, "no such admin endpoint"),
            }
        }
        _ => deny(ErrorCode::RouteNotFound, "no such admin endpoint"),
    }
}
