//! `bare-proxy LISTEN UPSTREAM`: the least an HTTP/1.1 reverse proxy on hyper does, as a
//! yardstick for the HTTP rail's benchmark (`compare.sh g`): hyper's server on one
//! current-thread worker, each client connection paired with one upstream connection of its own
//! (hyper's connection handle), requests and answers streamed through unchanged. No checks, no
//! header work, no pool. Prints `READY listen=ADDR` once it accepts.

use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: bare-proxy LISTEN UPSTREAM (host:port each)");
        return std::process::ExitCode::from(64);
    };
    let Ok(upstream) = upstream.parse::<SocketAddr>() else {
        eprintln!("bare-proxy: {upstream:?} is not host:port");
        return std::process::ExitCode::from(64);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = match TcpListener::bind(listen.as_str()).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bare-proxy: cannot listen on {listen}: {e}");
                return std::process::ExitCode::from(1);
            }
        };
        let addr = listener.local_addr().expect("address");
        println!("READY listen={addr}");
        loop {
            let Ok((client_io, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(pair(client_io, upstream));
        }
    })
}

/// Serves one client connection over one upstream connection.
async fn pair(client_io: TcpStream, upstream: SocketAddr) {
    let _ = client_io.set_nodelay(true);
    let Ok(up) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = up.set_nodelay(true);
    let Ok((sender, conn)) = client::handshake::<_, Incoming>(TokioIo::new(up)).await else {
        return;
    };
    tokio::spawn(conn);
    let sender = Arc::new(Mutex::new(sender));
    let svc = service_fn(move |req: Request<Incoming>| {
        let sender = sender.clone();
        async move {
            let mut sender = sender.lock().await;
            sender.ready().await?;
            sender.send_request(req).await
        }
    });
    let _ = server::Builder::new()
        .serve_connection(TokioIo::new(client_io), svc)
        .await;
}
