//! The receiving task, one per member: it reads the member's chat events
//! for the whole run. It reports when the member is in the room (the
//! driver waits for every member before sending), times every benchmark
//! message against the local clock, counts the lines flood control
//! refused, and keeps the manager's last words if the session ends early.

use super::driver::Counters;
use super::histogram::LatencyHistogram;
use super::stamp::{latency_us, parse_stamp};
use crate::time::{LocalClock, SystemClock};
use dupla::v1::{chat_event, ChatEvent};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tonic::Streaming;

/// What one receiver saw.
#[derive(Default)]
pub(super) struct Received {
    pub(super) latencies: LatencyHistogram,
    pub(super) throttled: u64,
    pub(super) last: Option<Instant>,
    /// Why its session ended before the run did.
    pub(super) ended: Option<String>,
}

/// Answer of a member that is in `room` (or the reason it is not).
pub(super) type Ready = oneshot::Receiver<std::result::Result<(), String>>;

/// Read one member's events until told to stop or the session ends: say
/// when it is in `room`, time every benchmark message, count refusals.
pub(super) async fn receive(
    mut events: Streaming<ChatEvent>,
    room: String,
    ready: oneshot::Sender<std::result::Result<(), String>>,
    clock: SystemClock,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> Received {
    use chat_event::Kind;
    let joined = format!("you are now in {room} (");
    let mut ready = Some(ready);
    // The answer came; in the room once it hears the room (its own join
    // notice is the first room event it hears, on a server as on the
    // manager): messages sent from then on reach it.
    let mut entered = false;
    let mut got = Received::default();
    let mut last_notice = None;
    let ended = loop {
        let event = tokio::select! {
            biased;
            _ = stop.changed() => break None,
            event = events.message() => event,
        };
        let event = match event {
            Ok(Some(event)) => event,
            Ok(None) => {
                break Some(last_notice.unwrap_or_else(|| "the manager ended the session".into()))
            }
            Err(status) => break Some(format!("the stream failed: {}", status.message())),
        };
        match Kind::try_from(event.kind) {
            Ok(Kind::Message) => {
                if let Some(stamp) = parse_stamp(&event.text) {
                    got.latencies
                        .record(latency_us(stamp.unix_nanos, clock.unix_nanos()));
                    got.last = Some(Instant::now());
                    counters.received.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Kind::Notice) if entered && event.room == room => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Ok(()));
                }
                entered = false;
            }
            Ok(Kind::Answer) if ready.is_some() => {
                if event.text.starts_with(&joined) {
                    entered = true;
                } else if !event.text.starts_with("welcome ") {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(event.text));
                    }
                }
            }
            Ok(Kind::Answer) if event.text.starts_with("slow down") => {
                got.throttled += 1;
                counters.throttled.fetch_add(1, Ordering::Relaxed);
            }
            // The session's own last words (lagged, kicked...) have no room.
            Ok(Kind::Notice) if event.room.is_empty() => last_notice = Some(event.text),
            _ => {}
        }
    };
    if let Some(why) = &ended {
        counters.ended.fetch_add(1, Ordering::Relaxed);
        if let Some(ready) = ready.take() {
            let _ = ready.send(Err(why.clone()));
        }
    }
    got.ended = ended;
    got
}
