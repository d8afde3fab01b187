//! `catalog-bench`: fill a manager's catalog with many files over three
//! servers through the same `Catalog::commit` path as `Manager/Commit`,
//! then measure what issue 10 item 14 asks: `ClusterStatus`, `Place` and
//! `Lookup` latencies while 16 uploads run, repair planning for a lost
//! server, memory and the catalog's size on disk.
//!
//! `cargo run --release -p dupla-testkit --bin catalog-bench -- FILES`
//! (scripts/bench-catalog.sh runs it). Numbers go to stdout, one
//! `key: value` a line.

use dupla::kv::{Kv, SledKv};
use dupla::rpc::Secret;
use dupla::v1::manager_client::ManagerClient;
use dupla::v1::{AbortRequest, ClusterStatusRequest, LookupRequest, PlaceRequest};
use dupla::Hash;
use dupla_manager::files::catalog::{Catalog, FileRecord};
use dupla_testkit::cluster::{TestCluster, TEST_SECRET, TEST_USER};
use dupla_testkit::{raw, test_bytes};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Threads committing at once while loading (their flushes are grouped).
const LOAD_THREADS: u64 = 16;
/// Uploads running while Place and Lookup are timed.
const UPLOADS: usize = 16;
/// Calls timed per measured RPC.
const SAMPLES: usize = 1000;
/// One file in this many belongs to the test user (Lookup reads those).
const OWN_EVERY: u64 = 100;

fn name_of(i: u64) -> String {
    format!("load/{:03}/{i}.bin", i % 1000)
}

fn record(i: u64, servers: &[String]) -> FileRecord {
    let owner = if i.is_multiple_of(OWN_EVERY) {
        TEST_USER.to_string()
    } else {
        format!("user{}", i % 97)
    };
    let (a, b) = ((i % 3) as usize, ((i + 1) % 3) as usize);
    FileRecord {
        owner,
        name: name_of(i),
        size: 4096 + i % 1000,
        blake3: Hash::of(&i.to_be_bytes()),
        chunks: vec![Hash::of(&i.to_le_bytes())],
        chunk_size: 1 << 20,
        chunk_lengths: Vec::new(),
        holders: vec![servers[a].clone(), servers[b].clone()],
        committed_unix_ms: 1,
        version: 1,
        lost_unix_ms: 0,
    }
}

