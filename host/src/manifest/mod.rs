//! The TOML plugin manifest: strict schema ([`schema`]), validation into a
//! [`Manifest`], errors that point at a line and column ([`error`]), and the
//! settings the environment gives instead ([`environment`]).

pub mod environment;
mod error;
mod origins;
mod redis_url;
mod schema;
mod secret;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use environment::Environment;
pub use error::{Location, ManifestError};
pub use origins::{AllowedOrigins, OriginPattern};
pub use redis_url::RedisUrl;
use schema::{AuthSection, ManifestFile, PluginSection, RouteSection};
pub use schema::{Fallback, InstanceModel, JwtAlgorithm, MetricsAccess, RouteAuth};
pub use secret::Secret;
use toml::Spanned;

/// How long a keep-alive connection waits for its next request unless the
/// manifest says otherwise: Node's `keepAliveTimeout` is 5 s too.
const DEFAULT_IDLE_TIMEOUT_MS: u64 = 5_000;
/// The least `max_header_bytes`: hyper's own floor, and the 8 KiB most
/// servers take as a minimum.
const MIN_HEADER_BYTES: u64 = 8_192;

/// Wasm pages (64 KiB) in a MiB.
const PAGES_PER_MIB: u32 = 16;

/// Beyond it, any event to a busy client could wait longer than clients
/// expect an event to take.
const MAX_MIN_WRITE_INTERVAL_MS: u64 = 1_000;

/// The manifest format version this release reads.
pub const MANIFEST_VERSION: u32 = 1;

/// Event names Socket.IO reserves; a plugin cannot claim them.
const RESERVED_EVENTS: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
    "error",
];

/// True for event names Socket.IO keeps for itself (and `error`, which the
/// host uses to report failures).
pub fn is_reserved_event(event: &str) -> bool {
    RESERVED_EVENTS.contains(&event)
}

/// Environment variable that overrides `cluster.redis_url`.
pub const REDIS_URL_VARIABLE: &str = "SWITCHBOARD_REDIS_URL";
/// Environment variable that overrides `api.token`.
pub const API_TOKEN_VARIABLE: &str = "SWITCHBOARD_API_TOKEN";
/// Environment variable that overrides `auth.secret`.
pub const JWT_SECRET_VARIABLE: &str = "SWITCHBOARD_JWT_SECRET";
/// Environment variable that overrides `auth.public_key_file`, with the PEM text.
pub const JWT_PUBLIC_KEY_VARIABLE: &str = "SWITCHBOARD_JWT_PUBLIC_KEY";

/// HTTP methods a plugin route can have.
const ROUTE_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];
/// Paths the host serves itself; plugin routes stay out of them.
const HOST_PATHS: &[&str] = &["/api/", "/healthz", "/readyz", "/metrics"];

/// A validated manifest with paths resolved against its directory.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    pub server: ServerSettings,
    /// `None`: a single node keeping everything in memory.
    pub cluster: Option<ClusterSettings>,
    /// `None`: the HTTP API is off.
    pub api_token: Option<Secret>,
    /// Who may read `/metrics`.
    pub metrics: MetricsAccess,
    /// `None`: identities are not verified.
    pub auth: Option<AuthSettings>,
    /// Namespaces whose sockets may connect without a token.
    pub anonymous_namespaces: Vec<String>,
    /// Event rates of the namespaces that set them; the others have the default.
    pub event_rates: HashMap<String, EventRate>,
    pub plugins: Vec<PluginSpec>,
}

/// How many events one socket of a namespace may send, and how much plugin
/// time and how many bytes sent (replies and emits) they may cost, each
/// per second on average and at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
    pub plugin_ms_per_second: NonZeroU32,
    pub plugin_burst_ms: NonZeroU32,
    pub output_bytes_per_second: NonZeroU64,
    pub output_burst_bytes: NonZeroU64,
}

impl Default for EventRate {
    fn default() -> Self {
        let section = schema::NamespaceSection::default();
        Self::new(&section).unwrap_or_else(|| unreachable!("the defaults are at least 1"))
    }
}

impl EventRate {
    /// `None` when a value is 0.
    fn new(section: &schema::NamespaceSection) -> Option<Self> {
        Some(Self {
            per_second: NonZeroU32::new(section.events_per_second)?,
            burst: NonZeroU32::new(section.event_burst)?,
            plugin_ms_per_second: NonZeroU32::new(section.plugin_ms_per_second)?,
            plugin_burst_ms: NonZeroU32::new(section.plugin_burst_ms)?,
            output_bytes_per_second: NonZeroU64::new(section.output_bytes_per_second)?,
            output_burst_bytes: NonZeroU64::new(section.output_burst_bytes)?,
        })
    }
}

/// How tokens are verified.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthSettings {
    pub algorithm: JwtAlgorithm,
    pub key: JwtKey,
    pub clock_skew: Duration,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JwtKey {
    Secret(Secret),
    PublicKeyPem(String),
}

/// An HTTP route of a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRoute {
    pub method: String,
    pub path: String,
    pub auth: RouteAuth,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    pub redis_url: RedisUrl,
    pub prefix: String,
    pub request_timeout: Duration,
    pub fallback: Fallback,
    /// CA certificates for `rediss://`, resolved against the manifest.
    pub ca_file: Option<PathBuf>,
}

/// The most one frame (a WebSocket message, a long-polling POST, an event's
/// binary attachments) may carry before the transport closes its connection:
/// twice `max_payload_bytes`, so an event over `max_payload_bytes` but within
/// this gets a clear error from the host instead.
pub fn transport_limit(max_payload_bytes: u64) -> u64 {
    max_payload_bytes.saturating_mul(2)
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub path: String,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub max_payload_bytes: u64,
    /// Per client; see [`crate::transport`] for what happens beyond it.
    pub max_outbound_bytes: usize,
    /// Zero: every WebSocket write as soon as the client can take it.
    pub min_write_interval: Duration,
    pub static_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub allowed_origins: AllowedOrigins,
    pub connections: ConnectionLimits,
    pub max_queued_bytes_per_socket: usize,
    pub max_auth_bytes: usize,
    pub max_rooms_per_socket: usize,
    /// What all plugin instances together may hold (`plugin_memory_mib`).
    pub plugin_memory_bytes: usize,
    /// Threads serving sockets, and as many running plugin code.
    pub threads: NonZeroUsize,
    /// `None`: connection-state recovery is off.
    pub recovery: Option<RecoverySettings>,
}

/// How long sessions wait for their client to come back, and how many missed
/// events they can catch up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoverySettings {
    pub max_disconnection: Duration,
    pub max_events: u64,
    pub max_bytes: usize,
    pub max_waiting_sessions: usize,
}

/// Which connections the node admits and how long it waits for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// As configured; the listener lowers it to what the file-descriptor limit allows.
    pub max_connections: usize,
    /// New connections allowed from one client address; `None`: any
    /// address may open connections as fast as it likes.
    pub per_address: Option<Rate>,
    /// Incoming packets read per connection; `None`: as fast as they come.
    pub packets: Option<Rate>,
    /// Incoming bytes read per connection; `None`: as fast as they come.
    pub bytes: Option<Rate>,
    /// Connections one address may hold open; `None`: as many as it likes.
    pub open_per_address: Option<NonZeroUsize>,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_header_bytes: usize,
    pub body_timeout: Duration,
    /// Longest a write to a client may wait for it to take what was written
    /// before: a WebSocket write, or an HTTP response's.
    pub write_timeout: Duration,
}

