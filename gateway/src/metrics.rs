//! Prometheus metrics (prefix `railgate_`). No per-tenant labels unless a tenant is listed in
//! `metrics.tenant_labels`; then `requests_total` carries `tenant` = that tenant, `other` for
//! everyone else, so cardinality stays bounded by the list.

use crate::config::Rail;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use railgate_policy::ErrorCode;

/// How one attempt to bring an upstream stream back ended (`outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// The stream is back after a break or failed attempts.
    Ok,
    /// One attempt failed; another follows.
    Failed,
    /// The resume deadline passed; the clients were told `upstream.unavailable`.
    GaveUp,
}

impl Reconnect {
    fn label(self) -> &'static str {
        match self {
            Reconnect::Ok => "ok",
            Reconnect::Failed => "failed",
            Reconnect::GaveUp => "gave_up",
        }
    }
}

/// Where resumed events came from (`source` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaySource {
    /// The gateway's own journal.
    Journal,
}

/// Why data was kept from crossing a tenant boundary (`reason` label of
/// `isolation_violations_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// An upstream event names another tenant or env in its `routing`.
    ForeignTenant,
    /// Data that looks like JSON but is not strict JSON, so its routing cannot be checked.
    NotStrictJson,
    /// A `registers_thread` answer names a thread another tenant owns.
    ThreadTakeover,
}

impl Violation {
    fn label(self) -> &'static str {
        match self {
            Violation::ForeignTenant => "foreign_tenant",
            Violation::NotStrictJson => "not_strict_json",
            Violation::ThreadTakeover => "thread_takeover",
        }
    }
}

/// A registry lookup's result (`result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// An owner, from the cache.
    Hit,
    /// An owner, asked of the source.
    Fetched,
    /// Unknown, from the cache.
    NegativeHit,
    /// Unknown, asked of the source.
    NotFound,
    /// The source failed; a stale answer was used.
    Stale,
    /// The source failed and nothing usable was cached.
    Unavailable,
    /// An owner learned from a `registers_thread` answer.
    Learned,
}

impl Lookup {
    fn label(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Fetched => "fetched",
            Lookup::NegativeHit => "negative_hit",
            Lookup::NotFound => "not_found",
            Lookup::Stale => "stale",
            Lookup::Unavailable => "unavailable",
            Lookup::Learned => "learned",
        }
    }
}

/// Every metric of the gateway.
pub struct Metrics {
    registry: Registry,
    tenant_labels: Vec<String>,
    /// Open client connections.
    connections_active: IntGaugeVec,
    /// Requests by outcome (`ok` or the error code).
    requests_total: IntCounterVec,
    /// Credential and context rejections by code.
    auth_rejections_total: IntCounterVec,
    /// Events delivered to clients.
    events_forwarded_total: IntCounterVec,
    /// Upstream read → client write.
    event_relay_seconds: Histogram,
    /// Upstream stream reconnect attempts by outcome.
    upstream_reconnects_total: IntCounterVec,
    /// Events replayed on resume, by source (`journal` / `upstream`).
    replayed_events_total: IntCounterVec,
    /// Registry lookups by result.
    registry_lookups_total: IntCounterVec,
    /// Clients cut for falling behind.
    slow_consumer_disconnects_total: IntCounterVec,
    /// Upstream events naming a foreign tenant, dropped.
    isolation_violations_total: IntCounterVec,
    /// Events not delivered because the client already got them (after a reconnect or replay).
    events_deduplicated_total: IntCounterVec,
    /// Connections and streams refused by a capacity cap.
    capacity_refusals_total: IntCounterVec,
}

fn counter(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(format!("railgate_{name}"), help), labels)?;
    reg.register(Box::new(c.clone()))?;
    Ok(c)
}

