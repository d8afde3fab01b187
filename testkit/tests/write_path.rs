//! The write and read paths on an in-process cluster: uploads through a
//! server that holds nothing, identical verified copies on both holders,
//! byte-exact restores at the chunk-size edges.

use dupla::chunk::CHUNK_SIZE;
use dupla::Hash;
use dupla_testkit::{bounded, raw, test_bytes, TestCluster};

/// A name whose placement leaves server `entry` out, so uploading through it
/// exercises forwarding.
async fn name_avoiding(cluster: &TestCluster, entry: usize, prefix: &str, size: u64) -> String {
    cluster
        .name_placed(prefix, size, |order| !order[..2].contains(&entry))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_through_a_non_holder_gives_two_identical_copies_at_every_size_edge() {
    bounded(async {
        let cluster = TestCluster::start(3).await;
        let sizes = [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 64 * CHUNK_SIZE];
        for (seed, size) in sizes.into_iter().enumerate() {
            let data = test_bytes(size, seed as u64);
            let name = name_avoiding(&cluster, 0, &format!("edge/{size}"), size as u64).await;
            let receipt = raw::upload(&cluster.at(0), &name, &data).await.unwrap();
            let entry = receipt.entry.unwrap();
            assert_eq!(receipt.copies, 2);
            assert_eq!(entry.size, size as u64);
            assert_eq!(entry.blake3, Hash::of(&data).to_bytes());
            let holders: Vec<usize> = entry
                .holders
                .iter()
                .map(|h| cluster.server_index(&h.id))
                .collect();
            assert_eq!(holders.len(), 2);
            assert!(!holders.contains(&0), "entry server 0 must not hold {name}");
            assert_ne!(holders[0], holders[1]);
            // Both holders have every chunk, byte-identical and verified.
            for hash in &entry.chunks {
                let hash = Hash::from_slice(hash, "chunk").unwrap();
                let a = std::fs::read(cluster.chunk_path(holders[0], &hash)).unwrap();
                let b = std::fs::read(cluster.chunk_path(holders[1], &hash)).unwrap();
                assert_eq!(a, b);
                assert_eq!(Hash::of(&a), hash);
            }
            // Restore through every server, holder or not.
            for i in 0..3 {
                let back = raw::download(&cluster.at(i), &name).await.unwrap();
                assert_eq!(Hash::of(&back), Hash::of(&data), "{name} via server {i}");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_that_is_the_entry_stores_locally_and_replicates() {
    bounded(async {
        let cluster = TestCluster::start(3).await;
        let data = test_bytes(3 * CHUNK_SIZE + 5, 9);
        // Find a name placed on server 1 by trying until a receipt names it.
        for i in 0.. {
            let name = format!("local/{i}");
            let receipt = raw::upload(&cluster.at(1), &name, &data).await.unwrap();
            let entry = receipt.entry.unwrap();
            let ids: Vec<&str> = entry.holders.iter().map(|h| h.id.as_str()).collect();
            if ids.contains(&cluster.servers[1].id.as_str()) {
                assert_eq!(ids.len(), 2);
                assert_eq!(raw::download(&cluster.at(2), &name).await.unwrap(), data);
                break;
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_backup_of_a_name_makes_a_new_version() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let addr = cluster.at(0);
        let v1 = raw::upload(&addr, "notes.txt", b"first")
            .await
            .unwrap()
            .entry
            .unwrap();
        let v2 = raw::upload(&addr, "notes.txt", b"second")
            .await
            .unwrap()
            .entry
            .unwrap();
        assert_eq!((v1.version, v2.version), (1, 2));
        assert_eq!(raw::download(&addr, "notes.txt").await.unwrap(), b"second");
        assert_eq!(cluster.status().await.files, 1);
    })
    .await;
}
