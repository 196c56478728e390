//! A rust_socketio client's round trip against a Switchboard node.
//!
//!     rust-round-trip URL TOKEN_A TOKEN_B
//!
//! Two clients connect with the tokens, one calls `echo` (an ack), sends
//! binary through `relay` (an emit back to it), both join a room and one
//! sends a chat message the other receives; then a client with a forged token
//! is refused. Prints what each step got as one JSON object; exits 1 if a step
//! timed out.

use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use rust_socketio::client::Client;
use rust_socketio::{ClientBuilder, Payload, RawClient, TransportType};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(5);

/// What a payload carried, as JSON: its arguments, or its bytes in base64.
fn arguments(payload: Payload) -> Value {
    match payload {
        Payload::Text(values) => Value::Array(values),
        Payload::Binary(bytes) => {
            json!({ "binary": base64::engine::general_purpose::STANDARD.encode(bytes) })
        }
        #[allow(deprecated)]
        Payload::String(text) => json!({ "string": text }),
    }
}

fn connect(
    url: &str,
    token: &str,
    events: &[(&str, mpsc::Sender<Value>)],
) -> Result<Client, rust_socketio::Error> {
    let mut builder = ClientBuilder::new(url)
        .transport_type(TransportType::Websocket)
        .auth(json!({ "token": token }));
    for (event, received) in events {
        let received = received.clone();
        builder = builder.on(*event, move |payload: Payload, _: RawClient| {
            let _ = received.send(arguments(payload));
        });
    }
    builder.connect()
}

/// Emits `event` with `data` and waits for its ack.
fn call(client: &Client, event: &str, data: Value) -> Value {
    let (acked, ack) = mpsc::channel();
    client
        .emit_with_ack(
            event,
            data,
            TIMEOUT,
            move |payload: Payload, _: RawClient| {
                let _ = acked.send(arguments(payload));
            },
        )
        .expect("emit");
    ack.recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| fail(&format!("no ack for {event}")))
}

fn fail(step: &str) -> ! {
    eprintln!("{step}");
    std::process::exit(1)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, token_a, token_b] = args.as_slice() else {
        fail("usage: rust-round-trip URL TOKEN_A TOKEN_B");
    };
    let (relayed, relay) = mpsc::channel();
    let (messaged, message) = mpsc::channel();
    // `connect()` returns once the Engine.IO session is open; events sent
    // before the namespace accepted the socket are not its events yet.
    let (connected, accepted) = mpsc::channel();
    let alice = connect(
        url,
        token_a,
        &[("relay", relayed), ("open", connected.clone())],
    )
    .expect("alice connects");
    let bob =
        connect(url, token_b, &[("message", messaged), ("open", connected)]).expect("bob connects");
    for _ in 0..2 {
        accepted
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| fail("not connected"));
    }

    let echo = call(&alice, "echo", json!({ "n": 1, "text": "héllo" }));
    alice
        .emit("relay", Payload::Binary(vec![0, 1, 255].into()))
        .expect("relay");
    let relay = relay
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| fail("no relay came back"));
    let joins: Vec<Value> = [&alice, &bob]
        .iter()
        .map(|client| call(client, "join", json!({ "room": "rust" })))
        .collect();
    let send = call(
        &alice,
        "send_message",
        json!({ "room": "rust", "text": "hi from rust" }),
    );
    let message = message
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| fail("bob got no message"));

    let (refusals, refused) = mpsc::channel();
    let forger = connect(
        url,
        "forged.token.value",
        &[("connect_error", refusals.clone()), ("error", refusals)],
    );
    let refused = refused.recv_timeout(TIMEOUT).ok();

    for client in [alice, bob].into_iter().chain(forger.ok()) {
        let _ = client.disconnect();
    }
    println!(
        "{}",
        json!({ "echo": echo, "relay": relay, "joins": joins, "send": send, "message": message, "refused": refused })
    );
}
