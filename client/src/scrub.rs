//! `dupla scrub`: have every live storage server re-hash all its chunks now
//! and wait for the passes. Corrupt chunks found are quarantined by their
//! server and re-replicated from their twin by the manager.

use crate::output::Output;
use crate::Client;
use dupla::size::format_size;
use dupla::v1::storage_client::StorageClient;
use dupla::v1::ScrubRequest;
use dupla::{Error, Hash, Result};
use serde::Serialize;

/// One server's pass, as `scrub --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct ScrubResult {
    /// The server.
    pub addr: String,
    /// Chunks re-hashed.
    pub checked: u64,
    /// Bytes re-hashed.
    pub checked_bytes: u64,
    /// Hashes (hex) of the chunks found corrupt and sent for repair.
    pub corrupt: Vec<String>,
    /// Why the pass failed on this server, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Client {
    /// Run a scrub pass on every live server, concurrently, and collect the
    /// reports; a server that fails gets its error in its report.
    pub async fn scrub(&self) -> Result<Vec<ScrubResult>> {
        let status = self.status().await?;
        let passes = status
            .servers
            .iter()
            .filter(|s| s.state() == dupla::v1::ServerState::Up)
            .filter_map(|s| s.node.as_ref().map(|n| n.addr.clone()))
            .map(|addr| async move {
                let pass = async {
                    let channel = self.open(crate::session::Role::Server, &addr).await?;
                    let report = StorageClient::new(channel)
                        .scrub(self.request(ScrubRequest {}))
                        .await?
                        .into_inner();
                    Ok::<_, dupla::Error>(report)
                };
                let report = match pass.await {
                    Ok(report) => report,
                    Err(e) => {
                        return ScrubResult {
                            addr,
                            checked: 0,
                            checked_bytes: 0,
                            corrupt: Vec::new(),
                            error: Some(e.to_string()),
                        }
                    }
                };
                ScrubResult {
                    addr,
                    checked: report.checked,
                    checked_bytes: report.checked_bytes,
                    corrupt: report
                        .corrupt
                        .iter()
                        .map(|h| {
                            Hash::from_slice(h, "chunk")
                                .map_or_else(|_| hex::encode(h), |h| h.to_hex())
                        })
                        .collect(),
                    error: None,
                }
            });
        Ok(futures::future::join_all(passes).await)
    }
}

/// `dupla scrub`.
pub async fn command(client: &Client, out: Output) -> anyhow::Result<()> {
    let results = client.scrub().await?;
    let text = results
        .iter()
        .map(|r| match &r.error {
            Some(e) => format!("{}: scrub failed: {e}", r.addr),
            None => format!(
                "{}: checked {} chunks ({}), {} corrupt{}",
                r.addr,
                r.checked,
                format_size(r.checked_bytes),
                r.corrupt.len(),
                if r.corrupt.is_empty() {
                    ""
                } else {
                    " (quarantined; the manager re-replicates them)"
                }
            ),
        })
        .collect::<Vec<_>>()
        .join("\n");
    out.emit_each(text, &results)?;
    // Some servers answering is a result (their lines say the rest); none
    // answering is a failure a script must see.
    if !results.is_empty() && results.iter().all(|r| r.error.is_some()) {
        return Err(Error::Aborted(format!(
            "no server could scrub: all {} refused or failed (above: why); run `dupla scrub` again later",
            results.len()
        ))
        .into());
    }
    Ok(())
}
