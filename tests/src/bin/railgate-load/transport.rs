//! How a load client reaches its target: a new connection per client, plain or TLS, HTTP/1.1 or
//! HTTP/2, and an SSE request on it.

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// How a client reaches the target: plain or TLS, HTTP/1.1 or HTTP/2.
pub struct Transport {
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    h2: bool,
}

impl Transport {
    /// Plain unless `tls_ca` (a PEM file the target's certificate chains to) is given; HTTP/2
    /// when `h2`.
    pub fn new(tls_ca: Option<&str>, h2: bool) -> Transport {
        let tls = tls_ca.map(|path| {
            let ca = std::fs::read_to_string(path).expect("read --tls-ca");
            let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
            let config = railgate_tests::tls::client_config(&ca, alpn);
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            (tokio_rustls::TlsConnector::from(config), name)
        });
        Transport { tls, h2 }
    }

    /// One connection to `target`, handshaken; returns a sender for requests.
    pub async fn connect(&self, target: &str) -> Result<Sender, String> {
        let tcp = TcpStream::connect(target)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| e.to_string())?;
                self.handshake(tls).await
            }
            None => self.handshake(tcp).await,
        }
    }

    async fn handshake<S>(&self, io: S) -> Result<Sender, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        if self.h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(Sender::H1(sender))
        }
    }
}

pub enum Sender {
    /// HTTP/1.1.
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    /// HTTP/2.
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// Opens one SSE stream at `path` on a new connection; its body once the answer is 200.
pub async fn open_sse(
    transport: &Transport,
    target: &str,
    path: &str,
    headers: &[(String, String)],
) -> Result<hyper::body::Incoming, String> {
    let sender = transport.connect(target).await?;
    let mut req = hyper::Request::get(path).header("accept", "text/event-stream");
    req = match sender {
        // HTTP/2 carries the authority in the URI; HTTP/1.1 in Host.
        Sender::H2(_) => req.uri(format!(
            "{}://{target}{path}",
            if transport.tls.is_some() {
                "https"
            } else {
                "http"
            }
        )),
        Sender::H1(_) => req.header("host", target),
    };
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = match sender {
        Sender::H1(mut s) => s.send_request(req).await,
        Sender::H2(mut s) => s.send_request(req).await,
    }
    .map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("status {}", resp.status()));
    }
    Ok(resp.into_body())
}
