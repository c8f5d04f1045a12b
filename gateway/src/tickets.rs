//! `POST /auth/tickets`: a JWT holder asks for a single-use ticket for one thread it may open.
//! Admission (JWT, tenant) runs before [`issue`], like on any route; the thread named in the
//! body goes through the same ownership phase. Neither the ticket (`exp`) nor the stream it
//! opens (`sx`) outlives the token, and a token past its `exp` (inside the leeway) mints nothing.

use crate::admission::{ownership, Admission, Admitted};
use crate::app::Gateway;
use crate::body::Body;
use crate::clock;
use crate::config::Accepts;
use crate::mint::random_hex_id;
use crate::respond;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use railgate_policy::ticket::{encode, TicketRequest};
use railgate_policy::{Denial, ErrorCode, Field};
use serde::Deserialize;

/// The built-in path.
pub const PATH: &str = "/auth/tickets";

/// The route name in metrics and logs.
pub const ROUTE: &str = "auth-tickets";

/// What the endpoint demands: a JWT and a tenant.
pub const ADMISSION: Admission<'static> = Admission {
    accepts: Accepts::JWT,
    require: &[Field::Tenant],
    resource: None,
    path_fields: Vec::new(),
    hide_foreign: false,
    route: None,
};

/// Largest request body.
const MAX_BODY: usize = 16 * 1024;

#[derive(Deserialize)]
struct Ask {
    thread_id: String,
    /// The resource's kind when it is not a thread (`canvas`, …): the ticket opens routes whose
    /// `resource_kind` it is.
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    ttl_s: Option<u64>,
}

async fn read_ask(body: Incoming) -> Result<Ask, Denial> {
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|_| Denial::new(ErrorCode::TooLarge))?
        .to_bytes();
    let ask: Ask = serde_json::from_slice(&bytes).map_err(|_| {
        Denial::with_message(
            ErrorCode::HeaderInvalid,
            "body must be {\"thread_id\": \"...\", \"ttl_s\": 60, \"kind\": \"thread\"}",
        )
    })?;
    if !ask
        .kind
        .as_deref()
        .is_none_or(railgate_policy::thread::valid_kind)
    {
        return Err(Denial::with_message(
            ErrorCode::HeaderInvalid,
            "kind is malformed",
        ));
    }
    if !railgate_policy::field::valid_value(ask.thread_id.as_bytes()) {
        return Err(Denial::with_message(
            ErrorCode::HeaderInvalid,
            "thread_id is malformed",
        ));
    }
    Ok(ask)
}

/// Issues a ticket to an admitted caller for the thread its body names.
pub async fn issue(
    gw: &Gateway,
    admitted: &Admitted,
    body: Incoming,
) -> Result<Response<Body>, Denial> {
    let now = clock::now();
    let token_exp = admitted.verified.token.as_ref().map(|t| t.exp);
    if token_exp.is_some_and(|exp| exp <= now) {
        // Accepted within its leeway, but a ticket must not outlive it: nothing left to grant.
        return Err(Denial::with_message(
            ErrorCode::TokenExpired,
            "a token past its exp cannot mint tickets",
        ));
    }
    let ask = read_ask(body).await?;
    let ctx = &admitted.ctx;
    let kind = ask.kind.as_deref().unwrap_or("thread");
    ownership(&gw.live(), ctx, (kind, &ask.thread_id), None, false).await?;
    let live = gw.live();
    let secrets = live.auth.tickets.as_ref().ok_or_else(|| {
        Denial::with_message(
            ErrorCode::TicketInvalid,
            "tickets are not enabled (no ticket secret)",
        )
    })?;
    let request = TicketRequest {
        sub: ctx.user_id.clone(),
        tenant_id: ctx.tenant_id().to_owned(),
        env: ctx.env().to_owned(),
        thread_id: ask.thread_id,
        ttl_s: ask.ttl_s,
        session_expires_at: token_exp,
        mode: ctx.get(Field::Mode).map(str::to_owned),
        project_id: ctx.get(Field::Project).map(str::to_owned),
        app_id: ctx.get(Field::App).map(str::to_owned),
        surface_id: ctx.get(Field::Surface).map(str::to_owned),
    };
    let claims = request.issue(random_hex_id(), now);
    let body = serde_json::json!({"ticket": encode(&claims, secrets), "expires_at": claims.exp});
    Ok(respond::json(StatusCode::CREATED, &body, &ctx.trace_id))
}
