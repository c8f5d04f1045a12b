//! The gateway's shared state, built once from the configuration.

use crate::auth::{Auth, KeyStore};
use crate::caps::{Caps, StreamSlot};
use crate::client::HttpClient;
use crate::config::Config;
use crate::env::Env;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::proxy::sse_hubs::Hubs;
use crate::registry::Registry;
use railgate_policy::Denial;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything a request handler needs.
pub struct Gateway {
    /// Configuration in force.
    pub config: Config,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Credentials.
    pub auth: Auth,
    /// Ownership registry.
    pub registry: Arc<Registry>,
    /// Pooled client for short upstream exchanges.
    pub client: HttpClient,
    /// Cancelled when the gateway drains; long-lived streams end on it.
    pub draining: CancellationToken,
    /// Long-lived streams and upgraded connections (hyper's graceful shutdown does not see them).
    pub streams: TaskTracker,
    /// Admin bearer token (`None`: `/admin/*` is refused).
    pub admin_token: Option<String>,
    /// Shared SSE hubs and per-thread journals.
    pub hubs: Hubs,
    /// WebSocket presence.
    pub presence: Arc<Presence>,
    /// Open connections and streams, capped.
    pub caps: Arc<Caps>,
    /// `GET /demo`: the browser example, set by `railgate demo` only.
    #[cfg(feature = "demo")]
    pub demo_page: std::sync::OnceLock<String>,
}

impl Gateway {
    /// A slot among a tenant's open streams; `gateway.overloaded` (counted) when all are taken.
    pub fn stream_slot(&self, tenant: &str) -> Result<StreamSlot, Denial> {
        self.caps.stream(tenant).map_err(|cap| {
            self.metrics.capacity_refusal(cap);
            cap.denial()
        })
    }

    /// Builds the state. Errors are start-up problems (bad key files, bad registry file).
    pub fn new(config: Config, env: &dyn Env) -> Result<Arc<Gateway>, Vec<String>> {
        let metrics = Arc::new(
            Metrics::new(config.tenant_labels.clone())
                .map_err(|e| vec![format!("metrics: {e}")])?,
        );
        metrics.declare(&config.routes);
        let client = HttpClient::new(&config.limits);
        // Every problem at once: keys, ticket secrets and the registry file.
        let mut problems = Vec::new();
        let keys = KeyStore::new(&config.auth, env, client.clone())
            .map_err(|e| problems.extend(e.0))
            .ok();
        let tickets = Auth::ticket_secrets(&config.auth, env)
            .map_err(|e| problems.push(e))
            .ok();
        let registry = Registry::new(&config.registry, client.clone(), metrics.clone())
            .map_err(|e| problems.push(e))
            .ok();
        let (Some(keys), Some(tickets), Some(registry)) = (keys, tickets, registry) else {
            return Err(problems);
        };
        let auth = Auth::new(&config.auth, keys, tickets);
        let admin_token = env
            .get(crate::env::names::ADMIN_TOKEN)
            .filter(|t| !t.trim().is_empty());
        let caps = Caps::new(config.limits.caps);
        let presence = Presence::new(config.ws.presence_window, config.ws.presence_fanout_max);
        Ok(Arc::new(Gateway {
            config,
            metrics,
            auth,
            registry,
            client,
            draining: CancellationToken::new(),
            streams: TaskTracker::new(),
            admin_token,
            caps,
            hubs: Default::default(),
            presence,
            #[cfg(feature = "demo")]
            demo_page: Default::default(),
        }))
    }
}
