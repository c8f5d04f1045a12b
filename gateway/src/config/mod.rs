//! Configuration: the embedded defaults (`defaults.toml`, CONTRACT §11) overlaid with the user's
//! TOML file, then the environment, then command-line flags. Reading collects every problem with
//! its key path, so `railgate check` can print them all at once.

mod cluster;
pub mod locate;
mod pattern;
mod reader;
pub mod route;
mod route_keys;
mod sections;

pub use cluster::ClusterConfig;
pub use route::{Accepts, Delivery, Ephemeral, HelloMode, Pattern, Rail, Route, StreamScope};

use crate::env::{names, Env};
use railgate_policy::Field;
use reader::{Problems, Reader};
use sections::{read_auth, read_limits, read_registry, read_sse, read_ws, secs};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use toml::{Table, Value};

/// The embedded defaults, as TOML text.
pub const DEFAULTS: &str = include_str!("defaults.toml");

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Client listener.
    pub listen: SocketAddr,
    /// Admin listener (metrics, health, `/admin/*`).
    pub admin_listen: SocketAddr,
    /// The deployment env.
    pub env: String,
    /// Values `mode` may take.
    pub allowed_modes: Vec<String>,
    /// Default upstream base URL (`http://host:port`).
    pub upstream: String,
    /// How long a drain may take.
    pub drain_timeout: Duration,
    /// Runtime worker threads (0: one per CPU core).
    pub workers: usize,
    /// Credentials.
    pub auth: AuthConfig,
    /// Thread ownership registry.
    pub registry: RegistryConfig,
    /// Limits and timeouts.
    pub limits: Limits,
    /// SSE rail settings.
    pub sse: SseConfig,
    /// WebSocket rail settings.
    pub ws: WsConfig,
    /// Metric labels allowed per tenant.
    pub tenant_labels: Vec<String>,
    /// Front proxies whose forwarding headers (`X-Forwarded-*`, `Forwarded`, …) are kept.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Extra CA certificates (PEM) for every outbound `https://` connection, beside the
    /// system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// `[tls]`: the client listener's certificate (TLS, HTTP/2 by ALPN), when set.
    pub tls: Option<ListenerTls>,
    /// `[tenants."<id>"]`: per-tenant switches.
    pub tenants: std::collections::HashMap<String, TenantFlags>,
    /// `[cluster]`: replicas sharing tickets and registry changes through Redis.
    pub cluster: Option<ClusterConfig>,
    /// Routes, matched in order; shared with the streams opened on them.
    pub routes: Vec<std::sync::Arc<Route>>,
}

impl Config {
    /// Makes relative file paths (keys, JWKS, registry file) relative to `base`, the directory of
    /// the config file that named them.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(f) = self.auth.jwks_file.as_mut() {
            fix(f);
        }
        for k in &mut self.auth.public_keys {
            fix(&mut k.pem_file);
        }
        if let RegistrySource::File { path } = &mut self.registry.source {
            fix(path);
        }
        if let Some(f) = self.tls_ca_file.as_mut() {
            fix(f);
        }
        if let Some(t) = self.tls.as_mut() {
            fix(&mut t.cert_file);
            fix(&mut t.key_file);
        }
        for r in &mut self.routes {
            if let Some(f) = std::sync::Arc::make_mut(r).tls_ca_file.as_mut() {
                fix(f);
            }
        }
    }
}

/// A PEM public key pinned to one algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemKey {
    /// File holding the PEM.
    pub pem_file: PathBuf,
    /// The algorithm the key verifies.
    pub alg: String,
    /// The `kid` it answers to.
    pub kid: Option<String>,
}

/// One tenant's switches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantFlags {
    /// Routes this tenant may not use (`403 feature.disabled`).
    pub disabled_routes: Vec<String>,
}

/// `[tls]`: the client listener's certificate chain and key (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Certificate chain, end-entity first.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Env var holding the HS256 secret (unset or empty: no HS256 key).
    pub jwt_hs256_secret_env: String,
    /// JWKS file.
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL (`http://` or `https://`), refreshed in the background.
    pub jwks_url: Option<String>,
    /// An OpenID provider's issuer: its discovery document names the JWKS URL (refreshed like
    /// `jwks_url`), and tokens must carry it as `iss`.
    pub oidc_issuer: Option<String>,
    /// Background refresh interval of `jwks_url`.
    pub jwks_refresh: Duration,
    /// At most one extra fetch per this interval on an unknown `kid`.
    pub jwks_min_refresh: Duration,
    /// PEM public keys.
    pub public_keys: Vec<PemKey>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud`.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` / `nbf`.
    pub leeway_s: u64,
    /// Env var holding the ticket key.
    pub ticket_secret_env: String,
    /// Env var holding the previous ticket key (rotation).
    pub ticket_secret_previous_env: String,
    /// Whether the resume-grant cookie carries `Secure`.
    pub cookie_secure: bool,
    /// Most tickets remembered as used at once (older expired ones are forgotten first).
    pub max_used_tickets: usize,
    /// Used tickets remembered for one tenant at most.
    pub max_used_tickets_per_tenant: usize,
}

