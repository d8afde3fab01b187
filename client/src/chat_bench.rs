//! `dupla bench chat`: the chat load benchmark. N real accounts chat in one
//! room of the manager, over N connections, and every message is timed from
//! the moment its sender stamped it to the moment each member received it.
//!
//! The run, bounded in count and in time, stops by itself:
//! 1. **Accounts.** `PREFIX000`, `PREFIX001`... are registered on first use
//!    and reused afterwards. Their password is random, made once and kept in
//!    `ROOT/.dupla/bench-chat-password` (mode 0600), so a later run from the
//!    same root logs the same accounts in. Registration and login cost an
//!    argon2id hash each on the manager: they go a few at a time.
//! 2. **Joining.** Each account opens its own connection and `Rooms/Chat`
//!    stream. Client 0 creates the room `bench-<8 hex>` (`#cR`), the others
//!    enter it (`#gR`). The manager subscribes a client to the room before
//!    answering `you are now in …`, so once every client has that answer,
//!    every message sent from then on reaches all of them.
//! 3. **Sending.** `--rate` is the total for all clients together, as in the
//!    reference "200 clients at 200 msg/s" (40 000 deliveries/s). Exactly
//!    `rate × seconds` messages go out, dealt round robin on one shared
//!    schedule: message k of client i is due at `(i + k·N) / rate` s. Each
//!    reads `bench <client> <seq> <unix_nanos>`; a receiver subtracts the
//!    stamp from its own clock (one process, one monotonic clock).
//! 4. **Draining** for up to [`DRAIN`], until every accepted message reached
//!    every client, then the streams close and every account logs out.
//!
//! Flood control: the manager lets one connection send 20 lines/s, with
//! bursts of 40 (its default `ChatLimits`). Above that, lines are refused
//! with `slow down`; the tool says so before starting, and counts the
//! refusals (`throttled`), which are not expected to be delivered. A member
//! that falls more than the room's capacity behind is disconnected by the
//! manager; it is counted with the manager's reason, and what it missed is
//! counted as lost.
//!
//! Latencies go into a [`LatencyHistogram`] per receiver (log-linear
//! buckets, 1.6 % wide), so memory does not grow with the message count.

use crate::cli::{parse_prefix, ChatBenchArgs, MAX_CHAT_CLIENTS};
use crate::output::Output;
use crate::session::Client;
use crate::session_store::{self, STATE_DIR};
use crate::time::{LocalClock, SystemClock};
use dupla::v1::{chat_event, ChatEvent, ChatInput, RegisterRequest};
use dupla::{Error, Result};
use futures::StreamExt;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// File under `ROOT/.dupla` holding the benchmark accounts' password.
pub const PASSWORD_FILE: &str = "bench-chat-password";

/// The manager's default flood control: lines per second per connection
/// (`ChatLimits::lines_per_sec`); the client cannot ask for the actual one.
pub const DEFAULT_FLOOD_LINES_PER_SEC: f64 = 20.0;

/// The manager's default flood-control burst (`ChatLimits::burst`).
pub const DEFAULT_FLOOD_BURST: u32 = 40;

/// Longest wait, once sending is over, for the last deliveries.
pub const DRAIN: Duration = Duration::from_secs(2);

/// The first word of every benchmark message.
const STAMP_WORD: &str = "bench";

/// Registrations and logins in flight: the manager hashes two passwords at
/// a time, so a few keep it busy without queueing many.
const SETUP_CONCURRENCY: usize = 4;

/// Connections opened at a time.
const CONNECT_CONCURRENCY: usize = 32;

/// Logouts in flight at the end.
const LOGOUT_CONCURRENCY: usize = 16;

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

/// Bits of the sub-bucket index: 2^6 = 64 buckets per power of two.
const SUB_BITS: u32 = 6;
/// Buckets per power of two.
const SUB: u64 = 1 << SUB_BITS;
/// Largest latency told apart, µs (about 76 hours); longer counts as this.
const MAX_LATENCY_US: u64 = (1 << 38) - 1;

