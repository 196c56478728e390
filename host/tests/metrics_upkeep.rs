//! A histogram keeps every sample it records until the recorder's upkeep
//! folds them into its buckets. A node whose `/metrics` nobody scrapes must
//! still fold them, or every plugin call leaves its sample behind for as long
//! as the process runs (1.5 MB a second under a load of 75,000 acked events
//! a second, measured before the upkeep thread).
//!
//! Its own test binary: it reads the allocator's process-wide figure, which
//! tests running beside it would move.

use std::time::{Duration, Instant};

use tikv_jemalloc_ctl::{epoch, stats};

fn allocated_bytes() -> usize {
    epoch::advance().expect("advancing jemalloc's statistics epoch");
    stats::allocated::read().expect("reading jemalloc's allocated bytes")
}

/// Records samples as a busy node does, for longer than several upkeep
/// periods, then looks at what they still hold: kept, each holds 20 bytes
/// (8 of value, the rest the bucket's blocks); folded, only the last period's
/// are left.
#[test]
fn histogram_samples_do_not_pile_up_when_nothing_scrapes() {
    switchboard::metrics::Metrics::global();
    let call_seconds = switchboard::metrics::plugin_call_seconds("upkeep-test");
    let before = allocated_bytes();
    let recording = Instant::now();
    let mut samples = 0;
    // 500,000 a second, as many calls as a node makes at its limit.
    while recording.elapsed() < Duration::from_secs(8) {
        for _ in 0..5_000 {
            call_seconds.record(0.000_1);
        }
        samples += 5_000;
        std::thread::sleep(Duration::from_millis(10));
    }
    let held = allocated_bytes().saturating_sub(before);
    assert!(
        held < samples * 8,
        "{held} bytes held after recording {samples} samples in 8 s: {} a sample",
        held / samples
    );
}