/// So many a second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// One plugin as the host runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSpec {
    pub name: PluginName,
    pub wasm: PathBuf,
    /// Where the plugin's `path` is written, for errors found while loading it.
    pub location: Location,
    pub namespaces: Vec<String>,
    pub events: Vec<String>,
    pub routes: Vec<HttpRoute>,
    pub limits: Limits,
    pub instances: InstanceModel,
    /// The `config` table as a JSON object.
    pub config: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub time: Duration,
    pub memory_bytes: usize,
    pub max_state_value_bytes: usize,
    pub max_state_keys: u64,
    pub max_state_list_items: u64,
    /// Calls that may run at once.
    pub concurrency: usize,
    /// How long a call waits for room under a limit before it is refused.
    pub queue: Duration,
    /// Answers to `acks.to-socket` awaited at once on this node.
    pub max_pending_acks: usize,
    /// Wasm pages (64 KiB) its instances may grow by during calls, together,
    /// a second and at once.
    pub memory_growth_pages: NonZeroU32,
    /// Log lines its instances may write a second, together, and at once.
    pub log_lines_per_second: NonZeroU32,
    /// Timers it may have pending in the cluster.
    pub max_timers: u64,
    /// What each caller of its routes may ask of it.
    pub route_rate: RouteRate,
}

/// What each caller of a plugin's routes may ask of it on this node: a
/// bucket of requests and one of plugin time, each refilled continuously up
/// to its burst. A rate of 0 does not limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRate {
    pub requests_per_second: u32,
    pub request_burst: NonZeroU32,
    pub plugin_ms_per_second: u32,
    pub plugin_burst_ms: NonZeroU32,
}

/// A plugin name: lowercase ASCII letters, digits, `-` and `_`, starting with a letter.
/// Shared, not copied: every event's log context names its plugin.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginName(Arc<str>);

impl PluginSpec {
    /// Whether a plugin running `self` can keep running for `other`: the same
    /// component and settings (where the manifest says so may differ).
    pub fn runs_like(&self, other: &PluginSpec) -> bool {
        self.name == other.name
            && self.wasm == other.wasm
            && self.namespaces == other.namespaces
            && self.events == other.events
            && self.routes == other.routes
            && self.limits == other.limits
            && self.instances == other.instances
            && self.config == other.config
    }
}

impl PluginName {
    pub fn parse(name: &str) -> Result<Self, String> {
        let mut chars = name.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_valid =
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if starts_with_letter && rest_valid && name.len() <= 64 {
            Ok(Self(name.into()))
        } else {
            Err(format!(
                "invalid plugin name `{name}`: use 1 to 64 lowercase letters, digits, `-` or `_`, starting with a letter"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PluginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Manifest {
    /// How many events one socket of `namespace` may send.
    pub fn event_rate(&self, namespace: &str) -> EventRate {
        self.event_rates.get(namespace).copied().unwrap_or_default()
    }

    /// Reads and validates a manifest file, applying the environment's overrides.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let source = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let variable = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|value: &String| !value.is_empty())
        };
        Self::parse_with(
            &path,
            &source,
            &Overrides {
                redis_url: variable(REDIS_URL_VARIABLE).map(Secret::new),
                api_token: variable(API_TOKEN_VARIABLE).map(Secret::new),
                jwt_secret: variable(JWT_SECRET_VARIABLE).map(Secret::new),
                jwt_public_key: variable(JWT_PUBLIC_KEY_VARIABLE),
            },
            Environment::new(variable),
        )
    }

    /// Validates manifest text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, source: &str) -> Result<Self, ManifestError> {
        Self::parse_with(path, source, &Overrides::default(), Environment::empty())
    }

    fn parse_with(
        path: &Path,
        source: &str,
        overrides: &Overrides,
        mut environment: Environment,
    ) -> Result<Self, ManifestError> {
        let mut file: ManifestFile =
            toml::from_str(source).map_err(|error| ManifestError::Syntax {
                location: Location::at(path, source, error.span().map_or(0, |span| span.start)),
                message: error.message().trim_end().to_owned(),
            })?;
        // The URL in the environment is enough to join a cluster, as the
        // `REDIS_URL` convention of most deployments has it.
        if file.cluster.is_none() && overrides.redis_url.is_some() {
            file.cluster = Some(schema::ClusterSection::default());
        }
        environment.apply(&mut file)?;
        Validator {
            path,
            source,
            base: path.parent().unwrap_or(Path::new(".")),
            overrides,
            environment: &environment,
        }
        .validate(file)
    }
}

/// Settings the environment gives instead of the manifest.
#[derive(Debug, Default)]
struct Overrides {
    redis_url: Option<Secret>,
    api_token: Option<Secret>,
    jwt_secret: Option<Secret>,
    /// PEM text of a public key: not a secret.
    jwt_public_key: Option<String>,
}

struct Validator<'a> {
    path: &'a Path,
    source: &'a str,
    base: &'a Path,
    overrides: &'a Overrides,
    environment: &'a Environment,
}

impl Validator<'_> {
    fn invalid<T>(
        &self,
        span: std::ops::Range<usize>,
        message: String,
    ) -> Result<T, ManifestError> {
        Err(ManifestError::Invalid {
            location: self.location(span),
            message,
        })
    }

    fn location(&self, span: std::ops::Range<usize>) -> Location {
        match self.environment.variable_at(span.start) {
            Some(variable) => Location::variable(self.path, variable),
            None => Location::at(self.path, self.source, span.start),
        }
    }

