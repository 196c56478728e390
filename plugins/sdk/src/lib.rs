//! Write Switchboard plugins as short, typed Rust.
//!
//! A plugin is a type implementing [`Plugin`], exported with
//! [`export_plugin!`]. A payload is an event's arguments, each JSON:
//! [`Payload::parse`] reads the first into a serde type and [`Payload::new`]
//! makes one of one argument, the common case; [`Payload::parse_args`] and
//! [`Payload::from_args`] do the same for several. Host functions live in the
//! [`emit`], [`acks`], [`rooms`], [`state`], [`immediate`], [`log`], [`clock`]
//! and [`config`] modules. Each handler call is a transaction: see [`state`].
//!
//! ```ignore
//! struct Hello;
//! impl switchboard_sdk::Plugin for Hello {
//!     fn on_event(conn: &Conn, event: &str, payload: Payload) -> Result<Option<Payload>, Error> {
//!         Ok(Some(Payload::new(&format!("hello {}", conn.socket_id))?))
//!     }
//! }
//! switchboard_sdk::export_plugin!(Hello);
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

#[cfg(not(target_family = "wasm"))]
pub mod testing;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "switchboard_sdk::bindings",
        generate_all,
    });
}

pub use bindings::switchboard::plugin::types::{Conn, Error, Level, Payload};

/// A plugin's event handlers. Every method but `on_event` has a default that
/// accepts and does nothing.
pub trait Plugin {
    /// Runs on each new instance with the manifest's `config` table. The host
    /// may run several instances, so keep shared data in [`state`].
    fn init(_config: &Config) -> Result<(), Error> {
        Ok(())
    }

    /// A socket connects; an error refuses it with the error's message.
    fn on_connect(_conn: &Conn) -> Result<(), Error> {
        Ok(())
    }

    /// An event routed to this plugin; `Ok(Some(ack))` answers the client's ack.
    fn on_event(conn: &Conn, event: &str, payload: Payload) -> Result<Option<Payload>, Error>;

    /// The socket has gone.
    fn on_disconnect(_conn: &Conn, _reason: &str) {}

    /// The socket has finished connecting and can receive events.
    fn on_connected(_conn: &Conn) {}

    /// The socket's client lost its connection and came back in time: it has
    /// its id, rooms and missed events back, and [`Plugin::on_disconnect`]
    /// did not run for the gap (connection-state recovery).
    fn on_recovered(_conn: &Conn) {}

    /// A timer scheduled with [`timers::schedule`] is due.
    fn on_timer(key: &str, _payload: &str) -> Result<(), Error> {
        Err(Error::new(
            "unknown_timer",
            format!("no handler for timer `{key}`"),
        ))
    }

    /// The answer to an event sent with [`acks::to_socket`] with `tag`: the
    /// client's ack arguments, or why none came (`ack_timeout`,
    /// `disconnected`, `not_connected`, ...).
    fn on_ack(
        _namespace: &str,
        _socket_id: &str,
        tag: &str,
        _answer: Result<Payload, Error>,
    ) -> Result<(), Error> {
        Err(Error::new(
            "unknown_ack",
            format!("no handler for the answer to ack `{tag}`"),
        ))
    }

    /// A request on one of the HTTP routes the manifest maps to this plugin.
    fn on_http(request: http::Request) -> http::Response {
        http::Response::error(
            404,
            "not_found",
            &format!("no handler for {} {}", request.method, request.path),
        )
    }
}

/// Has a panic's message and location logged (at `error`) before the
/// instance traps, so the host's log says why, not only that the guest
/// executed `unreachable`. Installed by [`export_plugin!`] on `init`.
pub fn log_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|panic| log::error(&panic.to_string())));
    });
}