/// Latencies in whole microseconds, counted in log-linear buckets: exact
/// below 128 µs, then 64 buckets per power of two, so a value read back is
/// at most 1/64 (1.6 %) above the true one. Memory grows with the largest
/// latency seen (about 7 KiB at 100 ms), never with the number of samples.
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one latency of `us` microseconds.
    pub fn record(&mut self, us: u64) {
        let us = us.min(MAX_LATENCY_US);
        let i = bucket(us);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Add `other`'s counts to these.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// Latencies counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest latency counted, exact, µs; 0 when empty.
    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// Nearest-rank percentile `p` (0–100), as [`crate::bench::percentile`]
    /// takes it: the top of the bucket holding the ⌈p·n/100⌉-th smallest
    /// latency (never above the maximum); 0 when empty.
    pub fn percentile_us(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((p / 100.0 * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_top(i).min(self.max_us);
            }
        }
        self.max_us
    }
}

/// The bucket of `us` (at most [`MAX_LATENCY_US`]).
fn bucket(us: u64) -> usize {
    if us < 2 * SUB {
        return us as usize;
    }
    let shift = 63 - us.leading_zeros() - SUB_BITS;
    (u64::from(shift) * SUB + (us >> shift)) as usize
}

/// The largest value that falls into bucket `i`.
fn bucket_top(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let top = i % SUB + SUB;
    ((top + 1) << shift) - 1
}

/// The text of message `seq` of client `client`, stamped `unix_nanos`.
pub fn stamp(client: u32, seq: u64, unix_nanos: i128) -> String {
    format!("{STAMP_WORD} {client} {seq} {unix_nanos}")
}

/// What a benchmark message says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The sending client's number.
    pub client: u32,
    /// The message's number for that client, from 0.
    pub seq: u64,
    /// When it was sent, ns since the Unix epoch (sender's clock).
    pub unix_nanos: i128,
}

/// Read a benchmark message; `None` for any other text.
pub fn parse_stamp(text: &str) -> Option<Stamp> {
    let mut words = text.split(' ');
    if words.next()? != STAMP_WORD {
        return None;
    }
    let stamp = Stamp {
        client: words.next()?.parse().ok()?,
        seq: words.next()?.parse().ok()?,
        unix_nanos: words.next()?.parse().ok()?,
    };
    words.next().is_none().then_some(stamp)
}

/// Whole microseconds from `sent` to `received` (ns); 0 if the clock went
/// backwards.
pub fn latency_us(sent_nanos: i128, received_nanos: i128) -> u64 {
    let us = received_nanos.saturating_sub(sent_nanos).max(0) / 1000;
    u64::try_from(us).unwrap_or(u64::MAX)
}

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

/// Everything `dupla bench chat` measured (also its `--json` object).
#[derive(Debug, Clone, Serialize)]
pub struct ChatBenchReport {
    /// The room the clients chatted in.
    pub room: String,
    /// Clients in the room, each its own account and connection.
    pub clients: u32,
    /// Messages per second asked for, all clients together.
    pub rate: u32,
    /// The same per client.
    pub rate_per_client: f64,
    /// Length of the sending phase asked for, seconds.
    pub seconds: u32,
    /// Accounts registered by this run.
    pub accounts_registered: u32,
    /// Accounts that existed and were logged in again.
    pub accounts_reused: u32,
    /// Registering, logging in, connecting and joining, seconds.
    pub setup_seconds: f64,
    /// From the first message due to the last one sent, seconds.
    pub send_seconds: f64,
    /// Messages sent.
    pub sent: u64,
    /// Messages the manager refused (flood control): not delivered.
    pub throttled: u64,
    /// Deliveries expected: messages accepted × clients.
    pub expected: u64,
    /// Deliveries received, by all clients together.
    pub received: u64,
    /// `expected - received`.
    pub lost: u64,
    /// Deliveries per second, from the first message due to the last
    /// delivery.
    pub deliveries_per_s: f64,
    /// Median latency from send to receipt, ms.
    pub p50_ms: f64,
    /// 99th-percentile latency, ms.
    pub p99_ms: f64,
    /// Largest latency, ms.
    pub max_ms: f64,
    /// Clients whose session ended before the run did.
    pub disconnected: u32,
    /// What the manager told the first of them, if anything.
    pub disconnect_reason: Option<String>,
}

