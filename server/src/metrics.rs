//! What a server reports about itself: transfers in flight, bytes moved,
//! scrub progress and peak memory. Plain atomics updated where the work
//! happens; `/metrics` copies them into the node's Prometheus registry at
//! each scrape (see `http.rs`), and heartbeats read them too.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Count of uploads, downloads and pipeline hops in progress.
#[derive(Clone, Debug, Default)]
pub struct ActiveTransfers(Arc<AtomicU32>);

/// Decrements the count when the transfer ends, however it ends.
#[derive(Debug)]
pub struct TransferGuard(Arc<AtomicU32>);

impl ActiveTransfers {
    /// Count one more transfer until the guard drops.
    pub fn enter(&self) -> TransferGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        TransferGuard(self.0.clone())
    }

    /// Transfers in progress now.
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for TransferGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bytes and transfers through this server since it started.
#[derive(Debug, Default)]
pub struct Traffic {
    /// File bytes received from clients (gRPC and HTTP uploads).
    pub bytes_in: AtomicU64,
    /// File bytes sent to clients (gRPC and HTTP downloads).
    pub bytes_out: AtomicU64,
    /// Uploads this server finished as the entry.
    pub uploads: AtomicU64,
    /// Downloads this server started.
    pub downloads: AtomicU64,
    /// Scrub passes finished.
    pub scrub_passes: AtomicU64,
    /// Bytes re-hashed by scrubs.
    pub scrub_bytes: AtomicU64,
    /// Corrupt chunks scrubs found.
    pub scrub_corrupt: AtomicU64,
}

impl Traffic {
    /// Add `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The value of `counter` now.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Peak resident set size of this process in bytes (VmHWM), 0 if unknown.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_transfers() {
        let active = ActiveTransfers::default();
        let a = active.enter();
        let b = active.enter();
        assert_eq!(active.get(), 2);
        drop(a);
        drop(b);
        assert_eq!(active.get(), 0);
    }

    #[test]
    fn peak_rss_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss() > 0);
        }
    }
}
