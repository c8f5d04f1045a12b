//! The one place a [`Denial`] becomes an HTTP response (SSE and WS rails reuse the envelope).

use crate::body::{full, Body};
use http::{header, HeaderValue, Response, StatusCode};
use railgate_policy::{Denial, ErrorCode};

/// The envelope as an HTTP response with its status, `Content-Type` and `X-Request-Id`.
pub fn respond(denial: &Denial, trace_id: &str) -> Response<Body> {
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
        h.insert("x-request-id", v);
    }
    resp
}

/// Shorthand for a code with its default message.
pub fn respond_code(code: ErrorCode, trace_id: &str) -> Response<Body> {
    respond(&Denial::new(code), trace_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn envelope_response_has_status_type_and_request_id() {
        let resp = respond(&Denial::new(ErrorCode::ThreadForbidden), "abc");
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.headers()["x-request-id"], "abc");
        assert!(resp.headers().get("retry-after").is_none());
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(
            &body[..],
            br#"{"error":{"code":"chat.thread_forbidden","message":"thread belongs to another tenant or env","http_status":403,"retryable":false,"trace_id":"abc"}}"#
        );
        let resp = respond_code(ErrorCode::Draining, "t");
        assert_eq!(
            (resp.status().as_u16(), &resp.headers()["retry-after"]),
            (503, &HeaderValue::from_static("1"))
        );
    }
}
