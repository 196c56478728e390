//! The socket, and the event, that the code running now serves: named in
//! what is logged during a call (a plugin's own lines, a trap, a timeout).
//!
//! Kept in a task-local rather than in tracing spans entered for every event:
//! with the default filter (`info`), making a span, formatting its fields
//! and entering it on every poll cost a fifth of an acked event's CPU. Here a
//! task carries an `Arc` and the spans are made only for a line that is
//! logged, with the same names and fields (`socket`: namespace and socket id;
//! `event`: event and plugin).

use std::future::Future;
use std::sync::Arc;

use futures_util::future::Either;
use tracing::Instrument;

use crate::bindings::Conn;
use crate::escaped::Escaped;
use crate::manifest::PluginName;

tokio::task_local! {
    static CURRENT: Arc<LogContext>;
}

pub struct LogContext {
    conn: Arc<Conn>,
    /// The event being handled and the plugin handling it.
    event: Option<(Arc<str>, PluginName)>,
}

impl LogContext {
    /// The socket alone: what it does outside events.
    pub fn socket(conn: Arc<Conn>) -> Self {
        Self { conn, event: None }
    }

    /// One of the socket's events, handled by `plugin`.
    pub fn event(conn: Arc<Conn>, event: Arc<str>, plugin: &PluginName) -> Self {
        let event = Some((event, plugin.clone()));
        Self { conn, event }
    }

    /// Runs `work` in this context, on whatever thread polls it.
    pub fn scope<F: Future>(self, work: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(Arc::new(self), work)
    }
}

/// Runs `work` in the context the current code runs in: for work handed to
/// another task. Code outside a socket's task (a connection's admission, an
/// HTTP route) keeps its current span instead.
///
/// Made at once rather than by an `async` block: a block would hold `work`
/// and, from its first poll, the scope holding `work` too, and copy it from
/// one to the other; a call's future is kilobytes.
pub fn carried<F: Future>(work: F) -> impl Future<Output = F::Output> {
    match CURRENT.try_with(Arc::clone) {
        Ok(context) => Either::Left(CURRENT.scope(context, work)),
        Err(_) => Either::Right(work.instrument(tracing::Span::current())),
    }
}

/// Runs `log` (a line or a few) in the spans that name the current context,
/// made for it.
pub fn logged<R>(log: impl FnOnce() -> R) -> R {
    let Ok(context) = CURRENT.try_with(Arc::clone) else {
        return log();
    };
    let conn = &context.conn;
    let socket =
        tracing::info_span!("socket", namespace = %conn.namespace, socket = %conn.socket_id);
    let _socket = socket.enter();
    match &context.event {
        Some((event, plugin)) => {
            tracing::info_span!("event", event = %Escaped(event), plugin = %plugin).in_scope(log)
        }
        None => log(),
    }
}