fn relay_histogram(reg: &Registry) -> prometheus::Result<Histogram> {
    let h = Histogram::with_opts(
        HistogramOpts::new(
            "railgate_event_relay_seconds",
            "Upstream read to client write",
        )
        .buckets(vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ]),
    )?;
    reg.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    /// Registers every metric.
    pub fn new(tenant_labels: Vec<String>) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let connections_active = IntGaugeVec::new(
            Opts::new("railgate_connections_active", "Open client connections"),
            &["route", "transport"],
        )?;
        registry.register(Box::new(connections_active.clone()))?;
        let mut request_labels = vec!["route", "transport", "code"];
        if !tenant_labels.is_empty() {
            request_labels.push("tenant");
        }
        let event_relay_seconds = relay_histogram(&registry)?;
        let c = |name, help, labels: &[&str]| counter(&registry, name, help, labels);
        Ok(Metrics {
            requests_total: c("requests_total", "Requests by outcome", &request_labels)?,
            auth_rejections_total: c(
                "auth_rejections_total",
                "Credential and context rejections",
                &["code"],
            )?,
            events_forwarded_total: c(
                "events_forwarded_total",
                "Events delivered to clients",
                &["route", "transport"],
            )?,
            upstream_reconnects_total: c(
                "upstream_reconnects_total",
                "Upstream stream reconnects",
                &["route", "transport", "outcome"],
            )?,
            replayed_events_total: c(
                "replayed_events_total",
                "Events replayed on resume",
                &["route", "source"],
            )?,
            registry_lookups_total: c(
                "registry_lookups_total",
                "Thread registry lookups",
                &["result"],
            )?,
            slow_consumer_disconnects_total: c(
                "slow_consumer_disconnects_total",
                "Clients cut for falling behind",
                &["route", "transport"],
            )?,
            isolation_violations_total: c(
                "isolation_violations_total",
                "Data kept from crossing a tenant boundary, by reason",
                &["route", "reason"],
            )?,
            events_deduplicated_total: c(
                "events_deduplicated_total",
                "Events a client already got, not delivered again",
                &["route", "rail"],
            )?,
            capacity_refusals_total: c(
                "capacity_refusals_total",
                "Connections and streams refused by a capacity cap",
                &["cap"],
            )?,
            connections_active,
            event_relay_seconds,
            registry,
            tenant_labels,
        })
    }

    /// Counts one finished request (`code`: `None` is `ok`); a credential or context rejection
    /// is also counted in `auth_rejections_total`.
    pub fn request(&self, route: &str, rail: Rail, code: Option<ErrorCode>, tenant: Option<&str>) {
        if let Some(c) = code.filter(|c| c.is_auth_rejection()) {
            self.auth_rejections_total
                .with_label_values(&[c.as_str()])
                .inc();
        }
        let code = code.map_or("ok", ErrorCode::as_str);
        let transport = rail.label();
        if self.tenant_labels.is_empty() {
            self.requests_total
                .with_label_values(&[route, transport, code])
                .inc();
        } else {
            let t = tenant
                .filter(|t| self.tenant_labels.iter().any(|l| l == t))
                .unwrap_or("other");
            self.requests_total
                .with_label_values(&[route, transport, code, t])
                .inc();
        }
    }

    /// Open client connections of a route.
    pub fn active(&self, route: &str, rail: Rail) -> IntGauge {
        self.connections_active
            .with_label_values(&[route, rail.label()])
    }

    /// Events delivered to clients of a route.
    pub fn forwarded(&self, route: &str, rail: Rail) -> IntCounter {
        self.events_forwarded_total
            .with_label_values(&[route, rail.label()])
    }

    /// Upstream stream reconnects of a route with this outcome.
    pub fn reconnect(&self, route: &str, rail: Rail, outcome: Reconnect) -> IntCounter {
        self.upstream_reconnects_total
            .with_label_values(&[route, rail.label(), outcome.label()])
    }

    /// Events replayed on resume from `source`.
    pub fn replayed(&self, route: &str, source: ReplaySource) -> IntCounter {
        let source = match source {
            ReplaySource::Journal => "journal",
        };
        self.replayed_events_total
            .with_label_values(&[route, source])
    }

    /// Clients of a route cut for falling behind.
    pub fn slow_consumer(&self, route: &str, rail: Rail) -> IntCounter {
        self.slow_consumer_disconnects_total
            .with_label_values(&[route, rail.label()])
    }

    /// Data of a route kept from crossing a tenant boundary, by reason.
    pub fn isolation_violations(&self, route: &str, reason: Violation) -> IntCounter {
        self.isolation_violations_total
            .with_label_values(&[route, reason.label()])
    }

    /// Events of a route not delivered again to a client that already got them.
    pub fn deduplicated(&self, route: &str, rail: Rail) -> IntCounter {
        self.events_deduplicated_total
            .with_label_values(&[route, rail.label()])
    }

    /// One refusal by a capacity cap.
    pub fn capacity_refusal(&self, cap: crate::caps::Cap) {
        self.capacity_refusals_total
            .with_label_values(&[cap.label()])
            .inc();
    }

    /// One registry lookup.
    pub fn registry_lookup(&self, result: Lookup) {
        self.registry_lookups_total
            .with_label_values(&[result.label()])
            .inc();
    }

    /// Upstream read → client write, in seconds.
    pub fn relay_latency(&self) -> &Histogram {
        &self.event_relay_seconds
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_rendered_with_their_labels() {
        let m = Metrics::new(vec![]).expect("metrics");
        m.request("chat-http", Rail::Http, None, Some("t1"));
        m.request("chat-http", Rail::Http, None, Some("t1"));
        let text = String::from_utf8(m.render()).expect("utf8");
        assert!(
            text.contains(
                "railgate_requests_total{code=\"ok\",route=\"chat-http\",transport=\"http\"} 2"
            ),
            "{text}"
        );
    }

    #[test]
    fn only_listed_tenants_get_their_own_label() {
        let m = Metrics::new(vec!["t_vip".into()]).expect("metrics");
        m.request("r", Rail::Http, None, Some("t_vip"));
        m.request("r", Rail::Http, None, Some("t_a"));
        m.request("r", Rail::Http, None, Some("t_b"));
        let text = String::from_utf8(m.render()).expect("utf8");
        assert!(
            text.contains("tenant=\"t_vip\",transport=\"http\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tenant=\"other\",transport=\"http\"} 2"),
            "{text}"
        );
        assert!(!text.contains("t_a"));
    }
}
