//! Listeners, the accept loops, background upkeep, and drain. Each client request goes to
//! [`crate::dispatch::handle`]; each admin request to [`crate::admin::handle`].

use crate::admin::{self, Admin};
use crate::app::Gateway;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

/// The two bound listeners.
pub struct Listeners {
    /// Client traffic.
    pub main: TcpListener,
    /// Metrics, health, admin.
    pub admin: TcpListener,
}

/// Serves both listeners until `shutdown` completes, then drains within `drain_timeout`.
pub async fn run(
    gw: Arc<Gateway>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let conns = TaskTracker::new();
    spawn_background(&gw);
    let admin = tokio::spawn(serve_admin(admin_view(&gw), listeners.admin));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listeners.main.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        conns.spawn(serve_connection(gw.clone(), stream, peer));
    }
    drop(listeners.main);
    tracing::info!(target: "railgate::lifecycle", "draining");
    gw.draining.cancel();
    conns.close();
    gw.streams.close();
    let drained = tokio::time::timeout(gw.config.drain_timeout, async {
        conns.wait().await;
        gw.streams.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(target: "railgate::lifecycle", "drain timeout reached; closing the remaining connections");
    }
    admin.abort();
    Ok(())
}

/// One client connection: HTTP/1.1 with upgrades, until it ends or the gateway drains.
async fn serve_connection(
    gw: Arc<Gateway>,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) {
    let limits = &gw.config.limits;
    let max_buf = (limits.max_header_bytes * 2).max(8192);
    let header_timeout = limits.header_read_timeout;
    let stop = gw.draining.clone();
    let gw2 = gw.clone();
    let svc = service_fn(move |req| {
        let gw = gw2.clone();
        // Boxed: hyper keeps a slot the size of this future for the connection's whole life; a
        // box in it is 16 bytes, and the request's own state is freed once the response (or the
        // stream body) is handed over.
        let fut: Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(async move {
            Ok::<_, std::convert::Infallible>(crate::dispatch::handle(gw, req, peer).await)
        });
        fut
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(max_buf)
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

fn admin_view(gw: &Gateway) -> Arc<Admin> {
    Arc::new(Admin {
        metrics: gw.metrics.clone(),
        registry: gw.registry.clone(),
        presence: gw.presence.clone(),
        draining: gw.draining.clone(),
        token: gw.admin_token.clone(),
        upstream: gw.config.upstream.clone(),
    })
}

/// Runs `work` every `period` until the gateway drains.
fn every<F, Fut>(gw: &Arc<Gateway>, period: Duration, work: F)
where
    F: Fn(Arc<Gateway>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let gw = gw.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => work(gw.clone()).await,
                _ = gw.draining.cancelled() => return,
            }
        }
    });
}

fn spawn_background(gw: &Arc<Gateway>) {
    every(gw, Duration::from_secs(30), |gw| async move {
        gw.hubs.journals.sweep(std::time::Instant::now());
    });
    if gw.registry.is_file() {
        every(gw, Duration::from_secs(1), |gw| async move {
            gw.registry.reload_if_changed().await;
        });
    }
    if gw.auth.keys.has_url() {
        // The first fetch happened before READY (see `bind`).
        every(gw, gw.config.auth.jwks_refresh, |gw| async move {
            if let Err(e) = gw.auth.keys.refresh().await {
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the previous keys");
            }
        });
    }
}

async fn serve_admin(admin: Arc<Admin>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, std::convert::Infallible>(admin::handle(admin, req).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
