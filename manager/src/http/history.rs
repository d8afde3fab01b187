//! The cluster over time, for the console's charts (transfers, repair
//! activity, stored bytes): one sample of the cluster status every
//! [`SAMPLE_EVERY`], the last [`SAMPLES_KEPT`] kept in memory. An hour of
//! history costs a few tens of KiB; it starts again when the manager does
//! (Prometheus, scraping `/metrics`, is the long-term record).

use crate::service::ManagerService;
use dupla::shutdown::Shutdown;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use utoipa::ToSchema;

/// Time between samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Samples kept: an hour at one every 10 s.
pub const SAMPLES_KEPT: usize = 360;

/// The cluster at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Sample {
    /// When (unix milliseconds).
    pub unix_ms: i64,
    /// Bytes of the catalog's files (one copy).
    pub bytes: u64,
    /// File versions in the catalog.
    pub files: u64,
    /// Transfers in progress on all servers.
    pub transfers: u64,
    /// Connected client sessions.
    pub sessions: u64,
    /// Files with fewer than two live copies.
    pub under_replicated: u64,
    /// Files repaired since the manager started (a counter: the chart
    /// shows its growth per interval).
    pub repaired_files: u64,
    /// Bytes copied by repairs since the manager started (a counter).
    pub repaired_bytes: u64,
}

/// The kept samples, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Keep `sample`, dropping the oldest beyond [`SAMPLES_KEPT`].
    pub fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().expect("history lock poisoned");
        if samples.len() == SAMPLES_KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Every kept sample, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let samples = self.samples.lock().expect("history lock poisoned");
        samples.iter().cloned().collect()
    }

    /// Take one sample now from `manager`'s status (none when the catalog
    /// cannot be read: the chart shows a gap, the logs say why).
    pub fn sample(&self, manager: &ManagerService) {
        let Ok(status) = manager.status_now() else {
            return;
        };
        self.push(Sample {
            unix_ms: dupla::clock::unix_ms(),
            bytes: status.bytes,
            files: status.files,
            transfers: transfers_in_progress(&status),
            sessions: status.sessions,
            under_replicated: status.under_replicated,
            repaired_files: status.repaired_files,
            repaired_bytes: status.repaired_bytes,
        });
    }

    /// Sample every [`SAMPLE_EVERY`], the first at once, until shutdown.
    pub async fn run(self: std::sync::Arc<Self>, manager: ManagerService, mut shutdown: Shutdown) {
        loop {
            let (history, service) = (self.clone(), manager.clone());
            // The status reads the catalog's counters: off the async workers.
            let _ = tokio::task::spawn_blocking(move || history.sample(&service)).await;
            tokio::select! {
                _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                _ = shutdown.wait() => return,
            }
        }
    }
}

/// Transfers in progress on all the servers `status` lists.
pub fn transfers_in_progress(status: &dupla::v1::ClusterStatusReply) -> u64 {
    status
        .servers
        .iter()
        .map(|s| u64::from(s.active_transfers))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(unix_ms: i64) -> Sample {
        Sample {
            unix_ms,
            bytes: 0,
            files: 0,
            transfers: 0,
            sessions: 0,
            under_replicated: 0,
            repaired_files: 0,
            repaired_bytes: 0,
        }
    }

    #[test]
    fn the_oldest_samples_go_first_and_the_rest_stay_in_order() {
        let history = History::default();
        for t in 0..SAMPLES_KEPT as i64 + 5 {
            history.push(sample(t));
        }
        let kept = history.samples();
        assert_eq!(kept.len(), SAMPLES_KEPT);
        assert_eq!(kept[0].unix_ms, 5);
        assert_eq!(kept.last().unwrap().unix_ms, SAMPLES_KEPT as i64 + 4);
    }
}
