//! Test-only plugin that misbehaves on purpose, so the end-to-end tests can
//! check the host's limits, and measures the bare dispatch path.
//!
//! Events: `echo` (acks the payload with a marker), `relay` (emits the
//! payload back to the sender), `trap` (panics), `spin` (loops forever), `hog`
//! (allocates without bound), `fail` (returns an error), `count` (increments a
//! shared counter), `claim` (compare-and-swap race for a key), `whoami` (acks
//! the socket id, the verified user id and the handshake `auth`, parsed and
//! as the text the plugin got), `disconnect_reason` (acks the `on-disconnect`
//! reason a socket id got, kept for a minute), `recoveries` (acks how many
//! times a socket id recovered its session), `schedule` / `cancel`
//! (a timer that emits `timer` back to the socket; the key `trap` panics
//! instead), `log` (logs the payload, a string, at `info`, as a plugin that
//! logs client text would). Its HTTP routes echo the request they got, but paths ending in
//! `/trap` panic and paths ending in `/spin` loop forever.

use serde::Deserialize;
use serde_json::json;
use switchboard_sdk::{
    Config, Conn, Error, Payload, Plugin, clock, emit, export_plugin, http, log, state, timers,
};

/// `fail`'s argument: the error code to fail with, made from what the client
/// sent, as a careless plugin might.
#[derive(Deserialize)]
struct Fail {
    code: String,
}

#[derive(Deserialize)]
struct Claim {
    key: String,
}

#[derive(Deserialize)]
struct SocketId {
    socket_id: String,
}

/// How long a disconnect reason is kept for `disconnect_reason`.
const REASON_TTL_MS: u64 = 60_000;

fn reason_key(socket_id: &str) -> String {
    format!("disconnect_reason:{socket_id}")
}

fn recoveries_key(socket_id: &str) -> String {
    format!("recoveries:{socket_id}")
}

#[derive(Deserialize)]
struct Schedule {
    key: String,
    delay_ms: u64,
    #[serde(default)]
    payload: serde_json::Value,
}

/// What a timer carries: where to report it.
#[derive(serde::Serialize, Deserialize)]
struct TimerTarget {
    namespace: String,
    socket_id: String,
    payload: serde_json::Value,
}

struct Faulty;

/// What `echo` replies carry as `marker`: set by `init`, for the life of the
/// instance (a new config or build means new instances).
static MARKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

impl Plugin for Faulty {
    fn init(config: &Config) -> Result<(), Error> {
        if config.get::<bool>("fail_init")?.unwrap_or(false) {
            return Err(Error::new("bad_config", "fail_init is set"));
        }
        // Builds differ by SWITCHBOARD_BUILD_MARKER, which hot-reload tests swap between.
        let marker = config.get::<String>("marker")?.unwrap_or_else(|| {
            option_env!("SWITCHBOARD_BUILD_MARKER")
                .unwrap_or("faulty")
                .to_owned()
        });
        let _ = MARKER.set(marker);
        Ok(())
    }

    fn on_connect(conn: &Conn) -> Result<(), Error> {
        if conn.auth_field::<bool>("deny").unwrap_or(false) {
            return Err(Error::new("denied", "denied by faulty plugin"));
        }
        Ok(())
    }