    fn validate(&self, file: ManifestFile) -> Result<Manifest, ManifestError> {
        if *file.version.get_ref() != MANIFEST_VERSION {
            return self.invalid(
                file.version.span(),
                format!(
                    "unsupported manifest version {}; this switchboard reads version {MANIFEST_VERSION}",
                    file.version.get_ref()
                ),
            );
        }
        let server = file.server;
        if !server.path.get_ref().starts_with('/') {
            return self.invalid(
                server.path.span(),
                format!(
                    "`path` must start with `/`, got `{}`",
                    server.path.get_ref()
                ),
            );
        }
        if server.max_payload_bytes == 0 {
            return self.invalid(0..0, "`max_payload_bytes` must be at least 1".to_owned());
        }
        if server.max_outbound_bytes < server.max_payload_bytes {
            return self.invalid(
                0..0,
                format!(
                    "`max_outbound_bytes` ({}) must be at least `max_payload_bytes` ({}): a client could not even receive one event of the largest size",
                    server.max_outbound_bytes, server.max_payload_bytes
                ),
            );
        }
        if server.write_timeout_ms == 0 {
            return self.invalid(0..0, "`write_timeout_ms` must be at least 1".to_owned());
        }
        if server.min_write_interval_ms > MAX_MIN_WRITE_INTERVAL_MS {
            return self.invalid(
                0..0,
                format!(
                    "`min_write_interval_ms` ({}) must be at most {MAX_MIN_WRITE_INTERVAL_MS}: every event to a busy client could wait that long",
                    server.min_write_interval_ms
                ),
            );
        }
        if server.min_write_interval_ms >= server.ping_timeout_ms {
            return self.invalid(
                0..0,
                format!(
                    "`min_write_interval_ms` ({}) must be below `ping_timeout_ms` ({}): a PING waiting that long would leave the client no time to answer it",
                    server.min_write_interval_ms, server.ping_timeout_ms
                ),
            );
        }
        let plugin_memory_bytes = mib_to_bytes(server.plugin_memory_mib);
        let mut reserved_bytes = 0usize;

        let mut connections = self.connection_limits(&server)?;
        let threads = self.threads(server.threads.as_ref())?;
        let allowed_origins = self.allowed_origins(server.allowed_origins)?;
        let api_token = self.overrides.api_token.clone().or(file.api.token);
        let metrics = self.metrics_access(file.api.metrics, api_token.is_some())?;
        let auth = file.auth.map(|auth| self.auth(auth)).transpose()?;
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut claims: HashMap<(String, String), (String, usize)> = HashMap::new();
        let mut routes = RouteTable::default();
        let mut plugins = Vec::with_capacity(file.plugins.len());
        for mut section in file.plugins {
            let name = self.plugin_name(&section.name)?;
            let line = self.location(section.name.span()).line;
            if let Some(first) = names.insert(name.to_string(), line) {
                return self.invalid(
                    section.name.span(),
                    format!("plugin `{name}` is defined twice (first on line {first}); give each plugin its own name"),
                );
            }
            let http_routes = std::mem::take(&mut section.routes);
            // Naming its namespaces with no events makes a plugin that only
            // sees connections (one that pushes, or tracks presence); left
            // to the default, it is an `events` list forgotten.
            let names_namespaces = section
                .namespaces
                .iter()
                .any(|namespace| !namespace.span().is_empty());
            if section.events.is_empty() && http_routes.is_empty() && !names_namespaces {
                return self.invalid(
                    section.name.span(),
                    format!("plugin `{name}` handles no events and no routes: list them in `events` or `routes`, or its `namespaces` for a plugin that only sees connections"),
                );
            }
            let name_span = section.name.span();
            let mut spec = self.plugin(name, section, &mut claims)?;
            reserved_bytes = reserved_bytes.saturating_add(spec.limits.memory_bytes);
            if reserved_bytes > plugin_memory_bytes {
                return self.invalid(
                    name_span,
                    format!(
                        "plugin `{}`: the plugins' `limits.memory_mib` add up to {} MiB, over `[server] plugin_memory_mib` = {}; each plugin is guaranteed room for one instance, so raise `plugin_memory_mib` or lower their `memory_mib`",
                        spec.name,
                        reserved_bytes >> 20,
                        server.plugin_memory_mib
                    ),
                );
            }
            for route in http_routes {
                let route = self.route(route, &spec.name, &mut routes)?;
                self.check_route_auth(&route, auth.is_some(), api_token.is_some())?;
                spec.routes.push(route.into_inner());
            }
            plugins.push(spec);
        }
        let mut anonymous_namespaces = Vec::new();
        let mut event_rates = HashMap::new();
        for (namespace, settings) in file.namespaces {
            if !plugins
                .iter()
                .any(|plugin| plugin.namespaces.contains(&namespace))
            {
                return self.invalid(
                    settings.span(),
                    format!("`[namespaces.\"{namespace}\"]`: no plugin serves namespace `{namespace}`; add it to a plugin's `namespaces`"),
                );
            }
            let span = settings.span();
            let settings = settings.into_inner();
            let Some(rate) = EventRate::new(&settings) else {
                return self.invalid(
                    span,
                    format!("`[namespaces.\"{namespace}\"]`: `events_per_second`, `event_burst`, `plugin_ms_per_second`, `plugin_burst_ms`, `output_bytes_per_second` and `output_burst_bytes` must be at least 1"),
                );
            };
            event_rates.insert(namespace.clone(), rate);
            if settings.anonymous {
                anonymous_namespaces.push(namespace);
            }
        }

        let cluster = file
            .cluster
            .map(|cluster| self.cluster(cluster))
            .transpose()?;
        let recovery = self.recovery(&server.recovery)?;
        // A connection's packets are read at least as fast as any namespace
        // lets its events come, so the pace never slows what a namespace allows.
        if let Some(packets) = &mut connections.packets {
            for rate in event_rates.values() {
                packets.per_second = packets.per_second.max(rate.per_second);
                packets.burst = packets.burst.max(rate.burst);
            }
        }
        Ok(Manifest {
            path: self.path.to_owned(),
            cluster,
            api_token,
            metrics,
            auth,
            anonymous_namespaces,
            event_rates,
            server: ServerSettings {
                listen: server.listen,
                path: server.path.into_inner(),
                ping_interval: Duration::from_millis(server.ping_interval_ms),
                ping_timeout: Duration::from_millis(server.ping_timeout_ms),
                max_payload_bytes: server.max_payload_bytes,
                max_outbound_bytes: usize::try_from(server.max_outbound_bytes)
                    .unwrap_or(usize::MAX),
                min_write_interval: Duration::from_millis(server.min_write_interval_ms),
                static_dir: server.static_dir.map(|dir| self.base.join(dir)),
                cache_dir: server.cache_dir.map(|dir| self.base.join(dir)),
                allowed_origins,
                connections,
                max_queued_bytes_per_socket: bytes(server.max_queued_bytes_per_socket),
                max_auth_bytes: bytes(server.max_auth_bytes),
                max_rooms_per_socket: usize::try_from(server.max_rooms_per_socket)
                    .unwrap_or(usize::MAX),
                plugin_memory_bytes,
                threads,
                recovery,
            },
            plugins,
        })
    }

    fn recovery(
        &self,
        recovery: &schema::RecoverySection,
    ) -> Result<Option<RecoverySettings>, ManifestError> {
        if !recovery.enabled {
            return Ok(None);
        }
        for (value, name) in [
            (&recovery.max_disconnection_ms, "max_disconnection_ms"),
            (&recovery.max_events, "max_events"),
            (&recovery.max_waiting_sessions, "max_waiting_sessions"),
        ] {
            if *value.get_ref() == 0 {
                return self.invalid(
                    value.span(),
                    format!(
                        "`{name}` must be at least 1; set `enabled = false` to turn recovery off"
                    ),
                );
            }
        }
        Ok(Some(RecoverySettings {
            max_disconnection: Duration::from_millis(*recovery.max_disconnection_ms.get_ref()),
            max_events: *recovery.max_events.get_ref(),
            max_bytes: bytes(recovery.max_bytes),
            max_waiting_sessions: usize::try_from(*recovery.max_waiting_sessions.get_ref())
                .unwrap_or(usize::MAX),
        }))
    }

