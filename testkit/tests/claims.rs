//! Claims by hash (a resumed upload's first chunks, chunks sent by
//! reference) reach only what is really the caller's: never the chunks of a
//! removed file, of a deleted account or of another user's unfinished
//! upload, and an account's deletion aborts its open uploads. These fail on
//! a manager that allowed any chunk no live file uses.

use dupla::chunk::CHUNK_SIZE;
use dupla::rpc::Secret;
use dupla::v1::accounts_client::AccountsClient;
use dupla::v1::{
    CommitRequest, FileEntry, Node, PlaceReply, PlaceRequest, RemoveRequest, UnregisterRequest,
};
use dupla::Hash;
use dupla_testkit::chat::authed;
use dupla_testkit::cluster::TEST_SECRET;
use dupla_testkit::raw::{self, Target};
use dupla_testkit::{bounded, test_bytes, TestCluster};
use tonic::{Code, Status};

fn chunk_hashes(data: &[u8]) -> Vec<Hash> {
    data.chunks(CHUNK_SIZE).map(Hash::of).collect()
}

/// `Manager/Place` as the entry server does it, for the user of `token`,
/// claiming `resume` as already sent.
async fn place(
    cluster: &TestCluster,
    token: &str,
    name: &str,
    size: u64,
    resume: &[Hash],
) -> Result<PlaceReply, Status> {
    let mut request = authed(
        token,
        PlaceRequest {
            name: name.into(),
            size,
            entry_id: cluster.servers[0].id.clone(),
            preview: false,
            takeover: true,
            resume_chunks: resume.iter().map(Hash::to_bytes).collect(),
            held_chunks: Vec::new(),
        },
    );
    Secret::new(TEST_SECRET).unwrap().attach(&mut request);
    cluster
        .manager_client()
        .await
        .place(request)
        .await
        .map(|r| r.into_inner())
}

/// A refusal that names no chunk hash (the caller may not have sent it).
fn assert_refused_without_hashes(result: Result<PlaceReply, Status>, hashes: &[Hash]) {
    let status = result.expect_err("the claim must be refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    for hash in hashes {
        assert!(
            !status.message().contains(&hash.to_hex()),
            "the message reveals a hash: {status:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunks_of_a_removed_file_cannot_be_claimed_by_another_user() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let alice = cluster.new_user("alice").await;
        let bob = cluster.new_user("bob").await;
        let data = test_bytes(3 * CHUNK_SIZE + 5, 31);
        let hashes = chunk_hashes(&data);
        raw::upload(
            &Target::new(cluster.server_addr(0), &alice),
            "secret.bin",
            &data,
        )
        .await
        .unwrap();
        cluster
            .manager_client()
            .await
            .remove(authed(
                &alice,
                RemoveRequest {
                    name: "secret.bin".into(),
                },
            ))
            .await
            .unwrap();
        // Still on the servers until garbage collection: a hash must not
        // hand them to bob.
        let result = place(&cluster, &bob, "mine.bin", data.len() as u64, &hashes).await;
        assert_refused_without_hashes(result, &hashes);
        // Alice's own new upload of the same bytes is hers again.
        raw::upload(
            &Target::new(cluster.server_addr(1), &alice),
            "again.bin",
            &data,
        )
        .await
        .unwrap();
        place(&cluster, &alice, "third.bin", data.len() as u64, &hashes)
            .await
            .expect("alice claims chunks her own file uses");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunks_of_another_users_unfinished_upload_cannot_be_claimed() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let alice = cluster.new_user("alice").await;
        let bob = cluster.new_user("bob").await;
        let data = test_bytes(24 * CHUNK_SIZE, 33);
        let hashes = chunk_hashes(&data);
        // Alice's upload is cut off once 16 chunks reached both servers:
        // they stay there, in no file, until garbage collection.
        let as_alice = Target::new(cluster.server_addr(0), &alice);
        raw::interrupted_upload(&cluster, &as_alice, "draft.bin", &data, 20, 16).await;
        let held = raw::held_chunks(&as_alice, "draft.bin", &data).await;
        assert!(held >= 16, "{held} chunks held");
        let sent = &hashes[..held];
        let result = place(&cluster, &bob, "draft.bin", data.len() as u64, sent).await;
        assert_refused_without_hashes(result, sent);
        // Alice sent those bytes: she resumes where she stopped, through
        // the whole write path.
        let placed = place(&cluster, &alice, "draft.bin", data.len() as u64, sent)
            .await
            .expect("alice claims the chunks she sent");
        assert_eq!(placed.resumable_chunks, held as u64);
        raw::upload_raw(&as_alice, raw::resumed_messages("draft.bin", &data, held))
            .await
            .expect("the resumed upload finishes");
        raw::assert_restores(&as_alice, "draft.bin", &data).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunks_of_a_deleted_account_cannot_be_claimed() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let alice = cluster.new_user("alice").await;
        let bob = cluster.new_user("bob").await;
        let data = test_bytes(2 * CHUNK_SIZE + 1, 32);
        let hashes = chunk_hashes(&data);
        raw::upload(
            &Target::new(cluster.server_addr(0), &alice),
            "diary.txt",
            &data,
        )
        .await
        .unwrap();
        delete_account(&cluster, &alice).await;
        let result = place(&cluster, &bob, "diary.txt", data.len() as u64, &hashes).await;
        assert_refused_without_hashes(result, &hashes);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_an_account_aborts_its_open_uploads() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let alice = cluster.new_user("alice").await;
        let placed = place(&cluster, &alice, "open.bin", 3, &[]).await.unwrap();
        delete_account(&cluster, &alice).await;
        let node = |i: usize| Node {
            id: cluster.servers[i].id.clone(),
            addr: cluster.server_addr(i),
        };
        let entry = FileEntry {
            name: "open.bin".into(),
            size: 3,
            blake3: Hash::of(b"abc").to_bytes(),
            chunks: vec![Hash::of(b"abc").to_bytes()],
            chunk_size: CHUNK_SIZE as u32,
            holders: vec![node(0), node(1)],
            committed_unix_ms: 0,
            version: 0,
            chunk_lengths: Vec::new(),
            lost: false,
        };
        let result = cluster
            .manager_client()
            .await
            .commit(Secret::new(TEST_SECRET).unwrap().request(CommitRequest {
                upload_id: placed.upload_id,
                entry: Some(entry),
            }))
            .await;
        let status = result.expect_err("a deleted account's upload never commits");
        assert_eq!(status.code(), Code::Aborted, "{status:?}");
        assert_eq!(cluster.status().await.files, 0);
    })
    .await;
}

/// The owner of `token` deletes their own account (`Unregister`, with the
/// password asked again), as `dupla unregister` does.
async fn delete_account(cluster: &TestCluster, token: &str) {
    AccountsClient::new(dupla::rpc::connect(&cluster.manager_addr()).await.unwrap())
        .unregister(authed(
            token,
            UnregisterRequest {
                password: dupla_testkit::chat::TEST_PASSWORD.into(),
            },
        ))
        .await
        .expect("the owner deletes the account");
}
