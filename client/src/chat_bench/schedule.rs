//! Who sends which message when. `--rate` is for all clients together, so
//! the `rate × seconds` messages are dealt round robin on one shared
//! schedule of `rate` slots per second: message k of client i takes slot
//! `i + k·N`. Each client's sender sleeps until its next slot, stamps the
//! message and queues it; a late sender catches up at once rather than
//! skipping, so every message is sent. What sending means is the
//! caller's: a chat line or a social `Send` call.

use super::driver::Counters;
use super::stamp::stamp;
use crate::time::{LocalClock, SystemClock};
use dupla::v1::ChatInput;
use std::future::Future;
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
/// once), handing each to `sink`, which answers whether to go on (false:
/// the sender's stream is gone, and its receiver says why). The chat hands
/// a line to its stream, the social bench makes a `Send` call.
pub(super) async fn send<S, F>(
    plan: Schedule,
    clock: SystemClock,
    counters: Arc<Counters>,
    mut sink: S,
) where
    S: FnMut(String) -> F,
    F: Future<Output = bool>,
{
    for k in 0..plan.count {
        tokio::time::sleep_until(plan.start + due(plan.index, k, plan.clients, plan.rate)).await;
        if !sink(stamp(plan.index, k, clock.unix_nanos())).await {
            return;
        }
        counters.sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// The chat's sink: queue the line towards the member's chat stream.
pub(super) fn to_chat(input: mpsc::Sender<ChatInput>) -> impl FnMut(String) -> ChatSend {
    move |line| {
        let input = input.clone();
        Box::pin(async move { input.send(ChatInput { line }).await.is_ok() })
    }
}

/// One chat line on its way into the stream.
pub(super) type ChatSend = std::pin::Pin<Box<dyn Future<Output = bool> + Send>>;

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
