//! Reports this server to the manager every heartbeat interval: identity,
//! address, capacity, usage, load and peak memory. The first beat registers
//! the server; missed beats make the manager route around it.

use crate::metrics::peak_rss;
use crate::node::StorageNode;
use dupla::shutdown::Shutdown;
use dupla::v1::HeartbeatRequest;
use std::sync::Arc;
use std::time::Duration;

/// Bounds on the period the manager may ask for, so a bad reply can neither
/// flood it nor make this server look dead.
const MIN_INTERVAL_MS: u64 = 50;
const MAX_INTERVAL_MS: u64 = 10_000;

/// A heartbeat unanswered this long is given up (and the next one sent), so
/// a connection that died silently cannot stall the beats until HTTP/2
/// keepalive notices.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);

/// Send heartbeats until shutdown. Failures are logged once per outage.
/// The manager's reply sets the period; `interval` is used until it answers.
pub async fn run(node: Arc<StorageNode>, mut interval: Duration, mut shutdown: Shutdown) {
    let mut reachable = true;
    loop {
        let request = node.secret.request(HeartbeatRequest {
            node: Some(node.wire_node()),
            capacity: node.store.capacity(),
            used: node.store.used(),
            active_transfers: node.active.get(),
            peak_rss: peak_rss(),
            http: node.http_url.get().cloned().unwrap_or_default(),
        });
        let mut manager = node.manager();
        let beat = tokio::time::timeout(HEARTBEAT_TIMEOUT, manager.heartbeat(request));
        let answer = beat.await.unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(
                "the manager did not answer in time",
            ))
        });
        match answer {
            Ok(reply) => {
                if !reachable {
                    tracing::info!("manager reachable again");
                    reachable = true;
                }
                node.retry_unreported().await;
                let asked = reply.into_inner().interval_ms;
                if asked > 0 {
                    interval = Duration::from_millis(asked.clamp(MIN_INTERVAL_MS, MAX_INTERVAL_MS));
                }
            }
            Err(status) if reachable => {
                tracing::warn!(error = %status.message(), "heartbeat failed; will keep trying");
                reachable = false;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait() => return,
        }
    }
}
