//! A request body must arrive whole within a deadline of its head. The pause
//! timeout in front of it (`header_read_timeout_ms`) only bounds the wait for
//! each next piece: a client trickling a body, never pausing that long, would
//! otherwise keep its connection and what it sent for as long as it went on.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

/// The error a body late past its deadline ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive whole within {0:?} of its headers")]
pub struct BodyTooSlow(Duration);

/// Middleware: the request's body, if it has one, fails with
/// [`BodyTooSlow`] once `within` has passed since its head was read.
pub async fn body_deadline(
    State(within): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let request = request.map(|body| {
        if body.is_end_stream() {
            body
        } else {
            Body::new(DeadlineBody {
                body,
                deadline: Box::pin(tokio::time::sleep(within)),
                within,
            })
        }
    });
    next.run(request).await
}

struct DeadlineBody {
    body: Body,
    deadline: Pin<Box<Sleep>>,
    within: Duration,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        // What has arrived is taken even past the deadline.
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        ready!(self.deadline.as_mut().poll(cx));
        Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow(self.within)))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
