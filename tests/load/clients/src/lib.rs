//! What the load clients share: a Socket.IO client on a raw WebSocket
//! (Engine.IO 4, Socket.IO 5 text packets), in as little code and CPU as
//! the protocol allows, so the client costs the machine little beside the
//! server it measures.

use std::net::{Ipv4Addr, SocketAddr};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

pub type Socket = WebSocketStream<TcpStream>;

/// Opens a WebSocket to `url` (`http://127.0.0.1:PORT`) from `local` and
/// connects to the main namespace with `auth`. Returns the socket and the
/// CONNECT reply's JSON text.
pub async fn connect(url: &str, local: Ipv4Addr, auth: &Value) -> Result<(Socket, String), String> {
    let server: SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .map_err(|error| format!("{url}: {error}"))?;
    let tcp = TcpSocket::new_v4().map_err(|error| error.to_string())?;
    tcp.bind(SocketAddr::new(local.into(), 0))
        .map_err(|error| error.to_string())?;
    let stream = tcp
        .connect(server)
        .await
        .map_err(|error| error.to_string())?;
    stream
        .set_nodelay(true)
        .map_err(|error| error.to_string())?;
    let request = format!("ws://{server}/socket.io/?EIO=4&transport=websocket");
    let (mut socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|error| error.to_string())?;
    let open = next_text(&mut socket).await?;
    if !open.starts_with('0') {
        return Err(format!("expected an Engine.IO open packet, got {open}"));
    }
    send(&mut socket, format!("40{auth}")).await?;
    let reply = next_packet(&mut socket).await?;
    match reply.strip_prefix("40") {
        Some(reply) => Ok((socket, reply.to_owned())),
        None => Err(format!("connection refused: {reply}")),
    }
}

/// The next text frame.
pub async fn next_text(socket: &mut Socket) -> Result<String, String> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(_))) | None => return Err("connection closed".to_owned()),
            Some(Err(error)) => return Err(error.to_string()),
            Some(Ok(_)) => {}
        }
    }
}

/// The next packet that is not a ping, answering pings on the way.
pub async fn next_packet(socket: &mut Socket) -> Result<String, String> {
    loop {
        let text = next_text(socket).await?;
        if text != "2" {
            return Ok(text);
        }
        send(socket, "3".to_owned()).await?;
    }
}

pub async fn send(socket: &mut Socket, text: String) -> Result<(), String> {
    socket
        .send(Message::text(text))
        .await
        .map_err(|error| error.to_string())
}

/// The `percent` percentile of `sorted` µs, in ms.
pub fn percentile_ms(sorted: &[u32], percent: usize) -> Option<f64> {
    let index = (sorted.len() * percent / 100).min(sorted.len().checked_sub(1)?);
    Some(f64::from(sorted[index]) / 1_000.0)
}
