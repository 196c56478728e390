//! A Redis URL that never shows its password.

use std::fmt;

const SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "redis-cluster",
    "rediss-cluster",
    "valkey",
    "valkeys",
    "valkey-cluster",
    "valkeys-cluster",
];

/// `redis://[user[:password]@]host[:port][/db]`, `rediss://` for TLS, and
/// `redis-cluster://host:port?node=host2:port2...` (or `rediss-cluster://`) for
/// Redis Cluster; `valkey` may replace `redis` in each. `Display` and `Debug`
/// print the password as `****`, so the URL can go into logs, errors, `check`
/// output and metrics.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let scheme_ok = url
            .split_once("://")
            .is_some_and(|(scheme, _)| SCHEMES.contains(&scheme));
        if !scheme_ok || url.contains(char::is_whitespace) {
            return Err(format!(
                "`{}` is not a Redis URL: write redis://[user:password@]host:port, rediss:// for TLS, \
                 or redis-cluster://host:port?node=host2:port2 for Redis Cluster",
                Self(url.to_owned())
            ));
        }
        Ok(Self(url.to_owned()))
    }

    /// The URL with its password, for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_tls(&self) -> bool {
        self.0.starts_with("rediss") || self.0.starts_with("valkeys")
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return f.write_str("****");
        };
        let authority_end = rest.find('/').unwrap_or(rest.len());
        match rest[..authority_end].rfind('@') {
            Some(at) => {
                let user = rest[..at]
                    .split_once(':')
                    .map_or(&rest[..at], |(user, _)| user);
                write!(f, "{scheme}://{user}:****@{}", &rest[at + 1..])
            }
            None => write!(f, "{scheme}://{rest}"),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::RedisUrl;

    #[test]
    fn hides_the_password() {
        let show = |url: &str| RedisUrl::parse(url).unwrap().to_string();
        assert_eq!(
            show("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://:****@127.0.0.1:6379/0"
        );
        assert_eq!(
            show("rediss://app:s3cret@cache:6380"),
            "rediss://app:****@cache:6380"
        );
        assert_eq!(show("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            show("redis-cluster://:pw@10.0.0.1:7000?node=10.0.0.2:7001"),
            "redis-cluster://:****@10.0.0.1:7000?node=10.0.0.2:7001"
        );
        assert!(RedisUrl::parse("rediss://h:1").unwrap().is_tls());
        let error = RedisUrl::parse("http://:s3cret@host").unwrap_err();
        assert!(!error.contains("s3cret"), "{error}");
    }
}
