//! Outbound HTTP for components granted `allow: [{http: [PATTERN...]}]`:
//! `wasi:http/outgoing-handler` from `wasmtime-wasi-http`, with every request going
//! through our [`WasiHttpHooks::send_request`] (the crate's default sender is not built).
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
use hyper::header::HeaderName;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, Error, ForbiddenHeaderFilter, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView,
    WasiHttpHooks, WasiHttpView,
};

use crate::engine::output::CallContext;
use crate::engine::state::HostState;
use crate::vocab::Limits;
use crate::vocab::http::{Destination, HttpGrant, HttpScheme, PortPattern};

/// The grant and limits of one component, shared by its calls.
#[derive(Debug)]
pub struct HttpPolicy {
    grant: HttpGrant,
    max_requests: u32,
    max_body: usize,
    connect: Duration,
    first_byte: Duration,
}

impl HttpPolicy {
    pub fn new(grant: HttpGrant, limits: &Limits) -> Self {
        Self {
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
    hooks: Hooks,
}

impl CallHttp {
    pub fn new(policy: Option<Arc<HttpPolicy>>, context: Arc<CallContext>) -> Self {
        Self { ctx: WasiHttpCtx::new(), hooks: Hooks { policy, sent: 0, context } }
    }
}

/// Where `wasmtime-wasi-http` hands us each request.
struct Hooks {
    /// `None`: not granted; every request is refused (the import check at load refuses such
    /// a component before it runs, so this is a second line).
    policy: Option<Arc<HttpPolicy>>,
    /// Requests sent (or refused for the grant) so far in this call.
    sent: u32,
    /// The call's message and component, named in the record of a refused request.
    context: Arc<CallContext>,
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

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        // A call that uses `wasi:http` waits on the network: its seat goes to another
        // (`engine/runners.rs`).
        self.seat.stand();
        WasiHttpCtxView { hooks: &mut self.http.hooks, table: &mut self.table, ctx: &mut self.http.ctx }
    }
}

/// What `send_request` returns: the response and the future that drives its connection.
type Sent = Box<
    dyn Future<Output = Result<(hyper::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), Error>>
        + Send,
>;

impl WasiHttpHooks for Hooks {
    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        Arc::new(|name| DEFAULT_FORBIDDEN_HEADERS.contains(name) || HOP_BY_HOP.contains(&name.as_str()))
    }

    fn send_request(
        &mut self,
        mut request: hyper::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        let checked = self.check(&request);
        let context = self.context.clone();
        Box::new(async move {
            let outcome = match checked {
                Ok(target) => {
                    strip_hop_by_hop(request.headers_mut());
                    send(&target, request, options.unwrap_or_default()).await
                }
                Err(text) => Err(text),
            };
            outcome.map_err(|text| {
                let CallContext { service, id, component } = &*context;
                tracing::warn!(service = %service, id = %id, component = %component, "{text}");
                Error::InternalError(Some(text))
            })
        })
    }
}

/// Where a checked request goes.
struct Target {
    policy: Arc<HttpPolicy>,
    scheme: HttpScheme,
    host: String,
    port: u16,
}

impl Hooks {
    /// The grant and the request count, before anything leaves the host.
    fn check(&mut self, request: &hyper::Request<WasiBody>) -> Result<Target, String> {
        let policy = self.policy.clone().ok_or("http: not granted (no `allow: [{http: [...]}]`)")?;
        if self.sent >= policy.max_requests {
            return Err(format!(
                "http: request limit reached: at most {} per call (limits.http_requests)",
                policy.max_requests
            ));
        }
        self.sent += 1;
        let uri = request.uri();
        let scheme = uri.scheme_str().and_then(HttpScheme::parse).ok_or("http: only http and https are supported")?;
        let host = uri.host().ok_or("http: the request has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        if policy.grant.allowing(&Destination { scheme, host: &host, port }).is_some() {
            return Ok(Target { policy, scheme, host, port });
        }
        Err(if host_named(&policy.grant, &host) {
            format!("http: {}://{}:{port} not allowed by allow.http", scheme.as_str(), shown(&host))
        } else {
            format!("http: host {} not allowed by allow.http", shown(&host))
        })
    }
}

/// Whether some pattern names `host` (under any scheme or port).
fn host_named(grant: &HttpGrant, host: &str) -> bool {
    grant.patterns.iter().any(|p| {
        let mut p = p.clone();
        p.port = PortPattern::Any;
        [HttpScheme::Http, HttpScheme::Https].into_iter().any(|scheme| {
            p.scheme = scheme;
            p.allows(&Destination { scheme, host, port: 1 })
        })
    })
}