    /// `server.threads`, or every core the process may use.
    fn threads(&self, threads: Option<&Spanned<u64>>) -> Result<NonZeroUsize, ManifestError> {
        let Some(threads) = threads else {
            return Ok(std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN));
        };
        match usize::try_from(*threads.get_ref())
            .ok()
            .and_then(NonZeroUsize::new)
        {
            Some(threads) => Ok(threads),
            None => self.invalid(threads.span(), "`threads` must be at least 1".to_owned()),
        }
    }

    fn connection_limits(
        &self,
        server: &schema::ServerSection,
    ) -> Result<ConnectionLimits, ManifestError> {
        let positive = |value: &Spanned<u64>, name: &str| {
            if *value.get_ref() == 0 {
                self.invalid(value.span(), format!("`{name}` must be at least 1"))
            } else {
                Ok(*value.get_ref())
            }
        };
        let max_connections = positive(&server.max_connections, "max_connections")?;
        let header_read_timeout_ms =
            positive(&server.header_read_timeout_ms, "header_read_timeout_ms")?;
        let connect_timeout_ms = positive(&server.connect_timeout_ms, "connect_timeout_ms")?;
        let body_timeout_ms = positive(&server.body_timeout_ms, "body_timeout_ms")?;
        let max_header_bytes = &server.max_header_bytes;
        if *max_header_bytes.get_ref() < MIN_HEADER_BYTES {
            return self.invalid(
                max_header_bytes.span(),
                format!(
                    "`max_header_bytes` must be at least {MIN_HEADER_BYTES}: browsers send request heads up to that size"
                ),
            );
        }
        let idle_timeout_ms = match &server.idle_timeout_ms {
            None => DEFAULT_IDLE_TIMEOUT_MS.min(header_read_timeout_ms),
            Some(idle) if *idle.get_ref() > header_read_timeout_ms => {
                return self.invalid(
                    idle.span(),
                    format!(
                        "`idle_timeout_ms` ({}) is longer than `header_read_timeout_ms` ({header_read_timeout_ms}), \
                         which also bounds the wait for a connection's next request: lower it or raise `header_read_timeout_ms`",
                        idle.get_ref()
                    ),
                );
            }
            Some(idle) => positive(idle, "idle_timeout_ms")?,
        };
        let per_address = self.rate(
            server.connections_per_second_per_ip,
            &server.connection_burst_per_ip,
            ("connections_per_second_per_ip", "connection_burst_per_ip"),
        )?;
        let packets = self.rate(
            server.packets_per_second_per_connection,
            &server.packet_burst_per_connection,
            (
                "packets_per_second_per_connection",
                "packet_burst_per_connection",
            ),
        )?;
        let mut bytes = self.rate(
            server.bytes_per_second_per_connection,
            &server.byte_burst_per_connection,
            (
                "bytes_per_second_per_connection",
                "byte_burst_per_connection",
            ),
        )?;
        // The largest WebSocket message the transport reads passes in one burst.
        if let Some(bytes) = &mut bytes {
            let largest_message = transport_limit(server.max_payload_bytes);
            let floor = NonZeroU32::new(u32::try_from(largest_message).unwrap_or(u32::MAX));
            bytes.burst = bytes.burst.max(floor.unwrap_or(NonZeroU32::MIN));
        }
        Ok(ConnectionLimits {
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            per_address,
            packets,
            bytes,
            open_per_address: NonZeroUsize::new(
                usize::try_from(server.max_connections_per_ip).unwrap_or(usize::MAX),
            ),
            header_read_timeout: Duration::from_millis(header_read_timeout_ms),
            idle_timeout: Duration::from_millis(idle_timeout_ms),
            connect_timeout: Duration::from_millis(connect_timeout_ms),
            max_header_bytes: usize::try_from(*max_header_bytes.get_ref()).unwrap_or(usize::MAX),
            body_timeout: Duration::from_millis(body_timeout_ms),
            write_timeout: Duration::from_millis(server.write_timeout_ms),
        })
    }

    /// `per_second` with its `burst`; `None` when `per_second` is 0 (no
    /// limit). `names`: the two settings'.
    fn rate(
        &self,
        per_second: u32,
        burst: &Spanned<u32>,
        (rate_name, burst_name): (&str, &str),
    ) -> Result<Option<Rate>, ManifestError> {
        let Some(per_second) = NonZeroU32::new(per_second) else {
            return Ok(None);
        };
        let Some(burst) = NonZeroU32::new(*burst.get_ref()) else {
            return self.invalid(
                burst.span(),
                format!("`{burst_name}` must be at least 1; to turn the limit off, set `{rate_name} = 0`"),
            );
        };
        Ok(Some(Rate { per_second, burst }))
    }

    fn allowed_origins(
        &self,
        patterns: Option<Vec<Spanned<String>>>,
    ) -> Result<AllowedOrigins, ManifestError> {
        let Some(patterns) = patterns else {
            return Ok(AllowedOrigins::SameOrigin);
        };
        patterns
            .into_iter()
            .map(|pattern| {
                OriginPattern::parse(pattern.get_ref())
                    .or_else(|message| self.invalid(pattern.span(), message))
            })
            .collect::<Result<_, _>>()
            .map(AllowedOrigins::Listed)
    }

    fn metrics_access(
        &self,
        access: Option<Spanned<MetricsAccess>>,
        has_api_token: bool,
    ) -> Result<MetricsAccess, ManifestError> {
        match access {
            None if has_api_token => Ok(MetricsAccess::Token),
            None => Ok(MetricsAccess::Public),
            Some(access) if *access.get_ref() == MetricsAccess::Token && !has_api_token => self
                .invalid(
                    access.span(),
                    "`metrics = \"token\"` needs the API token: set `[api] token` or SWITCHBOARD_API_TOKEN, or write `metrics = \"public\"`".to_owned(),
                ),
            Some(access) => Ok(access.into_inner()),
        }
    }

    fn cluster(&self, cluster: schema::ClusterSection) -> Result<ClusterSettings, ManifestError> {
        let (url, span) = match (&self.overrides.redis_url, &cluster.redis_url) {
            (Some(url), _) => (url.expose(), 0..0),
            (None, Some(url)) => (url.get_ref().expose(), url.span()),
            (None, None) => {
                return self.invalid(
                    0..0,
                    format!("`[cluster]` needs `redis_url`, or set {REDIS_URL_VARIABLE}"),
                );
            }
        };
        let redis_url =
            RedisUrl::parse(url).or_else(|message| self.invalid(span.clone(), message))?;
        if cluster.ca_file.is_some() && !redis_url.is_tls() {
            return self.invalid(
                span,
                format!("`ca_file` is set but {redis_url} does not use TLS; write rediss://"),
            );
        }
        Ok(ClusterSettings {
            redis_url,
            prefix: cluster.prefix,
            request_timeout: Duration::from_millis(cluster.request_timeout_ms),
            fallback: cluster.fallback,
            ca_file: cluster.ca_file.map(|file| self.base.join(file)),
        })
    }

    fn auth(&self, auth: AuthSection) -> Result<AuthSettings, ManifestError> {
        // Where the key was given, for errors about it: a place in the
        // manifest, or the environment variable that overrode it.
        let mut key_span = auth.public_key_file.as_ref().map_or(0..0, Spanned::span);
        let mut key_variable = None;
        let key = match auth.algorithm {
            JwtAlgorithm::Hs256 => {
                if auth.public_key_file.is_some() {
                    return self.invalid(
                        key_span,
                        "`public_key_file` is for RS256 and ES256; HS256 uses `secret`".to_owned(),
                    );
                }
                match (&self.overrides.jwt_secret, auth.secret) {
                    (Some(secret), _) => {
                        key_variable = Some(JWT_SECRET_VARIABLE);
                        JwtKey::Secret(secret.clone())
                    }
                    (None, Some(secret)) => {
                        key_span = secret.span();
                        JwtKey::Secret(secret.into_inner())
                    }
                    (None, None) => {
                        return self.invalid(
                            0..0,
                            format!(
                                "`[auth]` with HS256 needs `secret`, or set {JWT_SECRET_VARIABLE}"
                            ),
                        );
                    }
                }
            }
            JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 => {
                if auth.secret.is_some() {
                    return self.invalid(
                        0..0,
                        "`secret` is for HS256; RS256 and ES256 verify with `public_key_file`"
                            .to_owned(),
                    );
                }
                let pem = match (&self.overrides.jwt_public_key, &auth.public_key_file) {
                    (Some(pem), _) => {
                        key_variable = Some(JWT_PUBLIC_KEY_VARIABLE);
                        pem.clone()
                    }
                    (None, Some(file)) => {
                        let path = self.base.join(file.get_ref());
                        std::fs::read_to_string(&path).or_else(|error| {
                            self.invalid(
                                key_span.clone(),
                                format!("cannot read the public key {}: {error}", path.display()),
                            )
                        })?
                    }
                    (None, None) => {
                        return self.invalid(
                            0..0,
                            format!("`[auth]` with RS256 or ES256 needs `public_key_file`, or set {JWT_PUBLIC_KEY_VARIABLE}"),
                        );
                    }
                };
                JwtKey::PublicKeyPem(pem)
            }
        };
        let settings = AuthSettings {
            algorithm: auth.algorithm,
            key,
            clock_skew: auth
                .clock_skew_s
                .map_or(crate::identity::DEFAULT_CLOCK_SKEW, Duration::from_secs),
            issuer: auth.issuer,
            audience: auth.audience,
        };
        if let Err(error) = crate::identity::Verifier::new(&settings) {
            let message = match key_variable {
                Some(variable) => format!("{variable}: {error}"),
                None => error.to_string(),
            };
            return self.invalid(key_span, message);
        }
        Ok(settings)
    }

    fn route(
        &self,
        route: RouteSection,
        plugin: &PluginName,
        table: &mut RouteTable,
    ) -> Result<Spanned<HttpRoute>, ManifestError> {
        let method = route.method.get_ref().to_ascii_uppercase();
        if !ROUTE_METHODS.contains(&method.as_str()) {
            return self.invalid(
                route.method.span(),
                format!(
                    "unsupported method `{}`; use one of {}",
                    route.method.get_ref(),
                    ROUTE_METHODS.join(", ")
                ),
            );
        }
        let path = route.path.get_ref();
        let span = route.path.span();
        if !path.starts_with('/') {
            return self.invalid(span, format!("route path `{path}` must start with `/`"));
        }
        if let Some(host_path) = HOST_PATHS
            .iter()
            .find(|reserved| path.starts_with(**reserved))
        {
            return self.invalid(
                span,
                format!("route path `{path}` is under `{host_path}`, which the host serves itself"),
            );
        }
        let line = self.location(span.clone()).line;
        if let Err(conflict) = table.insert(&method, path, plugin, line) {
            return self.invalid(span, conflict);
        }
        Ok(Spanned::new(
            span,
            HttpRoute {
                method,
                path: path.clone(),
                auth: route.auth,
            },
        ))
    }

    fn check_route_auth(
        &self,
        route: &Spanned<HttpRoute>,
        has_auth: bool,
        has_api_token: bool,
    ) -> Result<(), ManifestError> {
        let missing = match route.get_ref().auth {
            RouteAuth::User if !has_auth => {
                "needs `[auth]` to verify user tokens; add it, or set `auth = \"api-token\"` or `\"none\"` on the route"
            }
            RouteAuth::ApiToken if !has_api_token => {
                "needs the API token: set `[api] token` or SWITCHBOARD_API_TOKEN"
            }
            _ => return Ok(()),
        };
        let HttpRoute { method, path, .. } = route.get_ref();
        self.invalid(route.span(), format!("route `{method} {path}` {missing}"))
    }

    fn plugin_name(&self, name: &Spanned<String>) -> Result<PluginName, ManifestError> {
        PluginName::parse(name.get_ref()).or_else(|message| self.invalid(name.span(), message))
    }

    fn plugin(
        &self,
        name: PluginName,
        section: PluginSection,
        claims: &mut HashMap<(String, String), (String, usize)>,
    ) -> Result<PluginSpec, ManifestError> {
        let mut namespaces = Vec::with_capacity(section.namespaces.len());
        for namespace in &section.namespaces {
            if !namespace.get_ref().starts_with('/') {
                return self.invalid(
                    namespace.span(),
                    format!(
                        "namespace `{}` must start with `/`, e.g. `/{}`",
                        namespace.get_ref(),
                        namespace.get_ref()
                    ),
                );
            }
            namespaces.push(namespace.get_ref().clone());
        }
        let mut events = Vec::with_capacity(section.events.len());
        for event in &section.events {
            let event_name = event.get_ref();
            if event_name.is_empty() || is_reserved_event(event_name) {
                return self.invalid(
                    event.span(),
                    format!("`{event_name}` cannot be handled by a plugin: it is empty or reserved by Socket.IO"),
                );
            }
            let line = self.location(event.span()).line;
            for namespace in &namespaces {
                let key = (namespace.clone(), event_name.clone());
                if let Some((owner, owner_line)) = claims.get(&key) {
                    return self.invalid(
                        event.span(),
                        format!(
                            "event `{event_name}` in namespace `{namespace}` is already handled by plugin `{owner}` (line {owner_line}); an event has one handler per namespace"
                        ),
                    );
                }
                claims.insert(key, (name.to_string(), line));
            }
            events.push(event_name.clone());
        }
        let limits = section.limits;
        if limits.time_ms == 0
            || limits.memory_mib == 0
            || limits.concurrency == 0
            || limits.max_state_value_bytes == 0
            || limits.max_state_keys == 0
            || limits.max_state_list_items == 0
            || limits.max_pending_acks == 0
            || limits.memory_growth_mib_per_second == 0
            || limits.log_lines_per_second == 0
            || limits.max_timers == 0
            || limits.route_request_burst == 0
            || limits.route_plugin_burst_ms == 0
        {
            return self.invalid(
                section.name.span(),
                format!(
                    "plugin `{name}`: every `limits` value must be at least 1 (but `route_requests_per_second` and `route_plugin_ms_per_second`, which may be 0 for no limit)"
                ),
            );
        }
        let config = serde_json::to_value(&section.config)
            .ok()
            .and_then(|value| value.as_object().cloned())
            .unwrap_or_default();
        Ok(PluginSpec {
            location: self.location(section.path.span()),
            wasm: self.base.join(section.path.get_ref()),
            name,
            namespaces,
            events,
            routes: Vec::new(),
            limits: Limits {
                time: Duration::from_millis(limits.time_ms),
                memory_bytes: mib_to_bytes(limits.memory_mib),
                max_state_value_bytes: bytes(limits.max_state_value_bytes),
                max_state_keys: limits.max_state_keys,
                max_state_list_items: limits.max_state_list_items,
                concurrency: usize::try_from(limits.concurrency).unwrap_or(usize::MAX),
                queue: Duration::from_millis(limits.queue_ms),
                max_pending_acks: usize::try_from(limits.max_pending_acks).unwrap_or(usize::MAX),
                memory_growth_pages: NonZeroU32::new(
                    limits
                        .memory_growth_mib_per_second
                        .saturating_mul(PAGES_PER_MIB),
                )
                .unwrap_or(NonZeroU32::MAX),
                log_lines_per_second: NonZeroU32::new(limits.log_lines_per_second)
                    .unwrap_or(NonZeroU32::MIN),
                max_timers: limits.max_timers,
                route_rate: RouteRate {
                    requests_per_second: limits.route_requests_per_second,
                    request_burst: NonZeroU32::new(limits.route_request_burst)
                        .unwrap_or(NonZeroU32::MIN),
                    plugin_ms_per_second: limits.route_plugin_ms_per_second,
                    plugin_burst_ms: NonZeroU32::new(limits.route_plugin_burst_ms)
                        .unwrap_or(NonZeroU32::MIN),
                },
            },
            instances: section.instances,
            config,
        })
    }
}