/// Exports a [`Plugin`] implementation as the component's `handler`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        struct __SwitchboardExports;

        impl $crate::bindings::exports::switchboard::plugin::handler::Guest for __SwitchboardExports {
            fn init(config: String) -> Result<(), $crate::Error> {
                $crate::log_panics();
                <$plugin as $crate::Plugin>::init(&$crate::Config::from_json(&config)?)
            }

            fn on_connect(conn: $crate::Conn) -> Result<(), $crate::Error> {
                <$plugin as $crate::Plugin>::on_connect(&conn)
            }

            fn on_event(
                conn: $crate::Conn,
                event: String,
                payload: $crate::Payload,
            ) -> Result<Option<$crate::Payload>, $crate::Error> {
                <$plugin as $crate::Plugin>::on_event(&conn, &event, payload)
            }

            fn on_disconnect(conn: $crate::Conn, reason: String) {
                <$plugin as $crate::Plugin>::on_disconnect(&conn, &reason)
            }
        }

        impl $crate::bindings::exports::switchboard::plugin::connection_handler::Guest
            for __SwitchboardExports
        {
            fn on_connected(conn: $crate::Conn) {
                <$plugin as $crate::Plugin>::on_connected(&conn)
            }
        }

        impl $crate::bindings::exports::switchboard::plugin::recovery_handler::Guest
            for __SwitchboardExports
        {
            fn on_recovered(conn: $crate::Conn) {
                <$plugin as $crate::Plugin>::on_recovered(&conn)
            }
        }

        impl $crate::bindings::exports::switchboard::plugin::timer_handler::Guest
            for __SwitchboardExports
        {
            fn on_timer(key: String, payload: String) -> Result<(), $crate::Error> {
                <$plugin as $crate::Plugin>::on_timer(&key, &payload)
            }
        }

        impl $crate::bindings::exports::switchboard::plugin::ack_handler::Guest
            for __SwitchboardExports
        {
            fn on_ack(
                namespace: String,
                socket_id: String,
                tag: String,
                answer: Result<$crate::Payload, $crate::Error>,
            ) -> Result<(), $crate::Error> {
                <$plugin as $crate::Plugin>::on_ack(&namespace, &socket_id, &tag, answer)
            }
        }

        impl $crate::bindings::exports::switchboard::plugin::http_handler::Guest
            for __SwitchboardExports
        {
            fn handle(request: $crate::http::Request) -> $crate::http::Response {
                <$plugin as $crate::Plugin>::on_http(request)
            }
        }

        $crate::bindings::export!(__SwitchboardExports with_types_in $crate::bindings);
    };
}

impl Error {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// The payload does not have the shape the event needs.
    pub fn invalid_payload(message: impl Into<String>) -> Self {
        Self::new("invalid_payload", message)
    }

    /// The plugin has no handler for this event.
    pub fn unknown_event(event: &str) -> Self {
        Self::new("unknown_event", format!("no handler for `{event}`"))
    }
}

impl Payload {
    /// One argument: `value` as JSON.
    pub fn new<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        Ok(Self {
            args: vec![to_json(value)?],
            attachments: Vec::new(),
        })
    }

    /// As many arguments as `values` has elements: a tuple or a slice, e.g.
    /// `Payload::from_args(&(1, "two"))` is sent as `socket.emit(event, 1, "two")`.
    pub fn from_args<T: Serialize + ?Sized>(values: &T) -> Result<Self, Error> {
        let serde_json::Value::Array(values) =
            serde_json::to_value(values).map_err(cannot_serialize)?
        else {
            return Err(Error::new(
                "internal",
                "cannot serialize a payload: its arguments must be a tuple or a sequence",
            ));
        };
        let args = values.iter().map(to_json).collect::<Result<_, _>>()?;
        Ok(Self {
            args,
            attachments: Vec::new(),
        })
    }

    /// Reads the first argument into `T` (`null` when there is none, so an
    /// `Option` reads as `None`); a mismatch is an `invalid_payload` error
    /// that names the field and the problem (e.g. "`text`: invalid type:
    /// integer `42`, expected a string"). Further arguments are ignored, as
    /// a JavaScript handler ignores them.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        parse_json(self.first(), "payload")
    }

    /// Like [`parse`](Self::parse), but the first argument must be a JSON
    /// object: serde would otherwise also read a struct from an array of its
    /// fields.
    pub fn parse_object<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let first = self.first();
        if !first.trim_start().starts_with('{') {
            return Err(Error::invalid_payload(format!(
                "invalid payload: expected a JSON object, got `{}`",
                first.chars().take(40).collect::<String>()
            )));
        }
        self.parse()
    }

    /// Reads all the arguments into `T`, as one JSON array: a tuple for
    /// several of different types (`let (x, y): (i32, String)`), a `Vec`
    /// for any number of one type.
    pub fn parse_args<T: DeserializeOwned>(&self) -> Result<T, Error> {
        parse_json(&format!("[{}]", self.args.join(",")), "arguments")
    }

    fn first(&self) -> &str {
        self.args.first().map_or("null", String::as_str)
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(cannot_serialize)
}

