//! `dupla bench`: upload N generated files of a given size with C transfers
//! at a time, download them all back (checked, then discarded), remove them
//! from the catalog, and report throughput, per-file latency percentiles and
//! each server's peak memory.
//!
//! The data comes from a seeded xorshift generator, one chunk at a time:
//! never stored on disk, never whole in memory, and different for every
//! file, so content-addressed storage cannot deduplicate it. Transfers use
//! the same [`upload`] and [`download`] paths as backup and restore. Names
//! are `bench/<run-id>/file-<i>`; uploads are spread over the `up` servers
//! by rotating the entry list per file.

use crate::cli::BenchArgs;
use crate::download::{download, Discard};
use crate::output::{mb_per_s, Output};
use crate::progress::Progress;
use crate::session::Client;
use crate::upload::{upload, ChunkSource};
use bytes::{BufMut, Bytes, BytesMut};
use dupla::size::format_size;
use dupla::{Error, Result};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Prefix of every benchmark file's catalog name.
pub const BENCH_PREFIX: &str = "bench";

/// Longest wait for every server to heartbeat after the upload phase, so the
/// peak memory reported includes all of it: a few heartbeat intervals.
const FRESH_STATUS_WAIT: Duration = Duration::from_secs(5);

/// How often to re-read the status while waiting for fresh heartbeats.
const FRESH_STATUS_POLL: Duration = Duration::from_millis(200);

/// A deterministic stream of pseudo-random bytes (xorshift64*, seeded
/// through splitmix64): fast enough to outrun the network, reproducible from
/// its seed.
#[derive(Debug, Clone)]
pub struct PrngSource {
    state: u64,
}

impl PrngSource {
    /// A generator for `seed`; every seed gives a different stream.
    pub fn new(seed: u64) -> Self {
        // splitmix64 spreads nearby seeds apart and never yields the
        // all-zero state xorshift cannot leave.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        PrngSource { state: z | 1 }
    }

    /// The next 64 random bits.
    fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl ChunkSource for PrngSource {
    fn read_chunk(&mut self, len: usize) -> std::io::Result<Bytes> {
        let mut buf = BytesMut::with_capacity(len);
        while buf.len() + 8 <= len {
            buf.put_u64_le(self.next_u64());
        }
        let tail = len - buf.len();
        buf.put_slice(&self.next_u64().to_le_bytes()[..tail]);
        Ok(buf.freeze())
    }
}

/// Nearest-rank percentile `p` (0–100) of ascending `sorted`; 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Figures for one direction of the benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Files transferred.
    pub files: u32,
    /// Bytes transferred (file data, one copy).
    pub bytes: u64,
    /// Wall time of the whole phase.
    pub seconds: f64,
    /// bytes / wall time, in 10^6 bytes per second.
    pub mb_per_s: f64,
    /// Files per second of wall time.
    pub files_per_s: f64,
    /// Median per-file latency, milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile per-file latency, milliseconds.
    pub p99_ms: f64,
    /// Slowest file, milliseconds.
    pub max_ms: f64,
}

impl PhaseReport {
    /// Summarise per-file latencies (seconds) over a phase of `wall` seconds.
    pub fn new(size: u64, mut latencies: Vec<f64>, wall: f64) -> Self {
        latencies.sort_by(f64::total_cmp);
        let files = latencies.len() as u32;
        let bytes = size * u64::from(files);
        let ms = |s: f64| s * 1000.0;
        PhaseReport {
            files,
            bytes,
            seconds: wall,
            mb_per_s: mb_per_s(bytes, wall),
            files_per_s: if wall > 0.0 {
                f64::from(files) / wall
            } else {
                0.0
            },
            p50_ms: ms(percentile(&latencies, 50.0)),
            p99_ms: ms(percentile(&latencies, 99.0)),
            max_ms: ms(latencies.last().copied().unwrap_or(0.0)),
        }
    }
}

/// One server's peak memory, as the manager last heard it.
#[derive(Debug, Clone, Serialize)]
pub struct ServerMemory {
    /// host:port.
    pub addr: String,
    /// Stable server id.
    pub id: String,
    /// Peak resident memory (VmHWM) after the upload phase, bytes.
    pub peak_rss: u64,
}

/// Everything `dupla bench` measured (also its `--json` object).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Random id naming this run's files.
    pub run_id: String,
    /// Bytes per file.
    pub size: u64,
    /// Files per phase.
    pub count: u32,
    /// Transfers at a time.
    pub concurrency: u32,
    /// The upload phase.
    pub upload: PhaseReport,
    /// Uploads whose entry server was one of the file's two holders (two
    /// hops: entry/holder → other holder); the others took three (entry →
    /// primary → replica). Placement decides, by the file's name.
    pub uploads_entering_at_a_holder: u32,
    /// The download phase, unless skipped.
    pub download: Option<PhaseReport>,
    /// Every server's peak memory after the upload phase.
    pub servers: Vec<ServerMemory>,
    /// Files removed from the catalog afterwards.
    pub removed: u32,
}