    fn on_event(conn: &Conn, event: &str, payload: Payload) -> Result<Option<Payload>, Error> {
        match event {
            "echo" => {
                let echo: serde_json::Value = payload.parse()?;
                let marker = MARKER.get().map_or("faulty", String::as_str);
                Ok(Some(Payload::new(
                    &json!({ "echo": echo, "marker": marker }),
                )?))
            }
            "relay" => {
                emit::raw::to_socket(&conn.namespace, &conn.socket_id, "relay", &payload)?;
                Ok(None)
            }
            "trap" => panic!("asked to trap"),
            "spin" => loop {
                std::hint::black_box(());
            },
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "fail" => {
                let code = payload.parse::<Fail>().map(|fail| fail.code);
                Err(Error::new(
                    code.as_deref().unwrap_or("deliberate"),
                    "asked to fail",
                ))
            }
            "log" => {
                let text: String = payload.parse()?;
                log::info(&text);
                Ok(Some(Payload::new(&json!({ "logged": text.len() }))?))
            }
            "count" => Ok(Some(Payload::new(&state::incr("counter", 1)?)?)),
            "claim" => {
                let claim: Claim = payload.parse()?;
                let won = state::compare_and_swap(
                    &format!("claim:{}", claim.key),
                    None,
                    &conn.socket_id,
                    None,
                )?;
                Ok(Some(Payload::new(&json!({ "won": won }))?))
            }
            "whoami" => {
                let auth: serde_json::Value = serde_json::from_str(&conn.auth)
                    .map_err(|error| Error::new("bad_auth", error.to_string()))?;
                Ok(Some(Payload::new(&json!({
                    "socket_id": conn.socket_id,
                    "user_id": conn.user_id,
                    "auth": auth,
                    "auth_text": conn.auth,
                }))?))
            }
            "recoveries" => {
                let socket: SocketId = payload.parse_object()?;
                let recoveries = state::get(&recoveries_key(&socket.socket_id))?;
                Ok(Some(Payload::new(
                    &recoveries
                        .map_or(Ok(0), |count| count.parse::<u32>())
                        .map_err(|error| Error::new("bad_count", error.to_string()))?,
                )?))
            }
            "disconnect_reason" => {
                let socket: SocketId = payload.parse_object()?;
                Ok(Some(Payload::new(&state::get(&reason_key(
                    &socket.socket_id,
                ))?)?))
            }
            "schedule" => {
                let schedule: Schedule = payload.parse_object()?;
                let target = TimerTarget {
                    namespace: conn.namespace.clone(),
                    socket_id: conn.socket_id.clone(),
                    payload: schedule.payload,
                };
                let target = serde_json::to_string(&target)
                    .map_err(|error| Error::new("internal", error.to_string()))?;
                timers::schedule(clock::now_ms() + schedule.delay_ms, &schedule.key, &target)?;
                Ok(Some(Payload::new(&json!({ "scheduled": schedule.key }))?))
            }
            "cancel" => {
                let claim: Claim = payload.parse_object()?;
                Ok(Some(Payload::new(
                    &json!({ "cancelled": timers::cancel(&claim.key)? }),
                )?))
            }
            other => Err(Error::unknown_event(other)),
        }
    }

    fn on_recovered(conn: &Conn) {
        let key = recoveries_key(&conn.socket_id);
        let kept = state::incr(&key, 1).and_then(|_| state::expire(&key, Some(REASON_TTL_MS)));
        if let Err(error) = kept {
            log::warn(&format!("recovery not counted: {}", error.message));
        }
    }

    fn on_disconnect(conn: &Conn, reason: &str) {
        if let Err(error) = state::set(&reason_key(&conn.socket_id), reason, Some(REASON_TTL_MS)) {
            log::warn(&format!("disconnect reason not kept: {}", error.message));
        }
    }

    fn on_http(request: http::Request) -> http::Response {
        if request.path.ends_with("/trap") {
            panic!("asked to trap over HTTP");
        }
        if request.path.ends_with("/spin") {
            loop {
                std::hint::black_box(());
            }
        }
        let header_names: Vec<&str> = request
            .headers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        http::Response::json(
            200,
            &json!({
                "method": request.method,
                "path": request.path,
                "params": request.params,
                "query": request.query,
                "header_names": header_names,
                "body": String::from_utf8_lossy(&request.body),
                "user_id": request.user_id,
            }),
        )
    }

    fn on_timer(key: &str, payload: &str) -> Result<(), Error> {
        if key == "trap" {
            panic!("asked to trap in a timer");
        }
        let target: TimerTarget = serde_json::from_str(payload)
            .map_err(|error| Error::new("bad_timer", error.to_string()))?;
        emit::to_socket(
            &target.namespace,
            &target.socket_id,
            "timer",
            &json!({ "key": key, "payload": target.payload }),
        )
    }
}

export_plugin!(Faulty);
