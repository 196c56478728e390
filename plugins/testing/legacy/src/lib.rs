//! A plugin as built against WIT 0.1.1, before events carried their
//! arguments one by one. Events: `echo` (acks the payload's JSON as it got
//! it), `relay` (emits it back to the socket as `relay`), `count` (adds 1 to
//! a counter in `state` and acks the new value), `room` (joins the socket to
//! the room named by the payload and emits `joined` to that room).

wit_bindgen::generate!({
    path: "wit",
    world: "plugin",
    generate_all,
});

use exports::switchboard::plugin::handler::Guest;
use switchboard::plugin::types::{Conn, Error, Payload};
use switchboard::plugin::{emit, rooms, state};

struct Legacy;

fn json(json: String) -> Payload {
    Payload {
        json,
        attachments: Vec::new(),
    }
}

impl Guest for Legacy {
    fn init(_config: String) -> Result<(), Error> {
        Ok(())
    }

    fn on_connect(_conn: Conn) -> Result<(), Error> {
        Ok(())
    }

    fn on_event(conn: Conn, event: String, payload: Payload) -> Result<Option<Payload>, Error> {
        match event.as_str() {
            "echo" => Ok(Some(payload)),
            "relay" => {
                emit::to_socket(&conn.namespace, &conn.socket_id, "relay", &payload)?;
                Ok(None)
            }
            "count" => Ok(Some(json(state::incr("count", 1)?.to_string()))),
            "room" => {
                let room = payload.json.trim_matches('"').to_owned();
                rooms::join(&conn.namespace, &conn.socket_id, &room)?;
                emit::to_room(
                    &conn.namespace,
                    &room,
                    "joined",
                    &json(format!("{:?}", conn.socket_id)),
                )?;
                Ok(None)
            }
            other => Err(Error {
                code: "unknown_event".to_owned(),
                message: format!("no handler for `{other}`"),
            }),
        }
    }

    fn on_disconnect(_conn: Conn, _reason: String) {}
}

impl exports::switchboard::plugin::connection_handler::Guest for Legacy {
    fn on_connected(conn: Conn) {
        let _ = emit::to_socket(
            &conn.namespace,
            &conn.socket_id,
            "welcome",
            &json("\"0.1.1\"".to_owned()),
        );
    }
}

impl exports::switchboard::plugin::timer_handler::Guest for Legacy {
    fn on_timer(_key: String, _payload: String) -> Result<(), Error> {
        Ok(())
    }
}

impl exports::switchboard::plugin::http_handler::Guest for Legacy {
    fn handle(
        request: exports::switchboard::plugin::http_handler::Request,
    ) -> exports::switchboard::plugin::http_handler::Response {
        exports::switchboard::plugin::http_handler::Response {
            status: 200,
            headers: vec![("content-type".to_owned(), "text/plain".to_owned())],
            body: format!("0.1.1 plugin: {} {}", request.method, request.path).into_bytes(),
        }
    }
}

export!(Legacy);
