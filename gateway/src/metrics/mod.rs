//! Prometheus metrics (prefix `railgate_`). No per-tenant labels unless a tenant is listed in
//! `metrics.tenant_labels`; then `requests_total` carries `tenant` = that tenant, `other` for
//! everyone else, so cardinality stays bounded by the list.

use crate::config::Rail;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use railgate_policy::ErrorCode;

pub use labels::{Lookup, Reconnect, ReplaySource, Violation};
pub use ops::EphemeralDropped;

mod labels;
mod ops;

use ops::OpsCounters;

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
    /// Its series, by [`Lookup`] (in the order of [`Lookup::ALL`]).
    lookups: ops::Series<7>,
    /// Clients cut for falling behind.
    slow_consumer_disconnects_total: IntCounterVec,
    /// Upstream events naming a foreign tenant, dropped.
    isolation_violations_total: IntCounterVec,
    /// Events not delivered because the client already got them (after a reconnect or replay).
    events_deduplicated_total: IntCounterVec,
    /// What operators watch beyond the request path: caps, protocols, ephemeral drops.
    ops: OpsCounters,
    /// Cluster mode's lease gauge, registered on first use.
    cluster_upstreams: std::sync::OnceLock<IntGauge>,
    /// Open SSE streams and WebSocket sessions by rail (the sum of `connections_active`).
    streams_open: IntGaugeVec,
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

/// Registers the build info and the process metrics; returns `railgate_streams_open`.
fn process_and_build(reg: &Registry) -> prometheus::Result<IntGaugeVec> {
    let streams_open = IntGaugeVec::new(
        Opts::new(
            "railgate_streams_open",
            "Open SSE streams and WebSocket sessions",
        ),
        &["transport"],
    )?;
    reg.register(Box::new(streams_open.clone()))?;
    let build_info = IntGaugeVec::new(
        Opts::new("railgate_build_info", "The running build (always 1)"),
        &["version"],
    )?;
    reg.register(Box::new(build_info.clone()))?;
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    reg.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(streams_open)
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
        let streams_open = process_and_build(&registry)?;
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
            lookups: ops::Series::default(),
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
            ops: OpsCounters::new(&registry)?,
            cluster_upstreams: std::sync::OnceLock::new(),
            connections_active,
            streams_open,
            event_relay_seconds,
            registry,
            tenant_labels,
        })
    }

    /// Creates every series a route can have, at 0, so that dashboards and alerts see them
    /// before their first event (and `rate()` has a start).
    pub fn declare(&self, routes: &[std::sync::Arc<crate::config::Route>]) {
        for r in routes {
            let (name, rail) = (r.name.as_str(), r.kind.label());
            if self.tenant_labels.is_empty() {
                self.requests_total.with_label_values(&[name, rail, "ok"]);
            } else {
                self.requests_total
                    .with_label_values(&[name, rail, "ok", "other"]);
            }
            self.connections_active.with_label_values(&[name, rail]);
            for reason in Violation::ALL {
                self.isolation_violations(name, reason);
            }
            if r.kind == Rail::Http {
                continue;
            }
            if !r.resumable() {
                self.ephemeral_dropped(&r.name);
                self.ephemeral_rate_capped(&r.name);
            }
            self.forwarded(name, r.kind);
            self.slow_consumer(name, r.kind);
            self.deduplicated(name, r.kind);
            self.replayed(name, ReplaySource::Journal);
            for outcome in Reconnect::ALL {
                self.reconnect(name, r.kind, outcome);
            }
        }
        for code in ErrorCode::ALL.iter().filter(|c| c.is_auth_rejection()) {
            self.auth_rejections_total
                .with_label_values(&[code.as_str()]);
        }
        for cap in crate::caps::Cap::ALL {
            self.ops
                .capacity_refusals_total
                .with_label_values(&[cap.label()]);
        }
        for result in Lookup::ALL {
            self.registry_lookups_total
                .with_label_values(&[result.label()]);
        }
        for rail in [Rail::Sse, Rail::Ws] {
            self.streams_open.with_label_values(&[rail.label()]);
        }
        for protocol in ["http/1.1", "h2"] {
            for tls in ["true", "false"] {
                self.ops
                    .client_connections_total
                    .with_label_values(&[protocol, tls]);
            }
            for rail in [Rail::Http, Rail::Sse, Rail::Ws] {
                self.ops
                    .requests_by_protocol_total
                    .with_label_values(&[rail.label(), protocol]);
            }
        }
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

    /// One registry lookup.
    pub fn registry_lookup(&self, result: Lookup) {
        let i = Lookup::ALL.iter().position(|l| *l == result).unwrap_or(0);
        self.lookups
            .get(i, &self.registry_lookups_total, &[result.label()])
            .inc();
    }

    /// Upstream read → client write, in seconds.
    pub fn relay_latency(&self) -> &Histogram {
        &self.event_relay_seconds
    }

    /// Sums `connections_active` by rail into `streams_open`.
    fn sum_streams(&self) {
        let mut sums = [0i64; 2];
        for family in self.connections_active.collect() {
            for m in family.get_metric() {
                let rail = m
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "transport")
                    .map(|l| l.value());
                let slot = match rail {
                    Some("sse") => 0,
                    Some("ws") => 1,
                    _ => continue,
                };
                sums[slot] += m.get_gauge().get_value() as i64;
            }
        }
        for (rail, sum) in [Rail::Sse, Rail::Ws].into_iter().zip(sums) {
            self.streams_open
                .with_label_values(&[rail.label()])
                .set(sum);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        self.sum_streams();
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

    #[test]
    fn series_looked_up_once_count_under_their_own_labels() {
        let m = Metrics::new(vec![]).expect("metrics");
        m.registry_lookup(Lookup::Hit);
        m.registry_lookup(Lookup::Hit);
        m.registry_lookup(Lookup::Stale);
        m.request_protocol(Rail::Http, http::Version::HTTP_10);
        m.request_protocol(Rail::Sse, http::Version::HTTP_2);
        m.request_protocol(Rail::Sse, http::Version::HTTP_2);
        m.client_connection("h2", true);
        m.client_connection("http/1.1", false);
        m.client_connection("http/1.1", false);
        let text = String::from_utf8(m.render()).expect("utf8");
        for line in [
            "railgate_registry_lookups_total{result=\"hit\"} 2",
            "railgate_registry_lookups_total{result=\"stale\"} 1",
            "railgate_requests_by_protocol_total{protocol=\"http/1.0\",transport=\"http\"} 1",
            "railgate_requests_by_protocol_total{protocol=\"h2\",transport=\"sse\"} 2",
            "railgate_client_connections_total{protocol=\"h2\",tls=\"true\"} 1",
            "railgate_client_connections_total{protocol=\"http/1.1\",tls=\"false\"} 2",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
