//! Where a rail's upstream is: the URI for a request (one builder for HTTP, SSE and WebSocket).
//! The connections the long-lived SSE and WebSocket streams open for themselves are
//! [`crate::outbound::connect`]'s.

use crate::config::route::UpstreamBase;
use crate::config::route::{Captures, Pattern};
use crate::config::Route;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::Uri;
use railgate_policy::{Denial, ErrorCode};

/// The protocol an upstream URI is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http://` / `https://`, as configured.
    Http,
    /// The WebSocket scheme of the configured base: `ws://` for `http://`, `wss://` for `https://`.
    WebSocket,
}

/// Query parameters that are the gateway's, never the upstream's.
const GATEWAY_PARAMS: &[&str] = &["ticket"];

/// The upstream URI for a request on `route`: the route's upstream base in `scheme`, its path
/// template filled from `caps` (or the request path), and the request's query without the
/// gateway's own parameters and without `dropped`. Only the path and query are parsed; the
/// base was once, when the route was read.
pub fn uri(
    route: &Route,
    caps: &Captures,
    path: &str,
    query: Option<&str>,
    dropped: &[&str],
    scheme: Scheme,
) -> Result<Uri, Denial> {
    let base = route.upstream_base.as_ref().ok_or_else(cannot)?;
    let pq = rendered(route, base, caps, path, query, dropped)?;
    assemble(base, pq, scheme)
}

/// [`uri`] for a request's own URI. When the upstream path is the request's (no base path, no
/// path template) and there is no query to rewrite, the request's path is the upstream's as it
/// is: shared, not copied and parsed again.
pub fn uri_of(
    route: &Route,
    caps: &Captures,
    req: &Uri,
    dropped: &[&str],
    scheme: Scheme,
) -> Result<Uri, Denial> {
    let base = route.upstream_base.as_ref().ok_or_else(cannot)?;
    let own = base.path.is_empty() && route.upstream_path.is_none() && req.query().is_none();
    let pq = match req.path_and_query() {
        Some(pq) if own && pq.as_str().starts_with('/') => pq.clone(),
        _ => rendered(route, base, caps, req.path(), req.query(), dropped)?,
    };
    assemble(base, pq, scheme)
}

fn cannot() -> Denial {
    Denial::with_message(
        ErrorCode::UpstreamUnavailable,
        "cannot build the upstream URI",
    )
}

/// The upstream path and query: the base's path, the route's template or the request's path,
/// the query's kept pairs.
fn rendered(
    route: &Route,
    base: &UpstreamBase,
    caps: &Captures,
    path: &str,
    query: Option<&str>,
    dropped: &[&str],
) -> Result<PathAndQuery, Denial> {
    let mut pq =
        String::with_capacity(base.path.len() + path.len() + 1 + query.map_or(0, str::len));
    pq.push_str(&base.path);
    match &route.upstream_path {
        Some(t) => pq.push_str(&Pattern::render(t, caps)),
        None => pq.push_str(path),
    }
    if let Some(q) = query {
        push_query(&mut pq, q, dropped);
    }
    PathAndQuery::from_maybe_shared(Bytes::from(pq)).map_err(|_| cannot())
}

/// The base's authority in `scheme`, with `pq`.
fn assemble(base: &UpstreamBase, pq: PathAndQuery, scheme: Scheme) -> Result<Uri, Denial> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(match scheme {
        Scheme::Http => base.scheme.clone(),
        Scheme::WebSocket => websocket_scheme(&base.scheme).ok_or_else(cannot)?,
    });
    parts.authority = Some(base.authority.clone());
    parts.path_and_query = Some(pq);
    Uri::from_parts(parts).map_err(|_| cannot())
}

/// Appends `?` and the query's pairs other than the gateway's and the `dropped` ones, if any.
fn push_query(out: &mut String, query: &str, dropped: &[&str]) {
    let kept: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| !GATEWAY_PARAMS.contains(&k.as_ref()) && !dropped.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(
            &form_urlencoded::Serializer::new(String::new())
                .extend_pairs(kept)
                .finish(),
        );
    }
}

