//! `acks`: events that ask a client for an acknowledgement. The event is
//! sent when its call commits; the answer (or why none came) is handed to
//! the plugin's `ack-handler` in a call of its own, on this node, so no
//! instance is held while a client thinks.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use super::pending::PendingEmit;
use crate::bindings::switchboard::plugin::acks::Host;
use crate::bindings::{Payload, PluginError};
use crate::metrics;
use crate::payload;
use crate::runtime::InstanceState;
use crate::transport::PendingAck;

/// The longest a plugin may wait for a client's answer.
const MAX_TIMEOUT_MS: u32 = 300_000;

/// The longest `tag` a plugin may attach.
const MAX_TAG_BYTES: usize = 1024;

/// Who waits for an answer: what `on-ack` is called with besides it.
pub struct Question {
    pub plugin: String,
    pub namespace: String,
    pub socket_id: String,
    pub tag: String,
    pub timeout: Duration,
}

/// An answer for a plugin's `on-ack`: the client's arguments, or the error
/// saying why none came.
pub struct Answered {
    pub question: Question,
    pub answer: Result<Payload, PluginError>,
}

type Deliver = Arc<dyn Fn(Answered) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The answers plugins wait for on this node, and who hands them over.
#[derive(Default)]
pub struct AckWaits {
    waiting: Mutex<HashMap<String, usize>>,
    deliver: OnceLock<Deliver>,
}

impl AckWaits {
    /// Has `deliver` called with each answer; answers that come before this
    /// is set (none can: plugins are loaded first) are dropped.
    pub fn deliver_with<F, Fut>(&self, deliver: F)
    where
        F: Fn(Answered) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let deliver: Deliver = Arc::new(move |answered| Box::pin(deliver(answered)));
        let _ = self.deliver.set(deliver);
    }

    fn waiting(&self, plugin: &str) -> usize {
        self.lock().get(plugin).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits, off the call that asked, for `pending` and delivers it; an
    /// answer over `max_payload_bytes` is not delivered, the plugin is told why.
    pub(super) fn wait(
        self: &Arc<Self>,
        question: Question,
        pending: PendingAck,
        max_payload_bytes: usize,
    ) {
        *self.lock().entry(question.plugin.clone()).or_default() += 1;
        let waits = self.clone();
        tokio::spawn(async move {
            // Bounded as an event is: one of many tiny arguments was held
            // twenty times its size until its plugin had it.
            let answer = pending.await.and_then(|payload| {
                payload::within(payload::size(&payload), max_payload_bytes)?;
                Ok(payload)
            });
            {
                let mut waiting = waits.lock();
                if let Some(count) = waiting.get_mut(&question.plugin) {
                    *count -= 1;
                    if *count == 0 {
                        waiting.remove(&question.plugin);
                    }
                }
            }
            let outcome = answer
                .as_ref()
                .map_or_else(|failure| failure.code(), |_| "answered");
            metrics::ack(&question.plugin, outcome);
            let Some(deliver) = waits.deliver.get() else {
                return;
            };
            deliver(Answered {
                question,
                answer: answer.map_err(PluginError::from),
            })
            .await;
        });
    }
}

impl Host for InstanceState {
    async fn to_socket(
        &mut self,
        namespace: String,
        socket_id: String,
        event: String,
        payload: Payload,
        timeout_ms: u32,
        tag: String,
    ) -> Result<(), PluginError> {
        let plugin = &self.plugin;
        if !plugin.receives_acks {
            return Err(PluginError::new(
                "no_ack_handler",
                format!(
                    "plugin `{}` does not export `ack-handler`, so the answer could not be delivered; implement `on_ack`",
                    plugin.name
                ),
            ));
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(PluginError::new(
                "invalid_timeout",
                format!("an ack's timeout is 1 to {MAX_TIMEOUT_MS} ms, not {timeout_ms}"),
            ));
        }
        if tag.len() > MAX_TAG_BYTES {
            return Err(PluginError::new(
                "invalid_tag",
                format!(
                    "an ack's tag is at most {MAX_TAG_BYTES} bytes; store the data in `state` and pass its key"
                ),
            ));
        }
        let asked_in_this_call = self.pending.questions();
        let waiting = self.services.acks.waiting(plugin.name.as_str()) + asked_in_this_call;
        if waiting >= plugin.max_pending_acks {
            return Err(PluginError::new(
                "overloaded",
                format!(
                    "plugin `{}` already waits for {waiting} acks on this node ([plugins.limits] max_pending_acks)",
                    plugin.name
                ),
            ));
        }
        let question = Question {
            plugin: plugin.name.to_string(),
            namespace: namespace.clone(),
            socket_id: socket_id.clone(),
            tag,
            timeout: Duration::from_millis(u64::from(timeout_ms)),
        };
        let emit = self.checked_emit_to_socket(&namespace, &socket_id, &event, payload)?;
        self.pending.push(PendingEmit {
            question: Some(question),
            ..emit
        })
    }
}