fn cannot_serialize(error: serde_json::Error) -> Error {
    Error::new("internal", format!("cannot serialize a payload: {error}"))
}

fn parse_json<T: DeserializeOwned>(json: &str, what: &str) -> Result<T, Error> {
    serde_json::from_str(json)
        .map_err(|error| Error::invalid_payload(explain::<T>(json.as_bytes(), error, what)))
}

/// "invalid {what}: `{path}`: {problem}", without serde_json's "at line 1
/// column N", which says little to a client. The path comes from parsing
/// `json` again, only once a plain parse failed: tracking it costs every parse.
fn explain<T: DeserializeOwned>(json: &[u8], error: serde_json::Error, what: &str) -> String {
    let deserializer = &mut serde_json::Deserializer::from_slice(json);
    let (path, error) = match serde_path_to_error::deserialize::<_, T>(deserializer) {
        Err(tracked) => (tracked.path().to_string(), tracked.into_inner()),
        Ok(_) => (".".to_owned(), error),
    };
    let message = error.to_string();
    let message = message.split(" at line ").next().unwrap_or(&message);
    if path == "." {
        format!("invalid {what}: {message}")
    } else {
        format!("invalid {what}: `{path}`: {message}")
    }
}

impl Conn {
    /// One field of the handshake `auth` object, if present and of type `T`.
    pub fn auth_field<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        let auth: serde_json::Value = serde_json::from_str(&self.auth).ok()?;
        serde_json::from_value(auth.get(name)?.clone()).ok()
    }
}

/// The manifest's `config` table.
pub struct Config(serde_json::Map<String, serde_json::Value>);

impl Config {
    #[doc(hidden)]
    pub fn from_json(json: &str) -> Result<Self, Error> {
        serde_json::from_str(json).map(Self).map_err(|error| {
            Error::new(
                "bad_config",
                format!("config is not a JSON object: {error}"),
            )
        })
    }

    /// A key of the table as `T`; `Ok(None)` when absent, an error when of another type.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.0
            .get(key)
            .map(|value| serde_json::from_value(value.clone()))
            .transpose()
            .map_err(|error| Error::new("bad_config", format!("config `{key}`: {error}")))
    }
}

/// Sending events. `namespace` must be one the plugin is bound to. They are
/// sent when the call commits (see [`state`]); [`immediate`] sends at once.
pub mod emit {
    use serde::Serialize;

    use super::{Error, Payload};
    pub use crate::bindings::switchboard::plugin::emit as raw;

    /// To one socket, by id.
    pub fn to_socket<T: Serialize + ?Sized>(
        namespace: &str,
        socket_id: &str,
        event: &str,
        data: &T,
    ) -> Result<(), Error> {
        raw::to_socket(namespace, socket_id, event, &Payload::new(data)?)
    }

    /// To every socket in a room.
    pub fn to_room<T: Serialize + ?Sized>(
        namespace: &str,
        room: &str,
        event: &str,
        data: &T,
    ) -> Result<(), Error> {
        raw::to_room(namespace, room, event, &Payload::new(data)?)
    }

