//! The load driver, steps 2 to 4 of a run: open every member's connection
//! and chat stream, gather them all in the room, start one sender per
//! member on the shared schedule, drain until every accepted message
//! reached every member (or [`DRAIN`] passes), then stop the receivers and
//! add up what they saw. All the tasks live in [`JoinSet`]s, so an error
//! or a cancellation anywhere stops every one of them.

use super::histogram::LatencyHistogram;
use super::receiver::{receive, Ready, Received};
use super::say;
use super::schedule::{messages_of, send, Schedule};
use crate::cli::ChatBenchArgs;
use crate::session::Client;
use crate::time::SystemClock;
use dupla::v1::{ChatEvent, ChatInput};
use dupla::{Error, Result};
use futures::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// Longest wait, once sending is over, for the last deliveries.
pub const DRAIN: Duration = Duration::from_secs(2);

/// Connections opened at a time.
const CONNECT_CONCURRENCY: usize = 32;

/// Longest wait for every client to be in the room.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long past the end of the schedule senders may still be waiting for
/// room in their stream before they are stopped.
const SEND_GRACE: Duration = Duration::from_secs(5);

/// How long receivers get to hand back their figures once told to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the drain checks whether everything arrived.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// Lines a client queues towards its stream before its sender waits.
const INPUT_QUEUE: usize = 64;

/// Running totals shared by the tasks, read by the drain.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) sent: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) throttled: AtomicU64,
    pub(super) ended: AtomicU64,
}

/// What the sending and receiving phases measured.
pub(super) struct Measured {
    pub(super) setup_seconds: f64,
    pub(super) send_seconds: f64,
    pub(super) sent: u64,
    pub(super) throttled: u64,
    pub(super) latencies: LatencyHistogram,
    /// From the first message due to the last delivery, seconds.
    pub(super) window: f64,
    pub(super) disconnected: u32,
    pub(super) reason: Option<String>,
}

