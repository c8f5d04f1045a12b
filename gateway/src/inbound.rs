//! Inbound TLS for the client listener (`[tls] cert_file`, `key_file`), on rustls: TLS 1.2 and
//! 1.3, ALPN `h2` and `http/1.1`. The certificate and key are read again when either file
//! changes (checked every second): new handshakes use the new pair at once, open connections and
//! streams are untouched, and a new pair that does not load (or whose key does not match its
//! certificate) is refused with a log line while the previous one stays in use.

use crate::outbound::provider;
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The ALPN protocols the listener offers, preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Reads a certificate chain and its key; errors name the file and say what is wrong (a key
/// that does not match the certificate included).
pub fn load_pair(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("tls.cert_file {}: {e}", cert_file.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "tls.cert_file {}: no PEM certificate in it",
            cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("tls.key_file {}: {e}", key_file.display()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "tls.key_file {}: the key does not match the certificate in {}",
            key_file.display(),
            cert_file.display()
        ),
        other => format!("tls.key_file {}: {other}", key_file.display()),
    })
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The listener's certificate, swapped when its files change.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    cert_file: PathBuf,
    key_file: PathBuf,
    stamps: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl CertStore {
    /// Loads the pair.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<CertStore>, String> {
        let pair = load_pair(cert_file, key_file)?;
        Ok(Arc::new(CertStore {
            current: ArcSwap::from_pointee(pair),
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            stamps: Mutex::new((modified(cert_file), modified(key_file))),
        }))
    }

    /// Reads the pair again when a file changed; `Ok(true)` when a new pair is in use.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = (modified(&self.cert_file), modified(&self.key_file));
        {
            let mut seen = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        let pair = load_pair(&self.cert_file, &self.key_file)?;
        self.current.store(Arc::new(pair));
        Ok(true)
    }

    /// The TLS acceptor serving this store's current pair.
    pub fn acceptor(self: &Arc<CertStore>) -> Result<tokio_rustls::TlsAcceptor, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
