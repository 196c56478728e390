//! Connecting to the cluster's Redis: one client for commands, one for the
//! adapter's pub/sub, one for the journal's blocking reads, all in RESP3 and
//! reconnecting by themselves.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::error::ErrorKind;
use fred::prelude::{
    Builder, Client, ClientLike, Config, EventInterface, PubsubInterface, ReconnectPolicy,
};
use fred::types::RespVersion;
use fred::types::config::TlsConnector;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::Backoff;
use crate::manifest::{ClusterSettings, Fallback, RedisUrl};
use crate::metrics;

const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid Redis configuration for {url}: {detail}")]
    Config { url: RedisUrl, detail: String },
    #[error("Redis at {url} refused the credentials: {detail}; check the user and password")]
    Auth { url: RedisUrl, detail: String },
    #[error("cannot set up TLS for Redis at {url}: {detail}")]
    Tls { url: RedisUrl, detail: String },
    #[error("cannot reach Redis at {url}: {detail}")]
    Unreachable { url: RedisUrl, detail: String },
    #[error(
        "Redis at {url} is version {version}; Switchboard needs Redis 7 or newer (sharded pub/sub, RESP3)"
    )]
    TooOld { url: RedisUrl, version: String },
}

pub struct RedisConnection {
    pub commands: Client,
    pub subscriber: SubscriberClient,
    /// For reads that block (the journal's), which would hold up commands.
    pub reader: Client,
}

impl RedisConnection {
    /// Whether both connections are up right now.
    pub fn is_connected(&self) -> bool {
        self.commands.is_connected() && self.subscriber.is_connected()
    }
}

/// Connects both clients. While Redis cannot be reached this retries with
/// backoff, or with `fallback = "local"` fails at once with `Unreachable`;
/// wrong credentials or an old server fail at once.
pub async fn connect(settings: &ClusterSettings) -> Result<RedisConnection, ConnectError> {
    let url = &settings.redis_url;
    let config_error = |error: fred::error::Error| ConnectError::Config {
        url: url.clone(),
        detail: url.redact(error.details()),
    };
    let mut config = Config::from_url(url.expose()).map_err(config_error)?;
    // fred ignores `?protocol=resp3`; the adapter needs RESP3.
    config.version = RespVersion::RESP3;
    if let Some(ca_file) = &settings.ca_file {
        let tls = trusting(ca_file).map_err(|detail| ConnectError::Tls {
            url: url.clone(),
            detail,
        })?;
        config.tls = Some(TlsConnector::from(tls).into());
    }
    let mut builder = Builder::from_config(config);
    // After the first connection, reconnect forever (0 = no attempt limit).
    builder.set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
    // While Redis is away, a command fails after this instead of waiting for
    // the reconnection, so a plugin call gets `state_unavailable` within its
    // own time limit rather than hanging until it is aborted.
    builder.with_performance_config(|performance| {
        performance.default_command_timeout = COMMAND_TIMEOUT
    });
    builder.with_connection_config(|connection| {
        connection.connection_timeout = CONNECTION_TIMEOUT;
        // Commands from concurrent calls share one connection; with Nagle's
        // algorithm a small write can wait for the previous one's delayed
        // ACK (40 ms on Linux), as the client connections did (BENCHMARKS.md).
        connection.tcp.nodelay = Some(true);
    });
    let retry = settings.fallback == Fallback::Wait;
    let commands = first_connection(|| builder.build(), url, retry)
        .await
        .map_err(|error| error.or_config(url))?;
    let subscriber = first_connection(|| builder.build_subscriber_client(), url, retry)
        .await
        .map_err(|error| error.or_config(url))?;
    let reader = first_connection(|| builder.build(), url, retry)
        .await
        .map_err(|error| error.or_config(url))?;
    resubscribe_on_reconnect(&subscriber);
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
    watch_connection(&commands);
    Ok(RedisConnection {
        commands,
        subscriber,
        reader,
    })
}

/// A TLS client configuration that trusts the CA certificates in `ca_file`.
fn trusting(ca_file: &Path) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(ca_file)
        .map_err(|error| format!("cannot read CA file {}: {error}", ca_file.display()))?;
    for certificate in certificates {
        let certificate = certificate
            .map_err(|error| format!("bad certificate in {}: {error}", ca_file.display()))?;
        roots.add(certificate).map_err(|error| {
            format!("unusable CA certificate in {}: {error}", ca_file.display())
        })?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no PEM certificate", ca_file.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Keeps the Redis metrics current: the command connection is what plugins'
/// state calls and timers wait on.
fn watch_connection(commands: &Client) {
    metrics::redis_connected(true);
    commands.on_error(|_| async {
        metrics::redis_connected(false);
        Ok(())
    });
    commands.on_reconnect(|_| async {
        metrics::redis_reconnected();
        metrics::redis_connected(true);
        Ok(())
    });
}

/// After every reconnection, subscribes again to the adapter's (sharded)
/// channels, so cross-node fanout resumes by itself after a Redis restart.
fn resubscribe_on_reconnect(subscriber: &SubscriberClient) {
    let client = subscriber.clone();
    subscriber.on_reconnect(move |_| {
        let client = client.clone();
        async move {
            let channels: Vec<String> = client
                .tracked_shard_channels()
                .iter()
                .map(ToString::to_string)
                .collect();
            if !channels.is_empty() {
                match client.ssubscribe(channels).await {
                    Ok(()) => tracing::info!("reconnected to Redis; cluster fanout resumed"),
                    // Returning the error would end this listener; the next reconnection retries.
                    Err(error) => {
                        tracing::warn!("reconnected to Redis but could not resubscribe: {error}")
                    }
                }
            }
            Ok(())
        }
    });
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
                detail: url.redact(error.details()),
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
    retry: bool,
) -> Result<C, FirstConnectionError> {
    let mut backoff = Backoff::new();
    loop {
        let client = build().map_err(FirstConnectionError::Build)?;
        let Err(error) = client.init().await.map(drop) else {
            return Ok(client);
        };
        let detail = url.redact(error.details());
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
        if !retry {
            let url = url.clone();
            return Err(FirstConnectionError::Connect(ConnectError::Unreachable {
                url,
                detail,
            }));
        }
        let delay = backoff.delay();
        let error = url.redact(&error.to_string());
        tracing::warn!(%url, "cannot reach Redis ({error}); retrying in {} ms; /readyz reports not ready", delay.as_millis());
        tokio::time::sleep(delay).await;
    }
}
