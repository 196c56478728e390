//! Exports `handler` and nothing else. Events: `ping` (acks `"pong"`),
//! `schedule` (tries to schedule a timer and acks the host's answer as JSON
//! text: `null` or the error).

wit_bindgen::generate!({
    path: "../../../wit",
    world: "plugin-core",
    generate_all,
});

use exports::switchboard::plugin::handler::Guest;
use switchboard::plugin::types::{Conn, Error, Payload};

struct CoreOnly;

fn text(json: String) -> Payload {
    Payload {
        args: vec![json],
        attachments: Vec::new(),
    }
}

impl Guest for CoreOnly {
    fn init(_config: String) -> Result<(), Error> {
        Ok(())
    }

    fn on_connect(_conn: Conn) -> Result<(), Error> {
        Ok(())
    }

    fn on_event(_conn: Conn, event: String, _payload: Payload) -> Result<Option<Payload>, Error> {
        match event.as_str() {
            "ping" => Ok(Some(text("\"pong\"".to_owned()))),
            "schedule" => {
                let answer = switchboard::plugin::timers::schedule(0, "k", "");
                Ok(Some(text(match answer {
                    Ok(()) => "null".to_owned(),
                    Err(error) => format!("{{\"code\":{:?}}}", error.code),
                })))
            }
            other => Err(Error {
                code: "unknown_event".to_owned(),
                message: format!("no handler for `{other}`"),
            }),
        }
    }

    fn on_disconnect(_conn: Conn, _reason: String) {}
}

export!(CoreOnly);
