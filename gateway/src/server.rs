//! Listeners, the accept loops, background upkeep, and drain. Each client request goes to
//! [`crate::dispatch::handle`]; each admin request to [`crate::admin::handle`].

use crate::admin::{self, Admin};
use crate::app::Gateway;
use crate::caps::{Cap, Connection};
use crate::wire::{head, Guarded, Refusal};
use http::Request;
use hyper::body::Incoming;
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
    let mut failing = AcceptFailures::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listeners.main.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tokio::select! {
                        _ = tokio::time::sleep(failing.failed(&e)) => {}
                        _ = &mut shutdown => break,
                    }
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        failing.recovered();
        let _ = stream.set_nodelay(true);
        match gw.caps.connect(peer.ip().to_canonical()) {
            Ok(slot) => conns.spawn(serve_connection(gw.clone(), stream, peer, slot)),
            Err(cap) => {
                gw.metrics.capacity_refusal(cap);
                conns.spawn(refuse(stream, cap))
            }
        };
    }
    drop(listeners.main);
    tracing::info!(target: "railgate::lifecycle", "draining");
    gw.draining.cancel();
    conns.close();
    gw.streams.close();
    let drained = tokio::time::timeout(gw.live().config.drain_timeout, async {
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

/// Failing `accept` calls (out of file descriptors, typically): back off, and log once per
/// interval with how many failed, instead of spinning and flooding the log.
#[derive(Default)]
struct AcceptFailures {
    backoff: Duration,
    last_log: Option<std::time::Instant>,
    unlogged: u64,
}

impl AcceptFailures {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(10);

    /// Records a failure; returns how long to wait before accepting again.
    fn failed(&mut self, e: &std::io::Error) -> Duration {
        self.unlogged += 1;
        if self.last_log.is_none_or(|t| t.elapsed() >= Self::LOG_EVERY) {
            tracing::warn!(error = %e, failures = self.unlogged, "accept failed; backing off");
            self.last_log = Some(std::time::Instant::now());
            self.unlogged = 0;
        }
        self.backoff = (self.backoff * 2).clamp(Self::FIRST, Self::MAX);
        self.backoff
    }

    fn recovered(&mut self) {
        self.backoff = Duration::ZERO;
    }
}

/// Answers a connection over a cap with `503 gateway.overloaded` and closes it, without parsing
/// its request (within a second). What the client sent is read and dropped before the close, so
/// the close is a FIN the client sees after the answer, not a reset that could discard it.
async fn refuse(mut stream: tokio::net::TcpStream, cap: Cap) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = cap
        .denial()
        .envelope(&crate::mint::random_hex_id())
        .to_json();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let answer = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
}

/// One client connection: HTTP/1.1 with upgrades, until it ends or the gateway drains. `slot`
/// holds its place under the connection caps.
async fn serve_connection(
    gw: Arc<Gateway>,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    slot: Arc<Connection>,
) {
    let limits = &gw.live().config.limits;
    let max_buf = (limits.max_header_bytes * 2).max(8192);
    let header_timeout = limits.header_read_timeout;
    let stop = gw.draining.clone();
    let gw2 = gw.clone();
    let refusal = Refusal::new();
    let io = Guarded::new(stream, limits.max_header_bytes, refusal.clone());
    let svc = service_fn(move |req: Request<Incoming>| {
        let (gw, slot) = (gw2.clone(), slot.clone());
        let refused = refusal.claim(req.headers());
        // Boxed: hyper keeps a slot the size of this future for the connection's whole life; a
        // box in it is 16 bytes, and the request's own state is freed once the response (or the
        // stream body) is handed over.
        let fut: Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(async move {
            let resp = match refused {
                Some(denial) => crate::dispatch::refused(&gw, &denial),
                None => crate::dispatch::handle(gw, req, peer, slot).await,
            };
            Ok::<_, std::convert::Infallible>(resp)
        });
        fut
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(max_buf)
        .max_headers(head::MAX_HEADERS)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

fn admin_view(gw: &Arc<Gateway>) -> Arc<Admin> {
    Arc::new(Admin {
        gw: gw.clone(),
        token: gw.admin_token.clone(),
    })
}

/// Runs `work` every `period` (read again each time: a reload may change it) until the gateway
/// drains.
fn every<P, F, Fut>(gw: &Arc<Gateway>, period: P, work: F)
where
    P: Fn(&Gateway) -> Duration + Send + 'static,
    F: Fn(Arc<Gateway>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let gw = gw.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period(&gw)) => work(gw.clone()).await,
                _ = gw.draining.cancelled() => return,
            }
        }
    });
}

/// Upkeep: journal sweeps, the registry file's changes, the JWKS refresh. Each reads the
/// configuration in force when it runs, so a reload that adds a registry file or a JWKS URL
/// is followed too.
fn spawn_background(gw: &Arc<Gateway>) {
    every(
        gw,
        |_| Duration::from_secs(30),
        |gw| async move {
            gw.hubs.journals.sweep(std::time::Instant::now());
        },
    );
    every(
        gw,
        |_| Duration::from_secs(1),
        |gw| async move {
            let registry = gw.live().registry.clone();
            if registry.is_file() {
                registry.reload_if_changed().await;
            }
        },
    );
    // The first fetch happened before READY (see `bind`).
    every(
        gw,
        |gw| gw.live().config.auth.jwks_refresh,
        |gw| async move {
            let keys = gw.live().auth.keys.clone();
            if keys.has_url() {
                if let Err(e) = keys.refresh().await {
                    tracing::warn!(error = %e, "JWKS refresh failed; keeping the previous keys");
                }
            }
        },
    );
}

/// Largest request head the admin listener reads.
const ADMIN_MAX_HEAD: usize = 16 * 1024;

async fn serve_admin(admin: Arc<Admin>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let refusal = Refusal::new();
            let io = Guarded::new(stream, ADMIN_MAX_HEAD, refusal.clone());
            let svc = service_fn(move |req: Request<Incoming>| {
                let admin = admin.clone();
                let refused = refusal.claim(req.headers());
                async move {
                    let resp = match refused {
                        Some(denial) => admin::refused(&denial),
                        None => admin::handle(admin, req).await,
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_headers(head::MAX_HEADERS)
                .serve_connection(TokioIo::new(io), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::AcceptFailures;
    use std::time::Duration;

    #[test]
    fn failing_accepts_back_off_to_a_second_and_log_once_per_interval() {
        let mut f = AcceptFailures::default();
        let e = std::io::Error::from_raw_os_error(24); // EMFILE
        let waits: Vec<u128> = (0..9).map(|_| f.failed(&e).as_millis()).collect();
        assert_eq!(waits, vec![10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(
            f.unlogged, 8,
            "one line for the first failure, the rest counted"
        );
        f.recovered();
        assert_eq!(f.failed(&e), Duration::from_millis(10));
    }
}
