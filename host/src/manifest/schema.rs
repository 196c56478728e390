//! The manifest as written in TOML. Every table denies unknown fields so a typo
//! is an error, not a silently ignored setting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::Secret;

/// The whole manifest file.
///
/// ```toml
/// version = 1
///
/// [server]
/// listen = "127.0.0.1:3000"
///
/// [[plugins]]
/// name = "chat"
/// path = "chat.wasm"
/// namespaces = ["/"]
/// events = ["join", "send_message"]
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Format version of this file; this release reads `1`.
    pub version: Spanned<u32>,
    /// Listener and Socket.IO settings.
    #[serde(default)]
    pub server: ServerSection,
    /// Run as one node of a cluster that shares Redis; absent: one node in memory.
    pub cluster: Option<ClusterSection>,
    /// The HTTP API (`/api/v1/...`).
    #[serde(default)]
    pub api: ApiSection,
    /// Verify who connects with JSON Web Tokens; absent: nobody is verified.
    pub auth: Option<AuthSection>,
    /// Settings per namespace: `[namespaces."/lobby"]`.
    #[serde(default)]
    pub namespaces: BTreeMap<String, Spanned<NamespaceSection>>,
    /// One entry per plugin: `[[plugins]]`.
    #[serde(default)]
    pub plugins: Vec<PluginSection>,
}

