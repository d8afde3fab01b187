//! Garbage collection reclaims what no file uses, and nothing else: the
//! chunks of removed files and of unfinished uploads once they are older
//! than the grace period, the copies a returning server no longer holds for
//! the catalog, and old quarantined chunks; never a chunk a listed file
//! needs, and nothing at all while the catalog is empty. Time passing is
//! simulated by dating chunk files back (their mtime is their last use).

use dupla::chunk::CHUNK_SIZE;
use dupla::rpc::Secret;
use dupla::v1::{CollectGarbageReport, CollectGarbageRequest, RemoveRequest};
use dupla::Hash;
use dupla_testkit::cluster::TEST_SECRET;
use dupla_testkit::{bounded, raw, test_bytes, TestCluster};
use std::path::Path;
use std::time::{Duration, SystemTime};
use tonic::Code;

/// Date every chunk file of server `i` back by two days.
fn age_chunks(cluster: &TestCluster, i: usize) {
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86_400);
    for dir in ["chunks", "quarantine"] {
        for file in files_under(&cluster.servers[i].data.join(dir)) {
            std::fs::File::open(&file)
                .unwrap()
                .set_modified(two_days_ago)
                .unwrap();
        }
    }
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            if e.path().is_dir() {
                files_under(&e.path())
            } else {
                vec![e.path()]
            }
        })
        .collect()
}

async fn collect(cluster: &TestCluster, i: usize) -> Result<CollectGarbageReport, tonic::Status> {
    let secret = Secret::new(TEST_SECRET).unwrap();
    raw::storage(&cluster.at(i))
        .await
        .collect_garbage(secret.request(CollectGarbageRequest {}))
        .await
        .map(|r| r.into_inner())
}

/// The chunk hashes of `name` in the test user's catalog.
async fn chunks_of(cluster: &TestCluster, name: &str) -> Vec<Hash> {
    cluster
        .lookup(name)
        .await
        .unwrap()
        .chunks
        .iter()
        .map(|h| Hash::from_slice(h, "chunk").unwrap())
        .collect()
}

fn stored_anywhere(cluster: &TestCluster, hash: &Hash) -> bool {
    (0..cluster.servers.len()).any(|i| cluster.chunk_path(i, hash).exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removed_files_and_unfinished_uploads_are_reclaimed_and_kept_files_are_not() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let keep = test_bytes(3 * CHUNK_SIZE + 1, 41);
        let gone = test_bytes(2 * CHUNK_SIZE, 42);
        raw::upload(&cluster.at(0), "keep.bin", &keep)
            .await
            .unwrap();
        raw::upload(&cluster.at(0), "gone.bin", &gone)
            .await
            .unwrap();
        let mut gone_chunks = chunks_of(&cluster, "gone.bin").await;
        // An upload never finished: 16 of its chunks made it to disk.
        let unfinished = test_bytes(24 * CHUNK_SIZE, 44);
        raw::interrupted_upload(
            &cluster,
            &cluster.at(1),
            "unfinished.bin",
            &unfinished,
            20,
            16,
        )
        .await;
        let unfinished_chunks: Vec<Hash> = unfinished[..16 * CHUNK_SIZE]
            .chunks(CHUNK_SIZE)
            .map(Hash::of)
            .collect();
        assert!(unfinished_chunks
            .iter()
            .all(|h| stored_anywhere(&cluster, h)));
        cluster
            .manager_client()
            .await
            .remove(cluster.as_user(RemoveRequest {
                name: "gone.bin".into(),
            }))
            .await
            .unwrap();

        // Recent chunks survive a pass whatever their state.
        for i in 0..2 {
            assert_eq!(collect(&cluster, i).await.unwrap().removed, 0);
        }
        assert!(gone_chunks.iter().all(|h| stored_anywhere(&cluster, h)));

        // Two days later, the removed file's and the unfinished upload's
        // chunks go; the kept file stays.
        for i in 0..2 {
            age_chunks(&cluster, i);
            let report = collect(&cluster, i).await.unwrap();
            assert!(
                report.removed >= gone_chunks.len() as u64 + 16,
                "{report:?}"
            );
        }
        gone_chunks.extend(unfinished_chunks);
        assert!(gone_chunks.iter().all(|h| !stored_anywhere(&cluster, h)));
        for i in 0..2 {
            raw::assert_restores(&cluster.at(i), "keep.bin", &keep).await;
        }
        // Nothing is left to collect.
        for i in 0..2 {
            assert_eq!(collect(&cluster, i).await.unwrap().removed, 0);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_returning_server_drops_the_copies_repaired_elsewhere() {
    bounded(async {
        let mut cluster = TestCluster::start(3).await;
        let data = test_bytes(2 * CHUNK_SIZE + 3, 43);
        let name = cluster
            .name_placed("away", data.len() as u64, |o| o[..2] == [0, 1])
            .await;
        raw::upload(&cluster.at(2), &name, &data).await.unwrap();
        let chunks = chunks_of(&cluster, &name).await;
        // Server 1 is gone long enough for its copy to be made on server 2.
        cluster.stop_server(1).await;
        cluster
            .wait_for_status(|s| {
                s.servers
                    .iter()
                    .any(|s| s.state() == dupla::v1::ServerState::Down)
                    && s.under_replicated == 0
            })
            .await;
        cluster.restart_server(1).await;
        cluster.wait_for_up(3).await;
        assert!(chunks.iter().all(|h| cluster.chunk_path(1, h).exists()));
        age_chunks(&cluster, 1);
        let report = collect(&cluster, 1).await.unwrap();
        assert_eq!(report.removed, chunks.len() as u64);
        assert!(chunks.iter().all(|h| !cluster.chunk_path(1, h).exists()));
        // The live holders keep theirs, after a pass too.
        for i in [0, 2] {
            age_chunks(&cluster, i);
            assert_eq!(collect(&cluster, i).await.unwrap().removed, 0);
            raw::assert_restores(&cluster.at(i), &name, &data).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_an_empty_catalog_nothing_is_collected() {
    bounded(async {
        let cluster = TestCluster::start(1).await;
        raw::upload(&cluster.at(0), "only.bin", b"only")
            .await
            .unwrap();
        let chunks = chunks_of(&cluster, "only.bin").await;
        cluster
            .manager_client()
            .await
            .remove(cluster.as_user(RemoveRequest {
                name: "only.bin".into(),
            }))
            .await
            .unwrap();
        age_chunks(&cluster, 0);
        let err = collect(&cluster, 0).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("catalog is empty"), "{err:?}");
        assert!(chunks.iter().all(|h| cluster.chunk_path(0, h).exists()));
    })
    .await;
}
