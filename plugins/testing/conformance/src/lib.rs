//! What the Socket.IO protocol test suite expects of a server: each socket
//! is sent `auth` with its handshake's `auth`; `message` is sent back as
//! `message-back` and `message-with-ack` acknowledged, each with every
//! argument it came with (binary included). `sum` acks the sum and the count
//! of its arguments, all numbers.

use switchboard_sdk::{Conn, Error, Payload, Plugin, emit, export_plugin};

struct Conformance;

impl Plugin for Conformance {
    fn on_connected(conn: &Conn) {
        let auth = Payload {
            args: vec![conn.auth.clone()],
            attachments: Vec::new(),
        };
        // A socket gone meanwhile has no one to tell.
        let _ = emit::raw::to_socket(&conn.namespace, &conn.socket_id, "auth", &auth);
    }

    fn on_event(conn: &Conn, event: &str, payload: Payload) -> Result<Option<Payload>, Error> {
        match event {
            "message" => {
                emit::raw::to_socket(&conn.namespace, &conn.socket_id, "message-back", &payload)?;
                Ok(None)
            }
            "message-with-ack" => Ok(Some(payload)),
            // Not the suite's: the SDK's typed access to several arguments.
            "sum" => {
                let numbers: Vec<f64> = payload.parse_args()?;
                let total = numbers.iter().fold(0.0, |total, number| total + number);
                Ok(Some(Payload::from_args(&(total, numbers.len()))?))
            }
            other => Err(Error::unknown_event(other)),
        }
    }
}

export_plugin!(Conformance);