/// `dupla bench chat`.
pub async fn command(
    anonymous: &Client,
    root: &Path,
    args: &ChatBenchArgs,
    out: Output,
) -> anyhow::Result<()> {
    let report = run(anonymous, root, args, !out.json).await?;
    out.emit(render(&report), &report)
}

/// Run the benchmark against `anonymous`'s manager. The accounts' password
/// is kept under `root`; `progress` prints the phases on stderr.
pub async fn run(
    anonymous: &Client,
    root: &Path,
    args: &ChatBenchArgs,
    progress: bool,
) -> Result<ChatBenchReport> {
    check(args)?;
    let (password, file) = bench_password(root)?;
    let per_client = f64::from(args.rate) / f64::from(args.clients);
    if per_client > DEFAULT_FLOOD_LINES_PER_SEC {
        eprintln!(
            "note: {per_client:.1} messages/s per client is over the manager's default flood \
             control ({DEFAULT_FLOOD_LINES_PER_SEC} lines/s per connection, bursts of \
             {DEFAULT_FLOOD_BURST}); refused lines are counted as throttled, not delivered"
        );
    }
    let setup = Instant::now();
    let logins: Vec<String> = (0..args.clients)
        .map(|i| format!("{}{i:03}", args.prefix))
        .collect();
    say(
        progress,
        format!(
            "chat bench: signing in {} accounts ({}..{})",
            logins.len(),
            logins[0],
            logins[logins.len() - 1]
        ),
    );
    let accounts = sign_in(anonymous, &logins, &password, &file).await?;
    let manager = anonymous.manager_addr().to_string();
    let members: Vec<Client> = accounts
        .iter()
        .map(|a| Client::new(manager.clone(), None).with_token(a.token.clone()))
        .collect();
    let room = format!("bench-{:08x}", rand::random::<u32>());
    let measured = measure(&members, args, &room, setup, progress).await;
    let failed = log_out(&members).await;
    if failed > 0 {
        eprintln!(
            "warning: {failed} benchmark accounts could not log out; their tokens expire by themselves"
        );
    }
    let m = measured?;
    let registered = accounts.iter().filter(|a| a.registered).count() as u32;
    let accepted = m.sent.saturating_sub(m.throttled);
    let expected = accepted * u64::from(args.clients);
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(ChatBenchReport {
        room,
        clients: args.clients,
        rate: args.rate,
        rate_per_client: per_client,
        seconds: args.seconds,
        accounts_registered: registered,
        accounts_reused: args.clients - registered,
        setup_seconds: m.setup_seconds,
        send_seconds: m.send_seconds,
        sent: m.sent,
        throttled: m.throttled,
        expected,
        received: m.latencies.count(),
        lost: expected.saturating_sub(m.latencies.count()),
        deliveries_per_s: if m.window > 0.0 {
            m.latencies.count() as f64 / m.window
        } else {
            0.0
        },
        p50_ms: ms(m.latencies.percentile_us(50.0)),
        p99_ms: ms(m.latencies.percentile_us(99.0)),
        max_ms: ms(m.latencies.max_us()),
        disconnected: m.disconnected,
        disconnect_reason: m.reason,
    })
}

/// Refuse arguments a library caller could pass that clap would not.
fn check(args: &ChatBenchArgs) -> Result<()> {
    if !(1..=MAX_CHAT_CLIENTS).contains(&args.clients) {
        return Err(Error::InvalidInput(format!(
            "--clients must be 1 to {MAX_CHAT_CLIENTS}, not {}",
            args.clients
        )));
    }
    if args.rate == 0 || args.seconds == 0 {
        return Err(Error::InvalidInput(
            "--rate and --seconds must be at least 1".into(),
        ));
    }
    parse_prefix(&args.prefix).map_err(Error::InvalidInput)?;
    Ok(())
}

