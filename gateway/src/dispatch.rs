//! The entry of every client request, in phases that run in one direction:
//! [`early_checks`] (path, drain) → built-in endpoints → [`route`] →
//! admission ([`crate::admission`]) → the rail's own checks → the ticket spent → the rail
//! ([`crate::proxy`]) → one access log line ([`crate::outcome::record`]).

use crate::admission::{self, early_trace_id, Admission, Admitted, At, Caller};
use crate::app::{Gateway, Live};
use crate::body::Body;
use crate::caps::Connection;
use crate::config::route::Captures;
use crate::config::{Config, Rail, Route};
use crate::conn_timer::ConnTimer;
use crate::outcome::{count, record, Outcome, RouteName};
use crate::proxy::forwarded::{Forwarding, Peer};
use crate::{proxy, respond, tickets};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use railgate_policy::{Denial, ErrorCode};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// How a request was answered.
enum Answer {
    /// The response; the request is logged as it goes out.
    Done(Response<Body>),
    /// The 101 of a WebSocket session, which logs its own outcome after its hello.
    Upgraded(Response<Body>),
    /// A stream's answer: counted now, logged when the stream ends.
    Stream(Response<Body>),
}

/// Answers one client request.
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps the request it was given beside the local it moves into"
)]
pub fn handle(
    gw: Arc<Gateway>,
    req: Request<Incoming>,
    peer: SocketAddr,
    conn: Arc<Connection>,
    timer: Option<ConnTimer>,
) -> impl Future<Output = Response<Body>> + Send {
    async move {
        let trace = early_trace_id(req.headers());
        let mut out = Outcome::new(req.method().clone(), req.uri().path().to_owned(), trace);
        out.version = req.version();
        let asks_upgrade = req.headers().contains_key(http::header::UPGRADE);
        let answer = match serve(&gw, req, peer, &conn, timer.as_ref(), &mut out).await {
            Ok(answer) => answer,
            Err(d) => {
                out.code = Some(d.code);
                Answer::Done(respond::http(&d, out.trace_id()))
            }
        };
        match answer {
            Answer::Done(resp) => {
                record(&gw.metrics, &out, resp.status().as_u16());
                // The connection's guard stopped reading request framing at a head asking for a
                // switch; a switch not made ends the connection.
                match asks_upgrade {
                    true => respond::closing(resp),
                    false => resp,
                }
            }
            Answer::Upgraded(resp) => resp,
            Answer::Stream(resp) => {
                count(&gw.metrics, &out);
                resp
            }
        }
    }
}

/// Answers a request head the connection's guard refused ([`crate::wire`]): the envelope,
/// then the connection closes. Logged with the path `-` (the head was never parsed).
pub fn refused(gw: &Gateway, denial: &Denial) -> Response<Body> {
    let mut out = Outcome::new(Method::GET, "-".into(), crate::mint::random_hex_id());
    out.code = Some(denial.code);
    let resp = respond::http(denial, out.trace_id());
    record(&gw.metrics, &out, resp.status().as_u16());
    respond::closing(resp)
}

#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps the request it was given beside the local it moves into"
)]
fn serve<'a>(
    gw: &'a Arc<Gateway>,
    req: Request<Incoming>,
    peer: SocketAddr,
    conn: &'a Arc<Connection>,
    timer: Option<&'a ConnTimer>,
    out: &'a mut Outcome,
) -> impl Future<Output = Result<Answer, Denial>> + Send + 'a {
    async move {
        early_checks(gw, &req)?;
        if req.method() == Method::POST && req.uri().path() == tickets::PATH {
            out.route = RouteName::Fixed(tickets::ROUTE);
            return Box::pin(ticket_issue(gw, req, conn, out)).await;
        }
        #[cfg(feature = "demo")]
        if let Some(resp) = demo_page(gw, &req) {
            out.route = RouteName::Fixed("demo-page");
            return Ok(Answer::Done(resp));
        }
        // The configuration in force when the request came, for all of it: a reload does not
        // change its route, admission or upstream under it.
        let live = gw.live();
        let (route, caps) = route(&live.config, req.uri().path())?;
        out.route = RouteName::Configured(route.clone());
        out.rail = route.kind;
        let adm = Admission::for_route(route, &caps);
        let fwd = forwarding(&live.config, route, peer);
        // Each rail in a future of its own: one awaited at a time, so that this future is no
        // larger than the largest of them (with every rail's awaits in one body, the compiler
        // laid them out side by side: 5.4 KiB, copied whole each time a request's future is made).
        let at = (&*live, route, &caps, &adm, &fwd);
        match route.kind {
            Rail::Http => {
                within_body_limit(&live.config, &req)?;
                http_rail(gw, at, req, (conn, timer), out).await
            }
            Rail::Sse => Box::pin(sse_rail(gw, at, req, conn, out)).await,
            Rail::Ws => Box::pin(ws_rail(gw, at, req, conn, out)).await,
        }
    }
}

