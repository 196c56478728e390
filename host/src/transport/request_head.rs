//! The handshake request's head, copied out of hyper's read buffer.
//!
//! engineioxide and socketioxide keep the head of the request that opened a
//! session for as long as the session lives. hyper parses a head without
//! copying: its URI and header values are slices of the connection's 8 KiB
//! read buffer, so every idle socket would keep that whole buffer alive.
//! Copying the URI's path, the query parameters Engine.IO reads and the few
//! headers the server reads frees it, and the rest of the head (a browser's
//! cookies and user agent, a client's own query parameters) with it.
//!
//! The head of a request that opens a session also carries the session's
//! [`ConnectionRates`], and its seat among the sessions the node admits
//! ([`admit_session`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::rates::ConnectionRates;
use crate::http_api::ApiError;
use crate::listener::admission::{Admission, Refusal};
use crate::listener::{ClientAddress, ReusedConnection};

/// The headers of a Socket.IO request read after this middleware: to answer
/// it (engineioxide: the WebSocket key, a long-polling POST's content type),
/// and the bearer token a socket may present instead of its `auth`.
const READ_HEADERS: [HeaderName; 3] = [
    header::SEC_WEBSOCKET_KEY,
    header::CONTENT_TYPE,
    header::AUTHORIZATION,
];

/// The path socketioxide serves, and the paths below it.
#[derive(Clone)]
pub struct SocketIoPath(Arc<str>);

impl SocketIoPath {
    pub fn new(path: &str) -> Self {
        Self(path.into())
    }

    pub fn covers(&self, path: &str) -> bool {
        path.strip_prefix(&*self.0)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || self.0.ends_with('/'))
    }
}

/// Where sessions open, and who admits them.
#[derive(Clone)]
pub struct SessionDoor {
    pub path: SocketIoPath,
    pub admission: Arc<Admission>,
    /// `max_auth_bytes`, which bounds the `Authorization` header too: the
    /// session keeps it for its namespaces' connects.
    pub max_auth_bytes: usize,
}

/// Admits a request that opens an Engine.IO session (a GET that names no
/// `sid`: a long-polling handshake or a WebSocket without one) as
/// [`Admission::admit_session`] decides, its seat put in its extensions, or
/// refuses it as a connection over the same limit is refused; one with an
/// `Authorization` header over `max_auth_bytes` gets a 431.
pub async fn admit_session(
    State(door): State<SessionDoor>,
    mut request: Request,
) -> Result<Request, Response> {
    let opens =
        door.path.covers(request.uri().path()) && opens_session(request.method(), request.uri());
    if !opens {
        return Ok(request);
    }
    if let Some(authorization) = request.headers().get(header::AUTHORIZATION)
        && authorization.len() > door.max_auth_bytes
    {
        let message = format!(
            "the Authorization header is {} bytes; the limit is {} (server.max_auth_bytes)",
            authorization.len(),
            door.max_auth_bytes
        );
        let refusal = ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "payload_too_large",
            message,
        );
        return Err(refusal.into_response());
    }
    // Every request from the listener has its address.
    let extensions = request.extensions();
    let Some(&ClientAddress(address)) = extensions.get::<ClientAddress>() else {
        return Ok(request);
    };
    let reused = extensions.get::<ReusedConnection>().is_some();
    let seat = door
        .admission
        .admit_session(address, reused)
        .map_err(Refusal::response)?;
    request.extensions_mut().insert(seat);
    Ok(request)
}

/// A Socket.IO `request` with its path, the query parameters Engine.IO
/// reads and the headers the server reads in allocations of their own, and
/// nothing else of its head, and with new [`ConnectionRates`] when it opens
/// a session (a GET with no `sid`). Other requests are left as they are: they
/// do not outlive their response.
pub async fn own_request_head(State(path): State<SocketIoPath>, request: Request) -> Request {
    if !path.covers(request.uri().path()) {
        return request;
    }
    let (mut head, body) = request.into_parts();
    head.uri = owned_uri(&head.uri);
    let opens = opens_session(&head.method, &head.uri);
    let kept = |name: &HeaderName, value: &HeaderValue| !opens || kept_by_session(name, value);
    // A map's first insert makes room for several: this one has room for these only.
    let count = READ_HEADERS
        .iter()
        .map(|name| {
            let values = head.headers.get_all(name).iter();
            values.filter(|value| kept(name, value)).count()
        })
        .sum();
    let mut headers = HeaderMap::with_capacity(count);
    for name in READ_HEADERS {
        for value in head.headers.get_all(&name) {
            if kept(&name, value) {
                headers.append(name.clone(), owned_value(value));
            }
        }
    }
    head.headers = headers;
    // Kept for as long as the session: only what it reads.
    head.extensions.remove::<ClientAddress>();
    head.extensions.remove::<ReusedConnection>();
    if opens {
        head.extensions.insert(ConnectionRates::default());
    }
    Request::from_parts(head, body)
}

/// The length of a WebSocket key: 16 bytes in base64 (RFC 6455).
const WEBSOCKET_KEY_BYTES: usize = 24;

/// What a session keeps of its opening request's headers, for its life (a
/// client's 12 KB of any of them was 12 KB more per connection): its
/// WebSocket key only as RFC 6455 makes it (engineioxide answers a request
/// without one with a 400, as the RFC asks for an invalid key), and no
/// content type (a GET has no body). Its `Authorization` is bounded before
/// ([`admit_session`]).
fn kept_by_session(name: &HeaderName, value: &HeaderValue) -> bool {
    match *name {
        header::SEC_WEBSOCKET_KEY => value.len() == WEBSOCKET_KEY_BYTES,
        header::CONTENT_TYPE => false,
        _ => true,
    }
}

