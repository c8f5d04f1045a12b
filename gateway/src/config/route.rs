//! Routes: path patterns with `{var}` segments and a trailing `/**`, and their per-route knobs.

pub use super::pattern::{Captures, Pattern};
use super::reader::{Problems, Reader};
use super::route_keys::{
    read_accepts, read_delivery, read_hello, read_kind, read_resource_kind, read_scope,
};
use super::{check_http_url, fields};
use railgate_policy::{Field, RequestContext};
use std::time::Duration;

/// Which rail serves a route (also the `transport` label of metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rail {
    /// Server-Sent Events.
    Sse,
    /// WebSocket.
    Ws,
    /// Plain HTTP reverse proxy.
    Http,
}

impl Rail {
    /// The `transport` metric label.
    pub fn label(self) -> &'static str {
        match self {
            Rail::Sse => "sse",
            Rail::Ws => "ws",
            Rail::Http => "http",
        }
    }
}

/// Whose stream an SSE route's upstream stream is (the `stream_scope` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamScope {
    /// The same for every member of the thread: one journal and (with `share_upstream`) one
    /// upstream stream per thread.
    Thread,
    /// Personal to each user: journals and shared upstream streams per (thread, user).
    User,
}

/// How an SSE route delivers its events (the `delivery` key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Every event arrives, once: journal, resume, slow consumers cut (and then resumed).
    Durable,
    /// Only the latest matters: no journal, no resume cursor, never cut; under backpressure the
    /// newest event per key is kept.
    Ephemeral(Ephemeral),
}

/// The knobs of an ephemeral route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ephemeral {
    /// JSON pointer to the coalescing key in an event's data (`coalesce_key`, default
    /// `/actor_id`); events without it coalesce under one empty key.
    pub coalesce_key: String,
    /// Most events per second per key, across the stream (`key_rate_per_s`; 0 = no cap).
    pub key_rate_per_s: u32,
}

/// What the gateway does with the client's WS hello towards the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloMode {
    /// Send the upstream a hello with the verified context and cursor.
    Forward,
    /// Send no hello; pass the cursor as `?last_event_id=`.
    Consume,
}

/// One route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name (metrics label).
    pub name: String,
    /// Path pattern.
    pub pattern: Pattern,
    /// Rail.
    pub kind: Rail,
    /// Required context fields.
    pub require: Vec<Field>,
    /// JSON pointer into a 2xx answer that names a thread the caller now owns.
    pub registers_thread: Option<String>,
    /// Upstream base URL.
    pub upstream: String,
    /// `upstream` parsed once (`None` when it is not a URL, a problem reported at load).
    pub upstream_base: Option<UpstreamBase>,
    /// Upstream path template (default: the request path).
    pub upstream_path: Option<String>,
    /// All clients of one thread share one upstream stream.
    pub share_upstream: bool,
    /// Whether the stream is the thread's or each user's.
    pub stream_scope: StreamScope,
    /// How long a broken upstream stream may take to come back.
    pub resume_deadline: Duration,
    /// WS hello handling.
    pub hello: HelloMode,
    /// JSON pointer to the event id in WS messages.
    pub ws_event_id: String,
    /// Binary messages from WS clients are forwarded (unguarded) instead of refused.
    pub ws_allow_binary: bool,
    /// Allowed WS `Origin` values (empty: any).
    pub allowed_origins: Vec<String>,
    /// Answer 404 for foreign threads too.
    pub hide_foreign_threads: bool,
    /// The path variable naming the resource the caller must own (`resource`, default
    /// `thread_id`).
    pub resource: String,
    /// What kind of resource it is (`resource_kind`, default `thread`): the registry is asked per
    /// kind.
    pub resource_kind: String,
    /// How an SSE route delivers events (`delivery`).
    pub delivery: Delivery,
    /// Credentials accepted (`auth`).
    pub accepts: Accepts,
    /// The client's `Authorization` goes to the upstream (HTTP rail).
    pub forward_authorization: bool,
    /// Extra CA certificates (PEM) this route's `https://` upstream is verified with.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// The name this route's upstream certificate is checked against (and sent as SNI), when
    /// it is not the URL's host.
    pub tls_server_name: Option<String>,
}

/// A route's upstream base URL in parts, so that a request's upstream URI is put together
/// without parsing the base again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamBase {
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// Host and port.
    pub authority: http::uri::Authority,
    /// The base's path without its trailing `/` (`""` for none), put before a request's path.
    pub path: String,
}

