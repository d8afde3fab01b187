//! Faults on an in-process cluster: a flipped byte on disk, a holder that is
//! gone, a manager restart. Each checks that nothing acknowledged is lost.

use dupla::chunk::CHUNK_SIZE;
use dupla::Hash;
use dupla_testkit::{bounded, raw, test_bytes, TestCluster};

fn holder_indexes(cluster: &TestCluster, entry: &dupla::v1::FileEntry) -> Vec<usize> {
    entry
        .holders
        .iter()
        .map(|h| cluster.server_index(&h.id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flipped_byte_on_one_holder_is_detected_and_served_from_the_other() {
    bounded(async {
        let cluster = TestCluster::start(3).await;
        let data = test_bytes(4 * CHUNK_SIZE + 100, 1);
        let entry = raw::upload(&cluster.at(0), "photos/cat.jpg", &data)
            .await
            .unwrap()
            .entry
            .unwrap();
        let holders = holder_indexes(&cluster, &entry);
        // Corrupt chunk 2 on the primary: one byte, in place.
        let hash = Hash::from_slice(&entry.chunks[2], "chunk").unwrap();
        let path = cluster.chunk_path(holders[0], &hash);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[12345] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        // Through the corrupted holder itself (it reads locally first) and
        // through every other server: always the right bytes.
        for i in 0..3 {
            let back = raw::download(&cluster.at(i), "photos/cat.jpg")
                .await
                .unwrap();
            assert!(back == data, "wrong bytes via server {i}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_on_both_holders_is_a_clear_error_not_wrong_bytes() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let data = test_bytes(CHUNK_SIZE + 7, 2);
        let entry = raw::upload(&cluster.at(0), "doomed.bin", &data)
            .await
            .unwrap()
            .entry
            .unwrap();
        let hash = Hash::from_slice(&entry.chunks[1], "chunk").unwrap();
        for i in holder_indexes(&cluster, &entry) {
            std::fs::write(cluster.chunk_path(i, &hash), b"garbage").unwrap();
        }
        let err = raw::download(&cluster.at(0), "doomed.bin")
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert!(
            err.message().contains("no holder could serve it"),
            "{}",
            err.message()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_holder_does_not_stop_downloads() {
    bounded(async {
        let mut cluster = TestCluster::start(3).await;
        let data = test_bytes(3 * CHUNK_SIZE, 3);
        let entry = raw::upload(&cluster.at(0), "report.pdf", &data)
            .await
            .unwrap()
            .entry
            .unwrap();
        let holders = holder_indexes(&cluster, &entry);
        cluster.stop_server(holders[0]).await;
        let serving = (0..3).find(|i| *i != holders[0]).unwrap();
        // Immediately (the manager still believes the primary is up) and
        // after the manager noticed: both work.
        raw::assert_restores(&cluster.at(serving), "report.pdf", &data).await;
        let primary_id = cluster.servers[holders[0]].id.clone();
        cluster
            .wait_for_status(|s| {
                s.servers.iter().any(|srv| {
                    srv.node.as_ref().unwrap().id == primary_id
                        && srv.state() != dupla::v1::ServerState::Up
                })
            })
            .await;
        raw::assert_restores(&cluster.at(serving), "report.pdf", &data).await;
        assert_eq!(cluster.status().await.under_replicated, 1);
        // New uploads avoid the stopped server.
        let receipt = raw::upload(&cluster.at(serving), "after.txt", b"after")
            .await
            .unwrap();
        assert!(receipt
            .entry
            .unwrap()
            .holders
            .iter()
            .all(|h| h.id != primary_id));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_catalog_survives_a_manager_restart() {
    bounded(async {
        let mut cluster = TestCluster::start(2).await;
        let data = test_bytes(2 * CHUNK_SIZE + 1, 4);
        raw::upload(&cluster.at(0), "keep/me.bin", &data)
            .await
            .unwrap();
        cluster.restart_manager().await;
        cluster.wait_for_up(2).await;
        assert_eq!(cluster.status().await.files, 1);
        raw::assert_restores(&cluster.at(1), "keep/me.bin", &data).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_server_rejoins_and_serves_its_chunks() {
    bounded(async {
        let mut cluster = TestCluster::start(2).await;
        let data = test_bytes(CHUNK_SIZE / 2, 5);
        raw::upload(&cluster.at(0), "small.txt", &data)
            .await
            .unwrap();
        cluster.stop_server(1).await;
        cluster.restart_server(1).await;
        cluster.wait_for_up(2).await;
        cluster.stop_server(0).await;
        raw::assert_restores(&cluster.at(1), "small.txt", &data).await;
    })
    .await;
}
