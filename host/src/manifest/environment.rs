//! Settings an operator gives per environment, as environment variables
//! instead of in the manifest: `SWITCHBOARD_<TABLE>_<KEY>` for each one in
//! [`SETTINGS`] (the README lists them). A variable wins over the file. Its
//! value is read as a TOML value (`5000`, `true`, `["a", "b"]`), or else as
//! a string, so `0.0.0.0:3000` needs no quotes.
//!
//! A value that came from a variable carries a span past the end of the file
//! (see [`Environment::variable_at`]), so the manifest's checks name the
//! variable instead of a line.

use std::collections::HashMap;
use std::ops::Range;

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;

use super::ManifestError;
use super::schema::{ClusterSection, ManifestFile};

/// The variables read, with the manifest setting each sets.
pub const SETTINGS: &[(&str, &str)] = &[
    ("SWITCHBOARD_SERVER_LISTEN", "server.listen"),
    ("SWITCHBOARD_SERVER_PATH", "server.path"),
    (
        "SWITCHBOARD_SERVER_PING_INTERVAL_MS",
        "server.ping_interval_ms",
    ),
    (
        "SWITCHBOARD_SERVER_PING_TIMEOUT_MS",
        "server.ping_timeout_ms",
    ),
    (
        "SWITCHBOARD_SERVER_MAX_PAYLOAD_BYTES",
        "server.max_payload_bytes",
    ),
    (
        "SWITCHBOARD_SERVER_MAX_OUTBOUND_BYTES",
        "server.max_outbound_bytes",
    ),
    (
        "SWITCHBOARD_SERVER_WRITE_TIMEOUT_MS",
        "server.write_timeout_ms",
    ),
    (
        "SWITCHBOARD_SERVER_MIN_WRITE_INTERVAL_MS",
        "server.min_write_interval_ms",
    ),
    ("SWITCHBOARD_SERVER_STATIC_DIR", "server.static_dir"),
    ("SWITCHBOARD_SERVER_CACHE_DIR", "server.cache_dir"),
    (
        "SWITCHBOARD_SERVER_ALLOWED_ORIGINS",
        "server.allowed_origins",
    ),
    (
        "SWITCHBOARD_SERVER_MAX_CONNECTIONS",
        "server.max_connections",
    ),
    (
        "SWITCHBOARD_SERVER_CONNECTIONS_PER_SECOND_PER_IP",
        "server.connections_per_second_per_ip",
    ),
    (
        "SWITCHBOARD_SERVER_CONNECTION_BURST_PER_IP",
        "server.connection_burst_per_ip",
    ),
    (
        "SWITCHBOARD_SERVER_MAX_CONNECTIONS_PER_IP",
        "server.max_connections_per_ip",
    ),
    (
        "SWITCHBOARD_SERVER_PACKETS_PER_SECOND_PER_CONNECTION",
        "server.packets_per_second_per_connection",
    ),
    (
        "SWITCHBOARD_SERVER_PACKET_BURST_PER_CONNECTION",
        "server.packet_burst_per_connection",
    ),
    (
        "SWITCHBOARD_SERVER_BYTES_PER_SECOND_PER_CONNECTION",
        "server.bytes_per_second_per_connection",
    ),
    (
        "SWITCHBOARD_SERVER_BYTE_BURST_PER_CONNECTION",
        "server.byte_burst_per_connection",
    ),
    (
        "SWITCHBOARD_SERVER_HEADER_READ_TIMEOUT_MS",
        "server.header_read_timeout_ms",
    ),
    (
        "SWITCHBOARD_SERVER_IDLE_TIMEOUT_MS",
        "server.idle_timeout_ms",
    ),
    (
        "SWITCHBOARD_SERVER_MAX_HEADER_BYTES",
        "server.max_header_bytes",
    ),
    (
        "SWITCHBOARD_SERVER_BODY_TIMEOUT_MS",
        "server.body_timeout_ms",
    ),
    (
        "SWITCHBOARD_SERVER_CONNECT_TIMEOUT_MS",
        "server.connect_timeout_ms",
    ),
    (
        "SWITCHBOARD_SERVER_MAX_QUEUED_BYTES_PER_SOCKET",
        "server.max_queued_bytes_per_socket",
    ),
    ("SWITCHBOARD_SERVER_MAX_AUTH_BYTES", "server.max_auth_bytes"),
    (
        "SWITCHBOARD_SERVER_MAX_ROOMS_PER_SOCKET",
        "server.max_rooms_per_socket",
    ),
    ("SWITCHBOARD_SERVER_THREADS", "server.threads"),
    (
        "SWITCHBOARD_SERVER_PLUGIN_MEMORY_MIB",
        "server.plugin_memory_mib",
    ),
    (
        "SWITCHBOARD_SERVER_RECOVERY_ENABLED",
        "server.recovery.enabled",
    ),
    (
        "SWITCHBOARD_SERVER_RECOVERY_MAX_DISCONNECTION_MS",
        "server.recovery.max_disconnection_ms",
    ),
    (
        "SWITCHBOARD_SERVER_RECOVERY_MAX_EVENTS",
        "server.recovery.max_events",
    ),
    (
        "SWITCHBOARD_SERVER_RECOVERY_MAX_BYTES",
        "server.recovery.max_bytes",
    ),
    (
        "SWITCHBOARD_SERVER_RECOVERY_MAX_WAITING_SESSIONS",
        "server.recovery.max_waiting_sessions",
    ),
    ("SWITCHBOARD_CLUSTER_CA_FILE", "cluster.ca_file"),
    ("SWITCHBOARD_CLUSTER_PREFIX", "cluster.prefix"),
    (
        "SWITCHBOARD_CLUSTER_REQUEST_TIMEOUT_MS",
        "cluster.request_timeout_ms",
    ),
    ("SWITCHBOARD_CLUSTER_FALLBACK", "cluster.fallback"),
    ("SWITCHBOARD_API_METRICS", "api.metrics"),
];

