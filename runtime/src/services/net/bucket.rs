//! A token bucket per direction of a sandbox's traffic: `rate` bytes per
//! second, with a burst of an eighth of a second (at least 16 KiB) so
//! that a transfer's time follows the rate, not the burst.

use std::time::{Duration, Instant};

const MIN_BURST: u64 = 16 * 1024;

#[derive(Debug)]
pub struct Bucket {
    rate: u64,
    burst: u64,
    tokens: u64,
    last: Instant,
}

impl Bucket {
    pub fn new(rate: u64, now: Instant) -> Bucket {
        let burst = (rate / 8).max(MIN_BURST);
        Bucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        let add = (elapsed.as_nanos() * self.rate as u128 / 1_000_000_000) as u64;
        if add > 0 {
            self.tokens = (self.tokens + add).min(self.burst);
            // Advance by what was credited only, so fractions accumulate.
            self.last +=
                Duration::from_nanos((add as u128 * 1_000_000_000 / self.rate as u128) as u64);
            if self.tokens == self.burst {
                self.last = now;
            }
        }
    }

    /// How many of `want` bytes may pass now.
    pub fn available(&mut self, want: usize, now: Instant) -> usize {
        self.refill(now);
        self.tokens.min(want as u64) as usize
    }

    /// Spends `n` bytes (at most what [`Self::available`] granted).
    pub fn spend(&mut self, n: usize) {
        self.tokens = self.tokens.saturating_sub(n as u64);
    }

    /// When enough tokens for a useful chunk will be there.
    pub fn ready_at(&self, now: Instant) -> Instant {
        let chunk = MIN_BURST.min(self.burst);
        if self.tokens >= chunk {
            return now;
        }
        let missing = chunk - self.tokens;
        self.last
            + Duration::from_nanos((missing as u128 * 1_000_000_000 / self.rate as u128) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sustained_throughput_follows_the_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(1 << 20, start);
        // Drain 4 MiB in simulated time, always taking what is available.
        let mut now = start;
        let mut sent = 0usize;
        while sent < 4 << 20 {
            let n = bucket.available(64 * 1024, now);
            bucket.spend(n);
            sent += n;
            if n == 0 {
                now = bucket.ready_at(now).max(now + Duration::from_micros(1));
            }
        }
        let took = now - start;
        // 4 MiB minus the 128 KiB burst at 1 MiB/s.
        assert!(
            took >= Duration::from_millis(3800) && took <= Duration::from_millis(4000),
            "{took:?}"
        );
    }
}
