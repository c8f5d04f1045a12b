//! The operator-facing counters beyond the request path: capacity refusals, client protocols,
//! what ephemeral routes let go, and cluster mode's health gauge.

use super::{counter, Metrics};
use crate::config::Rail;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};
use std::sync::OnceLock;

/// The series of a counter with a closed set of label values, each looked up once (a lookup
/// hashes every label value) and then kept: `N` series, found by their index.
pub(super) struct Series<const N: usize>([OnceLock<IntCounter>; N]);

impl<const N: usize> Default for Series<N> {
    fn default() -> Self {
        Series(std::array::from_fn(|_| OnceLock::new()))
    }
}

impl<const N: usize> Series<N> {
    /// Series `i` of `vec`, labelled `labels` (the same labels for the same `i` every time).
    pub(super) fn get(&self, i: usize, vec: &IntCounterVec, labels: &[&str]) -> &IntCounter {
        self.0[i].get_or_init(|| vec.with_label_values(labels))
    }
}

/// Counters of what an ephemeral route's client overflow lets go.
#[derive(Clone)]
pub struct EphemeralDropped {
    /// An older event replaced by a newer one of the same key.
    pub superseded: IntCounter,
    /// The oldest waiting event, pushed out by a new key over the bound.
    pub overflow: IntCounter,
}

/// The counters of capacity, protocols and ephemeral delivery.
pub(super) struct OpsCounters {
    /// Connections and streams refused by a capacity cap.
    pub(super) capacity_refusals_total: IntCounterVec,
    /// Client connections served, by protocol (`http/1.1`, `h2`) and whether over TLS.
    pub(super) client_connections_total: IntCounterVec,
    /// Requests by rail and HTTP version of the client's request.
    pub(super) requests_by_protocol_total: IntCounterVec,
    /// Its series: rail × (`http/1.0`, `http/1.1`, `h2`).
    by_protocol: Series<9>,
    /// `client_connections_total`'s series: (`http/1.1`, `h2`) × TLS.
    connections: Series<4>,
    /// Events of ephemeral routes let go by design, by reason.
    pub(super) ephemeral_dropped_total: IntCounterVec,
}

impl OpsCounters {
    pub(super) fn new(reg: &Registry) -> prometheus::Result<OpsCounters> {
        Ok(OpsCounters {
            capacity_refusals_total: counter(
                reg,
                "capacity_refusals_total",
                "Connections and streams refused by a capacity cap",
                &["cap"],
            )?,
            client_connections_total: counter(
                reg,
                "client_connections_total",
                "Client connections served, by protocol and TLS",
                &["protocol", "tls"],
            )?,
            requests_by_protocol_total: counter(
                reg,
                "requests_by_protocol_total",
                "Requests by rail and HTTP version",
                &["transport", "protocol"],
            )?,
            by_protocol: Series::default(),
            connections: Series::default(),
            ephemeral_dropped_total: counter(
                reg,
                "ephemeral_dropped_total",
                "Events of ephemeral routes let go: superseded, overflow, rate_cap",
                &["route", "reason"],
            )?,
        })
    }
}

impl Metrics {
    /// `railgate_cluster_upstream_streams` (cluster mode): shared threads whose upstream stream
    /// this replica reads — for the cluster (it holds the lease), or for itself while Redis
    /// cannot be reached. Registered on first use.
    pub fn cluster_upstreams(&self) -> IntGauge {
        let g = self.cluster_upstreams.get_or_init(|| {
            let g = IntGauge::new(
                "railgate_cluster_upstream_streams",
                "Shared threads whose upstream stream this replica reads",
            )
            .expect("valid metric");
            let _ = self.registry.register(Box::new(g.clone()));
            g
        });
        g.clone()
    }

    /// One request of `rail` in HTTP `version` (`http/1.0`, `http/1.1`, `h2`).
    pub fn request_protocol(&self, rail: Rail, version: http::Version) {
        let (p, protocol) = match version {
            http::Version::HTTP_2 => (2, "h2"),
            http::Version::HTTP_10 => (0, "http/1.0"),
            _ => (1, "http/1.1"),
        };
        let r = match rail {
            Rail::Http => 0,
            Rail::Sse => 1,
            Rail::Ws => 2,
        };
        let ops = &self.ops;
        ops.by_protocol
            .get(
                r * 3 + p,
                &ops.requests_by_protocol_total,
                &[rail.label(), protocol],
            )
            .inc();
    }

    /// `railgate_cluster_up` (registered in cluster mode only): 1 while Redis answers.
    pub fn cluster_gauge(&self) -> Result<IntGauge, String> {
        let g = IntGauge::new(
            "railgate_cluster_up",
            "1 while the cluster state (Redis) answers",
        )
        .map_err(|e| e.to_string())?;
        self.registry
            .register(Box::new(g.clone()))
            .map_err(|e| format!("metrics: {e}"))?;
        Ok(g)
    }

    /// What an ephemeral route's client overflow lets go (`superseded`, `overflow`).
    pub fn ephemeral_dropped(&self, route: &str) -> EphemeralDropped {
        let c = |reason| {
            self.ops
                .ephemeral_dropped_total
                .with_label_values(&[route, reason])
        };
        EphemeralDropped {
            superseded: c("superseded"),
            overflow: c("overflow"),
        }
    }

    /// Events of an ephemeral route over its per-key rate (`rate_cap`).
    pub fn ephemeral_rate_capped(&self, route: &str) -> IntCounter {
        self.ops
            .ephemeral_dropped_total
            .with_label_values(&[route, "rate_cap"])
    }

    /// One client connection served over `protocol` (`http/1.1` or `h2`).
    pub fn client_connection(&self, protocol: &str, tls: bool) {
        let i = usize::from(protocol == "h2") * 2 + usize::from(tls);
        let labels = [protocol, if tls { "true" } else { "false" }];
        let ops = &self.ops;
        ops.connections
            .get(i, &ops.client_connections_total, &labels)
            .inc();
    }

    /// One refusal by a capacity cap.
    pub fn capacity_refusal(&self, cap: crate::caps::Cap) {
        self.ops
            .capacity_refusals_total
            .with_label_values(&[cap.label()])
            .inc();
    }
}
