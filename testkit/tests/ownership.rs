//! Backups belong to their owner: each user sees, restores and removes only
//! their own files; calls without a token are refused; unregistering takes
//! the files with the account; a catalog from before accounts is adopted.

use dupla::kv::{Kv, SledKv};
use dupla::v1::{
    DownloadRequest, ListRequest, LookupRequest, RemoveRequest, ScrubRequest, UnregisterRequest,
    UploadRequest,
};
use dupla_testkit::chat::{accounts, authed, TEST_PASSWORD};
use dupla_testkit::raw::{self, Target};
use dupla_testkit::{bounded, test_bytes, TestCluster};
use tonic::{Code, Request};

fn assert_code<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {status:?}");
}

/// Names in `token`'s listing.
async fn listing(cluster: &TestCluster, token: &str) -> Vec<String> {
    cluster
        .files_of(token)
        .await
        .into_iter()
        .map(|f| f.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_see_restore_and_remove_only_their_own_files() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let alice = cluster.new_user("alice").await;
        let bob = cluster.new_user("bob").await;
        let as_alice = Target::new(cluster.server_addr(0), &alice);
        let as_bob = Target::new(cluster.server_addr(1), &bob);
        let alices = test_bytes(3 << 20, 1);
        let bobs = test_bytes(1000, 2);

        // Both may have notes.txt: two different files.
        raw::upload(&as_alice, "notes.txt", &alices).await.unwrap();
        raw::upload(&as_alice, "diary.txt", b"secret")
            .await
            .unwrap();
        raw::upload(&as_bob, "notes.txt", &bobs).await.unwrap();
        raw::assert_restores(&as_alice, "notes.txt", &alices).await;
        raw::assert_restores(&as_bob, "notes.txt", &bobs).await;
        assert_eq!(listing(&cluster, &alice).await, ["diary.txt", "notes.txt"]);
        assert_eq!(listing(&cluster, &bob).await, ["notes.txt"]);

        // Bob cannot see, restore or delete alice's diary, through any server.
        for i in 0..2 {
            let target = Target::new(cluster.server_addr(i), &bob);
            assert_code(
                raw::download(&target, "diary.txt").await,
                Code::NotFound,
                "bob restores alice's file",
            );
        }
        let mut manager = cluster.manager_client().await;
        assert_code(
            manager
                .lookup(authed(
                    &bob,
                    LookupRequest {
                        name: "diary.txt".into(),
                        version: 0,
                    },
                ))
                .await,
            Code::NotFound,
            "bob looks up alice's file",
        );
        assert_code(
            manager
                .remove(authed(
                    &bob,
                    RemoveRequest {
                        name: "diary.txt".into(),
                    },
                ))
                .await,
            Code::NotFound,
            "bob removes alice's file",
        );
        // Removing his own notes.txt leaves alice's alone.
        manager
            .remove(authed(
                &bob,
                RemoveRequest {
                    name: "notes.txt".into(),
                },
            ))
            .await
            .unwrap();
        raw::assert_restores(&as_alice, "notes.txt", &alices).await;
        raw::assert_restores(&as_alice, "diary.txt", b"secret").await;
        assert!(listing(&cluster, &bob).await.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storage_and_catalog_calls_without_a_valid_token_are_unauthenticated() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        raw::upload(&cluster.at(0), "mine.txt", b"mine")
            .await
            .unwrap();
        for token in [None, Some("00ff".to_string())] {
            let target = Target {
                addr: cluster.server_addr(0),
                token: token.clone(),
            };
            assert_code(
                raw::upload(&target, "x.txt", b"x").await,
                Code::Unauthenticated,
                "upload without a valid token",
            );
            assert_code(
                raw::download(&target, "mine.txt").await,
                Code::Unauthenticated,
                "download without a valid token",
            );
            let request = |message| match &token {
                Some(t) => authed(t, message),
                None => Request::new(message),
            };
            let mut manager = cluster.manager_client().await;
            assert_code(
                manager.list(request(ListRequest::default())).await,
                Code::Unauthenticated,
                "list",
            );
            let lookup = LookupRequest {
                name: "mine.txt".into(),
                version: 0,
            };
            assert_code(
                manager
                    .lookup(match &token {
                        Some(t) => authed(t, lookup),
                        None => Request::new(lookup),
                    })
                    .await,
                Code::Unauthenticated,
                "lookup",
            );
        }
        // The refused upload left nothing; the owner's file is intact.
        assert_eq!(listing(&cluster, &cluster.token).await, ["mine.txt"]);
        raw::assert_restores(&cluster.at(1), "mine.txt", b"mine").await;
        // An unauthenticated stream is refused before any chunk is read.
        let mut storage = raw::storage(&Target::anonymous(cluster.server_addr(0))).await;
        let empty = tokio_stream::iter(Vec::<UploadRequest>::new());
        assert_code(storage.upload(empty).await, Code::Unauthenticated, "bare");
        assert_code(
            storage.download(DownloadRequest::default()).await,
            Code::Unauthenticated,
            "bare download",
        );
        // A scrub pass runs unthrottled: only for the cluster or a user.
        assert_code(
            storage.scrub(ScrubRequest {}).await,
            Code::Unauthenticated,
            "scrub without a token",
        );
        let bad = Target::new(cluster.server_addr(0), "00ff");
        assert_code(
            raw::storage(&bad)
                .await
                .scrub(bad.request(ScrubRequest {}))
                .await,
            Code::Unauthenticated,
            "scrub with an unknown token",
        );
        let report = raw::storage(&cluster.at(0))
            .await
            .scrub(cluster.at(0).request(ScrubRequest {}))
            .await
            .expect("a user may scrub");
        assert!(report.into_inner().checked >= 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unregistering_deletes_the_users_files() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let carol = cluster.new_user("carol").await;
        let as_carol = Target::new(cluster.server_addr(0), &carol);
        raw::upload(&as_carol, "a.txt", b"a").await.unwrap();
        raw::upload(&as_carol, "b.txt", b"b").await.unwrap();
        raw::upload(&cluster.at(0), "a.txt", b"tester's")
            .await
            .unwrap();
        let files_before = cluster.status().await.files;
        accounts(&cluster.manager_addr())
            .await
            .unregister(authed(
                &carol,
                UnregisterRequest {
                    password: TEST_PASSWORD.into(),
                },
            ))
            .await
            .unwrap();
        assert_eq!(cluster.status().await.files, files_before - 2);
        // A new account with the same login starts empty.
        let again = cluster.new_user("carol").await;
        assert!(listing(&cluster, &again).await.is_empty());
        raw::assert_restores(&cluster.at(1), "a.txt", b"tester's").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_catalog_from_before_accounts_is_adopted_by_an_explicit_operator_step() {
    bounded(async {
        let mut cluster = TestCluster::start(2).await;
        let data = test_bytes((1 << 20) + 5, 9);
        raw::upload(&cluster.at(0), "old/photo.jpg", &data)
            .await
            .unwrap();
        // Turn the catalog back into the pre-accounts layout: records keyed
        // by name alone, without an owner, in the tree `files` (from the
        // unversioned and the versioned trees alike).
        cluster.stop_manager().await;
        {
            let kv = SledKv::open(&cluster.manager.data.join("db")).unwrap();
            let records = ["owned_files", "file_versions"]
                .into_iter()
                .flat_map(|tree| {
                    kv.scan_prefix(tree, b"")
                        .unwrap()
                        .into_iter()
                        .map(move |kv| (tree, kv))
                });
            for (tree, (key, value)) in records.collect::<Vec<_>>() {
                let mut record: serde_json::Value = serde_json::from_slice(&value).unwrap();
                let name = record["name"].as_str().unwrap().to_string();
                record.as_object_mut().unwrap().remove("owner");
                kv.put(
                    "files",
                    name.as_bytes(),
                    &serde_json::to_vec(&record).unwrap(),
                )
                .unwrap();
                kv.delete(tree, &key).unwrap();
            }
            kv.flush().unwrap();
        }
        // Starting the manager gives the old files to nobody...
        cluster.start_manager_again().await;
        cluster.wait_for_up(2).await;
        assert!(listing(&cluster, &cluster.token).await.is_empty());
        // ...until the operator says whose they are.
        cluster.stop_manager().await;
        let config = dupla_manager::Config::for_test(
            cluster.manager.data.clone(),
            dupla_testkit::cluster::TEST_SECRET,
        );
        assert_eq!(
            dupla_manager::identity::admin::adopt_legacy(&config, "tester").unwrap(),
            1
        );
        cluster.start_manager_again().await;
        cluster.wait_for_up(2).await;
        assert_eq!(listing(&cluster, &cluster.token).await, ["old/photo.jpg"]);
        raw::assert_restores(&cluster.at(1), "old/photo.jpg", &data).await;
    })
    .await;
}
