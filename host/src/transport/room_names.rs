//! Room names: the host's own rooms and the rule for the names plugins use.
//!
//! Every socket is in `socket:{id}`, and every socket of a verified user in
//! `user:{id}`: that is how a socket or a user is addressed wherever it is
//! connected. These rooms are the host's. If a plugin could put a socket in
//! them (a chat `join` with a room name the client picks), that socket would
//! receive everything addressed to another socket or user; so no plugin
//! changes who is in a room whose name starts with a reserved prefix.

use crate::escaped::Escaped;

/// Prefixes of the rooms only the host puts sockets in.
pub const RESERVED_PREFIXES: [&str; 2] = ["socket:", "user:"];

/// The longest room name, in bytes (of UTF-8).
pub const MAX_ROOM_BYTES: usize = 128;

/// The room of one socket.
pub fn socket_room(socket_id: &str) -> String {
    format!("socket:{socket_id}")
}

/// The room every socket of a namespace is in once it can receive its
/// namespace's events: a socket recovering its session joins it only after
/// catching up, so nothing new overtakes what it missed.
pub const EVERY_SOCKET: &str = "socket:*";

/// The room every socket of a verified user joins.
pub fn user_room(user_id: &str) -> String {
    format!("user:{user_id}")
}

pub fn is_reserved(room: &str) -> bool {
    RESERVED_PREFIXES
        .iter()
        .any(|prefix| room.starts_with(prefix))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoomNameError {
    #[error(
        "`{}` is one of the host's rooms (names starting with `socket:` or `user:`): plugins cannot put sockets in it or take them out",
        Escaped(.0)
    )]
    Reserved(String),
    #[error(
        "`{}` is not a room name: use 1 to {MAX_ROOM_BYTES} bytes without control characters",
        Escaped(.0)
    )]
    Invalid(String),
}

impl RoomNameError {
    /// The error code plugins and clients see.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Reserved(_) => "reserved_room",
            Self::Invalid(_) => "invalid_room",
        }
    }
}

/// A room a plugin may emit to: any well-formed name, the host's included
/// (sending to `user:{id}` is how a plugin reaches a user).
pub fn check_audience(room: &str) -> Result<(), RoomNameError> {
    let well_formed =
        !room.is_empty() && room.len() <= MAX_ROOM_BYTES && !room.chars().any(char::is_control);
    if well_formed {
        Ok(())
    } else {
        Err(RoomNameError::Invalid(truncated(room)))
    }
}

/// A room a plugin may put sockets in and take them out of: a well-formed
/// name that is not the host's.
pub fn check_membership(room: &str) -> Result<(), RoomNameError> {
    check_audience(room)?;
    if is_reserved(room) {
        return Err(RoomNameError::Reserved(room.to_owned()));
    }
    Ok(())
}

/// Keeps an error message about an oversized name short.
fn truncated(room: &str) -> String {
    match room.char_indices().nth(MAX_ROOM_BYTES) {
        Some((end, _)) => format!("{}…", &room[..end]),
        None => room.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_cannot_change_the_hosts_rooms() {
        for room in ["socket:abc", "user:alice", "user:"] {
            assert_eq!(
                check_membership(room),
                Err(RoomNameError::Reserved(room.to_owned()))
            );
            assert_eq!(check_audience(room), Ok(()));
        }
        for room in ["lobby", "sockets", "users:x", "my socket:1", "é"] {
            assert_eq!(check_membership(room), Ok(()), "{room}");
        }
    }

    #[test]
    fn names_are_short_and_printable() {
        assert_eq!(check_membership(&"a".repeat(MAX_ROOM_BYTES)), Ok(()));
        let long = "a".repeat(MAX_ROOM_BYTES + 1);
        let Err(RoomNameError::Invalid(shown)) = check_membership(&long) else {
            panic!("an oversized name was accepted");
        };
        assert!(shown.len() < long.len() + 4);
        for room in ["", "a\nb", "\u{1b}[31m", "tab\there"] {
            assert!(
                matches!(check_audience(room), Err(RoomNameError::Invalid(_))),
                "{room:?}"
            );
        }
        let error = check_membership("x\ny").unwrap_err().to_string();
        assert!(!error.contains('\n'), "{error}");
    }
}
