//! The http collector's accept loop: how connections are accepted, capped and timed out.
//!
//! `axum::serve` never times out a connection, so the collector serves its router itself:
//! 1. `TcpListener::accept` (an accept error such as `EMFILE` pauses the loop briefly).
//! 2. A slot of `max_connections` (a semaphore) is taken without waiting. When none is
//!    free, a slot of the small reserve is taken instead and the connection is served by
//!    the *overflow* router (`GET /healthz` answers as usual, everything else `503`), with
//!    keep-alive off and a short deadline. When the reserve is full too, the connection is
//!    closed at once.
//! 3. The connection is served by hyper's HTTP/1 connection builder with a timer:
//!    `header_read_timeout` cuts off clients that send their headers slowly or not at all
//!    (hyper starts it whenever the connection waits for a request, so it bounds an idle
//!    connection too); the idle timeout (no request in progress, no bytes read) closes
//!    keep-alive connections gracefully; the body timeout is applied by the handler, which
//!    reads the body under a deadline.
//!
//! With `tls:`, the TLS handshake goes between steps 2 and 3, under the header timeout
//! (a client that never finishes it holds a slot no longer than one that never sends its
//! headers); the certificate is the one [`ReloadingAcceptor`] holds at that moment.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::ReloadingAcceptor;
use crate::config::HttpLimits;

/// Header deadline of a connection served by the overflow router.
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Whole lifetime of a connection served by the overflow router.
const OVERFLOW_DEADLINE: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (out of file descriptors, say) before trying again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The two routers a connection may be served by.
pub(super) struct Routers {
    /// The collector's own routes.
    pub app: Router,
    /// For connections over the cap: `/healthz`, and `503` for the rest.
    pub overflow: Router,
}

/// Serves connections from `listener` until `shutdown`, then waits for open connections to
/// finish (each is told to close once its current request is answered).
pub(super) async fn serve(
    listener: TcpListener,
    routers: Routers,
    limits: HttpLimits,
    tls: Option<Arc<ReloadingAcceptor>>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let reserve = Arc::new(Semaphore::new(limits.reserve()));
    let connections = TaskTracker::new();
    let mut refused = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "http collector cannot accept a connection; pausing");
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_PAUSE) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            },
            () = shutdown.cancelled() => break,
        };
        let (permit, router, overflow) = match slots.clone().try_acquire_owned() {
            Ok(permit) => (permit, routers.app.clone(), false),
            Err(_) => match reserve.clone().try_acquire_owned() {
                Ok(permit) => (permit, routers.overflow.clone(), true),
                Err(_) => {
                    refused += 1;
                    if refused.is_power_of_two() {
                        tracing::warn!(%peer, refused, max_connections = limits.max_connections, "http collector: connection cap and reserve full; closing new connections");
                    }
                    drop(stream);
                    continue;
                }
            },
        };
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let served = async {
                match tls {
                    None => connection(stream, router, limits, overflow, shutdown).await,
                    Some(acceptor) => {
                        let handshake = Duration::from_millis(limits.header_timeout_ms);
                        match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => connection(stream, router, limits, overflow, shutdown).await,
                            Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake not done within header_timeout_ms"),
                        }
                    }
                }
            };
            if overflow {
                let _ = tokio::time::timeout(OVERFLOW_DEADLINE, served).await;
            } else {
                served.await;
            }
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
}

/// What a connection is doing, for the idle timeout.
#[derive(Default)]
struct Activity {
    /// Milliseconds since `start` of the last read that returned bytes.
    last_read_ms: AtomicU64,
    /// Requests whose response is not ready yet.
    requests: AtomicUsize,
}

/// Counts a request in progress while it lives.
struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one connection until it closes, or `shutdown` (after its request in progress).
async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    router: Router,
    limits: HttpLimits,
    overflow: bool,
    shutdown: CancellationToken,
) {
    let start = Instant::now();
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Watched { inner: stream, activity: activity.clone(), start });
    let service = {
        let activity = activity.clone();
        let inner = TowerToHyperService::new(router);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            activity.requests.fetch_add(1, Ordering::Relaxed);
            let guard = InProgress(activity.clone());
            let response = hyper::service::Service::call(&inner, request);
            async move {
                let response = response.await;
                drop(guard);
                response
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new());
    let header_timeout = Duration::from_millis(limits.header_timeout_ms);
    if overflow {
        builder.keep_alive(false).header_read_timeout(header_timeout.min(OVERFLOW_HEADER_TIMEOUT));
    } else {
        builder.header_read_timeout(header_timeout);
    }
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let mut closing = false;
    loop {
        let last = Duration::from_millis(activity.last_read_ms.load(Ordering::Relaxed));
        let idle_at = tokio::time::Instant::from_std(start + last + idle);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "http connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(idle_at), if !closing => {
                let quiet = start.elapsed().saturating_sub(Duration::from_millis(activity.last_read_ms.load(Ordering::Relaxed)));
                if activity.requests.load(Ordering::Relaxed) == 0 && quiet >= idle {
                    tracing::debug!(idle_ms = limits.idle_timeout_ms, "closing an idle http connection");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// A stream (TCP or TLS) that notes when it last read bytes.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    start: Instant,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.activity.last_read_ms.store(now, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
