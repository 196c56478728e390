//! The handshake request's head, copied out of hyper's read buffer.
//!
//! engineioxide and socketioxide keep the head of the request that opened a
//! session for as long as the session lives. hyper parses a head without
//! copying: its URI and header values are slices of the connection's 8 KiB
//! read buffer, so every idle socket would keep that whole buffer alive.
//! Copying the few hundred bytes they need frees it.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Uri};

/// `request` with its URI and header values in allocations of their own.
pub async fn own_request_head(request: Request) -> Request {
    let (mut head, body) = request.into_parts();
    head.uri = owned_uri(&head.uri);
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for (name, value) in &head.headers {
        headers.append(name.clone(), owned_value(value));
    }
    head.headers = headers;
    Request::from_parts(head, body)
}

fn owned_uri(uri: &Uri) -> Uri {
    uri.to_string().parse().unwrap_or_else(|_| uri.clone())
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

    #[tokio::test]
    async fn the_head_no_longer_points_into_the_buffer_it_was_parsed_from() {
        let buffer = Bytes::from_static(b"/socket.io/?EIO=4&transport=websocket x-token secret");
        let request = Request::builder()
            .uri(Uri::from_maybe_shared(buffer.slice(0..37)).expect("a URI"))
            .header(
                "x-token",
                HeaderValue::from_maybe_shared(buffer.slice(46..52)).expect("a value"),
            )
            .header("x-token", "second")
            .body(Body::empty())
            .expect("a request");
        let owned = own_request_head(request).await;
        let inside = buffer.as_ptr_range();
        let token = owned
            .headers()
            .get_all("x-token")
            .iter()
            .collect::<Vec<_>>();
        assert_eq!(token, ["secret", "second"]);
        assert!(!inside.contains(&token[0].as_bytes().as_ptr()));
        assert_eq!(owned.uri(), "/socket.io/?EIO=4&transport=websocket");
    }
}
