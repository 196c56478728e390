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
//! (`{ size }`: acks a string of `size` bytes), `fill` (`{ prefix, from?,
//! count, size }`: sets the keys `{prefix}{n}` for `count` n from `from` to
//! `size` bytes in one call, going on after refusals, and acks how many it
//! set and the refusals' codes) and `gather`
//! (`{ prefix, count }`: reads those keys one by one in one call and acks
//! how many exist).

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
struct Fill {
    prefix: String,
    #[serde(default)]
    from: u32,
    count: u32,
    size: usize,
}

#[derive(Deserialize)]
struct Gather {
    prefix: String,
    count: u32,
}

#[derive(Deserialize)]
struct Huge {
    size: usize,
}

struct Greedy;

/// How many `attempts` succeeded, and the codes of those that failed with
/// their counts: the plugin goes on after a refusal.
fn tally(attempts: impl Iterator<Item = Result<(), Error>>) -> (u32, BTreeMap<String, u32>) {
    let mut succeeded = 0;
    let mut refused = BTreeMap::new();
    for attempt in attempts {
        match attempt {
            Ok(()) => succeeded += 1,
            Err(error) => *refused.entry(error.code).or_default() += 1,
        }
    }
    (succeeded, refused)
}

impl Plugin for Greedy {
    fn on_event(conn: &Conn, event: &str, payload: Payload) -> Result<Option<Payload>, Error> {
        match event {
            "join_rooms" => {
                let request: JoinRooms = payload.parse_object()?;
                let (joined, refused) = tally((0..request.count).map(|index| {
                    let room = format!("{}{index}", request.prefix);
                    rooms::join(&conn.namespace, &conn.socket_id, &room)
                }));
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
                let (sent, refused) = tally((0..request.count).map(|n| {
                    let flood = json!({ "n": n, "filler": filler });
                    emit::to_room(&conn.namespace, &request.room, "flood", &flood)
                }));
                Ok(Some(Payload::new(
                    &json!({ "sent": sent, "refused": refused }),
                )?))
            }
            "fill" => {
                let request: Fill = payload.parse_object()?;
                let value = "x".repeat(request.size);
                let keys = request.from..request.from + request.count;
                let (written, refused) = tally(
                    keys.map(|n| state::set(&format!("{}{n}", request.prefix), &value, None)),
                );
                Ok(Some(Payload::new(
                    &json!({ "written": written, "refused": refused }),
                )?))
            }
            "gather" => {
                let request: Gather = payload.parse_object()?;
                let mut found = 0;
                // One at a time, each value dropped once counted: the
                // plugin's memory need not hold them all, the host's
                // transaction does.
                for n in 0..request.count {
                    if state::get(&format!("{}{n}", request.prefix))?.is_some() {
                        found += 1;
                    }
                }
                Ok(Some(Payload::new(&found)?))
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
