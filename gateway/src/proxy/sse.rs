//! The SSE rail's entry: admission, cursor, choosing a hub, and the response.
//!
//! Resume order: a cursor the thread's journal holds is served from the journal (then live); any
//! other cursor is asked of the upstream (`Last-Event-ID`); if neither can resume, the answer is
//! `chat.cursor_invalid` (410). With `share_upstream`, clients without a cursor (or with one the
//! journal holds) join the thread's shared hub; a client whose cursor only the upstream can serve
//! gets a private stream.

use crate::app::{now, Gateway};
use crate::body::Body;
use crate::config::route::Captures;
use crate::config::Route;
use crate::inject::Stamp;
use crate::journal::Limits;
use crate::pipeline::{Admitted, GRANT_COOKIE};
use crate::proxy::headers;
use crate::proxy::http::upstream_uri;
use crate::proxy::hub::{
    self, connect, error_frame, resume_frame, Connect, Hub, Joining, Sub, UpstreamSpec,
};
use crate::proxy::sse_body::{Chunk, EndSlot, Finish, OwnFrames, SseBody, Timers};
use crate::server::{admit_request, Outcome};
use http::{header, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use railgate_policy::ticket::{encode_grant, Grant};
use railgate_policy::{Denial, ErrorCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Longest cursor accepted.
const MAX_CURSOR: usize = 256;

fn cursor_of(req: &Request<Incoming>) -> Result<Option<String>, Denial> {
    let invalid = || Denial::with_message(ErrorCode::CursorInvalid, "Last-Event-ID is malformed");
    let mut values = req.headers().get_all("last-event-id").iter();
    let raw = match (values.next(), values.next()) {
        (Some(_), Some(_)) => return Err(invalid()),
        (Some(v), None) => Some(v.to_str().map_err(|_| invalid())?.to_owned()),
        (None, _) => req.uri().query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "last_event_id")
                .map(|(_, v)| v.into_owned())
        }),
    };
    match raw {
        Some(c) if c.len() > MAX_CURSOR || c.contains(['\0', '\r', '\n']) => Err(invalid()),
        Some(c) if c.is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// Serves one SSE request.
pub async fn serve(
    gw: &Arc<Gateway>,
    route: &Route,
    caps: &Captures,
    req: Request<Incoming>,
    out: &mut Outcome,
) -> Response<Body> {
    let admitted = match admit_request(gw, route, caps, &req, out).await {
        Ok(a) => a,
        Err(d) => return out.deny(d),
    };
    let cursor = match cursor_of(&req) {
        Ok(c) => c,
        Err(d) => return out.deny(d),
    };
    let Some(thread) = admitted.thread_id.clone() else {
        return out.deny(Denial::new(ErrorCode::RouteNotFound));
    };
    let query: Option<String> = req.uri().query().map(|q| {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(
                form_urlencoded::parse(q.as_bytes()).filter(|(k, _)| k != "last_event_id"),
            )
            .finish()
    });
    let uri = match upstream_uri(
        route,
        caps,
        req.uri().path(),
        query.as_deref().filter(|q| !q.is_empty()),
    ) {
        Ok(u) => u,
        Err(d) => return out.deny(d),
    };
    let mut up_headers = headers::detached(req.headers());
    up_headers.remove(header::COOKIE);
    headers::to_upstream(&mut up_headers, &admitted.ctx, None);
    let spec = UpstreamSpec {
        uri,
        headers: up_headers,
    };
    let started = start(gw, route, &thread, &admitted, spec, cursor).await;
    match started {
        Ok((rx, end, left, stamp)) => response(
            gw,
            route,
            &admitted,
            (rx, end, left, stamp),
            req.uri().path(),
        ),
        Err(d) => out.deny(d),
    }
}

type Started = (
    mpsc::Receiver<Chunk>,
    Arc<EndSlot>,
    Arc<tokio::sync::Notify>,
    Arc<Stamp>,
);

async fn start(
    gw: &Arc<Gateway>,
    route: &Route,
    thread: &str,
    admitted: &Admitted,
    spec: UpstreamSpec,
    cursor: Option<String>,
) -> Result<Started, Denial> {
    let (tx, rx) = mpsc::channel(gw.config.sse.client_queue_events);
    let end = Arc::new(EndSlot::default());
    let limits = Limits {
        events: gw.config.sse.journal_events,
        bytes: gw.config.sse.journal_bytes,
        age: gw.config.sse.journal_age,
    };
    let journal = gw.relay.journals.get(&route.name, thread, limits);
    let stamp = Arc::new(Stamp::new(&admitted.ctx, thread));
    let sub = |hub: &Hub| Sub {
        id: hub.sub_id(),
        tx: tx.clone(),
        end: end.clone(),
        stamp: stamp.clone(),
        trace_id: admitted.ctx.trace_id.clone(),
        dedupe: None,
    };
    let in_journal = cursor.as_deref().is_some_and(|c| {
        journal
            .lock()
            .map(|mut j| j.after(c, std::time::Instant::now()).is_some())
            .unwrap_or(false)
    });
    let spawn = |hub: Arc<Hub>, first: Option<Box<hub::Stream>>| {
        let gw2 = gw.clone();
        let spec2 = spec.clone();
        gw.streams.spawn(hub::run(gw2, hub, spec2, first));
    };
    let make_shared = || {
        Hub::new(
            gw,
            route.clone(),
            thread.to_owned(),
            journal.clone(),
            None,
            true,
        )
    };
    match (&cursor, in_journal) {
        (Some(c), true) => {
            // Journal resume: announce, then replay with backpressure and join live.
            let _ = tx.try_send(resume_frame(c, "journal").into());
            let (hub, joining) = if route.share_upstream {
                // Registered as joining under the relay lock, so the hub cannot stop meanwhile.
                let (hub, new, joining) =
                    gw.relay
                        .join_shared(&route.name, thread, make_shared, Joining::new);
                if new {
                    spawn(hub.clone(), None);
                }
                (hub, joining)
            } else {
                let hub = Hub::new(
                    gw,
                    route.clone(),
                    thread.to_owned(),
                    journal.clone(),
                    Some(c),
                    false,
                );
                let joining = Joining::new(&hub);
                (hub, joining)
            };
            let (gw2, hub2, sub2, c2) = (gw.clone(), hub.clone(), sub(&hub), c.clone());
            let private = !route.share_upstream;
            let spec2 = spec.clone();
            gw.streams.spawn(async move {
                hub2.catch_up_and_join(&gw2, sub2, c2, joining).await;
                if private {
                    hub::run(gw2, hub2, spec2, None).await;
                }
            });
            return Ok((rx, end, hub.left.clone(), stamp.clone()));
        }
        (None, _) if route.share_upstream => {
            let (hub, new, ()) = gw
                .relay
                .join_shared(&route.name, thread, make_shared, |h| h.subscribe(sub(h)));
            let left = hub.left.clone();
            if new {
                spawn(hub, None);
            }
            return Ok((rx, end, left, stamp.clone()));
        }
        _ => {}
    }
    // Private stream; the first connect decides statuses (404, 410) while we can still answer.
    let hub = Hub::new(
        gw,
        route.clone(),
        thread.to_owned(),
        journal,
        cursor.as_deref(),
        false,
    );
    match connect(gw, &spec, cursor.as_deref()).await {
        Connect::Gone(code) => Err(Denial::new(code)),
        Connect::Streaming(body) => {
            if let Some(c) = &cursor {
                let _ = tx.try_send(resume_frame(c, "upstream").into());
            }
            hub.subscribe(sub(&hub));
            let left = hub.left.clone();
            spawn(hub, Some(body));
            Ok((rx, end, left, stamp.clone()))
        }
        Connect::Retry(why) => {
            tracing::info!(route = %route.name, thread_id = thread, reason = %why, "upstream not reachable yet; keeping the stream open");
            if let Some(c) = &cursor {
                hub.set_pending_resume(c.clone());
            }
            hub.subscribe(sub(&hub));
            let left = hub.left.clone();
            spawn(hub, None);
            Ok((rx, end, left, stamp.clone()))
        }
    }
}

fn response(
    gw: &Gateway,
    route: &Route,
    admitted: &Admitted,
    (rx, end, left, stamp): Started,
    path: &str,
) -> Response<Body> {
    let trace = &admitted.ctx.trace_id;
    let leeway = gw.config.auth.leeway_s;
    let remaining = admitted
        .ctx
        .expires_at
        .saturating_add(leeway)
        .saturating_sub(now());
    let expires_at =
        tokio::time::Instant::now() + Duration::from_secs(remaining.min(10 * 365 * 24 * 3600));
    let own = OwnFrames {
        draining: error_frame(ErrorCode::Draining, trace),
        expired: error_frame(ErrorCode::TokenExpired, trace),
    };
    let active = gw
        .metrics
        .connections_active
        .with_label_values(&[&route.name, "sse"]);
    let timers = Timers {
        expires_at,
        draining: gw.draining.clone().cancelled_owned(),
        keepalive_every: gw.config.sse.keepalive,
    };
    let finish = Finish { stamp };
    let body = SseBody::new(rx, end, own, timers, active, Some(left), finish);
    let mut resp = Response::new(body.boxed());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Ok(v) = HeaderValue::from_str(trace) {
        h.insert("x-request-id", v);
    }
    if let (Some(t), false, Some(secrets)) = (
        &admitted.verified.ticket,
        admitted.verified.ticket_resumed,
        &gw.auth.tickets,
    ) {
        let grant = encode_grant(&Grant::for_ticket(t), secrets);
        let max_age = t.sx.saturating_sub(now());
        let secure = if gw.config.auth.cookie_secure {
            "; Secure"
        } else {
            ""
        };
        let cookie = format!("{GRANT_COOKIE}={grant}; Max-Age={max_age}; Path={path}; HttpOnly; SameSite=Strict{secure}");
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            h.insert(header::SET_COOKIE, v);
        }
    }
    resp
}
