//! `dupla status`: every storage server the manager knows, its state and
//! usage, and the catalog totals.

use crate::output::{table, Output};
use crate::session::Client;
use dupla::size::format_size;
use dupla::v1::{
    ClusterStatusReply, ClusterStatusRequest, ServerLifecycle, ServerOrigin, ServerState,
    ServerStatus,
};
use dupla::Result;
use serde::Serialize;

/// `status --json`: the servers and the catalog totals.
#[derive(Debug, Clone, Serialize)]
pub struct StatusJson {
    /// Every known server, in the manager's order.
    pub servers: Vec<ServerJson>,
    /// Files in the catalog.
    pub files: u64,
    /// Sum of file sizes (one copy).
    pub bytes: u64,
    /// Files with fewer than two holders up.
    pub under_replicated: u64,
    /// Their bytes (one copy).
    pub under_replicated_bytes: u64,
    /// Files whose latest version was found corrupt on every holder: to be
    /// backed up again.
    pub lost: u64,
    /// Files the manager's repair worker re-replicated since it started.
    pub repaired_files: u64,
    /// Bytes those repairs copied.
    pub repaired_bytes: u64,
    /// Connected client sessions, all servers together.
    pub sessions: u64,
    /// Sessions one server takes before logins go elsewhere.
    pub max_sessions: u32,
    /// Every up server is at `max_sessions`: the cluster needs more servers.
    pub over_capacity: bool,
    /// Whether this client talks to the cluster over TLS (false: the
    /// cluster runs with `--insecure`, in plain text).
    pub tls: bool,
    /// Servers the manager launched and has retired since (or whose launch
    /// failed): no longer members.
    pub retired: Vec<ServerJson>,
    /// The manager's launcher: "none", "local" or "command".
    pub launcher: String,
}

/// One server in `status --json`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerJson {
    /// host:port.
    pub addr: String,
    /// Stable server id.
    pub id: String,
    /// "up", "suspect" or "down".
    pub state: String,
    /// Whether `state` is "up".
    pub up: bool,
    /// Bytes the server may use.
    pub capacity: u64,
    /// Bytes it uses.
    pub used: u64,
    /// Catalog files with a copy there.
    pub files: u64,
    /// Uploads and downloads it serves now.
    pub active_transfers: u32,
    /// Peak resident memory of the server process, bytes.
    pub peak_rss: u64,
    /// Milliseconds since its last heartbeat.
    pub last_seen_ms_ago: u64,
    /// Connected client sessions assigned to it.
    pub sessions: u32,
    /// Who started it: "operator" or "manager" (its launcher).
    pub launched_by: String,
    /// "active", "launching", "draining", "retired" or "failed".
    pub lifecycle: String,
    /// Seconds since its current run of heartbeats began (0 when not up).
    pub uptime_secs: f64,
    /// Launched by the manager: milliseconds from launch to first heartbeat.
    pub launch_ms: u64,
}

/// The spelling of who started a server: "operator" or "manager".
pub fn origin_name(origin: ServerOrigin) -> &'static str {
    match origin {
        ServerOrigin::Manager => "manager",
        ServerOrigin::Operator | ServerOrigin::Unspecified => "operator",
    }
}

/// The spelling of a server's lifecycle stage.
pub fn lifecycle_name(lifecycle: ServerLifecycle) -> &'static str {
    match lifecycle {
        ServerLifecycle::Active | ServerLifecycle::Unspecified => "active",
        ServerLifecycle::Launching => "launching",
        ServerLifecycle::Draining => "draining",
        ServerLifecycle::Retired => "retired",
        ServerLifecycle::Failed => "failed",
    }
}

/// The spelling of a server's state in `status` (the JSON contract):
/// "up", "suspect" or "down" ("unknown" from a manager that sent none).
pub fn state_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Up => "up",
        ServerState::Suspect => "suspect",
        ServerState::Down => "down",
        ServerState::Unspecified => "unknown",
    }
}

impl From<&ServerStatus> for ServerJson {
    fn from(s: &ServerStatus) -> Self {
        let node = s.node.clone().unwrap_or_default();
        ServerJson {
            addr: node.addr,
            id: node.id,
            state: state_name(s.state()).into(),
            up: s.state() == ServerState::Up,
            capacity: s.capacity,
            used: s.used,
            files: s.files,
            active_transfers: s.active_transfers,
            peak_rss: s.peak_rss,
            last_seen_ms_ago: s.last_seen_ms_ago,
            sessions: s.sessions,
            launched_by: origin_name(s.launched_by()).into(),
            lifecycle: lifecycle_name(s.lifecycle()).into(),
            uptime_secs: s.uptime_ms as f64 / 1000.0,
            launch_ms: s.launch_ms,
        }
    }
}

impl From<&ClusterStatusReply> for StatusJson {
    fn from(r: &ClusterStatusReply) -> Self {
        StatusJson {
            servers: r.servers.iter().map(ServerJson::from).collect(),
            files: r.files,
            bytes: r.bytes,
            under_replicated: r.under_replicated,
            under_replicated_bytes: r.under_replicated_bytes,
            lost: r.lost,
            repaired_files: r.repaired_files,
            repaired_bytes: r.repaired_bytes,
            sessions: r.sessions,
            max_sessions: r.max_sessions,
            over_capacity: r.over_capacity,
            tls: true,
            retired: r.retired.iter().map(ServerJson::from).collect(),
            launcher: r.launcher.clone(),
        }
    }
}