/// `[server]`: where and how Socket.IO is served.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address to listen on, e.g. `"0.0.0.0:3000"`. `--listen` overrides it.
    pub listen: SocketAddr,
    /// Socket.IO request path, the client's `path` option: `"/socket.io"`.
    pub path: Spanned<String>,
    /// Engine.IO ping interval in milliseconds: `25000`.
    pub ping_interval_ms: u64,
    /// How long to wait for a pong before closing, in milliseconds: `20000`.
    pub ping_timeout_ms: u64,
    /// Largest event payload a plugin is given, in bytes: `1000000`. A larger
    /// event gets a `payload_too_large` error; a transport frame over twice
    /// this size closes that connection.
    pub max_payload_bytes: u64,
    /// Most bytes of events waiting to be written to one client: `4194304`.
    /// A client that stops reading, or reads slower than it is sent to, is
    /// disconnected once this much waits for it, rather than left connected
    /// while it misses events.
    pub max_outbound_bytes: u64,
    /// Longest a write to a client may wait for it to read, in milliseconds:
    /// `10000`. A WebSocket client that takes longer is disconnected as
    /// slow; an HTTP response's connection is closed.
    pub write_timeout_ms: u64,
    /// Least time between two writes of events to one WebSocket client, in
    /// milliseconds: `0`. Events due sooner wait and go out together in the
    /// next write: fewer system calls under heavy fanout, for up to this much
    /// latency on a client sent events more often than this. Acks do not
    /// start a wait. At most `1000`, and below `ping_timeout_ms`.
    pub min_write_interval_ms: u64,
    /// Directory of static files served at `/`, e.g. `"public"`.
    pub static_dir: Option<PathBuf>,
    /// Where precompiled plugin code is cached. Defaults to
    /// `$XDG_CACHE_HOME/switchboard` (or `~/.cache/switchboard`).
    pub cache_dir: Option<PathBuf>,
    /// Web pages that may open a socket, by their `Origin`:
    /// `["https://app.example.com", "https://*.example.com"]`, or `["*"]` for
    /// any. Unset: only pages of the same host and port as the request.
    /// Clients that send no `Origin` (not browsers) are not affected.
    pub allowed_origins: Option<Vec<Spanned<String>>>,
    /// TCP connections this node keeps open at once, and Engine.IO sessions
    /// (counted apart): `10000`. Never more than the process's
    /// file-descriptor limit allows.
    pub max_connections: Spanned<u64>,
    /// New connections per second from one client address (one IPv6 /64):
    /// `100`; `0` turns the per-address limit off.
    pub connections_per_second_per_ip: u32,
    /// New connections one address may open at once before the per-second
    /// rate applies: `500`.
    pub connection_burst_per_ip: Spanned<u32>,
    /// Connections one client address (one IPv6 /64) may hold open at once,
    /// and sessions (counted apart): `1000` (room for a NAT of many users);
    /// `0` turns it off.
    pub max_connections_per_ip: u32,
    /// Incoming packets read per second from one connection (Engine.IO
    /// packets, WebSocket messages, pings included): `1000`, and never less
    /// than a namespace's `events_per_second`; `0` turns it off. Past it,
    /// reading the connection pauses until the rate allows the next packet:
    /// the client is slowed down, nothing is dropped.
    pub packets_per_second_per_connection: u32,
    /// Packets one connection may send at once before the per-second rate
    /// applies: `2000`, and never less than a namespace's `event_burst`.
    pub packet_burst_per_connection: Spanned<u32>,
    /// Incoming bytes read per second from one connection (every byte of a
    /// WebSocket connection, frame headers and control frames included, and
    /// the packets of long-polling POSTs): `1048576` (1 MiB); `0` turns it
    /// off. Past it, reading pauses as for `packets_per_second_per_connection`.
    pub bytes_per_second_per_connection: u32,
    /// Bytes one connection may send at once before the per-second rate
    /// applies: `4194304` (4 MiB), and never less than twice
    /// `max_payload_bytes` (the largest WebSocket message read), so the
    /// largest event is never slowed.
    pub byte_burst_per_connection: Spanned<u32>,
    /// How long a client has to send a request's headers, counted from when
    /// it connects or got its previous response, in milliseconds: `10000`.
    pub header_read_timeout_ms: Spanned<u64>,
    /// How long a request's body may take to arrive whole, counted from its
    /// headers, in milliseconds: `45000`. A body that pauses for longer than
    /// `header_read_timeout_ms` is given up sooner.
    pub body_timeout_ms: Spanned<u64>,
    /// Largest request head (request line and headers), in bytes: `16384`,
    /// as Node's HTTP server. A larger one gets `431`; at least `8192`.
    pub max_header_bytes: Spanned<u64>,
    /// How long a connection with no request in flight stays open, in
    /// milliseconds: `5000`, and at most `header_read_timeout_ms`.
    pub idle_timeout_ms: Option<Spanned<u64>>,
    /// How long a client has, after the Engine.IO handshake, to send the
    /// Socket.IO CONNECT, in milliseconds: `45000`, as Node's server.
    pub connect_timeout_ms: Spanned<u64>,
    /// Bytes of events one socket may have waiting for its plugins:
    /// `4194304` (4 MiB). Further events get an `overloaded` error; one event
    /// is always taken into an empty queue.
    pub max_queued_bytes_per_socket: u64,
    /// Largest handshake `auth` object, in bytes of JSON: `8192`. A larger one
    /// is refused with a `connect_error` starting `payload_too_large`, before
    /// any plugin sees it; an `Authorization` header larger than this, with a
    /// 431 to the request that would open the session.
    pub max_auth_bytes: u64,
    /// Rooms a plugin may put one socket in, besides the host's own
    /// (`socket:` and `user:`): `128`. Joining more fails with `too_many_rooms`.
    pub max_rooms_per_socket: u32,
    /// Linear memory all instances of all plugins may hold together, in MiB:
    /// `1024`. Each plugin is guaranteed room for one instance at its own
    /// `limits.memory_mib`; the rest is shared. A call whose instance cannot
    /// grow within it waits up to its plugin's `limits.queue_ms`, then fails
    /// with `overloaded`.
    pub plugin_memory_mib: u64,
    /// Cores this node uses: as many threads serve sockets, and as many run
    /// plugin code. Unset: every core the process may use (a container's CPU
    /// limit counts). Set it when nodes share a machine: `2` for each of two
    /// nodes on four cores.
    pub threads: Option<Spanned<u64>>,
    /// Connection-state recovery: `[server.recovery]`.
    pub recovery: RecoverySection,
}

/// `[server.recovery]`: a client that lost its connection and reconnects
/// within the window gets its socket id, its rooms and every event it missed
/// back (Socket.IO's connection-state recovery, clients 4.6 and later).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoverySection {
    /// `true`. Off: every reconnect is a new socket, and events carry no offset.
    pub enabled: bool,
    /// How long a session that lost its connection is kept, in milliseconds:
    /// `120000`. Plugins see its `on-disconnect` only once it is over.
    pub max_disconnection_ms: Spanned<u64>,
    /// Events kept for sessions to catch up on: `100000`, also bounded by the
    /// window. A session that missed more than that is not recovered.
    pub max_events: Spanned<u64>,
    /// Bytes of events kept in memory on a node without Redis: `67108864`
    /// (64 MiB).
    pub max_bytes: u64,
    /// Sessions kept waiting for their client at once: `10000`, on a node
    /// without Redis, or across the cluster with it (where any node may
    /// resume them). A connection lost past it is not kept: its plugins see
    /// it go at once, and its client reconnects as a new socket.
    pub max_waiting_sessions: Spanned<u64>,
}

