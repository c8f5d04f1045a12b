//! The gateway's shared state, built once from the configuration.

use crate::auth::{Auth, KeyStore, TicketBook};
use crate::caps::{Caps, StreamSlot};
use crate::client::HttpClient;
use crate::config::{Config, RegistryConfig};
use crate::env::Env;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::proxy::sse_hubs::Hubs;
use crate::registry::Registry;
use arc_swap::ArcSwap;
use railgate_policy::Denial;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a reload replaces: the configuration and the credentials and registry built from it.
/// A request or stream keeps the snapshot it started with.
pub struct Live {
    /// Configuration in force.
    pub config: Config,
    /// Credentials (keys, rules, ticket secrets; the used-ticket book is shared across reloads).
    pub auth: Auth,
    /// Ownership registry (kept across a reload that leaves `[registry]` unchanged).
    pub registry: Arc<Registry>,
}

/// Where a reload reads the configuration again.
#[derive(Debug, Clone)]
pub struct ReloadFrom {
    /// The config file.
    pub path: std::path::PathBuf,
    /// The command line's overrides, applied again.
    pub flags: crate::config::Overrides,
}

/// Everything a request handler needs.
pub struct Gateway {
    live: ArcSwap<Live>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
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
    /// Used tickets, kept across reloads.
    pub book: Arc<TicketBook>,
    /// Where `SIGHUP` and `POST /admin/reload` read the configuration (`None`: no file).
    pub reload_from: std::sync::OnceLock<ReloadFrom>,
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

    /// The configuration and credentials in force.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Puts a reloaded configuration in force.
    pub fn replace(&self, live: Live) {
        self.metrics.declare(&live.config.routes);
        self.caps.set_bounds(live.config.limits.caps);
        self.live.store(Arc::new(live));
    }

    /// Builds what a configuration brings: credentials and the registry, reporting every
    /// problem at once. `registry`: the one in force, kept when `[registry]` is unchanged.
    pub fn build_live(
        config: Config,
        env: &dyn Env,
        shared: (&HttpClient, &Arc<Metrics>, &Arc<TicketBook>),
        registry: Option<(&RegistryConfig, Arc<Registry>)>,
    ) -> Result<Live, Vec<String>> {
        let (client, metrics, book) = shared;
        let mut problems = Vec::new();
        let keys = KeyStore::new(&config.auth, env, client.clone())
            .map_err(|e| problems.extend(e.0))
            .ok();
        let tickets = Auth::ticket_secrets(&config.auth, env)
            .map_err(|e| problems.push(e))
            .ok();
        let registry = match registry {
            Some((old, kept)) if *old == config.registry => Some(kept),
            _ => Registry::new(&config.registry, client.clone(), metrics.clone())
                .map_err(|e| problems.push(e))
                .ok(),
        };
        let (Some(keys), Some(tickets), Some(registry)) = (keys, tickets, registry) else {
            return Err(problems);
        };
        let auth = Auth::new(&config.auth, keys, tickets, book.clone());
        Ok(Live {
            config,
            auth,
            registry,
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
        let book = Arc::new(TicketBook::new(
            config.auth.max_used_tickets,
            config.auth.max_used_tickets_per_tenant,
            crate::clock::now() + 1,
        ));
        let admin_token = env
            .get(crate::env::names::ADMIN_TOKEN)
            .filter(|t| !t.trim().is_empty());
        let caps = Caps::new(config.limits.caps);
        let presence = Presence::new(config.ws.presence_window, config.ws.presence_fanout_max);
        let live = Self::build_live(config, env, (&client, &metrics, &book), None)?;
        Ok(Arc::new(Gateway {
            live: ArcSwap::from_pointee(live),
            metrics,
            client,
            draining: CancellationToken::new(),
            streams: TaskTracker::new(),
            admin_token,
            caps,
            book,
            reload_from: Default::default(),
            hubs: Default::default(),
            presence,
            #[cfg(feature = "demo")]
            demo_page: Default::default(),
        }))
    }
}
