//! The registry of shared SSE hubs (one per route and stream key — the thread, or thread and
//! user — with `share_upstream`) and the journals of every stream.

use crate::journal::Journals;
use crate::metrics::Metrics;
use crate::proxy::sse_hub::Hub;
use crate::proxy::sse_screen::{HubMetrics, Screened};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Shared hubs and the journals of every thread.
#[derive(Default)]
pub struct Hubs {
    shared: Mutex<HashMap<(String, String), Arc<Hub>>>,
    /// Per-thread journals.
    pub journals: Journals<Screened>,
    /// The hub metrics of each route name, looked up once (not per stream: a lookup hashes
    /// every label, and each hub would hold its own copy of the handles).
    metrics: Mutex<HashMap<String, Arc<HubMetrics>>>,
}

/// A client attached to a shared hub.
pub struct Joined<T> {
    /// The hub.
    pub hub: Arc<Hub>,
    /// The hub was created for this client: its upstream side must be started.
    pub created: bool,
    /// What the attach step returned.
    pub attached: T,
}

impl Hubs {
    /// The metrics of the hubs of route `route`.
    pub fn metrics_of(&self, metrics: &Metrics, route: &str) -> Arc<HubMetrics> {
        let mut known = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = known.get(route) {
            return m.clone();
        }
        let m = Arc::new(HubMetrics::of(metrics, route));
        known.insert(route.to_owned(), m.clone());
        m
    }

    /// Attaches a client to the shared hub of a stream, creating the hub if needed. `attach` runs
    /// under the registry lock, so a hub is never removed between being found and being joined.
    pub fn join_shared<T>(
        &self,
        route: &str,
        stream: &str,
        make: impl FnOnce() -> Arc<Hub>,
        attach: impl FnOnce(&Arc<Hub>) -> T,
    ) -> Joined<T> {
        let mut hubs = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let key = (route.to_owned(), stream.to_owned());
        let (hub, created) = match hubs.get(&key) {
            Some(h) => (h.clone(), false),
            None => (make(), true),
        };
        let attached = attach(&hub);
        if created {
            hubs.insert(key, hub.clone());
        }
        Joined {
            hub,
            created,
            attached,
        }
    }

    /// Removes a shared hub if it has no client; `false` when a client joined meanwhile.
    pub fn try_remove(&self, hub: &Arc<Hub>) -> bool {
        let mut hubs = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if !hub.is_empty() {
            return false;
        }
        let key = (hub.route.name.clone(), hub.key.clone());
        if hubs.get(&key).is_some_and(|h| Arc::ptr_eq(h, hub)) {
            hubs.remove(&key);
        }
        true
    }
}