/// Where ownership records come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrySource {
    /// `GET {url}/registry/threads/{id}`.
    Upstream {
        /// Base URL.
        url: String,
    },
    /// A JSON file, reloaded when it changes.
    File {
        /// Path.
        path: PathBuf,
    },
}

/// `[registry]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryConfig {
    /// Source.
    pub source: RegistrySource,
    /// Positive answers are cached this long.
    pub ttl: Duration,
    /// "Not found" is cached this long.
    pub negative_ttl: Duration,
    /// A known record is still used this long after its TTL when the source fails.
    pub stale_if_error: Duration,
    /// Timeout of one lookup.
    pub timeout: Duration,
    /// Most records cached.
    pub max_entries: u64,
}

/// `[limits]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request header block.
    pub max_header_bytes: usize,
    /// Largest HTTP request body forwarded.
    pub max_body_bytes: u64,
    /// Time allowed for a client to send its request headers.
    pub header_read_timeout: Duration,
    /// Upstream TCP connect timeout.
    pub upstream_connect_timeout: Duration,
    /// Time allowed for the upstream to answer with headers.
    pub upstream_response_timeout: Duration,
    /// Idle pooled upstream connections are closed after this.
    pub upstream_idle_timeout: Duration,
    /// Caps on open connections and streams.
    pub caps: crate::caps::Bounds,
}

/// `[sse]`.
#[derive(Debug, Clone)]
pub struct SseConfig {
    /// Keep-alive comment interval.
    pub keepalive: Duration,
    /// Per-client queue length, in deliveries (one read's or one batch window's events), before
    /// `stream.slow_consumer`.
    pub client_queue_events: usize,
    /// Per-client queue, in bytes.
    pub client_queue_bytes: usize,
    /// Journal bound per thread: events.
    pub journal_events: usize,
    /// Journal bound per thread: bytes.
    pub journal_bytes: usize,
    /// Journal bound per thread: age.
    pub journal_age: Duration,
    /// Largest upstream event accepted.
    pub max_event_bytes: usize,
    /// Shortest gap between two deliveries of one upstream stream; events that arrive sooner
    /// wait (at most this long) and go out together. Zero: every read is delivered at once.
    pub batch_window: Duration,
}

/// `[ws]`.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Time allowed for the hello.
    pub hello_timeout: Duration,
    /// Ping interval.
    pub ping_interval: Duration,
    /// Close when no pong arrives for this long.
    pub pong_timeout: Duration,
    /// Largest message.
    pub max_message_bytes: usize,
    /// Client messages held while the upstream reconnects.
    pub held_messages: usize,
    /// Bytes of client messages held while the upstream reconnects, at most.
    pub held_bytes: usize,
    /// Presence join/leave events.
    pub presence: bool,
    /// Presence changes within this window go out as one message.
    pub presence_window: Duration,
    /// Above this many members of a thread, presence changes are no longer pushed.
    pub presence_fanout_max: usize,
}

/// Values from the command line that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--admin-listen`.
    pub admin_listen: Option<String>,
    /// `--upstream`.
    pub upstream: Option<String>,
}

/// Every problem found, each with its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.0 {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Overlays `user` on `base`: tables merge key by key, anything else (arrays included) replaces.
fn overlay(base: &mut Table, user: Table) {
    for (k, v) in user {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(u)) => overlay(b, u),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Loads the configuration from optional file text, the environment and flags.
pub fn load(file: Option<&str>, env: &dyn Env, flags: &Overrides) -> Result<Config, ConfigErrors> {
    match load_all(file, env, flags) {
        (Some(c), problems) if problems.is_empty() => Ok(c),
        (_, problems) => Err(ConfigErrors(problems)),
    }
}

/// Like [`load`], but returns what could be read even when there are problems (so that the
/// files it names can be checked too), with every problem.
pub fn load_all(
    file: Option<&str>,
    env: &dyn Env,
    flags: &Overrides,
) -> (Option<Config>, Vec<String>) {
    let mut merged: Table = match DEFAULTS.parse() {
        Ok(t) => t,
        Err(e) => return (None, vec![format!("embedded defaults: {e}")]),
    };
    if let Some(text) = file {
        match text.parse::<Table>() {
            Ok(user) => overlay(&mut merged, user),
            Err(e) => return (None, vec![format!("syntax: {e}")]),
        }
    }
    let mut p = Problems::default();
    let config = read(&merged, env, flags, &mut p);
    (config, p.0)
}

fn addr(text: Option<String>, path: &str, p: &mut Problems) -> Option<SocketAddr> {
    let text = text?;
    match text.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(path, format!("{text:?} is not an IP:port address"));
            None
        }
    }
}

