//! The pooled HTTP/1.1 client for short exchanges with the upstream: the HTTP rail's requests, the
//! registry's lookups and the JWKS fetcher. Long-lived SSE and WebSocket streams do not use it;
//! each opens its own connection (see `proxy::upstream`).

use crate::body::{empty, Body};
use crate::config::Limits;
use crate::outbound::UpstreamTls;
use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;

/// Why the upstream could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// Refused, reset, unreachable, or a malformed answer.
    Unavailable(String),
    /// No answer in time.
    Timeout,
}

impl UpstreamError {
    /// The contract code.
    pub fn code(&self) -> railgate_policy::ErrorCode {
        match self {
            UpstreamError::Unavailable(_) => railgate_policy::ErrorCode::UpstreamUnavailable,
            UpstreamError::Timeout => railgate_policy::ErrorCode::UpstreamTimeout,
        }
    }
}

/// An error with its chain of causes (`client error (Connect): invalid peer certificate: …`),
/// so a TLS failure says what failed.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A pooled HTTP/1.1 client (`http://` and `https://`) with connect and response-header
/// timeouts.
#[derive(Clone)]
pub struct HttpClient {
    client: Arc<Client<HttpsConnector<HttpConnector>, Body>>,
    response_timeout: Duration,
}

impl HttpClient {
    /// Builds the client from the limits; `https://` is verified as `tls` says.
    pub fn new(limits: &Limits, tls: &UpstreamTls) -> HttpClient {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(limits.upstream_connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        // The connector sets ALPN itself (from the protocols it enables).
        let mut config = (*tls.config).clone();
        config.alpn_protocols.clear();
        let builder = HttpsConnectorBuilder::new().with_tls_config(config);
        let builder = builder.https_or_http();
        let builder = match tls
            .server_name
            .as_deref()
            .and_then(|n| ServerName::try_from(n.to_owned()).ok())
        {
            Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
            None => builder,
        };
        let connector = builder.enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(limits.upstream_idle_timeout)
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(256)
            .build(connector);
        HttpClient {
            client: Arc::new(client),
            response_timeout: limits.upstream_response_timeout,
        }
    }

    /// Sends a request; waits at most the response timeout for the response head.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        self.send_within(req, self.response_timeout).await
    }

    /// Sends a request with an explicit head timeout.
    pub async fn send_within(
        &self,
        req: Request<Body>,
        wait: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(wait, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(UpstreamError::Unavailable(with_causes(&e))),
            Err(_) => Err(UpstreamError::Timeout),
        }
    }

    /// `GET url`, reading at most `max` body bytes, all within `wait`.
    pub async fn get_small(
        &self,
        url: &str,
        wait: Duration,
        max: usize,
    ) -> Result<(StatusCode, Bytes), UpstreamError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| UpstreamError::Unavailable(format!("bad url {url}")))?;
        let req = Request::get(uri)
            .body(empty())
            .map_err(|e| UpstreamError::Unavailable(e.to_string()))?;
        let work = async {
            let resp = self.send_within(req, wait).await?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), max)
                .collect()
                .await
                .map_err(|e| UpstreamError::Unavailable(format!("body: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(wait, work)
            .await
            .unwrap_or(Err(UpstreamError::Timeout))
    }
}
