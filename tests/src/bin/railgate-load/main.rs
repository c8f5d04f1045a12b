//! `railgate-load`: SSE and WebSocket load for benchmarks. Opens every connection first, then
//! measures for `--duration` seconds: delivered events, end-to-end latency from the mock's
//! `sent_at_us`, and CPU of itself and of the processes named by `--watch`. Prints one JSON object.

mod transport;
mod window;

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use railgate_tests::tally::Tally;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use transport::{open_sse, Transport};
use window::Window;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Mode {
    /// SSE clients that read events.
    Sse,
    /// WebSocket clients that send a hello, then read events.
    Ws,
    /// SSE connections opened and held idle.
    IdleSse,
    /// WebSocket connections opened (hello sent) and held idle.
    IdleWs,
    /// New authenticated SSE connections per second (open, await 200, close).
    Handshakes,
}

#[derive(Parser, Debug)]
#[command(name = "railgate-load")]
struct Args {
    #[arg(value_enum)]
    mode: Mode,
    /// Target address (host:port).
    #[arg(long)]
    target: String,
    /// Comma-separated thread ids.
    #[arg(long)]
    threads: String,
    /// Connections per thread.
    #[arg(long, default_value_t = 1)]
    per_thread: usize,
    /// Path template; `{thread}` is replaced.
    #[arg(long, default_value = "/sse/chat/{thread}")]
    path: String,
    /// Extra request header `Name: value`, repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// WS hello text sent after the upgrade.
    #[arg(long)]
    hello: Option<String>,
    /// Seconds to measure once every connection is up.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// PIDs whose CPU time is reported, `name=pid`, comma-separated.
    #[arg(long, default_value = "")]
    watch: String,
    /// Concurrent connection attempts while ramping up.
    #[arg(long, default_value_t = 200)]
    ramp: usize,
    /// Handshake mode: concurrent workers.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// File the runner polls: written with "up" once every connection is established.
    #[arg(long)]
    ready_file: Option<String>,
    /// File the runner writes when the measurement may start (several load processes measured
    /// over one window): the window starts half a second after it appears; not there within
    /// 120 s, the run fails rather than measure a window of its own. Without it, half a second
    /// after the ready file.
    #[arg(long)]
    go_file: Option<String>,
    /// Connect over TLS, trusting the CA certificate(s) in this PEM file (server name `localhost`).
    #[arg(long)]
    tls_ca: Option<String>,
    /// Speak HTTP/2 (ALPN `h2` over TLS, prior knowledge without), one connection per client.
    #[arg(long)]
    h2: bool,
    /// SSE mode: check each client's `id:` sequence from its first byte (not only inside the
    /// measured window) and report per-client counts, gaps and repeats under `"tally"`.
    #[arg(long)]
    tally: bool,
}

struct Shared {
    window: Window,
    errors: AtomicU64,
    connected: AtomicU64,
    tallies: Mutex<Vec<Tally>>,
}

/// utime + stime of a process in seconds (USER_HZ = 100 on Linux).
fn cpu_seconds(pid: &str) -> f64 {
    let (user, system) = cpu_times(pid);
    user + system
}

/// utime and stime of a process in seconds (both 0 when it cannot be read).
fn cpu_times(pid: &str) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0.0, 0.0);
    };
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) / 100.0, t(12) / 100.0)
}

async fn sse_client(
    args: Arc<Args>,
    transport: Arc<Transport>,
    headers: Arc<Vec<(String, String)>>,
    path: String,
    shared: Arc<Shared>,
    (idle, slot): (bool, usize),
) {
    let mut body = match open_sse(&transport, &args.target, &path, &headers).await {
        Ok(b) => b,
        Err(_) => {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut carry = Vec::new();
    let (mut tally, mut lines) = (Tally::default(), Vec::new());
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let (Ok(data), false) = (f.into_data(), idle) {
                    shared.window.scan(&data, &mut carry);
                    if args.tally {
                        tally.feed(&data, &mut lines);
                        publish_tally(&shared, slot, tally);
                    }
                }
            }
            Err(_) => break,
        }
    }
    tally.ended = true;
    if args.tally {
        publish_tally(&shared, slot, tally);
    }
    shared.errors.fetch_add(1, Ordering::Relaxed);
}

