//! Test-only plugin: the load tools' contract as plain socketioxide serves
//! it (tests/load/socketioxide-baseline), keeping no state, so the fanout
//! benchmark can compare the two servers' delivery paths alone.
//!
//! - `join {room}` / `leave {room}`: acks `{room}` (and `history: []` on join).
//! - `send_message {room, text}`: a sender in the room has `message {id,
//!   room, from, text, ts}` emitted to it; acks `{id}`. Ids count per
//!   instance, as the baseline's count per node.
//! - `echo <anything>`: acks `{echo}`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use switchboard_sdk::{Conn, Error, Payload, Plugin, clock, emit, export_plugin, rooms};

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

#[derive(Deserialize)]
struct Room {
    room: String,
}

#[derive(Deserialize)]
struct Send {
    room: String,
    text: String,
}

#[derive(Serialize)]
struct Joined {
    room: String,
    history: [(); 0],
}

#[derive(Serialize)]
struct Left {
    room: String,
}

#[derive(Serialize)]
struct Message<'a> {
    id: u64,
    room: &'a str,
    from: String,
    text: &'a str,
    ts: u64,
}

#[derive(Serialize)]
struct Sent {
    id: u64,
}

#[derive(Serialize)]
struct Echoed {
    echo: serde_json::Value,
}

struct Relay;

impl Plugin for Relay {
    fn on_event(conn: &Conn, event: &str, payload: Payload) -> Result<Option<Payload>, Error> {
        let reply = match event {
            "join" => {
                let Room { room } = payload.parse_object()?;
                rooms::join(&conn.namespace, &conn.socket_id, &room)?;
                Payload::new(&Joined { room, history: [] })?
            }
            "leave" => {
                let Room { room } = payload.parse_object()?;
                rooms::leave(&conn.namespace, &conn.socket_id, &room)?;
                Payload::new(&Left { room })?
            }
            "send_message" => {
                let Send { room, text } = payload.parse_object()?;
                if !rooms::rooms_of(&conn.namespace, &conn.socket_id)?.contains(&room) {
                    return Err(Error::new("not_in_room", room));
                }
                let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                let message = Message {
                    id,
                    room: &room,
                    from: conn
                        .auth_field::<String>("user")
                        .unwrap_or_else(|| conn.socket_id.clone()),
                    text: &text,
                    ts: clock::now_ms(),
                };
                emit::to_room(&conn.namespace, &room, "message", &message)?;
                Payload::new(&Sent { id })?
            }
            "echo" => Payload::new(&Echoed {
                echo: payload.parse()?,
            })?,
            other => return Err(Error::unknown_event(other)),
        };
        Ok(Some(reply))
    }
}

export_plugin!(Relay);
