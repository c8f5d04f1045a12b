//! Every error code of the product, its HTTP status, retry flag and WebSocket close code, and the
//! envelope every transport renders. This is the only place codes are defined.

use serde::Serialize;
use std::borrow::Cow;
use std::fmt;

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident => ($code:literal, $status:literal, $retry:literal, $close:literal, $auth:literal, $msg:literal), )*) => {
        /// One rejection reason. `as_str` is the wire code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in contract order.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The wire code, e.g. `auth.tenant_missing`.
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $code, )* }
            }

            /// HTTP status used before a response (or upgrade) starts.
            pub fn http_status(self) -> u16 {
                match self { $( ErrorCode::$variant => $status, )* }
            }

            /// Whether a client may retry the same request later.
            pub fn retryable(self) -> bool {
                match self { $( ErrorCode::$variant => $retry, )* }
            }

            /// WebSocket close code sent after the envelope once the connection is upgraded.
            pub fn ws_close_code(self) -> u16 {
                match self { $( ErrorCode::$variant => $close, )* }
            }

            /// Whether this is a credential or context rejection (counted apart from other
            /// refusals: a spike of these is an attack or a misconfigured client).
            pub fn is_auth_rejection(self) -> bool {
                match self { $( ErrorCode::$variant => $auth, )* }
            }

            /// A generic human message, used when the caller has nothing more precise.
            pub fn default_message(self) -> &'static str {
                match self { $( ErrorCode::$variant => $msg, )* }
            }
        }
    };
}

codes! {
    // variant => (wire code, HTTP status, retryable, WS close code, auth rejection, message)
    /// No JWT and no ticket.
    TokenMissing => ("auth.token_missing", 401, false, 4003, true, "credentials are required"),
    /// Bad signature, algorithm, format, claims or size.
    TokenInvalid => ("auth.token_invalid", 401, false, 4003, true, "token is invalid"),
    /// Expired or not yet valid; also ends live streams at `exp`.
    TokenExpired => ("auth.token_expired", 401, false, 4003, true, "token has expired"),
    /// Bad MAC, format, or expired ticket.
    TicketInvalid => ("auth.ticket_invalid", 401, false, 4003, true, "ticket is invalid"),
    /// Ticket already used.
    TicketReplayed => ("auth.ticket_replayed", 401, false, 4003, true, "ticket was already used"),
    /// `tenant_id` absent.
    TenantMissing => ("auth.tenant_missing", 400, false, 4003, true, "X-Tenant-Id header is required"),
    /// `mode` absent.
    ModeMissing => ("auth.mode_missing", 400, false, 4003, true, "X-Mode header is required"),
    /// `project_id` absent.
    ProjectMissing => ("auth.project_missing", 400, false, 4003, true, "X-Project-Id header is required"),
    /// `app_id` absent.
    AppMissing => ("auth.app_missing", 400, false, 4003, true, "X-App-Id header is required"),
    /// `surface_id` absent.
    SurfaceMissing => ("auth.surface_missing", 400, false, 4003, true, "X-Surface-Id header is required"),
    /// `env` absent on a route that requires it explicitly.
    EnvMissing => ("auth.env_missing", 400, false, 4003, true, "X-Env header is required"),
    /// `workspace_id` absent.
    WorkspaceMissing => ("auth.workspace_missing", 400, false, 4003, true, "X-Workspace-Id header is required"),
    /// `canvas_id` absent.
    CanvasMissing => ("auth.canvas_missing", 400, false, 4003, true, "X-Canvas-Id header is required"),
    /// `projection_id` absent.
    ProjectionMissing => ("auth.projection_missing", 400, false, 4003, true, "X-Projection-Id header is required"),
    /// `panel_id` absent.
    PanelMissing => ("auth.panel_missing", 400, false, 4003, true, "X-Panel-Id header is required"),
    /// Mode not in `allowed_modes`.
    ModeInvalid => ("auth.mode_invalid", 400, false, 4003, true, "mode is not allowed"),
    /// Tenant not among the token's tenants.
    TenantMismatch => ("auth.tenant_mismatch", 403, false, 4003, true, "tenant is not granted by the credentials"),
    /// Env differs from the gateway's or the token's.
    EnvMismatch => ("auth.env_mismatch", 403, false, 4003, true, "env does not match this deployment"),
    /// Header / token / ticket / hello disagree, or the ticket is bound to another thread.
    ContextMismatch => ("auth.context_mismatch", 403, false, 4003, true, "request context disagrees between its sources"),
    /// Malformed or duplicated context header.
    HeaderInvalid => ("request.header_invalid", 400, false, 4003, true, "a context header is malformed or repeated"),
    /// Encoded dot segments, encoded slashes or backslashes in the path.
    PathInvalid => ("request.path_invalid", 400, false, 4003, false, "path has encoded dot segments or separators"),
    /// Anything refused while reading the request head: a smuggling shape (`Content-Length`
    /// with `Transfer-Encoding`, a repeated length), bare-LF line ends, obs-fold, control bytes,
    /// a bad request line; or a body that breaks its own framing.
    Malformed => ("request.malformed", 400, false, 4003, false, "request is malformed"),
    /// WebSocket `Origin` not allowed.
    OriginForbidden => ("request.origin_forbidden", 403, false, 4003, false, "origin is not allowed"),
    /// Body or message over its limit.
    TooLarge => ("request.too_large", 413, false, 1009, false, "request is too large"),
    /// Header block over its limit (same code, status 431).
    HeadersTooLarge => ("request.too_large", 431, false, 1009, false, "request headers are too large"),
    /// No route matches.
    RouteNotFound => ("route.not_found", 404, false, 4003, false, "no route matches this path"),
    /// Unknown thread (or foreign thread with `hide_foreign_threads`).
    ThreadNotFound => ("chat.thread_not_found", 404, false, 4003, false, "thread not found"),
    /// Thread belongs to another tenant or env.
    ThreadForbidden => ("chat.thread_forbidden", 403, false, 4003, false, "thread belongs to another tenant or env"),
    /// Cursor malformed or not resumable.
    CursorInvalid => ("chat.cursor_invalid", 410, false, 4003, false, "cannot resume from this cursor"),
    /// The client fell too far behind.
    SlowConsumer => ("stream.slow_consumer", 503, true, 4008, false, "client fell too far behind"),
    /// Upstream down and resume deadline passed.
    UpstreamUnavailable => ("upstream.unavailable", 503, true, 1011, false, "upstream is unavailable"),
    /// Upstream did not answer in time.
    UpstreamTimeout => ("upstream.timeout", 504, true, 1011, false, "upstream timed out"),
    /// Registry unreachable and nothing fresh cached: fail closed.
    RegistryUnavailable => ("registry.unavailable", 503, true, 1011, false, "thread registry is unavailable"),
    /// Cluster state (Redis) unreachable where the gateway must fail closed (a ticket's first use).
    ClusterUnavailable => ("cluster.unavailable", 503, true, 1011, false, "cluster state is unavailable"),
    /// Shutting down.
    Draining => ("gateway.draining", 503, true, 1001, false, "gateway is shutting down"),
    /// A capacity cap is reached (connections, unauthenticated connections, a tenant's streams).
    Overloaded => ("gateway.overloaded", 503, true, 1013, false, "gateway is at capacity"),
    /// A feature switched off (the admin API without `RAILGATE_ADMIN_TOKEN`).
    FeatureDisabled => ("feature.disabled", 403, false, 4003, false, "feature is disabled"),
    /// Too many requests.
    RateLimited => ("rate.limited", 429, true, 1013, false, "too many requests"),
}