/// Whether a request to the Socket.IO path opens an Engine.IO session: a
/// GET (a long-polling handshake, or a WebSocket's) that names none (`sid`).
fn opens_session(method: &Method, uri: &Uri) -> bool {
    method == Method::GET
        && !uri
            .query()
            .is_some_and(|query| query.split('&').any(|pair| pair.starts_with("sid=")))
}

/// The query parameters engineioxide reads. The others (socket.io-client's
/// `t`, a client's own `query`) are not kept: no one reads them, and a
/// client's 15 KB of them were kept for its session's life.
const READ_PARAMETERS: [&str; 4] = ["EIO=", "transport=", "sid=", "b64="];

/// The path, and of the query only what is read.
fn owned_uri(uri: &Uri) -> Uri {
    let mut owned = uri.path().to_owned();
    let read = uri.query().into_iter().flat_map(|query| {
        query
            .split('&')
            .filter(|pair| READ_PARAMETERS.iter().any(|name| pair.starts_with(name)))
    });
    for (n, pair) in read.enumerate() {
        owned.push(if n == 0 { '?' } else { '&' });
        owned.push_str(pair);
    }
    owned.parse().unwrap_or_else(|_| uri.clone())
}

fn owned_value(value: &HeaderValue) -> HeaderValue {
    match HeaderValue::from_bytes(value.as_bytes()) {
        Ok(mut owned) => {
            owned.set_sensitive(value.is_sensitive());
            owned
        }
        // hyper accepted bytes `HeaderValue` itself would not: keep the slice.
        Err(_) => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::body::{Body, Bytes};

    fn socket_io_path() -> State<SocketIoPath> {
        State(SocketIoPath::new("/socket.io"))
    }

    #[tokio::test]
    async fn the_head_no_longer_points_into_the_buffer_it_was_parsed_from() {
        let buffer = Bytes::from_static(b"/socket.io/?EIO=4&transport=websocket Bearer secret");
        let request = Request::builder()
            .uri(Uri::from_maybe_shared(buffer.slice(0..37)).expect("a URI"))
            .header(
                header::AUTHORIZATION,
                HeaderValue::from_maybe_shared(buffer.slice(38..51)).expect("a value"),
            )
            .header(header::AUTHORIZATION, "second")
            .body(Body::empty())
            .expect("a request");
        let owned = own_request_head(socket_io_path(), request).await;
        let inside = buffer.as_ptr_range();
        let token = owned
            .headers()
            .get_all(header::AUTHORIZATION)
            .iter()
            .collect::<Vec<_>>();
        assert_eq!(token, ["Bearer secret", "second"]);
        assert!(!inside.contains(&token[0].as_bytes().as_ptr()));
        assert_eq!(owned.uri(), "/socket.io/?EIO=4&transport=websocket");
    }

    #[tokio::test]
    async fn only_the_headers_the_server_reads_are_kept() {
        let request = Request::builder()
            .uri("/socket.io/?EIO=4&transport=websocket")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .header(header::COOKIE, "session=a-long-cookie")
            .header(header::USER_AGENT, "a browser")
            .body(Body::empty())
            .expect("a request");
        let owned = own_request_head(socket_io_path(), request).await;
        let names = owned.headers().keys().collect::<Vec<_>>();
        assert_eq!(names, [header::SEC_WEBSOCKET_KEY]);
    }

    #[tokio::test]
    async fn of_the_query_only_what_engine_io_reads_is_kept() {
        let padding = "p".repeat(15_000);
        let request = Request::builder()
            .uri(format!(
                "/socket.io/?pad={padding}&EIO=4&t=PxYz&transport=polling&sid=abc&b64=1"
            ))
            .body(Body::empty())
            .expect("a request");
        let owned = own_request_head(socket_io_path(), request).await;
        assert_eq!(
            owned.uri(),
            "/socket.io/?EIO=4&transport=polling&sid=abc&b64=1"
        );
    }

    #[tokio::test]
    async fn requests_outside_the_socket_io_path_keep_their_headers() {
        let request = Request::builder()
            .uri("/api/v1/emit")
            .header(header::COOKIE, "session=a-long-cookie")
            .body(Body::empty())
            .expect("a request");
        let passed = own_request_head(socket_io_path(), request).await;
        assert_eq!(passed.headers()[header::COOKIE], "session=a-long-cookie");
    }

    #[tokio::test]
    async fn a_request_opening_a_session_carries_new_rates_and_others_none() {
        for (method, uri, opens) in [
            (Method::GET, "/socket.io/?EIO=4&transport=polling", true),
            (Method::GET, "/socket.io/?EIO=4&transport=websocket", true),
            (
                Method::GET,
                "/socket.io/?EIO=4&transport=polling&sid=abc",
                false,
            ),
            (
                Method::GET,
                "/socket.io/?sid=abc&EIO=4&transport=websocket",
                false,
            ),
            // A POST names its session; without one it opens none (a 400).
            (Method::POST, "/socket.io/?EIO=4&transport=polling", false),
        ] {
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .expect("a request");
            let owned = own_request_head(socket_io_path(), request).await;
            let carries = owned.extensions().get::<ConnectionRates>().is_some();
            assert_eq!(carries, opens, "{uri}");
        }
    }

    #[test]
    fn the_path_covers_itself_and_what_is_below_it() {
        let path = SocketIoPath::new("/socket.io");
        assert!(path.covers("/socket.io"));
        assert!(path.covers("/socket.io/"));
        assert!(!path.covers("/socket.iox"));
        assert!(SocketIoPath::new("/rt/").covers("/rt/x"));
    }
}
