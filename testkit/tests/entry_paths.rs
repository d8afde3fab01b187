//! Which servers an upload and a restore go through (issue 10, items 15–17):
//! - an upload enters at its primary, whichever server the client was
//!   assigned or named, so every byte takes two hops (client → primary →
//!   replica), never a third through a server that only forwards;
//! - an entry that holds a copy is the primary: it is the one that sends
//!   the replica, and the catalog lists it first;
//! - a restore is served by a holder of the file.

use dupla_client::backup::{resolve, BackupOptions, BackupReport};
use dupla_client::Client;
use dupla_testkit::{bounded, raw, test_bytes, TestCluster};
use std::path::Path;

/// A file big enough to ask where it goes before it is sent.
const SIZE: usize = 3 << 20;

async fn backup(client: &Client, root: &Path, name: &str, data: &[u8]) -> BackupReport {
    std::fs::write(root.join(name), data).unwrap();
    let file = resolve(root, Path::new(name)).unwrap();
    client
        .backup_resolved(root, &file, BackupOptions::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_upload_enters_at_its_primary_whatever_server_was_named() {
    bounded(async {
        let cluster = TestCluster::start(3).await;
        let root = tempfile::tempdir().unwrap();
        // For each server named as the entry, a name it does not hold
        // (before the fix, the entry only forwarded: three hops) and one it
        // holds as the placed replica (before the fix, it was the replica
        // and sent to the primary).
        for named in 0..3 {
            let client = Client::new(cluster.manager_addr(), Some(cluster.server_addr(named)))
                .with_token(cluster.token.clone());
            let outsider = cluster
                .name_placed(&format!("out-{named}"), SIZE as u64, |order| {
                    !order[..2].contains(&named)
                })
                .await;
            let report = backup(&client, root.path(), &outsider, &test_bytes(SIZE, 1)).await;
            assert_eq!(report.entry, report.primary, "{report:?}");
            assert_ne!(report.entry, cluster.server_addr(named), "{report:?}");
            assert_eq!(report.copies, 2, "{report:?}");
            raw::assert_restores(&cluster.at(named), &outsider, &test_bytes(SIZE, 1)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_entry_holding_the_replica_becomes_the_primary() {
    bounded(async {
        let cluster = TestCluster::start(3).await;
        // Upload straight through the placed replica, as a client that
        // learned no placement would: the raw Upload call, no preview.
        let (primary, replica) = (0, 1);
        let name = cluster
            .name_placed("replica-entry", SIZE as u64, |order| {
                order[..2] == [primary, replica]
            })
            .await;
        let data = test_bytes(SIZE, 2);
        let receipt = raw::upload(&cluster.at(replica), &name, &data)
            .await
            .unwrap();
        let entry = receipt.entry.expect("a receipt has its entry");
        let holders: Vec<&str> = entry.holders.iter().map(|h| h.addr.as_str()).collect();
        assert_eq!(
            holders,
            [
                cluster.server_addr(replica).as_str(),
                cluster.server_addr(primary).as_str()
            ],
            "the entry stored first and sent the replica: it is the primary"
        );
        raw::assert_restores(&cluster.at(2), &name, &data).await;
    })
    .await;
}
