//! What a scraper sees from a fresh gateway: every per-route series at 0 before its first
//! event, the build and process metrics, open streams by rail; and the shipped alert rules and
//! Grafana dashboard name only series the gateway exports.

use railgate_tests::client::SseStream;
use railgate_tests::eventually;
use railgate_tests::stack::{full_headers, refs, token, Stack};
use serde_json::json;
use serde_norway::Value as Yaml;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

#[tokio::test]
async fn a_fresh_gateway_exports_every_series_at_zero_and_its_build_and_process() {
    let s = Stack::start("");
    let text = s.metrics().await;
    for line in [
        "railgate_events_forwarded_total{route=\"chat-sse\",transport=\"sse\"} 0",
        "railgate_events_forwarded_total{route=\"chat-ws\",transport=\"ws\"} 0",
        "railgate_upstream_reconnects_total{outcome=\"gave_up\",route=\"chat-sse\",transport=\"sse\"} 0",
        "railgate_upstream_reconnects_total{outcome=\"ok\",route=\"chat-ws\",transport=\"ws\"} 0",
        "railgate_slow_consumer_disconnects_total{route=\"chat-sse\",transport=\"sse\"} 0",
        "railgate_isolation_violations_total{reason=\"foreign_tenant\",route=\"chat-sse\"} 0",
        "railgate_isolation_violations_total{reason=\"thread_takeover\",route=\"chat-create\"} 0",
        "railgate_replayed_events_total{route=\"chat-sse\",source=\"journal\"} 0",
        "railgate_events_deduplicated_total{rail=\"ws\",route=\"chat-ws\"} 0",
        "railgate_capacity_refusals_total{cap=\"tenant_streams\"} 0",
        "railgate_registry_lookups_total{result=\"unavailable\"} 0",
        "railgate_requests_total{code=\"ok\",route=\"chat-http\",transport=\"http\"} 0",
        "railgate_connections_active{route=\"chat-sse\",transport=\"sse\"} 0",
        "railgate_streams_open{transport=\"sse\"} 0",
        "railgate_streams_open{transport=\"ws\"} 0",
        "railgate_requests_by_protocol_total{protocol=\"h2\",transport=\"sse\"} 0",
        concat!("railgate_build_info{version=\"", env!("CARGO_PKG_VERSION"), "\"} 1"),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}");
    }
    for (name, positive) in [
        ("process_open_fds", true),
        ("process_max_fds", true),
        ("process_resident_memory_bytes", true),
        ("process_cpu_seconds_total", false),
    ] {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("missing {name}"));
        let v: f64 = value.parse().expect("a number");
        assert!(v > 0.0 || (!positive && v == 0.0), "{name} {value}");
    }
    assert!(text
        .lines()
        .any(|l| l == "railgate_auth_rejections_total{code=\"auth.token_missing\"} 0"));
    let th = s.thread("t_a").await;
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let stream = SseStream::open(&s.addr(), &format!("/sse/chat/{th}"), &refs(&h)).await;
    assert_eq!(stream.status, 200);
    assert_eq!(
        s.metric("railgate_streams_open{transport=\"sse\"}").await,
        1.0
    );
    drop(stream);
    eventually!(10, "the stream is no longer counted", {
        s.publish(&th, 1).await;
        s.metric("railgate_streams_open{transport=\"sse\"}").await == 0.0
    });
}

/// Series names a PromQL expression reads, with the `label="value"` selectors it puts on each.
fn series_in(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts = (rest.starts_with("railgate_") || rest.starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if !starts {
            i += 1;
            continue;
        }
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = rest[..len].to_owned();
        let mut selectors = Vec::new();
        if rest[len..].starts_with('{') {
            let close = rest[len..].find('}').expect("closed selector");
            selectors = rest[len + 1..len + close]
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.starts_with("job="))
                .collect();
        }
        out.push((name, selectors));
        i += len;
    }
    out
}

/// Checks that every series `expr` reads is exported, with samples matching its selectors.
fn assert_exported(what: &str, expr: &str, exported: &BTreeSet<String>, text: &str) {
    let found = series_in(expr);
    assert!(
        !found.is_empty(),
        "{what}: reads no railgate series: {expr}"
    );
    for (name, selectors) in found {
        assert!(exported.contains(&name), "{what}: {name} is not exported");
        for sel in selectors {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{name}{{")) && l.contains(&sel)),
                "{what}: no {name} sample with {sel}"
            );
        }
    }
}

/// The exported series names (histograms with their `_bucket`, `_sum`, `_count`).
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().expect("name"), parts.next().expect("kind"));
            names.insert(name.to_owned());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

#[tokio::test]
async fn the_shipped_alerts_and_dashboard_read_only_exported_series() {
    let s = Stack::start("");
    let text = s.metrics().await;
    let exported = exported_names(&text);
    let path = root().join("deploy/prometheus/alerts.yml");
    let rules: Yaml =
        serde_norway::from_str(&std::fs::read_to_string(&path).expect("read")).expect("yaml");
    let rules = rules["groups"][0]["rules"].as_sequence().expect("rules");
    assert!(rules.len() >= 8, "{} rules", rules.len());
    for r in rules {
        let name = r["alert"].as_str().expect("alert name");
        assert!(
            ["page", "warn"].contains(&r["labels"]["severity"].as_str().unwrap_or_default()),
            "{name}: severity"
        );
        assert!(
            r["annotations"]["summary"].as_str().is_some(),
            "{name}: summary"
        );
        assert_exported(name, r["expr"].as_str().expect("expr"), &exported, &text);
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/railgate-dashboard.json"))
            .expect("read"),
    )
    .expect("json");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 12);
    for p in panels {
        let title = p["title"].as_str().expect("title");
        for t in p["targets"].as_array().expect("targets") {
            assert_exported(title, t["expr"].as_str().expect("expr"), &exported, &text);
        }
    }
    // promtool, when installed, checks the rule syntax as Prometheus will load it.
    match std::process::Command::new("promtool")
        .args(["check", "rules", path.to_str().expect("utf8")])
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(_) => println!("promtool is not installed: alerts.yml checked by parsing only"),
    }
}

#[test]
fn series_are_read_from_expressions() {
    assert_eq!(
        series_in("sum(rate(railgate_a_total{result=\"x\", job=\"j\"}[5m])) / process_open_fds"),
        vec![
            (
                "railgate_a_total".to_owned(),
                vec!["result=\"x\"".to_owned()]
            ),
            ("process_open_fds".to_owned(), vec![]),
        ]
    );
}
