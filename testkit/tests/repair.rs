//! Automatic repair, degraded writes and scrubbing on an in-process cluster:
//! lose a server for good, write with one server up, flip a byte on disk —
//! and check the cluster brings every file back to two verified copies by
//! itself, with nothing lost.

use dupla::chunk::CHUNK_SIZE;
use dupla::v1::ScrubRequest;
use dupla::Hash;
use dupla_testkit::{bounded, raw, test_bytes, TestCluster};

/// Files of assorted sizes: empty, tiny, exactly a chunk, a few chunks.
fn corpus(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let size = match i % 4 {
                0 => 0,
                1 => 100 + i,
                2 => CHUNK_SIZE,
                _ => 2 * CHUNK_SIZE + i,
            };
            (format!("corpus/file-{i}"), test_bytes(size, i as u64))
        })
        .collect()
}

/// Every file has two holders, both up, each holding every chunk intact.
async fn assert_two_good_copies(cluster: &TestCluster, files: &[(String, Vec<u8>)]) {
    let status = cluster.status().await;
    for (name, data) in files {
        let entry = cluster.lookup(name).await.unwrap();
        assert_eq!(entry.holders.len(), 2, "{name}");
        for holder in &entry.holders {
            let server = status
                .servers
                .iter()
                .find(|s| s.node.as_ref().unwrap().id == holder.id)
                .unwrap();
            assert_eq!(
                server.state(),
                dupla::v1::ServerState::Up,
                "{name} is held by a server that is not up"
            );
            let i = cluster.server_index(&holder.id);
            for hash in &entry.chunks {
                let hash = Hash::from_slice(hash, "chunk").unwrap();
                let bytes = std::fs::read(cluster.chunk_path(i, &hash)).unwrap();
                assert_eq!(
                    Hash::of(&bytes),
                    hash,
                    "{name}: bad chunk on {}",
                    holder.addr
                );
            }
        }
        assert_eq!(entry.blake3, Hash::of(data).to_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_lost_for_good_is_replaced_and_every_file_regains_two_copies() {
    bounded(async {
        let mut cluster = TestCluster::start(3).await;
        let files = corpus(200);
        for (name, data) in &files {
            raw::upload(&cluster.at(0), name, data).await.unwrap();
        }
        cluster.stop_server(2).await;
        // Under-replicated until the server is declared down, then repaired.
        cluster
            .wait_for_status(|s| s.under_replicated > 0 || s.repaired_files > 0)
            .await;
        cluster
            .wait_for_status(|s| {
                s.under_replicated == 0
                    && s.servers
                        .iter()
                        .any(|srv| srv.state() == dupla::v1::ServerState::Down)
            })
            .await;
        let status = cluster.status().await;
        assert!(
            status.repaired_files > 0,
            "nothing was repaired: {status:?}"
        );
        assert_two_good_copies(&cluster, &files).await;
        for (name, data) in &files {
            raw::assert_restores(&cluster.at(1), name, data).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_with_one_server_up_succeeds_and_gets_its_second_copy_later() {
    bounded(async {
        let mut cluster = TestCluster::start(1).await;
        let data = test_bytes(3 * CHUNK_SIZE + 3, 7);
        let receipt = raw::upload(&cluster.at(0), "alone.bin", &data)
            .await
            .unwrap();
        assert_eq!(receipt.copies, 1);
        assert_eq!(cluster.status().await.under_replicated, 1);
        let second = cluster.add_server().await;
        cluster.wait_for_status(|s| s.under_replicated == 0).await;
        assert_two_good_copies(&cluster, &[("alone.bin".into(), data.clone())]).await;
        // The first server can go: the repaired copy serves the file.
        cluster.stop_server(0).await;
        raw::assert_restores(&cluster.at(second), "alone.bin", &data).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_chunk_met_by_a_download_is_quarantined_and_repaired() {
    bounded(async {
        let mut cluster = TestCluster::start(2).await;
        let data = test_bytes(CHUNK_SIZE + 1, 9);
        let entry = raw::upload(&cluster.at(0), "read/me.bin", &data)
            .await
            .unwrap()
            .entry
            .unwrap();
        let victim = cluster.server_index(&entry.holders[0].id);
        let hash = Hash::from_slice(&entry.chunks[0], "chunk").unwrap();
        std::fs::write(cluster.chunk_path(victim, &hash), b"rot").unwrap();
        raw::assert_restores(&cluster.at(victim), "read/me.bin", &data).await;
        cluster
            .wait_for_status(|s| s.under_replicated == 0 && s.repaired_files >= 1)
            .await;
        assert_two_good_copies(&cluster, &[("read/me.bin".into(), data.clone())]).await;
        cluster.stop_server(1 - victim).await;
        raw::assert_restores(&cluster.at(victim), "read/me.bin", &data).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scrub_finds_a_flipped_byte_and_the_twin_heals_it() {
    bounded(async {
        let mut cluster = TestCluster::start(2).await;
        let data = test_bytes(2 * CHUNK_SIZE + 9, 8);
        let entry = raw::upload(&cluster.at(0), "scrub/me.bin", &data)
            .await
            .unwrap()
            .entry
            .unwrap();
        let victim = cluster.server_index(&entry.holders[0].id);
        let hash = Hash::from_slice(&entry.chunks[1], "chunk").unwrap();
        let path = cluster.chunk_path(victim, &hash);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[777] ^= 0x08;
        std::fs::write(&path, &bytes).unwrap();
        let report = raw::storage(&cluster.at(victim))
            .await
            .scrub(cluster.at(victim).request(ScrubRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(report.checked, 3, "{report:?}");
        assert_eq!(report.corrupt, vec![hash.to_bytes()]);
        assert!(!path.exists(), "the corrupt chunk must be quarantined");
        cluster
            .wait_for_status(|s| s.under_replicated == 0 && s.repaired_files >= 1)
            .await;
        assert_two_good_copies(&cluster, &[("scrub/me.bin".into(), data.clone())]).await;
        // The healed copy alone serves the file.
        let twin = 1 - victim;
        cluster.stop_server(twin).await;
        raw::assert_restores(&cluster.at(victim), "scrub/me.bin", &data).await;
    })
    .await;
}

/// A name whose placement over the cluster's (idle) servers is `primary`
/// then `replica`.
async fn name_placed_on(cluster: &TestCluster, primary: usize, replica: usize) -> String {
    cluster
        .name_placed("placed", 1, |order| order[..2] == [primary, replica])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_replica_is_replaced_by_the_next_server_during_the_upload() {
    bounded(async {
        let mut cluster = TestCluster::start(3).await;
        let name = name_placed_on(&cluster, 0, 1).await;
        // The replica dies; the manager has not noticed yet (it still
        // places on it), so the primary meets the failure itself.
        cluster.stop_server(1).await;
        let data = test_bytes(5 * CHUNK_SIZE + 11, 10);
        let receipt = raw::upload(&cluster.at(0), &name, &data).await.unwrap();
        assert_eq!(receipt.copies, 2, "{receipt:?}");
        let entry = receipt.entry.unwrap();
        let holders: Vec<usize> = entry
            .holders
            .iter()
            .map(|h| cluster.server_index(&h.id))
            .collect();
        assert!(
            holders.contains(&0) && holders.contains(&2),
            "holders {holders:?}"
        );
        cluster.stop_server(0).await;
        raw::assert_restores(&cluster.at(2), &name, &data).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_no_substitute_the_upload_completes_with_one_copy() {
    bounded(async {
        let mut cluster = TestCluster::start(2).await;
        let name = name_placed_on(&cluster, 0, 1).await;
        cluster.stop_server(1).await;
        let data = test_bytes(2 * CHUNK_SIZE, 11);
        let receipt = raw::upload(&cluster.at(0), &name, &data).await.unwrap();
        assert_eq!(receipt.copies, 1, "{receipt:?}");
        assert_eq!(cluster.status().await.under_replicated, 1);
        // When the server comes back, the repair worker adds the copy.
        cluster.restart_server(1).await;
        cluster.wait_for_status(|s| s.under_replicated == 0).await;
        assert_two_good_copies(&cluster, &[(name.clone(), data.clone())]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_entry_that_is_the_replica_replaces_a_dead_primary() {
    bounded(async {
        let mut cluster = TestCluster::start(3).await;
        // Server 0 is the replica and the entry; the primary (1) is dead.
        let name = name_placed_on(&cluster, 1, 0).await;
        cluster.stop_server(1).await;
        let data = test_bytes(3 * CHUNK_SIZE, 12);
        let receipt = raw::upload(&cluster.at(0), &name, &data).await.unwrap();
        assert_eq!(receipt.copies, 2, "{receipt:?}");
        let holders: Vec<usize> = receipt
            .entry
            .unwrap()
            .holders
            .iter()
            .map(|h| cluster.server_index(&h.id))
            .collect();
        let mut sorted = holders.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 2], "holders {holders:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copy_can_be_made_window_by_window() {
    bounded(async {
        use dupla::rpc::Secret;
        use dupla::v1::{Node, ReplicateRequest};
        let cluster = TestCluster::start(3).await;
        let data = test_bytes(3 * CHUNK_SIZE + 5, 30);
        let name = cluster
            .name_placed("window", data.len() as u64, |o| o[..2] == [0, 1])
            .await;
        raw::upload(&cluster.at(0), &name, &data).await.unwrap();
        let hashes = raw::chunk_hashes(&data);
        let secret = Secret::new(dupla_testkit::cluster::TEST_SECRET).unwrap();
        let window = |first: usize, n: usize| ReplicateRequest {
            name: name.clone(),
            chunks: hashes[first..first + n]
                .iter()
                .map(Hash::to_bytes)
                .collect(),
            size: data.len() as u64,
            sources: vec![Node {
                id: cluster.servers[0].id.clone(),
                addr: cluster.server_addr(0),
            }],
            first_chunk: first as u64,
        };
        let mut storage = raw::storage(&cluster.at(2)).await;
        // The last two chunks (the very last one short), then the first two.
        let tail = storage
            .replicate(secret.request(window(2, 2)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(tail.copied_bytes, CHUNK_SIZE as u64 + 5);
        assert!(!cluster.chunk_path(2, &hashes[0]).exists());
        let head = storage
            .replicate(secret.request(window(0, 2)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(head.copied_bytes, 2 * CHUNK_SIZE as u64);
        assert!(hashes.iter().all(|h| cluster.chunk_path(2, h).exists()));
        // A window that cannot fit the file (every chunk has at least one
        // byte; lengths are not sent, chunks are verified by hash) is refused.
        let mut past = window(2, 2);
        past.first_chunk = data.len() as u64 - 1;
        let err = storage.replicate(secret.request(past)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    })
    .await;
}
