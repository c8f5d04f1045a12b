//! railgate: a reverse-proxy sidecar that makes a chat backend's realtime rails safe.
//!
//! Decisions (tokens, tickets, context, ownership, error codes) live in `railgate-policy`; this
//! crate does the IO around them, as a sequence of phases per request:
//! route → credentials → context → ownership → upstream → relay → log.
//!
//! - [`config`]: embedded defaults, TOML file, environment and flags.
//! - [`app`]: the shared state built from the config.
//! - [`server`]: listeners, entry point, drain; [`admin`]: metrics, health, `/admin/*`.
//! - [`pipeline`]: admission phases; [`auth`]: keys, JWKS, used tickets; [`registry`]: ownership.
//! - [`proxy`]: the rails (HTTP now) and the upstream client; [`respond`]: denial → response.
//! - [`metrics`], [`mint`] (`railgate token` / `ticket`), [`env`].

pub mod admin;
pub mod app;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod dedupe;
pub mod demo;
pub mod env;
pub mod inject;
pub mod journal;
pub mod metrics;
pub mod mint;
pub mod pipeline;
pub mod presence;
pub mod proxy;
pub mod registry;
pub mod respond;
pub mod server;
pub mod sse;
pub mod tickets;

pub use app::Gateway;
pub use server::{run, Listeners};

/// Binds both listeners, fetches a configured JWKS once, and returns the state ready to `run`.
/// The caller prints the READY line once this returns.
pub async fn bind(gw: &std::sync::Arc<Gateway>) -> std::io::Result<Listeners> {
    let main = tokio::net::TcpListener::bind(gw.config.listen).await?;
    let admin = tokio::net::TcpListener::bind(gw.config.admin_listen).await?;
    if gw.auth.keys.has_url() {
        if let Err(e) = gw.auth.keys.refresh().await {
            tracing::warn!(error = %e, "initial JWKS fetch failed; tokens signed by its keys are refused until a refresh succeeds");
        }
    }
    Ok(Listeners { main, admin })
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
        .with_current_span(false)
        .try_init();
}
