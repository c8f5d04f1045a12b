//! A canvas backend: canvases owned by a tenant, each streaming three channels over SSE.
//!
//! - **commits** (`event: commit`, ids 1, 2, 3… per canvas): authoritative changes; resumable
//!   with `Last-Event-ID` (410 for an id never issued).
//! - **artifacts** (`event: artifact`, ids per canvas): previews, replays, audit records;
//!   resumable the same way.
//! - **gestures** (`event: gesture`, no id): cursor moves and strokes in progress, live only.
//!   `POST /_mock/gestures` generates them at a rate, round-robin over N actors.
//!
//! Canvases live in memory (the data dir keeps threads only). Like the rest of the mock it trusts
//! the gateway's identity headers.

use crate::api::{error, json_response, read_json};
use crate::body::Body;
use crate::levers::ActiveStream;
use crate::sse::{cursor_at, raw_cursor, stream_response, Cursor};
use crate::store::now_us;
use crate::App;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// Events a gesture subscriber may fall behind before it skips ahead.
const GESTURE_BUFFER: usize = 4096;
/// Most gestures one generator call may publish.
const MAX_GESTURES: u64 = 10_000_000;

/// One durable channel: pre-rendered SSE events, in id order.
struct Log {
    events: Mutex<Vec<Bytes>>,
    changed: watch::Sender<u64>,
}

impl Log {
    fn new() -> Log {
        Log {
            events: Mutex::new(Vec::new()),
            changed: watch::channel(0).0,
        }
    }

    /// Appends the event that `render` makes of the next id; returns that id.
    fn append(&self, render: impl FnOnce(u64) -> Bytes) -> u64 {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let seq = events.len() as u64 + 1;
        events.push(render(seq));
        self.changed.send_replace(seq);
        seq
    }

    fn after(&self, seq: u64) -> Vec<Bytes> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().skip(seq as usize).cloned().collect()
    }

    fn last(&self) -> u64 {
        *self.changed.borrow()
    }
}

/// One canvas.
pub struct Canvas {
    id: String,
    tenant_id: String,
    env: String,
    project_id: Option<String>,
    disabled_routes: Vec<String>,
    commits: Log,
    artifacts: Log,
    gestures: broadcast::Sender<Bytes>,
}

impl Canvas {
    /// The canvas's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Publishes on `channel` (`commits`, `artifacts` or `gestures`) an event with `fields`
    /// (and `routing` verbatim when given); returns the id of a durable one.
    pub fn publish(&self, channel: &str, mut fields: Value, routing: Option<Value>) -> Option<u64> {
        fields["canvas_id"] = self.id.clone().into();
        fields["sent_at_us"] = now_us().into();
        if let Some(r) = routing {
            fields["routing"] = r;
        }
        let name = match channel {
            "commits" => "commit",
            "artifacts" => "artifact",
            _ => {
                fields["type"] = "gesture".into();
                let _ = self.gestures.send(sse_event("gesture", None, &fields));
                return None;
            }
        };
        fields["type"] = name.into();
        Some(self.log(channel).append(|seq| {
            fields["seq"] = seq.into();
            sse_event(name, Some(seq), &fields)
        }))
    }

    /// Publishes `count` gestures in the background at `rate_per_s`, round-robin over actors
    /// `a1`…`aN`, each with its own `seq` (1, 2, 3… per actor).
    pub fn generate(self: &Arc<Self>, actors: u64, count: u64, rate_per_s: f64) {
        let c = self.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            for n in 0..count {
                let due = start + Duration::from_secs_f64(n as f64 / rate_per_s);
                tokio::time::sleep_until(due.into()).await;
                let actor = n % actors + 1;
                let fields = json!({"actor_id": format!("a{actor}"), "seq": n / actors + 1, "x": n, "y": actor});
                c.publish("gestures", fields, None);
            }
        });
    }

    /// The durable log of `channel` (`commits`, else artifacts).
    fn log(&self, channel: &str) -> &Log {
        if channel == "commits" {
            &self.commits
        } else {
            &self.artifacts
        }
    }
}