fn load(db: &std::path::Path, files: u64, servers: &[String]) -> dupla::Result<()> {
    let kv: Arc<dyn Kv> = Arc::new(SledKv::open(db)?);
    let catalog = Catalog::open(kv)?;
    let done = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..LOAD_THREADS {
            let (catalog, done) = (&catalog, &done);
            s.spawn(move || {
                let mut i = t;
                while i < files {
                    catalog
                        .commit(&record(i, servers), None, false)
                        .expect("load commit");
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_multiple_of(100_000) {
                        eprintln!("loaded {n} in {:.0?}", started.elapsed());
                    }
                    i += LOAD_THREADS;
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    println!("load_files: {files}");
    println!("load_seconds: {secs:.1}");
    println!("load_commits_per_sec: {:.0}", files as f64 / secs);
    Ok(())
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

fn report(what: &str, samples: &mut [Duration]) {
    println!(
        "{what}_ms: p50 {:.2} p99 {:.2} max {:.2}",
        percentile(samples, 0.5),
        percentile(samples, 0.99),
        percentile(samples, 1.0)
    );
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

/// What a probe needs to call the manager as the test user: it runs on a
/// thread and runtime of its own (as a separate client process would), so
/// its timings do not include waiting behind the uploads' tasks.
#[derive(Clone)]
struct Probe {
    manager: String,
    transport: dupla::rpc::Transport,
    token: String,
    entry: String,
    files: u64,
}

impl Probe {
    fn new(cluster: &TestCluster, files: u64) -> Self {
        Probe {
            manager: cluster.manager_addr(),
            transport: cluster.transport.clone(),
            token: cluster.token.clone(),
            entry: cluster.servers[0].id.clone(),
            files,
        }
    }

    /// `SAMPLES` timed `Place` (each aborted) and `Lookup` calls, from a
    /// thread of their own; resolves when they are done.
    async fn place_and_lookup(&self, tag: &str) -> (Vec<Duration>, Vec<Duration>) {
        let (probe, tag) = (self.clone(), tag.to_string());
        tokio::task::spawn_blocking(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("probe runtime")
                .block_on(probe.run(&tag))
        })
        .await
        .expect("probe thread")
    }

    async fn run(&self, tag: &str) -> (Vec<Duration>, Vec<Duration>) {
        let channel = self
            .transport
            .connect(&self.manager)
            .await
            .expect("manager");
        let mut manager = ManagerClient::new(channel);
        let secret = Secret::new(TEST_SECRET).expect("secret");
        let (mut places, mut lookups) = (Vec::new(), Vec::new());
        for k in 0..SAMPLES as u64 {
            let mut request = dupla_testkit::chat::authed(
                &self.token,
                PlaceRequest {
                    name: format!("bench/place/{tag}/{k}.bin"),
                    size: 4096,
                    entry_id: self.entry.clone(),
                    ..Default::default()
                },
            );
            secret.attach(&mut request);
            let t = Instant::now();
            let placed = manager.place(request).await.expect("place").into_inner();
            places.push(t.elapsed());
            manager
                .abort(secret.request(AbortRequest {
                    upload_id: placed.upload_id,
                    reason: "benchmark".into(),
                }))
                .await
                .expect("abort");
            let i = (k * 7919 % (self.files / OWN_EVERY).max(1)) * OWN_EVERY;
            let t = Instant::now();
            manager
                .lookup(dupla_testkit::chat::authed(
                    &self.token,
                    LookupRequest {
                        name: name_of(i),
                        version: 0,
                    },
                ))
                .await
                .expect("lookup");
            lookups.push(t.elapsed());
        }
        (places, lookups)
    }
}

async fn measure(cluster: &TestCluster, files: u64) {
    let mut manager = cluster.manager_client().await;
    let mut status_times = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let status = manager
            .cluster_status(ClusterStatusRequest {})
            .await
            .expect("status")
            .into_inner();
        status_times.push(t.elapsed());
        assert!(status.files >= files, "{} files", status.files);
    }
    report("cluster_status", &mut status_times);

    // The same calls on an idle cluster: what the catalog costs, apart
    // from the CPU the uploads below take on the same cores.
    let probe = Probe::new(cluster, files);
    let (mut idle_places, mut idle_lookups) = probe.place_and_lookup("idle").await;
    report("place_idle", &mut idle_places);
    report("lookup_idle", &mut idle_lookups);

    let stop = Arc::new(AtomicBool::new(false));
    let uploaded = Arc::new(AtomicU64::new(0));
    let mut uploads = Vec::new();
    for u in 0..UPLOADS {
        let (target, stop, uploaded) = (cluster.at(u % 3), stop.clone(), uploaded.clone());
        uploads.push(tokio::spawn(async move {
            let data = test_bytes(256 << 10, u as u64);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("upload/{u}/{n}.bin");
                if raw::upload(&target, &name, &data).await.is_ok() {
                    uploaded.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        }));
    }
    let (mut places, mut lookups) = probe.place_and_lookup("busy").await;
    stop.store(true, Ordering::Relaxed);
    for upload in uploads {
        let _ = upload.await;
    }
    report("place_under_16_uploads", &mut places);
    report("lookup_under_16_uploads", &mut lookups);
    println!(
        "uploads_during_measurement: {}",
        uploaded.load(Ordering::Relaxed)
    );
}

/// Plan repairs as the repair worker does, with server 0 lost.
fn plan_lost_server(db: &std::path::Path, servers: &[String]) -> dupla::Result<()> {
    let kv: Arc<dyn Kv> = Arc::new(SledKv::open(db)?);
    let mut config =
        dupla_manager::Config::for_test(db.parent().expect("db dir").to_path_buf(), TEST_SECRET);
    config.suspect_after = Duration::ZERO;
    config.down_after = Duration::ZERO;
    let state = dupla_manager::state::State::open(config, kv, dupla::rpc::Transport::Insecure)?;
    let held = state
        .catalog
        .counts()?
        .servers
        .get(&servers[0])
        .map_or(0, |u| u.files);
    {
        let mut membership = state.lock_membership();
        for id in &servers[1..] {
            let node = membership.get(id).expect("known server").node.clone();
            let report = dupla_manager::cluster::membership::Report {
                capacity: 1 << 50,
                ..Default::default()
            };
            // An insecure cluster: nothing to prove, so this cannot fail.
            let _ = membership.heartbeat(
                node,
                report,
                Instant::now() + Duration::from_secs(1),
                dupla_manager::cluster::membership::Proof::Unavailable,
            );
        }
    }
    let t = Instant::now();
    let plan = dupla_manager::files::repair_worker::plan_now(&state)?;
    let took = t.elapsed();
    let touched = plan.tasks.len() + plan.waiting.len() + plan.unrecoverable.len();
    println!("lost_server_files: {held}");
    println!(
        "repair_plan_ms: {:.1} (first pass: {touched} files planned, at most {} per pass)",
        took.as_secs_f64() * 1000.0,
        dupla_manager::files::repair_worker::REPAIR_PLAN_FILES
    );
    Ok(())
}

#[tokio::main]
async fn main() {
    let files: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut cluster = TestCluster::start(3).await;
    let servers: Vec<String> = cluster.servers.iter().map(|s| s.id.clone()).collect();
    let db = cluster.manager.data.join("db");
    cluster.stop_manager().await;
    let loading = {
        let (db, servers) = (db.clone(), servers.clone());
        tokio::task::spawn_blocking(move || load(&db, files, &servers))
    };
    loading.await.expect("load task").expect("load");
    let t = Instant::now();
    // On threads of its own, as the manager's own process would be.
    cluster.start_manager_apart().await;
    println!(
        "manager_start_ms: {:.0}",
        t.elapsed().as_secs_f64() * 1000.0
    );
    cluster.wait_for_up(3).await;
    measure(&cluster, files).await;
    println!("catalog_disk_mib: {}", dir_bytes(&db) >> 20);
    println!(
        "process_peak_rss_mib: {} (manager, 3 servers and the load, one process)",
        peak_rss_mib()
    );
    cluster.stop_manager().await;
    let (db2, servers2) = (db.clone(), servers.clone());
    tokio::task::spawn_blocking(move || plan_lost_server(&db2, &servers2))
        .await
        .expect("plan task")
        .expect("plan");
}
