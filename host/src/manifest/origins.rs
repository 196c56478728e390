//! `[server] allowed_origins`: which web pages may open a Socket.IO
//! connection, by the `Origin` header their browser sends.

use std::fmt;

/// Which browser origins may connect.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowedOrigins {
    /// Unset: only pages served by the host the request was sent to (the
    /// `Origin`'s host and port equal the request's `Host`).
    #[default]
    SameOrigin,
    /// Exactly the origins the manifest lists.
    Listed(Vec<OriginPattern>),
}

impl AllowedOrigins {
    /// Whether a page of `origin` (the `Origin` header) may reach this server
    /// as `host` (the `Host` header, if any).
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        match self {
            Self::SameOrigin => Origin::parse_header(origin)
                .zip(host)
                .is_some_and(|(origin, host)| origin.is_served_as(host)),
            Self::Listed(patterns) => {
                let parsed = Origin::parse_header(origin);
                patterns.iter().any(|pattern| match pattern {
                    OriginPattern::Any => true,
                    OriginPattern::Site(site) => parsed.as_ref().is_some_and(|o| site.matches(o)),
                })
            }
        }
    }

    /// True when `*` is listed: any web page may open a socket with its
    /// visitors' cookies.
    pub fn allows_any(&self) -> bool {
        matches!(self, Self::Listed(patterns) if patterns.contains(&OriginPattern::Any))
    }
}

/// One entry of `allowed_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// `*`
    Any,
    /// `https://app.example.com`, or `https://*.example.com` for its subdomains.
    Site(SitePattern),
}

impl OriginPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Any);
        }
        let example = "write an origin as a browser sends it: `https://app.example.com`, \
                       `http://localhost:3000`, or `https://*.example.com` for every subdomain";
        if text == "null" {
            return Err(format!(
                "`null` is the origin of every sandboxed page and local file, so it cannot be told apart; {example}"
            ));
        }
        let origin =
            Origin::parse(text).map_err(|problem| format!("`{text}`: {problem}; {example}"))?;
        let host = match origin.host.strip_prefix("*.") {
            Some(parent) => HostPattern::SubdomainOf(parent.to_owned()),
            None => HostPattern::Exact(origin.host.clone()),
        };
        if host.name().contains('*') {
            return Err(format!(
                "`{text}`: `*` may only stand for the whole first label, as in `https://*.example.com`"
            ));
        }
        Ok(Self::Site(SitePattern {
            scheme: origin.scheme,
            host,
            port: origin.port,
        }))
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Site(site) => {
                let prefix = match site.host {
                    HostPattern::Exact(_) => "",
                    HostPattern::SubdomainOf(_) => "*.",
                };
                write!(f, "{}://{prefix}{}", site.scheme, site.host.name())?;
                if site.port != site.scheme.default_port() {
                    write!(f, ":{}", site.port)?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitePattern {
    scheme: Scheme,
    host: HostPattern,
    port: u16,
}

impl SitePattern {
    fn matches(&self, origin: &Origin) -> bool {
        self.scheme == origin.scheme
            && self.port == origin.port
            && match &self.host {
                HostPattern::Exact(host) => *host == origin.host,
                HostPattern::SubdomainOf(parent) => origin
                    .host
                    .strip_suffix(parent.as_str())
                    .and_then(|sub| sub.strip_suffix('.'))
                    .is_some_and(|sub| !sub.is_empty()),
            }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// Any host under this one, at any depth, but not this one itself.
    SubdomainOf(String),
}

impl HostPattern {
    fn name(&self) -> &str {
        match self {
            Self::Exact(name) | Self::SubdomainOf(name) => name,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http => "http",
            Self::Https => "https",
        })
    }
}

/// A web origin, `scheme://host[:port]`, lowercased, with its port made explicit.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: Scheme,
    host: String,
    port: u16,
}

impl Origin {
    /// An `Origin` header; `None` for `null` or anything else malformed.
    fn parse_header(text: &str) -> Option<Self> {
        Self::parse(text)
            .ok()
            .filter(|origin| !origin.host.contains('*'))
    }

    /// Reads an origin; the host may contain `*` (for patterns, checked by
    /// the caller).
    fn parse(text: &str) -> Result<Self, String> {
        let Some((scheme, authority)) = text.split_once("://") else {
            return Err("no scheme: start with `https://` or `http://`".to_owned());
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(format!("the scheme `{other}` is not `http` or `https`")),
        };
        if let Some(at) = authority.find(['/', '?', '#']) {
            return Err(format!(
                "an origin has no path, query or fragment; remove `{}`",
                &authority[at..]
            ));
        }
        if authority.contains('@') {
            return Err("an origin has no user name or password".to_owned());
        }
        let (host, port) = split_host_port(authority)?;
        let valid_host = if let Some(literal) = host.strip_prefix('[') {
            literal
                .strip_suffix(']')
                .is_some_and(|address| address.parse::<std::net::Ipv6Addr>().is_ok())
        } else {
            !host.is_empty()
                && !host.starts_with('.')
                && !host.ends_with('.')
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*'))
        };
        if !valid_host {
            return Err(format!("`{host}` is not a host name or IP address"));
        }
        Ok(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port: port.unwrap_or(scheme.default_port()),
        })
    }

    /// Whether this origin names the server a request reached as `host` (a
    /// `Host` header; without a port it is the origin scheme's default).
    fn is_served_as(&self, host: &str) -> bool {
        split_host_port(host).is_ok_and(|(name, port)| {
            name.eq_ignore_ascii_case(&self.host)
                && port.unwrap_or(self.scheme.default_port()) == self.port
        })
    }
}

