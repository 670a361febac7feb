//! TLS for listeners (rustls with the `ring` provider): a [`ReloadingAcceptor`] holds the
//! current certificate and key, [`ReloadingAcceptor::accept`] wraps one accepted
//! `TcpStream`, and [`ReloadingAcceptor::watch`] reloads the files on SIGHUP or when they
//! change. A reload that fails (a half-written file, a key that does not match) is logged
//! and the previous certificate stays in use.
//!
//! [`TlsListener`] adapts a `TcpListener` for `axum::serve`: handshakes run in their own
//! tasks (bounded in number and time), so a slow client never holds up the others.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::TlsFiles;

/// How long a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once per listener; more connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 256;
/// How often the files are checked for changes.
pub const POLL: Duration = Duration::from_secs(2);

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls: cannot read {path}: {source}")]
    /// A file could not be read.
    Read {
        /// The file.
        path: String,
        #[source]
        /// Why.
        source: std::io::Error,
    },
    #[error("tls: {path} holds no PEM certificate")]
    /// The certificate file holds no PEM certificate.
    NoCertificate {
        /// The file.
        path: String,
    },
    #[error("tls: {path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    /// The key file holds no PEM private key.
    NoKey {
        /// The file.
        path: String,
    },
    #[error("tls: certificate {cert} and key {key} do not make a usable pair: {source}")]
    /// Certificate and key do not fit together.
    Config {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        #[source]
        /// What rustls said.
        source: rustls::Error,
    },
}

/// The process-wide crypto provider: `ring` (small, no C toolchain beyond `cc`). Installed
/// once, so that every rustls user in the process (the Redis client included) agrees.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads `files` into a server configuration (HTTP/1.1 over ALPN).
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let shown = |p: &Path| p.display().to_string();
    let read = |p: &Path| std::fs::read(p).map_err(|source| TlsError::Read { path: shown(p), source });
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&cert_pem).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: shown(&files.cert) });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey { path: shown(&files.key) })?;
    install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|source| TlsError::Config { cert: shown(&files.cert), key: shown(&files.key), source })?;
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificate a listener serves now, replaced by [`ReloadingAcceptor::reload`].
pub struct ReloadingAcceptor {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    /// Modification times and sizes of the files when last loaded.
    stamp: Mutex<Stamp>,
}

type Stamp = [(Option<SystemTime>, u64); 2];

fn stamp(files: &TlsFiles) -> Stamp {
    [&files.cert, &files.key].map(|p| {
        let meta = std::fs::metadata(p).ok();
        (meta.as_ref().and_then(|m| m.modified().ok()), meta.map_or(0, |m| m.len()))
    })
}

impl ReloadingAcceptor {
    /// Loads `files`; fails when they do not make a usable certificate and key.
    pub fn load(files: &TlsFiles) -> Result<Arc<Self>, TlsError> {
        let before = stamp(files);
        let config = server_config(files)?;
        Ok(Arc::new(Self { files: files.clone(), current: RwLock::new(Arc::new(config)), stamp: Mutex::new(before) }))
    }

    /// Loads the files again; on failure the current certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let before = stamp(&self.files);
        let config = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        *self.stamp.lock().unwrap_or_else(PoisonError::into_inner) = before;
        Ok(())
    }

    fn changed(&self) -> bool {
        *self.stamp.lock().unwrap_or_else(PoisonError::into_inner) != stamp(&self.files)
    }

    /// The TLS handshake on one accepted connection, bounded by [`HANDSHAKE_TIMEOUT`].
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let config = self.current.read().unwrap_or_else(PoisonError::into_inner).clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(done) => done,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "tls handshake timed out")),
        }
    }

    /// Reloads on SIGHUP, and when the files' modification time or size changes, until
    /// `shutdown`. `what` names the listener in the log.
    pub fn watch(self: &Arc<Self>, what: String, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let mut hangup = match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(err) => {
                    tracing::warn!(listener = %what, error = %err, "no SIGHUP handler; tls files are reloaded when they change");
                    None
                }
            };
            let mut poll = tokio::time::interval(POLL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let why = tokio::select! {
                    () = shutdown.cancelled() => return,
                    Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => "SIGHUP",
                    _ = poll.tick() => {
                        if !this.changed() { continue; }
                        "files changed"
                    }
                };
                match this.reload() {
                    Ok(()) => {
                        tracing::info!(listener = %what, trigger = why, cert = %this.files.cert.display(), "tls certificate reloaded")
                    }
                    Err(err) => {
                        tracing::error!(listener = %what, trigger = why, error = %err, "tls reload failed; keeping the previous certificate")
                    }
                }
            }
        })
    }
}

/// A `TcpListener` whose connections come out TLS-wrapped, for `axum::serve`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` and runs each handshake in its own task; failed handshakes are
    /// logged at debug level and dropped. Stops when the listener is dropped.
    pub fn new(tcp: TcpListener, acceptor: Arc<ReloadingAcceptor>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let accepted = tokio::select! {
                    () = tx.closed() => return,
                    accepted = tcp.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // Out of descriptors and the like: pause instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (tx, acceptor) = (tx.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match acceptor.accept(stream).await {
                        Ok(tls) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Err(err) => tracing::debug!(peer = %peer, error = %err, "tls handshake failed"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(pair) => pair,
            // The accept task ended, which it only does once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