impl UpstreamBase {
    /// Parts of an `http://` or `https://` URL with a host.
    pub fn parse(url: &str) -> Option<UpstreamBase> {
        let uri: http::Uri = url.parse().ok()?;
        let parts = uri.into_parts();
        let scheme = parts
            .scheme
            .filter(|s| matches!(s.as_str(), "http" | "https"))?;
        let path = parts.path_and_query.as_ref().map_or("", |pq| pq.path());
        Some(UpstreamBase {
            scheme,
            authority: parts.authority?,
            path: path.trim_end_matches('/').to_owned(),
        })
    }
}

/// Which credentials a route accepts (the `auth` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepts {
    /// `Authorization: Bearer` JWTs.
    pub jwt: bool,
    /// Single-use tickets (`?ticket=` or in the WS hello).
    pub ticket: bool,
    /// SSE resume grants (the cookie that lets a ticket's stream reconnect).
    pub resume_grant: bool,
}

impl Accepts {
    /// JWTs only (HTTP routes by default, the ticket endpoint).
    pub const JWT: Accepts = Accepts {
        jwt: true,
        ticket: false,
        resume_grant: false,
    };
}

impl Route {
    /// The id of the owned resource, if the route's pattern has its variable.
    pub fn resource_id<'c>(&self, caps: &'c Captures) -> Option<&'c str> {
        caps.get(&self.resource)
    }

    /// Whether clients can resume the route's streams (durable delivery).
    pub fn resumable(&self) -> bool {
        self.delivery == Delivery::Durable
    }

    /// The path's values of variables named like a context field (`{canvas_id}`, …).
    /// (A route's variables are few: each is looked up among the fields, not each field among
    /// them.)
    pub fn path_fields<'c>(&self, caps: &'c Captures) -> Vec<(Field, &'c str)> {
        let mut out: Vec<(Field, &str)> = caps
            .vars()
            .filter_map(|(name, v)| Some((*Field::ALL.iter().find(|f| f.key() == name)?, v)))
            .collect();
        out.sort_by_key(|(f, _)| f.index());
        out
    }

    /// The scope fields the request names (`workspace_id`, `canvas_id`, `projection_id`,
    /// `panel_id`), other than the resource itself.
    pub fn scope<'c>(&self, ctx: &'c RequestContext) -> Vec<(&'static str, &'c str)> {
        Field::SCOPES
            .into_iter()
            .filter(|f| f.key() != self.resource)
            .filter_map(|f| ctx.get(f).map(|v| (f.key(), v)))
            .collect()
    }

    /// Where a session of this route is: its resource (key and id), then [`Route::scope`].
    pub fn place(&self, id: &str, ctx: &RequestContext) -> Vec<(String, String)> {
        let scope = self.scope(ctx).into_iter();
        std::iter::once((self.resource.as_str(), id))
            .chain(scope)
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// The key of a stream's journal and shared upstream stream: the resource, or the resource
    /// and the user for `stream_scope = "user"`, then the request's [`Route::scope`], so that
    /// every client of one hub has the same scope (none of the parts can hold `/` or `|`).
    pub fn stream_key(&self, resource: &str, ctx: &RequestContext) -> String {
        let mut key = match self.stream_scope {
            StreamScope::Thread => resource.to_owned(),
            StreamScope::User => format!("{resource}/{}", ctx.user_id),
        };
        for (k, v) in self.scope(ctx) {
            key.push_str(&format!("|{k}={v}"));
        }
        key
    }
}

pub(super) fn read_routes(
    tables: Vec<Reader<'_>>,
    default_upstream: &str,
    p: &mut Problems,
) -> Vec<Route> {
    let mut routes = Vec::new();
    if tables.is_empty() {
        p.add("routes", "at least one route is required");
    }
    for mut r in tables {
        if let Some(route) = read_route(&mut r, default_upstream, p) {
            if routes.iter().any(|x: &Route| x.name == route.name) {
                p.add(
                    &r.path_of("name"),
                    format!("duplicate route name {:?}", route.name),
                );
            }
            routes.push(route);
        }
        r.finish(p);
    }
    routes
}