/// `POST /auth/tickets`: a ticket for the caller.
async fn ticket_issue(
    gw: &Arc<Gateway>,
    req: Request<Incoming>,
    conn: &Connection,
    out: &mut Outcome,
) -> Result<Answer, Denial> {
    let admitted = admit(&gw.live(), &tickets::ADMISSION, &req, out).await?;
    conn.authenticated();
    admission::spend_ticket(gw, &admitted).await?;
    let body = req.into_body();
    tickets::issue(gw, &admitted, body).await.map(Answer::Done)
}

/// The HTTP rail: admission, the ticket spent, the request forwarded.
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps the request it was given beside the local it moves into"
)]
fn http_rail<'a>(
    gw: &'a Arc<Gateway>,
    at: At<'a>,
    req: Request<Incoming>,
    (conn, timer): (&'a Connection, Option<&'a ConnTimer>),
    out: &'a mut Outcome,
) -> impl Future<Output = Result<Answer, Denial>> + Send + 'a {
    async move {
        let (live, _, _, adm, _) = at;
        let admitted = admit(live, adm, &req, out).await?;
        conn.authenticated();
        admission::spend_ticket(gw, &admitted).await?;
        proxy::http::forward(gw, at, &admitted, req, timer)
            .await
            .map(Answer::Done)
    }
}

/// The SSE rail: admission, the resume cursor and the tenant's stream slot, the ticket spent,
/// the stream opened.
async fn sse_rail(
    gw: &Arc<Gateway>,
    (live, route, caps, adm, fwd): At<'_>,
    req: Request<Incoming>,
    conn: &Connection,
    out: &mut Outcome,
) -> Result<Answer, Denial> {
    let admitted = admit(live, adm, &req, out).await?;
    conn.authenticated();
    // An ephemeral route has no resume cursor: a `Last-Event-ID` is ignored.
    let cursor = match route.resumable() {
        true => proxy::reconnect::cursor_of(&req)?,
        false => None,
    };
    let slot = gw.stream_slot(admitted.ctx.tenant_id())?;
    admission::spend_ticket(gw, &admitted).await?;
    let checked = proxy::sse::Checked {
        admitted: &admitted,
        cursor,
        slot,
        out: out.clone(),
    };
    proxy::sse::serve(gw, route, caps, req, checked, fwd)
        .await
        .map(Answer::Stream)
}

/// The WebSocket rail: the upgrade's checks before its hello, then the switch.
async fn ws_rail(
    gw: &Arc<Gateway>,
    (_, route, caps, adm, fwd): At<'_>,
    req: Request<Incoming>,
    conn: &Arc<Connection>,
    out: &mut Outcome,
) -> Result<Answer, Denial> {
    let accept = proxy::ws::check_upgrade(route, &req)?;
    admission::precheck(gw, adm, &caller(&req, out)).await?;
    let upgrade = proxy::ws_hello::Upgrade {
        accept,
        out: out.clone(),
        fwd: *fwd,
        conn: conn.clone(),
    };
    let resp = proxy::ws::upgrade(gw, route, caps, req, upgrade);
    Ok(Answer::Upgraded(resp))
}

/// What the upstream learns of who sent the request: the peer (trusted when it is a listed
/// front proxy) and whether the client's `Authorization` goes on.
fn forwarding(config: &Config, route: &Route, peer: SocketAddr) -> Forwarding {
    let ip = peer.ip().to_canonical();
    Forwarding {
        peer: Peer {
            ip,
            trusted: config.trusted_proxies.iter().any(|n| n.contains(&ip)),
        },
        authorization: route.forward_authorization,
    }
}

/// Refusals that need no route: a path with encoded dot segments or separators, a draining
/// gateway. (Smuggling shapes and oversized heads never get here: [`crate::wire`].)
pub fn early_checks(gw: &Gateway, req: &Request<Incoming>) -> Result<(), Denial> {
    if !path_is_safe(req.uri().path()) {
        return Err(Denial::new(ErrorCode::PathInvalid));
    }
    if gw.draining.is_started() {
        return Err(Denial::new(ErrorCode::Draining));
    }
    Ok(())
}

