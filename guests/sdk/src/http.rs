//! Outbound HTTP through `wasi:http/outgoing-handler` (cargo feature `http`).
//!
//! The host sends a request only to a host the compose file grants
//! (`allow: [{http: ["https://api.example.com"]}]`); any other request fails with the
//! host's reason, e.g. `http: host api.evil.com not allowed by allow.http`. Redirects are
//! followed here, in the guest (at most [`MAX_REDIRECTS`]), so the host checks every hop as
//! a request of its own, and each counts against `limits.http_requests`.
//!
//! ```ignore
//! let token = cannon_guest::config::get("WEATHER_TOKEN").ok_or("no WEATHER_TOKEN secret")?;
//! let reply = cannon_guest::http::Request::get("https://api.example.com/v1/now?city=Paris")
//!     .header("authorization", &format!("Bearer {token}"))
//!     .send()?;
//! let text = reply.text()?;
//! ```

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields as Headers, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasi::io::streams::StreamError;

/// Redirects [`Request::send`] follows before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// A request to send.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A response, its body read to the end.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (ASCII case ignored).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8.
    pub fn text(&self) -> Result<&str, String> {
        std::str::from_utf8(&self.body).map_err(|e| format!("http: response body is not UTF-8: {e}"))
    }

    /// `Ok(self)` for a 2xx status, else an error naming the status.
    pub fn ok(self) -> Result<Self, String> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(format!("http: status {}", self.status))
        }
    }
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, String> {
    Request::get(url).send()
}

/// `POST url` with `body` of type `content_type`.
pub fn post(url: &str, content_type: &str, body: &[u8]) -> Result<Response, String> {
    Request::new("POST", url).header("content-type", content_type).body(body.to_vec()).send()
}

impl Request {
    pub fn new(method: &str, url: &str) -> Self {
        Self { method: method.to_owned(), url: url.to_owned(), headers: Vec::new(), body: Vec::new() }
    }

    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// Sends it, following up to [`MAX_REDIRECTS`] redirects (a `303`, and a `301`/`302`
    /// after a `POST`, continue as a `GET` without body, as browsers do).
    pub fn send(&self) -> Result<Response, String> {
        let mut request = self.clone();
        for _ in 0..=MAX_REDIRECTS {
            let response = send_once(&request)?;
            let Some(location) = response.header("location").filter(|_| is_redirect(response.status)) else {
                return Ok(response);
            };
            let next = resolve(&request.url, location)?;
            let keep = matches!(response.status, 307 | 308) || matches!(request.method.as_str(), "GET" | "HEAD");
            if !keep {
                request.method = "GET".to_owned();
                request.body.clear();
            }
            request.url = next;
        }
        Err(format!("http: more than {MAX_REDIRECTS} redirects"))
    }
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// `scheme`, `authority` and `path?query` of an absolute `http(s)` URL.
fn split_url(url: &str) -> Result<(Scheme, &str, &str), String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("http: `{url}` is not an absolute URL"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(format!("http: scheme `{scheme}` is not http or https")),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let path = path.split('#').next().unwrap_or("");
    Ok((scheme, authority, if path.is_empty() { "/" } else { path }))
}

/// `location` relative to `base` (absolute URLs and absolute paths; that covers redirects).
fn resolve(base: &str, location: &str) -> Result<String, String> {
    if location.contains("://") {
        return Ok(location.to_owned());
    }
    let (scheme, authority, _) = split_url(base)?;
    let scheme = if matches!(scheme, Scheme::Https) { "https" } else { "http" };
    if let Some(rest) = location.strip_prefix("//") {
        return Ok(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Ok(format!("{scheme}://{authority}{location}"));
    }
    Err(format!("http: cannot follow a redirect to `{location}`"))
}

/// The host's text for an error: its own reason (`InternalError(Some(..))`) when it gave one.
fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::InternalError(Some(text)) => text.clone(),
        other => format!("http: {other:?}"),
    }
}

fn method(name: &str) -> Method {
    match name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    }
}

fn send_once(request: &Request) -> Result<Response, String> {
    let (scheme, authority, path) = split_url(&request.url)?;
    let list: Vec<(String, Vec<u8>)> =
        request.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec())).collect();
    let headers = Headers::from_list(&list).map_err(|e| format!("http: bad header: {e:?}"))?;
    let outgoing = OutgoingRequest::new(headers);
    let bad = |what: &str| format!("http: bad {what} in `{}`", request.url);
    outgoing.set_method(&method(&request.method)).map_err(|()| bad("method"))?;
    outgoing.set_scheme(Some(&scheme)).map_err(|()| bad("scheme"))?;
    outgoing.set_authority(Some(authority)).map_err(|()| bad("host"))?;
    outgoing.set_path_with_query(Some(path)).map_err(|()| bad("path"))?;
    let body = outgoing.body().map_err(|()| "http: request body taken twice".to_owned())?;
    let future = outgoing_handler::handle(outgoing, None).map_err(|e| describe(&e))?;
    write_body(body, &request.body)?;
    future.subscribe().block();
    let incoming = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(describe(&code)),
        Some(Err(())) | None => return Err("http: response already taken".to_owned()),
    };
    let status = incoming.status();
    let headers = incoming
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let body = incoming.consume().map_err(|()| "http: response body taken twice".to_owned())?;
    Ok(Response { status, headers, body: read_body(body)? })
}

fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), String> {
    {
        let stream = body.write().map_err(|()| "http: request body stream taken twice".to_owned())?;
        for chunk in bytes.chunks(4096) {
            stream.blocking_write_and_flush(chunk).map_err(|e| format!("http: writing the request body: {e:?}"))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| describe(&e))
}

fn read_body(body: IncomingBody) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let stream = body.stream().map_err(|()| "http: response body stream taken twice".to_owned())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(match wasi::http::types::http_error_code(&e) {
                        Some(code) => describe(&code),
                        // The host's own refusals arrive as `internal error: http: ...`.
                        None => {
                            let text = e.to_debug_string();
                            match text.strip_prefix("internal error: ").filter(|t| t.starts_with("http: ")) {
                                Some(own) => own.to_owned(),
                                None => format!("http: reading the response: {text}"),
                            }
                        }
                    });
                }
            }
        }
    }
    drop(IncomingBody::finish(body));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_targets_resolve() {
        assert_eq!(resolve("http://a:1/x?y", "/z").unwrap(), "http://a:1/z");
        assert_eq!(resolve("https://a/x", "//b/c").unwrap(), "https://b/c");
        assert_eq!(resolve("http://a/x", "http://evil/").unwrap(), "http://evil/");
        assert!(resolve("http://a/x", "rel").is_err());
        let (_, authority, path) = split_url("http://h:8/p?q=1#frag").unwrap();
        assert_eq!((authority, path), ("h:8", "/p?q=1"));
        assert_eq!(split_url("https://h").unwrap().2, "/");
    }
}