impl Default for RecoverySection {
    fn default() -> Self {
        Self {
            enabled: true,
            max_disconnection_ms: Spanned::new(0..0, 120_000),
            max_events: Spanned::new(0..0, 100_000),
            max_bytes: 64 << 20,
            max_waiting_sessions: Spanned::new(0..0, 10_000),
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            path: Spanned::new(0..0, "/socket.io".to_owned()),
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            max_payload_bytes: 1_000_000,
            max_outbound_bytes: 4 << 20,
            write_timeout_ms: 10_000,
            min_write_interval_ms: 0,
            static_dir: None,
            cache_dir: None,
            allowed_origins: None,
            max_connections: Spanned::new(0..0, 10_000),
            connections_per_second_per_ip: 100,
            connection_burst_per_ip: Spanned::new(0..0, 500),
            max_connections_per_ip: 1_000,
            packets_per_second_per_connection: 1_000,
            packet_burst_per_connection: Spanned::new(0..0, 2_000),
            bytes_per_second_per_connection: 1 << 20,
            byte_burst_per_connection: Spanned::new(0..0, 4 << 20),
            header_read_timeout_ms: Spanned::new(0..0, 10_000),
            max_header_bytes: Spanned::new(0..0, 16_384),
            body_timeout_ms: Spanned::new(0..0, 45_000),
            idle_timeout_ms: None,
            connect_timeout_ms: Spanned::new(0..0, 45_000),
            max_queued_bytes_per_socket: 4 << 20,
            max_auth_bytes: 8 << 10,
            max_rooms_per_socket: 128,
            plugin_memory_mib: 1_024,
            threads: None,
            recovery: RecoverySection::default(),
        }
    }
}

/// `[cluster]`: nodes that share one Redis (or Valkey) for fanout and state.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// `"redis://[user:password@]host:port"`, or `"rediss://..."` for TLS.
    /// The environment variable `SWITCHBOARD_REDIS_URL` overrides it.
    pub redis_url: Option<Spanned<Secret>>,
    /// PEM file of the CA that signed the Redis server's certificate, for
    /// `rediss://` with a private CA: `"redis-ca.pem"`. Without it the system's
    /// trusted roots are used.
    pub ca_file: Option<PathBuf>,
    /// Prefix of every key and channel, so clusters can share a Redis: `"switchboard"`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// How long a cross-node request (room members, acks) waits, in milliseconds: `1000`.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// What a node does when Redis cannot be reached at start: `"wait"`
    /// (default) retries until it can; `"local"` runs this node alone in
    /// memory, with a warning: only for a deployment with a single replica.
    #[serde(default)]
    pub fallback: Fallback,
}

/// What a node runs with when `SWITCHBOARD_REDIS_URL` is set and the
/// manifest has no `[cluster]`.
impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            redis_url: None,
            ca_file: None,
            prefix: default_prefix(),
            request_timeout_ms: default_request_timeout_ms(),
            fallback: Fallback::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fallback {
    #[default]
    Wait,
    Local,
}

fn default_prefix() -> String {
    "switchboard".to_owned()
}

fn default_request_timeout_ms() -> u64 {
    1_000
}

/// `[api]`: the HTTP API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Bearer token required by `/api/v1/...`. The environment variable
    /// `SWITCHBOARD_API_TOKEN` overrides it; with neither, the API is off.
    pub token: Option<Secret>,
    /// Who may read `/metrics`: `"token"` (the bearer token above; the
    /// default when there is one) or `"public"` (the default without one).
    pub metrics: Option<Spanned<MetricsAccess>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAccess {
    Token,
    Public,
}

