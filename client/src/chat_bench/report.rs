//! What a run measured, [`ChatBenchReport`], which is also the `--json`
//! object, and its text form for the terminal.

use super::cpu::CpuUse;
use super::social::SocialBenchReport;
use super::{DEFAULT_FLOOD_BURST, DEFAULT_FLOOD_LINES_PER_SEC};
use serde::Serialize;

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
    /// CPU of the watched processes (and this one) while messages flowed.
    pub cpu: Vec<CpuUse>,
}

/// The text form.
pub(super) fn render(r: &ChatBenchReport) -> String {
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
    lines.extend(cpu_lines(&r.cpu));
    lines.join("\n")
}

/// The text form of `dupla bench social`.
pub(super) fn render_social(r: &SocialBenchReport) -> String {
    let servers: Vec<String> = r
        .servers
        .iter()
        .map(|(a, n)| format!("{a} ({n})"))
        .collect();
    let mut lines = vec![
        format!(
            "social bench: {} users, {:?} messages, {} messages/s in total for {} s",
            r.clients, r.mode, r.rate, r.seconds
        ),
        format!(
            "servers:   {}; {} of the ring's pairs cross servers",
            servers.join(", "),
            r.cross_server_pairs
        ),
        format!(
            "sent:      {} messages in {:.2} s ({} refused)",
            r.sent, r.send_seconds, r.refused
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
            "accounts:  {} registered; setup (logins, friends, group, streams) {:.1} s",
            r.accounts_registered, r.setup_seconds
        ),
    ];
    if let Some(why) = &r.first_refusal {
        lines.push(format!("refused:   the first refusal said {why}"));
    }
    if r.disconnected > 0 {
        lines.push(format!(
            "disconnected: {} users before the end; the first: {}",
            r.disconnected,
            r.disconnect_reason.as_deref().unwrap_or("nothing")
        ));
    }
    lines.extend(cpu_lines(&r.cpu));
    lines.join("\n")
}

/// One line per watched process: its CPU while messages flowed.
fn cpu_lines(cpu: &[CpuUse]) -> Vec<String> {
    cpu.iter()
        .map(|c| {
            format!(
                "cpu:       {} (pid {}) {:.2} s, {:.2} cores",
                c.name, c.pid, c.cpu_seconds, c.cores
            )
        })
        .collect()
}
