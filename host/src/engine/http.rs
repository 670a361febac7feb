//! Outbound HTTP for components granted `allow: [{http: [PATTERN...]}]`:
//! `wasi:http/outgoing-handler` from `wasmtime-wasi-http`, with every request going
//! through [`WasiHttpView::send_request`] here.
//!
//! Each request is checked before anything leaves the host: the grant must allow its
//! scheme, host and port; the call may not have sent `limits.http_requests` already. The
//! host then resolves the name itself and checks every address: an address that is not
//! public (loopback, private, link-local, ...) must itself be granted, so a granted name
//! that resolves (or is re-pointed) to `127.0.0.1` or `169.254.169.254` reaches nothing
//! (DNS rebinding). It connects to the checked address only, never resolving again.
//! Hop-by-hop headers are dropped; methods and other headers pass through. The connect and
//! first-byte waits are bounded by `limits.http_connect_ms` and `limits.http_first_byte_ms`,
//! the response body by `limits.http_response_kb`, and everything by the call's deadline:
//! the connection tasks belong to the call's store and are aborted when it is dropped.
//!
//! Redirects are not followed by the host (wasi:http never does): a guest that follows one
//! sends a new request, checked like the first. Each refusal reaches the guest as
//! `internal-error("http: ...")` with the reason, and is logged at `warn`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use wasmtime_wasi_http::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::body::HyperOutgoingBody;
use wasmtime_wasi_http::types::{HostFutureIncomingResponse, IncomingResponse, OutgoingRequestConfig};
use wasmtime_wasi_http::{HttpResult, WasiHttpCtx, WasiHttpView};

use crate::config::{Destination, HttpGrant, HttpScheme, Limits};
use crate::engine::state::HostState;

/// The grant and limits of one component, shared by its calls.
#[derive(Debug)]
pub struct HttpPolicy {
    /// Component name, for the host's log.
    component: String,
    grant: HttpGrant,
    max_requests: u32,
    max_body: usize,
    connect: Duration,
    first_byte: Duration,
}

impl HttpPolicy {
    pub fn new(component: &str, grant: HttpGrant, limits: &Limits) -> Self {
        Self {
            component: component.to_owned(),
            grant,
            max_requests: limits.http_requests,
            max_body: usize::try_from(limits.http_response_kb.saturating_mul(1024)).unwrap_or(usize::MAX),
            connect: Duration::from_millis(limits.http_connect_ms),
            first_byte: Duration::from_millis(limits.http_first_byte_ms),
        }
    }
}

/// The outbound HTTP state of one call.
pub struct CallHttp {
    ctx: WasiHttpCtx,
    /// `None`: not granted; every request is refused (the import check at load refuses such
    /// a component before it runs, so this is a second line).
    policy: Option<Arc<HttpPolicy>>,
    /// Requests sent (or refused for the grant) so far.
    sent: u32,
}

impl CallHttp {
    pub fn new(policy: Option<Arc<HttpPolicy>>) -> Self {
        Self { ctx: WasiHttpCtx::new(), policy, sent: 0 }
    }
}

/// Headers that describe one connection, not the request (RFC 9110 7.6.1): never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A refusal as the guest sees it.
fn refused(text: String) -> ErrorCode {
    ErrorCode::InternalError(Some(text))
}

impl WasiHttpView for HostState {
    fn ctx(&mut self) -> &mut WasiHttpCtx {
        &mut self.http.ctx
    }

    fn table(&mut self) -> &mut wasmtime::component::ResourceTable {
        &mut self.table
    }

    fn send_request(
        &mut self,
        mut request: hyper::Request<HyperOutgoingBody>,
        config: OutgoingRequestConfig,
    ) -> HttpResult<HostFutureIncomingResponse> {
        let checked = self.http_check(&request);
        let target = match checked {
            Ok(target) => target,
            Err(text) => {
                warn_refused(self.http.policy.as_deref(), &text);
                return Err(refused(text).into());
            }
        };
        strip_hop_by_hop(request.headers_mut());
        let handle = wasmtime_wasi::runtime::spawn(async move { Ok(send(target, request, config).await) });
        Ok(HostFutureIncomingResponse::pending(handle))
    }

