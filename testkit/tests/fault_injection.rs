//! Faults injected at chosen steps of the write path (`dupla_server::faults`):
//! a server killed after writing part of a file, a replica that dies before
//! its receipt, an entry that fails or dies before `Manager/Commit`,
//! connections dropped after N bytes. Each test checks the product's
//! guarantee at that step: nothing acknowledged is lost; a file is either
//! committed with every listed holder holding every chunk, or not in the
//! catalog at all; the error says what happened; and a retry (or a resumed
//! upload) succeeds and restores byte-identical.
//!
//! Every server starts with an empty, active plan; rules are added once the
//! placement of the test's name is known. Tests wait on events (a rule that
//! fired, a call that returned, the manager's view of a server, files
//! leaving `tmp/`), never on a sleep.

use dupla::chunk::CHUNK_SIZE;
use dupla::v1::UploadReceipt;
use dupla::Hash;
use dupla_server::faults::{Action, FaultPlan, Step};
use dupla_testkit::raw;
use dupla_testkit::{bounded, test_bytes, TestCluster};
use std::time::{Duration, Instant};
use tonic::Code;

/// `n` servers, each able to take fault rules while it runs.
async fn cluster(n: usize) -> TestCluster {
    TestCluster::start_with_faults(n, |_| FaultPlan::new()).await
}

/// A name of `size` bytes whose placement order starts with `order`.
async fn placed(cluster: &TestCluster, order: &[usize], size: usize) -> String {
    cluster
        .name_placed("faulty", size as u64, |o| o.starts_with(order))
        .await
}

/// `name` is committed as `data`, and every listed holder has every chunk
/// on disk, intact. Returns the holders' indices.
async fn assert_committed(cluster: &TestCluster, name: &str, data: &[u8]) -> Vec<usize> {
    let entry = cluster.lookup(name).await.expect("the file is committed");
    assert_eq!(entry.size, data.len() as u64, "{name}");
    assert_eq!(entry.blake3, Hash::of(data).to_bytes(), "{name}");
    let holders: Vec<usize> = entry
        .holders
        .iter()
        .map(|h| cluster.server_index(&h.id))
        .collect();
    assert!(!holders.is_empty(), "{name} has no holder");
    for &i in &holders {
        for hash in &entry.chunks {
            let hash = Hash::from_slice(hash, "chunk").unwrap();
            let bytes = std::fs::read(cluster.chunk_path(i, &hash))
                .unwrap_or_else(|e| panic!("{name}: chunk {hash} missing on server {i}: {e}"));
            assert_eq!(Hash::of(&bytes), hash, "{name}: bad chunk on server {i}");
        }
    }
    holders
}

/// The receipt says two durable copies (its holders are shown if not).
fn assert_two_copies(receipt: &UploadReceipt) {
    assert_eq!(
        receipt.copies,
        2,
        "holders {:?}",
        receipt.entry.as_ref().map(|e| &e.holders)
    );
}

