//! `dupla bench chat`: the chat load benchmark. N real accounts chat in one
//! room, over N connections, each on the server its login assigned (as
//! `dupla chat` opens it; the room spans the servers through the broker),
//! and every message is timed from the moment its sender stamped it to the
//! moment each member received it.
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
//!
//! The parts, one job each:
//! - `accounts`: the kept password, registering and logging in the
//!   accounts, and logging them out at the end (step 1);
//! - `driver`: connecting, gathering the room, running the senders and
//!   receivers and draining (steps 2–4);
//! - `schedule`: who sends which message when, and the sending task;
//! - `receiver`: the receiving task, which times and counts deliveries;
//! - `stamp`: the text of a benchmark message and the latency it gives;
//! - `histogram`: the latency counts and their percentiles;
//! - `report`: what a run measured, and its text form;
//! - `cpu`: the CPU time of watched processes (`--watch manager=PID`)
//!   while messages flow;
//! - `social`: `dupla bench social`, the same run over the social
//!   network's path (servers and a broker instead of the manager's room).
//!
//! This file holds the entry points, [`command`] and [`run`]: they check
//! the arguments, chain the phases and turn their figures into a
//! [`ChatBenchReport`].

mod accounts;
pub mod cpu;
mod driver;
mod histogram;
mod receiver;
mod report;
mod schedule;
mod social;
mod stamp;

pub use accounts::PASSWORD_FILE;
pub use driver::DRAIN;
pub use histogram::LatencyHistogram;
pub use report::ChatBenchReport;
pub use schedule::{due, messages_of};
pub use social::SocialBenchReport;
pub use stamp::{latency_us, parse_stamp, stamp, Stamp};

use crate::cli::{parse_prefix, ChatBenchArgs, SocialBenchArgs, MAX_CHAT_CLIENTS};
use crate::output::Output;
use crate::session::Client;
use accounts::{bench_password, log_out, sign_in};
use driver::measure;
use dupla::{Error, Result};
use report::{render, render_social};
use std::path::Path;
use tokio::time::Instant;

/// The manager's default flood control: lines per second per connection
/// (`ChatLimits::lines_per_sec`); the client cannot ask for the actual one.
pub const DEFAULT_FLOOD_LINES_PER_SEC: f64 = 20.0;

/// The manager's default flood-control burst (`ChatLimits::burst`).
pub const DEFAULT_FLOOD_BURST: u32 = 40;

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

/// `dupla bench social`.
pub async fn social_command(
    anonymous: &Client,
    root: &Path,
    args: &SocialBenchArgs,
    out: Output,
) -> anyhow::Result<()> {
    let report = social::run(anonymous, root, args, !out.json).await?;
    out.emit(render_social(&report), &report)
}

/// Run the social fan-out benchmark (`dupla bench social`) against
/// `anonymous`'s cluster.
pub async fn run_social(
    anonymous: &Client,
    root: &Path,
    args: &SocialBenchArgs,
    progress: bool,
) -> Result<SocialBenchReport> {
    social::run(anonymous, root, args, progress).await
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
    // Each member chats on the server its login assigned, as `dupla chat`
    // does: the room's members spread over the servers as their sessions do.
    let members: Vec<Client> = accounts
        .iter()
        .map(|a| {
            anonymous
                .sibling()
                .with_token(a.token.clone())
                .with_assigned_server(a.server.clone())
        })
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
        cpu: m.cpu,
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
    check_prefix(&args.prefix)
}

/// Refuse an account prefix clap would not take.
fn check_prefix(prefix: &str) -> Result<()> {
    parse_prefix(prefix).map_err(Error::InvalidInput)?;
    Ok(())
}

/// A phase starting, on stderr.
fn say(progress: bool, text: String) {
    if progress {
        eprintln!("{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
