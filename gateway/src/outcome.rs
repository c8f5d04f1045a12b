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

/// Counts and logs one request's outcome (one access log line).
pub fn record(metrics: &Metrics, out: &Outcome, status: u16) {
    metrics.request(&out.route, out.rail, out.code, out.tenant.as_deref());
    tracing::info!(
        target: "railgate::access",
        method = out.method.as_str(),
        path = %out.path,
        route = %out.route,
        tenant_id = out.tenant.as_deref(),
        env = out.env.as_deref(),
        trace_id = %out.trace_id,
        outcome = out.code.map_or("ok", ErrorCode::as_str),
        status,
        duration_ms = out.started.elapsed().as_secs_f64() * 1000.0,
    );
}
