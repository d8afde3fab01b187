//! Test harness for Dupla: an in-process cluster (a manager and N storage
//! servers on `127.0.0.1:0`, each with its own temporary directory and its
//! own shutdown handle) and raw gRPC helpers to drive it, including with
//! malformed input.

pub mod chat;
pub mod cluster;
pub mod mosquitto;
pub mod netns;
pub mod procs;
pub mod raw;
pub mod social;

pub use cluster::TestCluster;

/// Bound on every async test: generous, so only a hang trips it.
pub const TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Run a test body under [`TEST_TIMEOUT`]: a hang fails the test instead of
/// stalling the suite.
pub async fn bounded<F: std::future::Future>(test: F) -> F::Output {
    log_if_asked();
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out")
}

/// Deterministic test bytes of length `len` (a cheap xorshift stream).
pub fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Durable chunk files under a server's data directory (`chunks/`, not the
/// staged ones in `tmp/`): how far an upload got on that server.
pub fn stored_chunks(data_dir: &std::path::Path) -> usize {
    std::fs::read_dir(data_dir.join("chunks"))
        .map(|shards| {
            shards
                .flatten()
                .filter_map(|shard| std::fs::read_dir(shard.path()).ok())
                .map(|files| files.count())
                .sum()
        })
        .unwrap_or(0)
}

/// With `RUST_LOG` set (`RUST_LOG=debug cargo test ... -- --nocapture`),
/// print the nodes' logs: how a hung or failing test is read.
pub fn log_if_asked() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
