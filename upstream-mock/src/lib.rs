//! upstream-mock: a small but honest chat backend for railgate's demo, tests and benchmarks.
//!
//! - [`store`] keeps threads and messages; with a data dir, [`log`] makes them durable (group
//!   commit, torn-tail recovery) so sequence numbers continue after `kill -9`.
//! - [`api`] routes requests: threads and messages, the registry endpoint, the SSE and WS streams
//!   ([`sse`], [`ws`]), canvases with their three channels ([`canvas`]), and the test levers
//!   under `/_mock/` ([`levers`], [`publish`]).
//!
//! It trusts the identity headers it receives: it is meant to be reachable only through the
//! gateway. [`run`] takes an already bound listener and a shutdown future, so tests bind port 0.

pub mod api;
pub mod body;
pub mod canvas;
pub mod levers;
pub mod log;
pub mod publish;
pub mod sse;
pub mod store;
pub mod ws;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How the mock runs.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Durable state directory; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
}

/// Shared state of one running mock.
pub struct App {
    /// Threads and messages.
    pub store: Arc<store::Store>,
    /// Faults, request log, counters.
    pub levers: levers::Levers,
    /// Canvases (in memory).
    pub canvases: Arc<canvas::Canvases>,
    /// Turns `true` when the mock shuts down; streams end then.
    pub shutdown: watch::Receiver<bool>,
}

/// How long in-flight requests get after shutdown is asked for.
const DRAIN: Duration = Duration::from_secs(5);

/// Opens the store the config names (recovering a torn tail) .
pub fn open_store(config: &Config) -> std::io::Result<Arc<store::Store>> {
    match &config.data_dir {
        Some(dir) => store::Store::open(dir).map(|(s, _)| s),
        None => Ok(store::Store::in_memory()),
    }
}

/// Serves on `listener` until `shutdown` completes, then ends streams and drains.
pub async fn run(
    listener: TcpListener,
    store: Arc<store::Store>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    run_with(listener, store, Arc::default(), shutdown).await
}

/// Like [`run`], serving `canvases` too (an embedding program publishes on them directly).
pub async fn run_with(
    listener: TcpListener,
    store: Arc<store::Store>,
    canvases: Arc<canvas::Canvases>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let app = Arc::new(App {
        store,
        levers: levers::Levers::default(),
        canvases,
        shutdown: stop_rx,
    });
    let tracker = tokio_util::task::TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => { tokio::time::sleep(Duration::from_millis(10)).await; continue }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let mut stop = app.shutdown.clone();
        let app = app.clone();
        let svc = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, std::convert::Infallible>(api::handle(app, req).await) }
        });
        let conn = http1::Builder::new()
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        tracker.spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.changed() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tracker.close();
    let _ = tokio::time::timeout(DRAIN, tracker.wait()).await;
    Ok(())
}