/// Every canvas of one mock.
#[derive(Default)]
pub struct Canvases(Mutex<HashMap<String, Arc<Canvas>>>);

impl Canvases {
    /// Creates a canvas owned by `tenant_id` in `env` (and `project_id`).
    pub fn create(&self, tenant_id: &str, env: &str, project_id: Option<&str>) -> Arc<Canvas> {
        self.create_with(tenant_id, env, project_id, Vec::new())
    }

    /// Like [`Canvases::create`], with routes the registry says are off for it.
    pub fn create_with(
        &self,
        tenant_id: &str,
        env: &str,
        project_id: Option<&str>,
        disabled_routes: Vec<String>,
    ) -> Arc<Canvas> {
        let canvas = Arc::new(Canvas {
            id: format!("cv_{:016x}", rand::random::<u64>()),
            tenant_id: tenant_id.into(),
            env: env.into(),
            project_id: project_id.map(String::from),
            disabled_routes,
            commits: Log::new(),
            artifacts: Log::new(),
            gestures: broadcast::channel(GESTURE_BUFFER).0,
        });
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(canvas.id.clone(), canvas.clone());
        canvas
    }

    /// A canvas by id.
    pub fn get(&self, id: &str) -> Option<Arc<Canvas>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }
}

fn sse_event(name: &str, id: Option<u64>, data: &Value) -> Bytes {
    let id = id.map_or(String::new(), |i| format!("id: {i}\n"));
    Bytes::from(format!("event: {name}\n{id}data: {data}\n\n"))
}

fn no_canvas() -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "mock.canvas_not_found",
        "no such canvas",
    )
}

#[derive(Deserialize)]
struct NewCanvas {
    #[serde(default)]
    title: String,
    /// Routes the registry answers as switched off for this canvas.
    #[serde(default)]
    disabled_routes: Vec<String>,
}

/// `POST /canvas/canvases` → 201 `{"id","tenant_id","env","title"}`.
pub async fn create(app: &App, req: Request<Incoming>) -> Response<Body> {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(String::from)
    };
    let (Some(tenant_id), env, project_id) = (
        header("x-tenant-id"),
        header("x-env").unwrap_or_else(|| "dev".into()),
        header("x-project-id"),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "mock.tenant_missing",
            "X-Tenant-Id is required",
        );
    };
    let body: NewCanvas = match read_json(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let c = app.canvases.create_with(
        &tenant_id,
        &env,
        project_id.as_deref(),
        body.disabled_routes,
    );
    json_response(
        StatusCode::CREATED,
        &json!({"id": c.id, "tenant_id": tenant_id, "env": env, "title": body.title}),
    )
}

/// `GET /registry/canvases/{id}` → the ownership record or 404.
pub fn registry(app: &App, id: &str) -> Response<Body> {
    let Some(c) = app.canvases.get(id) else {
        return no_canvas();
    };
    let mut rec = json!({"tenant_id": c.tenant_id, "env": c.env});
    if let Some(p) = &c.project_id {
        rec["project_id"] = Value::String(p.clone());
    }
    if !c.disabled_routes.is_empty() {
        rec["disabled_routes"] = json!(c.disabled_routes);
    }
    json_response(StatusCode::OK, &rec)
}

/// A posted commit, artifact or gesture. `routing` is attached verbatim (lets tests play an
/// upstream that names another canvas or tenant).
#[derive(Deserialize)]
struct Posted {
    #[serde(default)]
    actor_id: Option<String>,
    #[serde(default)]
    op: Option<Value>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    x: Option<f64>,
    #[serde(default)]
    y: Option<f64>,
    #[serde(default)]
    routing: Option<Value>,
}

