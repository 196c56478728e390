//! Socket.IO on axum via socketioxide: one namespace per manifest namespace,
//! plugins asked on connect ([`Namespace::admit`]), events queued per socket and
//! handled in order ([`connection`]).

mod connection;
mod routes;
mod sockets;

use std::sync::Arc;

use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::handler::{ConnectHandler, FromConnectParts, Value};
use socketioxide::socket::Socket;
use socketioxide::{SocketIo, SocketIoBuilder};
use socketioxide_core::adapter::DefinedAdapter;

use crate::bindings::Conn;
use crate::cluster::NodeLiveness;
use crate::manifest::ServerSettings;
pub use routes::{NamespaceRoutes, Routes};
pub use sockets::{Audience, ClusterSockets, Sockets, SocketsError};

/// Builds the Socket.IO layer and its handle from the `[server]` settings,
/// on the adapter `builder` was given.
pub fn socket_io<A: Adapter>(
    builder: SocketIoBuilder<A>,
    settings: &ServerSettings,
) -> (socketioxide::layer::SocketIoLayer<A>, SocketIo<A>) {
    let frame_limit =
        usize::try_from(settings.max_payload_bytes.saturating_mul(2)).unwrap_or(usize::MAX);
    builder
        .req_path(settings.path.clone())
        .ping_interval(settings.ping_interval)
        .ping_timeout(settings.ping_timeout)
        // Events over `max_payload_bytes` get a clear error from the host; only
        // frames far beyond it are refused by the transport itself.
        .max_payload(settings.max_payload_bytes.saturating_mul(2))
        .ws_max_message_size(frame_limit)
        .ws_max_frame_size(frame_limit)
        .build_layer()
}

/// Serves every namespace the routes know. The adapter's results (futures
/// that subscribe, for a cluster adapter) are returned for the caller to await.
pub fn serve_namespaces<A: Adapter + DefinedAdapter>(
    io: &SocketIo<A>,
    routes: &Routes,
    max_payload_bytes: u64,
    liveness: Option<Arc<NodeLiveness>>,
) -> Vec<A::InitRes> {
    let mut initialising = Vec::new();
    for (path, routes) in routes.namespaces() {
        let namespace = Arc::new(Namespace {
            routes: routes.clone(),
            max_payload_bytes: usize::try_from(max_payload_bytes).unwrap_or(usize::MAX),
            liveness: liveness.clone(),
        });
        let admit = {
            let namespace = namespace.clone();
            move |socket: SocketRef<A>, auth: HandshakeAuth| {
                let namespace = namespace.clone();
                async move { namespace.admit(socket, auth).await }
            }
        };
        let connected = move |socket: SocketRef<A>, auth: HandshakeAuth| {
            connection::start(socket, auth, namespace.clone());
            std::future::ready(())
        };
        initialising.push(io.ns(path.clone(), connected.with(admit)));
    }
    initialising
}

/// One served namespace: its plugins and limits.
pub struct Namespace {
    routes: Arc<NamespaceRoutes>,
    max_payload_bytes: usize,
    /// In a cluster, where this node records its sockets.
    liveness: Option<Arc<NodeLiveness>>,
}

/// Runs the plugins' `on-disconnect` for sockets of a node that died.
pub async fn disconnect_lost(routes: &Routes, conns: Vec<Conn>) {
    for conn in conns {
        let Some(namespace) = routes.namespace(&conn.namespace) else {
            continue;
        };
        for plugin in namespace.plugins() {
            let _ = plugin
                .current()
                .on_disconnect(&conn, "server node lost")
                .await;
        }
    }
}

/// Why a connection was refused; the client sees it in `connect_error`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Denied(String);

impl Namespace {
    /// Connect middleware: every plugin of the namespace must allow the socket.
    async fn admit<A: Adapter>(
        &self,
        socket: SocketRef<A>,
        auth: HandshakeAuth,
    ) -> Result<(), Denied> {
        // The room named after the socket id lets plugins address this socket
        // by id, the way Socket.IO does.
        socket.join(socket.id);
        let conn = conn(&socket, auth);
        for plugin in self.routes.plugins() {
            match plugin.current().on_connect(&conn).await {
                Ok(Ok(())) => {}
                Ok(Err(refusal)) => return Err(Denied(refusal.message)),
                Err(failure) => return Err(Denied(format!("connection refused: {failure}"))),
            }
        }
        Ok(())
    }
}

fn conn<A: Adapter>(socket: &Socket<A>, auth: HandshakeAuth) -> Conn {
    Conn {
        socket_id: socket.id.to_string(),
        namespace: socket.ns().to_owned(),
        auth: auth.0,
        user_id: None,
    }
}

/// The handshake `auth` object as JSON text, passed to plugins unparsed.
pub struct HandshakeAuth(String);

impl<A: Adapter> FromConnectParts<A> for HandshakeAuth {
    type Error = std::convert::Infallible;

    fn from_connect_parts(_: &Arc<Socket<A>>, auth: &Option<Value>) -> Result<Self, Self::Error> {
        let json = auth
            .as_ref()
            .and_then(Value::as_str)
            .map_or_else(|| "{}".to_owned(), |text| text.to_string());
        Ok(Self(json))
    }
}