/// `[auth]`: every socket must present a valid JWT, whose `sub` claim is its
/// user id, unless its namespace allows anonymous access.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `"HS256"` (default), `"RS256"` or `"ES256"`.
    #[serde(default)]
    pub algorithm: JwtAlgorithm,
    /// HS256 shared secret. The environment variable `SWITCHBOARD_JWT_SECRET`
    /// overrides it. At least 32 bytes, e.g. from `openssl rand -base64 32`.
    pub secret: Option<Spanned<Secret>>,
    /// RS256 / ES256: PEM file of the issuer's public key, e.g. `"jwt.pub.pem"`.
    /// The environment variable `SWITCHBOARD_JWT_PUBLIC_KEY` (the PEM text)
    /// overrides it.
    pub public_key_file: Option<Spanned<PathBuf>>,
    /// Seconds of tolerance for `exp` and `nbf` between clocks: `30`.
    pub clock_skew_s: Option<u64>,
    /// Required `iss` claim, if set.
    pub issuer: Option<String>,
    /// Required `aud` claim, if set.
    pub audience: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    #[default]
    #[serde(rename = "HS256")]
    Hs256,
    #[serde(rename = "RS256")]
    Rs256,
    #[serde(rename = "ES256")]
    Es256,
}

/// `[namespaces."/path"]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceSection {
    /// Let sockets connect without a token (a token sent anyway must be
    /// valid). Plugins see `user-id: none` for them.
    pub anonymous: bool,
    /// Events one socket may send per second, on average: `100`. Over the
    /// limit an event is not handled and gets a `rate_limited` error; a socket
    /// that has `event_burst` events refused within 10 seconds is disconnected
    /// (plugins see the reason `rate limited`).
    pub events_per_second: u32,
    /// Events one socket may send at once, above the average: `200`.
    pub event_burst: u32,
    /// Plugin time one socket's events may take per second, on average, in
    /// milliseconds: `250`. A call's time is counted once it has run, so the
    /// socket's budget may go below zero; until it is back above, its next
    /// event waits (and more queue behind it).
    pub plugin_ms_per_second: u32,
    /// Plugin time one socket's events may take at once: `2000` (two calls
    /// at the default `time_ms`).
    pub plugin_burst_ms: u32,
    /// Bytes one socket's events may have sent per second, on average: their
    /// replies and the plugins' emits, each emit counted once whatever its
    /// audience: `1048576`. Counted and enforced as `plugin_ms_per_second`.
    pub output_bytes_per_second: u64,
    /// Bytes one socket's events may have sent at once: `8388608`.
    pub output_burst_bytes: u64,
}

impl Default for NamespaceSection {
    fn default() -> Self {
        Self {
            anonymous: false,
            events_per_second: 100,
            event_burst: 200,
            plugin_ms_per_second: 250,
            plugin_burst_ms: 2_000,
            output_bytes_per_second: 1 << 20,
            output_burst_bytes: 8 << 20,
        }
    }
}

/// `[[plugins.routes]]`: an HTTP route handled by the plugin's `on-http`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// `"GET"`, `"POST"`, `"PUT"`, `"PATCH"` or `"DELETE"`.
    pub method: Spanned<String>,
    /// Path, with `{name}` segments the plugin reads as parameters:
    /// `"/apps/auction/auctions/{id}/bids"`.
    pub path: Spanned<String>,
    /// Who may call it: `"user"` (default: a bearer JWT, as for sockets),
    /// `"api-token"` (the `[api]` token, for backends) or `"none"`.
    #[serde(default)]
    pub auth: RouteAuth,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteAuth {
    #[default]
    User,
    ApiToken,
    None,
}

/// `[[plugins]]`: one WebAssembly component and what it handles.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    /// Unique name, shown in logs and used to keep state apart: `"chat"`.
    pub name: Spanned<String>,
    /// Path to the `.wasm` component, relative to the manifest: `"chat.wasm"`.
    pub path: Spanned<PathBuf>,
    /// Namespaces the plugin serves: `["/", "/admin"]`. Defaults to `["/"]`.
    #[serde(default = "default_namespaces")]
    pub namespaces: Vec<Spanned<String>>,
    /// Events routed to this plugin: `["join", "send_message"]`.
    #[serde(default)]
    pub events: Vec<Spanned<String>>,
    /// HTTP routes routed to this plugin's `on-http`.
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    /// Limits for every call into the plugin.
    #[serde(default)]
    pub limits: LimitsSection,
    /// `"pooled"` (default) reuses warm instances; `"per-event"` gives every
    /// call a fresh instance, so nothing a call leaves in guest memory is seen
    /// by the next, at about 19x the cost per event (see BENCHMARKS.md).
    #[serde(default)]
    pub instances: InstanceModel,
    /// Free-form settings handed to the plugin's `init` and `config` API.
    #[serde(default)]
    pub config: toml::Table,
}

