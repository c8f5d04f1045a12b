//! `POST /auth/tickets`: a JWT holder asks for a single-use ticket for one thread it may open.

use crate::app::{now, Gateway};
use crate::body::Body;
use crate::config::route::Captures;
use crate::config::{Pattern, Route, RouteKind};
use crate::mint::random_hex_id;
use crate::pipeline::admit;
use crate::respond::respond;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use railgate_policy::thread::check_access;
use railgate_policy::ticket::{encode, TicketRequest};
use railgate_policy::{Denial, ErrorCode, Field};
use serde::Deserialize;
use std::time::Duration;

/// The built-in path.
pub const PATH: &str = "/auth/tickets";

#[derive(Deserialize)]
struct Ask {
    thread_id: String,
    #[serde(default)]
    ttl_s: Option<u64>,
}

fn ticket_route() -> Option<Route> {
    Some(Route {
        name: "auth-tickets".into(),
        pattern: Pattern::parse(PATH).ok()?,
        kind: RouteKind::Http,
        require: vec![Field::Tenant],
        registers_thread: None,
        upstream: String::new(),
        upstream_path: None,
        share_upstream: false,
        resume_deadline: Duration::from_secs(0),
        hello: crate::config::HelloMode::Forward,
        ws_event_id: "/id".into(),
        allowed_origins: Vec::new(),
        hide_foreign_threads: false,
        auth_jwt: true,
        auth_ticket: false,
    })
}

/// Issues a ticket. Returns the response and, for logging, the tenant when known.
pub async fn issue(
    gw: &Gateway,
    req: Request<Incoming>,
    trace: &str,
) -> (Response<Body>, Option<String>, &'static str) {
    let fail = |d: Denial| (respond(&d, trace), None, d.code.as_str());
    let Some(route) = ticket_route() else {
        return fail(Denial::new(ErrorCode::RouteNotFound));
    };
    let (parts, body) = req.into_parts();
    let admitted = match admit(
        gw,
        &route,
        &Captures::default(),
        &parts.headers,
        None,
        None,
        trace,
    )
    .await
    {
        Ok(a) => a,
        Err(d) => return fail(d),
    };
    let trace = admitted.ctx.trace_id.as_str();
    let fail = |d: Denial| {
        (
            respond(&d, trace),
            Some(admitted.ctx.tenant_id().to_owned()),
            d.code.as_str(),
        )
    };
    let bytes = match Limited::new(body, 16 * 1024).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return fail(Denial::new(ErrorCode::TooLarge)),
    };
    let ask: Ask = match serde_json::from_slice(&bytes) {
        Ok(a) => a,
        Err(_) => {
            return fail(Denial::with_message(
                ErrorCode::HeaderInvalid,
                "body must be {\"thread_id\": \"...\", \"ttl_s\": 60}",
            ))
        }
    };
    if !railgate_policy::field::valid_value(ask.thread_id.as_bytes()) {
        return fail(Denial::with_message(
            ErrorCode::HeaderInvalid,
            "thread_id is malformed",
        ));
    }
    let record = match gw.registry.lookup(&ask.thread_id).await {
        Ok(r) => r,
        Err(d) => return fail(d),
    };
    if let Err(d) = check_access(&admitted.ctx, record.as_ref(), false) {
        return fail(d);
    }
    let Some(secrets) = gw.auth.tickets.as_ref() else {
        return fail(Denial::with_message(
            ErrorCode::TicketInvalid,
            "tickets are not enabled (no ticket secret)",
        ));
    };
    let ctx = &admitted.ctx;
    let request = TicketRequest {
        sub: ctx.user_id.clone(),
        tenant_id: ctx.tenant_id().to_owned(),
        env: ctx.env().to_owned(),
        thread_id: ask.thread_id,
        ttl_s: ask.ttl_s,
        session_expires_at: admitted.verified.token.as_ref().map(|t| t.exp),
        mode: ctx.get(Field::Mode).map(str::to_owned),
        project_id: ctx.get(Field::Project).map(str::to_owned),
        app_id: ctx.get(Field::App).map(str::to_owned),
        surface_id: ctx.get(Field::Surface).map(str::to_owned),
    };
    let claims = request.issue(random_hex_id(), now());
    let body = serde_json::json!({"ticket": encode(&claims, secrets), "expires_at": claims.exp});
    (
        crate::respond::json(StatusCode::CREATED, &body, trace),
        Some(ctx.tenant_id().to_owned()),
        "ok",
    )
}