/// `name` is not in the catalog: neither the manager nor a download
/// through server `via` knows it.
async fn assert_absent(cluster: &TestCluster, name: &str, via: usize) {
    let err = cluster.lookup(name).await.expect_err("nothing committed");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = raw::download(&cluster.at(via), name)
        .await
        .expect_err("nothing to download");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

/// The client lost its connection to the entry mid-call: a transport
/// failure (the status carries its cause), which the real client reports
/// as "lost the connection to server …" and retries, not a status the
/// entry chose.
fn assert_connection_lost(err: &tonic::Status) {
    assert!(
        std::error::Error::source(err).is_some(),
        "expected a lost connection, got {err:?}"
    );
}

/// Wait (polling, 5 s at most) until `done` holds.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Files staged in server `i`'s `tmp/`.
fn staged(cluster: &TestCluster, i: usize) -> usize {
    std::fs::read_dir(cluster.servers[i].data.join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Wait until the failed transfers on server `i` deleted what they staged.
async fn wait_unstaged(cluster: &TestCluster, i: usize) {
    wait_until(&format!("server {i} empties tmp/"), || {
        staged(cluster, i) == 0
    })
    .await;
}

/// Wait until the manager no longer counts server `i` as up (it then
/// places nothing on it and lets another entry take its names over).
async fn wait_not_up(cluster: &TestCluster, i: usize) {
    let id = cluster.servers[i].id.clone();
    cluster
        .wait_for_status(|s| {
            s.servers.iter().any(|srv| {
                srv.node.as_ref().unwrap().id == id && srv.state() != dupla::v1::ServerState::Up
            })
        })
        .await;
}

/// Whether server `i` has every chunk of `data` durably (in `chunks/`).
fn holds_every_chunk(cluster: &TestCluster, i: usize, data: &[u8]) -> bool {
    raw::chunk_hashes(data)
        .iter()
        .all(|h| cluster.chunk_path(i, h).exists())
}

// (1) After the primary wrote chunk K, before the replica acknowledged.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_killed_after_writing_part_of_a_file_loses_nothing_acknowledged() {
    bounded(async {
        let mut cluster = cluster(3).await;
        let data = test_bytes(20 * CHUNK_SIZE + 5, 1);
        // Entry 0 only forwards: client → 0 → primary 1 → replica 2.
        let name = placed(&cluster, &[1, 2], data.len()).await;
        let v1 = test_bytes(3 * CHUNK_SIZE + 1, 2);
        raw::upload(&cluster.at(0), &name, &v1).await.unwrap();

        let kill = cluster
            .faults(1)
            .add(Step::AfterWrite { chunk: 5 }, Action::Kill);
        let err = raw::upload(&cluster.at(0), &name, &data)
            .await
            .expect_err("the primary died mid-upload");
        assert!(kill.has_fired());
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(
            err.message().contains(&cluster.server_addr(1)),
            "the error names the primary: {}",
            err.message()
        );
        // Its first batch was durable when it died, and stays on its disk.
        let hashes = raw::chunk_hashes(&data);
        assert!(hashes[..16]
            .iter()
            .all(|h| cluster.chunk_path(1, h).exists()));
        // The acknowledged version is untouched, and served by the replica.
        assert_committed(&cluster, &name, &v1).await;
        raw::assert_restores(&cluster.at(2), &name, &v1).await;
        // The replica dropped what it had staged.
        wait_unstaged(&cluster, 2).await;
        // The dead server's task ended on its own.
        cluster.stop_server(1).await;

        // Once the manager sees it gone, a retry places around it.
        wait_not_up(&cluster, 1).await;
        let receipt = raw::upload(&cluster.at(0), &name, &data).await.unwrap();
        assert_two_copies(&receipt);
        let holders = assert_committed(&cluster, &name, &data).await;
        assert!(!holders.contains(&1), "holders {holders:?}");
        for i in [0, 2] {
            raw::assert_restores(&cluster.at(i), &name, &data).await;
        }
        // Restarted on its address, the killed server rejoins and serves.
        cluster.restart_server(1).await;
        cluster.wait_for_up(3).await;
        assert_eq!(staged(&cluster, 1), 0, "tmp/ is emptied at start");
        raw::assert_restores(&cluster.at(1), &name, &data).await;
    })
    .await;
}

/// Upload through server 0 a file placed in `order`, kill server 1 (a
/// holder) after it wrote chunk 5, and check the upload still ends with two
/// copies, on 0 and 2 (the fallback), which alone restore it.
async fn a_holder_killed_mid_stream_is_replaced(order: [usize; 3], seed: u64) {
    let mut cluster = cluster(3).await;
    let data = test_bytes(20 * CHUNK_SIZE + 7, seed);
    let name = placed(&cluster, &order, data.len()).await;
    let kill = cluster
        .faults(1)
        .add(Step::AfterWrite { chunk: 5 }, Action::Kill);
    let receipt = raw::upload(&cluster.at(0), &name, &data)
        .await
        .expect("a dead holder under a storing hop does not fail the upload");
    assert!(kill.has_fired());
    assert_two_copies(&receipt);
    let mut holders = assert_committed(&cluster, &name, &data).await;
    holders.sort();
    assert_eq!(holders, [0, 2]);
    // The substitute's copy alone restores the file.
    cluster.stop_server(1).await;
    cluster.stop_server(0).await;
    raw::assert_restores(&cluster.at(2), &name, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_stream_is_replaced_by_a_substitute() {
    // The entry is the primary: client → 0 → replica 1; 2 is the fallback.
    bounded(a_holder_killed_mid_stream_is_replaced([0, 1, 2], 3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_killed_mid_stream_under_an_entry_that_is_the_replica_is_replaced() {
    // The entry is the replica: client → 0 → primary 1; 2 is the fallback.
    bounded(a_holder_killed_mid_stream_is_replaced([1, 0, 2], 13)).await;
}

/// The fallbacks are the placement order without the primary and the chain
/// (reliability.md, "Replica dies mid-upload"). An entry that only forwards
/// is neither, so on three servers it is the substitute when the replica
/// dies mid-stream, and the upload completes with two copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarding_entry_is_the_substitute_of_a_replica_killed_mid_stream() {
    bounded(async {
        let mut cluster = cluster(3).await;
        let data = test_bytes(20 * CHUNK_SIZE + 7, 15);
        let name = placed(&cluster, &[1, 2], data.len()).await;
        cluster
            .faults(2)
            .add(Step::AfterWrite { chunk: 5 }, Action::Kill);
        let receipt = raw::upload(&cluster.at(0), &name, &data).await.unwrap();
        assert_two_copies(&receipt);
        assert_eq!(assert_committed(&cluster, &name, &data).await, [1, 0]);
        // The entry's substitute copy alone restores the file.
        cluster.stop_server(2).await;
        cluster.stop_server(1).await;
        raw::assert_restores(&cluster.at(0), &name, &data).await;
    })
    .await;
}

// (2) On the replica, before it answers its Store receipt.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_before_its_receipt_is_replaced_by_a_substitute() {
    bounded(async {
        let mut cluster = cluster(4).await;
        let data = test_bytes(5 * CHUNK_SIZE + 3, 4);
        // client → entry 0 → primary 1 → replica 2; 3 is the fallback.
        let name = placed(&cluster, &[1, 2, 3], data.len()).await;
        let kill = cluster
            .faults(2)
            .add(Step::BeforeStoreReceipt, Action::Kill);
        let receipt = raw::upload(&cluster.at(0), &name, &data).await.unwrap();
        assert!(kill.has_fired());
        assert_two_copies(&receipt);
        let holders = assert_committed(&cluster, &name, &data).await;
        assert_eq!(holders, [1, 3], "primary first, then the substitute");
        // The replica had its whole copy durable when it died; unlisted, it
        // is garbage, not a holder the catalog counts on.
        assert!(holds_every_chunk(&cluster, 2, &data));
        cluster.stop_server(2).await;
        cluster.stop_server(1).await;
        raw::assert_restores(&cluster.at(3), &name, &data).await;
        raw::assert_restores(&cluster.at(0), &name, &data).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_committed_while_a_replica_has_not_answered() {
    bounded(async {
        let cluster = cluster(3).await;
        let data = test_bytes(2 * CHUNK_SIZE + 9, 5);
        // client → 0 (primary) → 1 (replica); 2 is another entry.
        let name = placed(&cluster, &[0, 1], data.len()).await;
        let hold = cluster
            .faults(1)
            .add(Step::BeforeStoreReceipt, Action::Hold);
        let first = tokio::spawn({
            let (target, name, data) = (cluster.at(0), name.clone(), data.clone());
            async move { raw::upload(&target, &name, &data).await }
        });
        hold.fired().await;
        // Both copies are durable, but the replica has not answered: the
        // file is not in the catalog and its name is still taken.
        assert!(holds_every_chunk(&cluster, 0, &data));
        assert!(holds_every_chunk(&cluster, 1, &data));
        assert_absent(&cluster, &name, 2).await;
        let err = raw::upload(&cluster.at(2), &name, b"other")
            .await
            .expect_err("the name is being uploaded");
        assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
        hold.release();
        let receipt = first.await.unwrap().expect("the held upload completes");
        assert_eq!(receipt.copies, 2);
        let mut holders = assert_committed(&cluster, &name, &data).await;
        holders.sort();
        assert_eq!(holders, [0, 1]);
        raw::assert_restores(&cluster.at(2), &name, &data).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_replica_delays_the_receipt_and_loses_nothing() {
    bounded(async {
        let cluster = cluster(3).await;
        let data = test_bytes(CHUNK_SIZE + 1, 6);
        let name = placed(&cluster, &[1, 2], data.len()).await;
        let delay = Duration::from_millis(300);
        let slow = cluster
            .faults(2)
            .add(Step::BeforeStoreReceipt, Action::Delay(delay));
        let started = Instant::now();
        let receipt = raw::upload(&cluster.at(0), &name, &data).await.unwrap();
        assert!(slow.has_fired());
        // The receipt waited for the replica's answer.
        assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
        assert_eq!(receipt.copies, 2);
        assert_eq!(assert_committed(&cluster, &name, &data).await, [1, 2]);
        raw::assert_restores(&cluster.at(0), &name, &data).await;
    })
    .await;
}

// (3) On the entry, after every holder answered, before Manager/Commit.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_entry_failing_before_commit_commits_nothing_and_frees_the_name() {
    bounded(async {
        let cluster = cluster(3).await;
        let data = test_bytes(3 * CHUNK_SIZE + 11, 7);
        let name = placed(&cluster, &[1, 2], data.len()).await;
        let fail = cluster.faults(0).add(Step::BeforeCommit, Action::Fail);
        let err = raw::upload(&cluster.at(0), &name, &data)
            .await
            .expect_err("the entry failed before committing");
        assert!(fail.has_fired());
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(
            err.message().contains("before Manager/Commit"),
            "{}",
            err.message()
        );
        assert_absent(&cluster, &name, 1).await;
        assert_eq!(cluster.status().await.files, 0);
        // The entry sent Abort: the name is free at once.
        let receipt = raw::upload(&cluster.at(0), &name, &data).await.unwrap();
        assert_eq!(receipt.copies, 2);
        assert_eq!(assert_committed(&cluster, &name, &data).await, [1, 2]);
        raw::assert_restores(&cluster.at(0), &name, &data).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_entry_killed_before_commit_holds_the_name_until_it_is_suspect() {
    bounded(async {
        let mut cluster = cluster(3).await;
        let data = test_bytes(3 * CHUNK_SIZE + 13, 8);
        let name = placed(&cluster, &[1, 2], data.len()).await;
        let kill = cluster.faults(0).add(Step::BeforeCommit, Action::Kill);
        let err = raw::upload(&cluster.at(0), &name, &data)
            .await
            .expect_err("the entry died");
        assert!(kill.has_fired());
        assert_connection_lost(&err);
        // Both holders have durable copies, but nothing was committed.
        assert!(holds_every_chunk(&cluster, 1, &data));
        assert!(holds_every_chunk(&cluster, 2, &data));
        assert_absent(&cluster, &name, 1).await;
        cluster.stop_server(0).await;
        // Nobody sent Abort: the name stays taken while the dead entry is
        // up in the manager's eyes, and is taken over once it is not.
        match raw::upload(&cluster.at(1), &name, &data).await {
            Err(err) => {
                assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
                wait_not_up(&cluster, 0).await;
                raw::upload(&cluster.at(1), &name, &data).await.unwrap();
            }
            // Only when the manager already counted the entry out.
            Ok(_) => eprintln!("the dead entry was already not up"),
        }
        assert_eq!(assert_committed(&cluster, &name, &data).await, [1, 2]);
        raw::assert_restores(&cluster.at(2), &name, &data).await;
    })
    .await;
}

// (4) Connections dropped after N bytes.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_connection_dropped_mid_upload_commits_nothing_and_the_upload_resumes() {
    bounded(async {
        let cluster = cluster(3).await;
        let data = test_bytes(24 * CHUNK_SIZE + 17, 9);
        // client → 0 (primary) → 1 (replica).
        let name = placed(&cluster, &[0, 1], data.len()).await;
        let cut = 20 * CHUNK_SIZE as u64 + 100;
        let drop = cluster
            .faults(0)
            .add(Step::ClientStream, Action::DropAfterBytes(cut));
        let err = raw::upload(&cluster.at(0), &name, &data)
            .await
            .expect_err("the client's connection dropped");
        assert!(drop.has_fired());
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(
            err.message()
                .contains(&format!("dropped after {} bytes", 20 * CHUNK_SIZE)),
            "{}",
            err.message()
        );
        assert_absent(&cluster, &name, 2).await;
        wait_unstaged(&cluster, 0).await;
        wait_unstaged(&cluster, 1).await;
        // The first batch of 16 chunks is durable on both holders: a
        // resumed upload sends only the rest.
        let held = raw::held_chunks(&cluster.at(2), &name, &data).await;
        assert!((16..=20).contains(&held), "held {held}");
        let receipt = raw::upload_raw(&cluster.at(0), raw::resumed_messages(&name, &data, held))
            .await
            .expect("the resumed upload completes");
        assert_eq!(receipt.copies, 2);
        assert_eq!(assert_committed(&cluster, &name, &data).await, [0, 1]);
        raw::assert_restores(&cluster.at(2), &name, &data).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_entry_to_primary_connection_dropped_mid_upload_commits_nothing() {
    bounded(async {
        let cluster = cluster(3).await;
        let data = test_bytes(6 * CHUNK_SIZE + 19, 10);
        // client → 0 (forwards only) → 1 (primary) → 2 (replica).
        let name = placed(&cluster, &[1, 2], data.len()).await;
        let cut = 2 * CHUNK_SIZE as u64 + CHUNK_SIZE as u64 / 2;
        let drop = cluster
            .faults(0)
            .add(Step::Forward, Action::DropAfterBytes(cut));
        let err = raw::upload(&cluster.at(0), &name, &data)
            .await
            .expect_err("the link to the primary dropped");
        assert!(drop.has_fired());
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(
            err.message().contains(&cluster.server_addr(1))
                && err
                    .message()
                    .contains(&format!("dropped after {} bytes", 2 * CHUNK_SIZE)),
            "the error names the primary and the cut: {}",
            err.message()
        );
        assert_absent(&cluster, &name, 2).await;
        // The primary saw its stream reset, the replica its stream end:
        // both deleted what they had staged.
        wait_unstaged(&cluster, 1).await;
        wait_unstaged(&cluster, 2).await;
        // The entry sent Abort: the name is free at once.
        let receipt = raw::upload(&cluster.at(0), &name, &data).await.unwrap();
        assert_eq!(receipt.copies, 2);
        assert_eq!(assert_committed(&cluster, &name, &data).await, [1, 2]);
        raw::assert_restores(&cluster.at(0), &name, &data).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_to_replica_connection_dropped_mid_upload_gets_a_substitute() {
    bounded(async {
        let cluster = cluster(3).await;
        let data = test_bytes(6 * CHUNK_SIZE + 21, 11);
        // client → 0 (primary) → 1 (replica); 2 is the fallback.
        let name = placed(&cluster, &[0, 1, 2], data.len()).await;
        let drop = cluster
            .faults(0)
            .add(Step::Forward, Action::DropAfterBytes(3 * CHUNK_SIZE as u64));
        let receipt = raw::upload(&cluster.at(0), &name, &data).await.unwrap();
        assert!(drop.has_fired());
        assert_two_copies(&receipt);
        let mut holders = assert_committed(&cluster, &name, &data).await;
        holders.sort();
        assert_eq!(holders, [0, 2]);
        wait_unstaged(&cluster, 1).await;
        raw::assert_restores(&cluster.at(1), &name, &data).await;
    })
    .await;
}

// A forwarding entry killed while chunks flow (held on the primary).

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarding_entry_killed_mid_stream_commits_nothing() {
    bounded(async {
        let mut cluster = cluster(3).await;
        let data = test_bytes(20 * CHUNK_SIZE + 23, 12);
        // client → 0 (forwards only) → 1 (primary) → 2 (replica).
        let name = placed(&cluster, &[1, 2], data.len()).await;
        let hold = cluster
            .faults(1)
            .add(Step::AfterWrite { chunk: 5 }, Action::Hold);
        let upload = tokio::spawn({
            let (target, name, data) = (cluster.at(0), name.clone(), data.clone());
            async move { raw::upload(&target, &name, &data).await }
        });
        hold.fired().await;
        cluster.faults(0).kill();
        hold.release();
        let err = upload.await.unwrap().expect_err("the entry died");
        assert_connection_lost(&err);
        wait_unstaged(&cluster, 1).await;
        wait_unstaged(&cluster, 2).await;
        assert_absent(&cluster, &name, 1).await;
        cluster.stop_server(0).await;
        wait_not_up(&cluster, 0).await;
        raw::upload(&cluster.at(1), &name, &data).await.unwrap();
        assert_eq!(assert_committed(&cluster, &name, &data).await, [1, 2]);
        raw::assert_restores(&cluster.at(2), &name, &data).await;
    })
    .await;
}
