//! One monotonic clock for the whole run, so send times and the fake inbox's arrival times can be
//! subtracted from each other.

use std::sync::LazyLock;
use std::time::Instant;

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Nanoseconds since the run started.
pub fn now() -> u64 {
    START.elapsed().as_nanos() as u64
}
