//! The config file's tables other than the top level and routes: `[auth]`, `[registry]`,
//! `[limits]`, `[sse]`, `[ws]`, each read with its defaults.

use super::reader::{Problems, Reader};
use super::{
    check_http_url, AuthConfig, Limits, ListenerTls, PemKey, RegistryConfig, RegistrySource,
    SseConfig, WsConfig,
};
use crate::env::names;
use std::path::PathBuf;
use std::time::Duration;
use toml::Table;

pub(super) fn secs(
    r: &mut Reader<'_>,
    key: &'static str,
    default: u64,
    p: &mut Problems,
) -> Duration {
    Duration::from_secs(r.uint(key, p).unwrap_or(default))
}

fn millis(r: &mut Reader<'_>, key: &'static str, default: u64, p: &mut Problems) -> Duration {
    Duration::from_millis(r.uint(key, p).unwrap_or(default))
}

pub(super) fn read_auth(table: Option<Reader<'_>>, p: &mut Problems) -> Option<AuthConfig> {
    let mut r = table?;
    let public_keys = r
        .tables("public_keys", p)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|k| read_public_key(k, p))
        .collect();
    let jwks_url = r.string("jwks_url", p);
    if let Some(u) = &jwks_url {
        check_http_url(u, &r.path_of("jwks_url"), p);
    }
    let oidc_issuer = r.string("oidc_issuer", p);
    let issuer = r.string("issuer", p);
    if let Some(i) = &oidc_issuer {
        check_http_url(i, &r.path_of("oidc_issuer"), p);
        if jwks_url.is_some() {
            p.add(
                &r.path_of("oidc_issuer"),
                "set either jwks_url or oidc_issuer (discovery finds the JWKS URL)",
            );
        }
        if issuer.as_ref().is_some_and(|x| x != i) {
            p.add(
                &r.path_of("issuer"),
                "must equal oidc_issuer when both are set (tokens carry the provider's issuer)",
            );
        }
    }
    let config = AuthConfig {
        jwt_hs256_secret_env: r
            .string("jwt_hs256_secret_env", p)
            .unwrap_or_else(|| names::JWT_SIGNING.into()),
        jwks_file: r.string("jwks_file", p).map(PathBuf::from),
        jwks_url,
        issuer: issuer.or_else(|| oidc_issuer.clone()),
        oidc_issuer,
        jwks_refresh: secs(&mut r, "jwks_refresh_s", 300, p),
        jwks_min_refresh: secs(&mut r, "jwks_min_refresh_s", 30, p),
        public_keys,
        audience: r.string("audience", p),
        leeway_s: r.uint("leeway_s", p).unwrap_or(30),
        ticket_secret_env: r
            .string("ticket_secret_env", p)
            .unwrap_or_else(|| names::TICKET_SECRET.into()),
        ticket_secret_previous_env: r
            .string("ticket_secret_previous_env", p)
            .unwrap_or_else(|| names::TICKET_SECRET_PREVIOUS.into()),
        cookie_secure: r.boolean("cookie_secure", p).unwrap_or(true),
        max_used_tickets: r.uint("max_used_tickets", p).unwrap_or(1_000_000) as usize,
        max_used_tickets_per_tenant: r.uint("max_used_tickets_per_tenant", p).unwrap_or(100_000)
            as usize,
    };
    r.finish(p);
    Some(config)
}

pub(super) fn read_registry(
    table: Option<Reader<'_>>,
    upstream: &str,
    p: &mut Problems,
) -> Option<RegistryConfig> {
    let mut r = table?;
    let source_name = r.string("source", p).unwrap_or_else(|| "upstream".into());
    let url = r.string("url", p);
    let file = r.string("file", p);
    let source = match source_name.as_str() {
        "upstream" => {
            // An inherited upstream was checked (and reported) where it was written.
            if let Some(own) = &url {
                check_http_url(own, &r.path_of("url"), p);
            }
            let url = url.unwrap_or_else(|| upstream.to_owned());
            Some(RegistrySource::Upstream { url })
        }
        "file" => match file {
            Some(f) => Some(RegistrySource::File {
                path: PathBuf::from(f),
            }),
            None => {
                p.add(&r.path_of("file"), "is required when source = \"file\"");
                None
            }
        },
        other => {
            p.add(
                &r.path_of("source"),
                format!("{other:?} is not \"upstream\" or \"file\""),
            );
            None
        }
    };
    let config = RegistryConfig {
        source: source?,
        ttl: secs(&mut r, "ttl_s", 30, p),
        negative_ttl: secs(&mut r, "negative_ttl_s", 5, p),
        stale_if_error: secs(&mut r, "stale_if_error_s", 60, p),
        timeout: millis(&mut r, "timeout_ms", 2000, p),
        max_entries: r.uint("max_entries", p).unwrap_or(100_000),
    };
    r.finish(p);
    Some(config)
}

pub(super) fn read_limits(table: Option<Reader<'_>>, p: &mut Problems) -> Limits {
    let empty = Table::new();
    let mut r = table.unwrap_or_else(|| Reader::new(&empty, "limits"));
    let limits = Limits {
        max_header_bytes: r.uint("max_header_bytes", p).unwrap_or(16 * 1024) as usize,
        max_body_bytes: r.uint("max_body_bytes", p).unwrap_or(1024 * 1024),
        header_read_timeout: secs(&mut r, "header_read_timeout_s", 10, p),
        upstream_connect_timeout: millis(&mut r, "upstream_connect_timeout_ms", 2000, p),
        upstream_response_timeout: secs(&mut r, "upstream_response_timeout_s", 30, p),
        upstream_idle_timeout: secs(&mut r, "upstream_idle_timeout_s", 60, p),
        caps: crate::caps::Bounds {
            connections: r.uint("max_connections", p).unwrap_or(20_000) as usize,
            unauthenticated: r.uint("max_unauthenticated", p).unwrap_or(4_096) as usize,
            unauthenticated_per_address: r.uint("max_unauthenticated_per_address", p).unwrap_or(512)
                as usize,
            streams_per_tenant: r.uint("max_streams_per_tenant", p).unwrap_or(10_000) as usize,
        },
    };
    if limits.max_header_bytes < 1024 {
        p.add("limits.max_header_bytes", "must be at least 1024");
    }
    r.finish(p);
    limits
}