/// A phase starting, on stderr.
fn say(progress: bool, text: String) {
    if progress {
        eprintln!("{text}");
    }
}

/// The benchmark accounts' password and its file: read, or made and saved.
fn bench_password(root: &Path) -> Result<(String, PathBuf)> {
    let dir = root.join(STATE_DIR);
    let path = dir.join(PASSWORD_FILE);
    let read = |path: &Path| -> Result<Option<String>> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let password = text.trim().to_string();
                if password.len() < 8 {
                    return Err(Error::InvalidInput(format!(
                        "{} does not hold a benchmark password; delete it (new accounts need another --prefix)",
                        path.display()
                    )));
                }
                Ok(Some(password))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io(e)),
        }
    };
    if let Some(password) = read(&path)? {
        return Ok((password, path));
    }
    session_store::create_private_dir(&dir)?;
    let password = hex::encode(rand::random::<[u8; 16]>());
    match session_store::private_file(&path) {
        Ok(mut file) => {
            file.write_all(format!("{password}\n").as_bytes())?;
            file.sync_all()?;
            Ok((password, path))
        }
        // Another run made it meanwhile: use that one.
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => match read(&path)? {
            Some(password) => Ok((password, path)),
            None => Err(Error::Io(e)),
        },
        Err(e) => Err(e),
    }
}

/// One signed-in benchmark account.
struct Account {
    token: String,
    /// Registered by this run (else reused).
    registered: bool,
}

/// Register (when new) and log in every login, a few at a time; stops at
/// the first failure.
async fn sign_in(
    anonymous: &Client,
    logins: &[String],
    password: &str,
    file: &Path,
) -> Result<Vec<Account>> {
    let Some((first, rest)) = logins.split_first() else {
        return Ok(Vec::new());
    };
    // The first account alone: on a fresh manager the first registration
    // gets the admin role, and it must be PREFIX000 whatever the concurrency.
    let mut accounts = Vec::with_capacity(logins.len());
    accounts.push(account(anonymous, first, password, file).await?);
    let mut pending = futures::stream::iter(rest)
        .map(|login| account(anonymous, login, password, file))
        .buffered(SETUP_CONCURRENCY);
    while let Some(outcome) = pending.next().await {
        match outcome {
            Ok(account) => accounts.push(account),
            Err(err) => {
                drop(pending);
                let manager = anonymous.manager_addr().to_string();
                let members: Vec<Client> = accounts
                    .iter()
                    .map(|a| Client::new(manager.clone(), None).with_token(a.token.clone()))
                    .collect();
                log_out(&members).await;
                return Err(err);
            }
        }
    }
    Ok(accounts)
}

/// Register `login` unless it exists, then log it in.
async fn account(anonymous: &Client, login: &str, password: &str, file: &Path) -> Result<Account> {
    let registered = match anonymous
        .register(RegisterRequest {
            first_names: "Chat".into(),
            last_names: "Benchmark".into(),
            login: login.into(),
            password: password.into(),
            age: 30,
            gender: "bot".into(),
        })
        .await
    {
        Ok(user) => {
            if user.admin {
                eprintln!(
                    "note: {login} is the manager's first account, so it is an admin; its password is in {}",
                    file.display()
                );
            }
            true
        }
        Err(Error::AlreadyExists(_)) => false,
        Err(err) => return Err(err),
    };
    let reply = anonymous
        .login(login, password)
        .await
        .map_err(|err| match err {
            Error::Unauthenticated(_) if !registered => Error::Unauthenticated(format!(
                "the account {login} exists, but not with the password in {}: run from the root \
                 that registered it, or use other accounts with --prefix",
                file.display()
            )),
            other => other,
        })?;
    Ok(Account {
        token: reply.token,
        registered,
    })
}

