//! What a handler call has done that is not applied yet: its state
//! transaction and its emits, applied together when it commits.

use super::HostServices;
use super::acks::Question;
use crate::allowance::{HeldBytes, OverBound};
use crate::bindings::PluginError;
use crate::cluster::{Committed, StateError, token};
use crate::escaped::Escaped;
use crate::log_context;
use crate::metrics;
use crate::payload::Outgoing;
use crate::runtime::InstanceState;
use crate::transport::{Audience, SocketsError};

/// One emit, checked, waiting for its call to commit.
pub struct PendingEmit {
    pub namespace: String,
    pub audience: Audience,
    pub event: String,
    pub payload: Outgoing,
    /// What it counts against `max_payload_bytes` and the socket's budget.
    pub bytes: usize,
    /// When it asks its one socket for an ack (`acks.to-socket`).
    pub question: Option<Question>,
}

/// What an emit holds besides its payload and names: its record, boxed
/// payload and audience.
const EMIT_RECORD_BYTES: usize = 128;

/// A call's emits, waiting for it to commit, and the memory they hold there.
/// It is bounded: a plugin emitting in a loop made the node hold every emit
/// until its call returned, 900 MB for a thousand emits of 900 KB, outside
/// the plugin's own memory limit.
pub struct PendingEmits {
    emits: Vec<PendingEmit>,
    /// Within the plugin's `limits.memory_mib`.
    held: HeldBytes,
}

impl PendingEmits {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            emits: Vec::new(),
            held: HeldBytes::new(max_bytes),
        }
    }

    /// Adds `emit`, unless the call's emits would then hold more than the
    /// plugin's `limits.memory_mib`.
    pub fn push(&mut self, emit: PendingEmit) -> Result<(), PluginError> {
        let bytes = emit.bytes + emit.namespace.len() + emit.event.len() + EMIT_RECORD_BYTES;
        self.held.trade(0, bytes).map_err(|OverBound { max }| {
            PluginError::new(
                "quota_exceeded",
                format!(
                    "this call's emits would hold more than {} MiB until it returns (plugins.limits.memory_mib): \
                     emit less in one call, or once to a room rather than to each of its sockets",
                    max >> 20
                ),
            )
        })?;
        self.emits.push(emit);
        Ok(())
    }

    /// The emits that ask their socket for an ack.
    pub fn questions(&self) -> usize {
        self.emits
            .iter()
            .filter(|emit| emit.question.is_some())
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.emits.is_empty()
    }

    /// Takes them all, in the order they were made.
    pub fn take(&mut self) -> Vec<PendingEmit> {
        self.held.release_all();
        std::mem::take(&mut self.emits)
    }
}

impl PendingEmit {
    /// Sends it, for `plugin`, through the path every emit takes, or the
    /// one that waits for an answer.
    pub async fn send(self, plugin: &str, services: &HostServices) -> Result<(), SocketsError> {
        let sockets = services.sockets.as_ref();
        match self.question {
            None => {
                sockets
                    .emit(&self.namespace, self.audience, &self.event, self.payload)
                    .await?;
            }
            Some(question) => {
                let answer = sockets
                    .ask(
                        &self.namespace,
                        &question.socket_id,
                        &self.event,
                        self.payload,
                        question.timeout,
                    )
                    .await?;
                services
                    .acks
                    .wait(question, answer, services.max_payload_bytes);
            }
        }
        metrics::emitted(plugin);
        Ok(())
    }
}

impl InstanceState {
    /// Stores the call's writes if nothing it read has changed, then sends
    /// its emits. The keys written stay held (unreadable to other calls, on
    /// every node) until the emits are handed to the transport, so a call
    /// that depends on these writes emits after them. On a conflict nothing
    /// is applied; either way the instance is ready for its next call.
    pub async fn commit(&mut self) -> Result<Committed, StateError> {
        let committed = self.apply().await;
        // The next call of this node reading the same hot keys sees all of it.
        self.transaction.end_turns();
        committed
    }

    async fn apply(&mut self) -> Result<Committed, StateError> {
        let emits = self.pending.take();
        let hold = (!emits.is_empty()).then(token);
        let (committed, written) = self.transaction.commit(hold.as_deref()).await?;
        if committed == Committed::Conflict {
            return Ok(committed);
        }
        for emit in emits {
            let event = emit.event.clone();
            // Checked when the plugin made it: what fails now (the
            // transport) cannot fail a call whose state is stored.
            if let Err(error) = self.send(emit).await {
                log_context::logged(|| {
                    tracing::warn!(plugin = %self.plugin.name, event = %Escaped(&event), "emit after commit failed: {error}");
                });
            }
        }
        if let Some(hold) = hold
            && let Err(error) = self.transaction.release(&hold, &written).await
        {
            // The hold lapses by itself.
            log_context::logged(|| {
                tracing::warn!(plugin = %self.plugin.name, "state keys not released after emitting: {error}");
            });
        }
        Ok(committed)
    }

    /// Sends an emit of the running call, its bytes counted against the
    /// socket whose event caused it.
    pub(super) async fn send(&mut self, emit: PendingEmit) -> Result<(), SocketsError> {
        if let Some(meter) = &self.meter {
            meter.output_bytes(emit.bytes);
        }
        emit.send(self.plugin.name.as_str(), &self.services).await
    }

    /// Whether the call left anything for [`Self::commit`]: state it read
    /// or wrote, or emits. Without, [`Self::discard`] does all it would.
    pub fn has_effects(&self) -> bool {
        !self.pending.is_empty() || self.transaction.touched()
    }

    /// Drops what the call did: it failed.
    pub fn discard(&mut self) {
        self.pending.take();
        self.transaction.reset();
    }
}