fn publish_tally(shared: &Shared, slot: usize, tally: Tally) {
    if let Ok(mut t) = shared.tallies.lock() {
        if let Some(s) = t.get_mut(slot) {
            *s = tally;
        }
    }
}

/// Every client's tally, summed up.
fn tally_report(shared: &Shared) -> serde_json::Value {
    let t = shared.tallies.lock().map(|t| t.clone()).unwrap_or_default();
    let counts = t.iter().map(|t| t.events);
    json!({
        "clients": t.len(),
        "min_events": counts.clone().min().unwrap_or(0),
        "max_events": counts.max().unwrap_or(0),
        "gaps": t.iter().map(|t| t.gaps).sum::<u64>(),
        "repeats": t.iter().map(|t| t.repeats).sum::<u64>(),
        "ended": t.iter().filter(|t| t.ended).count(),
    })
}

async fn ws_client(
    args: Arc<Args>,
    headers: Arc<Vec<(String, String)>>,
    path: String,
    shared: Arc<Shared>,
    idle: bool,
) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let Ok(mut req) = format!("ws://{}{}", args.target, path).into_client_request() else {
        return;
    };
    for (k, v) in headers.iter() {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            req.headers_mut().insert(n, v);
        }
    }
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(req).await else {
        shared.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if let Some(h) = &args.hello {
        if ws.send(Message::text(h.clone())).await.is_err() {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut carry = Vec::new();
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(t)) if !idle => {
                carry.clear();
                shared.window.scan(t.as_bytes(), &mut carry);
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    shared.errors.fetch_add(1, Ordering::Relaxed);
}

fn parse_headers(raw: &[String]) -> Vec<(String, String)> {
    raw.iter()
        .filter_map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

fn watch_list(raw: &str) -> Vec<(String, String)> {
    raw.split(',')
        .filter(|s| !s.is_empty())
        .filter_map(|p| {
            p.split_once('=')
                .map(|(n, id)| (n.to_owned(), id.to_owned()))
        })
        .collect()
}

async fn handshakes(
    args: Arc<Args>,
    transport: Arc<Transport>,
    headers: Arc<Vec<(String, String)>>,
    paths: Vec<String>,
) -> serde_json::Value {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let (args, transport, headers, done, failed, stop) = (
            args.clone(),
            transport.clone(),
            headers.clone(),
            done.clone(),
            failed.clone(),
            stop.clone(),
        );
        let path = paths[w % paths.len()].clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(
                    Duration::from_secs(5),
                    open_sse(&transport, &args.target, &path, &headers),
                )
                .await
                {
                    Ok(Ok(_)) => done.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    json!({"handshakes": done.load(Ordering::Relaxed), "failed": failed.load(Ordering::Relaxed), "per_s": done.load(Ordering::Relaxed) as f64 / secs})
}

fn main() {
    let args = Arc::new(Args::parse());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let out = runtime.block_on(run(args));
    println!("{out}");
}

async fn run(args: Arc<Args>) -> serde_json::Value {
    let headers = Arc::new(parse_headers(&args.headers));
    let threads: Vec<String> = args
        .threads
        .split(',')
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    let paths: Vec<String> = threads
        .iter()
        .map(|t| args.path.replace("{thread}", t))
        .collect();
    let watched = watch_list(&args.watch);
    let transport = Arc::new(Transport::new(args.tls_ca.as_deref(), args.h2));
    if args.mode == Mode::Handshakes {
        let before: Vec<f64> = watched.iter().map(|(_, p)| cpu_seconds(p)).collect();
        let mut r = handshakes(args.clone(), transport, headers, paths).await;
        let cpu: serde_json::Map<String, serde_json::Value> = watched
            .iter()
            .zip(before)
            .map(|((n, p), b)| {
                (
                    n.clone(),
                    json!((cpu_seconds(p) - b) / args.duration as f64),
                )
            })
            .collect();
        r["cpu"] = json!(cpu);
        return r;
    }
    let shared = Arc::new(Shared {
        window: Window::default(),
        errors: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        tallies: Mutex::new(Vec::new()),
    });
    let total = threads.len() * args.per_thread;
    if args.tally {
        if let Ok(mut t) = shared.tallies.lock() {
            *t = vec![Tally::default(); total];
        }
    }
    let mut slot = 0;
    let idle = matches!(args.mode, Mode::IdleSse | Mode::IdleWs);
    let sem = Arc::new(tokio::sync::Semaphore::new(args.ramp));
    let ramp_start = Instant::now();
    for path in &paths {
        for _ in 0..args.per_thread {
            let (a, h, p, s) = (args.clone(), headers.clone(), path.clone(), shared.clone());
            let t = transport.clone();
            slot += 1;
            let slot = slot - 1;
            let permit = sem.clone().acquire_owned().await.expect("semaphore");
            let connected_before =
                s.connected.load(Ordering::Relaxed) + s.errors.load(Ordering::Relaxed);
            let s2 = s.clone();
            tokio::spawn(async move {
                let release = async move {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while s2.connected.load(Ordering::Relaxed) + s2.errors.load(Ordering::Relaxed)
                        <= connected_before
                        && Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    drop(permit);
                };
                tokio::spawn(release);
                match a.mode {
                    Mode::Ws | Mode::IdleWs => ws_client(a, h, p, s, idle).await,
                    _ => sse_client(a, t, h, p, s, (idle, slot)).await,
                }
            });
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while (shared.connected.load(Ordering::Relaxed) + shared.errors.load(Ordering::Relaxed))
        < total as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ramp_s = ramp_start.elapsed().as_secs_f64();
    if let Some(f) = &args.ready_file {
        let _ = std::fs::write(f, "up");
    }
    if let Some(go) = &args.go_file {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !std::path::Path::new(go).exists() {
            assert!(Instant::now() < deadline, "no go file {go} within 120 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: Vec<(f64, f64)> = watched.iter().map(|(_, p)| cpu_times(p)).collect();
    let self_before = cpu_seconds("self");
    shared.window.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    shared.window.measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let mut cpu = serde_json::Map::new();
    cpu.insert(
        "load".into(),
        json!((cpu_seconds("self") - self_before) / secs),
    );
    // The user-space part too: what the process computes, apart from the kernel's work for it.
    let mut cpu_user = serde_json::Map::new();
    for ((name, pid), (user0, system0)) in watched.iter().zip(before) {
        let (user, system) = cpu_times(pid);
        cpu.insert(
            name.clone(),
            json!((user - user0 + system - system0) / secs),
        );
        cpu_user.insert(name.clone(), json!((user - user0) / secs));
    }
    let h = shared.window.latencies();
    let events = shared.window.events.load(Ordering::Relaxed);
    json!({
        "mode": format!("{:?}", args.mode),
        "clients": total,
        "connected": shared.connected.load(Ordering::Relaxed),
        "errors": shared.errors.load(Ordering::Relaxed),
        "ramp_s": ramp_s,
        "events": events,
        "events_per_s": events as f64 / secs,
        "latency_us": {"p50": h.value_at_quantile(0.5), "p90": h.value_at_quantile(0.9), "p99": h.value_at_quantile(0.99), "max": h.max()},
        "cpu": cpu,
        "cpu_user": cpu_user,
        "tally": if args.tally { tally_report(&shared) } else { json!(null) },
    })
}
