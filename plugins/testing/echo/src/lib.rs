//! The echo contract, as plugins/js/echo and plugins/python/echo implement it:
//!
//! - `join {room}`: the socket joins the room; acks `{room, members}`.
//! - `say {room, text}`: counts the room's messages in state and emits
//!   `said {from, text}` to the room; acks `{count}`.
//! - `echo <anything>`: acks the payload unchanged.
//!
//! A payload of the wrong shape fails with `invalid_payload`.

use serde::{Deserialize, Serialize};
use switchboard_sdk::{Conn, Error, Payload, Plugin, emit, export_plugin, rooms, state};

#[derive(Deserialize)]
struct Join {
    room: String,
}

#[derive(Serialize)]
struct Joined {
    room: String,
    members: u32,
}

#[derive(Deserialize)]
struct Say {
    room: String,
    text: String,
}

#[derive(Serialize)]
struct Said<'a> {
    from: &'a str,
    text: &'a str,
}

#[derive(Serialize)]
struct Counted {
    count: i64,
}

struct Echo;

impl Plugin for Echo {
    fn on_event(conn: &Conn, event: &str, payload: Payload) -> Result<Option<Payload>, Error> {
        match event {
            "join" => {
                let Join { room } = payload.parse_object()?;
                rooms::join(&conn.namespace, &conn.socket_id, &room)?;
                let members = rooms::size(&conn.namespace, &room)?;
                Payload::new(&Joined { room, members }).map(Some)
            }
            "say" => {
                let Say { room, text } = payload.parse_object()?;
                let count = state::incr(&format!("said:{room}"), 1)?;
                let said = Said {
                    from: &conn.socket_id,
                    text: &text,
                };
                emit::to_room(&conn.namespace, &room, "said", &said)?;
                Payload::new(&Counted { count }).map(Some)
            }
            "echo" => Ok(Some(payload)),
            other => Err(Error::unknown_event(other)),
        }
    }
}

export_plugin!(Echo);
