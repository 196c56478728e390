//! Test-only plugin that takes all it can, so the end-to-end tests can check
//! the host's quotas.
//!
//! Events: `join_rooms` (`{ prefix, count }`: tries to put the sender in
//! `count` rooms, going on after refusals, and acks how many it joined, the
//! refusals' codes with their counts, and the rooms the sender is in), `leave_room`
//! (`{ room }`), `store` (`{ key, value, ttl_ms? }`: `state.set`) and `push`
//! (`{ key, values }`: `state.list-push`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;
use switchboard_sdk::{Conn, Error, Payload, Plugin, export_plugin, rooms, state};

#[derive(Deserialize)]
struct JoinRooms {
    prefix: String,
    count: u32,
}

#[derive(Deserialize)]
struct Room {
    room: String,
}

#[derive(Deserialize)]
struct Store {
    key: String,
    value: String,
    ttl_ms: Option<u64>,
}

#[derive(Deserialize)]
struct Push {
    key: String,
    values: Vec<String>,
}

struct Greedy;

impl Plugin for Greedy {
    fn on_event(conn: &Conn, event: &str, payload: Payload) -> Result<Option<Payload>, Error> {
        match event {
            "join_rooms" => {
                let request: JoinRooms = payload.parse_object()?;
                let mut joined = 0;
                let mut refused: BTreeMap<String, u32> = BTreeMap::new();
                for index in 0..request.count {
                    let room = format!("{}{index}", request.prefix);
                    match rooms::join(&conn.namespace, &conn.socket_id, &room) {
                        Ok(()) => joined += 1,
                        Err(error) => *refused.entry(error.code).or_default() += 1,
                    }
                }
                let rooms = rooms::rooms_of(&conn.namespace, &conn.socket_id)?;
                Ok(Some(Payload::new(&json!({
                    "joined": joined,
                    "refused": refused,
                    "rooms": rooms.len(),
                }))?))
            }
            "leave_room" => {
                let request: Room = payload.parse_object()?;
                rooms::leave(&conn.namespace, &conn.socket_id, &request.room)?;
                Ok(None)
            }
            "store" => {
                let request: Store = payload.parse_object()?;
                state::set(&request.key, &request.value, request.ttl_ms)?;
                Ok(None)
            }
            "push" => {
                let request: Push = payload.parse_object()?;
                Ok(Some(Payload::new(&state::list_push(
                    &request.key,
                    &request.values,
                )?)?))
            }
            other => Err(Error::unknown_event(other)),
        }
    }
}

export_plugin!(Greedy);
