//! Throttling for background copies and scrubs: a byte budget per second.
//! Work proceeds in bursts as fast as it can and sleeps whenever it got
//! ahead of the budget, so client transfers keep most of the disk and CPU.

use tokio::time::{Duration, Instant};

/// Keeps a stream of work at or under `rate` bytes per second.
#[derive(Debug)]
pub struct Pacer {
    rate: f64,
    started: Instant,
    bytes: u64,
}

impl Pacer {
    /// A pacer allowing `rate` bytes per second (at least 1).
    pub fn new(rate: u64) -> Self {
        Pacer {
            rate: rate.max(1) as f64,
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Account `bytes` of work and wait until the budget allows it.
    pub async fn pace(&mut self, bytes: u64) {
        self.bytes += bytes;
        let due = self.started + Duration::from_secs_f64(self.bytes as f64 / self.rate);
        tokio::time::sleep_until(due).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn holds_work_to_the_budget() {
        let start = Instant::now();
        let mut pacer = Pacer::new(1000);
        for _ in 0..5 {
            pacer.pace(1000).await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }
}
