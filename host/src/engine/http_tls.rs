//! TLS for outbound `https` requests: rustls (ring provider, as everywhere in cannon) with
//! the system's root certificates, or those of the PEM file in `SSL_CERT_FILE`, loaded once.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The client configuration, or why there is none (no root certificate could be loaded).
fn client_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map_or_else(|| "none found".to_owned(), ToString::to_string);
                return Err(format!("no root certificates ({why}); set SSL_CERT_FILE"));
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|builder| Arc::new(builder.with_root_certificates(roots).with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// A TLS session to `host` over `tcp`, its certificate checked against the roots.
pub async fn connect(tcp: TcpStream, host: &str) -> Result<TlsStream<TcpStream>, String> {
    let config = client_config().map_err(|why| format!("http: cannot use TLS: {why}"))?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| format!("http: `{}` is not a TLS server name", crate::text::for_terminal(host)))?;
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("http: TLS with {} failed: {e}", crate::text::for_terminal(host)))
}