/// The variables of [`SETTINGS`] that are set, and those applied so far.
pub struct Environment {
    values: HashMap<&'static str, String>,
    /// Applied variables, in order; a value's span encodes its index here.
    applied: Vec<&'static str>,
}

/// Spans from here up name a variable: far past any manifest's length.
const FIRST_VARIABLE_SPAN: usize = usize::MAX / 2;

impl Environment {
    /// The variables of [`SETTINGS`] set (and not empty) in `lookup`.
    pub fn new(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let values = SETTINGS
            .iter()
            .filter_map(|(variable, _)| {
                let value = lookup(variable).filter(|value| !value.is_empty())?;
                Some((*variable, value))
            })
            .collect();
        Self {
            values,
            applied: Vec::new(),
        }
    }

    pub fn empty() -> Self {
        Self::new(|_| None)
    }

    /// The variable a value's span stands for, if it came from one.
    pub fn variable_at(&self, offset: usize) -> Option<&'static str> {
        let index = offset.checked_sub(FIRST_VARIABLE_SPAN)?;
        self.applied.get(index).copied()
    }

    /// Puts every set variable's value in its place in `file`.
    pub fn apply(&mut self, file: &mut ManifestFile) -> Result<(), ManifestError> {
        let server = &mut file.server;
        self.plain("SWITCHBOARD_SERVER_LISTEN", &mut server.listen)?;
        self.spanned("SWITCHBOARD_SERVER_PATH", &mut server.path)?;
        self.plain(
            "SWITCHBOARD_SERVER_PING_INTERVAL_MS",
            &mut server.ping_interval_ms,
        )?;
        self.plain(
            "SWITCHBOARD_SERVER_PING_TIMEOUT_MS",
            &mut server.ping_timeout_ms,
        )?;
        self.plain(
            "SWITCHBOARD_SERVER_MAX_PAYLOAD_BYTES",
            &mut server.max_payload_bytes,
        )?;
        self.plain(
            "SWITCHBOARD_SERVER_MAX_OUTBOUND_BYTES",
            &mut server.max_outbound_bytes,
        )?;
        self.plain(
            "SWITCHBOARD_SERVER_WRITE_TIMEOUT_MS",
            &mut server.write_timeout_ms,
        )?;
        self.plain(
            "SWITCHBOARD_SERVER_MIN_WRITE_INTERVAL_MS",
            &mut server.min_write_interval_ms,
        )?;
        self.optional("SWITCHBOARD_SERVER_STATIC_DIR", &mut server.static_dir)?;
        self.optional("SWITCHBOARD_SERVER_CACHE_DIR", &mut server.cache_dir)?;
        if let Some(origins) = self.value::<Vec<String>>("SWITCHBOARD_SERVER_ALLOWED_ORIGINS")? {
            let span = self.span("SWITCHBOARD_SERVER_ALLOWED_ORIGINS");
            server.allowed_origins = Some(
                origins
                    .into_iter()
                    .map(|origin| Spanned::new(span.clone(), origin))
                    .collect(),
            );
        }
        self.spanned(
            "SWITCHBOARD_SERVER_MAX_CONNECTIONS",
            &mut server.max_connections,
        )?;
        self.plain(
            "SWITCHBOARD_SERVER_CONNECTIONS_PER_SECOND_PER_IP",
            &mut server.connections_per_second_per_ip,
        )?;
        self.spanned(
            "SWITCHBOARD_SERVER_CONNECTION_BURST_PER_IP",
            &mut server.connection_burst_per_ip,
        )?;
        self.plain(
            "SWITCHBOARD_SERVER_MAX_CONNECTIONS_PER_IP",
            &mut server.max_connections_per_ip,
        )?;
        self.plain(
            "SWITCHBOARD_SERVER_PACKETS_PER_SECOND_PER_CONNECTION",
            &mut server.packets_per_second_per_connection,
        )?;
        self.spanned(
            "SWITCHBOARD_SERVER_PACKET_BURST_PER_CONNECTION",
            &mut server.packet_burst_per_connection,
        )?;
        self.plain(
            "SWITCHBOARD_SERVER_BYTES_PER_SECOND_PER_CONNECTION",
            &mut server.bytes_per_second_per_connection,
        )?;
        self.spanned(
            "SWITCHBOARD_SERVER_BYTE_BURST_PER_CONNECTION",
            &mut server.byte_burst_per_connection,
        )?;
        self.spanned(
            "SWITCHBOARD_SERVER_HEADER_READ_TIMEOUT_MS",
            &mut server.header_read_timeout_ms,
        )?;
        self.optional_spanned(
            "SWITCHBOARD_SERVER_IDLE_TIMEOUT_MS",
            &mut server.idle_timeout_ms,
        )?;
        self.spanned(
            "SWITCHBOARD_SERVER_MAX_HEADER_BYTES",
            &mut server.max_header_bytes,
        )?;
        self.spanned(
            "SWITCHBOARD_SERVER_BODY_TIMEOUT_MS",
            &mut server.body_timeout_ms,
        )?;
        self.spanned(
            "SWITCHBOARD_SERVER_CONNECT_TIMEOUT_MS",
            &mut server.connect_timeout_ms,
        )?;
        self.plain(
            "SWITCHBOARD_SERVER_MAX_QUEUED_BYTES_PER_SOCKET",
            &mut server.max_queued_bytes_per_socket,
        )?;
        self.plain(
            "SWITCHBOARD_SERVER_MAX_AUTH_BYTES",
            &mut server.max_auth_bytes,
        )?;
        self.plain(
            "SWITCHBOARD_SERVER_MAX_ROOMS_PER_SOCKET",
            &mut server.max_rooms_per_socket,
        )?;
        self.plain(
            "SWITCHBOARD_SERVER_PLUGIN_MEMORY_MIB",
            &mut server.plugin_memory_mib,
        )?;
        self.optional_spanned("SWITCHBOARD_SERVER_THREADS", &mut server.threads)?;
        let recovery = &mut server.recovery;
        self.plain("SWITCHBOARD_SERVER_RECOVERY_ENABLED", &mut recovery.enabled)?;
        self.spanned(
            "SWITCHBOARD_SERVER_RECOVERY_MAX_DISCONNECTION_MS",
            &mut recovery.max_disconnection_ms,
        )?;
        self.spanned(
            "SWITCHBOARD_SERVER_RECOVERY_MAX_EVENTS",
            &mut recovery.max_events,
        )?;
        self.plain(
            "SWITCHBOARD_SERVER_RECOVERY_MAX_BYTES",
            &mut recovery.max_bytes,
        )?;
        self.spanned(
            "SWITCHBOARD_SERVER_RECOVERY_MAX_WAITING_SESSIONS",
            &mut recovery.max_waiting_sessions,
        )?;
        // Only a node of a cluster has these; the URL is what makes one.
        if let Some(cluster) = &mut file.cluster {
            self.cluster(cluster)?;
        }
        if let Some(metrics) = self.value("SWITCHBOARD_API_METRICS")? {
            let span = self.span("SWITCHBOARD_API_METRICS");
            file.api.metrics = Some(Spanned::new(span, metrics));
        }
        Ok(())
    }

    /// The `[cluster]` settings, also for one made from the Redis URL alone.
    pub fn cluster(&mut self, cluster: &mut ClusterSection) -> Result<(), ManifestError> {
        self.optional("SWITCHBOARD_CLUSTER_CA_FILE", &mut cluster.ca_file)?;
        self.plain("SWITCHBOARD_CLUSTER_PREFIX", &mut cluster.prefix)?;
        self.plain(
            "SWITCHBOARD_CLUSTER_REQUEST_TIMEOUT_MS",
            &mut cluster.request_timeout_ms,
        )?;
        self.plain("SWITCHBOARD_CLUSTER_FALLBACK", &mut cluster.fallback)
    }

    fn plain<T: DeserializeOwned>(
        &mut self,
        variable: &'static str,
        field: &mut T,
    ) -> Result<(), ManifestError> {
        if let Some(value) = self.value(variable)? {
            *field = value;
        }
        Ok(())
    }

    fn optional<T: DeserializeOwned>(
        &mut self,
        variable: &'static str,
        field: &mut Option<T>,
    ) -> Result<(), ManifestError> {
        if let Some(value) = self.value(variable)? {
            *field = Some(value);
        }
        Ok(())
    }

    fn spanned<T: DeserializeOwned>(
        &mut self,
        variable: &'static str,
        field: &mut Spanned<T>,
    ) -> Result<(), ManifestError> {
        if let Some(value) = self.value(variable)? {
            *field = Spanned::new(self.span(variable), value);
        }
        Ok(())
    }

    fn optional_spanned<T: DeserializeOwned>(
        &mut self,
        variable: &'static str,
        field: &mut Option<Spanned<T>>,
    ) -> Result<(), ManifestError> {
        if let Some(value) = self.value(variable)? {
            *field = Some(Spanned::new(self.span(variable), value));
        }
        Ok(())
    }

    /// The span that names `variable`, recorded as applied.
    fn span(&mut self, variable: &'static str) -> Range<usize> {
        let start = FIRST_VARIABLE_SPAN + self.applied.len();
        self.applied.push(variable);
        start..start
    }

    /// `variable`'s value as a `T`: written as TOML, or as a bare string.
    fn value<T: DeserializeOwned>(
        &self,
        variable: &'static str,
    ) -> Result<Option<T>, ManifestError> {
        #[derive(serde::Deserialize)]
        struct Value<T> {
            v: T,
        }
        let Some(raw) = self.values.get(variable) else {
            return Ok(None);
        };
        if let Ok(value) = toml::from_str::<Value<T>>(&format!("v = {raw}")) {
            return Ok(Some(value.v));
        }
        let as_string: Result<T, serde::de::value::Error> =
            T::deserialize(raw.as_str().into_deserializer());
        as_string
            .map(Some)
            .map_err(|error| ManifestError::Environment {
                variable,
                message: error.to_string(),
            })
    }
}
