//! Scrubbing: re-hash every stored chunk, in the background at a throttled
//! rate and on demand (`Storage/Scrub`, `dupla scrub`). A chunk whose bytes
//! no longer match its hash is quarantined and reported to the manager,
//! which drops this server as a holder of the affected files; the repair
//! worker then copies them back from their twin.

use crate::node::StorageNode;
use crate::pacer::Pacer;
use dupla::rpc::UserCredentials;
use dupla::shutdown::Shutdown;
use dupla::v1::ScrubReport;
use dupla::{Error, Hash, Result};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often one user may start an on-demand pass on one server: a pass
/// re-reads the whole store at full disk speed, for everyone.
pub const USER_SCRUB_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// Users tracked at once, so invented logins cannot grow the table.
pub const MAX_TRACKED_USERS: usize = 10_000;

/// When each user last started an on-demand pass.
#[derive(Debug, Default)]
pub struct UserScrubs {
    last: HashMap<String, Instant>,
}

impl UserScrubs {
    /// Admit a pass of `login` at `now`, or `Err(wait)`.
    pub fn admit(&mut self, login: &str, now: Instant) -> std::result::Result<(), Duration> {
        if let Some(last) = self.last.get(login) {
            let since = now.saturating_duration_since(*last);
            if since < USER_SCRUB_INTERVAL {
                return Err(USER_SCRUB_INTERVAL - since);
            }
        }
        if self.last.len() >= MAX_TRACKED_USERS {
            self.last
                .retain(|_, last| now.saturating_duration_since(*last) < USER_SCRUB_INTERVAL);
            if self.last.len() >= MAX_TRACKED_USERS {
                if let Some(oldest) = self
                    .last
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(k, _)| k.clone())
                {
                    self.last.remove(&oldest);
                }
            }
        }
        self.last.insert(login.to_string(), now);
        Ok(())
    }
}

/// Refuse a user's on-demand pass on `node` if they started one too recently.
pub fn admit_user(node: &StorageNode, login: &str) -> Result<()> {
    node.user_scrubs
        .lock()
        .expect("user scrubs lock poisoned")
        .admit(login, Instant::now())
        .map_err(|wait| {
            Error::Exhausted(format!(
                "{login} started a scrub here less than {} min ago; try again in {} s",
                USER_SCRUB_INTERVAL.as_secs() / 60,
                wait.as_secs().max(1)
            ))
        })
}

/// A pass's report as the user with `credentials` sees it: the counts, and
/// only the corrupt chunks of the user's own files (others' chunks are none
/// of their business; the manager repairs every file either way). The
/// user's chunks are asked of the manager, with the user's own token, only
/// when something was corrupt.
pub async fn for_user(
    node: &StorageNode,
    credentials: &UserCredentials,
    mut report: ScrubReport,
) -> Result<ScrubReport> {
    if report.corrupt.is_empty() {
        return Ok(report);
    }
    let channel = node.manager_channel.clone();
    let mut manager = dupla::v1::manager_client::ManagerClient::new(channel)
        .max_decoding_message_size(dupla::rpc::MAX_CATALOG_MESSAGE_BYTES);
    let mut list = tonic::Request::new(dupla::v1::ListRequest::default());
    credentials.attach(&mut list);
    let files = manager.list(list).await?.into_inner().files;
    let mut own: HashSet<bytes::Bytes> = HashSet::new();
    for file in files {
        let mut lookup = tonic::Request::new(dupla::v1::LookupRequest {
            name: file.name,
            ..Default::default()
        });
        credentials.attach(&mut lookup);
        own.extend(manager.lookup(lookup).await?.into_inner().chunks);
    }
    report.corrupt.retain(|hash| own.contains(hash));
    Ok(report)
}

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
    use crate::metrics::Traffic;
    Traffic::add(&node.traffic.scrub_passes, 1);
    Traffic::add(&node.traffic.scrub_bytes, report.checked_bytes);
    Traffic::add(&node.traffic.scrub_corrupt, corrupt.len() as u64);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_on_demand_pass_per_user_per_interval() {
        let mut scrubs = UserScrubs::default();
        let t0 = Instant::now();
        scrubs.admit("alice", t0).unwrap();
        let wait = scrubs
            .admit("alice", t0 + Duration::from_secs(60))
            .unwrap_err();
        assert_eq!(wait, USER_SCRUB_INTERVAL - Duration::from_secs(60));
        scrubs.admit("bob", t0).unwrap();
        scrubs.admit("alice", t0 + USER_SCRUB_INTERVAL).unwrap();
        for i in 0..MAX_TRACKED_USERS + 10 {
            let _ = scrubs.admit(&format!("u{i}"), t0);
        }
        assert!(scrubs.last.len() <= MAX_TRACKED_USERS);
    }
}
