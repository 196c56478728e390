//! What a handler call has done that is not applied yet: its state
//! transaction and its emits, applied together when it commits.

use crate::cluster::{Committed, StateError};
use crate::escaped::Escaped;
use crate::payload::Outgoing;
use crate::runtime::InstanceState;
use crate::transport::{Audience, Sockets, SocketsError};

/// One emit, checked, waiting for its call to commit.
pub struct PendingEmit {
    pub namespace: String,
    pub audience: Audience,
    pub event: String,
    pub payload: Outgoing,
}

impl PendingEmit {
    /// Sends it through the path every emit takes.
    pub async fn send(self, sockets: &dyn Sockets) -> Result<(), SocketsError> {
        sockets
            .emit(&self.namespace, self.audience, &self.event, &self.payload)
            .await
    }
}

impl InstanceState {
    /// Stores the call's writes if nothing it read has changed, then sends
    /// its emits. On a conflict nothing is applied; either way the instance
    /// is ready for its next call.
    pub async fn commit(&mut self) -> Result<Committed, StateError> {
        let emits = std::mem::take(&mut self.pending);
        let committed = self.transaction.commit().await;
        self.transaction.reset();
        if let Ok(Committed::Applied) = committed {
            for emit in emits {
                let event = emit.event.clone();
                // Checked when the plugin made it: what fails now (the
                // transport) cannot fail a call whose state is stored.
                if let Err(error) = emit.send(self.services.sockets.as_ref()).await {
                    tracing::warn!(plugin = %self.plugin.name, event = %Escaped(&event), "emit after commit failed: {error}");
                }
            }
        }
        committed
    }

    /// Drops what the call did: it failed.
    pub fn discard(&mut self) {
        self.pending.clear();
        self.transaction.reset();
    }
}
