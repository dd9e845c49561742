//! One monotonic clock for the whole run, so send times and the fake inbox's arrival times can be
//! subtracted from each other.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Nanoseconds since the run started.
pub fn now() -> u64 {
    START.elapsed().as_nanos() as u64
}

/// The instant `nanos` after the run started.
pub fn instant(nanos: u64) -> Instant {
    *START + Duration::from_nanos(nanos)
}
