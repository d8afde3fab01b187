//! `dupla scrub`: have every live storage server re-hash all its chunks now
//! and wait for the passes. Corrupt chunks found are quarantined by their
//! server and re-replicated from their twin by the manager.

use crate::output::Output;
use crate::Client;
use dupla::size::format_size;
use dupla::v1::storage_client::StorageClient;
use dupla::v1::ScrubRequest;
use dupla::{Hash, Result};
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
}

impl Client {
    /// Run a scrub pass on every live server, concurrently, and collect the reports.
    pub async fn scrub(&self) -> Result<Vec<ScrubResult>> {
        let status = self.status().await?;
        let passes = status
            .servers
            .iter()
            .filter(|s| s.state == "up")
            .filter_map(|s| s.node.as_ref().map(|n| n.addr.clone()))
            .map(|addr| async move {
                let channel = dupla::rpc::connect(&addr).await?;
                let report = StorageClient::new(channel)
                    .scrub(ScrubRequest {})
                    .await?
                    .into_inner();
                Ok::<_, dupla::Error>(ScrubResult {
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
                })
            });
        futures::future::try_join_all(passes).await
    }
}

/// `dupla scrub`.
pub async fn command(client: &Client, out: Output) -> anyhow::Result<()> {
    let results = client.scrub().await?;
    let text = results
        .iter()
        .map(|r| {
            format!(
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
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    out.emit(text, &results)
}