/// A host for messages: brackets around IPv6, escaped like any text from a guest.
fn shown(host: &str) -> String {
    let host = crate::text::for_terminal(host);
    if host.contains(':') { format!("[{host}]") } else { host.into_owned() }
}

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    for name in named {
        headers.remove(name);
    }
}

/// The smaller of our limit and the guest's own request option.
fn bound(ours: Duration, theirs: Option<Duration>) -> Duration {
    theirs.map_or(ours, |t| t.min(ours))
}

/// Sends a checked request; every failure is a specific `http: ...` text.
async fn send(
    target: &Target,
    request: hyper::Request<WasiBody>,
    options: RequestOptions,
) -> Result<(hyper::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), String> {
    let policy = &target.policy;
    let at = format!("{}:{}", shown(&target.host), target.port);
    let connect_limit = bound(policy.connect, options.connect_timeout);
    let too_slow =
        || format!("http: could not connect to {at} within limits.http_connect_ms = {}", policy.connect.as_millis());
    let tcp = tokio::time::timeout(connect_limit, async {
        let addrs = resolve(target).await?;
        connect(&addrs, &at).await
    })
    .await
    .map_err(|_| too_slow())??;
    let first_byte = bound(policy.first_byte, options.first_byte_timeout);
    match target.scheme {
        HttpScheme::Http => exchange(TokioIo::new(tcp), request, target, &at, first_byte).await,
        HttpScheme::Https => {
            let tls = tokio::time::timeout(connect_limit, super::http_tls::connect(tcp, &target.host))
                .await
                .map_err(|_| too_slow())??;
            exchange(TokioIo::new(tls), request, target, &at, first_byte).await
        }
    }
}

/// One HTTP/1.1 request and response head on `io`; the body comes later, bounded.
async fn exchange<T>(
    io: T,
    mut request: hyper::Request<WasiBody>,
    target: &Target,
    at: &str,
    first_byte: Duration,
) -> Result<(hyper::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let policy = &target.policy;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("http: connection to {at} failed: {e}"))?;
    // The request line carries only the path (origin form), as HTTP/1.1 expects.
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    *request.uri_mut() = path.parse().map_err(|_| "http: bad path".to_owned())?;
    let mut conn = Box::pin(conn);
    let mut conn_done = false;
    let sending = tokio::time::timeout(first_byte, sender.send_request(request));
    tokio::pin!(sending);
    let response = loop {
        tokio::select! {
            sent = &mut sending => break sent,
            ended = &mut conn, if !conn_done => {
                conn_done = true;
                ended.map_err(|e| format!("http: connection to {at} failed: {e}"))?;
            }
        }
    };
    let no_response =
        || format!("http: no response from {at} within limits.http_first_byte_ms = {}", policy.first_byte.as_millis());
    let response = response.map_err(|_| no_response())?.map_err(|e| format!("http: request to {at} failed: {e}"))?;
    let max = policy.max_body;
    let over = format!("http: response from {at} over limits.http_response_kb = {}", max / 1024);
    let declared =
        response.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(over);
    }
    let response = response.map(|body| {
        Limited::new(body, max)
            .map_err(move |e| match e.downcast::<hyper::Error>() {
                Ok(e) => Error::from(*e),
                Err(e) if e.is::<LengthLimitError>() => Error::InternalError(Some(over.clone())),
                Err(e) => Error::InternalError(Some(format!("http: reading the response: {e}"))),
            })
            .boxed_unsync()
    });
    let io: Box<dyn Future<Output = Result<(), Error>> + Send> =
        Box::new(async move { if conn_done { Ok(()) } else { conn.await.map_err(Error::from) } });
    Ok((response, io))
}

/// The addresses of the target, each checked against the grant.
async fn resolve(target: &Target) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, target.port)],
        Err(_) => tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("http: cannot resolve {}: {e}", shown(&target.host)))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("http: {} has no address", shown(&target.host)));
    }
    for addr in &addrs {
        let ip = addr.ip();
        let Some(kind) = non_public(ip) else { continue };
        let ip_text = ip.to_string();
        let to = Destination { scheme: target.scheme, host: &ip_text, port: target.port };
        if target.policy.grant.allowing(&to).is_none() {
            return Err(format!(
                "http: host {} resolves to {ip}, a {kind} address not allowed by allow.http",
                shown(&target.host)
            ));
        }
    }
    Ok(addrs)
}

async fn connect(addrs: &[SocketAddr], at: &str) -> Result<TcpStream, String> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some(e),
        }
    }
    let why = last.map_or_else(|| "no address".to_owned(), |e| e.to_string());
    Err(format!("http: cannot connect to {at}: {why}"))
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
        use hyper::header::HeaderValue;
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
