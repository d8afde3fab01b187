//! Reports this server to the manager every heartbeat interval: identity,
//! address, capacity, usage, load and peak memory. The first beat registers
//! the server; missed beats make the manager route around it.

use crate::metrics::peak_rss;
use crate::node::StorageNode;
use dupla::shutdown::Shutdown;
use dupla::v1::HeartbeatRequest;
use std::sync::Arc;
use std::time::Duration;

/// Send heartbeats until shutdown. Failures are logged once per outage.
pub async fn run(node: Arc<StorageNode>, interval: Duration, mut shutdown: Shutdown) {
    let mut reachable = true;
    loop {
        let request = node.secret.request(HeartbeatRequest {
            node: Some(node.wire_node()),
            capacity: node.store.capacity(),
            used: node.store.used(),
            active_transfers: node.active.get(),
            peak_rss: peak_rss(),
        });
        match node.manager().heartbeat(request).await {
            Ok(_) if !reachable => {
                tracing::info!("manager reachable again");
                reachable = true;
            }
            Ok(_) => {}
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
