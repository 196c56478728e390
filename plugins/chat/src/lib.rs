//! Chat between users in rooms, with history and presence.
//!
//! Events: `join {room}`, `leave {room}`, `send_message {room, text}`,
//! `typing {room}`. Emits `message`, `typing`, `user_online`, `user_offline`.
//! A user is `conn.user_id`, else the handshake's `auth.user`, else the socket.
//! The rooms a user joined are remembered, so a reconnecting user is back in
//! them, and the user's contacts there see it come and go.

use serde::{Deserialize, Serialize};
use switchboard_sdk::{
    Config, Conn, Error, Payload, Plugin, clock, emit, export_plugin, rooms, state,
};

const DEFAULT_HISTORY_SIZE: i64 = 50;
const DEFAULT_MAX_MESSAGE_LENGTH: usize = 500;

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
        Ok(())
    }

    fn on_connect(conn: &Conn) -> Result<(), Error> {
        let user = user(conn);
        let rooms = saved_rooms(&user)?;
        for room in &rooms {
            rooms::join(&conn.namespace, &conn.socket_id, room)?;
        }
        if state::incr(&online_key(&user), 1)? == 1 {
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
    rooms::join(&conn.namespace, &conn.socket_id, &room)?;
    update_saved_rooms(&user(conn), |saved| {
        if !saved.contains(&room) {
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
    let message = Message {
        id: state::incr(&format!("seq:{}", request.room), 1)?,
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

/// Changes the user's remembered rooms atomically: the user's sockets may
/// join and leave concurrently, on different nodes.
fn update_saved_rooms(user: &str, mut change: impl FnMut(&mut Vec<String>)) -> Result<(), Error> {
    state::update_json(&rooms_key(user), None, |saved: Option<Vec<String>>| {
        let mut saved = saved.unwrap_or_default();
        change(&mut saved);
        saved
    })
    .map(drop)
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

export_plugin!(Chat);
