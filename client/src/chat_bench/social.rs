//! `dupla bench social`: the social network's fan-out under load. The same
//! accounts, schedule, stamps, histogram and drain as the chat benchmark,
//! but the messages take the social path: each user is on the storage
//! server its login assigned, a message is a `Social/Send` (direct) or
//! `Social/SendGroup` call to the sender's server, which asks the manager
//! where the recipients are and publishes once to the broker; the
//! recipients' servers push it down their `Messages` streams.
//!
//! Setup, kept between runs so a rerun only logs in again:
//! - **friends in a ring**: user i invites user i+1, who accepts, so every
//!   user has a friend to send direct messages to;
//! - **one group of everyone**, `PREFIX-all`, created by user 0, so a group
//!   message reaches every user (the chat room's fan-out, through the
//!   broker).
//!
//! Refusals that only say the work is already done (already friends,
//! already a member…) are fine; any other refusal stops the run.

use super::accounts::{bench_password, log_out, sign_in};
use super::cpu::{CpuUse, CpuWindow};
use super::driver::{drain, finish_sending, gather, Counters, Measured};
use super::histogram::LatencyHistogram;
use super::receiver::Received;
use super::say;
use super::schedule::{messages_of, send, Schedule};
use super::stamp::{latency_us, parse_stamp};
use crate::cli::{FanoutMode, SocialBenchArgs};
use crate::session::{Client, Role};
use crate::time::{LocalClock, SystemClock};
use dupla::v1::social_client::SocialClient;
use dupla::v1::{self as pb, Outcome};
use dupla::{Error, Result};
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Streaming;

/// Graph calls and stream openings in flight during setup.
const SETUP_CONCURRENCY: usize = 16;

/// One benchmark user, connected to its assigned server.
#[derive(Clone)]
struct Member {
    login: String,
    client: Client,
    server: String,
    social: SocialClient<Channel>,
}

/// Everything `dupla bench social` measured (also its `--json` object).
#[derive(Debug, Clone, Serialize)]
pub struct SocialBenchReport {
    pub mode: FanoutMode,
    pub clients: u32,
    /// Users per storage server (by address), as the logins assigned them.
    pub servers: BTreeMap<String, u32>,
    /// Direct mode: how many of the ring's sends cross to another server.
    pub cross_server_pairs: u32,
    /// Messages per second asked for, all users together.
    pub rate: u32,
    pub seconds: u32,
    pub accounts_registered: u32,
    pub setup_seconds: f64,
    pub send_seconds: f64,
    /// Send calls made.
    pub sent: u64,
    /// Send calls refused (an error status or a refusal outcome).
    pub refused: u64,
    /// Deliveries due: the recipients the accepted sends named.
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    /// Deliveries per second, from the first message due to the last
    /// delivery.
    pub deliveries_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Users whose stream ended before the run did.
    pub disconnected: u32,
    pub disconnect_reason: Option<String>,
    /// CPU of the watched processes (and this one) while messages flowed.
    pub cpu: Vec<CpuUse>,
    /// The first refusal, to say why.
    pub first_refusal: Option<String>,
}