fn read_route(r: &mut Reader<'_>, default_upstream: &str, p: &mut Problems) -> Option<Route> {
    let name = r.string("name", p);
    if name.is_none() {
        p.add(&r.path_of("name"), "is required");
    }
    let pattern = read_pattern(r, p);
    let kind = read_kind(r, p);
    let require = read_require(r, p);
    // An inherited upstream was checked (and reported) where it was written.
    let upstream = match r.string("upstream", p) {
        Some(own) => {
            check_http_url(&own, &r.path_of("upstream"), p);
            own
        }
        None => default_upstream.to_owned(),
    };
    let hello = read_hello(r, p);
    let kind = kind?;
    let accepts = read_accepts(r, kind, p);
    let registers_thread = read_pointer(r, "registers_thread", p);
    let ws_event_id = read_ws_event_id(r, p);
    let upstream_path = r.string("upstream_path", p);
    if let (Some(t), Some(pat)) = (&upstream_path, &pattern) {
        check_upstream_path(r, t, pat, p);
    }
    let route = Route {
        name: name?,
        pattern: pattern?,
        kind,
        require,
        registers_thread,
        upstream_base: UpstreamBase::parse(&upstream),
        upstream,
        upstream_path,
        share_upstream: r.boolean("share_upstream", p).unwrap_or(false),
        stream_scope: read_scope(r, p),
        resume_deadline: Duration::from_secs(r.uint("resume_deadline_s", p).unwrap_or(30)),
        hello,
        ws_event_id,
        ws_allow_binary: r.boolean("ws_allow_binary", p).unwrap_or(false),
        allowed_origins: r.strings("allowed_origins", p).unwrap_or_default(),
        hide_foreign_threads: r.boolean("hide_foreign_threads", p).unwrap_or(false),
        accepts,
        forward_authorization: r.boolean("forward_authorization", p).unwrap_or(true),
        tls_ca_file: r.string("tls_ca_file", p).map(Into::into),
        tls_server_name: r.string("tls_server_name", p),
        resource: r
            .string("resource", p)
            .unwrap_or_else(|| "thread_id".into()),
        resource_kind: read_resource_kind(r, p),
        delivery: read_delivery(r, kind, p),
    };
    if route.kind != Rail::Http && route.pattern.vars().all(|v| v != route.resource) {
        let why = format!(
            "sse and ws routes need a {{{}}} segment (the route's resource)",
            route.resource
        );
        p.add(&r.path_of("path"), why);
    }
    Some(route)
}

/// `require`: context fields, which must include `tenant` (default `["tenant"]`).
fn read_require(r: &mut Reader<'_>, p: &mut Problems) -> Vec<Field> {
    let path = r.path_of("require");
    let names = r
        .strings("require", p)
        .unwrap_or_else(|| vec!["tenant".into()]);
    let require = fields(&names, &path, p);
    if !require.contains(&Field::Tenant) {
        p.add(
            &path,
            "must include \"tenant\" (tenant_id is always required)",
        );
    }
    require
}

/// An optional JSON pointer key (`registers_thread`).
fn read_pointer(r: &mut Reader<'_>, key: &'static str, p: &mut Problems) -> Option<String> {
    let ptr = r.string(key, p);
    if ptr.as_ref().is_some_and(|ptr| !ptr.starts_with('/')) {
        p.add(&r.path_of(key), "must be a JSON pointer such as \"/id\"");
    }
    ptr
}

/// `ws_event_id`: a JSON pointer (default `/id`).
fn read_ws_event_id(r: &mut Reader<'_>, p: &mut Problems) -> String {
    let ws_event_id = r.string("ws_event_id", p).unwrap_or_else(|| "/id".into());
    if !ws_event_id.starts_with('/') {
        p.add(
            &r.path_of("ws_event_id"),
            format!("{ws_event_id:?} is not a JSON pointer such as \"/id\" or \"/event/id\""),
        );
    }
    ws_event_id
}

fn read_pattern(r: &mut Reader<'_>, p: &mut Problems) -> Option<Pattern> {
    match r.string("path", p).map(|t| Pattern::parse(&t)) {
        Some(Ok(pat)) => Some(pat),
        Some(Err(e)) => {
            p.add(&r.path_of("path"), e);
            None
        }
        None => {
            p.add(&r.path_of("path"), "is required");
            None
        }
    }
}

/// An `upstream_path` template parses and uses only variables of the route's path.
fn check_upstream_path(r: &Reader<'_>, template: &str, pattern: &Pattern, p: &mut Problems) {
    if let Err(e) = Pattern::parse(template) {
        p.add(&r.path_of("upstream_path"), e);
    }
    for var in template
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|v| v.strip_suffix('}')))
    {
        if !pattern.vars().any(|v| v == var) {
            p.add(
                &r.path_of("upstream_path"),
                format!("{{{var}}} is not a variable of the route path"),
            );
        }
    }
}
