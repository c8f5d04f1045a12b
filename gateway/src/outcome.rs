//! How one request ended: its access log line and request metrics, written in one place. The
//! rails fill an [`Outcome`] as they learn who the caller is; [`record`] writes it once.

use crate::config::{Rail, Route};
use crate::metrics::Metrics;
use railgate_policy::{ErrorCode, RequestContext};
use std::sync::Arc;
use std::time::Instant;

/// The route a request matched, as its outcome names it: a configured route (shared with the
/// configuration rather than copied per request) or a built-in endpoint's name.
#[derive(Debug, Clone)]
pub enum RouteName {
    /// A built-in endpoint's name, or `-` when none matched.
    Fixed(&'static str),
    /// A configured route.
    Configured(Arc<Route>),
}

impl RouteName {
    /// The name.
    pub fn as_str(&self) -> &str {
        match self {
            RouteName::Fixed(name) => name,
            RouteName::Configured(route) => &route.name,
        }
    }
}

/// What one request ended as.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Route name (`-` when none matched).
    pub route: RouteName,
    /// The rail (the `transport` label).
    pub rail: Rail,
    /// The refusal, if the request was refused (`None`: `ok`).
    pub code: Option<ErrorCode>,
    /// The verified context, once the caller was admitted (tenant, env and trace id).
    ctx: Option<Arc<RequestContext>>,
    /// The trace id known before admission.
    early_trace_id: String,
    /// Request method.
    pub method: http::Method,
    /// Request path.
    pub path: String,
    /// HTTP version of the request (`HTTP/1.1`, `HTTP/2.0`).
    pub version: http::Version,
    /// When the request arrived: read only while access lines are written (the clock read
    /// is a visible share of a plain request's work).
    pub started: Option<Instant>,
}

impl Outcome {
    /// The outcome of a request nothing is known of yet.
    pub fn new(method: http::Method, path: String, trace_id: String) -> Outcome {
        Outcome {
            route: RouteName::Fixed("-"),
            rail: Rail::Http,
            code: None,
            ctx: None,
            early_trace_id: trace_id,
            method,
            path,
            version: http::Version::HTTP_11,
            started: access_logged().then(Instant::now),
        }
    }

    /// Records who the caller turned out to be.
    pub fn admitted(&mut self, ctx: &Arc<RequestContext>) {
        self.ctx = Some(ctx.clone());
    }

    /// The trace id: the verified context's once admitted, else the one known before.
    pub fn trace_id(&self) -> &str {
        self.ctx
            .as_ref()
            .map_or(&self.early_trace_id, |c| &c.trace_id)
    }

    /// The tenant, once verified.
    pub fn tenant(&self) -> Option<&str> {
        self.ctx.as_ref().map(|c| c.tenant_id())
    }

    /// The env, once verified.
    pub fn env(&self) -> Option<&str> {
        self.ctx.as_ref().map(|c| c.env())
    }
}

/// Whether access lines are written now (the log level in force lets them through).
fn access_logged() -> bool {
    tracing::enabled!(target: "railgate::access", tracing::Level::INFO)
}

/// Milliseconds since `started`, for an access line.
fn millis_since(started: Option<Instant>) -> Option<f64> {
    started.map(|s| s.elapsed().as_secs_f64() * 1000.0)
}

/// Counts one request's outcome in the request metrics (a stream: when its answer goes out).
pub fn count(metrics: &Metrics, out: &Outcome) {
    metrics.request(out.route.as_str(), out.rail, out.code, out.tenant());
    metrics.request_protocol(out.rail, out.version);
}

/// Counts and logs one request's outcome (one access log line).
pub fn record(metrics: &Metrics, out: &Outcome, status: u16) {
    count(metrics, out);
    tracing::info!(
        target: "railgate::access",
        method = out.method.as_str(),
        path = out.path.as_str(),
        http_version = ?out.version,
        route = out.route.as_str(),
        tenant_id = out.tenant(),
        env = out.env(),
        trace_id = out.trace_id(),
        outcome = out.code.map_or("ok", ErrorCode::as_str),
        status,
        duration_ms = millis_since(out.started),
    );
}

/// What one stream carried, as far as its access line tells.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Events (SSE) or messages (WS) sent to the client.
    pub events_down: u64,
    /// Bytes sent to the client (SSE: including keep-alive comments and the final frame).
    pub bytes_down: u64,
    /// Messages from the client relayed upstream (WS).
    pub messages_up: u64,
    /// Bytes of those messages.
    pub bytes_up: u64,
    /// Times the upstream stream came back after breaking.
    pub reconnects: u64,
    /// How long the first upstream connection took (when this stream made one).
    pub upstream_connect: Option<std::time::Duration>,
}

/// A stream's access line, written once when the stream ends (its value is dropped): how long
/// it lasted, what it carried each way, and why it ended.
pub struct StreamLog {
    out: Outcome,
    client: std::net::IpAddr,
    status: u16,
    /// What the stream carried so far.
    pub tally: Tally,
    end: Option<(String, Option<u16>)>,
}

impl StreamLog {
    /// The log of a stream answered with `status` to `client`.
    pub fn new(out: Outcome, client: std::net::IpAddr, status: u16) -> StreamLog {
        StreamLog {
            out,
            client,
            status,
            tally: Tally::default(),
            end: None,
        }
    }

    /// Why the stream ended (an error code, or `client_closed`, `upstream_ended`, ...) and the
    /// WebSocket close code; the first reason given is kept.
    pub fn ended(&mut self, reason: &str, close_code: Option<u16>) {
        if self.end.is_none() {
            self.end = Some((reason.to_owned(), close_code));
        }
    }
}

impl Drop for StreamLog {
    fn drop(&mut self) {
        let (outcome, close_code) = self
            .end
            .take()
            .unwrap_or_else(|| ("client_closed".into(), None));
        let t = &self.tally;
        tracing::info!(
            target: "railgate::access",
            method = self.out.method.as_str(),
            path = self.out.path.as_str(),
            http_version = ?self.out.version,
            route = self.out.route.as_str(),
            transport = self.out.rail.label(),
            tenant_id = self.out.tenant(),
            env = self.out.env(),
            trace_id = self.out.trace_id(),
            client = %self.client,
            status = self.status,
            outcome = outcome.as_str(),
            close_code,
            duration_ms = millis_since(self.out.started),
            events_down = t.events_down,
            bytes_down = t.bytes_down,
            messages_up = t.messages_up,
            bytes_up = t.bytes_up,
            reconnects = t.reconnects,
            upstream_connect_ms = t.upstream_connect.map(|d| d.as_secs_f64() * 1000.0),
            "stream ended"
        );
    }
}
