//! The accept loop: admits each connection ([`admission`]) within the
//! file-descriptor limit ([`fd_limit`]), over `max_connections` from a
//! reserve ([`reserve`]), serves HTTP/1 on it with header and idle
//! timeouts and a bound on request heads ([`connection`]), and on shutdown
//! stops accepting and lets the connections finish.

pub mod admission;
mod connection;
mod fd_limit;
mod reserve;
mod stream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use admission::Admission;
use axum::Router;
pub use connection::RequestLimits;
pub use connection::{ClientAddress, ReusedConnection};
use stream::AdmittedStream;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often refused connections are logged (as one line with their count).
const REPORT_PERIOD: Duration = Duration::from_secs(10);
/// Pause after `accept` fails for want of a resource, so the loop does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Accepts and serves connections until `shutdown` completes, then waits
/// for every connection's response in flight. (Upgraded WebSockets live on:
/// the Socket.IO server closes those.)
pub async fn serve(
    listener: TcpListener,
    app: Router,
    admission: Arc<Admission>,
    requests: RequestLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let report = tokio::spawn(admission.clone().report(REPORT_PERIOD));
    let closing = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                admission.accept_failed(&error);
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let Some(ticket) = admission.admit(peer.ip()) else {
            continue;
        };
        // Without TCP_NODELAY an ack written right after an event waits for
        // the client's delayed ACK of the event (40 ms on Linux).
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {error}");
        }
        let admitted = connection::Admitted {
            refusal: ticket.refusal,
            seat: ticket.seat(),
            client: ClientAddress(admission::address_key(peer.ip())),
        };
        connections.spawn(connection::serve(
            AdmittedStream::new(tcp, ticket),
            admitted,
            app.clone(),
            requests,
            admission.clone(),
            closing.clone(),
        ));
    }
    drop(listener);
    closing.cancel();
    connections.close();
    connections.wait().await;
    report.abort();
}

/// Errors that concern one connection only (it went away before it was
/// accepted), not the listener.
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}
