//! When to try a failed job again.

use std::time::Duration;

/// Exponential backoff with ±20 % jitter, capped, with a bounded number of attempts.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub base: Duration,
    /// Longest delay between two attempts.
    pub max_delay: Duration,
    /// Attempts before the job is dead-lettered.
    pub max_attempts: i32,
}

impl Default for RetryPolicy {
    /// 1 s, 2 s, 4 s … capped at one hour; 25 attempts span roughly 14 hours, long enough to
    /// ride out an outage of Pipedrive or Meta without a human.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(3600),
            max_attempts: 25,
        }
    }
}

impl RetryPolicy {
    /// Delay before the next attempt after `attempts` failed ones, never shorter than what the
    /// other side asked for (`at_least`).
    pub fn delay(&self, attempts: i32, at_least: Option<Duration>) -> Duration {
        let exponent = attempts.saturating_sub(1).clamp(0, 30) as u32;
        let backoff = self
            .base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.max_delay);
        // Jitter spreads retries of many jobs that failed together (an outage) over time.
        let [r] = crate::crypto::random_bytes::<1>();
        let factor = 0.8 + 0.4 * (f64::from(r) / 255.0);
        let jittered = backoff.mul_f64(factor);
        at_least.map_or(jittered, |min| jittered.max(min))
    }

    /// True when a job that has failed `attempts` times must be dead-lettered.
    pub fn exhausted(&self, attempts: i32) -> bool {
        attempts >= self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_jitter_and_is_capped() {
        let policy = RetryPolicy::default();
        for (attempt, nominal) in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 512.0), (20, 3600.0)] {
            let d = policy.delay(attempt, None).as_secs_f64();
            assert!(
                d >= nominal * 0.8 - 1e-9 && d <= nominal * 1.2 + 1e-9,
                "{attempt}: {d}"
            );
        }
    }

    #[test]
    fn retry_after_only_lengthens() {
        let policy = RetryPolicy::default();
        assert!(policy.delay(1, Some(Duration::from_secs(30))) >= Duration::from_secs(30));
        assert!(policy.delay(12, Some(Duration::from_millis(1))) >= Duration::from_secs(1600));
    }

    #[test]
    fn budget_is_bounded() {
        let policy = RetryPolicy::default();
        assert!(!policy.exhausted(24));
        assert!(policy.exhausted(25));
    }
}