impl Client {
    /// Run the benchmark described by `args`.
    pub async fn bench(&self, args: &BenchArgs, progress: bool) -> Result<BenchReport> {
        let run_id = format!("{:08x}", rand::random::<u32>());
        let seed = rand::random::<u64>();
        let names: Vec<String> = (0..args.count)
            .map(|i| format!("{BENCH_PREFIX}/{run_id}/file-{i}"))
            .collect();
        let entries = self.entry_servers().await?;
        let result = self
            .bench_phases(args, &names, &entries, seed, progress)
            .await;
        let removed = self.remove_all(&names, args.concurrency).await;
        let (upload, uploads_entering_at_a_holder, download, servers) = result?;
        Ok(BenchReport {
            run_id,
            size: args.size,
            count: args.count,
            concurrency: args.concurrency,
            upload,
            uploads_entering_at_a_holder,
            download,
            servers,
            removed,
        })
    }

    /// Upload, read the servers' memory, then download.
    async fn bench_phases(
        &self,
        args: &BenchArgs,
        names: &[String],
        entries: &[String],
        seed: u64,
        progress: bool,
    ) -> Result<(PhaseReport, u32, Option<PhaseReport>, Vec<ServerMemory>)> {
        let total = args.size * u64::from(args.count);
        let bar = Progress::new(progress, total, "upload");
        let at_holder = AtomicU32::new(0);
        let up = phase(names, args.concurrency, |i, name| {
            let source = PrngSource::new(seed ^ (i as u64).wrapping_mul(0xA076_1D64_78BD_642F));
            let (bar, entries, at_holder) = (&bar, rotated(entries, i), &at_holder);
            async move {
                let done = upload(self, &entries, name, args.size, source, None, bar).await?;
                let holders = done.receipt.entry.as_ref().map(|e| e.holders.as_slice());
                if holders
                    .unwrap_or_default()
                    .iter()
                    .any(|h| h.addr == done.entry)
                {
                    at_holder.fetch_add(1, Ordering::Relaxed);
                }
                Ok(done.seconds)
            }
        })
        .await;
        bar.finish();
        let (latencies, wall) = up?;
        let upload_report = PhaseReport::new(args.size, latencies, wall);
        let servers = self.server_memory(Instant::now()).await?;
        let at_holder = at_holder.into_inner();
        if !args.download {
            return Ok((upload_report, at_holder, None, servers));
        }
        let bar = Progress::new(progress, total, "download");
        let down = phase(names, args.concurrency, |i, name| {
            let (bar, entries) = (&bar, rotated(entries, i));
            async move {
                let done = download(self, &entries, name, Discard, None, bar).await?;
                Ok(done.seconds)
            }
        })
        .await;
        bar.finish();
        let (latencies, wall) = down?;
        let download_report = PhaseReport::new(args.size, latencies, wall);
        Ok((upload_report, at_holder, Some(download_report), servers))
    }

    /// Every server's peak memory as of `since`: waits (a little) until each
    /// up server has heartbeated after `since`, so the figure covers the
    /// whole phase that just ended.
    async fn server_memory(&self, since: Instant) -> Result<Vec<ServerMemory>> {
        let deadline = since + FRESH_STATUS_WAIT;
        let status = loop {
            let status = self.status().await?;
            let waited_ms = since.elapsed().as_millis() as u64;
            let fresh = status
                .servers
                .iter()
                .filter(|s| s.state == "up")
                .all(|s| s.last_seen_ms_ago < waited_ms);
            if fresh || Instant::now() >= deadline {
                break status;
            }
            tokio::time::sleep(FRESH_STATUS_POLL).await;
        };
        Ok(status
            .servers
            .iter()
            .map(|s| {
                let node = s.node.clone().unwrap_or_default();
                ServerMemory {
                    addr: node.addr,
                    id: node.id,
                    peak_rss: s.peak_rss,
                }
            })
            .collect())
    }