/// Connect every member, gather them in `room`, send, drain. Every task is
/// in a [`JoinSet`], so returning (or being cancelled) stops them all.
pub(super) async fn measure(
    members: &[Client],
    args: &ChatBenchArgs,
    room: &str,
    setup: Instant,
    progress: bool,
) -> Result<Measured> {
    let n = args.clients;
    let clock = SystemClock::new();
    let counters = Arc::new(Counters::default());
    let (stop, stopped) = watch::channel(false);
    let mut receivers = JoinSet::new();
    let mut spawn = |events: Streaming<ChatEvent>| -> Ready {
        let (ready, is_ready) = oneshot::channel();
        receivers.spawn(receive(
            events,
            room.to_string(),
            ready,
            clock,
            counters.clone(),
            stopped.clone(),
        ));
        is_ready
    };

    // Client 0 creates the room; the others enter it.
    say(progress, format!("opening {n} chats; joining room {room}"));
    let join_deadline = Instant::now() + JOIN_TIMEOUT;
    let mut inputs: Vec<Option<mpsc::Sender<ChatInput>>> = vec![None; members.len()];
    let (input, events) = open(&members[0]).await?;
    let creator_ready = spawn(events);
    let _ = input.send(line(&format!("#cR {room}"))).await;
    inputs[0] = Some(input);
    await_ready(creator_ready, join_deadline, 0).await?;
    let mut readies = Vec::with_capacity(members.len());
    let mut opened = futures::stream::iter(1..members.len())
        .map(|i| {
            let member = members[i].clone();
            async move { (i, open(&member).await) }
        })
        .buffer_unordered(CONNECT_CONCURRENCY);
    while let Some((i, outcome)) = opened.next().await {
        let (input, events) = outcome?;
        readies.push((i, spawn(events)));
        let _ = input.send(line(&format!("#gR {room}"))).await;
        inputs[i] = Some(input);
    }
    drop(opened);
    for (i, ready) in readies {
        await_ready(ready, join_deadline, i).await?;
    }
    let setup_seconds = setup.elapsed().as_secs_f64();
    say(
        progress,
        format!(
            "all {n} clients in {room} after {setup_seconds:.1} s; sending {} messages/s for {} s",
            args.rate, args.seconds
        ),
    );

    // Send on the shared schedule.
    let total = u64::from(args.rate) * u64::from(args.seconds);
    let start = Instant::now();
    let mut senders = JoinSet::new();
    for (i, input) in inputs.iter().enumerate() {
        let index = i as u32;
        let count = messages_of(index, n, total);
        if let (Some(input), true) = (input, count > 0) {
            senders.spawn(send(
                Schedule {
                    index,
                    count,
                    clients: n,
                    rate: args.rate,
                    start,
                },
                input.clone(),
                clock,
                counters.clone(),
            ));
        }
    }
    let end = start + Duration::from_secs(u64::from(args.seconds)) + SEND_GRACE;
    let all_sent = async { while senders.join_next().await.is_some() {} };
    if tokio::time::timeout_at(end, all_sent).await.is_err() {
        senders.abort_all();
        eprintln!("warning: the manager stopped taking lines; sending was cut short");
    }
    let send_seconds = start.elapsed().as_secs_f64();

    // Drain until every accepted message reached every client.
    let drain_end = Instant::now() + DRAIN;
    loop {
        let sent = counters.sent.load(Ordering::Relaxed);
        let throttled = counters.throttled.load(Ordering::Relaxed);
        let expected = sent.saturating_sub(throttled) * u64::from(n);
        let done = counters.received.load(Ordering::Relaxed) >= expected
            || counters.ended.load(Ordering::Relaxed) >= u64::from(n);
        if done || Instant::now() >= drain_end {
            break;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    let _ = stop.send(true);

    let mut latencies = LatencyHistogram::new();
    let (mut throttled, mut last, mut disconnected, mut reason) = (0, None, 0, None);
    let gathered = tokio::time::timeout(STOP_TIMEOUT, async {
        while let Some(outcome) = receivers.join_next().await {
            let got = outcome.unwrap_or_else(|e| Received {
                ended: Some(format!("the receiving task failed: {e}")),
                ..Received::default()
            });
            latencies.merge(&got.latencies);
            throttled += got.throttled;
            last = last.max(got.last);
            if let Some(why) = got.ended {
                disconnected += 1;
                reason.get_or_insert(why);
            }
        }
    })
    .await;
    if gathered.is_err() {
        eprintln!("warning: some receivers did not stop in time; their deliveries are not counted");
    }
    drop(inputs);
    Ok(Measured {
        setup_seconds,
        send_seconds,
        sent: counters.sent.load(Ordering::Relaxed),
        throttled,
        latencies,
        window: last.map_or(0.0, |t: Instant| {
            t.saturating_duration_since(start).as_secs_f64()
        }),
        disconnected,
        reason,
    })
}

/// A chat line.
fn line(text: &str) -> ChatInput {
    ChatInput { line: text.into() }
}

/// Open `member`'s connection and chat stream.
async fn open(member: &Client) -> Result<(mpsc::Sender<ChatInput>, Streaming<ChatEvent>)> {
    let (input, rx) = mpsc::channel(INPUT_QUEUE);
    let mut rooms = member.manager_rooms().await?;
    let events = rooms
        .chat(member.request(ReceiverStream::new(rx)))
        .await
        .map_err(|s| member.manager_error(s))?
        .into_inner();
    Ok((input, events))
}

/// Wait until client `i` is in the room, at most until `deadline`.
async fn await_ready(ready: Ready, deadline: Instant, i: usize) -> Result<()> {
    match tokio::time::timeout_at(deadline, ready).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(why))) => Err(Error::Unavailable(format!(
            "chat client {i} could not join the benchmark room: {why}"
        ))),
        Ok(Err(_)) => Err(Error::Internal(format!(
            "chat client {i}'s receiver stopped before joining"
        ))),
        Err(_) => Err(Error::Unavailable(format!(
            "chat client {i} was not in the benchmark room within {JOIN_TIMEOUT:?}"
        ))),
    }
}