/// The first route of `config` whose pattern matches `path`, with what it captured.
pub fn route<'c>(config: &'c Config, path: &str) -> Result<(&'c Arc<Route>, Captures), Denial> {
    config
        .routes
        .iter()
        .find_map(|r| r.pattern.matches(path).map(|c| (r, c)))
        .ok_or(Denial::new(ErrorCode::RouteNotFound))
}

fn caller<'a>(req: &'a Request<Incoming>, out: &'a Outcome) -> Caller<'a> {
    Caller {
        headers: req.headers(),
        query: req.uri().query(),
        hello: None,
        trace_id: out.trace_id(),
    }
}

/// Runs admission and records who the caller is.
async fn admit(
    live: &Live,
    adm: &Admission<'_>,
    req: &Request<Incoming>,
    out: &mut Outcome,
) -> Result<Admitted, Denial> {
    let admitted = admission::admit(live, adm, &caller(req, out)).await?;
    out.admitted(&admitted.ctx);
    Ok(admitted)
}

/// `GET /demo`: the browser example, once `railgate demo` has set it.
#[cfg(feature = "demo")]
fn demo_page(gw: &Gateway, req: &Request<Incoming>) -> Option<Response<Body>> {
    let page = gw.demo_page.get()?;
    if req.method() != Method::GET || req.uri().path() != "/demo" {
        return None;
    }
    let mut resp = Response::new(crate::body::full(page.clone()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Some(resp)
}

fn within_body_limit(config: &Config, req: &Request<Incoming>) -> Result<(), Denial> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > config.limits.max_body_bytes => Err(Denial::new(ErrorCode::TooLarge)),
        _ => Ok(()),
    }
}

/// Whether `s` holds `%2f` or `%5c` (an encoded `/` or `\`), in either case.
fn has_encoded_separator(s: &str) -> bool {
    s.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && matches!((w[1], w[2] | 0x20), (b'2', b'f') | (b'5', b'c')))
}

/// How many layers of percent-encoding a path may carry before it is refused outright.
const MAX_ENCODING_DEPTH: usize = 3;

/// Whether a path is routed at all: no backslash, no encoded `/` or `\`, and no `.` or `..`
/// segment (also as `..;params`) — at any depth of percent-encoding, since the upstream (or a
/// proxy behind it) may decode once more than the route matcher did. The ownership check and
/// the upstream must see the same path.
pub fn path_is_safe(path: &str) -> bool {
    // Without a backslash, a `%` or a `.` there is nothing below to find (the usual path).
    if memchr::memchr3(b'\\', b'%', b'.', path.as_bytes()).is_none() {
        return true;
    }
    let mut current = std::borrow::Cow::Borrowed(path);
    for _ in 0..=MAX_ENCODING_DEPTH {
        if current.contains('\\') || has_encoded_separator(&current) {
            return false;
        }
        let dot_segment = current.split('/').any(|seg| {
            let name = seg.split(';').next().unwrap_or_default();
            name == "." || name == ".."
        });
        if dot_segment {
            return false;
        }
        // Nothing left to decode (the usual path: no copy made).
        if !current.contains('%') {
            return true;
        }
        let decoded = percent_encoding::percent_decode_str(&current).decode_utf8_lossy();
        if decoded == current {
            return true;
        }
        current = std::borrow::Cow::Owned(decoded.into_owned());
    }
    false
}

#[cfg(test)]
mod tests {
    use super::path_is_safe;

    #[test]
    fn encoded_dot_segments_and_separators_are_refused_at_any_depth() {
        for bad in [
            "/chat/threads/A/%2e%2e/B/messages",
            "/chat/threads/A/%2E%2E/B/messages",
            "/chat/threads/A/..%2FB/messages",
            "/chat/threads/A/%2F..%2FB",
            "/chat/threads/A/..;/B/messages",
            "/chat/threads/A/.;x/B",
            "/chat/threads/A/..\\B",
            "/chat/threads/A/%5c..%5cB",
            "/chat/threads/A/%5C..%5CB",
            "/chat/threads/A%2fB/messages",
            "/chat/threads/A%252FB/messages",
            "/chat/threads/A/%252e%252e/B",
            "/chat/threads/A/%25252e%25252e/B",
            "/chat/threads/A/%2525252e/B",
            "/chat/threads/A/../B",
            "/chat/threads/A/./B",
        ] {
            assert!(!path_is_safe(bad), "{bad}");
        }
        for good in [
            "/chat/threads/A/messages",
            "/chat/threads/A/messages/..x/y",
            "/chat/threads/A/a.b/c..d/...",
            "/chat/threads/A/%20space",
            "/",
        ] {
            assert!(path_is_safe(good), "{good}");
        }
    }
}