    fn is_forbidden_header(&mut self, name: &HeaderName) -> bool {
        HOP_BY_HOP.contains(&name.as_str())
    }
}

/// Where a checked request goes.
struct Target {
    policy: Arc<HttpPolicy>,
    scheme: HttpScheme,
    host: String,
    port: u16,
}

impl HostState {
    /// The grant and the request count, before anything leaves the host.
    fn http_check(&mut self, request: &hyper::Request<HyperOutgoingBody>) -> Result<Target, String> {
        let policy = self.http.policy.clone().ok_or("http: not granted (no `allow: [{http: [...]}]`)")?;
        if self.http.sent >= policy.max_requests {
            return Err(format!(
                "http: request limit reached: at most {} per call (limits.http_requests)",
                policy.max_requests
            ));
        }
        self.http.sent += 1;
        let uri = request.uri();
        let scheme = uri.scheme_str().and_then(HttpScheme::parse).ok_or("http: only http and https are supported")?;
        let host = uri.host().ok_or("http: the request has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        let to = Destination { scheme, host: &host, port };
        if policy.grant.allowing(&to).is_none() {
            let any_port = policy.grant.patterns.iter().any(|p| {
                [HttpScheme::Http, HttpScheme::Https]
                    .iter()
                    .any(|&s| p.allows(&Destination { scheme: s, host: &host, port: 0 }) || p.allows(&Destination { scheme: s, host: &host, port: s.default_port() }))
            });
            return Err(if any_port {
                format!("http: {}://{}:{port} not allowed by allow.http", scheme.as_str(), shown(&host))
            } else {
                format!("http: host {} not allowed by allow.http", shown(&host))
            });
        }
        Ok(Target { policy, scheme, host, port })
    }
}

/// A host for messages: brackets around IPv6, escaped like any text from a guest.
fn shown(host: &str) -> String {
    let host = crate::text::for_terminal(host);
    if host.contains(':') { format!("[{host}]") } else { host.into_owned() }
}

fn warn_refused(policy: Option<&HttpPolicy>, text: &str) {
    let component = policy.map_or("-", |p| p.component.as_str());
    tracing::warn!(component = %component, "{text}");
}

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().copied() {
        headers.remove(name);
    }
    for name in named {
        headers.remove(name);
    }
}

/// Sends a checked request; every failure is a specific `http: ...` text.
async fn send(
    target: Target,
    request: hyper::Request<HyperOutgoingBody>,
    config: OutgoingRequestConfig,
) -> Result<IncomingResponse, ErrorCode> {
    let result = send_checked(&target, request, config).await;
    if let Err(ErrorCode::InternalError(Some(text))) = &result {
        warn_refused(Some(&target.policy), text);
    }
    result
}

async fn send_checked(
    target: &Target,
    mut request: hyper::Request<HyperOutgoingBody>,
    config: OutgoingRequestConfig,
) -> Result<IncomingResponse, ErrorCode> {
    let policy = &target.policy;
    let at = format!("{}:{}", shown(&target.host), target.port);
    let connect_limit = policy.connect.min(config.connect_timeout);
    let addrs = tokio::time::timeout(connect_limit, resolve(target))
        .await
        .map_err(|_| refused(format!("http: could not resolve {} within limits.http_connect_ms", shown(&target.host))))??;
    let tcp = tokio::time::timeout(connect_limit, connect(&addrs, &at))
        .await
        .map_err(|_| refused(format!("http: could not connect to {at} within limits.http_connect_ms = {}", policy.connect.as_millis())))??;
    // The request line carries only the path (origin form), as HTTP/1.1 expects.
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    *request.uri_mut() = path.parse().map_err(|_| refused("http: bad path".to_owned()))?;
    if !request.headers().contains_key(hyper::header::HOST) {
        let host = match target.port == target.scheme.default_port() {
            true => shown(&target.host),
            false => at.clone(),
        };
        let value = HeaderValue::from_str(&host).map_err(|_| refused("http: bad host".to_owned()))?;
        request.headers_mut().insert(hyper::header::HOST, value);
    }
    let (mut sender, worker) = match target.scheme {
        HttpScheme::Http => handshake(TokioIo::new(tcp)).await?,
        HttpScheme::Https => handshake(TokioIo::new(super::http_tls::connect(tcp, &target.host).await?)).await?,
    };
    let first_byte = policy.first_byte.min(config.first_byte_timeout);
    let response = tokio::time::timeout(first_byte, sender.send_request(request))
        .await
        .map_err(|_| {
            refused(format!("http: no response from {at} within limits.http_first_byte_ms = {}", policy.first_byte.as_millis()))
        })?
        .map_err(|e| refused(format!("http: request to {at} failed: {e}")))?;
    let over = format!("http: response from {at} over limits.http_response_kb = {}", policy.max_body / 1024);
    let declared = response.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > policy.max_body as u64) {
        return Err(refused(over));
    }
    let resp = response.map(|body| {
        Limited::new(body, policy.max_body)
            .map_err(move |e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    refused(over.clone())
                } else {
                    refused(format!("http: reading the response: {e}"))
                }
            })
            .boxed()
    });
    Ok(IncomingResponse { resp, worker: Some(worker), between_bytes_timeout: config.between_bytes_timeout })
}