impl Client {
    /// The manager's view of the cluster.
    pub async fn status(&self) -> Result<ClusterStatusReply> {
        let request = self.request(ClusterStatusRequest {});
        let reply = self
            .manager()
            .await?
            .cluster_status(request)
            .await
            .map_err(|s| self.manager_error(s))?;
        Ok(reply.into_inner())
    }
}

/// `dupla status`: a table of servers and a line of totals.
pub async fn command(client: &Client, out: Output) -> anyhow::Result<()> {
    let status = client.status().await?;
    let tls = client.is_tls();
    let json = StatusJson {
        tls,
        ..StatusJson::from(&status)
    };
    let text = match tls {
        true => format!("{}\nTLS: on", render(&status)),
        false => format!(
            "{}\nTLS: OFF (--insecure): tokens, the cluster secret and file contents travel in plain text",
            render(&status)
        ),
    };
    out.emit(text, &json)
}

/// The text form.
fn render(status: &ClusterStatusReply) -> String {
    let rows: Vec<Vec<String>> = status
        .servers
        .iter()
        .map(|s| {
            let j = ServerJson::from(s);
            vec![
                j.addr,
                j.state,
                format_size(j.capacity),
                format_size(j.used),
                j.files.to_string(),
                j.active_transfers.to_string(),
                format_size(j.peak_rss),
                format!("{}/{}", j.sessions, status.max_sessions),
                format!("{:.1}s ago", j.last_seen_ms_ago as f64 / 1000.0),
                match j.lifecycle.as_str() {
                    "active" => j.launched_by.clone(),
                    stage => format!("{} ({stage})", j.launched_by),
                },
                format_uptime(j.uptime_secs),
            ]
        })
        .collect();
    let up = status
        .servers
        .iter()
        .filter(|s| s.state() == ServerState::Up)
        .count();
    let totals = format!(
        "{up} of {} servers up; {} files, {} (one copy); {} under-replicated ({}); repaired since manager start: {} files, {}",
        status.servers.len(),
        status.files,
        format_size(status.bytes),
        status.under_replicated,
        format_size(status.under_replicated_bytes),
        status.repaired_files,
        format_size(status.repaired_bytes)
    );
    // Said only when it happens: the usual line stays as scripts know it.
    let totals = if status.lost > 0 {
        let (files, them) = match status.lost {
            1 => ("1 file".to_string(), "it"),
            n => (format!("{n} files"), "them"),
        };
        format!(
            "{totals}\nLOST: {files} had every copy corrupt; back {them} up again (`dupla backup` sends {them})"
        )
    } else {
        totals
    };
    let totals = if status.over_capacity {
        format!(
            "{totals}\nOVER CAPACITY: every up server has {} sessions or more; start another server",
            status.max_sessions
        )
    } else {
        totals
    };
    let launched = status
        .retired
        .iter()
        .filter(|s| s.lifecycle() == ServerLifecycle::Retired)
        .count();
    let totals = match status.launcher.as_str() {
        "" | "none" => totals,
        launcher => {
            format!("{totals}\nlauncher: {launcher}; {launched} launched servers retired so far")
        }
    };
    if rows.is_empty() {
        return format!("no storage server has registered yet\n{totals}");
    }
    let header = [
        "ADDR",
        "STATE",
        "CAPACITY",
        "USED",
        "FILES",
        "TRANSFERS",
        "PEAK RSS",
        "SESSIONS",
        "LAST SEEN",
        "LAUNCHED BY",
        "UPTIME",
    ];
    format!("{}\n{totals}", table(&header, &rows))
}

/// An uptime as `3h05m`, `4m07s` or `12s`.
fn format_uptime(secs: f64) -> String {
    let secs = secs as u64;
    match secs {
        0 => "-".into(),
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dupla::v1::Node;

    #[test]
    fn lost_files_get_a_line_of_their_own_only_when_there_are_some() {
        let mut status = ClusterStatusReply::default();
        assert!(!render(&status).contains("LOST"));
        status.lost = 1;
        assert!(render(&status).ends_with(
            "\nLOST: 1 file had every copy corrupt; back it up again (`dupla backup` sends it)"
        ));
        status.lost = 3;
        assert!(render(&status).contains("LOST: 3 files had every copy corrupt; back them up"));
    }

    #[test]
    fn json_has_the_contract_fields() {
        let reply = ClusterStatusReply {
            servers: vec![ServerStatus {
                node: Some(Node {
                    id: "s1".into(),
                    addr: "127.0.0.1:50051".into(),
                }),
                state: ServerState::Up.into(),
                capacity: 10,
                used: 3,
                files: 2,
                ..Default::default()
            }],
            files: 2,
            bytes: 5,
            under_replicated: 1,
            ..Default::default()
        };
        let json = serde_json::to_value(StatusJson::from(&reply)).unwrap();
        let server = &json["servers"][0];
        for key in [
            "addr",
            "id",
            "state",
            "up",
            "capacity",
            "used",
            "files",
            "active_transfers",
            "peak_rss",
            "sessions",
        ] {
            assert!(server.get(key).is_some(), "missing {key}");
        }
        assert_eq!(server["up"], true);
        assert_eq!(server["state"], "up");
        assert_eq!(json["files"], 2);
        assert!(render(&reply).contains("1 of 1 servers up"));
        assert_eq!(json["over_capacity"], false);
        let full = ClusterStatusReply {
            over_capacity: true,
            max_sessions: 10,
            ..reply
        };
        assert!(render(&full).contains("OVER CAPACITY"));
    }
}