    /// Remove the run's files, whatever happened before; returns how many
    /// went. Names that never made it into the catalog are skipped quietly.
    async fn remove_all(&self, names: &[String], concurrency: u32) -> u32 {
        let outcomes: Vec<Result<_>> = futures::stream::iter(names)
            .map(|name| self.remove(name))
            .buffer_unordered(concurrency.max(1) as usize)
            .collect()
            .await;
        let mut removed = 0;
        for outcome in outcomes {
            match outcome {
                Ok(_) => removed += 1,
                Err(Error::NotFound(_)) => {}
                Err(err) => eprintln!("warning: could not remove a benchmark file: {err}"),
            }
        }
        removed
    }
}

/// Run `transfer(i, name)` for every name, `concurrency` at a time. Returns
/// the per-file results (seconds each) and the wall time; stops at the first
/// failure.
async fn phase<'a, F, Fut>(
    names: &'a [String],
    concurrency: u32,
    transfer: F,
) -> Result<(Vec<f64>, f64)>
where
    F: Fn(usize, &'a str) -> Fut,
    Fut: Future<Output = Result<f64>>,
{
    let started = Instant::now();
    let latencies = futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| transfer(i, name))
        .buffer_unordered(concurrency.max(1) as usize)
        .try_collect::<Vec<f64>>()
        .await?;
    Ok((latencies, started.elapsed().as_secs_f64()))
}

/// `entries` rotated left by `i`, so file i enters through a different
/// server than file i-1 when several are up.
fn rotated(entries: &[String], i: usize) -> Vec<String> {
    let mut list = entries.to_vec();
    if !list.is_empty() {
        let by = i % list.len();
        list.rotate_left(by);
    }
    list
}

/// `dupla bench`.
pub async fn command(client: &Client, args: &BenchArgs, out: Output) -> anyhow::Result<()> {
    let report = client.bench(args, !out.json).await?;
    out.emit(render(&report), &report)
}

/// The text form.
fn render(r: &BenchReport) -> String {
    let phase = |label: &str, p: &PhaseReport| {
        format!(
            "{label:<9} {} in {:.2} s = {:.1} MB/s, {:.2} files/s; per file p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            format_size(p.bytes),
            p.seconds,
            p.mb_per_s,
            p.files_per_s,
            p.p50_ms,
            p.p99_ms,
            p.max_ms
        )
    };
    let mut lines = vec![
        format!(
            "bench run {}: {} files of {}, {} at a time",
            r.run_id,
            r.count,
            format_size(r.size),
            r.concurrency
        ),
        phase("upload:", &r.upload),
        format!(
            "          {} of {} uploads entered at a holder (2 hops), {} went through a non-holder entry (3 hops)",
            r.uploads_entering_at_a_holder,
            r.count,
            r.count - r.uploads_entering_at_a_holder
        ),
    ];
    match &r.download {
        Some(d) => lines.push(phase("download:", d)),
        None => lines.push("download: skipped".into()),
    }
    let memory: Vec<String> = r
        .servers
        .iter()
        .map(|s| format!("{} {}", s.addr, format_size(s.peak_rss)))
        .collect();
    lines.push(format!("peak RSS after upload: {}", memory.join(", ")));
    lines.push(format!("removed {} files from the catalog", r.removed));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prng_is_deterministic_per_seed_and_fills_exact_lengths() {
        let mut a = PrngSource::new(7);
        let mut b = PrngSource::new(7);
        let mut c = PrngSource::new(8);
        let (x, y, z) = (
            a.read_chunk(1 << 20).unwrap(),
            b.read_chunk(1 << 20).unwrap(),
            c.read_chunk(1 << 20).unwrap(),
        );
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_eq!(x.len(), 1 << 20);
        assert_eq!(a.read_chunk(13).unwrap(), b.read_chunk(13).unwrap());
        assert_eq!(a.read_chunk(0).unwrap().len(), 0);
        // Not degenerate: most bytes differ from their neighbour.
        let same = x.windows(2).filter(|w| w[0] == w[1]).count();
        assert!(same < x.len() / 100, "{same}");
        assert_ne!(PrngSource::new(0).next_u64(), 0);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[1.0, 2.0], 50.0), 1.0);
    }

    #[test]
    fn phase_report_summarises() {
        let p = PhaseReport::new(1_000_000, vec![2.0, 1.0, 3.0], 2.0);
        assert_eq!(p.files, 3);
        assert_eq!(p.bytes, 3_000_000);
        assert_eq!(p.mb_per_s, 1.5);
        assert_eq!(p.files_per_s, 1.5);
        assert_eq!(p.p50_ms, 2000.0);
        assert_eq!(p.max_ms, 3000.0);
    }

    #[test]
    fn rotation_spreads_entries() {
        let e: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(rotated(&e, 1), ["b", "c", "a"]);
        assert_eq!(rotated(&e, 3), e);
        assert!(rotated(&[], 5).is_empty());
    }
}
