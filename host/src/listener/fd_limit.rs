//! How many connections the process's file-descriptor limit leaves room for.

use super::admission::{PROBE_RESERVE, RATE_RESERVE};

/// Descriptors kept for everything but admitted connections: the refusal
/// reserves, and the process's own files (Redis, the plugin watcher, the
/// code cache, static files being served, the runtime's event queue).
const RESERVED: u64 = (PROBE_RESERVE + RATE_RESERVE) as u64 + 64;

/// The most connections to admit: `wanted`, lowered to what the file
/// descriptors allow (after raising the soft limit towards the hard one, as
/// Go's runtime does), so `accept` never fails for want of one and the reserves
/// keep answering. Says why when it lowers it.
pub fn connection_capacity(wanted: usize) -> usize {
    let needed = u64::try_from(wanted)
        .unwrap_or(u64::MAX)
        .saturating_add(RESERVED);
    let limit = match rlimit::increase_nofile_limit(needed) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(
                "cannot read the file-descriptor limit ({error}); keeping `max_connections` = {wanted}"
            );
            return wanted;
        }
    };
    let room = usize::try_from(limit.saturating_sub(RESERVED))
        .unwrap_or(usize::MAX)
        .max(1);
    if room < wanted {
        tracing::warn!(
            "`max_connections` lowered from {wanted} to {room}: the process may open {limit} files \
             (`ulimit -n`) and keeps {RESERVED} for itself; raise the limit to admit more"
        );
    }
    room.min(wanted)
}
