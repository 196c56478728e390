//! The process's memory allocator: jemalloc, which hands memory freed after
//! a burst back to the operating system, and its figures for `/metrics`.
//!
//! With glibc's malloc a node kept what 1,000 stuck readers had held (about
//! 900 MiB) after they were gone, and a later burst added to it instead of
//! reusing it: memory scattered over per-thread arenas. jemalloc returns
//! pages unused for `dirty_decay_ms` (10 s by default), from a background
//! thread, so an idle node shrinks too.

use metrics::{counter, gauge};
use tikv_jemalloc_ctl::{Access, AsName, background_thread, epoch, stats};

use crate::metrics::{MEMORY_ALLOCATED, MEMORY_ALLOCATIONS, MEMORY_RESIDENT};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Starts jemalloc's background threads, which purge unused pages even
/// while no thread allocates. Without them memory goes back only when some
/// thread next allocates.
pub fn return_unused_memory() {
    if let Err(error) = background_thread::write(true) {
        tracing::warn!(%error, "cannot start the allocator's background threads: freed memory is returned to the OS only as threads allocate");
    }
}

/// Sets the memory gauges to the allocator's current figures.
pub fn record_memory() {
    // jemalloc's statistics are a snapshot taken when the epoch advances.
    if epoch::advance().is_err() {
        return;
    }
    if let Ok(allocated) = stats::allocated::read() {
        gauge!(MEMORY_ALLOCATED).set(allocated as f64);
    }
    if let Ok(resident) = stats::resident::read() {
        gauge!(MEMORY_RESIDENT).set(resident as f64);
    }
    if let Some(allocations) = allocations() {
        counter!(MEMORY_ALLOCATIONS).absolute(allocations);
    }
}

/// Allocations made since the process started: the requests of every size
/// class in every arena (4096 is jemalloc's `MALLCTL_ARENAS_ALL`), those a
/// thread's cache served included.
fn allocations() -> Option<u64> {
    let requests = |name: &[u8]| Access::<u64>::read(name.name()).ok();
    Some(
        requests(b"stats.arenas.4096.small.nrequests\0")?
            + requests(b"stats.arenas.4096.large.nrequests\0")?,
    )
}
