//! The one place a [`Denial`] is rendered, for every transport (CONTRACT §6): an HTTP response
//! before anything was sent, an SSE `event: error` frame once a stream started, and a WebSocket
//! envelope plus close frame once upgraded.

use crate::body::{full, Body};
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use railgate_policy::{Denial, ErrorCode};

/// The envelope as an HTTP response with its status, `Content-Type` and `X-Request-Id`.
pub fn http(denial: &Denial, trace_id: &str) -> Response<Body> {
    let status = StatusCode::from_u16(denial.code.http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json_text(status, denial.envelope(trace_id).to_json(), trace_id);
    if denial.code.retryable() {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    // Lets the access log and metrics read the outcome without parsing the body.
    resp.extensions_mut().insert(denial.code);
    resp
}

/// Marks an answer as the connection's last (`Connection: close`).
pub fn closing(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The frame that ends a started SSE stream with an error.
pub fn sse(code: ErrorCode, trace_id: &str) -> Bytes {
    let json = Denial::new(code).envelope(trace_id).to_json();
    Bytes::from(format!("event: error\ndata: {json}\n\n"))
}

/// How an upgraded WebSocket ends with a denial: this text message, then this close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsClose {
    /// The envelope, sent as a text message.
    pub envelope: String,
    /// The close code.
    pub code: u16,
    /// The close reason: the error code (at most 123 bytes by construction).
    pub reason: &'static str,
}

/// The envelope and close frame for a denial on an upgraded WebSocket.
pub fn ws(denial: &Denial, trace_id: &str) -> WsClose {
    WsClose {
        envelope: denial.envelope(trace_id).to_json(),
        code: denial.code.ws_close_code(),
        reason: denial.code.as_str(),
    }
}

/// A JSON answer with `X-Request-Id` (successful built-in endpoints).
pub fn json(status: StatusCode, body: &serde_json::Value, trace_id: &str) -> Response<Body> {
    json_text(status, body.to_string(), trace_id)
}

fn json_text(status: StatusCode, body: String, trace_id: &str) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(trace_id) {
        h.insert(crate::header_names::X_REQUEST_ID, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn envelope_response_has_status_type_and_request_id() {
        let resp = http(&Denial::new(ErrorCode::ThreadForbidden), "abc");
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.headers()["x-request-id"], "abc");
        assert!(resp.headers().get("retry-after").is_none());
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(
            &body[..],
            br#"{"error":{"code":"chat.thread_forbidden","message":"thread belongs to another tenant or env","http_status":403,"retryable":false,"trace_id":"abc"}}"#
        );
        let resp = http(&Denial::new(ErrorCode::Draining), "t");
        assert_eq!(
            (resp.status().as_u16(), &resp.headers()["retry-after"]),
            (503, &HeaderValue::from_static("1"))
        );
    }

    #[test]
    fn sse_and_ws_carry_the_same_envelope() {
        let envelope = r#"{"error":{"code":"stream.slow_consumer","message":"client fell too far behind","http_status":503,"retryable":true,"trace_id":"t1"}}"#;
        assert_eq!(
            &sse(ErrorCode::SlowConsumer, "t1")[..],
            format!("event: error\ndata: {envelope}\n\n").as_bytes()
        );
        assert_eq!(
            ws(&Denial::new(ErrorCode::SlowConsumer), "t1"),
            WsClose {
                envelope: envelope.to_owned(),
                code: 4008,
                reason: "stream.slow_consumer",
            }
        );
    }
}