    /// To every socket in a room but one, usually the sender.
    pub fn to_room_except<T: Serialize + ?Sized>(
        namespace: &str,
        room: &str,
        except_socket_id: &str,
        event: &str,
        data: &T,
    ) -> Result<(), Error> {
        raw::to_room_except(
            namespace,
            room,
            except_socket_id,
            event,
            &Payload::new(data)?,
        )
    }

    /// To every socket of a verified user (the room `user:{id}`), on every node.
    pub fn to_user<T: Serialize + ?Sized>(
        namespace: &str,
        user_id: &str,
        event: &str,
        data: &T,
    ) -> Result<(), Error> {
        to_room(namespace, &user_room(user_id), event, data)
    }

    /// The room every socket of the user joins.
    pub fn user_room(user_id: &str) -> String {
        format!("user:{user_id}")
    }

    /// To every socket in the namespace.
    pub fn to_namespace<T: Serialize + ?Sized>(
        namespace: &str,
        event: &str,
        data: &T,
    ) -> Result<(), Error> {
        raw::to_namespace(namespace, event, &Payload::new(data)?)
    }
}

/// Events that ask a client for an acknowledgement: Socket.IO's
/// `socket.timeout(ms).emit(event, data, callback)`. The answer comes later,
/// to [`Plugin::on_ack`], in a call of its own.
pub mod acks {
    use serde::Serialize;

    use super::{Error, Payload};
    pub use crate::bindings::switchboard::plugin::acks as raw;

    /// Sends `data` as one argument to one socket, wherever it is connected;
    /// its client's answer, or `ack_timeout` after `timeout_ms`, reaches
    /// [`crate::Plugin::on_ack`] with `tag`. Sent when the call commits.
    pub fn to_socket<T: Serialize + ?Sized>(
        namespace: &str,
        socket_id: &str,
        event: &str,
        data: &T,
        timeout_ms: u32,
        tag: &str,
    ) -> Result<(), Error> {
        raw::to_socket(
            namespace,
            socket_id,
            event,
            &Payload::new(data)?,
            timeout_ms,
            tag,
        )
    }
}

/// Room membership: join, leave, size, members, and a socket's rooms.
pub mod rooms {
    pub use crate::bindings::switchboard::plugin::rooms::*;
}

/// Key-value state with Redis semantics (strings, lists, hashes, sets,
/// sorted sets), private to the plugin.
///
/// Every handler call is a transaction: its writes and emits take effect
/// together when it returns `Ok`, not at all when it fails, and a call whose
/// reads were changed by another before it commits runs again on fresh state
/// (then fails with `conflict`). So read, decide and write plainly: no
/// compare-and-swap loops.
///
/// ```ignore
/// if state::set_add(&format!("poll:{id}:voters"), user)? {
///     state::hash_incr(&format!("poll:{id}:counts"), &option, 1)?;
/// }
/// ```
pub mod state {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    // The glob brings `Error` too: the interface uses the shared `error` record.
    pub use crate::bindings::switchboard::plugin::state::*;

    /// Reads a JSON value stored with [`set_json`].
    pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
        get(key)?.map(|json| parse(key, &json)).transpose()
    }

    /// Stores `value` as JSON.
    pub fn set_json<T: Serialize + ?Sized>(
        key: &str,
        value: &T,
        ttl_ms: Option<u64>,
    ) -> Result<(), Error> {
        set(key, &serialize(key, value)?, ttl_ms)
    }

    /// Replaces the JSON value at `key` (`None` when absent) by `change` of
    /// it and returns what was stored: a read and a write, atomic because
    /// the call is a transaction.
    pub fn update_json<T: Serialize + DeserializeOwned>(
        key: &str,
        ttl_ms: Option<u64>,
        change: impl FnOnce(Option<T>) -> T,
    ) -> Result<T, Error> {
        let updated = change(get_json(key)?);
        set_json(key, &updated, ttl_ms)?;
        Ok(updated)
    }

    fn parse<T: DeserializeOwned>(key: &str, json: &str) -> Result<T, Error> {
        serde_json::from_str(json).map_err(|error| {
            Error::new(
                "corrupt_state",
                format!("state `{key}` is not the expected JSON: {error}"),
            )
        })
    }

    fn serialize<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<String, Error> {
        serde_json::to_string(value).map_err(|error| {
            Error::new(
                "internal",
                format!("cannot serialize state `{key}`: {error}"),
            )
        })
    }
}