/// `ws` for `http`, `wss` for `https`.
fn websocket_scheme(http: &http::uri::Scheme) -> Option<http::uri::Scheme> {
    let ws = match http.as_str() {
        "https" => "wss",
        _ => "ws",
    };
    ws.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pattern;

    fn route(upstream: &str, upstream_path: Option<&str>) -> Route {
        let text = format!(
            "[[routes]]\nname = \"r\"\npath = \"/c/{{thread_id}}/**\"\nupstream = \"{upstream}\"\n{}",
            upstream_path.map_or(String::new(), |p| format!("upstream_path = \"{p}\"\n"))
        );
        let env = std::collections::HashMap::<String, String>::new();
        let config = crate::config::load(Some(&text), &env, &Default::default()).expect("config");
        std::sync::Arc::unwrap_or_clone(config.routes.into_iter().next().expect("route"))
    }

    #[test]
    fn query_loses_the_gateways_parameters_and_the_dropped_ones() {
        let r = route("http://up:8080/", None);
        let caps = Pattern::parse("/c/{thread_id}/**")
            .expect("pattern")
            .matches("/c/th1/x")
            .expect("match");
        let u = uri(
            &r,
            &caps,
            "/c/th1/x",
            Some("a=1&ticket=s3cret&last_event_id=7&b=%20"),
            &["last_event_id"],
            Scheme::Http,
        )
        .expect("uri");
        assert_eq!(u.to_string(), "http://up:8080/c/th1/x?a=1&b=+");
        let u = uri(
            &r,
            &caps,
            "/c/th1/x",
            Some("ticket=s3cret"),
            &[],
            Scheme::Http,
        )
        .expect("uri");
        assert_eq!(u.to_string(), "http://up:8080/c/th1/x");
    }

    #[test]
    fn a_requests_own_uri_gives_the_same_upstream_uri_as_its_path_and_query() {
        let routes = [
            route("http://up:8080", None),
            route("http://up:8080/", None),
            route("http://up:8080/api", None),
            route("http://up:8080", Some("/x/{thread_id}")),
        ];
        let targets = [
            "/c/th1/x",
            "/c/th1/x?",
            "/c/th1/x?a=1&ticket=t&b=%20",
            "/c/th1/%7Ex",
            "http://gw.example/c/th1/x",
            "http://gw.example/c/th1/x?ticket=t",
        ];
        for r in &routes {
            for t in targets {
                let req: Uri = t.parse().expect("target");
                let caps = Pattern::parse("/c/{thread_id}/**")
                    .expect("pattern")
                    .matches(req.path())
                    .expect("match");
                for scheme in [Scheme::Http, Scheme::WebSocket] {
                    let of = uri_of(r, &caps, &req, &["b"], scheme).expect("uri_of");
                    let by_parts = uri(r, &caps, req.path(), req.query(), &["b"], scheme);
                    assert_eq!(of, by_parts.expect("uri"), "{} {t}", r.upstream);
                }
            }
        }
    }

    #[test]
    fn websocket_scheme_follows_the_configured_one_and_templates_fill() {
        let caps = Pattern::parse("/c/{thread_id}/**")
            .expect("pattern")
            .matches("/c/th1/a/b")
            .expect("match");
        let r = route("http://up:8080", Some("/ws/{thread_id}/**"));
        let u = uri(&r, &caps, "/c/th1/a/b", None, &[], Scheme::WebSocket).expect("uri");
        assert_eq!(u.to_string(), "ws://up:8080/ws/th1/a/b");
        let ws = |base: &str| {
            let u = uri(
                &route(base, None),
                &caps,
                "/c/th1/a/b",
                None,
                &[],
                Scheme::WebSocket,
            );
            u.expect("uri").to_string()
        };
        assert_eq!(ws("https://up"), "wss://up/c/th1/a/b");
        assert_eq!(ws("http://http.example"), "ws://http.example/c/th1/a/b");
    }

    #[test]
    fn the_bases_path_goes_before_the_requests_and_its_query_is_not_kept() {
        let caps = Pattern::parse("/c/{thread_id}/**")
            .expect("pattern")
            .matches("/c/th1/x")
            .expect("match");
        for base in [
            "http://up:8080/api/",
            "http://up:8080/api",
            "http://up:8080/api?v=1",
        ] {
            let u = uri(
                &route(base, None),
                &caps,
                "/c/th1/x",
                Some("a=1"),
                &[],
                Scheme::Http,
            );
            assert_eq!(
                u.expect("uri").to_string(),
                "http://up:8080/api/c/th1/x?a=1",
                "{base}"
            );
        }
        let u = uri(
            &route("http://[::1]:81", None),
            &caps,
            "/c/th1/x",
            None,
            &[],
            Scheme::Http,
        );
        assert_eq!(u.expect("uri").to_string(), "http://[::1]:81/c/th1/x");
    }
}
