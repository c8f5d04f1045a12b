//! Outbound connections: TCP, and TLS over it on rustls (with the `ring` provider) for
//! `https://` and `wss://` upstreams, the JWKS URL, OIDC discovery and the registry URL.
//!
//! Certificates are verified against the system's roots — found as OpenSSL-based tools find
//! them, `SSL_CERT_FILE` and `SSL_CERT_DIR` included — plus the PEM file of `tls_ca_file` (top
//! level, or per route). There is no switch that turns verification off. A route may also set
//! `tls_server_name`: the name its upstream's certificate is checked against (and sent as SNI)
//! when it differs from the URL's host.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

/// An upstream connection: plain TCP, or TLS over it. The TLS state is boxed: it is about 1 KiB,
/// and a plain connection would otherwise carry room for it in every stream that holds one.
pub type UpstreamIo = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

/// How to reach one upstream over TLS.
#[derive(Clone, Debug)]
pub struct UpstreamTls {
    /// The verification and ALPN settings.
    pub config: Arc<ClientConfig>,
    /// The name the certificate must carry, when it is not the URL's host.
    pub server_name: Option<String>,
}

/// The crypto provider of every TLS configuration, inbound and outbound (`ring`).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's roots (honouring `SSL_CERT_FILE` / `SSL_CERT_DIR`) plus the certificates of
/// `extra_ca` (PEM). Errors name the file.
pub fn roots(extra_ca: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no PEM certificate in it", path.display()));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(roots)
}

/// A client configuration trusting [`roots`], TLS 1.2 and 1.3, speaking `alpn` (e.g.
/// `http/1.1`).
pub fn client_config(extra_ca: Option<&Path>, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, String> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(extra_ca)?)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// What a connection will send, which decides whether Nagle's algorithm is turned off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writes {
    /// One request head and nothing after it (an SSE stream's request). Nagle's algorithm only
    /// holds a small write back while earlier data waits for its acknowledgement, and nothing
    /// is sent before this one: on plain TCP `TCP_NODELAY` is left unset (one system call less
    /// per stream). Over TLS it is set all the same: the handshake sends several records.
    Once,
    /// Requests after requests, bodies, messages: `TCP_NODELAY`.
    Many,
}

/// Connects to `uri`'s authority within `wait`: TLS when its scheme is `https` or `wss`.
pub async fn connect(
    uri: &http::Uri,
    tls: &UpstreamTls,
    wait: Duration,
    writes: Writes,
) -> Result<UpstreamIo, String> {
    let authority = uri.authority().ok_or("the upstream URI has no host")?;
    let secure = matches!(uri.scheme_str(), Some("https" | "wss"));
    let port = authority
        .port_u16()
        .unwrap_or(if secure { 443 } else { 80 });
    let tcp = connect_tcp(authority.host(), port, wait).await?;
    if secure || writes == Writes::Many {
        let _ = tcp.set_nodelay(true);
    }
    if !secure {
        return Ok(Either::Left(tcp));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = tls.server_name.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|e| format!("{name:?} is not a TLS server name: {e}"))?;
    let handshake = TlsConnector::from(tls.config.clone()).connect(server_name, tcp);
    match tokio::time::timeout(wait, handshake).await {
        Ok(Ok(stream)) => Ok(Either::Right(Box::new(stream))),
        Ok(Err(e)) => Err(format!("TLS: {e}")),
        Err(_) => Err("TLS handshake timed out".into()),
    }
}

/// Opens a TCP connection to `host`:`port` within `wait`. IP literals (also in brackets) are
/// used as they are; only names go through the resolver.
pub async fn connect_tcp(host: &str, port: u16, wait: Duration) -> Result<TcpStream, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let connecting = async {
        match host.parse::<IpAddr>() {
            Ok(ip) => TcpStream::connect(SocketAddr::new(ip, port)).await,
            Err(_) => TcpStream::connect((host, port)).await,
        }
    };
    match tokio::time::timeout(wait, connecting).await {
        Ok(Ok(tcp)) => Ok(tcp),
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err("connect timed out".into()),
    }
}

/// Makes closing `io` abort the connection (`SO_LINGER` zero: a reset, no `TIME_WAIT` kept on
/// this side), for a connection only ever closed to abandon what it carries.
pub fn abort_on_close(io: &UpstreamIo) {
    let tcp = match io {
        Either::Left(tcp) => tcp,
        Either::Right(tls) => tls.get_ref().0,
    };
    let _ = tcp.set_zero_linger();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `TCP_NODELAY` on a plain connection as `writes` asks, read back from the socket.
    async fn nodelay(writes: Writes) -> bool {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let uri: http::Uri = format!("http://{}/", listener.local_addr().expect("addr"))
            .parse()
            .expect("uri");
        let tls = UpstreamTls {
            config: client_config(None, &[b"http/1.1"]).expect("tls config"),
            server_name: None,
        };
        let io = connect(&uri, &tls, Duration::from_secs(5), writes)
            .await
            .expect("connect");
        match io {
            Either::Left(tcp) => tcp.nodelay().expect("nodelay"),
            Either::Right(_) => panic!("plain http became TLS"),
        }
    }

    #[tokio::test]
    async fn a_single_request_keeps_nagle_and_many_writes_turn_it_off() {
        assert!(!nodelay(Writes::Once).await);
        assert!(nodelay(Writes::Many).await);
    }
}