pub(super) fn read_sse(table: Option<Reader<'_>>, p: &mut Problems) -> SseConfig {
    let empty = Table::new();
    let mut r = table.unwrap_or_else(|| Reader::new(&empty, "sse"));
    let c = SseConfig {
        keepalive: secs(&mut r, "keepalive_s", 15, p),
        client_queue_events: r.uint("client_queue_events", p).unwrap_or(1024) as usize,
        client_queue_bytes: r.uint("client_queue_bytes", p).unwrap_or(4 * 1024 * 1024) as usize,
        journal_events: r.uint("journal_events", p).unwrap_or(1024) as usize,
        journal_bytes: r.uint("journal_bytes", p).unwrap_or(1024 * 1024) as usize,
        journal_age: secs(&mut r, "journal_age_s", 300, p),
        max_event_bytes: r.uint("max_event_bytes", p).unwrap_or(1024 * 1024) as usize,
        batch_window: Duration::from_millis(r.uint("batch_window_ms", p).unwrap_or(2)),
    };
    if c.batch_window > Duration::from_secs(1) {
        p.add("sse.batch_window_ms", "must be at most 1000");
    }
    if c.client_queue_events == 0 {
        p.add("sse.client_queue_events", "must be at least 1");
    }
    r.finish(p);
    c
}

pub(super) fn read_ws(table: Option<Reader<'_>>, p: &mut Problems) -> WsConfig {
    let empty = Table::new();
    let mut r = table.unwrap_or_else(|| Reader::new(&empty, "ws"));
    let c = WsConfig {
        hello_timeout: secs(&mut r, "hello_timeout_s", 5, p),
        ping_interval: secs(&mut r, "ping_interval_s", 20, p),
        pong_timeout: secs(&mut r, "pong_timeout_s", 60, p),
        max_message_bytes: r.uint("max_message_bytes", p).unwrap_or(1024 * 1024) as usize,
        held_messages: r.uint("held_messages", p).unwrap_or(256) as usize,
        held_bytes: r.uint("held_bytes", p).unwrap_or(1024 * 1024) as usize,
        presence: r.boolean("presence", p).unwrap_or(true),
        presence_window: millis(&mut r, "presence_window_ms", 100, p),
        presence_fanout_max: r.uint("presence_fanout_max", p).unwrap_or(1000) as usize,
    };
    r.finish(p);
    c
}

fn read_public_key(mut k: Reader<'_>, p: &mut Problems) -> Option<PemKey> {
    let pem_file = k.string("pem_file", p);
    let alg = k.string("alg", p);
    let kid = k.string("kid", p);
    if pem_file.is_none() {
        p.add(&k.path_of("pem_file"), "is required");
    }
    match &alg {
        Some(a)
            if railgate_policy::keys::parse_alg(a)
                .is_some_and(|x| railgate_policy::keys::ASYMMETRIC_ALGS.contains(&x)) => {}
        Some(a) => p.add(
            &k.path_of("alg"),
            format!("{a:?} is not a public-key algorithm (RS256, ES256, EdDSA, ...)"),
        ),
        None => p.add(
            &k.path_of("alg"),
            "is required: every key is pinned to one algorithm",
        ),
    }
    k.finish(p);
    Some(PemKey {
        pem_file: PathBuf::from(pem_file?),
        alg: alg?,
        kid,
    })
}

/// `[tls]`: both files, or neither.
pub(super) fn read_listener_tls(mut r: Reader<'_>, p: &mut Problems) -> Option<ListenerTls> {
    let cert = r.string("cert_file", p);
    let key = r.string("key_file", p);
    r.finish(p);
    match (cert, key) {
        (Some(c), Some(k)) => Some(ListenerTls {
            cert_file: c.into(),
            key_file: k.into(),
        }),
        (None, None) => None,
        (None, _) => {
            p.add("tls.cert_file", "is required with tls.key_file");
            None
        }
        (_, None) => {
            p.add("tls.key_file", "is required with tls.cert_file");
            None
        }
    }
}

/// `[tenants."<id>"]`: per-tenant switches. Every route named must exist.
pub(super) fn read_tenants(
    r: &mut Reader<'_>,
    routes: &[super::Route],
    p: &mut Problems,
) -> std::collections::HashMap<String, super::TenantFlags> {
    let mut out = std::collections::HashMap::new();
    for (tenant, mut t) in r.named_tables("tenants", p) {
        let disabled = t.strings("disabled_routes", p).unwrap_or_default();
        for (i, name) in disabled.iter().enumerate() {
            if !routes.iter().any(|route| &route.name == name) {
                p.add(
                    &format!("{}[{i}]", t.path_of("disabled_routes")),
                    format!("{name:?} is not a route name"),
                );
            }
        }
        t.finish(p);
        out.insert(
            tenant,
            super::TenantFlags {
                disabled_routes: disabled,
            },
        );
    }
    out
}