/// Checks an outbound base URL: `http://` or `https://` with a host.
pub fn check_http_url(url: &str, path: &str, p: &mut Problems) {
    match url.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => {}
        _ => p.add(path, format!("{url:?} is not an http:// or https:// URL")),
    }
}

fn read(root: &Table, env: &dyn Env, flags: &Overrides, p: &mut Problems) -> Option<Config> {
    let mut r = Reader::new(root, "");
    let (file_listen, file_admin) = (r.string("listen", p), r.string("admin_listen", p));
    let listen = addr(flags.listen.clone().or(file_listen), "listen", p);
    let admin_listen = addr(flags.admin_listen.clone().or(file_admin), "admin_listen", p);
    let env_value = r
        .string("env", p)
        .or_else(|| env.get(names::ENV))
        .unwrap_or_else(|| "dev".into());
    if !railgate_policy::field::valid_value(env_value.as_bytes()) {
        p.add("env", format!("{env_value:?} is not a valid env name"));
    }
    let allowed_modes = r.strings("allowed_modes", p).unwrap_or_default();
    if allowed_modes.is_empty() {
        p.add("allowed_modes", "must list at least one mode");
    }
    let file_upstream = r.string("upstream", p);
    let upstream = flags.upstream.clone().or(file_upstream).unwrap_or_default();
    check_http_url(&upstream, "upstream", p);
    let drain_timeout = secs(&mut r, "drain_timeout_s", 10, p);
    let workers = r.uint("workers", p).unwrap_or(0) as usize;
    if workers > 1024 {
        p.add("workers", "must be at most 1024 (0 = one per CPU core)");
    }
    let auth = read_auth(r.table("auth", p), p);
    let registry = read_registry(r.table("registry", p), &upstream, p);
    let limits = read_limits(r.table("limits", p), p);
    let sse = read_sse(r.table("sse", p), p);
    let ws = read_ws(r.table("ws", p), p);
    let tenant_labels = match r.table("metrics", p) {
        Some(mut m) => {
            let labels = m.strings("tenant_labels", p).unwrap_or_default();
            m.finish(p);
            labels
        }
        None => Vec::new(),
    };
    let trusted_proxies = read_cidrs(r.strings("trusted_proxies", p).unwrap_or_default(), p);
    let tls_ca_file = r.string("tls_ca_file", p).map(Into::into);
    let tls = r
        .table("tls", p)
        .and_then(|t| sections::read_listener_tls(t, p));
    let routes = route::read_routes(r.tables("routes", p).unwrap_or_default(), &upstream, p);
    let tenants = sections::read_tenants(&mut r, &routes, p);
    let cluster = cluster::read_cluster(r.table("cluster", p), p);
    r.finish(p);
    Some(Config {
        listen: listen?,
        admin_listen: admin_listen?,
        env: env_value,
        allowed_modes,
        upstream,
        drain_timeout,
        workers,
        auth: auth?,
        registry: registry?,
        limits,
        sse,
        ws,
        tenant_labels,
        trusted_proxies,
        tls_ca_file,
        tls,
        tenants,
        cluster,
        routes: routes.into_iter().map(std::sync::Arc::new).collect(),
    })
}

/// Parses `trusted_proxies`: CIDRs, or single addresses (a /32 or /128).
fn read_cidrs(texts: Vec<String>, p: &mut Problems) -> Vec<ipnet::IpNet> {
    let mut out = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let parsed = t
            .parse::<ipnet::IpNet>()
            .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => out.push(net),
            Err(_) => p.add(
                &format!("trusted_proxies[{i}]"),
                format!("{t:?} is not a CIDR such as \"10.0.0.0/8\" or an IP address"),
            ),
        }
    }
    out
}

/// Parses a route's `require` entry list.
pub(crate) fn fields(names: &[String], path: &str, p: &mut Problems) -> Vec<Field> {
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        match Field::parse(n) {
            Some(f) => out.push(f),
            None => p.add(&format!("{path}[{i}]"), format!("{n:?} is not a context field (tenant, mode, project, app, surface, env, workspace, canvas, projection, panel)")),
        }
    }
    out
}

#[cfg(test)]
mod tests;