/// Run the benchmark against `anonymous`'s manager.
pub async fn run(
    anonymous: &Client,
    root: &std::path::Path,
    args: &SocialBenchArgs,
    progress: bool,
) -> Result<SocialBenchReport> {
    super::check_prefix(&args.prefix)?;
    let (password, file) = bench_password(root)?;
    let setup = Instant::now();
    let logins: Vec<String> = (0..args.clients)
        .map(|i| format!("{}{i:03}", args.prefix))
        .collect();
    say(
        progress,
        format!("social bench: signing in {} accounts", logins.len()),
    );
    let accounts = sign_in(anonymous, &logins, &password, &file).await?;
    let users: Vec<Client> = accounts
        .iter()
        .map(|a| anonymous.clone().with_token(a.token.clone()))
        .collect();
    let outcome = async {
        let members = connect(&users, &logins, &accounts).await?;
        say(progress, "social bench: friends and group".into());
        befriend_ring(&members).await?;
        let group = format!("{}-all", args.prefix);
        if args.mode == FanoutMode::Group {
            join_group(&members, &group).await?;
        }
        let layout = Layout::of(&members);
        Ok::<_, Error>((
            layout,
            measure(&members, args, &group, setup, progress).await?,
        ))
    }
    .await;
    let failed = log_out(&users).await;
    if failed > 0 {
        eprintln!("warning: {failed} benchmark accounts could not log out");
    }
    let (
        layout,
        Outcomes {
            measured: m,
            expected,
            refusal,
        },
    ) = outcome?;
    let received = m.latencies.count();
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(SocialBenchReport {
        mode: args.mode,
        clients: args.clients,
        servers: layout.servers,
        cross_server_pairs: layout.cross_server_pairs,
        rate: args.rate,
        seconds: args.seconds,
        accounts_registered: accounts.iter().filter(|a| a.registered).count() as u32,
        setup_seconds: m.setup_seconds,
        send_seconds: m.send_seconds,
        sent: m.sent,
        refused: m.throttled,
        expected,
        received,
        lost: expected.saturating_sub(received),
        deliveries_per_s: if m.window > 0.0 {
            received as f64 / m.window
        } else {
            0.0
        },
        p50_ms: ms(m.latencies.percentile_us(50.0)),
        p99_ms: ms(m.latencies.percentile_us(99.0)),
        max_ms: ms(m.latencies.max_us()),
        disconnected: m.disconnected,
        disconnect_reason: m.reason,
        cpu: m.cpu,
        first_refusal: refusal,
    })
}

/// Where the users sit: how many on each server, and how many of the
/// ring's direct sends go from one server to another.
struct Layout {
    servers: BTreeMap<String, u32>,
    cross_server_pairs: u32,
}

impl Layout {
    fn of(members: &[Member]) -> Layout {
        let mut servers = BTreeMap::new();
        for m in members {
            *servers.entry(m.server.clone()).or_insert(0) += 1;
        }
        let n = members.len();
        let cross = (0..n)
            .filter(|&i| members[i].server != members[(i + 1) % n].server)
            .count();
        Layout {
            servers,
            cross_server_pairs: cross as u32,
        }
    }
}

/// Open each user's own connection to its assigned server.
async fn connect(
    users: &[Client],
    logins: &[String],
    accounts: &[super::accounts::Account],
) -> Result<Vec<Member>> {
    let opened = futures::stream::iter(0..users.len())
        .map(|i| async move {
            let server = accounts[i].server.clone().ok_or_else(|| {
                Error::Unavailable("no storage server is up to serve the benchmark users".into())
            })?;
            let channel = users[i].open(Role::Server, &server).await?;
            Ok::<_, Error>(Member {
                login: logins[i].clone(),
                client: users[i].clone(),
                server,
                social: SocialClient::new(channel),
            })
        })
        .buffered(SETUP_CONCURRENCY);
    opened.collect::<Vec<_>>().await.into_iter().collect()
}

/// Make user i and user i+1 friends, for every i (kept from earlier runs).
async fn befriend_ring(members: &[Member]) -> Result<()> {
    let n = members.len();
    let next = |i: usize| members[(i + 1) % n].login.clone();
    let invites = futures::stream::iter(0..n)
        .map(|i| async move {
            let m = &members[i];
            let reply = m
                .social
                .clone()
                .invite(m.client.request(pb::InviteRequest { id: next(i) }))
                .await?;
            expect(
                reply.into_inner().outcome,
                &[
                    Outcome::Ok,
                    Outcome::AlreadyFriend,
                    Outcome::AlreadyInvited,
                    Outcome::InvitedYou,
                ],
                "invite",
            )
        })
        .buffer_unordered(SETUP_CONCURRENCY);
    all_ok(invites).await?;
    let accepts = futures::stream::iter(0..n)
        .map(|i| async move {
            let m = &members[(i + 1) % n];
            let request = pb::AcceptInviteRequest {
                id: members[i].login.clone(),
            };
            let reply = m
                .social
                .clone()
                .accept_invite(m.client.request(request))
                .await?;
            // Not invited: they were friends already, or i+1 invited i
            // first and i accepted (the ring of two).
            expect(
                reply.into_inner().outcome,
                &[Outcome::Ok, Outcome::NotInvited],
                "accept-invite",
            )
        })
        .buffer_unordered(SETUP_CONCURRENCY);
    all_ok(accepts).await
}

