//! Test-only plugin that takes all it can, so the end-to-end tests can check
//! the host's quotas.
//!
//! Events: `join_rooms` (`{ prefix, count }`: tries to put the sender in
//! `count` rooms, going on after refusals, and acks how many it joined, the
//! refusals' codes with their counts, and the rooms the sender is in), `leave_room`
//! (`{ room }`), `store` (`{ key, value, ttl_ms? }`: `state.set`) and `push`
//! (`{ key, values }`: `state.list-push`), `flood` (`{ room, count, size }`:
//! emits `count` events of `size` bytes to `room`, going on after failures,
//! and acks how many went out and the failures' codes) and `huge`
//! (`{ size }`: acks a string of `size` bytes).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;
use switchboard_sdk::{Conn, Error, Payload, Plugin, emit, export_plugin, rooms, state};

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

#[derive(Deserialize)]
struct Flood {
    room: String,
    count: u32,
    size: usize,
}

#[derive(Deserialize)]
struct Huge {
    size: usize,
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
            "flood" => {
                let request: Flood = payload.parse_object()?;
                let filler = "x".repeat(request.size);
                let mut sent = 0;
                let mut refused: BTreeMap<String, u32> = BTreeMap::new();
                for n in 0..request.count {
                    let flood = json!({ "n": n, "filler": filler });
                    match emit::to_room(&conn.namespace, &request.room, "flood", &flood) {
                        Ok(()) => sent += 1,
                        Err(error) => *refused.entry(error.code).or_default() += 1,
                    }
                }
                Ok(Some(Payload::new(
                    &json!({ "sent": sent, "refused": refused }),
                )?))
            }
            "huge" => {
                let request: Huge = payload.parse_object()?;
                Ok(Some(Payload::new(&"x".repeat(request.size))?))
            }
            other => Err(Error::unknown_event(other)),
        }
    }
}

export_plugin!(Greedy);