/// Log every member out, a few at a time; returns how many failed.
async fn log_out(members: &[Client]) -> usize {
    futures::stream::iter(members)
        .map(|member| member.logout())
        .buffer_unordered(LOGOUT_CONCURRENCY)
        .filter(|outcome| futures::future::ready(outcome.is_err()))
        .count()
        .await
}

/// Running totals shared by the tasks, read by the drain.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    throttled: AtomicU64,
    ended: AtomicU64,
}

/// What one receiver saw.
#[derive(Default)]
struct Received {
    latencies: LatencyHistogram,
    throttled: u64,
    last: Option<Instant>,
    /// Why its session ended before the run did.
    ended: Option<String>,
}

/// What the sending and receiving phases measured.
struct Measured {
    setup_seconds: f64,
    send_seconds: f64,
    sent: u64,
    throttled: u64,
    latencies: LatencyHistogram,
    /// From the first message due to the last delivery, seconds.
    window: f64,
    disconnected: u32,
    reason: Option<String>,
}

/// Answer of a member that is in `room` (or the reason it is not).
type Ready = oneshot::Receiver<std::result::Result<(), String>>;

/// Connect every member, gather them in `room`, send, drain. Every task is
/// in a [`JoinSet`], so returning (or being cancelled) stops them all.
async fn measure(
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

/// Which messages one sender sends, and when.
struct Schedule {
    index: u32,
    count: u64,
    clients: u32,
    rate: u32,
    start: Instant,
}

/// Send `plan.count` stamped messages, each at its due time (late ones at
/// once).
async fn send(
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

/// Read one member's events until told to stop or the session ends: say
/// when it is in `room`, time every benchmark message, count refusals.
async fn receive(
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
            Ok(Kind::Answer) if ready.is_some() => {
                if event.text.starts_with(&joined) {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Ok(()));
                    }
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

/// The text form.
fn render(r: &ChatBenchReport) -> String {
    let mut lines = vec![
        format!(
            "chat bench: {} clients in room {}, {} messages/s in total ({:.2} per client) for {} s",
            r.clients, r.room, r.rate, r.rate_per_client, r.seconds
        ),
        format!(
            "sent:      {} messages in {:.2} s ({} refused by flood control)",
            r.sent, r.send_seconds, r.throttled
        ),
        format!(
            "delivered: {} of {} expected ({} lost), {:.0} deliveries/s",
            r.received, r.expected, r.lost, r.deliveries_per_s
        ),
        format!(
            "latency:   send to receipt p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            r.p50_ms, r.p99_ms, r.max_ms
        ),
        format!(
            "accounts:  {} registered, {} reused; setup (logins, connections, joining) {:.1} s",
            r.accounts_registered, r.accounts_reused, r.setup_seconds
        ),
    ];
    if r.throttled > 0 {
        lines.push(format!(
            "throttled: the manager allows {DEFAULT_FLOOD_LINES_PER_SEC} lines/s per connection \
             (bursts of {DEFAULT_FLOOD_BURST}) by default; lower --rate or add --clients"
        ));
    }
    if r.disconnected > 0 {
        lines.push(format!(
            "disconnected: {} clients before the end; the first was told: {}",
            r.disconnected,
            r.disconnect_reason.as_deref().unwrap_or("nothing")
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::percentile;

    #[test]
    fn histogram_matches_nearest_rank_exactly_below_128_us() {
        let samples: Vec<u64> = (0..1000).map(|i| (i * 37 + 11) % 128).collect();
        let mut h = LatencyHistogram::new();
        for &s in &samples {
            h.record(s);
        }
        let mut sorted: Vec<f64> = samples.iter().map(|&s| s as f64).collect();
        sorted.sort_by(f64::total_cmp);
        for p in [0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 100.0] {
            assert_eq!(h.percentile_us(p) as f64, percentile(&sorted, p), "p{p}");
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.max_us(), 127);
    }

    #[test]
    fn histogram_is_within_one_sixty_fourth_above() {
        let mut h = LatencyHistogram::new();
        let samples: Vec<u64> = (1..=10_000u64).map(|i| i * i * 7 + 3).collect();
        for &s in &samples {
            h.record(s);
        }
        let sorted: Vec<f64> = samples.iter().map(|&s| s as f64).collect();
        for p in [1.0, 25.0, 50.0, 75.0, 99.0, 99.99] {
            let exact = percentile(&sorted, p);
            let got = h.percentile_us(p) as f64;
            assert!(
                got >= exact && got <= exact * (1.0 + 1.0 / 64.0),
                "p{p}: {got} vs {exact}"
            );
        }
        assert_eq!(h.percentile_us(100.0), *samples.last().unwrap());
        // Every value lands in a bucket whose top is at or above it.
        for v in (0..200_000u64).step_by(7).chain([MAX_LATENCY_US]) {
            let top = bucket_top(bucket(v));
            assert!(
                top >= v && (top - v) as f64 <= v as f64 / 64.0,
                "{v} -> {top}"
            );
        }
        // Beyond the range: counted at the range's end, no panic.
        h.record(u64::MAX);
        assert_eq!(h.max_us(), MAX_LATENCY_US);
        assert!(h.percentile_us(f64::NAN) > 0);
    }

    #[test]
    fn histograms_merge_and_empty_ones_read_zero() {
        let empty = LatencyHistogram::new();
        assert_eq!((empty.percentile_us(50.0), empty.max_us()), (0, 0));
        let (mut a, mut b) = (LatencyHistogram::new(), LatencyHistogram::new());
        for v in [10, 20, 30] {
            a.record(v);
        }
        for v in [5_000, 40] {
            b.record(v);
        }
        a.merge(&b);
        a.merge(&empty);
        assert_eq!(a.count(), 5);
        assert_eq!(a.percentile_us(50.0), 30);
        assert_eq!(a.percentile_us(80.0), 40);
        assert_eq!(a.max_us(), 5_000);
        assert_eq!(a.percentile_us(100.0), 5_000);
    }

    #[test]
    fn stamps_round_trip_and_give_latencies() {
        let text = stamp(7, 42, 1_700_000_000_123_456_789);
        assert_eq!(text, "bench 7 42 1700000000123456789");
        let s = parse_stamp(&text).unwrap();
        assert_eq!((s.client, s.seq), (7, 42));
        assert_eq!(latency_us(s.unix_nanos, s.unix_nanos + 2_500_999), 2_500);
        assert_eq!(latency_us(s.unix_nanos, s.unix_nanos - 1), 0);
        for other in [
            "",
            "hello",
            "bench",
            "bench 1 2",
            "bench 1 2 x",
            "bench -1 2 3",
            "bench 1 2 3 4",
            "bench  1 2 3",
        ] {
            assert_eq!(parse_stamp(other), None, "{other:?}");
        }
    }

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

    #[test]
    fn the_password_is_made_once_and_kept_private() {
        let root = tempfile::tempdir().unwrap();
        let (first, path) = bench_password(root.path()).unwrap();
        assert_eq!(first.len(), 32);
        let (again, _) = bench_password(root.path()).unwrap();
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "short\n").unwrap();
        assert!(bench_password(root.path()).is_err());
    }

    #[test]
    fn bad_arguments_are_refused() {
        let ok = ChatBenchArgs::default();
        assert!(check(&ok).is_ok());
        for bad in [
            ChatBenchArgs {
                clients: 0,
                ..ok.clone()
            },
            ChatBenchArgs {
                clients: MAX_CHAT_CLIENTS + 1,
                ..ok.clone()
            },
            ChatBenchArgs {
                rate: 0,
                ..ok.clone()
            },
            ChatBenchArgs {
                seconds: 0,
                ..ok.clone()
            },
            ChatBenchArgs {
                prefix: "Bad Prefix".into(),
                ..ok.clone()
            },
        ] {
            assert!(check(&bad).is_err(), "{bad:?}");
        }
    }
}
