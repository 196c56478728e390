//! A Redis URL that never shows its password.

use std::fmt;

use percent_encoding::percent_decode_str;

/// What a password is shown as.
const HIDDEN: &str = "****";

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
        let parsed = Self(url.to_owned());
        // What `serve` connects with reads it first, so `check` refuses what `serve` would.
        if let Err(error) = fred::prelude::Config::from_url(url) {
            return Err(format!(
                "`{parsed}` is not a usable Redis URL: {}",
                parsed.redact(error.details())
            ));
        }
        Ok(parsed)
    }

    /// The URL with its password, for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` (an error of the Redis client, say) with this URL's password
    /// replaced by `****`, as written and percent-decoded (as it is sent).
    pub fn redact(&self, text: &str) -> String {
        let Some(password) = self.password() else {
            return text.to_owned();
        };
        let decoded = percent_decode_str(password).decode_utf8_lossy();
        text.replace(password, HIDDEN)
            .replace(decoded.as_ref(), HIDDEN)
    }

    fn password(&self) -> Option<&str> {
        let (_, rest) = self.0.split_once("://")?;
        let (_, password) = rest[..userinfo_end(rest)?].split_once(':')?;
        Some(password).filter(|password| !password.is_empty())
    }

    pub fn is_tls(&self) -> bool {
        self.0.starts_with("rediss") || self.0.starts_with("valkeys")
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return f.write_str(HIDDEN);
        };
        match userinfo_end(rest) {
            Some(at) => {
                let user = rest[..at]
                    .split_once(':')
                    .map_or(&rest[..at], |(user, _)| user);
                write!(f, "{scheme}://{user}:{HIDDEN}@{}", &rest[at + 1..])
            }
            None => write!(f, "{scheme}://{rest}"),
        }
    }
}

/// Where the `user:password` before the host ends: the last `@`, so that a
/// password with an unescaped `@` or `/` is still hidden whole.
fn userinfo_end(after_scheme: &str) -> Option<usize> {
    after_scheme.rfind('@')
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
        // Unescaped, such a password cannot be connected with, and is hidden in the refusal.
        let error = RedisUrl::parse("redis://:pa/s@s3cret@127.0.0.1:6379").unwrap_err();
        assert!(
            error.starts_with("`redis://:****@127.0.0.1:6379`"),
            "{error}"
        );
        assert!(
            !error.contains("s3cret") && !error.contains("pa/s"),
            "{error}"
        );
    }

    #[test]
    fn redacts_the_password_from_other_text() {
        let url = RedisUrl::parse("rediss://app:p%40ss-s3cret@cache:6380").unwrap();
        assert_eq!(
            url.redact("AUTH app p@ss-s3cret failed for rediss://app:p%40ss-s3cret@cache"),
            "AUTH app **** failed for rediss://app:****@cache"
        );
        let without = RedisUrl::parse("redis://cache:6379").unwrap();
        assert_eq!(without.redact("refused"), "refused");
    }

    #[test]
    fn refuses_what_the_redis_client_cannot_connect_to() {
        let error = RedisUrl::parse("redis://:s3cret@cache:99999").unwrap_err();
        assert!(error.contains("not a usable Redis URL"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        assert!(RedisUrl::parse("redis://cache:6379/0").is_ok());
    }
}
