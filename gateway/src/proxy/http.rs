//! The HTTP rail: a streaming reverse proxy for admitted requests.

use crate::admission::{Admitted, At};
use crate::app::{Gateway, Live};
use crate::body::{full, Body, BoxError};
use crate::client_pool::PooledBody;
use crate::cluster::events::Change;
use crate::config::route::Captures;
use crate::config::Route;
use crate::conn_timer::ConnTimer;
use crate::metrics::Violation;
use crate::proxy::forwarded::Forwarding;
use crate::proxy::headers;
use crate::proxy::upstream;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body::Frame;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use railgate_policy::thread::ThreadRecord;
use railgate_policy::{Denial, ErrorCode, Field};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Largest answer buffered to learn a `registers_thread` id.
const MAX_REGISTER_BODY: usize = 1024 * 1024;

/// Forwards an admitted request and streams the answer back: a bodiless request with its head
/// written directly ([`crate::client_direct`]), one with a body through hyper's client. On an
/// HTTP/1.1 connection the wait for the answer is timed by the connection's `timer`.
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps the request it was given beside the local it moves into"
)]
pub fn forward<'a>(
    gw: &'a Gateway,
    (live, route, caps, _, fwd): At<'a>,
    admitted: &'a Admitted,
    req: Request<Incoming>,
    timer: Option<&'a ConnTimer>,
) -> impl Future<Output = Result<Response<Body>, Denial>> + Send + 'a {
    async move {
        let trace = admitted.ctx.trace_id.as_str();
        // Where a client body's failure is noted (only a request with a body has one).
        let mut client_fault = None;
        let client = live.outbound.http_for(&route.name);
        let answer = if http_body::Body::is_end_stream(req.body()) {
            let (uri, head) = direct_head(route, caps, admitted, &req, fwd)?;
            let answer = client.exchange(&uri, req.method(), &head, timer).await;
            answer.map(|r| r.map(Body::new))
        } else {
            let fault = client_fault.insert(Arc::new(Mutex::new(None)));
            let up_req = upstream_request(live, route, caps, admitted, req, fwd, fault)?;
            let answer = client.send(up_req).await;
            answer.map(|r| r.map(pooled))
        };
        let resp = match answer {
            Ok(r) => r,
            Err(e) => {
                // A broken client body also fails the upstream request; blame the right side.
                let fault = client_fault.and_then(|f| f.lock().ok().and_then(|f| *f));
                tracing::warn!(route = %route.name, trace_id = trace, error = ?e, client_fault = ?fault, "upstream request failed");
                return Err(Denial::new(fault.unwrap_or(e.code())));
            }
        };
        let (mut rparts, rbody) = resp.into_parts();
        headers::to_client(&mut rparts.headers, trace);
        if route.registers_thread.is_some() && rparts.status.is_success() {
            return Box::pin(learn_and_return(gw, route, admitted, rparts, rbody)).await;
        }
        Ok(Response::from_parts(rparts, rbody))
    }
}

/// A body of hyper's client as the rails' body.
fn pooled(body: PooledBody) -> Body {
    body.map_err(|e| -> BoxError { Box::new(e) }).boxed()
}

/// The upstream URI of a bodiless request and its head as it goes upstream, written directly:
/// the request line, the client's headers cleaned and completed ([`headers::write_upstream`]),
/// `Host`.
fn direct_head(
    route: &Route,
    caps: &Captures,
    admitted: &Admitted,
    req: &Request<Incoming>,
    fwd: &Forwarding,
) -> Result<(Uri, Vec<u8>), Denial> {
    let uri = upstream::uri_of(route, caps, req.uri(), &[], upstream::Scheme::Http)?;
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut head = Vec::with_capacity(headers::HEAD_ROOM + target.len() + req.headers().len() * 64);
    headers::request_line(&mut head, req.method().as_str(), target);
    headers::write_upstream(&mut head, &uri, req.headers(), &admitted.ctx, fwd, &[]);
    head.extend_from_slice(b"\r\n");
    Ok((uri, head))
}

