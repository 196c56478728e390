//! Notifications and presence for an app's users (the DogMatch seed).
//!
//! HTTP (the backend, with the API token): `POST /apps/notifications/notify
//! {user_id, type, data}`, `PUT /apps/notifications/contacts/{user_id}
//! {contacts}`, `POST /apps/notifications/online {users}`.
//! Events: `mark_read {ids}`, `unread_count`, `unread`, `who_is_online {users}`.
//! Emits `notification {id, type, data, at}` to every socket of the user, and
//! `user_online` / `user_offline {user_id}` to the user's contacts.
//!
//! Every notification is stored (bounded per user, with a TTL) and numbered
//! per user. A delivery cursor per user (the last one sent), moved in the
//! same transaction as the sends, makes each go out exactly once and in the
//! order they were stored: at once when the user is online anywhere, else on the user's
//! next connect. Unread ones stay until `mark_read` or their TTL.
//!
//! Nothing is kept forever: a user's counter and delivery cursor expire with
//! the user's notifications (`ttl_ms` after the last one); contacts (at most
//! `max_contacts`, default 1,000) expire `contacts_ttl_ms` (default 30 days)
//! after they were set or the user last connected; an online counter expires
//! a minute after it drops to zero.

use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_sdk::http::{Request, Response};
use switchboard_sdk::{
    Config, Conn, Error, Payload, Plugin, clock, config, emit, export_plugin, state,
};

const DEFAULT_NAMESPACE: &str = "/notifications";
const DEFAULT_MAX_PER_USER: i64 = 100;
const DEFAULT_TTL_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// How long a socket's presence marker outlives a crashed node's cleanup.
const COUNTED_TTL_MS: u64 = 24 * 60 * 60 * 1000;
const DEFAULT_MAX_CONTACTS: usize = 1_000;
const DEFAULT_CONTACTS_TTL_MS: u64 = 30 * 24 * 60 * 60 * 1000;
/// How long an online counter back at zero is kept: long enough for a
/// reconnect to find it, short enough that users who left leave nothing.
const OFFLINE_COUNTER_TTL_MS: u64 = 60_000;