/// `POST /canvas/canvases/{id}/{commits|artifacts|gestures}`.
pub async fn post(app: &App, id: &str, channel: &str, req: Request<Incoming>) -> Response<Body> {
    let Some(c) = app.canvases.get(id) else {
        return no_canvas();
    };
    let p: Posted = match read_json(req).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let fields = match channel {
        "commits" => json!({"actor_id": p.actor_id, "op": p.op}),
        "artifacts" => {
            json!({"actor_id": p.actor_id, "kind": p.kind.unwrap_or_else(|| "preview".into()), "uri": p.uri})
        }
        _ => json!({"actor_id": p.actor_id, "x": p.x.unwrap_or(0.0), "y": p.y.unwrap_or(0.0)}),
    };
    match c.publish(channel, fields, p.routing) {
        Some(seq) => json_response(
            StatusCode::CREATED,
            &json!({"id": seq.to_string(), "seq": seq}),
        ),
        None => json_response(StatusCode::ACCEPTED, &json!({})),
    }
}

/// `GET /sse/canvas/{id}/{commits|artifacts|gestures}`.
pub fn open(app: Arc<App>, id: &str, channel: &str, req: &Request<Incoming>) -> Response<Body> {
    let Some(c) = app.canvases.get(id) else {
        return no_canvas();
    };
    let (tx, body) = crate::body::channel(16);
    app.levers.sse_opened.fetch_add(1, Ordering::Relaxed);
    if channel == "gestures" {
        let rx = c.gestures.subscribe();
        tokio::spawn(pump_gestures(app.clone(), rx, tx));
        return stream_response(body);
    }
    let raw = raw_cursor(req);
    let start = match cursor_at(raw.as_deref(), c.log(channel).last()) {
        Cursor::After(n) => n,
        Cursor::Invalid => return error(StatusCode::GONE, "chat.cursor_invalid", "unknown cursor"),
    };
    let channel = channel.to_owned();
    tokio::spawn(async move { pump_log(app, c, channel, start, tx).await });
    stream_response(body)
}

async fn pump_log(
    app: Arc<App>,
    c: Arc<Canvas>,
    channel: String,
    mut at: u64,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let log = c.log(&channel);
    let mut changes = log.changed.subscribe();
    // Counted once subscribed, so "active" means "will see the next post".
    let _active = ActiveStream::new(&app.levers.streams_active);
    let mut shutdown = app.shutdown.clone();
    loop {
        changes.borrow_and_update();
        let fresh = log.after(at);
        if !fresh.is_empty() {
            at += fresh.len() as u64;
            if tx.send(Bytes::from(fresh.concat())).await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
            _ = tx.closed() => return,
        }
    }
}

async fn pump_gestures(
    app: Arc<App>,
    mut rx: broadcast::Receiver<Bytes>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let _active = ActiveStream::new(&app.levers.streams_active);
    let mut shutdown = app.shutdown.clone();
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = shutdown.changed() => return,
            _ = tx.closed() => return,
        };
        match ev {
            Ok(b) => {
                if tx.send(b).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[derive(Deserialize)]
struct Generate {
    canvas_id: String,
    #[serde(default = "one")]
    actors: u64,
    count: u64,
    rate_per_s: f64,
}

fn one() -> u64 {
    1
}

/// `POST /_mock/gestures {"canvas_id","actors","count","rate_per_s"}`: publishes `count`
/// gestures in the background, round-robin over actors `a1`…`aN`, each with its own `seq`
/// (1, 2, 3… per actor) so a consumer can tell the newest. Answers 202 at once.
pub async fn generate(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let g: Generate = match read_json(req).await {
        Ok(g) => g,
        Err(resp) => return resp,
    };
    let Some(c) = app.canvases.get(&g.canvas_id) else {
        return no_canvas();
    };
    if g.count > MAX_GESTURES || g.actors == 0 || g.rate_per_s.is_nan() || g.rate_per_s <= 0.0 {
        return error(
            StatusCode::BAD_REQUEST,
            "mock.bad_request",
            "count ≤ 10,000,000, actors ≥ 1 and rate_per_s > 0 are required",
        );
    }
    c.generate(g.actors, g.count, g.rate_per_s);
    json_response(StatusCode::ACCEPTED, &json!({"count": g.count}))
}
