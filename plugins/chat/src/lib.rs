//! Chat between users in rooms, with history and presence.
//!
//! Events: `join {room}`, `leave {room}`, `send_message {room, text}`,
//! `typing {room}`. Emits `message`, `typing`, `user_online`, `user_offline`.
//! A user is `conn.user_id`, else the handshake's `auth.user`, else the socket.
//! The rooms a user joined are remembered, so a reconnecting user is back in
//! them, and the user's contacts there see it come and go.
//!
//! Nothing is kept forever: a user's remembered rooms (at most
//! `max_saved_rooms`, default 100) expire `saved_rooms_ttl_ms` (default 30
//! days) after the user last connected, joined or left; a room's history and
//! message counter expire `history_ttl_ms` (default 30 days) after its last
//! message; a user's online counter expires a minute after it drops to zero.

use serde::{Deserialize, Serialize};
use switchboard_sdk::{
    Config, Conn, Error, Payload, Plugin, clock, emit, export_plugin, rooms, state,
};

const DEFAULT_HISTORY_SIZE: i64 = 50;
const DEFAULT_MAX_MESSAGE_LENGTH: usize = 500;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;
const DEFAULT_SAVED_ROOMS_TTL_MS: u64 = 30 * DAY_MS;
const DEFAULT_MAX_SAVED_ROOMS: usize = 100;
const DEFAULT_HISTORY_TTL_MS: u64 = 30 * DAY_MS;
/// How long an online counter back at zero is kept: long enough for a
/// reconnect to find it, short enough that users who left leave nothing.
const OFFLINE_COUNTER_TTL_MS: u64 = 60_000;

#[derive(Deserialize)]
struct RoomRequest {
    room: String,
}

#[derive(Deserialize)]
struct SendMessage {
    room: String,
    text: String,
}

#[derive(Serialize, Deserialize)]
struct Message {
    id: i64,
    room: String,
    from: String,
    text: String,
    ts: u64,
}

#[derive(Serialize)]
struct Joined {
    room: String,
    history: Vec<Message>,
    members: u32,
}

#[derive(Serialize)]
struct Typing<'a> {
    room: &'a str,
    from: &'a str,
}

#[derive(Serialize)]
struct Presence<'a> {
    user: &'a str,
}

#[derive(Serialize)]
struct Sent {
    id: i64,
    /// The build's marker, when built with SWITCHBOARD_BUILD_MARKER set (the
    /// hot-reload tests swap between two builds and watch it change).
    #[serde(skip_serializing_if = "Option::is_none")]
    build: Option<&'static str>,
}

#[derive(Serialize)]
struct Left {
    room: String,
}

struct Chat;

impl Plugin for Chat {
    fn init(config: &Config) -> Result<(), Error> {
        // Fail at load, not on the first message, if the config is mistyped.
        config.get::<i64>("history_size")?;
        config.get::<usize>("max_message_length")?;
        config.get::<u64>("saved_rooms_ttl_ms")?;
        config.get::<usize>("max_saved_rooms")?;
        config.get::<u64>("history_ttl_ms")?;
        Ok(())
    }

    fn on_connect(conn: &Conn) -> Result<(), Error> {
        let user = user(conn);
        let rooms = saved_rooms(&user)?;
        for room in &rooms {
            rooms::join(&conn.namespace, &conn.socket_id, room)?;
        }
        // Connecting is activity: the user's rooms are kept for another TTL.
        state::expire(&rooms_key(&user), Some(saved_rooms_ttl()))?;
        let online = state::incr(&online_key(&user), 1)?;
        // A counter that went back to zero was set to expire; in use again, it is kept.
        state::expire(&online_key(&user), None)?;
        if online == 1 {
            for room in &rooms {
                emit::to_room_except(
                    &conn.namespace,
                    room,
                    &conn.socket_id,
                    "user_online",
                    &Presence { user: &user },
                )?;
            }
        }
        Ok(())
    }

    fn on_event(conn: &Conn, event: &str, payload: Payload) -> Result<Option<Payload>, Error> {
        let reply = match event {
            "join" => Payload::new(&join(conn, payload.parse_object()?)?)?,
            "leave" => Payload::new(&leave(conn, payload.parse_object()?)?)?,
            "send_message" => Payload::new(&send_message(conn, payload.parse_object()?)?)?,
            "typing" => {
                typing(conn, payload.parse_object()?)?;
                Payload::new(&serde_json::json!({}))?
            }
            other => return Err(Error::unknown_event(other)),
        };
        Ok(Some(reply))
    }

    fn on_disconnect(conn: &Conn, _reason: &str) {
        let user = user(conn);
        let Ok(remaining) = state::incr(&online_key(&user), -1) else {
            return;
        };
        if remaining > 0 {
            return;
        }
        // The call is a transaction: a socket of the user connecting
        // meanwhile makes it run again and see the count above zero.
        if state::expire(&online_key(&user), Some(OFFLINE_COUNTER_TTL_MS)).is_err() {
            return;
        }
        // Nothing can be reported to a socket that is gone; a failed notice is logged.
        let notify = || -> Result<(), Error> {
            for room in saved_rooms(&user)? {
                emit::to_room(
                    &conn.namespace,
                    &room,
                    "user_offline",
                    &Presence { user: &user },
                )?;
            }
            Ok(())
        };
        if let Err(error) = notify() {
            switchboard_sdk::log::warn(&format!("user_offline for {user} not sent: {error}"));
        }
    }
}

