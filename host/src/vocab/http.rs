//! A component's outbound HTTP grant as plain values: the patterns of `allow: [{http:
//! [...]}]` (parsed by `config/http_grant.rs`) and the matching the engine does on every
//! request and resolved address (`engine/http.rs`).

use std::fmt;
use std::net::IpAddr;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpScheme {
    /// `http`.
    Http,
    /// `https`.
    Https,
}

impl HttpScheme {
    /// The scheme named `text` (ASCII case ignored).
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "http" => Some(Self::Http),
            "https" => Some(Self::Https),
            _ => None,
        }
    }

    /// Port used when a URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }

    /// The scheme as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// The host part of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// This name exactly (lowercase, no trailing dot).
    Name(String),
    /// `*.example.com`: any name ending in `.example.com` (not `example.com` itself).
    Under(String),
    /// This address exactly; also what lets a name resolve to it when it is not public.
    Ip(IpAddr),
}

/// The port part of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortPattern {
    /// Absent: the scheme's default port.
    Default,
    /// `:*`.
    Any,
    /// `:PORT`.
    Exact(u16),
}

/// One entry of `allow: [{http: [...]}]`.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpPattern {
    /// `http` or `https`.
    pub scheme: HttpScheme,
    /// The host part.
    pub host: HostPattern,
    /// The port part.
    pub port: PortPattern,
    /// As written, for messages.
    pub text: String,
}

impl fmt::Debug for HttpPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

/// A request's destination as the engine sees it: host lowercased, brackets removed.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// The request's scheme.
    pub scheme: HttpScheme,
    /// A name or an address.
    pub host: &'a str,
    /// The port, the scheme's default when the URL names none.
    pub port: u16,
}

impl HttpPattern {
    /// Whether a request to `to` (a name or an address) is allowed by this pattern.
    pub fn allows(&self, to: &Destination<'_>) -> bool {
        let port_ok = match self.port {
            PortPattern::Default => to.port == self.scheme.default_port(),
            PortPattern::Any => true,
            PortPattern::Exact(p) => to.port == p,
        };
        let host_ok = match (&self.host, to.host.parse::<IpAddr>()) {
            (HostPattern::Ip(ip), Ok(addr)) => canonical(*ip) == canonical(addr),
            (HostPattern::Name(name), Err(_)) => *name == to.host,
            (HostPattern::Under(domain), Err(_)) => {
                to.host.strip_suffix(domain.as_str()).is_some_and(|head| head.len() > 1 && head.ends_with('.'))
            }
            _ => false,
        };
        self.scheme == to.scheme && port_ok && host_ok
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// `allow: [{http: [...]}]` of a component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpGrant {
    /// The patterns, duplicates dropped.
    pub patterns: Vec<HttpPattern>,
}

impl HttpGrant {
    /// The first pattern that allows a request to `to`.
    pub fn allowing(&self, to: &Destination<'_>) -> Option<&HttpPattern> {
        self.patterns.iter().find(|p| p.allows(to))
    }
}
