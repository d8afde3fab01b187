//! The load driver, steps 2 to 4 of a run: open every member's connection
//! and chat stream, gather them all in the room, start one sender per
//! member on the shared schedule, drain until every accepted message
//! reached every member (or [`DRAIN`] passes), then stop the receivers and
//! add up what they saw. All the tasks live in [`JoinSet`]s, so an error
//! or a cancellation anywhere stops every one of them.

use super::cpu::{CpuUse, CpuWindow};
use super::histogram::LatencyHistogram;
use super::receiver::{receive, Ready, Received};
use super::say;
use super::schedule::{messages_of, send, to_chat, Schedule};
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
    /// Deliveries due, when the sender learns it per message (the social
    /// bench: a `Send` reply lists its recipients).
    pub(super) expected: AtomicU64,
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
    /// CPU of the watched processes while messages flowed.
    pub(super) cpu: Vec<CpuUse>,
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
    let cpu = CpuWindow::start(&args.watch);
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
                clock,
                counters.clone(),
                to_chat(input.clone()),
            ));
        }
    }
    let send_seconds = finish_sending(senders, start, args.seconds).await;
    // Every accepted line reaches every member.
    drain(&counters, n, |c| {
        let sent = c.sent.load(Ordering::Relaxed);
        sent.saturating_sub(c.throttled.load(Ordering::Relaxed)) * u64::from(n)
    })
    .await;
    let cpu = cpu.finish();
    let _ = stop.send(true);
    let got = gather(receivers).await;
    drop(inputs);
    Ok(Measured {
        setup_seconds,
        send_seconds,
        sent: counters.sent.load(Ordering::Relaxed),
        throttled: got.throttled,
        latencies: got.latencies,
        window: got.last.map_or(0.0, |t: Instant| {
            t.saturating_duration_since(start).as_secs_f64()
        }),
        disconnected: got.disconnected,
        reason: got.reason,
        cpu,
    })
}

/// Wait for every sender to be done, at most [`SEND_GRACE`] past the end of
/// the schedule; the seconds sending took.
pub(super) async fn finish_sending(mut senders: JoinSet<()>, start: Instant, seconds: u32) -> f64 {
    let end = start + Duration::from_secs(u64::from(seconds)) + SEND_GRACE;
    let all_sent = async { while senders.join_next().await.is_some() {} };
    if tokio::time::timeout_at(end, all_sent).await.is_err() {
        senders.abort_all();
        eprintln!("warning: the cluster stopped taking messages; sending was cut short");
    }
    start.elapsed().as_secs_f64()
}

/// Wait until every expected delivery arrived (`expected` reads the
/// counters), every client's stream ended, or [`DRAIN`] passed.
pub(super) async fn drain(counters: &Counters, clients: u32, expected: impl Fn(&Counters) -> u64) {
    let drain_end = Instant::now() + DRAIN;
    loop {
        let done = counters.received.load(Ordering::Relaxed) >= expected(counters)
            || counters.ended.load(Ordering::Relaxed) >= u64::from(clients);
        if done || Instant::now() >= drain_end {
            return;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// What the receivers saw, added up.
#[derive(Default)]
pub(super) struct Gathered {
    pub(super) latencies: LatencyHistogram,
    pub(super) throttled: u64,
    pub(super) last: Option<Instant>,
    pub(super) disconnected: u32,
    pub(super) reason: Option<String>,
}

/// Collect every receiver's figures (they were told to stop), waiting at
/// most [`STOP_TIMEOUT`].
pub(super) async fn gather(mut receivers: JoinSet<Received>) -> Gathered {
    let mut all = Gathered::default();
    let gathered = tokio::time::timeout(STOP_TIMEOUT, async {
        while let Some(outcome) = receivers.join_next().await {
            let got = outcome.unwrap_or_else(|e| Received {
                ended: Some(format!("the receiving task failed: {e}")),
                ..Received::default()
            });
            all.latencies.merge(&got.latencies);
            all.throttled += got.throttled;
            all.last = all.last.max(got.last);
            if let Some(why) = got.ended {
                all.disconnected += 1;
                all.reason.get_or_insert(why);
            }
        }
    })
    .await;
    if gathered.is_err() {
        eprintln!("warning: some receivers did not stop in time; their deliveries are not counted");
    }
    all
}

/// A chat line.
fn line(text: &str) -> ChatInput {
    ChatInput { line: text.into() }
}

/// Open `member`'s connection and chat stream.
async fn open(member: &Client) -> Result<(mpsc::Sender<ChatInput>, Streaming<ChatEvent>)> {
    let (input, chat) = member.open_chat(INPUT_QUEUE).await?;
    Ok((input, chat.events))
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
