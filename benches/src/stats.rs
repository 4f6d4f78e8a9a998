//! Samples and their percentiles.

use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats::default()
    }

    pub fn add(&mut self, d: Duration) {
        self.samples.push(d);
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Nearest-rank percentile, `p` in 0..=1.
    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.samples.clone();
        sorted.sort();
        let i = ((sorted.len() - 1) as f64 * p).round() as usize;
        sorted[i]
    }

    pub fn median(&self) -> Duration {
        self.percentile(0.5)
    }

    /// `name  median  p10  p90  n`, in milliseconds.
    pub fn line(&self, name: &str) -> String {
        format!(
            "{name:<34} median {:>9.3} ms   p10 {:>8.3}   p90 {:>8.3}   p99 {:>8.3}   n={}",
            ms(self.median()),
            ms(self.percentile(0.1)),
            ms(self.percentile(0.9)),
            ms(self.percentile(0.99)),
            self.samples.len()
        )
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
