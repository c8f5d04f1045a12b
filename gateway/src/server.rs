//! Listeners, the accept loops, background upkeep, and drain. Each client connection goes to
//! [`crate::conn::serve`]; each admin request to [`crate::admin::handle`].

use crate::admin::{self, Admin};
use crate::app::Gateway;
use crate::caps::Cap;
use crate::wire::{Guarded, Refusal};
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
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
    let listener = crate::conn::Listener {
        gw: gw.clone(),
        tls: match &gw.tls {
            Some(store) => Some(store.acceptor().map_err(std::io::Error::other)?),
            None => None,
        },
    };
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
            Ok(slot) => conns.spawn(crate::conn::serve(listener.clone(), stream, peer, slot)),
            Err(cap) => {
                gw.metrics.capacity_refusal(cap);
                conns.spawn(refuse(stream, cap))
            }
        };
    }
    drop(listeners.main);
    tracing::info!(target: "railgate::lifecycle", "draining");
    gw.draining.start();
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
/// Cluster mode: the health check every second, and the other replicas' registry changes
/// applied here (the whole cache dropped whenever the subscription is re-made).
fn spawn_cluster(gw: &Arc<Gateway>) {
    use crate::cluster::events::{Change, Heard};
    let Some(cluster) = gw.cluster.clone() else {
        return;
    };
    crate::cluster::presence::spawn(cluster.clone(), gw.presence.clone());
    every(
        gw,
        |_| Duration::from_secs(1),
        |gw| async move {
            if let Some(c) = &gw.cluster {
                c.check().await;
            }
        },
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move { cluster.follow::<Change>("registry", tx).await });
    let gw = gw.clone();
    tokio::spawn(async move {
        while let Some(heard) = rx.recv().await {
            let registry = gw.live().registry.clone();
            match heard {
                Heard::Subscribed => registry.forget_all(),
                Heard::News(_, Change::Forget { key }) => {
                    registry.forget(&key).await;
                }
                Heard::News(_, Change::Learn { kind, id, record }) => {
                    registry.remember(&kind, &id, record).await
                }
            }
        }
    });
}

fn spawn_background(gw: &Arc<Gateway>) {
    spawn_cluster(gw);
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
    every(
        gw,
        |_| Duration::from_secs(1),
        |gw| async move {
            let Some(store) = gw.tls.clone() else { return };
            match store.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(target: "railgate::lifecycle", "TLS certificate reloaded")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(target: "railgate::lifecycle", error = %e, "TLS certificate not reloaded; the previous one stays in use")
                }
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