/// Put every user in `group` (user 0 creates it).
async fn join_group(members: &[Member], group: &str) -> Result<()> {
    let first = &members[0];
    let request = pb::GroupRequest {
        group: group.into(),
    };
    let reply = first
        .social
        .clone()
        .create_group(first.client.request(request))
        .await?;
    expect(
        reply.into_inner().outcome,
        &[Outcome::Ok, Outcome::GroupExists],
        "create-group",
    )?;
    let joins = futures::stream::iter(&members[1..])
        .map(|m| async move {
            let request = pb::GroupRequest {
                group: group.into(),
            };
            let reply = m
                .social
                .clone()
                .join_group(m.client.request(request))
                .await?;
            expect(
                reply.into_inner().outcome,
                &[Outcome::Ok, Outcome::AlreadyMember],
                "join-group",
            )
        })
        .buffer_unordered(SETUP_CONCURRENCY);
    all_ok(joins).await
}

/// A setup reply is one of `fine`, or the run stops.
fn expect(outcome: i32, fine: &[Outcome], what: &str) -> Result<()> {
    match Outcome::try_from(outcome) {
        Ok(o) if fine.contains(&o) => Ok(()),
        other => Err(Error::Internal(format!(
            "benchmark setup: {what} answered {other:?}"
        ))),
    }
}

/// Drive setup calls; the first failure stops them all.
async fn all_ok<S>(calls: S) -> Result<()>
where
    S: futures::Stream<Item = std::result::Result<(), Error>>,
{
    futures::pin_mut!(calls);
    while let Some(outcome) = calls.next().await {
        outcome?;
    }
    Ok(())
}

/// What [`measure`] found.
struct Outcomes {
    measured: Measured,
    /// Deliveries due: the recipients of every accepted send.
    expected: u64,
    /// The first refused send's reason.
    refusal: Option<String>,
}

/// Open every stream, send on the schedule, drain, gather.
async fn measure(
    members: &[Member],
    args: &SocialBenchArgs,
    group: &str,
    setup: Instant,
    progress: bool,
) -> Result<Outcomes> {
    let n = args.clients;
    let clock = SystemClock::new();
    let counters = Arc::new(Counters::default());
    let (stop, stopped) = watch::channel(false);
    say(
        progress,
        format!("social bench: opening {n} message streams"),
    );
    let streams = futures::stream::iter(members)
        .map(open_stream)
        .buffered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut receivers = JoinSet::new();
    for stream in streams {
        receivers.spawn(receive(stream?, clock, counters.clone(), stopped.clone()));
    }
    let setup_seconds = setup.elapsed().as_secs_f64();
    say(
        progress,
        format!(
            "all {n} streams open after {setup_seconds:.1} s; sending {} {:?} messages/s for {} s",
            args.rate, args.mode, args.seconds
        ),
    );

    let total = u64::from(args.rate) * u64::from(args.seconds);
    let refusal = Arc::new(std::sync::Mutex::new(None::<String>));
    let cpu = CpuWindow::start(&args.watch);
    let start = Instant::now();
    let mut senders = JoinSet::new();
    for (i, member) in members.iter().enumerate() {
        let index = i as u32;
        let count = messages_of(index, n, total);
        if count == 0 {
            continue;
        }
        let target = match args.mode {
            FanoutMode::Direct => Target::Friend(members[(i + 1) % members.len()].login.clone()),
            FanoutMode::Group => Target::Group(group.to_string()),
        };
        let sink = sender(member.clone(), target, counters.clone(), refusal.clone());
        let plan = Schedule {
            index,
            count,
            clients: n,
            rate: args.rate,
            start,
        };
        senders.spawn(send(plan, clock, counters.clone(), sink));
    }
    let send_seconds = finish_sending(senders, start, args.seconds).await;
    drain(&counters, n, |c| c.expected.load(Ordering::Relaxed)).await;
    let cpu: Vec<CpuUse> = cpu.finish();
    let _ = stop.send(true);
    let got = gather(receivers).await;
    let refusal = refusal.lock().expect("refusal lock poisoned").clone();
    let measured = Measured {
        setup_seconds,
        send_seconds,
        sent: counters.sent.load(Ordering::Relaxed),
        throttled: counters.throttled.load(Ordering::Relaxed),
        latencies: got.latencies,
        window: got.last.map_or(0.0, |t: Instant| {
            t.saturating_duration_since(start).as_secs_f64()
        }),
        disconnected: got.disconnected,
        reason: got.reason,
        cpu,
    };
    let expected = counters.expected.load(Ordering::Relaxed);
    Ok(Outcomes {
        measured,
        expected,
        refusal,
    })
}