fn default_namespaces() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "/".to_owned())]
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceModel {
    #[default]
    Pooled,
    PerEvent,
}

/// `[plugins.limits]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Wall-clock time one call may take, in milliseconds: `1000`.
    pub time_ms: u64,
    /// Linear memory one instance may grow to, in MiB: `64`.
    pub memory_mib: u64,
    /// Largest state value, list item or key name, in bytes: `65536`.
    /// Larger writes fail with `quota_exceeded`.
    pub max_state_value_bytes: u64,
    /// Keys the plugin may hold at once (expired ones do not count): `100000`.
    /// Writes that would create more fail with `quota_exceeded`.
    pub max_state_keys: u64,
    /// Items one state list may hold: `10000`. A push that would make it
    /// longer fails with `quota_exceeded`.
    pub max_state_list_items: u64,
    /// Calls of this plugin that may run at once on this node: `64`. Each
    /// runs on an instance of its own.
    pub concurrency: u32,
    /// How long a call waits for a free place under `concurrency` (or for
    /// memory under `[server] plugin_memory_mib`) before it fails with
    /// `overloaded`, in milliseconds: `100`.
    pub queue_ms: u64,
    /// Answers to `acks.to-socket` the plugin may wait for at once on this
    /// node: `10000`. Asking for more fails with `overloaded`.
    pub max_pending_acks: u32,
    /// How fast its instances together may grow their memory during calls on
    /// this node, in MiB a second, and in bursts of as much: `256`. A call
    /// that grows faster waits, within its time limit: fresh memory is
    /// kernel work (page faults, then unmapping it) that slows every socket
    /// of the node, not only the plugin's calls.
    pub memory_growth_mib_per_second: u32,
    /// Timers the plugin may have pending (in the cluster): `100000`.
    /// Scheduling a new key past it fails with `quota_exceeded`;
    /// rescheduling a pending one works.
    pub max_timers: u64,
    /// Log lines its instances together may write a second on this node,
    /// and in bursts of as many: `1000`. Further lines are dropped and
    /// counted, so one plugin cannot crowd the others' and the host's lines
    /// out of the log.
    pub log_lines_per_second: u32,
    /// Requests each caller of its routes may make a second on this node, on
    /// average: `20`; `0` for no limit. A caller is the user on `user`
    /// routes and the client's address (an IPv6 /64) on `none` routes;
    /// `api-token` routes are not limited. Over it a request gets `429
    /// rate_limited` with `Retry-After`.
    pub route_requests_per_second: u32,
    /// ... at once: `40`.
    pub route_request_burst: u32,
    /// Plugin time each caller's route requests may take a second, on
    /// average, in milliseconds: `250`; `0` for no limit. A call's time is
    /// charged once it has run; while its caller is in debt, its requests
    /// get `429 rate_limited`.
    pub route_plugin_ms_per_second: u32,
    /// ... at once: `2000`.
    pub route_plugin_burst_ms: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            time_ms: 1_000,
            memory_mib: 64,
            max_state_value_bytes: 64 << 10,
            max_state_keys: 100_000,
            max_state_list_items: 10_000,
            concurrency: 64,
            queue_ms: 100,
            max_pending_acks: 10_000,
            memory_growth_mib_per_second: 256,
            log_lines_per_second: 1_000,
            max_timers: 100_000,
            route_requests_per_second: 20,
            route_request_burst: 40,
            route_plugin_ms_per_second: 250,
            route_plugin_burst_ms: 2_000,
        }
    }
}

/// As written in the manifest.
impl std::fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        })
    }
}

/// As written in the manifest.
impl std::fmt::Display for RouteAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::User => "user",
            Self::ApiToken => "api-token",
            Self::None => "none",
        })
    }
}
