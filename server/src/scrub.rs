//! Scrubbing: re-hash every stored chunk, in the background at a throttled
//! rate and on demand (`Storage/Scrub`, `dupla scrub`). A chunk whose bytes
//! no longer match its hash is quarantined and reported to the manager,
//! which drops this server as a holder of the affected files; the repair
//! worker then copies them back from their twin.

use crate::node::StorageNode;
use crate::pacer::Pacer;
use dupla::shutdown::Shutdown;
use dupla::v1::ScrubReport;
use dupla::{Error, Hash, Result};
use std::sync::Arc;
use std::time::Duration;

/// One scrub pass over the whole store, at most `rate` bytes per second.
/// Passes never overlap: a second caller waits for the running one.
pub async fn pass(node: &Arc<StorageNode>, rate: u64) -> Result<ScrubReport> {
    let _one_at_a_time = node.scrub_lock.lock().await;
    let mut pacer = Pacer::new(rate);
    let mut report = ScrubReport {
        addr: node.addr.clone(),
        ..ScrubReport::default()
    };
    let mut corrupt: Vec<Hash> = Vec::new();
    for prefix in 0..=255u8 {
        let store = node.store.clone();
        let hashes = tokio::task::spawn_blocking(move || store.list_prefix(prefix))
            .await
            .map_err(|e| Error::Internal(format!("scrub listing: {e}")))??;
        for hash in hashes {
            match node.store.get(hash).await {
                Ok(data) => {
                    report.checked += 1;
                    report.checked_bytes += data.len() as u64;
                    pacer.pace(data.len() as u64).await;
                }
                Err(Error::Corrupt(_)) => {
                    report.checked += 1;
                    corrupt.push(hash);
                }
                // Removed meanwhile: nothing to check.
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    for hash in &corrupt {
        node.store.quarantine(hash)?;
    }
    if !corrupt.is_empty() {
        node.report_corrupt(corrupt.clone()).await?;
    }
    tracing::info!(
        checked = report.checked,
        bytes = report.checked_bytes,
        corrupt = corrupt.len(),
        "scrub pass done"
    );
    report.corrupt = corrupt.iter().map(Hash::to_bytes).collect();
    Ok(report)
}

/// Background passes every `interval` until shutdown.
pub async fn run(node: Arc<StorageNode>, interval: Duration, rate: u64, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait() => return,
        }
        if let Err(e) = pass(&node, rate).await {
            tracing::warn!(error = %e, "scrub pass failed; next one at the usual time");
        }
    }
}
