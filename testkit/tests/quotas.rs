//! Quotas: an admin sets a user's bytes and file versions; Place refuses
//! an upload that would go past them with RESOURCE_EXHAUSTED, and only an
//! admin may set one.

use dupla::chunk::CHUNK_SIZE;
use dupla::v1::{GetQuotaRequest, SetQuotaRequest};
use dupla_testkit::chat::authed;
use dupla_testkit::raw::{self, Target};
use dupla_testkit::{bounded, test_bytes, TestCluster};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_past_the_quota_is_refused_and_only_an_admin_sets_one() {
    bounded(async {
        let mut cluster = TestCluster::start(2).await;
        cluster.grant_admin(dupla_testkit::cluster::TEST_USER).await;
        let bob = cluster.new_user("bob").await;
        let as_bob = Target::new(cluster.server_addr(0), &bob);
        let mut manager = cluster.manager_client().await;
        // Bob is no admin.
        let refused = manager
            .set_quota(authed(
                &bob,
                SetQuotaRequest {
                    login: "bob".into(),
                    bytes: 0,
                    files: 0,
                    reset: false,
                },
            ))
            .await
            .expect_err("a user sets no quota");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        // The admin (granted by the operator) gives bob 3 chunks and 2 versions.
        let quota = manager
            .set_quota(cluster.as_user(SetQuotaRequest {
                login: "bob".into(),
                bytes: 3 * CHUNK_SIZE as u64,
                files: 2,
                reset: false,
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(quota.custom);
        raw::upload(&as_bob, "a.bin", &test_bytes(2 * CHUNK_SIZE, 41))
            .await
            .expect("within the quota");
        let over = raw::upload(&as_bob, "b.bin", &test_bytes(2 * CHUNK_SIZE, 42))
            .await
            .expect_err("past the byte quota");
        assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
        assert!(over.message().contains("quota"), "{over:?}");
        // Replacing a.bin frees its old version: allowed.
        raw::upload(&as_bob, "a.bin", &test_bytes(3 * CHUNK_SIZE, 43))
            .await
            .expect("a new version within the quota");
        raw::upload(&as_bob, "c.bin", b"tiny")
            .await
            .expect_err("past the byte quota again");
        let usage = manager
            .get_quota(authed(&bob, GetQuotaRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (usage.used_files, usage.used_bytes),
            (1, 3 * CHUNK_SIZE as u64)
        );
        // Back to the default (unlimited).
        manager
            .set_quota(cluster.as_user(SetQuotaRequest {
                login: "bob".into(),
                reset: true,
                ..Default::default()
            }))
            .await
            .unwrap();
        raw::upload(&as_bob, "c.bin", b"tiny").await.unwrap();
        // Another user's usage is the admin's business only.
        let hidden = manager
            .get_quota(authed(
                &bob,
                GetQuotaRequest {
                    login: "tester".into(),
                },
            ))
            .await
            .expect_err("bob reads no one else's quota");
        assert_eq!(hidden.code(), Code::PermissionDenied);
    })
    .await;
}

/// `dupla quota` as the client library runs it: an admin changes one limit
/// and keeps the other; the user sees the quota against their usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_client_sets_one_limit_and_keeps_the_other() {
    bounded(async {
        let mut cluster = TestCluster::start(2).await;
        cluster.grant_admin(dupla_testkit::cluster::TEST_USER).await;
        let bob = cluster.new_user("bob").await;
        let admin = dupla_client::Client::new(cluster.manager_addr(), None)
            .with_token(cluster.token.clone());
        let as_bob =
            dupla_client::Client::new(cluster.manager_addr(), None).with_token(bob.clone());
        admin
            .set_quota("bob", Some(10 << 20), Some(7), false)
            .await
            .unwrap();
        let after = admin
            .set_quota("bob", Some(20 << 20), None, false)
            .await
            .unwrap();
        assert_eq!((after.quota_bytes, after.quota_files), (20 << 20, 7));
        raw::upload(
            &Target::new(cluster.server_addr(0), &bob),
            "a.bin",
            b"hello",
        )
        .await
        .unwrap();
        let mine = as_bob.quota("").await.unwrap();
        assert_eq!(
            (
                mine.login.as_str(),
                mine.used_files,
                mine.used_bytes,
                mine.quota_bytes,
                mine.custom
            ),
            ("bob", 1, 5, 20 << 20, true)
        );
        let refused = as_bob
            .set_quota("bob", Some(1 << 40), None, false)
            .await
            .expect_err("bob raises no quota");
        assert!(refused.to_string().contains("admin"), "{refused}");
    })
    .await;
}
