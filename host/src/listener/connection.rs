//! One connection's HTTP/1: what it is served, and when it has waited too
//! long for a request.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::admission::{Admission, Refusal};
use super::reserve::Seat;
use super::stream::AdmittedStream;
use crate::manifest::ConnectionLimits;

/// How long a connection over a limit has to send its request: enough for a
/// probe, which sends it with the connection, and short, as the reserve of
/// such connections is small.
const REFUSAL_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a connection may wait for its next request, how large the
/// request's head may be, and how long a response may wait on its client.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// From the connection or the previous response to a whole request head.
    pub header_read: Duration,
    /// With no request in flight, from the connection or the previous response.
    pub idle: Duration,
    /// Bytes of a request head read before it is refused with 431: what a
    /// connection holds of a head, however large the client makes it.
    pub max_head_bytes: usize,
    /// How long a response's write may wait for the client to take what was
    /// written before, before the connection is closed.
    pub write: Duration,
}

impl From<&ConnectionLimits> for RequestLimits {
    fn from(limits: &ConnectionLimits) -> Self {
        Self {
            header_read: limits.header_read_timeout,
            idle: limits.idle_timeout,
            max_head_bytes: limits.max_header_bytes,
            write: limits.write_timeout,
        }
    }
}

/// How a connection was admitted.
pub struct Admitted {
    /// `Some`: the connection is over a limit.
    pub refusal: Option<Refusal>,
    /// Its place in the reserve, if over `max_connections`.
    pub seat: Option<Arc<Seat>>,
    pub client: ClientAddress,
}

/// Serves HTTP/1 (and upgrades) on `stream` until the client closes, a
/// timeout passes, or `closing` asks every connection to finish.
pub async fn serve(
    mut stream: AdmittedStream,
    Admitted {
        refusal,
        seat,
        client,
    }: Admitted,
    app: Router,
    requests: RequestLimits,
    admission: Arc<Admission>,
    closing: CancellationToken,
) {
    let requests = match refusal {
        None => requests,
        Some(_) => RequestLimits {
            header_read: requests.header_read.min(REFUSAL_READ_TIMEOUT),
            idle: requests.idle.min(REFUSAL_READ_TIMEOUT),
            ..requests
        },
    };
    let activity = Arc::new(Activity::new());
    let writes = stream.watch_writes();
    let service = ConnectionService {
        app,
        client,
        refusal,
        seat: seat.clone(),
        activity: activity.clone(),
        served_a_request: AtomicBool::new(false),
    };
    let evicted = async {
        match &seat {
            Some(seat) => seat.evicted.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(evicted);
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(requests.header_read)
        .max_buf_size(requests.max_head_bytes)
        // A connection over a limit gets one answer, then is closed.
        .keep_alive(refusal.is_none())
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    // Once asked to finish, the connection completes its response in flight
    // (or closes at once when it has none) and hyper closes it.
    let mut finishing = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    if error.is_timeout() {
                        admission.header_timed_out();
                    } else if error.is_parse_too_large() {
                        admission.head_too_large();
                    } else {
                        tracing::debug!("connection failed: {error}");
                    }
                }
                return;
            }
            // A newer connection took its place in the reserve: close it.
            () = &mut evicted => return,
            // A client that stopped reading its response: closed, as a
            // WebSocket client that stops reading is (`write_timeout_ms`),
            // rather than holding the response and the connection for good.
            () = writes.blocked_for(requests.write) => {
                admission.write_timed_out();
                return;
            }
            () = closing.cancelled(), if !finishing => finishing = true,
            () = activity.idle_for(requests.idle), if !finishing => finishing = true,
        }
        connection.as_mut().graceful_shutdown();
    }
}

/// Whether a connection has a request in flight, and since when it has not.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` at which the last request finished.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Completes once no request has been in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let since = self.idle_since_ms.load(Ordering::Acquire);
            let busy = self.in_flight.load(Ordering::Acquire) > 0;
            let deadline = if busy {
                Instant::now() + timeout
            } else {
                self.started + Duration::from_millis(since) + timeout
            };
            tokio::time::sleep_until(deadline).await;
            let still_idle = self.in_flight.load(Ordering::Acquire) == 0
                && self.idle_since_ms.load(Ordering::Acquire) == since;
            if !busy && still_idle {
                return;
            }
        }
    }
}

/// A request in flight; finished when dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let elapsed = u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.store(elapsed, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The client a request came from, as the per-address limits count it (an
/// IPv6 /64), in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddress(pub IpAddr);

/// In the extensions of a request that is not its connection's first: the
/// connection's admission counted against its address only once.
#[derive(Debug, Clone, Copy)]
pub struct ReusedConnection;

/// The app, or for a connection over a limit its refusal, with each request
/// counted in flight and its [`ClientAddress`].
struct ConnectionService {
    app: Router,
    client: ClientAddress,
    refusal: Option<Refusal>,
    seat: Option<Arc<Seat>>,
    activity: Arc<Activity>,
    served_a_request: AtomicBool,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.client);
        if self.served_a_request.swap(true, Ordering::Relaxed) {
            request.extensions_mut().insert(ReusedConnection);
        }
        let in_flight = self.activity.begin();
        if let Some(seat) = &self.seat {
            seat.request_read();
        }
        let refusal = self
            .refusal
            .filter(|refusal| !refusal.lets_through(request.uri().path()));
        let app = self.app.clone();
        Box::pin(async move {
            let _in_flight = in_flight;
            match refusal {
                Some(refusal) => Ok(refusal.response()),
                None => app.oneshot(request).await,
            }
        })
    }
}