/// The request as it goes upstream: its URI, its headers cleaned and completed, its body
/// limited (a failure of the body noted in `fault`). Apart from [`forward`] so that the parts
/// it takes apart do not keep their room in that future beside the request they became.
fn upstream_request(
    live: &Live,
    route: &Route,
    caps: &Captures,
    admitted: &Admitted,
    req: Request<Incoming>,
    fwd: &Forwarding,
    fault: &Arc<Mutex<Option<ErrorCode>>>,
) -> Result<Request<Body>, Denial> {
    let (mut parts, body) = req.into_parts();
    let uri = upstream::uri_of(route, caps, &parts.uri, &[], upstream::Scheme::Http)?;
    headers::to_upstream(&mut parts.headers, &admitted.ctx, fwd);
    if let Some(authority) = uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(http::header::HOST, authority);
    }
    let limit = live.config.limits.max_body_bytes as usize;
    let body: Body = ClientBody {
        inner: Limited::new(body, limit),
        fault: fault.clone(),
    }
    .boxed();
    let mut up_req = Request::new(body);
    *up_req.method_mut() = parts.method;
    *up_req.uri_mut() = uri;
    *up_req.headers_mut() = parts.headers;
    Ok(up_req)
}

/// The client's request body on its way upstream; remembers whether it failed (too large or
/// malformed chunking) so the answer names the client's fault, not the upstream's.
struct ClientBody {
    inner: Limited<Incoming>,
    fault: Arc<Mutex<Option<ErrorCode>>>,
}

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &polled {
            let code = if e.is::<LengthLimitError>() {
                ErrorCode::TooLarge
            } else {
                ErrorCode::Malformed
            };
            if let Ok(mut f) = self.fault.lock() {
                *f = Some(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A body's data, unless it breaks or holds more than `max` bytes.
async fn read_at_most(mut body: Body, max: usize) -> Option<Bytes> {
    let mut data = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(chunk) = frame.ok()?.into_data() {
            if data.len() + chunk.len() > max {
                return None;
            }
            data.extend_from_slice(&chunk);
        }
    }
    Some(data.freeze())
}

/// Buffers a `registers_thread` answer, registers the id it names to the caller, returns it.
async fn learn_and_return(
    gw: &Gateway,
    route: &Route,
    admitted: &Admitted,
    parts: http::response::Parts,
    body: Body,
) -> Result<Response<Body>, Denial> {
    let trace = admitted.ctx.trace_id.as_str();
    let bytes = read_at_most(body, MAX_REGISTER_BODY).await.ok_or_else(|| {
        Denial::with_message(ErrorCode::UpstreamUnavailable, "upstream answer unreadable")
    })?;
    let pointer = route.registers_thread.as_deref().unwrap_or("/id");
    let id = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.pointer(pointer)
                .and_then(|x| x.as_str())
                .map(str::to_owned)
        });
    match id {
        Some(id) if railgate_policy::field::valid_value(id.as_bytes()) => {
            let record = ThreadRecord {
                tenant_id: admitted.ctx.tenant_id().to_owned(),
                env: admitted.ctx.env().to_owned(),
                project_id: admitted.ctx.get(Field::Project).map(str::to_owned),
                disabled_routes: Vec::new(),
            };
            let kind = &route.resource_kind;
            match gw.live().registry.learn(kind, &id, record.clone()).await {
                Ok(()) => {
                    if let Some(c) = &gw.cluster {
                        let (kind, id) = (kind.clone(), id.clone());
                        c.publish(&Change::Learn { kind, id, record }).await;
                    }
                }
                Err(d) if d.code == ErrorCode::ThreadForbidden => {
                    gw.metrics
                        .isolation_violations(&route.name, Violation::ThreadTakeover)
                        .inc();
                    tracing::warn!(route = %route.name, trace_id = trace, thread_id = %id, tenant_id = admitted.ctx.tenant_id(), "registers_thread answer names a thread of another tenant; refused");
                    return Err(d);
                }
                Err(d) => {
                    tracing::warn!(route = %route.name, trace_id = trace, thread_id = %id, error = %d, "owner of a registered thread not learned")
                }
            }
        }
        _ => {
            tracing::warn!(route = %route.name, trace_id = trace, "registers_thread answer has no usable id")
        }
    }
    let mut parts = parts;
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, full(bytes)))
}
