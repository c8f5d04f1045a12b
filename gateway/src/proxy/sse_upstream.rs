//! The upstream side of an SSE hub: opening the upstream stream on its own connection, reading
//! and parsing it, delivering batches to the hub, and reconnecting with `Last-Event-ID` (see
//! [`super::reconnect`]) until no client is left, the resume deadline passes, or drain.

use crate::app::Gateway;
use crate::config::Rail;
use crate::outbound::{self, UpstreamTls, Writes};
use crate::proxy::forwarded::Forwarding;
use crate::proxy::headers;
use crate::proxy::reconnect::{classify, Reconnect, Refusal};
use crate::proxy::sse_hub::{Hub, Sharing};
use crate::proxy::sse_wire::{exchange, Wire};
use crate::sse::Parser;
use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, Uri};
use railgate_policy::{ErrorCode, RequestContext};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;
use tokio::time::Sleep;

/// How to reach the upstream stream.
#[derive(Clone)]
pub struct UpstreamSpec {
    /// Full upstream URI.
    pub uri: Uri,
    /// The request's header lines, rendered once: the prepared headers (verified context,
    /// hygiene applied) with `Host` and `Accept` set; each connect adds its `Last-Event-ID`.
    head: Bytes,
    /// TLS settings for an `https://` upstream.
    pub tls: UpstreamTls,
}

impl UpstreamSpec {
    /// The stream at `uri`, asked for with the client's `headers` as the upstream gets them
    /// ([`headers::write_upstream`]). The client's `Host`, `Accept` and `Last-Event-ID` give
    /// way to the gateway's, and its `Cookie` (which carries the stream's resume grant) is not
    /// passed on.
    pub fn new(
        uri: Uri,
        client: &HeaderMap,
        ctx: &RequestContext,
        fwd: &Forwarding,
        tls: UpstreamTls,
    ) -> UpstreamSpec {
        let skip = [header::COOKIE, header::ACCEPT, LAST_EVENT_ID];
        let mut head = Vec::with_capacity(headers::HEAD_ROOM + client.len() * 64);
        headers::write_upstream(&mut head, &uri, client, ctx, fwd, &skip);
        headers::line(&mut head, "accept", ACCEPT_SSE);
        UpstreamSpec {
            uri,
            // Kept for the stream's life: copied out at its size.
            head: Bytes::copy_from_slice(&head),
            tls,
        }
    }

