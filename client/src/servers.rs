//! `dupla servers`: the storage servers, and the admin's hand on the
//! manager's launcher: `launch` a server now, `drain ID` (its files get two
//! copies elsewhere, it takes no new sessions) and `retire ID` (drain, stop,
//! forget). Only servers the manager launched can be drained or retired.

use crate::cli::ServersAction;
use crate::output::Output;
use crate::session::Client;
use crate::status::ServerJson;
use dupla::v1::{LaunchServerRequest, ServerActionReply, ServerActionRequest};
use serde::Serialize;

/// `servers launch|drain|retire --json`: the server after the action.
#[derive(Debug, Clone, Serialize)]
pub struct ActionJson {
    /// "launch", "drain" or "retire".
    pub action: String,
    /// The server, as in `status --json` (absent if the manager sent none).
    pub server: Option<ServerJson>,
    /// File versions copied elsewhere while draining.
    pub moved_files: u64,
}

/// Run `dupla servers [ACTION]`.
pub async fn command(
    client: &Client,
    action: Option<&ServersAction>,
    out: Output,
) -> anyhow::Result<()> {
    let Some(action) = action else {
        return crate::status::command(client, out).await;
    };
    let mut manager = client.manager().await?;
    let (name, reply) = match action {
        ServersAction::Launch => (
            "launch",
            manager
                .launch_server(client.request(LaunchServerRequest {}))
                .await,
        ),
        ServersAction::Drain { id } => (
            "drain",
            manager
                .drain_server(client.request(ServerActionRequest { id: id.clone() }))
                .await,
        ),
        ServersAction::Retire { id } => (
            "retire",
            manager
                .retire_server(client.request(ServerActionRequest { id: id.clone() }))
                .await,
        ),
    };
    let reply: ServerActionReply = reply.map_err(|s| client.manager_error(s))?.into_inner();
    let json = ActionJson {
        action: name.into(),
        server: reply.server.as_ref().map(ServerJson::from),
        moved_files: reply.moved_files,
    };
    let text = match &json.server {
        Some(s) => format!(
            "{name}: server {} {} ({}, {}), {} files moved",
            s.id,
            if s.addr.is_empty() { "-" } else { &s.addr },
            s.state,
            s.lifecycle,
            json.moved_files
        ),
        None => format!("{name}: done, {} files moved", json.moved_files),
    };
    out.emit(text, &json)
}