fn join(conn: &Conn, request: RoomRequest) -> Result<Joined, Error> {
    let room = valid_room(request.room)?;
    let user = user(conn);
    let max = max_saved_rooms();
    let saved = saved_rooms(&user)?;
    if saved.len() >= max && !saved.contains(&room) {
        return Err(Error::new(
            "too_many_rooms",
            format!("{user} is in {max} rooms, the limit; leave one first"),
        ));
    }
    rooms::join(&conn.namespace, &conn.socket_id, &room)?;
    update_saved_rooms(&user, |saved| {
        // Checked again here: another socket of the user may have joined meanwhile.
        if !saved.contains(&room) && saved.len() < max {
            saved.push(room.clone());
        }
    })?;
    let history = state::list_range(&history_key(&room), -history_size(), -1)?
        .iter()
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect();
    Ok(Joined {
        members: rooms::size(&conn.namespace, &room)?,
        room,
        history,
    })
}

fn leave(conn: &Conn, request: RoomRequest) -> Result<Left, Error> {
    let room = request.room;
    rooms::leave(&conn.namespace, &conn.socket_id, &room)?;
    update_saved_rooms(&user(conn), |saved| saved.retain(|kept| *kept != room))?;
    Ok(Left { room })
}

fn send_message(conn: &Conn, request: SendMessage) -> Result<Sent, Error> {
    if request.text.trim().is_empty() {
        return Err(Error::new("empty_message", "a message needs some text"));
    }
    let limit =
        switchboard_sdk::config::get("max_message_length").unwrap_or(DEFAULT_MAX_MESSAGE_LENGTH);
    let length = request.text.chars().count();
    if length > limit {
        return Err(Error::new(
            "message_too_long",
            format!("the message has {length} characters; the limit is {limit}"),
        ));
    }
    require_member(conn, &request.room)?;
    let sequence = sequence_key(&request.room);
    let message = Message {
        id: state::incr(&sequence, 1)?,
        from: user(conn),
        ts: clock::now_ms(),
        room: request.room,
        text: request.text,
    };
    let history = history_key(&message.room);
    let json = serde_json::to_string(&message)
        .map_err(|error| Error::new("internal", error.to_string()))?;
    state::list_push(&history, &[json])?;
    state::list_trim(&history, -history_size(), -1)?;
    let history_ttl =
        switchboard_sdk::config::get("history_ttl_ms").unwrap_or(DEFAULT_HISTORY_TTL_MS);
    state::expire(&history, Some(history_ttl))?;
    state::expire(&sequence, Some(history_ttl))?;
    emit::to_room(&conn.namespace, &message.room, "message", &message)?;
    Ok(Sent {
        id: message.id,
        build: option_env!("SWITCHBOARD_BUILD_MARKER"),
    })
}

fn typing(conn: &Conn, request: RoomRequest) -> Result<(), Error> {
    require_member(conn, &request.room)?;
    let from = user(conn);
    let notice = Typing {
        room: &request.room,
        from: &from,
    };
    emit::to_room_except(
        &conn.namespace,
        &request.room,
        &conn.socket_id,
        "typing",
        &notice,
    )
}

fn require_member(conn: &Conn, room: &str) -> Result<(), Error> {
    if rooms::rooms_of(&conn.namespace, &conn.socket_id)?
        .iter()
        .any(|joined| joined == room)
    {
        Ok(())
    } else {
        Err(Error::new(
            "not_in_room",
            format!("join `{room}` before sending to it"),
        ))
    }
}

/// Blank names are refused here; the host refuses its own rooms (`socket:`,
/// `user:`) with `reserved_room` and malformed names with `invalid_room`.
fn valid_room(room: String) -> Result<String, Error> {
    if room.trim().is_empty() {
        return Err(Error::invalid_payload("a room name cannot be blank"));
    }
    Ok(room)
}

fn user(conn: &Conn) -> String {
    conn.user_id
        .clone()
        .or_else(|| conn.auth_field::<String>("user"))
        .unwrap_or_else(|| conn.socket_id.clone())
}

fn saved_rooms(user: &str) -> Result<Vec<String>, Error> {
    Ok(state::get_json(&rooms_key(user))?.unwrap_or_default())
}

/// Changes the user's remembered rooms. The user's sockets may join and
/// leave concurrently, on different nodes: the call's transaction keeps
/// every change.
fn update_saved_rooms(user: &str, change: impl FnOnce(&mut Vec<String>)) -> Result<(), Error> {
    let ttl = Some(saved_rooms_ttl());
    state::update_json(&rooms_key(user), ttl, |saved: Option<Vec<String>>| {
        let mut saved = saved.unwrap_or_default();
        change(&mut saved);
        saved
    })
    .map(drop)
}

fn saved_rooms_ttl() -> u64 {
    switchboard_sdk::config::get("saved_rooms_ttl_ms").unwrap_or(DEFAULT_SAVED_ROOMS_TTL_MS)
}

fn max_saved_rooms() -> usize {
    switchboard_sdk::config::get("max_saved_rooms").unwrap_or(DEFAULT_MAX_SAVED_ROOMS)
}

fn history_size() -> i64 {
    switchboard_sdk::config::get("history_size")
        .unwrap_or(DEFAULT_HISTORY_SIZE)
        .max(1)
}

fn rooms_key(user: &str) -> String {
    format!("rooms:{user}")
}

fn online_key(user: &str) -> String {
    format!("online:{user}")
}

fn history_key(room: &str) -> String {
    format!("history:{room}")
}

fn sequence_key(room: &str) -> String {
    format!("seq:{room}")
}

export_plugin!(Chat);
