//! How one request ended: its access log line and request metrics, written in one place. The
//! rails fill an [`Outcome`] as they learn who the caller is; [`record`] writes it once.

use crate::config::Rail;
use crate::metrics::Metrics;
use railgate_policy::{ErrorCode, RequestContext};
use std::time::Instant;

/// What one request ended as.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Route name (`-` when none matched).
    pub route: String,
    /// The rail (the `transport` label).
    pub rail: Rail,
    /// The refusal, if the request was refused (`None`: `ok`).
    pub code: Option<ErrorCode>,
    /// Tenant, once verified.
    pub tenant: Option<String>,
    /// Env, once verified.
    pub env: Option<String>,
    /// Trace id.
    pub trace_id: String,
    /// Request method.
    pub method: http::Method,
    /// Request path.
    pub path: String,
    /// HTTP version of the request (`HTTP/1.1`, `HTTP/2.0`).
    pub version: http::Version,
    /// When the request arrived.
    pub started: Instant,
}

impl Outcome {
    /// The outcome of a request nothing is known of yet.
    pub fn new(method: http::Method, path: String, trace_id: String) -> Outcome {
        Outcome {
            route: "-".into(),
            rail: Rail::Http,
            code: None,
            tenant: None,
            env: None,
            trace_id,
            method,
            path,
            version: http::Version::HTTP_11,
            started: Instant::now(),
        }
    }

    /// Records who the caller turned out to be.
    pub fn admitted(&mut self, ctx: &RequestContext) {
        self.tenant = Some(ctx.tenant_id().to_owned());
        self.env = Some(ctx.env().to_owned());
        self.trace_id = ctx.trace_id.clone();
    }
}

/// Counts one request's outcome in the request metrics (a stream: when its answer goes out).
pub fn count(metrics: &Metrics, out: &Outcome) {
    metrics.request(&out.route, out.rail, out.code, out.tenant.as_deref());
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
        tenant_id = out.tenant.as_deref(),
        env = out.env.as_deref(),
        trace_id = out.trace_id.as_str(),
        outcome = out.code.map_or("ok", ErrorCode::as_str),
        status,
        duration_ms = out.started.elapsed().as_secs_f64() * 1000.0,
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
            tenant_id = self.out.tenant.as_deref(),
            env = self.out.env.as_deref(),
            trace_id = self.out.trace_id.as_str(),
            client = %self.client,
            status = self.status,
            outcome = outcome.as_str(),
            close_code,
            duration_ms = self.out.started.elapsed().as_secs_f64() * 1000.0,
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
