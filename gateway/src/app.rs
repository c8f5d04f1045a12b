//! The gateway's shared state, built once from the configuration.

use crate::auth::{Auth, KeyStore, TicketBook};
use crate::caps::{Caps, StreamSlot};
use crate::client::HttpClient;
use crate::config::{Config, RegistryConfig};
use crate::drain::Drain;
use crate::env::Env;
use crate::metrics::Metrics;
use crate::outbound::{self, UpstreamTls};
use crate::presence::Presence;
use crate::proxy::sse_hubs::Hubs;
use crate::registry::Registry;
use arc_swap::ArcSwap;
use railgate_policy::Denial;
use std::collections::HashMap;
use std::sync::Arc;
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
    /// Outbound clients and TLS settings.
    pub outbound: Outbound,
}

/// How the gateway reaches out: the shared pooled client (JWKS, OIDC discovery, registry, and
/// HTTP routes without TLS settings of their own), and each route's TLS settings (and client,
/// when it has settings of its own).
pub struct Outbound {
    /// The shared client.
    pub http: HttpClient,
    default_tls: UpstreamTls,
    routes: HashMap<String, (UpstreamTls, HttpClient)>,
}

impl Outbound {
    /// Builds the clients of `config`, reporting every CA file that cannot be read.
    pub fn new(config: &Config) -> Result<Outbound, Vec<String>> {
        let mut problems = Vec::new();
        let alpn: &[&[u8]] = &[b"http/1.1"];
        let default_tls = match outbound::client_config(config.tls_ca_file.as_deref(), alpn) {
            Ok(c) => UpstreamTls {
                config: c,
                server_name: None,
            },
            Err(e) => return Err(vec![format!("tls_ca_file {e}")]),
        };
        let mut routes = HashMap::new();
        for (i, r) in config.routes.iter().enumerate() {
            if r.tls_ca_file.is_none() && r.tls_server_name.is_none() {
                continue;
            }
            let ca = r.tls_ca_file.as_deref().or(config.tls_ca_file.as_deref());
            match outbound::client_config(ca, alpn) {
                Ok(c) => {
                    let tls = UpstreamTls {
                        config: c,
                        server_name: r.tls_server_name.clone(),
                    };
                    let client = HttpClient::new(&config.limits, &tls);
                    routes.insert(r.name.clone(), (tls, client));
                }
                Err(e) => problems.push(format!("routes[{i}].tls_ca_file {e}")),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Outbound {
            http: HttpClient::new(&config.limits, &default_tls),
            default_tls,
            routes,
        })
    }

    /// The client for a route's HTTP requests.
    pub fn http_for(&self, route: &str) -> &HttpClient {
        self.routes.get(route).map_or(&self.http, |(_, c)| c)
    }

    /// The TLS settings of a route's upstream streams.
    pub fn tls_for(&self, route: &str) -> &UpstreamTls {
        self.routes.get(route).map_or(&self.default_tls, |(t, _)| t)
    }
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
    /// Started when the gateway drains; long-lived streams end on it.
    pub draining: Drain,
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
    /// Cluster mode's shared state (`[cluster]`; read at start-up, not reloaded).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The client listener's certificate (`[tls]`), when it speaks TLS.
    pub tls: Option<Arc<crate::inbound::CertStore>>,
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
        shared: (&Arc<Metrics>, &Arc<TicketBook>),
        registry: Option<(&RegistryConfig, Arc<Registry>)>,
    ) -> Result<Live, Vec<String>> {
        let (metrics, book) = shared;
        let mut problems = Vec::new();
        let outbound = Outbound::new(&config).map_err(|e| problems.extend(e)).ok();
        let client = outbound.as_ref().map(|o| o.http.clone());
        let Some(client) = client else {
            return Err(problems);
        };
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
        let (Some(keys), Some(tickets), Some(registry), Some(outbound)) =
            (keys, tickets, registry, outbound)
        else {
            return Err(problems);
        };
        let auth = Auth::new(&config.auth, keys, tickets, book.clone());
        Ok(Live {
            config,
            auth,
            registry,
            outbound,
        })
    }

    /// Builds the state. Errors are start-up problems (bad key files, bad registry file).
    pub fn new(config: Config, env: &dyn Env) -> Result<Arc<Gateway>, Vec<String>> {
        let metrics = Arc::new(
            Metrics::new(config.tenant_labels.clone())
                .map_err(|e| vec![format!("metrics: {e}")])?,
        );
        metrics.declare(&config.routes);
        let cluster = match &config.cluster {
            Some(c) => {
                let gauge = metrics.cluster_gauge().map_err(|e| vec![e])?;
                Some(crate::cluster::Cluster::new(c, gauge).map_err(|e| vec![e])?)
            }
            None => None,
        };
        let book = Arc::new(
            TicketBook::new(
                config.auth.max_used_tickets,
                config.auth.max_used_tickets_per_tenant,
                crate::clock::now() + 1,
            )
            .with_cluster(cluster.clone()),
        );
        let admin_token = env
            .get(crate::env::names::ADMIN_TOKEN)
            .filter(|t| !t.trim().is_empty());
        let caps = Caps::new(config.limits.caps);
        let presence = Presence::new(config.ws.presence_window, config.ws.presence_fanout_max);
        let tls = config
            .tls
            .as_ref()
            .map(|t| crate::inbound::CertStore::load(&t.cert_file, &t.key_file));
        let built = Self::build_live(config, env, (&metrics, &book), None);
        let (live, tls) = match (built, tls.transpose()) {
            (Ok(live), Ok(tls)) => (live, tls),
            (built, tls) => {
                let mut problems = built.err().unwrap_or_default();
                problems.extend(tls.err());
                return Err(problems);
            }
        };
        Ok(Arc::new(Gateway {
            live: ArcSwap::from_pointee(live),
            metrics,
            draining: Drain::default(),
            streams: TaskTracker::new(),
            admin_token,
            caps,
            book,
            cluster,
            tls,
            reload_from: Default::default(),
            hubs: Default::default(),
            presence,
            #[cfg(feature = "demo")]
            demo_page: Default::default(),
        }))
    }
}
