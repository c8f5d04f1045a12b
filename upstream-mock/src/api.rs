//! Request routing and the JSON endpoints.

use crate::body::{full, Body};
use crate::levers::{Arrival, Faults};
use crate::store::StoreError;
use crate::{canvas, sse, ws, App};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Largest accepted request body.
pub const MAX_BODY: usize = 1024 * 1024;

/// Answers one request.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if !path.starts_with("/_mock/") {
        app.levers.record(record_of(&req));
        let faults = app.levers.faults();
        if let Some(ms) = faults.latency_ms.filter(|ms| *ms > 0) {
            tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
        }
        if let Some(status) = app.levers.take_fail_next() {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error(
                code,
                "mock.injected_failure",
                "failure injected by /_mock/faults",
            );
        }
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    match (method, segments.as_slice()) {
        (Method::POST, ["chat", "threads"]) => create_thread(&app, req).await,
        (Method::POST, ["chat", "threads", id, "messages"]) => {
            let id = (*id).to_owned();
            post_message(&app, &id, req).await
        }
        (Method::GET, ["chat", "threads", id, "messages"]) => list_messages(&app, id, &req),
        (Method::GET, ["registry", "threads", id]) => registry(&app, id),
        (Method::GET, ["registry", "canvases", id]) => canvas::registry(&app, id),
        (Method::POST, ["canvas", "canvases"]) => canvas::create(&app, req).await,
        (Method::POST, ["canvas", "canvases", id, ch @ ("commits" | "artifacts" | "gestures")]) => {
            let (id, ch) = ((*id).to_owned(), *ch);
            canvas::post(&app, &id, ch, req).await
        }
        (Method::GET, ["sse", "canvas", id, ch @ ("commits" | "artifacts" | "gestures")]) => {
            let (id, ch) = ((*id).to_owned(), *ch);
            canvas::open(app, &id, ch, &req)
        }
        (Method::POST, ["_mock", "gestures"]) => canvas::generate(app, req).await,
        (Method::GET, ["sse", "chat", id]) => {
            let id = (*id).to_owned();
            sse::open(app, &id, &req)
        }
        (Method::GET, ["ws", "chat", id]) => {
            let id = (*id).to_owned();
            ws::open(app, id, req)
        }
        (Method::GET, ["ws", "echo"]) => ws::open_echo(req),
        (Method::GET, ["healthz"]) => json_response(StatusCode::OK, &json!({"status": "ok"})),
        (Method::POST, ["_mock", "publish"]) => crate::publish::handle(app, req).await,
        (Method::POST, ["_mock", "faults"]) => set_faults(&app, req).await,
        (Method::GET, ["_mock", "faults"]) => {
            json_response(StatusCode::OK, &json!(app.levers.faults()))
        }
        (Method::GET, ["_mock", "requests"]) => {
            json_response(StatusCode::OK, &json!(app.levers.requests()))
        }
        (Method::GET, ["_mock", "stats"]) => json_response(StatusCode::OK, &app.levers.stats()),
        _ => error(StatusCode::NOT_FOUND, "mock.not_found", "no such endpoint"),
    }
}

fn record_of(req: &Request<Incoming>) -> Arrival {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    Arrival::of(req.method().as_str(), path, req.headers())
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// An error in the same envelope shape the gateway uses.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message, "http_status": status.as_u16(), "retryable": false}}),
    )
}

/// Reads a JSON object body (at most [`MAX_BODY`]).
pub async fn read_json<T: for<'de> Deserialize<'de>>(
    req: Request<Incoming>,
) -> Result<T, Response<Body>> {
    let bytes: Bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "mock.too_large",
                "body over 1 MiB",
            ))
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "mock.bad_json", &e.to_string()))
}

fn header_str<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

fn store_error(e: StoreError) -> Response<Body> {
    match e {
        StoreError::NotFound => error(
            StatusCode::NOT_FOUND,
            "mock.thread_not_found",
            "no such thread",
        ),
        StoreError::Io(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "mock.io", &e.to_string()),
    }
}

#[derive(Deserialize)]
struct NewThread {
    #[serde(default)]
    title: String,
}

async fn create_thread(app: &App, req: Request<Incoming>) -> Response<Body> {
    let (Some(tenant), env) = (
        header_str(&req, "x-tenant-id").map(String::from),
        header_str(&req, "x-env").unwrap_or("dev").to_owned(),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "mock.tenant_missing",
            "X-Tenant-Id is required",
        );
    };
    let project = header_str(&req, "x-project-id").map(String::from);
    let body: NewThread = match read_json(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    match app
        .store
        .create_thread(&tenant, &env, &body.title, project.as_deref())
        .await
    {
        Ok(t) => json_response(
            StatusCode::CREATED,
            &json!({"id": t.id, "tenant_id": t.tenant_id, "env": t.env, "title": t.title}),
        ),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
struct NewMessage {
    text: String,
}

async fn post_message(app: &App, id: &str, req: Request<Incoming>) -> Response<Body> {
    let body: NewMessage = match read_json(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    match app.store.append(id, body.text, None).await {
        Ok(m) => json_response(
            StatusCode::CREATED,
            &json!({"id": m.seq.to_string(), "seq": m.seq}),
        ),
        Err(e) => store_error(e),
    }
}

fn list_messages(app: &App, id: &str, req: &Request<Incoming>) -> Response<Body> {
    let after = query_param(req.uri().query(), "after")
        .and_then(|a| a.parse::<u64>().ok())
        .unwrap_or(0);
    match app.store.after(id, after, usize::MAX) {
        Some(msgs) => json_response(
            StatusCode::OK,
            &Value::Array(msgs.iter().map(|m| m.json.clone()).collect()),
        ),
        None => store_error(StoreError::NotFound),
    }
}

fn registry(app: &App, id: &str) -> Response<Body> {
    match app.store.thread(id) {
        Some(t) => {
            let mut rec = json!({"tenant_id": t.tenant_id, "env": t.env});
            if let Some(p) = t.project_id {
                rec["project_id"] = Value::String(p);
            }
            json_response(StatusCode::OK, &rec)
        }
        None => store_error(StoreError::NotFound),
    }
}

async fn set_faults(app: &App, req: Request<Incoming>) -> Response<Body> {
    match read_json::<Faults>(req).await {
        Ok(f) => {
            app.levers.set_faults(f.clone());
            json_response(StatusCode::OK, &json!(f))
        }
        Err(resp) => resp,
    }
}

/// A decoded query parameter.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