    /// The request head of one connect, resuming after `cursor` (one that is not a valid header
    /// value is left out).
    fn request_head(&self, cursor: Option<&str>) -> Vec<u8> {
        let target = self.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut head = Vec::with_capacity(self.head.len() + target.len() + 64);
        headers::request_line(&mut head, "GET", target);
        head.extend_from_slice(&self.head);
        if let Some(c) = cursor.filter(|c| headers::valid_value(c.as_bytes())) {
            headers::line(&mut head, LAST_EVENT_ID.as_str(), c.as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        head
    }
}

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

const ACCEPT_SSE: &[u8] = b"text/event-stream";

/// An upstream event stream on its own connection ([`super::sse_wire`]), read by the hub's own
/// task: an upstream read reaches the parser without a hop through another task.
pub type Stream = Wire;

/// The outcome of opening the upstream stream.
pub enum Connect {
    /// Streaming.
    Streaming(Box<Stream>),
    /// A terminal answer.
    Gone(ErrorCode),
    /// Try again later.
    Retry(String),
}

/// Opens the upstream stream on its own connection, resuming after `cursor`.
pub async fn connect(gw: &Gateway, spec: &UpstreamSpec, cursor: Option<&str>) -> Connect {
    let live = gw.live();
    let limits = &live.config.limits;
    if spec.uri.authority().is_none() {
        return Connect::Gone(ErrorCode::UpstreamUnavailable);
    }
    let io = match outbound::connect(
        &spec.uri,
        &spec.tls,
        limits.upstream_connect_timeout,
        Writes::Once,
    )
    .await
    {
        Ok(io) => io,
        Err(e) => return Connect::Retry(e),
    };
    // Closed only to let the stream go (its clients left, the drain, a break): a reset.
    outbound::abort_on_close(&io);
    let head = spec.request_head(cursor);
    let answer =
        match tokio::time::timeout(limits.upstream_response_timeout, exchange(io, &head)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Connect::Retry(e),
            Err(_) => return Connect::Retry("no answer within the response timeout".into()),
        };
    if answer.status == 200 {
        return Connect::Streaming(Box::new(answer.body));
    }
    match classify(answer.status) {
        Refusal::Gone(code) => Connect::Gone(code),
        Refusal::Retry => Connect::Retry(format!("upstream answered {}", answer.status)),
    }
}

/// Runs a hub's upstream side until no client is left, the deadline passes, or drain. A shared
/// hub that a client joined while it was stopping keeps going.
pub async fn run(
    gw: Arc<Gateway>,
    hub: Arc<Hub>,
    spec: Arc<UpstreamSpec>,
    first: Option<Box<Stream>>,
) {
    let mut first = first;
    loop {
        run_once(&gw, &hub, &spec, first.take()).await;
        if hub.sharing() == Sharing::Private || gw.hubs.try_remove(&hub) || gw.draining.is_started()
        {
            break;
        }
    }
}

/// One life of a hub's upstream side: connects (resuming after the hub's last id), pumps, and
/// reconnects until the hub is empty, the resume deadline passes, or the gateway drains.
pub async fn run_once(gw: &Gateway, hub: &Hub, spec: &UpstreamSpec, first: Option<Box<Stream>>) {
    let mut parser = Parser::new(gw.live().config.sse.max_event_bytes);
    // Made at the first break: most streams never need it, and the task keeps room for what it
    // holds across awaits for the stream's whole life.
    let mut reconnect: Option<Box<Reconnect>> = None;
    let reconnect_state = || {
        let route = &hub.route;
        Box::new(Reconnect::new(
            &gw.metrics,
            &route.name,
            Rail::Sse,
            route.resume_deadline,
        ))
    };
    let mut body = first;
    if body.is_some() {
        hub.on_connected();
    }
    loop {
        if body.is_none() {
            if hub.is_empty() || gw.draining.is_started() {
                return;
            }
            // Boxed: the connect state (TLS, handshake, request) is larger than the streaming
            // one, and the task would keep room for it for the stream's whole life.
            match Box::pin(connect(gw, spec, hub.last_id().as_deref())).await {
                Connect::Streaming(b) => {
                    if let Some(r) = reconnect.as_mut() {
                        r.connected();
                    }
                    parser.reset_stream();
                    hub.reconnected();
                    hub.on_connected();
                    body = Some(b);
                }
                Connect::Gone(code) => return hub.fail_all(code),
                Connect::Retry(why) => {
                    reconnect
                        .get_or_insert_with(reconnect_state)
                        .attempt_failed();
                    tracing::debug!(route = %hub.route.name, thread_id = %hub.thread, reason = %why, "upstream stream unavailable");
                }
            }
        }
        if let Some(b) = body.as_mut() {
            match pump(gw, hub, &mut parser, b).await {
                Pumped::Broken => body = None,
                Pumped::Stop => return,
            }
        }
        if body.is_none() {
            let Some(delay) = reconnect.get_or_insert_with(reconnect_state).next_delay() else {
                return hub.fail_all(ErrorCode::UpstreamUnavailable);
            };
            hub.comment(b": reconnecting\n\n");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = gw.draining.cancelled() => return,
            }
        }
    }
}

enum Pumped {
    Broken,
    Stop,
}

/// Reads the upstream stream and delivers its events. Deliveries are at least `batch_window`
/// apart: events that arrive sooner wait for the window's end and go out as one batch (one
/// write per client instead of one per event). An event after a quiet spell goes out at once.
async fn pump(gw: &Gateway, hub: &Hub, parser: &mut Parser, up: &mut Stream) -> Pumped {
    let window = gw.live().config.sse.batch_window;
    let mut pending = Vec::new();
    let mut pending_since = Instant::now();
    // The parser's verdict on the data read so far (a read hands its data to the parser as it
    // is decoded, so the verdict is read after it).
    let mut fed = Ok(());
    let mut last_delivery: Option<Instant> = None;
    // Made the first time events are held for the window: a quiet stream never needs it, and
    // its room would be kept in the task for the stream's life.
    let mut flush_at: Option<Pin<Box<Sleep>>> = None;
    let mut armed = false;
    // Made once, not on every read: each new one would register with its `Notify` again.
    let left = hub.left.notified();
    tokio::pin!(left);
    let draining = gw.draining.cancelled();
    tokio::pin!(draining);
    let outcome = loop {
        // In this order, not a random one: with data ready the branches after it are not
        // polled (waiting on a `Notify` or a cancellation costs a lock each time). A client
        // leaving or a drain is seen after each delivery all the same (`hub.is_empty()`: a
        // draining gateway ends its clients' streams), and the batch timer comes first so a
        // flood cannot hold a batch back.
        tokio::select! {
            biased;
            _ = fired(&mut flush_at), if armed => {
                armed = false;
                hub.deliver(std::mem::take(&mut pending), pending_since);
                last_delivery = Some(Instant::now());
                if hub.is_empty() {
                    break Pumped::Stop;
                }
            }
            read = std::future::poll_fn(|cx| up.poll_data(cx, |data| {
                if pending.is_empty() {
                    pending_since = Instant::now();
                }
                if fed.is_ok() {
                    fed = parser.feed(data, &mut pending);
                }
            })) => {
                let Some(Ok(())) = read else { break Pumped::Broken };
                if fed.is_err() {
                    tracing::warn!(route = %hub.route.name, thread_id = %hub.thread, "upstream event over the size limit; reconnecting");
                    break Pumped::Broken;
                }
                if pending.is_empty() || armed {
                    continue;
                }
                // Nothing was pending before this read (not armed): its events' time.
                let now = pending_since;
                if let Some(due) = last_delivery.map(|t| t + window).filter(|due| *due > now) {
                    match flush_at.as_mut() {
                        Some(timer) => timer.as_mut().reset(due.into()),
                        None => flush_at = Some(Box::pin(tokio::time::sleep_until(due.into()))),
                    }
                    armed = true;
                    continue;
                }
                hub.deliver(std::mem::take(&mut pending), pending_since);
                last_delivery = Some(now);
                if hub.is_empty() {
                    break Pumped::Stop;
                }
            },
            _ = left.as_mut() => {
                if hub.is_empty() {
                    break Pumped::Stop;
                }
                left.set(hub.left.notified());
            }
            _ = draining.as_mut() => break Pumped::Stop,
        }
    };
    // What was read is delivered, whatever ends the stream.
    if !pending.is_empty() {
        hub.deliver(pending, pending_since);
    }
    outcome
}

/// Completes when `timer` (if made) fires.
fn fired(timer: &mut Option<Pin<Box<Sleep>>>) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| match timer.as_mut() {
        Some(t) => t.as_mut().poll(cx),
        None => Poll::Pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn the_request_head_is_rendered_once_and_each_connect_adds_its_cursor() {
        let mut h = HeaderMap::new();
        h.insert("x-tenant-id", HeaderValue::from_static("t_a"));
        h.insert("host", HeaderValue::from_static("client.example"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        h.insert("last-event-id", HeaderValue::from_static("from-the-client"));
        h.insert("cookie", HeaderValue::from_static("railgate_resume=grant"));
        h.append("x-multi", HeaderValue::from_static("1"));
        h.append("x-multi", HeaderValue::from_static("2"));
        let uri: Uri = "http://up.internal:9000/sse/chat/th_1?x=1"
            .parse()
            .expect("uri");
        let tls = UpstreamTls {
            config: crate::outbound::client_config(None, &[]).expect("tls"),
            server_name: None,
        };
        let ctx = RequestContext::from_parts(
            &[(railgate_policy::Field::Tenant, "t_a")],
            "u1",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        );
        let fwd = Forwarding {
            peer: crate::proxy::forwarded::Peer {
                ip: "10.1.2.3".parse().expect("ip"),
                trusted: false,
            },
            authorization: true,
        };
        let spec = UpstreamSpec::new(uri, &h, &ctx, &fwd, tls);
        let head = |c| String::from_utf8(spec.request_head(c)).expect("utf8");
        let plain = head(None);
        let (start, rest) = plain
            .split_once("x-request-id: 4bf92f3577b34da6a3ce929d0e0e4736\r\ntraceparent: 00-")
            .expect("ids and traceparent");
        assert_eq!(
            start,
            "GET /sse/chat/th_1?x=1 HTTP/1.1\r\nx-tenant-id: t_a\r\nx-multi: 1\r\nx-multi: 2\r\n\
             x-forwarded-proto: http\r\nx-real-ip: 10.1.2.3\r\nx-forwarded-for: 10.1.2.3\r\n\
             x-forwarded-host: client.example\r\n\
             forwarded: for=10.1.2.3;host=\"client.example\";proto=http\r\nx-user-id: u1\r\n"
        );
        let (parent, end) = rest
            .split_once("\r\n")
            .expect("the traceparent's line ends");
        assert_eq!(parent.len(), 52, "{parent}");
        assert!(
            parent.starts_with("4bf92f3577b34da6a3ce929d0e0e4736-") && parent.ends_with("-01"),
            "{parent}"
        );
        assert_eq!(
            end,
            "host: up.internal:9000\r\naccept: text/event-stream\r\n\r\n"
        );
        assert!(
            head(Some("42")).ends_with("accept: text/event-stream\r\nlast-event-id: 42\r\n\r\n")
        );
        assert_eq!(
            head(Some("bad\ncursor")),
            plain,
            "not a header value: left out"
        );
    }
}
