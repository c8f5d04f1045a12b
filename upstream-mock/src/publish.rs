//! `POST /_mock/publish`: publish `count` messages, paced at `rate_per_s` (in the background) or
//! as fast as possible (answered when done).

use crate::api::{error, json_response, read_json};
use crate::body::Body;
use crate::App;
use http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most messages one call may publish.
pub const MAX_COUNT: u64 = 10_000_000;

#[derive(Deserialize)]
struct Publish {
    thread_id: String,
    #[serde(default = "one")]
    count: u64,
    #[serde(default)]
    rate_per_s: Option<f64>,
    #[serde(default)]
    payload_bytes: Option<usize>,
    /// Attached to every published message verbatim (lets tests play a misbehaving upstream).
    #[serde(default)]
    routing: Option<Value>,
}

fn one() -> u64 {
    1
}

fn text_for(n: u64, payload_bytes: Option<usize>) -> String {
    let mut t = format!("message {n}");
    if let Some(size) = payload_bytes {
        let size = size.min(crate::api::MAX_BODY);
        if t.len() < size {
            t.push_str(&"x".repeat(size - t.len()));
        }
    }
    t
}

/// Handles the lever.
pub async fn handle(app: Arc<App>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let p: Publish = match read_json(req).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    if app.store.thread(&p.thread_id).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "mock.thread_not_found",
            "no such thread",
        );
    }
    if p.count > MAX_COUNT {
        return error(
            StatusCode::BAD_REQUEST,
            "mock.bad_request",
            "count is too large",
        );
    }
    match p.rate_per_s.filter(|r| r.is_finite() && *r > 0.0) {
        None => {
            let mut first = None;
            let mut last = None;
            for n in 0..p.count {
                match app
                    .store
                    .append(
                        &p.thread_id,
                        text_for(n, p.payload_bytes),
                        p.routing.clone(),
                    )
                    .await
                {
                    Ok(m) => {
                        first.get_or_insert(m.seq);
                        last = Some(m.seq);
                    }
                    Err(_) => {
                        return error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "mock.io",
                            "append failed",
                        )
                    }
                }
            }
            json_response(
                StatusCode::OK,
                &json!({"first_seq": first, "last_seq": last}),
            )
        }
        Some(rate) => {
            let count = p.count;
            tokio::spawn(paced(app, p, rate));
            json_response(StatusCode::ACCEPTED, &json!({"accepted": count}))
        }
    }
}

/// Publishes on a fixed schedule (catching up in bursts when behind, never drifting).
async fn paced(app: Arc<App>, p: Publish, rate: f64) {
    let start = Instant::now();
    let mut shutdown = app.shutdown.clone();
    for n in 0..p.count {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = shutdown.changed() => return,
        }
        if app
            .store
            .append(
                &p.thread_id,
                text_for(n, p.payload_bytes),
                p.routing.clone(),
            )
            .await
            .is_err()
        {
            return;
        }
    }
}
