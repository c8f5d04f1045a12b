//! The pooled HTTP/1.1 client for short exchanges with the upstream: the HTTP rail's requests (a
//! bodiless one spoken directly, [`crate::client_direct`]), the registry's lookups and the JWKS
//! fetcher ([`crate::client_pool`]). Long-lived SSE and WebSocket streams do not use it; each
//! opens its own connection (see `proxy::upstream`).

use crate::body::{empty, Body};
use crate::client_direct::DirectBody;
use crate::client_pool::{Pool, PooledBody, Settings};
use crate::config::Limits;
use crate::conn_timer::ConnTimer;
use crate::outbound::UpstreamTls;
use bytes::Bytes;
use futures_util::future::Either;
use futures_util::FutureExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use std::future::Future;
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

/// `work` (an exchange with the upstream) within `wait`: its failure unavailable, no answer in
/// time a timeout.
fn within<T>(
    wait: Duration,
    work: impl Future<Output = Result<T, String>>,
) -> impl Future<Output = Result<T, UpstreamError>> {
    tokio::time::timeout(wait, work).map(|answer| timed(answer.ok()))
}

/// An exchange's answer, `None` when it did not come in time.
fn timed<T>(answer: Option<Result<T, String>>) -> Result<T, UpstreamError> {
    match answer {
        Some(Ok(resp)) => Ok(resp),
        Some(Err(e)) => Err(UpstreamError::Unavailable(e)),
        None => Err(UpstreamError::Timeout),
    }
}

/// Most idle connections kept per upstream.
const MAX_IDLE_PER_UPSTREAM: usize = 256;

/// A pooled HTTP/1.1 client (`http://` and `https://`) with connect and response-header
/// timeouts.
#[derive(Clone)]
pub struct HttpClient {
    pool: Arc<Pool>,
    response_timeout: Duration,
}

impl HttpClient {
    /// Builds the client from the limits; `https://` is verified as `tls` says.
    pub fn new(limits: &Limits, tls: &UpstreamTls) -> HttpClient {
        let pool = Pool::new(Settings {
            tls: tls.clone(),
            connect_timeout: limits.upstream_connect_timeout,
            idle_timeout: limits.upstream_idle_timeout,
            max_idle: MAX_IDLE_PER_UPSTREAM,
        });
        HttpClient {
            pool,
            response_timeout: limits.upstream_response_timeout,
        }
    }

    /// Sends a request (absolute URI, `Host` set by the caller); waits at most the response
    /// timeout for the response head.
    pub fn send(
        &self,
        req: Request<Body>,
    ) -> impl Future<Output = Result<Response<PooledBody>, UpstreamError>> + Send + '_ {
        self.send_within(req, self.response_timeout)
    }

    /// Sends a request with an explicit head timeout. A combinator rather than an `async fn`:
    /// the request's future nests this one, and an `async fn` would keep the request it was
    /// given beside the pool's future that took it (each future of a request is copied whole
    /// when it is made).
    pub fn send_within(
        &self,
        req: Request<Body>,
        wait: Duration,
    ) -> impl Future<Output = Result<Response<PooledBody>, UpstreamError>> + Send + '_ {
        within(wait, self.pool.send(req))
    }

    /// Sends a bodiless request directly ([`crate::client_direct`]): `head` is its complete
    /// head for `uri` (absolute: its upstream picks the connection); waits at most the
    /// response timeout for the answer's head, timed by `timer` (the client connection's,
    /// when the request runs in that connection's task) or else by a timer of its own.
    pub fn exchange<'a>(
        &'a self,
        uri: &'a Uri,
        method: &'a Method,
        head: &'a [u8],
        timer: Option<&'a ConnTimer>,
    ) -> impl Future<Output = Result<Response<DirectBody>, UpstreamError>> + Send + 'a {
        let work = crate::client_direct::exchange(&self.pool, uri, method, head);
        let wait = self.response_timeout;
        match timer {
            Some(t) => Either::Left(t.within(wait, work).map(timed)),
            None => Either::Right(within(wait, work)),
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
        let host = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .ok_or_else(|| UpstreamError::Unavailable(format!("bad url {url}")))?;
        let req = Request::get(uri)
            .header(http::header::HOST, host)
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
