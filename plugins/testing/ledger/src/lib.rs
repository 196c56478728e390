//! Test-only plugin for the transaction model: what a handler call writes
//! and emits is applied whole or not at all, and concurrent calls are
//! serializable. Namespace `/ledger`; every event acks JSON.
//!
//! - `vote {poll, user, option}`: counts the user's vote once
//!   (`set-add` then `hash-incr`); acks `{counted}`.
//! - `tally {poll}`: acks `{voters, counts}`.
//! - `write {key}`: stores `key` and a set `{key}:set`, emits `written` to
//!   the namespace; `write_then_trap` / `write_then_fail` then panic / return
//!   an error.
//! - `wait_then_bump {key, gate}`: reads `key`, bumps the immediate counter
//!   `reading:{key}`, waits until the immediate
//!   counter `gate` is above zero, writes `key + 1`; acks
//!   `{value, attempts}`, its runs counted with the immediate counter
//!   `attempts:{key}`.
//! - `bump {key}`: `key + 1`; `open {gate}`: the immediate counter `gate + 1`.
//! - `count {key}`: `key + 1`, its runs counted with the immediate counter
//!   `runs:{key}` (for tests/load/transactions.mjs: runs over commits is the
//!   retry rate).
//! - `hatch_then_trap {key}`: emits `hatched` and bumps `key` immediately,
//!   emits `buffered` in the transaction, then panics. Both go to the room
//!   `watchers`, which sockets connecting with `auth {user: "watcher"}` join.
//! - `read {key}`: acks the string value.

use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_sdk::{Conn, Error, Payload, Plugin, emit, export_plugin, immediate, state};

#[derive(Deserialize)]
struct Vote {
    poll: String,
    user: String,
    option: String,
}

#[derive(Deserialize)]
struct Poll {
    poll: String,
}

#[derive(Deserialize)]
struct Key {
    key: String,
}

#[derive(Deserialize)]
struct Gated {
    key: String,
    gate: String,
}

#[derive(Deserialize)]
struct Gate {
    gate: String,
}

fn voters_key(poll: &str) -> String {
    format!("poll:{poll}:voters")
}

fn counts_key(poll: &str) -> String {
    format!("poll:{poll}:counts")
}

fn number(key: &str) -> Result<i64, Error> {
    Ok(state::get(key)?
        .and_then(|value| value.parse().ok())
        .unwrap_or(0))
}

/// Where `hatch_then_trap` emits: sockets that connect with `{user: "watcher"}`.
const WATCHERS: &str = "watchers";

struct Ledger;

impl Ledger {
    fn handle(conn: &Conn, event: &str, payload: &Payload) -> Result<Value, Error> {
        let namespace = &conn.namespace;
        Ok(match event {
            "vote" => {
                let Vote { poll, user, option } = payload.parse_object()?;
                let counted = state::set_add(&voters_key(&poll), &user)?;
                if counted {
                    state::hash_incr(&counts_key(&poll), &option, 1)?;
                }
                json!({ "counted": counted })
            }
            "tally" => {
                let Poll { poll } = payload.parse_object()?;
                let counts: serde_json::Map<String, Value> =
                    state::hash_get_all(&counts_key(&poll))?
                        .into_iter()
                        .map(|(option, count)| (option, json!(count.parse::<i64>().unwrap_or(-1))))
                        .collect();
                json!({ "voters": state::len(&voters_key(&poll))?, "counts": counts })
            }
            "write" | "write_then_trap" | "write_then_fail" => {
                let Key { key } = payload.parse_object()?;
                state::set(&key, "written", None)?;
                state::set_add(&format!("{key}:set"), "member")?;
                emit::to_namespace(namespace, "written", &json!({ "key": key }))?;
                match event {
                    "write_then_trap" => panic!("trapping after a write, on purpose"),
                    "write_then_fail" => {
                        return Err(Error::new("failed_on_purpose", "failing after a write"));
                    }
                    _ => json!({ "written": key }),
                }
            }
            "wait_then_bump" => {
                let Gated { key, gate } = payload.parse_object()?;
                let attempts = immediate::incr(&format!("attempts:{key}"), 1)?;
                let value = number(&key)?;
                immediate::incr(&format!("reading:{key}"), 1)?;
                // Bounded by the plugin's time limit.
                while immediate::incr(&gate, 0)? == 0 {}
                state::set(&key, &(value + 1).to_string(), None)?;
                json!({ "value": value + 1, "attempts": attempts })
            }
            "count" => {
                let Key { key } = payload.parse_object()?;
                immediate::incr(&format!("runs:{key}"), 1)?;
                json!({ "value": state::incr(&key, 1)? })
            }
            "bump" => {
                let Key { key } = payload.parse_object()?;
                json!({ "value": state::incr(&key, 1)? })
            }
            "open" => {
                let Gate { gate } = payload.parse_object()?;
                json!({ "gate": immediate::incr(&gate, 1)? })
            }
            "hatch_then_trap" => {
                let Key { key } = payload.parse_object()?;
                immediate::to_room(namespace, WATCHERS, "hatched", &json!({ "key": key }))?;
                immediate::incr(&key, 1)?;
                emit::to_room(namespace, WATCHERS, "buffered", &json!({ "key": key }))?;
                panic!("trapping after the escape hatch, on purpose");
            }
            "read" => {
                let Key { key } = payload.parse_object()?;
                json!({ "value": state::get(&key)? })
            }
            other => return Err(Error::unknown_event(other)),
        })
    }
}

impl Plugin for Ledger {
    fn on_connect(conn: &Conn) -> Result<(), Error> {
        if conn.auth_field::<String>("user").as_deref() == Some("watcher") {
            switchboard_sdk::rooms::join(&conn.namespace, &conn.socket_id, WATCHERS)?;
        }
        Ok(())
    }

    fn on_event(conn: &Conn, event: &str, payload: Payload) -> Result<Option<Payload>, Error> {
        Ok(Some(Payload::new(&Self::handle(conn, event, &payload)?)?))
    }
}

export_plugin!(Ledger);
