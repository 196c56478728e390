//! Connecting to the cluster's Redis: one client for commands, one for the
//! adapter's pub/sub, both in RESP3 and reconnecting by themselves.

use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::error::ErrorKind;
use fred::prelude::{Builder, Client, ClientLike, Config, ReconnectPolicy};
use fred::types::RespVersion;

use crate::manifest::{ClusterSettings, RedisUrl};

/// Backoff between first connection attempts.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid Redis configuration for {url}: {detail}")]
    Config { url: RedisUrl, detail: String },
    #[error("Redis at {url} refused the credentials: {detail}; check the user and password")]
    Auth { url: RedisUrl, detail: String },
    #[error(
        "Redis at {url} is version {version}; Switchboard needs Redis 7 or newer (sharded pub/sub, RESP3)"
    )]
    TooOld { url: RedisUrl, version: String },
}

pub struct RedisConnection {
    pub commands: Client,
    pub subscriber: SubscriberClient,
}

/// Connects both clients, retrying with backoff while Redis cannot be
/// reached; wrong credentials or an old server fail at once.
pub async fn connect(settings: &ClusterSettings) -> Result<RedisConnection, ConnectError> {
    let url = &settings.redis_url;
    let config_error = |error: fred::error::Error| ConnectError::Config {
        url: url.clone(),
        detail: error.details().to_owned(),
    };
    let mut config = Config::from_url(url.expose()).map_err(config_error)?;
    // fred ignores `?protocol=resp3`; the adapter needs RESP3.
    config.version = RespVersion::RESP3;
    let mut builder = Builder::from_config(config);
    // After the first connection, reconnect forever (0 = no attempt limit).
    builder.set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
    let commands = first_connection(|| builder.build(), url)
        .await
        .map_err(|error| error.or_config(url))?;
    let subscriber = first_connection(|| builder.build_subscriber_client(), url)
        .await
        .map_err(|error| error.or_config(url))?;
    let version = commands
        .server_version()
        .map(|version| version.major)
        .unwrap_or(0);
    if version < 7 {
        return Err(ConnectError::TooOld {
            url: url.clone(),
            version: commands
                .server_version()
                .map_or_else(|| "unknown".to_owned(), |v| v.to_string()),
        });
    }
    tracing::info!(%url, "connected to Redis");
    Ok(RedisConnection {
        commands,
        subscriber,
    })
}

/// A failure before the first connection: the configuration, or Redis's answer.
enum FirstConnectionError {
    Build(fred::error::Error),
    Connect(ConnectError),
}

impl FirstConnectionError {
    fn or_config(self, url: &RedisUrl) -> ConnectError {
        match self {
            Self::Build(error) => ConnectError::Config {
                url: url.clone(),
                detail: error.details().to_owned(),
            },
            Self::Connect(error) => error,
        }
    }
}

/// Builds a client and connects it, with a fresh client for every attempt:
/// one whose first connection failed is not reused.
async fn first_connection<C: ClientLike>(
    build: impl Fn() -> Result<C, fred::error::Error>,
    url: &RedisUrl,
) -> Result<C, FirstConnectionError> {
    let mut delay = RETRY_MIN;
    loop {
        let client = build().map_err(FirstConnectionError::Build)?;
        let Err(error) = client.init().await.map(drop) else {
            return Ok(client);
        };
        let detail = error.details().to_owned();
        if *error.kind() == ErrorKind::Auth
            || detail.contains("WRONGPASS")
            || detail.contains("NOAUTH")
        {
            let url = url.clone();
            return Err(FirstConnectionError::Connect(ConnectError::Auth {
                url,
                detail,
            }));
        }
        tracing::warn!(%url, "cannot reach Redis ({error}); retrying in {} ms; /readyz reports not ready", delay.as_millis());
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
    }
}
