//! Where a rail's upstream is: the URI for a request (one builder for HTTP, SSE and WebSocket),
//! The connections the long-lived SSE and WebSocket streams open for themselves are
//! [`crate::outbound::connect`]'s.

use crate::config::route::{Captures, Pattern};
use crate::config::Route;
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
/// gateway's own parameters and without `dropped`.
pub fn uri(
    route: &Route,
    caps: &Captures,
    path: &str,
    query: Option<&str>,
    dropped: &[&str],
    scheme: Scheme,
) -> Result<Uri, Denial> {
    let upstream_path = match &route.upstream_path {
        Some(t) => Pattern::render(t, caps),
        None => path.to_owned(),
    };
    let base = route.upstream.trim_end_matches('/');
    let base = match scheme {
        Scheme::Http => std::borrow::Cow::Borrowed(base),
        Scheme::WebSocket => std::borrow::Cow::Owned(websocket_base(base)),
    };
    let mut uri =
        String::with_capacity(base.len() + upstream_path.len() + 1 + query.map_or(0, str::len));
    uri.push_str(&base);
    uri.push_str(&upstream_path);
    if let Some(q) = query {
        let kept: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
            .filter(|(k, _)| {
                !GATEWAY_PARAMS.contains(&k.as_ref()) && !dropped.contains(&k.as_ref())
            })
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if !kept.is_empty() {
            uri.push('?');
            uri.push_str(
                &form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(kept)
                    .finish(),
            );
        }
    }
    uri.parse().map_err(|_| {
        Denial::with_message(
            ErrorCode::UpstreamUnavailable,
            "cannot build the upstream URI",
        )
    })
}

fn websocket_base(base: &str) -> String {
    if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_owned()
    }
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
    fn websocket_scheme_follows_the_configured_one_and_templates_fill() {
        let caps = Pattern::parse("/c/{thread_id}/**")
            .expect("pattern")
            .matches("/c/th1/a/b")
            .expect("match");
        let r = route("http://up:8080", Some("/ws/{thread_id}/**"));
        let u = uri(&r, &caps, "/c/th1/a/b", None, &[], Scheme::WebSocket).expect("uri");
        assert_eq!(u.to_string(), "ws://up:8080/ws/th1/a/b");
        assert_eq!(websocket_base("https://up"), "wss://up");
        assert_eq!(websocket_base("http://http.example"), "ws://http.example");
    }
}
