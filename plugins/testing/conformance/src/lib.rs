//! What the Socket.IO protocol test suite expects of a server: each socket
//! is sent `auth` with its handshake's `auth`; `message` is sent back as
//! `message-back` and `message-with-ack` acknowledged, each with every
//! argument it came with (binary included). `sum` acks the sum and the count
//! of its arguments, all numbers.
//!
//! Not the suite's either, server-to-client acks: `ask` with `{"to": socket
//! id, "event", "timeout_ms", "tag"}` and more arguments sends `event` with
//! those arguments to `to`, asking for its ack (acked `true` once asked);
//! the answer comes back to the asker as `answer` with one argument,
//! `{"tag", "socket", "args": [the ack's arguments, binary included]}` or
//! `{"tag", "socket", "error": code}`.

use serde::Deserialize;
use switchboard_sdk::{Conn, Error, Payload, Plugin, acks, emit, export_plugin};

/// The first argument of `ask`.
#[derive(Deserialize)]
struct Ask {
    to: String,
    event: String,
    timeout_ms: u32,
    tag: String,
}

/// Who asked, carried through the ack's tag.
#[derive(serde::Serialize, Deserialize)]
struct Asker {
    socket: String,
    tag: String,
}

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
            "ask" => {
                let ask: Ask = payload.parse()?;
                let asker = serde_json::to_string(&Asker {
                    socket: conn.socket_id.clone(),
                    tag: ask.tag,
                })
                .map_err(|error| Error::new("internal", error.to_string()))?;
                let question = Payload {
                    args: payload.args[1..].to_vec(),
                    attachments: payload.attachments,
                };
                acks::raw::to_socket(
                    &conn.namespace,
                    &ask.to,
                    &ask.event,
                    &question,
                    ask.timeout_ms,
                    &asker,
                )?;
                Ok(Some(Payload::new(&true)?))
            }
            other => Err(Error::unknown_event(other)),
        }
    }

    fn on_ack(
        namespace: &str,
        socket_id: &str,
        tag: &str,
        answer: Result<Payload, Error>,
    ) -> Result<(), Error> {
        let asker: Asker = serde_json::from_str(tag)
            .map_err(|error| Error::new("invalid_tag", error.to_string()))?;
        let head = format!(
            r#"{{"tag":{},"socket":{}"#,
            json(&asker.tag)?,
            json(socket_id)?
        );
        let answer = match answer {
            Ok(payload) => Payload {
                args: vec![format!(r#"{head},"args":[{}]}}"#, payload.args.join(","))],
                attachments: payload.attachments,
            },
            Err(error) => Payload::new(&serde_json::json!({
                "tag": asker.tag,
                "socket": socket_id,
                "error": error.code,
            }))?,
        };
        emit::raw::to_socket(namespace, &asker.socket, "answer", &answer)
    }
}

fn json(text: &str) -> Result<String, Error> {
    serde_json::to_string(text).map_err(|error| Error::new("internal", error.to_string()))
}

export_plugin!(Conformance);
