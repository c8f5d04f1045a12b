//! Listeners, the request entry point, and drain.
//!
//! Entry phases for every client request: early checks (smuggling shapes, header size, draining)
//! → built-in endpoints → route → the route's rail. Each request ends with one access log line.

use crate::app::Gateway;
use crate::body::Body;
use crate::config::RouteKind;
use crate::pipeline::{admit, early_trace_id, is_auth_rejection};
use crate::respond::respond;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use railgate_policy::{Denial, ErrorCode};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

/// The two bound listeners.
pub struct Listeners {
    /// Client traffic.
    pub main: TcpListener,
    /// Metrics, health, admin.
    pub admin: TcpListener,
}

/// What one request ended as, for the access log and metrics.
pub struct Outcome {
    /// Route name (`-` when none matched).
    pub route: String,
    /// Transport label.
    pub transport: &'static str,
    /// `ok` or the error code.
    pub code: &'static str,
    /// Tenant, once verified.
    pub tenant: Option<String>,
    /// Env, once verified.
    pub env: Option<String>,
    /// Trace id.
    pub trace_id: String,
    /// The outcome is counted and logged later (an upgraded WebSocket session).
    pub deferred: bool,
}

impl Outcome {
    /// Records a refusal and renders its envelope.
    pub fn deny(&mut self, d: Denial) -> Response<Body> {
        self.code = d.code.as_str();
        respond(&d, &self.trace_id)
    }
}

/// Runs admission for a request on `route` and records who it is (tenant, env, trace id).
pub async fn admit_request<B>(
    gw: &Gateway,
    route: &crate::config::Route,
    caps: &crate::config::route::Captures,
    req: &Request<B>,
    out: &mut Outcome,
) -> Result<crate::pipeline::Admitted, Denial> {
    let admitted = admit(
        gw,
        route,
        caps,
        req.headers(),
        req.uri().query(),
        None,
        &out.trace_id,
    )
    .await?;
    out.tenant = Some(admitted.ctx.tenant_id().to_owned());
    out.env = Some(admitted.ctx.env().to_owned());
    out.trace_id = admitted.ctx.trace_id.clone();
    Ok(admitted)
}

fn smuggling_shape(req: &Request<Incoming>) -> Option<&'static str> {
    let h = req.headers();
    let cl = h.get_all(http::header::CONTENT_LENGTH).iter().count();
    if cl > 1 {
        return Some("Content-Length sent more than once");
    }
    if cl == 1 && h.contains_key(http::header::TRANSFER_ENCODING) {
        return Some("Content-Length together with Transfer-Encoding");
    }
    None
}

fn header_bytes(req: &Request<Incoming>) -> usize {
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + req.uri().to_string().len()
}