impl ErrorCode {
    /// Looks a wire code up. `request.too_large` maps to the 413 variant.
    pub fn from_wire(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decision to refuse: a code plus a message safe to show the caller (never secret material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Why.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: Cow<'static, str>,
}

impl Denial {
    /// A denial with the code's default message.
    pub fn new(code: ErrorCode) -> Self {
        Denial {
            code,
            message: Cow::Borrowed(code.default_message()),
        }
    }

    /// A denial with a specific message.
    pub fn with_message(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Denial {
            code,
            message: message.into(),
        }
    }

    /// Renders this denial as the wire envelope.
    pub fn envelope(&self, trace_id: &str) -> ErrorEnvelope {
        ErrorEnvelope {
            error: ErrorBody {
                code: self.code.as_str(),
                message: self.message.to_string(),
                http_status: self.code.http_status(),
                retryable: self.code.retryable(),
                trace_id: trace_id.to_owned(),
            },
        }
    }
}

impl From<ErrorCode> for Denial {
    fn from(code: ErrorCode) -> Self {
        Denial::new(code)
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Denial {}

/// The JSON body of every rejection: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorEnvelope {
    /// The single member.
    pub error: ErrorBody,
}

/// The inside of [`ErrorEnvelope`], members in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    /// Wire code.
    pub code: &'static str,
    /// Human message.
    pub message: String,
    /// HTTP status the code maps to.
    pub http_status: u16,
    /// Whether retrying may succeed.
    pub retryable: bool,
    /// The request's trace id.
    pub trace_id: String,
}

impl ErrorEnvelope {
    /// The envelope as compact JSON text (one line; no raw control characters can appear).
    pub fn to_json(&self) -> String {
        // Serialising a struct of strings, integers and booleans cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}
