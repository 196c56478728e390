//! The load contract on plain socketioxide: `join` / `leave` a room (acked),
//! `send_message` relayed to the room as `message` (acked with its id), `echo`
//! acked with what it got. With `REDIS_URL`, nodes share rooms and emits
//! through socketioxide-redis, as a scaled-out socketioxide app does.
//!
//! Prints `listening on http://ADDR` when ready, as `switchboard serve` does,
//! so the load tools drive both the same way. `--listen ADDR` (default
//! 127.0.0.1:0).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::serve::{Listener, ListenerExt};
use fred::prelude::{ClientLike, Config};
use fred::types::RespVersion;
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Data, SocketRef, TryData};
use socketioxide_redis::{FredAdapter, RedisAdapterCtr};

/// Message ids, counted per node (the load tools tell messages apart by their text).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

#[derive(Deserialize)]
struct Room {
    room: String,
}

#[derive(Deserialize)]
struct Message {
    room: String,
    text: String,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis())
}

async fn on_connect<A: Adapter>(socket: SocketRef<A>, TryData(auth): TryData<Value>) {
    let user = auth
        .ok()
        .and_then(|auth| auth.get("user")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| socket.id.to_string());
    socket.on(
        "join",
        async |socket: SocketRef<A>, Data(Room { room }): Data<Room>, ack: AckSender<A>| {
            socket.join(room.clone());
            let _ = ack.send(&json!({ "room": room, "history": [] }));
        },
    );
    socket.on(
        "leave",
        async |socket: SocketRef<A>, Data(Room { room }): Data<Room>, ack: AckSender<A>| {
            socket.leave(room.clone());
            let _ = ack.send(&json!({ "room": room }));
        },
    );
    socket.on(
        "send_message",
        async move |socket: SocketRef<A>,
                    Data(Message { room, text }): Data<Message>,
                    ack: AckSender<A>| {
            if !socket.rooms().iter().any(|joined| *joined == room) {
                let _ = ack.send(&json!({ "error": { "code": "not_in_room", "message": room } }));
                return;
            }
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let message = json!({ "id": id, "room": room, "from": user, "text": text, "ts": now_ms() });
            match socket.within(room).emit("message", &message).await {
                Ok(()) => drop(ack.send(&json!({ "id": id }))),
                Err(error) => {
                    let _ = ack.send(&json!({ "error": { "code": "emit_failed", "message": error.to_string() } }));
                }
            }
        },
    );
    socket.on(
        "echo",
        async |Data(data): Data<Value>, ack: AckSender<A>| {
            let _ = ack.send(&json!({ "echo": data }));
        },
    );
}

/// Largest frame a client may send, as Switchboard's default.
const MAX_PAYLOAD_BYTES: u64 = 2_000_000;

async fn serve(app: axum::Router, listen: &str) -> Result<(), Box<dyn std::error::Error>> {
    // TCP_NODELAY, as Switchboard and Node's HTTP server set it: a realtime
    // server must not hold small messages back to coalesce them.
    let listener = tokio::net::TcpListener::bind(listen).await?.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let listen = args
        .iter()
        .position(|arg| arg == "--listen")
        .and_then(|at| args.get(at + 1))
        .map_or("127.0.0.1:0", String::as_str)
        .to_owned();
    match std::env::var("REDIS_URL") {
        Ok(url) => {
            let mut config = Config::from_url(&url)?;
            config.version = RespVersion::RESP3;
            let client = fred::prelude::Builder::from_config(config).build_subscriber_client()?;
            client.init().await?;
            let adapter = RedisAdapterCtr::new_with_fred(client).await?;
            let (layer, io) = SocketIo::builder()
                .with_adapter::<FredAdapter<_>>(adapter)
                .max_payload(MAX_PAYLOAD_BYTES)
                .build_layer();
            io.ns("/", on_connect).await?;
            serve(axum::Router::new().layer(layer), &listen).await
        }
        Err(_) => {
            let (layer, io) = SocketIo::builder()
                .max_payload(MAX_PAYLOAD_BYTES)
                .build_layer();
            io.ns("/", on_connect);
            serve(axum::Router::new().layer(layer), &listen).await
        }
    }
}
