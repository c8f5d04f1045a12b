//! Reaching the upstream: the pooled HTTP client of the HTTP rail, the registry and the JWKS
//! fetcher; the TCP connect and reconnect backoff the SSE and WebSocket rails use for their
//! long-lived streams (each on its own connection).

use crate::body::{empty, Body};
use crate::config::Limits;
use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
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

/// Opens a TCP connection (no-delay) to an upstream authority within `wait`. IP literals are
/// used as they are; only names go through the resolver.
pub async fn connect_tcp(
    authority: &http::uri::Authority,
    wait: Duration,
) -> Result<tokio::net::TcpStream, String> {
    use std::net::{IpAddr, SocketAddr};
    use tokio::net::TcpStream;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let connecting = async {
        match host.parse::<IpAddr>() {
            Ok(ip) => TcpStream::connect(SocketAddr::new(ip, port)).await,
            Err(_) => TcpStream::connect((host, port)).await,
        }
    };
    match tokio::time::timeout(wait, connecting).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err("connect timed out".into()),
    }
}

/// A reconnect delay around `base`: uniformly between half and one and a half times it, so
/// clients cut by one upstream restart do not come back in step.
pub fn jittered(base: Duration) -> Duration {
    let ms = base.as_millis() as u64;
    Duration::from_millis(ms / 2 + rand::random_range(0..=ms.max(1)))
}

/// A pooled HTTP/1.1 client with connect and response-header timeouts.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Body>,
    response_timeout: Duration,
}

impl Upstream {
    /// Builds the client from the limits.
    pub fn new(limits: &Limits) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(limits.upstream_connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(limits.upstream_idle_timeout)
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(256)
            .build(connector);
        Upstream {
            client,
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
            Ok(Err(e)) => Err(UpstreamError::Unavailable(e.to_string())),
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