#[derive(Serialize, Deserialize)]
struct Notification {
    id: u64,
    #[serde(rename = "type")]
    kind: String,
    data: serde_json::Value,
    at: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Notify {
    user_id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Contacts {
    contacts: Vec<String>,
}

#[derive(Deserialize)]
struct Users {
    users: Vec<String>,
}

#[derive(Deserialize)]
struct MarkRead {
    ids: Vec<u64>,
}

fn namespace() -> String {
    config::get("namespace").unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}

fn max_per_user() -> i64 {
    config::get("max_per_user").unwrap_or(DEFAULT_MAX_PER_USER)
}

fn ttl_ms() -> u64 {
    config::get("ttl_ms").unwrap_or(DEFAULT_TTL_MS)
}

fn item_key(user: &str, id: u64) -> String {
    format!("item:{user}:{id}")
}

fn index_key(user: &str) -> String {
    format!("index:{user}")
}

fn online_key(user: &str) -> String {
    format!("online:{user}")
}

fn contacts_key(user: &str) -> String {
    format!("contacts:{user}")
}

fn contacts_ttl_ms() -> u64 {
    config::get("contacts_ttl_ms").unwrap_or(DEFAULT_CONTACTS_TTL_MS)
}

/// Stores a notification and delivers it if the user is online.
fn notify(request: Notify) -> Result<(u64, bool), Error> {
    let user = &request.user_id;
    let ttl = ttl_ms();
    let sequence = format!("seq:{user}");
    let id = u64::try_from(state::incr(&sequence, 1)?).unwrap_or_default();
    // Kept as long as the newest notification, so ids never repeat while any is stored.
    state::expire(&sequence, Some(ttl))?;
    let notification = Notification {
        id,
        kind: request.kind,
        data: request.data,
        at: clock::now_ms(),
    };
    state::set_json(&item_key(user, id), &notification, Some(ttl))?;
    let index = index_key(user);
    state::list_push(&index, &[id.to_string()])?;
    state::list_trim(&index, -max_per_user(), -1)?;
    state::expire(&index, Some(ttl))?;
    let online = is_online(user)?;
    if online {
        deliver(user)?;
    }
    Ok((id, online))
}

/// Sends the user every stored notification not sent yet, in order, and
/// moves the cursor past them. Two deliveries to one user (on any node)
/// both read the cursor: the host commits one, whose emits then go out, and
/// runs the other again, which finds nothing pending. So each notification
/// is sent exactly once.
fn deliver(user: &str) -> Result<(), Error> {
    let ids = pending(user)?;
    let Some(last) = ids.last() else {
        return Ok(());
    };
    state::set(&cursor_key(user), &last.to_string(), Some(ttl_ms()))?;
    let keys: Vec<String> = ids.iter().map(|id| item_key(user, *id)).collect();
    for json in state::get_many(&keys)?.into_iter().flatten() {
        let payload = Payload {
            args: vec![json],
            attachments: Vec::new(),
        };
        emit::raw::to_room(
            &namespace(),
            &emit::user_room(user),
            "notification",
            &payload,
        )?;
    }
    Ok(())
}

/// The ids stored after the delivery cursor. The cursor is the last id
/// sent; ids are sent in the order they entered the index, so what is
/// pending is what follows the cursor there, or all of the index once the
/// cursor has been trimmed out of it.
fn pending(user: &str) -> Result<Vec<u64>, Error> {
    let cursor = state::get(&cursor_key(user))?;
    let mut ids = stored_ids(user)?;
    let sent = cursor
        .as_deref()
        .and_then(|last| last.parse::<u64>().ok())
        .and_then(|last| ids.iter().position(|id| *id == last))
        .map_or(0, |position| position + 1);
    Ok(ids.split_off(sent))
}

fn cursor_key(user: &str) -> String {
    format!("cursor:{user}")
}

/// Ids in the user's index, in the order they were stored (some may have
/// been read or expired since).
fn stored_ids(user: &str) -> Result<Vec<u64>, Error> {
    Ok(state::list_range(&index_key(user), 0, -1)?
        .iter()
        .filter_map(|id| id.parse().ok())
        .collect())
}

fn unread(user: &str) -> Result<Vec<Notification>, Error> {
    let mut unread = Vec::new();
    for id in stored_ids(user)? {
        if let Some(notification) = state::get_json(&item_key(user, id))? {
            unread.push(notification);
        }
    }
    Ok(unread)
}

fn is_online(user: &str) -> Result<bool, Error> {
    let sockets: i64 = state::get(&online_key(user))?
        .and_then(|count| count.parse().ok())
        .unwrap_or(0);
    Ok(sockets > 0)
}

fn online_among(users: Vec<String>) -> Result<Vec<String>, Error> {
    let mut online = Vec::new();
    for user in users {
        if is_online(&user)? {
            online.push(user);
        }
    }
    Ok(online)
}

/// Tells the user's contacts that it came online or went offline.
fn announce(user: &str, event: &str) -> Result<(), Error> {
    let contacts: Vec<String> = state::get_json(&contacts_key(user))?.unwrap_or_default();
    let namespace = namespace();
    for contact in contacts {
        emit::to_user(&namespace, &contact, event, &json!({ "user_id": user }))?;
    }
    Ok(())
}

fn user(conn: &Conn) -> Result<&str, Error> {
    conn.user_id.as_deref().ok_or_else(|| {
        Error::new(
            "login_required",
            "notifications need a verified user: connect with a token",
        )
    })
}

fn non_empty(value: &str, field: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::new(
            "invalid_body",
            format!("`{field}` must not be empty"),
        ));
    }
    Ok(())
}

