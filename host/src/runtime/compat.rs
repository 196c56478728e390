//! Plugins built against WIT 0.1 keep loading: the host links every 0.1.2
//! import (0.1.0 and 0.1.1 components link to them too, as semver allows) and
//! serves each by its 0.2 implementation. Only payloads differ: 0.1 has one
//! JSON text where 0.2 has one per argument. An event's arguments reach a
//! 0.1 plugin as 0.1 documented them (one as is, several as a JSON array,
//! none as `null`); what it sends is one argument.

use crate::bindings::exports::switchboard::plugin::http_handler::{Request, Response};
use crate::bindings::switchboard::plugin as current;
use crate::bindings::v0_1::exports::switchboard::plugin::http_handler as legacy_http;
use crate::bindings::v0_1::switchboard::plugin as legacy;
use crate::bindings::{Conn, Level, Payload, PluginError};
use crate::payload;
use crate::runtime::InstanceState;

/// An event's arguments as a 0.1 plugin gets them.
pub fn payload_to_0_1(payload: &Payload) -> legacy::types::Payload {
    let json = match payload.args.as_slice() {
        [] => "null".to_owned(),
        [one] => one.clone(),
        several => format!("[{}]", several.join(",")),
    };
    legacy::types::Payload {
        json,
        attachments: payload.attachments.clone(),
    }
}

/// What a 0.1 plugin sends: one argument.
pub fn payload_from_0_1(payload: legacy::types::Payload) -> Payload {
    Payload {
        attachments: payload.attachments,
        ..payload::one_argument(payload.json)
    }
}

impl From<&Conn> for legacy::types::Conn {
    fn from(conn: &Conn) -> Self {
        Self {
            socket_id: conn.socket_id.clone(),
            namespace: conn.namespace.clone(),
            auth: conn.auth.clone(),
            user_id: conn.user_id.clone(),
        }
    }
}

impl From<legacy::types::Error> for PluginError {
    fn from(error: legacy::types::Error) -> Self {
        Self {
            code: error.code,
            message: error.message,
        }
    }
}

impl From<PluginError> for legacy::types::Error {
    fn from(error: PluginError) -> Self {
        Self {
            code: error.code,
            message: error.message,
        }
    }
}

impl From<&Request> for legacy_http::Request {
    fn from(request: &Request) -> Self {
        Self {
            method: request.method.clone(),
            path: request.path.clone(),
            params: request.params.clone(),
            query: request.query.clone(),
            headers: request.headers.clone(),
            body: request.body.clone(),
            user_id: request.user_id.clone(),
        }
    }
}

impl From<legacy_http::Response> for Response {
    fn from(response: legacy_http::Response) -> Self {
        Self {
            status: response.status,
            headers: response.headers,
            body: response.body,
        }
    }
}

type LegacyError = legacy::types::Error;

impl legacy::types::Host for InstanceState {}

/// Serves a 0.1 interface's functions that return `result<T, error>` by the
/// 0.2 interface's functions of the same name; an argument written
/// `name: Type as convert` is passed on as `convert(name)`.
macro_rules! by_current {
    ($interface:ident {
        $(fn $name:ident($($argument:ident: $type:ty $(as $convert:path)?),*) -> $ok:ty;)*
    }) => {
        impl legacy::$interface::Host for InstanceState {
            $(
                async fn $name(&mut self, $($argument: $type),*) -> Result<$ok, LegacyError> {
                    current::$interface::Host::$name(self, $(by_current!(@pass $argument $(, $convert)?)),*)
                        .await
                        .map_err(LegacyError::from)
                }
            )*
        }
    };
    (@pass $argument:ident) => { $argument };
    (@pass $argument:ident, $convert:path) => { $convert($argument) };
}

type LegacyPayload = legacy::types::Payload;

by_current!(emit {
    fn to_socket(namespace: String, socket_id: String, event: String, payload: LegacyPayload as payload_from_0_1) -> ();
    fn to_room(namespace: String, room: String, event: String, payload: LegacyPayload as payload_from_0_1) -> ();
    fn to_room_except(namespace: String, room: String, except_socket_id: String, event: String, payload: LegacyPayload as payload_from_0_1) -> ();
    fn to_namespace(namespace: String, event: String, payload: LegacyPayload as payload_from_0_1) -> ();
});

by_current!(immediate {
    fn emit_to_socket(namespace: String, socket_id: String, event: String, payload: LegacyPayload as payload_from_0_1) -> ();
    fn emit_to_room(namespace: String, room: String, event: String, payload: LegacyPayload as payload_from_0_1) -> ();
    fn incr(key: String, delta: i64) -> i64;
});

by_current!(rooms {
    fn join(namespace: String, socket_id: String, room: String) -> ();
    fn leave(namespace: String, socket_id: String, room: String) -> ();
    fn size(namespace: String, room: String) -> u32;
    fn members(namespace: String, room: String) -> Vec<String>;
    fn rooms_of(namespace: String, socket_id: String) -> Vec<String>;
});

by_current!(timers {
    fn schedule(at_ms: u64, key: String, payload: String) -> ();
    fn cancel(key: String) -> bool;
});

by_current!(state {
    fn get(key: String) -> Option<String>;
    fn set(key: String, value: String, ttl_ms: Option<u64>) -> ();
    fn delete(key: String) -> bool;
    fn incr(key: String, delta: i64) -> i64;
    fn compare_and_swap(key: String, expected: Option<String>, new: String, ttl_ms: Option<u64>) -> bool;
    fn expire(key: String, ttl_ms: Option<u64>) -> bool;
    fn list_push(key: String, values: Vec<String>) -> u64;
    fn list_range(key: String, start: i64, stop: i64) -> Vec<String>;
    fn list_trim(key: String, start: i64, stop: i64) -> ();
    fn get_many(keys: Vec<String>) -> Vec<Option<String>>;
    fn len(key: String) -> u64;
    fn hash_get(key: String, field: String) -> Option<String>;
    fn hash_get_all(key: String) -> Vec<(String, String)>;
    fn hash_set(key: String, field: String, value: String) -> bool;
    fn hash_delete(key: String, field: String) -> bool;
    fn hash_incr(key: String, field: String, delta: i64) -> i64;
    fn set_add(key: String, member: String) -> bool;
    fn set_remove(key: String, member: String) -> bool;
    fn set_contains(key: String, member: String) -> bool;
    fn set_members(key: String) -> Vec<String>;
    fn sorted_add(key: String, member: String, score: f64) -> bool;
    fn sorted_incr(key: String, member: String, delta: f64) -> f64;
    fn sorted_score(key: String, member: String) -> Option<f64>;
    fn sorted_remove(key: String, member: String) -> bool;
    fn sorted_range(key: String, start: i64, stop: i64, descending: bool) -> Vec<(String, f64)>;
});

impl legacy::log::Host for InstanceState {
    async fn log(&mut self, level: legacy::types::Level, message: String) {
        let level = match level {
            legacy::types::Level::Trace => Level::Trace,
            legacy::types::Level::Debug => Level::Debug,
            legacy::types::Level::Info => Level::Info,
            legacy::types::Level::Warn => Level::Warn,
            legacy::types::Level::Error => Level::Error,
        };
        current::log::Host::log(self, level, message).await;
    }
}

impl legacy::clock::Host for InstanceState {
    async fn now_ms(&mut self) -> u64 {
        current::clock::Host::now_ms(self).await
    }
}

impl legacy::config::Host for InstanceState {
    async fn all(&mut self) -> String {
        current::config::Host::all(self).await
    }

    async fn get(&mut self, key: String) -> Option<String> {
        current::config::Host::get(self, key).await
    }
}