/// The escape hatch: an emit or a counter that takes effect at once, even if
/// the call fails or is run again after a conflict (then it happens again).
pub mod immediate {
    use serde::Serialize;

    use super::{Error, Payload};
    pub use crate::bindings::switchboard::plugin::immediate as raw;
    pub use crate::bindings::switchboard::plugin::immediate::incr;

    /// To one socket, now.
    pub fn to_socket<T: Serialize + ?Sized>(
        namespace: &str,
        socket_id: &str,
        event: &str,
        data: &T,
    ) -> Result<(), Error> {
        raw::emit_to_socket(namespace, socket_id, event, &Payload::new(data)?)
    }

    /// To every socket in a room, now.
    pub fn to_room<T: Serialize + ?Sized>(
        namespace: &str,
        room: &str,
        event: &str,
        data: &T,
    ) -> Result<(), Error> {
        raw::emit_to_room(namespace, room, event, &Payload::new(data)?)
    }
}

/// Callbacks at a given time, delivered once across the cluster to
/// [`Plugin::on_timer`].
pub mod timers {
    pub use crate::bindings::switchboard::plugin::timers::{cancel, schedule};
}

/// HTTP routes: the request a plugin gets and the response it returns.
pub mod http {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    pub use crate::bindings::exports::switchboard::plugin::http_handler::{Request, Response};

    impl Request {
        /// The value of the route's `{name}` segment.
        pub fn param(&self, name: &str) -> Option<&str> {
            self.params
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        }

        /// Reads the JSON body into `T`; a mismatch is an `invalid_body`
        /// error that names the field and the problem.
        pub fn json<T: DeserializeOwned>(&self) -> Result<T, crate::Error> {
            serde_json::from_slice(&self.body).map_err(|error| {
                crate::Error::new(
                    "invalid_body",
                    crate::explain::<T>(&self.body, error, "body"),
                )
            })
        }
    }

    impl Response {
        /// `value` as a JSON body.
        pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
            match serde_json::to_vec(value) {
                Ok(body) => Self {
                    status,
                    headers: vec![("content-type".to_owned(), "application/json".to_owned())],
                    body,
                },
                Err(error) => Self::error(
                    500,
                    "internal",
                    &format!("cannot serialize the response: {error}"),
                ),
            }
        }

        /// `{"error": {"code", "message"}}`, the shape every Switchboard error has.
        pub fn error(status: u16, code: &str, message: &str) -> Self {
            Self::json(
                status,
                &serde_json::json!({ "error": { "code": code, "message": message } }),
            )
        }

        /// A plugin [`Error`](crate::Error) as a response with `status`.
        pub fn from_error(status: u16, error: &crate::Error) -> Self {
            Self::error(status, &error.code, &error.message)
        }
    }
}

/// Logging, shown with the plugin's name.
pub mod log {
    use crate::Level;
    pub use crate::bindings::switchboard::plugin::log::log;

    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }

    pub fn info(message: &str) {
        log(Level::Info, message);
    }

    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }

    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// Wall-clock time.
pub mod clock {
    pub use crate::bindings::switchboard::plugin::clock::now_ms;
}

/// The manifest's `config` table, from anywhere in the plugin.
pub mod config {
    use serde::de::DeserializeOwned;

    /// One top-level key as `T`, if present and of that type.
    pub fn get<T: DeserializeOwned>(key: &str) -> Option<T> {
        let json = crate::bindings::switchboard::plugin::config::get(key)?;
        serde_json::from_str(&json).ok()
    }
}