/// Answers one client request.
pub async fn handle(gw: Arc<Gateway>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let trace = early_trace_id(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut out = Outcome {
        route: "-".into(),
        transport: "http",
        code: "ok",
        tenant: None,
        env: None,
        trace_id: trace,
        deferred: false,
    };
    let resp = dispatch(&gw, req, peer, &mut out).await;
    if !out.deferred {
        record(
            &gw,
            &out,
            resp.status().as_u16(),
            method.as_str(),
            &path,
            started,
        );
    }
    resp
}

/// Counts and logs one request's outcome (one access log line).
pub fn record(
    gw: &Gateway,
    out: &Outcome,
    status: u16,
    method: &str,
    path: &str,
    started: Instant,
) {
    gw.metrics
        .request(&out.route, out.transport, out.code, out.tenant.as_deref());
    if let Some(code) = ErrorCode::from_wire(out.code).filter(|c| is_auth_rejection(*c)) {
        gw.metrics
            .auth_rejections_total
            .with_label_values(&[code.as_str()])
            .inc();
    }
    tracing::info!(
        target: "railgate::access",
        method,
        path,
        route = %out.route,
        tenant_id = out.tenant.as_deref(),
        env = out.env.as_deref(),
        trace_id = %out.trace_id,
        outcome = out.code,
        status,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
    );
}

async fn dispatch(
    gw: &Arc<Gateway>,
    req: Request<Incoming>,
    peer: SocketAddr,
    out: &mut Outcome,
) -> Response<Body> {
    if let Some(why) = smuggling_shape(&req) {
        return out.deny(Denial::with_message(ErrorCode::HeaderInvalid, why));
    }
    if header_bytes(&req) > gw.config.limits.max_header_bytes {
        return out.deny(Denial::new(ErrorCode::HeadersTooLarge));
    }
    if gw.draining.is_cancelled() {
        return out.deny(Denial::new(ErrorCode::Draining));
    }
    if req.method() == Method::POST && req.uri().path() == crate::tickets::PATH {
        out.route = "auth-tickets".into();
        let (resp, tenant, code) = crate::tickets::issue(gw, req, &out.trace_id.clone()).await;
        out.tenant = tenant;
        out.code = code;
        return resp;
    }
    if let (Some(page), true) = (
        gw.demo_page.get(),
        req.method() == Method::GET && req.uri().path() == "/demo",
    ) {
        out.route = "demo-page".into();
        let mut resp = Response::new(crate::body::full(page.clone()));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return resp;
    }
    let path = req.uri().path().to_owned();
    let Some((route, caps)) = gw
        .config
        .routes
        .iter()
        .find_map(|r| r.pattern.matches(&path).map(|c| (r, c)))
    else {
        return out.deny(Denial::new(ErrorCode::RouteNotFound));
    };
    out.route = route.name.clone();
    out.transport = route.kind.label();
    match route.kind {
        RouteKind::Http => {
            if let Some(len) = req
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
            {
                if len > gw.config.limits.max_body_bytes {
                    return out.deny(Denial::new(ErrorCode::TooLarge));
                }
            }
            let admitted = match admit_request(gw, route, &caps, &req, out).await {
                Ok(a) => a,
                Err(d) => return out.deny(d),
            };
            let resp = crate::proxy::http::forward(
                gw,
                route,
                &caps,
                &admitted,
                req,
                Some(peer.ip().to_string()),
            )
            .await;
            if let Some(code) = error_code_of(&resp) {
                out.code = code;
            }
            resp
        }
        RouteKind::Sse => crate::proxy::sse::serve(gw, route, &caps, req, out).await,
        RouteKind::Ws => crate::proxy::ws::serve(gw, route, &caps, req, out).await,
    }
}

/// The code of a gateway-made error response (marked by our envelope's content type + status).
fn error_code_of(resp: &Response<Body>) -> Option<&'static str> {
    resp.extensions().get::<ErrorCode>().map(|c| c.as_str())
}

/// Serves both listeners until `shutdown` completes, then drains within `drain_timeout`.
pub async fn run(
    gw: Arc<Gateway>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let conns = TaskTracker::new();
    let stop = gw.draining.clone();
    spawn_background(&gw);
    let admin = tokio::spawn(serve_admin(gw.clone(), listeners.admin));
    tokio::pin!(shutdown);
    let max_buf = (gw.config.limits.max_header_bytes * 2).max(8192);
    let header_timeout = gw.config.limits.header_read_timeout;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listeners.main.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let gw2 = gw.clone();
        let svc = service_fn(move |req| {
            let gw = gw2.clone();
            // Boxed: hyper keeps a slot the size of this future for the connection's whole
            // life; a box in it is 16 bytes, and the request's own state is freed once the
            // response (or the stream body) is handed over.
            let fut: Pin<Box<dyn Future<Output = _> + Send>> =
                Box::pin(
                    async move { Ok::<_, std::convert::Infallible>(handle(gw, req, peer).await) },
                );
            fut
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(max_buf)
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        let stop = stop.clone();
        conns.spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    drop(listeners.main);
    tracing::info!(target: "railgate::lifecycle", "draining");
    gw.draining.cancel();
    conns.close();
    gw.streams.close();
    let drained = tokio::time::timeout(gw.config.drain_timeout, async {
        conns.wait().await;
        gw.streams.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(target: "railgate::lifecycle", "drain timeout reached; closing the remaining connections");
    }
    admin.abort();
    Ok(())
}

fn spawn_background(gw: &Arc<Gateway>) {
    {
        let gw = gw.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(30)) => { gw.relay.journals.sweep(std::time::Instant::now()); }
                    _ = gw.draining.cancelled() => return,
                }
            }
        });
    }
    if gw.registry.is_file() {
        let gw = gw.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => { gw.registry.reload_if_changed().await; }
                    _ = gw.draining.cancelled() => return,
                }
            }
        });
    }
    if gw.auth.keys.has_url() {
        let gw = gw.clone();
        tokio::spawn(async move {
            // The first fetch happened before READY (see `bind`).
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(gw.config.auth.jwks_refresh) => {}
                    _ = gw.draining.cancelled() => return,
                }
                if let Err(e) = gw.auth.keys.refresh().await {
                    tracing::warn!(error = %e, "JWKS refresh failed; keeping the previous keys");
                }
            }
        });
    }
}

async fn serve_admin(gw: Arc<Gateway>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let gw = gw.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let gw = gw.clone();
                async move { Ok::<_, std::convert::Infallible>(crate::admin::handle(gw, req).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