/// HTTP/1.1 on `io`; the connection runs as a task owned by the response.
async fn handshake<T>(
    io: T,
) -> Result<(hyper::client::conn::http1::SendRequest<HyperOutgoingBody>, wasmtime_wasi::runtime::AbortOnDropJoinHandle<()>), ErrorCode>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| refused(format!("http: handshake failed: {e}")))?;
    let worker = wasmtime_wasi::runtime::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("outbound http connection ended: {e}");
        }
    });
    Ok((sender, worker))
}

/// The addresses of the target, each checked against the grant.
async fn resolve(target: &Target) -> Result<Vec<SocketAddr>, ErrorCode> {
    let addrs: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, target.port)],
        Err(_) => tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|e| refused(format!("http: cannot resolve {}: {e}", shown(&target.host))))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(refused(format!("http: {} has no address", shown(&target.host))));
    }
    for addr in &addrs {
        let ip = addr.ip();
        let Some(kind) = non_public(ip) else { continue };
        let ip_text = ip.to_string();
        let to = Destination { scheme: target.scheme, host: &ip_text, port: target.port };
        if target.policy.grant.allowing(&to).is_none() {
            return Err(refused(format!(
                "http: host {} resolves to {ip}, a {kind} address not allowed by allow.http",
                shown(&target.host)
            )));
        }
    }
    Ok(addrs)
}

async fn connect(addrs: &[SocketAddr], at: &str) -> Result<TcpStream, ErrorCode> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some(e),
        }
    }
    let why = last.map_or_else(|| "no address".to_owned(), |e| e.to_string());
    Err(refused(format!("http: cannot connect to {at}: {why}")))
}

/// Why `ip` is not a public address, or `None` when it is.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_unspecified() || a == 0 {
                Some("unspecified")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared (CGNAT)")
            } else if v4.is_multicast() || v4.is_broadcast() || a >= 240 {
                Some("reserved")
            } else if v4.is_documentation() || (a == 198 && (b == 18 || b == 19)) || (a == 192 && b == 0) {
                Some("special-purpose")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("reserved")
            } else if first == 0x2001 && v6.segments()[1] == 0x0db8 {
                Some("special-purpose")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_classified() {
        for (ip, kind) in [
            ("127.0.0.1", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("192.168.0.1", Some("private")),
            ("172.16.0.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("0.0.0.0", Some("unspecified")),
            ("100.64.0.1", Some("shared (CGNAT)")),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("fd00::1", Some("private")),
            ("fe80::1", Some("link-local")),
            ("93.184.216.34", None),
            ("2606:4700::1111", None),
        ] {
            assert_eq!(non_public(ip.parse().unwrap()), kind, "{ip}");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("connection", HeaderValue::from_static("x-private, close"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        headers.insert("authorization", HeaderValue::from_static("Bearer t"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["authorization"]);
    }
}
