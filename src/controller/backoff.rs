//! Exponential backoff with jitter for transient failures, reset after a quiet period.

use std::time::Duration;

use tokio::time::Instant;

/// Delays between retries: 1 s, 2 s, 4 s… up to 5 min, each scaled by a jitter in
/// [0.5, 1.0); a failure after a quiet period (no failure for 10 min) starts over.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    quiet: Duration,
    attempt: u32,
    last_failure: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(300),
            Duration::from_secs(600),
        )
    }
}

impl Backoff {
    /// A backoff from `base` to `max`, reset after `quiet` without failures.
    pub fn new(base: Duration, max: Duration, quiet: Duration) -> Backoff {
        Backoff {
            base,
            max,
            quiet,
            attempt: 0,
            last_failure: None,
        }
    }

    /// Records a failure at `now` and returns how long to wait before retrying;
    /// `jitter` is a number in [0, 1).
    pub fn failure(&mut self, now: Instant, jitter: f64) -> Duration {
        if self
            .last_failure
            .is_some_and(|t| now.duration_since(t) >= self.quiet)
        {
            self.attempt = 0;
        }
        self.last_failure = Some(now);
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(20));
        self.attempt = self.attempt.saturating_add(1);
        exp.min(self.max)
            .mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
    }

    /// Records a success: the next failure starts over.
    pub fn success(&mut self) {
        self.attempt = 0;
    }
}

/// A jitter in [0, 1) from the clock's nanoseconds: enough to spread retries.
pub fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn doubles_caps_and_resets_after_quiet() {
        let mut b = Backoff::default();
        let now = Instant::now();
        let delays: Vec<u64> = (0..12)
            .map(|_| b.failure(now, 0.999_999).as_secs())
            .collect();
        assert_eq!(delays, [0, 1, 3, 7, 15, 31, 63, 127, 255, 299, 299, 299]);
        // Half the delay with no jitter.
        let mut b = Backoff::default();
        assert_eq!(b.failure(now, 0.0), Duration::from_millis(500));
        assert_eq!(b.failure(now, 0.0), Duration::from_secs(1));
        // Ten quiet minutes later it starts over.
        tokio::time::advance(Duration::from_secs(601)).await;
        assert_eq!(b.failure(Instant::now(), 0.0), Duration::from_millis(500));
        b.success();
        assert_eq!(b.failure(Instant::now(), 0.0), Duration::from_millis(500));
    }
}
