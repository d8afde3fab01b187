//! Garbage collection: reclaim chunks no catalog file held here uses.
//!
//! Chunks become garbage when a file is removed or re-backed-up with other
//! content, when the repair worker moved a copy elsewhere while this server
//! was away (it comes back holding copies nobody lists), and when an upload
//! is never finished. A pass lists the chunks not written or used for a
//! grace period (`gc_grace_secs`: how long an unfinished upload may still
//! be resumed), asks the manager which of them belong to a file that lists
//! this server as a holder (`Manager/ChunkRefs`), and deletes the others.
//!
//! Deleting never races a transfer: every path that relies on a chunk
//! already being here marks it used (`ChunkStore::claim`), and the final
//! check-and-delete runs under the store's lock against those marks. A
//! chunk claimed after the manager's answer is therefore kept, and one
//! deleted before a claim is simply written again.

use crate::node::StorageNode;
use dupla::v1::{ChunkRefsRequest, CollectGarbageReport};
use dupla::{Error, Hash, Result};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Chunks asked about per `ChunkRefs` call (32 bytes each: 256 KiB).
const REFS_BATCH: usize = 8192;

/// One pass over the whole store: delete the chunks unused for `grace`
/// that no file held here uses, and quarantined chunks older than `grace`.
pub async fn pass(node: &Arc<StorageNode>, grace: Duration) -> Result<CollectGarbageReport> {
    let cutoff = SystemTime::now()
        .checked_sub(grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = CollectGarbageReport::default();
    for prefix in 0..=u8::MAX {
        let store = node.store.clone();
        let candidates = blocking(move || store.unused_since(prefix, cutoff)).await?;
        for batch in candidates.chunks(REFS_BATCH) {
            report.checked += batch.len() as u64;
            let referenced = referenced(node, batch).await?;
            for (hash, used) in batch.iter().zip(referenced) {
                if used {
                    continue;
                }
                let store = node.store.clone();
                let hash = *hash;
                let freed = blocking(move || store.remove_if_unused_since(&hash, cutoff)).await?;
                if freed > 0 {
                    report.removed += 1;
                    report.removed_bytes += freed;
                }
            }
        }
    }
    let store = node.store.clone();
    report.quarantine_removed = blocking(move || store.purge_quarantine(cutoff)).await?;
    if report.removed > 0 || report.quarantine_removed > 0 {
        tracing::info!(
            checked = report.checked,
            removed = report.removed,
            bytes = report.removed_bytes,
            quarantine = report.quarantine_removed,
            "garbage collected"
        );
    }
    Ok(report)
}

/// Which of `batch` a catalog file held here uses, from the manager.
async fn referenced(node: &StorageNode, batch: &[Hash]) -> Result<Vec<bool>> {
    let request = node.secret.request(ChunkRefsRequest {
        server_id: node.id.clone(),
        chunks: batch.iter().map(Hash::to_bytes).collect(),
    });
    let reply = node.manager().chunk_refs(request).await?.into_inner();
    if reply.catalog_files == 0 {
        return Err(Error::Stale(
            "the manager's catalog is empty: not collecting anything (a manager on a new or lost database would otherwise have every chunk deleted); remove data/chunks by hand if the cluster really is empty".into(),
        ));
    }
    let flags = reply.referenced;
    if flags.len() != batch.len() {
        return Err(Error::Internal(format!(
            "the manager answered {} flags for {} chunks",
            flags.len(),
            batch.len()
        )));
    }
    Ok(flags)
}

/// Collect every `interval` until shutdown (never when `interval` is zero).
/// The first pass waits one interval, so a server that just started (and
/// may be catching up on heartbeats) deletes nothing.
pub async fn run(
    node: Arc<StorageNode>,
    interval: Duration,
    grace: Duration,
    mut shutdown: dupla::shutdown::Shutdown,
) {
    if interval.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait() => return,
        }
        if let Err(e) = pass(&node, grace).await {
            tracing::warn!(error = %e, "garbage collection pass failed; next one in {interval:?}");
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("gc task: {e}")))?
}
