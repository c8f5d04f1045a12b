//! railgate: a reverse-proxy sidecar that makes a chat backend's realtime rails safe.
//!
//! Decisions (tokens, tickets, context, ownership, error codes) live in `railgate-policy`; this
//! crate does the IO around them. A client request runs these phases, in one direction:
//!
//! | phase | function |
//! |---|---|
//! | accept, one connection | [`server::run`] → [`conn::serve`] (TLS, HTTP/2 or HTTP/1.1) |
//! | request framing (smuggling shapes, head size and syntax) | [`wire::Guarded`] → [`dispatch::refused`] |
//! | entry, one request | [`dispatch::handle`] |
//! | early refusals (path, drain) | [`dispatch::early_checks`] |
//! | built-in endpoints | [`tickets::issue`] (`POST /auth/tickets`) |
//! | route | [`dispatch::route`] |
//! | rail's own checks | [`proxy::ws::check_upgrade`] (WS); body limit (HTTP) |
//! | credentials (401) | [`admission::credentials`] |
//! | context (400, 403) | [`admission::context`] |
//! | ownership (404, 403) | [`admission::ownership`] |
//! | rail's checks after admission | [`proxy::reconnect::cursor_of`] (SSE); the hello's cursor (WS) |
//! | ticket spent | [`admission::spend_ticket`] |
//! | rail | [`proxy::http::forward`], [`proxy::sse::serve`], [`proxy::ws::upgrade`] → [`proxy::ws_hello`] → [`proxy::ws_relay`] |
//! | upstream | [`proxy::upstream::uri`], [`client::HttpClient`] over [`client_pool`] (HTTP), [`proxy::sse_upstream::run`] (over [`proxy::sse_wire`]), [`proxy::ws_upstream::Target::connect`], [`proxy::reconnect`] |
//! | refusal, any transport | [`respond`] |
//! | log and metrics | [`outcome::record`] |
//!
//! [`admission::admit`] runs the three admission phases for HTTP, SSE, the ticket endpoint and a
//! WebSocket's hello; [`admission::precheck`] runs those a WebSocket upgrade can fail before its
//! hello. Around them: [`config`], [`app`] (the shared state, its drain signal in [`drain`]),
//! [`conn_timer`] (an HTTP/1.1 connection's one timer), [`clock`] (coarse and precise), [`auth`] (keys, JWKS, used
//! tickets), [`registry`] (ownership cache, over [`timed_cache`]), [`client`] (the upstream client, its connections in [`client_pool`]), [`admin`],
//! [`metrics`], and the pure codecs [`sse`], [`inject`], [`journal`], [`dedupe`].
//! With the `demo` feature (on by default), `railgate demo` runs an embedded backend
//! (`railgate-upstream-mock`) and serves the browser example; a deployment build can leave it
//! out with `--no-default-features`.

pub mod admin;
pub mod admission;
pub mod app;
pub mod auth;
pub mod body;
pub mod caps;
pub mod cli;
pub mod client;
pub mod client_direct;
pub mod client_pool;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod conn_timer;
pub mod dedupe;
#[cfg(feature = "demo")]
pub mod demo;
pub mod dispatch;
pub mod drain;
pub mod env;
pub mod header_names;
pub mod inbound;
pub mod inject;
pub mod journal;
pub mod log_line;
pub mod metrics;
pub mod mint;
pub mod outbound;
pub mod outcome;
pub mod presence;
pub mod proxy;
pub mod registry;
pub mod reload;
pub mod respond;
pub mod runtime;
pub mod seen_tokens;
pub mod server;
pub mod sse;
pub mod startup;
pub mod stream_out;
pub mod ticket_book;
pub mod tickets;
pub mod timed_cache;
pub mod wire;

pub use app::Gateway;
pub use server::{run, Listeners};

/// Binds both listeners, fetches a configured JWKS once, and returns the state ready to `run`.
/// The caller prints the READY line once this returns.
pub async fn bind(gw: &std::sync::Arc<Gateway>) -> std::io::Result<Listeners> {
    let main = bind_at(gw.live().config.listen).await?;
    let admin = bind_at(gw.live().config.admin_listen).await?;
    if gw.live().auth.keys.has_url() {
        if let Err(e) = gw.live().auth.keys.refresh().await {
            tracing::warn!(error = %e, "initial JWKS fetch failed; tokens signed by its keys are refused until a refresh succeeds");
        }
    }
    tickets_epoch(gw).await;
    Ok(Listeners { main, admin })
}

/// Binds one listener; the error names the address.
async fn bind_at(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{addr}: {e}")))
}

/// Waits until the first second whose tickets this process vouches for has begun (at most a
/// second): tickets minted before it count as used, since the used-ticket book starts empty.
pub async fn tickets_epoch(gw: &Gateway) {
    let epoch = std::time::UNIX_EPOCH + std::time::Duration::from_secs(gw.live().auth.book.epoch());
    if let Ok(wait) = epoch.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
}

/// The READY line for these listeners.
pub fn ready_line(listeners: &Listeners) -> std::io::Result<String> {
    Ok(format!(
        "READY listen={} admin={}",
        listeners.main.local_addr()?,
        listeners.admin.local_addr()?
    ))
}

/// JSON log lines on stderr (stdout carries only the READY line); `RUST_LOG` filters.
pub fn init_logging() {
    init_logging_at("info");
}

/// Like [`init_logging`] with another default level when `RUST_LOG` is unset.
pub fn init_logging_at(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(log_line::Lines::new())
        .try_init();
}