fn route(request: &Request) -> Result<Response, Error> {
    match (request.method.as_str(), request.param("user_id")) {
        ("POST", None) if request.path.ends_with("/notify") => {
            let notification: Notify = request.json()?;
            non_empty(&notification.user_id, "user_id")?;
            non_empty(&notification.kind, "type")?;
            let (id, online) = notify(notification)?;
            Ok(Response::json(202, &json!({ "id": id, "online": online })))
        }
        ("POST", None) if request.path.ends_with("/online") => {
            let Users { users } = request.json()?;
            Ok(Response::json(
                200,
                &json!({ "online": online_among(users)? }),
            ))
        }
        ("PUT", Some(user)) => {
            let Contacts { contacts } = request.json()?;
            let max = config::get("max_contacts").unwrap_or(DEFAULT_MAX_CONTACTS);
            if contacts.len() > max {
                return Err(Error::new(
                    "invalid_body",
                    format!("a user may have at most {max} contacts (config `max_contacts`)"),
                ));
            }
            state::set_json(&contacts_key(user), &contacts, Some(contacts_ttl_ms()))?;
            Ok(Response::json(
                200,
                &json!({ "user_id": user, "contacts": contacts }),
            ))
        }
        _ => Ok(Response::error(
            404,
            "not_found",
            &format!("nothing is served at {} {}", request.method, request.path),
        )),
    }
}

struct Notifications;

impl Plugin for Notifications {
    fn init(config: &Config) -> Result<(), Error> {
        config.get::<String>("namespace")?;
        config.get::<i64>("max_per_user")?;
        config.get::<u64>("ttl_ms")?;
        config.get::<usize>("max_contacts")?;
        config.get::<u64>("contacts_ttl_ms")?;
        Ok(())
    }

    fn on_connect(conn: &Conn) -> Result<(), Error> {
        user(conn).map(drop)
    }

    /// Counted here rather than in `on_connect`, so a notification is never
    /// sent to a socket that cannot receive it yet.
    fn on_connected(conn: &Conn) {
        let Ok(user) = user(conn) else { return };
        let counted = state::set(
            &format!("counted:{}", conn.socket_id),
            "1",
            Some(COUNTED_TTL_MS),
        )
        .and_then(|()| state::incr(&online_key(user), 1))
        .and_then(|sockets| {
            // A counter that went back to zero was set to expire; in use again, it is kept.
            state::expire(&online_key(user), None)?;
            // Connecting is activity: the user's contacts are kept for another TTL.
            state::expire(&contacts_key(user), Some(contacts_ttl_ms()))?;
            Ok(sockets)
        })
        .and_then(|sockets| {
            if sockets == 1 {
                announce(user, "user_online")
            } else {
                Ok(())
            }
        })
        .and_then(|()| deliver(user));
        if let Err(error) = counted {
            switchboard_sdk::log::warn(&format!("{user} connected, but: {}", error.message));
        }
    }

    fn on_event(conn: &Conn, event: &str, payload: Payload) -> Result<Option<Payload>, Error> {
        let user = user(conn)?;
        let reply = match event {
            "mark_read" => {
                let MarkRead { ids } = payload.parse_object()?;
                for id in ids {
                    state::delete(&item_key(user, id))?;
                }
                json!({ "unread": unread(user)?.len() })
            }
            "unread_count" => json!({ "unread": unread(user)?.len() }),
            "unread" => json!({ "notifications": unread(user)? }),
            "who_is_online" => {
                let Users { users } = payload.parse_object()?;
                json!({ "online": online_among(users)? })
            }
            other => return Err(Error::unknown_event(other)),
        };
        Ok(Some(Payload::new(&reply)?))
    }

    fn on_disconnect(conn: &Conn, _reason: &str) {
        let Ok(user) = user(conn) else { return };
        // Only sockets counted in `on_connected` are uncounted.
        let uncounted = state::delete(&format!("counted:{}", conn.socket_id)).and_then(|counted| {
            if !counted {
                return Ok(());
            }
            match state::incr(&online_key(user), -1)? {
                0 => {
                    // A socket of the user connecting meanwhile makes this
                    // call run again and see the count above zero.
                    state::expire(&online_key(user), Some(OFFLINE_COUNTER_TTL_MS))?;
                    announce(user, "user_offline")
                }
                _ => Ok(()),
            }
        });
        if let Err(error) = uncounted {
            switchboard_sdk::log::warn(&format!("{user} disconnected, but: {}", error.message));
        }
    }

    fn on_http(request: Request) -> Response {
        route(&request).unwrap_or_else(|error| {
            let status = if error.code == "invalid_body" {
                400
            } else {
                503
            };
            Response::from_error(status, &error)
        })
    }
}

export_plugin!(Notifications);