/// A size from the manifest in memory: one too large for this machine is no limit.
fn bytes(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

fn mib_to_bytes(mib: u64) -> usize {
    bytes(mib.saturating_mul(1 << 20))
}

/// The routes of every plugin, to find two that would catch the same request.
#[derive(Default)]
struct RouteTable {
    /// Per method, a router of paths to the plugin and line that declared them.
    methods: HashMap<String, matchit::Router<(String, usize)>>,
}

impl RouteTable {
    fn insert(
        &mut self,
        method: &str,
        path: &str,
        plugin: &PluginName,
        line: usize,
    ) -> Result<(), String> {
        let router = self.methods.entry(method.to_owned()).or_default();
        router
            .insert(path, (plugin.to_string(), line))
            .map_err(|error| {
                let earlier = router
                    .at(path)
                    .map(|found| format!(" (plugin `{}`, line {})", found.value.0, found.value.1))
                    .unwrap_or_default();
                format!("route `{method} {path}` conflicts with an earlier route{earlier}: {error}")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(source: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(Path::new("/srv/switchboard.toml"), source)
    }

    /// `source` with `variables` as the process environment.
    fn parse_in(source: &str, variables: &[(&str, &str)]) -> Result<Manifest, ManifestError> {
        let lookup = |name: &str| {
            variables
                .iter()
                .find(|(variable, _)| *variable == name)
                .map(|(_, value)| (*value).to_owned())
        };
        Manifest::parse_with(
            Path::new("/srv/switchboard.toml"),
            source,
            &Overrides::default(),
            Environment::new(lookup),
        )
    }

    #[test]
    fn the_environment_gives_settings_over_the_file() {
        let source = format!(
            "{CHAT}\n[server]\nmax_connections = 50\n[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\n"
        );
        let manifest = parse_in(
            &source,
            &[
                ("SWITCHBOARD_SERVER_MAX_CONNECTIONS", "7"),
                ("SWITCHBOARD_SERVER_LISTEN", "0.0.0.0:4000"),
                (
                    "SWITCHBOARD_SERVER_ALLOWED_ORIGINS",
                    r#"["https://app.example.com"]"#,
                ),
                ("SWITCHBOARD_SERVER_RECOVERY_ENABLED", "false"),
                ("SWITCHBOARD_CLUSTER_FALLBACK", "local"),
                ("SWITCHBOARD_CLUSTER_PREFIX", "staging"),
            ],
        )
        .expect("valid settings");
        assert_eq!(manifest.server.connections.max_connections, 7);
        assert_eq!(
            manifest.server.listen,
            "0.0.0.0:4000".parse().expect("address")
        );
        assert!(
            manifest
                .server
                .allowed_origins
                .allows("https://app.example.com", None)
        );
        assert_eq!(manifest.server.recovery, None);
        let cluster = manifest.cluster.expect("a cluster");
        assert_eq!(cluster.fallback, Fallback::Local);
        assert_eq!(cluster.prefix, "staging");
    }

    #[test]
    fn a_bad_value_in_the_environment_names_its_variable() {
        let unreadable = parse_in(CHAT, &[("SWITCHBOARD_SERVER_MAX_CONNECTIONS", "lots")])
            .expect_err("not a number");
        assert!(
            unreadable
                .to_string()
                .starts_with("SWITCHBOARD_SERVER_MAX_CONNECTIONS: "),
            "{unreadable}"
        );
        let invalid = parse_in(CHAT, &[("SWITCHBOARD_SERVER_MAX_CONNECTIONS", "0")])
            .expect_err("zero connections");
        assert_eq!(
            invalid.to_string(),
            "SWITCHBOARD_SERVER_MAX_CONNECTIONS (for /srv/switchboard.toml): `max_connections` must be at least 1"
        );
    }

    #[test]
    fn a_node_uses_every_core_unless_told_how_many() {
        let every = std::thread::available_parallelism().expect("the machine's cores");
        assert_eq!(parse(CHAT).expect("valid").server.threads, every);
        let told = parse(&format!("{CHAT}\n[server]\nthreads = 3\n")).expect("valid");
        assert_eq!(told.server.threads.get(), 3);
        let overridden = parse_in(CHAT, &[("SWITCHBOARD_SERVER_THREADS", "1")]).expect("valid");
        assert_eq!(overridden.server.threads.get(), 1);
        let none = parse(&format!("{CHAT}\n[server]\nthreads = 0\n")).expect_err("no thread");
        assert!(
            none.to_string()
                .ends_with(":12:11: `threads` must be at least 1"),
            "{none}"
        );
    }

    const CHAT: &str = r#"
version = 1

[[plugins]]
name = "chat"
path = "chat.wasm"
events = ["join", "send_message"]
[plugins.config]
history_size = 20
"#;

    #[test]
    fn reads_a_valid_manifest_with_defaults() {
        let manifest = parse(CHAT).expect("valid manifest");
        assert_eq!(manifest.server.path, "/socket.io");
        assert_eq!(manifest.server.listen.port(), 3000);
        let chat = &manifest.plugins[0];
        assert_eq!(chat.name.as_str(), "chat");
        assert_eq!(chat.wasm, Path::new("/srv/chat.wasm"));
        assert_eq!(chat.namespaces, ["/"]);
        assert_eq!(chat.limits.time, Duration::from_secs(1));
        assert_eq!(chat.limits.concurrency, 64);
        assert_eq!(chat.limits.memory_growth_pages.get(), 256 * PAGES_PER_MIB);
        assert_eq!(chat.limits.queue, Duration::from_millis(100));
        assert_eq!(manifest.server.plugin_memory_bytes, 1024 << 20);
        assert_eq!(chat.config["history_size"], 20);
        assert_eq!(chat.location.line, 6);
    }

    #[test]
    fn abuse_limits_have_defaults_and_can_be_set() {
        let defaults = parse(CHAT).expect("valid manifest");
        assert_eq!(defaults.server.max_queued_bytes_per_socket, 4 << 20);
        assert_eq!(defaults.server.max_auth_bytes, 8 << 10);
        assert_eq!(defaults.server.max_rooms_per_socket, 128);
        assert_eq!(defaults.plugins[0].limits.max_state_value_bytes, 64 << 10);
        assert_eq!(defaults.plugins[0].limits.max_state_keys, 100_000);
        assert_eq!(defaults.plugins[0].limits.log_lines_per_second.get(), 1_000);
        assert_eq!(defaults.plugins[0].limits.max_timers, 100_000);
        assert_eq!(defaults.event_rate("/"), EventRate::default());
        assert_eq!(EventRate::default().per_second.get(), 100);
        let set = parse(
            r#"
version = 1
[server]
max_auth_bytes = 100
max_rooms_per_socket = 3
[[plugins]]
name = "chat"
path = "chat.wasm"
events = ["join"]
[plugins.limits]
max_state_keys = 7
[namespaces."/"]
events_per_second = 5
event_burst = 9
"#,
        )
        .expect("valid manifest");
        assert_eq!(set.server.max_auth_bytes, 100);
        assert_eq!(set.server.max_rooms_per_socket, 3);
        assert_eq!(set.plugins[0].limits.max_state_keys, 7);
        assert_eq!(set.event_rate("/").per_second.get(), 5);
        assert_eq!(set.event_rate("/").burst.get(), 9);
        let zero = format!("{CHAT}\n[namespaces.\"/\"]\nevent_burst = 0\n");
        let error = parse(&zero).unwrap_err().to_string();
        assert!(error.contains("must be at least 1"), "{error}");
    }

    #[test]
    fn a_connection_s_packets_are_read_at_least_as_fast_as_a_namespace_allows_events() {
        let packets = |manifest: &str| {
            let pace = parse(manifest)
                .expect("valid manifest")
                .server
                .connections
                .packets;
            pace.map(|rate| (rate.per_second.get(), rate.burst.get()))
        };
        assert_eq!(packets(CHAT), Some((1_000, 2_000)));
        let fast =
            format!("{CHAT}\n[namespaces.\"/\"]\nevents_per_second = 5000\nevent_burst = 9\n");
        assert_eq!(packets(&fast), Some((5_000, 2_000)));
        let unpaced = CHAT.replace(
            "version = 1\n",
            "version = 1\n[server]\npackets_per_second_per_connection = 0\n",
        );
        assert_eq!(packets(&unpaced), None);
    }

    #[test]
    fn a_connection_s_byte_burst_holds_the_largest_message_read() {
        let bytes = |settings: &str| {
            let manifest = CHAT.replace(
                "version = 1\n",
                &format!("version = 1\n[server]\n{settings}"),
            );
            let pace = parse(&manifest)
                .expect("valid manifest")
                .server
                .connections
                .bytes;
            pace.map(|rate| (rate.per_second.get(), rate.burst.get()))
        };
        assert_eq!(bytes(""), Some((1 << 20, 4 << 20)));
        assert_eq!(
            bytes("max_payload_bytes = 3000000\nmax_outbound_bytes = 8000000\n"),
            Some((1 << 20, 6_000_000))
        );
        assert_eq!(bytes("bytes_per_second_per_connection = 0\n"), None);
    }

    #[test]
    fn writes_are_unpaced_unless_a_bounded_interval_is_set() {
        let defaults = parse(CHAT).expect("valid manifest");
        assert_eq!(defaults.server.min_write_interval, Duration::ZERO);
        let set = parse_in(CHAT, &[("SWITCHBOARD_SERVER_MIN_WRITE_INTERVAL_MS", "25")])
            .expect("valid setting");
        assert_eq!(set.server.min_write_interval, Duration::from_millis(25));
        let error = parse(&format!("{CHAT}\n[server]\nmin_write_interval_ms = 1001\n"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`min_write_interval_ms` (1001) must be at most 1000"),
            "{error}"
        );
        let error = parse(&format!(
            "{CHAT}\n[server]\nmin_write_interval_ms = 500\nping_timeout_ms = 500\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("must be below `ping_timeout_ms` (500)"),
            "{error}"
        );
    }

    #[test]
    fn unknown_field_names_line_and_column() {
        let error = parse("version = 1\n[server]\ncolour = \"red\"\n").unwrap_err();
        let location = error.location().expect("has a location");
        assert_eq!((location.line, location.column), (3, 1));
        assert!(
            error.to_string().contains("unknown field `colour`"),
            "{error}"
        );
        assert!(
            error.to_string().starts_with("/srv/switchboard.toml:3:1: "),
            "{error}"
        );
    }

    #[test]
    fn event_claimed_twice_points_at_second_claim() {
        let source = format!(
            "{CHAT}\n[[plugins]]\nname = \"other\"\npath = \"o.wasm\"\nevents = [\"join\"]\n"
        );
        let error = parse(&source).unwrap_err();
        assert_eq!(error.location().map(|l| l.line), Some(14));
        assert!(
            error
                .to_string()
                .contains("already handled by plugin `chat` (line 7)"),
            "{error}"
        );
    }

    #[test]
    fn rejects_wrong_version_bad_names_and_reserved_events() {
        let cases = [
            ("version = 2\n", "unsupported manifest version 2"),
            (
                "version = 1\n[[plugins]]\nname = \"Chat\"\npath = \"c.wasm\"\nevents = [\"a\"]\n",
                "invalid plugin name `Chat`",
            ),
            (
                "version = 1\n[[plugins]]\nname = \"c\"\npath = \"c.wasm\"\nevents = [\"disconnect\"]\n",
                "reserved by Socket.IO",
            ),
            (
                "version = 1\n[[plugins]]\nname = \"c\"\npath = \"c.wasm\"\nnamespaces = [\"chat\"]\nevents = [\"a\"]\n",
                "must start with `/`",
            ),
            (
                "version = 1\n[[plugins]]\nname = \"c\"\n",
                "missing field `path`",
            ),
        ];
        for (source, expected) in cases {
            let error = parse(source).unwrap_err().to_string();
            assert!(error.contains(expected), "{source:?} gave {error}");
        }
    }

    #[test]
    fn plugins_must_fit_the_plugin_memory_budget_one_instance_each() {
        let plugin = |name: &str, memory_mib: u64| {
            format!(
                "[[plugins]]\nname = \"{name}\"\npath = \"{name}.wasm\"\nevents = [\"{name}\"]\n[plugins.limits]\nmemory_mib = {memory_mib}\nconcurrency = 8\nqueue_ms = 250\n"
            )
        };
        let server = "version = 1\n[server]\nplugin_memory_mib = 100\n";
        let fits = parse(&format!("{server}{}{}", plugin("a", 60), plugin("b", 40))).unwrap();
        assert_eq!(fits.server.plugin_memory_bytes, 100 << 20);
        assert_eq!(fits.plugins[0].limits.concurrency, 8);
        assert_eq!(fits.plugins[0].limits.queue, Duration::from_millis(250));

        let error = parse(&format!("{server}{}{}", plugin("a", 60), plugin("b", 41))).unwrap_err();
        assert_eq!(error.location().map(|l| l.line), Some(13));
        assert!(
            error
                .to_string()
                .contains("add up to 101 MiB, over `[server] plugin_memory_mib` = 100"),
            "{error}"
        );
    }

    #[test]
    fn rejects_a_concurrency_of_zero() {
        let source = "version = 1\n[[plugins]]\nname = \"c\"\npath = \"c.wasm\"\nevents = [\"a\"]\n[plugins.limits]\nconcurrency = 0\n";
        let error = parse(source).unwrap_err().to_string();
        assert!(
            error.contains("plugin `c`: every `limits` value must be at least 1"),
            "{error}"
        );
    }

    #[test]
    fn cluster_url_comes_from_the_environment_first() {
        let source = "version = 1\n[cluster]\nredis_url = \"redis://:pw@file:1\"\n";
        let from_file = parse(source).unwrap().cluster.unwrap();
        assert_eq!(from_file.redis_url.expose(), "redis://:pw@file:1");
        assert_eq!(from_file.prefix, "switchboard");
        let overrides = Overrides {
            redis_url: Some(Secret::new("redis://env:2".to_owned())),
            api_token: Some(Secret::new("t".to_owned())),
            ..Overrides::default()
        };
        let manifest = Manifest::parse_with(
            Path::new("/m.toml"),
            source,
            &overrides,
            Environment::empty(),
        )
        .unwrap();
        assert_eq!(
            manifest.cluster.unwrap().redis_url.expose(),
            "redis://env:2"
        );
        assert_eq!(manifest.api_token.as_ref().map(Secret::expose), Some("t"));
        let without_table = Manifest::parse_with(
            Path::new("/m.toml"),
            "version = 1\n",
            &overrides,
            Environment::empty(),
        )
        .unwrap();
        let cluster = without_table
            .cluster
            .expect("the environment's URL alone joins a cluster");
        assert_eq!(cluster.redis_url.expose(), "redis://env:2");
        assert_eq!(cluster.prefix, "switchboard");
        assert!(parse("version = 1\n").unwrap().cluster.is_none());
        let error = parse("version = 1\n[cluster]\nredis_url = \"http://:pw@x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(":3:13: ") && !error.contains("pw"),
            "{error}"
        );
    }

    const ROUTED: &str = "version = 1\n[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\nroutes = [{ method = \"POST\", path = \"/apps/a/{id}\", auth = \"none\" }]\n";

    #[test]
    fn auth_sections_need_usable_keys() {
        let cases = [
            ("[auth]\n", "needs `secret`, or set SWITCHBOARD_JWT_SECRET"),
            (
                "[auth]\nalgorithm = \"RS256\"\n",
                "needs `public_key_file`, or set SWITCHBOARD_JWT_PUBLIC_KEY",
            ),
            (
                "[auth]\nalgorithm = \"ES256\"\npublic_key_file = \"missing.pem\"\n",
                "cannot read the public key /srv/missing.pem",
            ),
            (
                "[auth]\nalgorithm = \"RS256\"\nsecret = \"s\"\n",
                "`secret` is for HS256",
            ),
            ("[auth]\nalgorithm = \"none\"\n", "unknown variant `none`"),
        ];
        for (auth, expected) in cases {
            let error = parse(&format!("{CHAT}{auth}")).unwrap_err().to_string();
            assert!(error.contains(expected), "{auth:?} gave {error}");
        }
        let overrides = Overrides {
            jwt_public_key: Some("not a pem".to_owned()),
            ..Overrides::default()
        };
        let source = format!("{CHAT}[auth]\nalgorithm = \"RS256\"\n");
        let error = Manifest::parse_with(
            Path::new("/m.toml"),
            &source,
            &overrides,
            Environment::empty(),
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("cannot read the RS256 public key"),
            "{error}"
        );
        let secret = parse(&format!(
            "{CHAT}[auth]\nsecret = \"hunter2-hunter2-hunter2-hunter2!\"\n"
        ))
        .unwrap();
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let source = format!(
            "{CHAT}[api]\ntoken = \"api-s3cret\"\n[auth]\nsecret = \"jwt-s3cret-jwt-s3cret-jwt-s3cret!\"\n\
             [cluster]\nredis_url = \"rediss://app:redis-s3cret@cache:6380\"\n"
        );
        let manifest = parse(&source).unwrap();
        let shown = format!("{manifest:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        let schema: ManifestFile = toml::from_str(&source).unwrap();
        let shown = format!("{schema:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        for wrong_type in ["[api]\ntoken = 73105", "[auth]\nsecret = 73105.5"] {
            let error = parse(&format!("{CHAT}{wrong_type}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("expected a string") && !error.contains("73105"),
                "{error}"
            );
        }
    }

    #[test]
    fn hs256_secrets_shorter_than_32_bytes_are_refused_wherever_they_come_from() {
        let lines = CHAT.lines().count();
        let error = parse(&format!(
            "{CHAT}[auth]\nsecret = \"only-31-bytes-long-not-enough!!\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(&format!(":{}:10: the HS256 secret is 31 bytes long; it needs at least 32 bytes: make one with `openssl rand -base64 32`", lines + 2)),
            "{error}"
        );
        assert!(!error.contains("only-31"), "{error}");
        let overrides = Overrides {
            jwt_secret: Some(Secret::new("short".to_owned())),
            ..Overrides::default()
        };
        let long_in_file = format!("{CHAT}[auth]\nsecret = \"{}\"\n", "s".repeat(32));
        let error = Manifest::parse_with(
            Path::new("/m.toml"),
            &long_in_file,
            &overrides,
            Environment::empty(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("SWITCHBOARD_JWT_SECRET: the HS256 secret is 5 bytes long"),
            "{error}"
        );
        assert!(parse(&long_in_file).is_ok());
    }

    #[test]
    fn routes_are_checked_against_each_other_and_the_host() {
        let routed = parse(ROUTED).unwrap();
        assert_eq!(routed.plugins[0].routes[0].path, "/apps/a/{id}");
        let cases = [
            (
                format!(
                    "{ROUTED}[[plugins]]\nname = \"b\"\npath = \"b.wasm\"\nroutes = [{{ method = \"post\", path = \"/apps/a/{{name}}\", auth = \"none\" }}]\n"
                ),
                "conflicts with an earlier route (plugin `a`, line 5)",
            ),
            (
                ROUTED.replace("/apps/a/{id}", "/api/v1/mine"),
                "which the host serves itself",
            ),
            (
                ROUTED.replace("\"POST\"", "\"FETCH\""),
                "unsupported method `FETCH`",
            ),
            (ROUTED.replace(", auth = \"none\"", ""), "needs `[auth]`"),
            (
                ROUTED.replace("\"none\"", "\"api-token\""),
                "needs the API token",
            ),
            (
                format!("{ROUTED}[namespaces.\"/elsewhere\"]\nanonymous = true\n"),
                "no plugin serves namespace `/elsewhere`",
            ),
        ];
        for (source, expected) in cases {
            let error = parse(&source).unwrap_err().to_string();
            assert!(error.contains(expected), "{source:?} gave {error}");
        }
        let same_path_other_method = format!(
            "{ROUTED}[[plugins]]\nname = \"b\"\npath = \"b.wasm\"\nroutes = [{{ method = \"GET\", path = \"/apps/a/{{id}}\", auth = \"none\" }}]\n"
        );
        assert!(parse(&same_path_other_method).is_ok());
    }

    #[test]
    fn allowed_origins_are_checked_where_written() {
        assert_eq!(
            parse(CHAT).unwrap().server.allowed_origins,
            AllowedOrigins::SameOrigin
        );
        let listed = parse("version = 1\n[server]\nallowed_origins = [\"http://localhost:3000\", \"https://*.example.com\"]\n")
            .unwrap()
            .server
            .allowed_origins;
        assert!(listed.allows("https://a.example.com", None));
        assert!(!listed.allows("https://example.com", None));
        let error = parse("version = 1\n[server]\nallowed_origins = [\"http://localhost:3000\", \"example.com\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("/srv/switchboard.toml:3:45: `example.com`: no scheme"),
            "{error}"
        );
    }

    #[test]
    fn metrics_default_to_the_token_when_there_is_one() {
        let access = |api: &str| parse(&format!("version = 1\n[api]\n{api}")).map(|m| m.metrics);
        assert_eq!(access("").unwrap(), MetricsAccess::Public);
        assert_eq!(access("token = \"t\"\n").unwrap(), MetricsAccess::Token);
        assert_eq!(
            access("token = \"t\"\nmetrics = \"public\"\n").unwrap(),
            MetricsAccess::Public
        );
        let error = access("metrics = \"token\"\n").unwrap_err().to_string();
        assert!(
            error.starts_with(
                "/srv/switchboard.toml:3:11: `metrics = \"token\"` needs the API token"
            ),
            "{error}"
        );
        let error = access("metrics = \"open\"\n").unwrap_err().to_string();
        assert!(error.contains("unknown variant `open`"), "{error}");
    }

    #[test]
    fn connection_limits_default_and_validate() {
        let limits = parse(CHAT).unwrap().server.connections;
        assert_eq!(limits.max_connections, 10_000);
        assert_eq!(limits.idle_timeout, Duration::from_secs(5));
        assert_eq!(limits.connect_timeout, Duration::from_secs(45));
        assert_eq!(limits.max_header_bytes, 16_384);
        assert_eq!(limits.body_timeout, Duration::from_secs(45));
        let rate = limits.per_address.expect("on by default");
        assert_eq!((rate.per_second.get(), rate.burst.get()), (100, 500));

        let server = |settings: &str| parse(&format!("version = 1\n[server]\n{settings}"));
        let limits = server("header_read_timeout_ms = 2000\nconnections_per_second_per_ip = 0\n")
            .unwrap()
            .server
            .connections;
        assert_eq!(
            limits.idle_timeout,
            Duration::from_secs(2),
            "at most the header timeout"
        );
        assert_eq!(limits.per_address, None);

        let error = server("header_read_timeout_ms = 2000\nidle_timeout_ms = 3000\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("/srv/switchboard.toml:4:19: `idle_timeout_ms` (3000) is longer than `header_read_timeout_ms` (2000)"),
            "{error}"
        );
        for (burst, rate) in [
            ("connection_burst_per_ip", "connections_per_second_per_ip"),
            (
                "packet_burst_per_connection",
                "packets_per_second_per_connection",
            ),
            (
                "byte_burst_per_connection",
                "bytes_per_second_per_connection",
            ),
        ] {
            let error = server(&format!("{burst} = 0\n")).unwrap_err().to_string();
            assert!(
                error.ends_with(&format!(
                    "`{burst}` must be at least 1; to turn the limit off, set `{rate} = 0`"
                )),
                "{error}"
            );
        }
        let error = server("max_connections = 0\n").unwrap_err().to_string();
        assert!(
            error.contains("`max_connections` must be at least 1"),
            "{error}"
        );
        let error = server("max_header_bytes = 4096\n").unwrap_err().to_string();
        assert!(
            error.starts_with(
                "/srv/switchboard.toml:3:20: `max_header_bytes` must be at least 8192"
            ),
            "{error}"
        );
    }

    #[test]
    fn location_counts_lines_and_columns() {
        let location = Location::at(Path::new("m.toml"), "ab\ncdé\nx", 7);
        assert_eq!((location.line, location.column), (2, 4));
    }
}