/// Where a user's messages go.
#[derive(Clone)]
enum Target {
    Friend(String),
    Group(String),
}

/// A user's sink for the schedule: one `Send`/`SendGroup` call per message.
/// A refused call is counted (and the first reason kept), and sending goes
/// on: the next message may get through.
fn sender(
    member: Member,
    target: Target,
    counters: Arc<Counters>,
    refusal: Arc<std::sync::Mutex<Option<String>>>,
) -> impl FnMut(String) -> futures::future::BoxFuture<'static, bool> {
    move |text| {
        let (member, target, counters, refusal) = (
            member.clone(),
            target.clone(),
            counters.clone(),
            refusal.clone(),
        );
        Box::pin(async move {
            let mut social = member.social.clone();
            let reply = match target {
                Target::Friend(to) => {
                    let request = member.client.request(pb::SendRequest { to, text });
                    social.send(request).await
                }
                Target::Group(group) => {
                    let request = member.client.request(pb::SendGroupRequest { group, text });
                    social.send_group(request).await
                }
            };
            let why = match reply.map(|r| r.into_inner()) {
                Ok(r) if r.outcome == Outcome::Ok as i32 => {
                    counters
                        .expected
                        .fetch_add(r.recipients.len() as u64, Ordering::Relaxed);
                    return true;
                }
                Ok(r) => format!("{:?}", Outcome::try_from(r.outcome)),
                Err(status) => format!("{:?}: {}", status.code(), status.message()),
            };
            counters.throttled.fetch_add(1, Ordering::Relaxed);
            refusal
                .lock()
                .expect("refusal lock poisoned")
                .get_or_insert(why);
            true
        })
    }
}

/// Open `member`'s message stream and wait for READY.
async fn open_stream(member: &Member) -> Result<Streaming<pb::Message>> {
    let mut social = member.social.clone();
    let mut stream = social
        .messages(member.client.request(pb::MessagesRequest {}))
        .await?
        .into_inner();
    match stream.message().await? {
        Some(m) if m.kind == pb::message::Kind::Ready as i32 => Ok(stream),
        _ => Err(Error::Unavailable(format!(
            "{}'s message stream on {} closed as it opened",
            member.login, member.server
        ))),
    }
}

/// Read one user's messages until told to stop or the stream ends, timing
/// every benchmark message.
async fn receive(
    mut stream: Streaming<pb::Message>,
    clock: SystemClock,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> Received {
    let mut got = Received {
        latencies: LatencyHistogram::new(),
        ..Received::default()
    };
    let ended = loop {
        let message = tokio::select! {
            biased;
            _ = stop.changed() => break None,
            message = stream.message() => message,
        };
        match message {
            Ok(Some(message)) => {
                if let Some(stamp) = parse_stamp(&message.text) {
                    got.latencies
                        .record(latency_us(stamp.unix_nanos, clock.unix_nanos()));
                    got.last = Some(Instant::now());
                    counters.received.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(None) => break Some("the server ended the stream".to_string()),
            Err(status) => break Some(format!("the stream failed: {}", status.message())),
        }
    };
    if ended.is_some() {
        counters.ended.fetch_add(1, Ordering::Relaxed);
    }
    got.ended = ended;
    got
}