/// `host[:port]`, with IPv6 literals in brackets.
fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let port_at = match authority.rfind(':') {
        Some(colon) if !authority[colon..].contains(']') => colon,
        _ => return Ok((authority, None)),
    };
    let (host, port) = (&authority[..port_at], &authority[port_at + 1..]);
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|_| port.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("`{port}` is not a port number"))?;
    Ok((host, Some(port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(patterns: &[&str]) -> AllowedOrigins {
        AllowedOrigins::Listed(
            patterns
                .iter()
                .map(|pattern| OriginPattern::parse(pattern).unwrap())
                .collect(),
        )
    }

    #[test]
    fn exact_origins_match_scheme_host_and_port() {
        let origins = listed(&["https://app.example.com", "http://localhost:3000"]);
        for allowed in [
            "https://app.example.com",
            "https://APP.example.com:443",
            "http://localhost:3000",
        ] {
            assert!(origins.allows(allowed, None), "{allowed}");
        }
        for refused in [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://app.example.com.evil.net",
            "https://evilapp.example.com",
            "http://localhost:3001",
            "null",
            "",
        ] {
            assert!(!origins.allows(refused, None), "{refused}");
        }
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let origins = listed(&["https://*.example.com"]);
        assert!(origins.allows("https://a.example.com", None));
        assert!(origins.allows("https://a.b.example.com", None));
        assert!(!origins.allows("https://*.example.com", None));
        for refused in [
            "https://example.com",
            "https://badexample.com",
            "https://a.example.com.evil.net",
            "http://a.example.com",
            "https://a.example.com:444",
        ] {
            assert!(!origins.allows(refused, None), "{refused}");
        }
    }

    #[test]
    fn same_origin_compares_host_and_port_with_the_host_header() {
        let origins = AllowedOrigins::SameOrigin;
        assert!(origins.allows("http://127.0.0.1:3000", Some("127.0.0.1:3000")));
        assert!(origins.allows("https://chat.example.com", Some("chat.example.com")));
        assert!(origins.allows("http://[::1]:8080", Some("[::1]:8080")));
        assert!(!origins.allows("http://127.0.0.1:3001", Some("127.0.0.1:3000")));
        assert!(!origins.allows("http://localhost:3000", Some("127.0.0.1:3000")));
        assert!(!origins.allows("https://evil.example", Some("chat.example.com")));
        assert!(!origins.allows("http://127.0.0.1:3000", None));
        assert!(!origins.allows("null", Some("null")));
    }

    #[test]
    fn any_allows_every_origin() {
        let origins = listed(&["*"]);
        assert!(origins.allows("https://anything.test", None));
        assert!(origins.allows("null", None));
        assert!(origins.allows_any());
        assert!(!listed(&["https://a.test"]).allows_any());
    }

    #[test]
    fn malformed_patterns_say_what_to_write() {
        let cases = [
            ("example.com", "no scheme"),
            ("*.example.com", "no scheme"),
            ("ftp://example.com", "`ftp` is not `http` or `https`"),
            ("https://example.com/", "remove `/`"),
            ("https://example.com/app", "remove `/app`"),
            ("https://user@example.com", "no user name"),
            ("https://example.com:http", "not a port number"),
            ("https://example.com:99999", "not a port number"),
            ("https://a.*.example.com", "whole first label"),
            ("https://*", "whole first label"),
            ("https://", "not a host name"),
            ("https://exa mple.com", "not a host name"),
            ("null", "cannot be told apart"),
        ];
        for (pattern, expected) in cases {
            let error = OriginPattern::parse(pattern).unwrap_err();
            assert!(error.contains(expected), "{pattern}: {error}");
        }
    }
}
