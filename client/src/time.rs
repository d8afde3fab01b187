//! `dupla time`: how far this machine's clock is from the manager's, by
//! Cristian's algorithm. Ask the time several times; keep the round trip
//! that took least (its answer is the least blurred by the network); assume
//! the reply was stamped halfway through it:
//!
//! `offset = server_time + rtt / 2 - local_receive_time`
//!
//! A positive offset means the manager's clock is ahead of this one. The
//! arithmetic is pure and takes the local clock as a parameter, so tests run
//! it against a deliberately skewed clock.

use crate::output::{format_unix_ms, Output};
use crate::session::Client;
use dupla::v1::NowRequest;
use dupla::{Error, Result};
use serde::Serialize;
use std::future::Future;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A source of local wall-clock time, in nanoseconds since the Unix epoch.
pub trait LocalClock {
    /// Now, by this clock.
    fn unix_nanos(&self) -> i128;
}

/// The machine's clock: read once, then advanced by the monotonic clock so
/// that a clock step during the measurement cannot fake a round trip.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    base_unix_nanos: i128,
    base: Instant,
}

impl SystemClock {
    /// Anchor at the current time.
    pub fn new() -> Self {
        let base_unix_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        SystemClock {
            base_unix_nanos,
            base: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalClock for SystemClock {
    fn unix_nanos(&self) -> i128 {
        self.base_unix_nanos + self.base.elapsed().as_nanos() as i128
    }
}

/// One round trip, all in Unix nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Local time when the request left.
    pub sent: i128,
    /// The server's answer.
    pub server: i128,
    /// Local time when the reply arrived.
    pub received: i128,
}

impl Sample {
    /// Round-trip time.
    pub fn rtt(&self) -> i128 {
        self.received - self.sent
    }

    /// Cristian's estimate of server minus local time.
    pub fn offset(&self) -> i128 {
        self.server + self.rtt() / 2 - self.received
    }
}

/// The result of a clock comparison (also `time --json`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TimeReport {
    /// The server's clock in the chosen sample, ms since the Unix epoch.
    pub server_unix_ms: i64,
    /// Server minus local time, milliseconds.
    pub offset_ms: f64,
    /// Round trip of the chosen sample, milliseconds.
    pub rtt_ms: f64,
    /// Round trips measured.
    pub samples: usize,
}

/// Pick the sample with the shortest round trip and report it.
pub fn estimate(samples: &[Sample]) -> Option<TimeReport> {
    let best = samples.iter().min_by_key(|s| s.rtt())?;
    Some(TimeReport {
        server_unix_ms: best.server.div_euclid(1_000_000) as i64,
        offset_ms: best.offset() as f64 / 1e6,
        rtt_ms: best.rtt() as f64 / 1e6,
        samples: samples.len(),
    })
}

/// Take `count` samples: read `clock`, `ask` the server for its time (Unix
/// nanoseconds), read `clock` again. Then [`estimate`].
pub async fn measure<C, F, Fut>(clock: &C, count: usize, mut ask: F) -> Result<TimeReport>
where
    C: LocalClock,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<i128>>,
{
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let sent = clock.unix_nanos();
        let server = ask().await?;
        let received = clock.unix_nanos();
        samples.push(Sample {
            sent,
            server,
            received,
        });
    }
    estimate(&samples).ok_or_else(|| Error::InvalidInput("take at least one sample".into()))
}

impl Client {
    /// Compare the local clock with the manager's over `samples` round trips.
    pub async fn time(&self, samples: usize) -> Result<TimeReport> {
        self.time_with(&SystemClock::new(), samples).await
    }

    /// The same against any local clock (chat uses it; tests skew it).
    pub async fn time_with<C: LocalClock>(&self, clock: &C, samples: usize) -> Result<TimeReport> {
        let manager = self.manager_clock().await?;
        measure(clock, samples, || {
            let request = self.request(NowRequest {});
            let mut manager = manager.clone();
            async move {
                let reply = manager
                    .now(request)
                    .await
                    .map_err(|s| self.manager_error(s))?
                    .into_inner();
                Ok(if reply.unix_nanos != 0 {
                    i128::from(reply.unix_nanos)
                } else {
                    i128::from(reply.unix_ms) * 1_000_000
                })
            }
        })
        .await
    }
}

/// `dupla time`.
pub async fn command(client: &Client, samples: usize, out: Output) -> anyhow::Result<()> {
    let report = client.time(samples).await?;
    let human = format!(
        "manager time {} UTC (unix ms {}); offset {:+.3} ms (positive: the manager is ahead); rtt {:.3} ms, best of {}",
        format_unix_ms(report.server_unix_ms),
        report.server_unix_ms,
        report.offset_ms,
        report.rtt_ms,
        report.samples
    );
    out.emit(human, &report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// True time is `now`; this clock reads it `skew` ns off.
    struct Skewed<'a> {
        now: &'a Cell<i128>,
        skew: i128,
    }

    impl LocalClock for Skewed<'_> {
        fn unix_nanos(&self) -> i128 {
            self.now.get() + self.skew
        }
    }

    const MS: i128 = 1_000_000;

    #[tokio::test]
    async fn a_skewed_clock_is_measured_within_half_the_best_rtt() {
        let now = Cell::new(1_700_000_000_000 * MS);
        let clock = Skewed {
            now: &now,
            skew: -250 * MS, // the local clock is 250 ms behind
        };
        // Round trips of varying length and asymmetry; the third is fastest.
        let legs = [(5, 9), (3, 3), (1, 1), (8, 2), (4, 6)];
        let mut i = 0;
        let report = measure(&clock, legs.len(), || {
            let (out, back) = legs[i];
            i += 1;
            now.set(now.get() + out * MS);
            let server = now.get();
            now.set(now.get() + back * MS);
            async move { Ok(server) }
        })
        .await
        .unwrap();
        assert_eq!(report.rtt_ms, 2.0);
        assert_eq!(report.offset_ms, 250.0);
        assert_eq!(report.samples, 5);
    }

    #[test]
    fn asymmetric_legs_err_by_at_most_half_the_rtt() {
        let s = Sample {
            sent: 0,
            server: 9 * MS, // 9 ms out, 1 ms back, clocks agree
            received: 10 * MS,
        };
        assert_eq!(s.rtt(), 10 * MS);
        assert_eq!(s.offset(), 4 * MS);
        assert!(s.offset().abs() <= s.rtt() / 2);
        assert!(estimate(&[]).is_none());
    }

    #[test]
    fn the_system_clock_moves_forward() {
        let clock = SystemClock::new();
        let a = clock.unix_nanos();
        assert!(clock.unix_nanos() >= a);
        assert!(a > 1_600_000_000_000 * MS);
    }
}
