//! Who sends which message when. `--rate` is for all clients together, so
//! the `rate × seconds` messages are dealt round robin on one shared
//! schedule of `rate` slots per second: message k of client i takes slot
//! `i + k·N`. Each client's sender sleeps until its next slot, stamps the
//! message and queues it; a late sender catches up at once rather than
//! skipping, so every message is sent.

use super::driver::Counters;
use super::stamp::stamp;
use crate::time::{LocalClock, SystemClock};
use dupla::v1::ChatInput;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How many of `total` messages client `index` of `clients` sends: they are
/// dealt round robin, so the counts add up to `total` exactly.
pub fn messages_of(index: u32, clients: u32, total: u64) -> u64 {
    let (i, n) = (u64::from(index), u64::from(clients.max(1)));
    if i >= total {
        0
    } else {
        (total - i).div_ceil(n)
    }
}

/// When message `k` of client `index` is due, after the start: slot
/// `index + k·clients` of one schedule of `rate` slots per second.
pub fn due(index: u32, k: u64, clients: u32, rate: u32) -> Duration {
    let slot = u128::from(index) + u128::from(k) * u128::from(clients);
    let nanos = slot * 1_000_000_000 / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Which messages one sender sends, and when.
pub(super) struct Schedule {
    pub(super) index: u32,
    pub(super) count: u64,
    pub(super) clients: u32,
    pub(super) rate: u32,
    pub(super) start: Instant,
}

/// Send `plan.count` stamped messages, each at its due time (late ones at
/// once).
pub(super) async fn send(
    plan: Schedule,
    input: mpsc::Sender<ChatInput>,
    clock: SystemClock,
    counters: Arc<Counters>,
) {
    for k in 0..plan.count {
        tokio::time::sleep_until(plan.start + due(plan.index, k, plan.clients, plan.rate)).await;
        let text = stamp(plan.index, k, clock.unix_nanos());
        if input.send(ChatInput { line: text }).await.is_err() {
            return; // The stream is gone; its receiver says why.
        }
        counters.sent.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_deals_rate_times_seconds_round_robin() {
        // 200 clients at 200 messages/s in total for 10 s: 10 each.
        let counts: Vec<u64> = (0..200).map(|i| messages_of(i, 200, 2000)).collect();
        assert!(counts.iter().all(|&c| c == 10));
        // Uneven: the first clients send one more.
        let counts: Vec<u64> = (0..3).map(|i| messages_of(i, 3, 10)).collect();
        assert_eq!(counts, [4, 3, 3]);
        assert_eq!((0..5).map(|i| messages_of(i, 5, 2)).sum::<u64>(), 2);
        assert_eq!(messages_of(0, 0, 3), 3);
        // Slots are 1/rate apart across clients.
        assert_eq!(due(0, 0, 200, 200), Duration::ZERO);
        assert_eq!(due(1, 0, 200, 200), Duration::from_millis(5));
        assert_eq!(due(0, 1, 200, 200), Duration::from_secs(1));
        assert_eq!(due(3, 2, 4, 4000), Duration::from_micros(2750));
        assert_eq!(due(1, 0, 1, 0), Duration::from_secs(1));
    }
}
