//! The last admin account stays: demoting it, deleting it or letting it
//! unregister is refused (`FAILED_PRECONDITION`, HTTP 409), since only an
//! operator with the manager stopped could make a new admin.

use dupla::v1::{DeleteUserRequest, SetRoleRequest, UnregisterRequest, WhoAmIRequest};
use dupla_testkit::chat::{accounts, authed, login, user, LoneManager, TEST_PASSWORD};
use dupla_testkit::cluster::TEST_USER;
use dupla_testkit::{bounded, TestCluster};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tonic::{Code, Status};

fn assert_last_admin(result: Result<impl std::fmt::Debug, Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{what}: {status:?}"
    );
    assert!(
        status.message().contains("last admin"),
        "{what}: {:?}",
        status.message()
    );
}

fn set_role(token: &str, login: &str, role: &str) -> tonic::Request<SetRoleRequest> {
    authed(
        token,
        SetRoleRequest {
            login: login.into(),
            role: role.into(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_admin_cannot_demote_delete_or_unregister_itself() {
    bounded(async {
        let manager = LoneManager::start_with(|c| {
            dupla_manager::identity::admin::create(c, "carol", TEST_PASSWORD).unwrap();
        })
        .await;
        let addr = manager.addr();
        let alice = user(&addr, "alice").await;
        let carol = login(&addr, "carol").await.unwrap().token;
        let mut client = accounts(&addr).await;

        for role in ["user", "viewer"] {
            assert_last_admin(client.set_role(set_role(&carol, "carol", role)).await, role);
        }
        assert_last_admin(
            client
                .delete_user(authed(
                    &carol,
                    DeleteUserRequest {
                        login: "carol".into(),
                    },
                ))
                .await,
            "delete",
        );
        assert_last_admin(
            client
                .unregister(authed(
                    &carol,
                    UnregisterRequest {
                        password: TEST_PASSWORD.into(),
                    },
                ))
                .await,
            "unregister",
        );
        let me = client
            .who_am_i(authed(&carol, WhoAmIRequest {}))
            .await
            .expect("carol's account and token survive")
            .into_inner()
            .user
            .unwrap();
        assert!(me.admin, "{me:?}");

        // With alice an admin too, carol may step down; then alice is the last.
        let promoted = client
            .set_role(set_role(&carol, "alice", "admin"))
            .await
            .unwrap()
            .into_inner();
        assert!(promoted.admin);
        let demoted = client
            .set_role(set_role(&carol, "carol", "user"))
            .await
            .unwrap()
            .into_inner();
        assert!(!demoted.admin);
        assert_last_admin(
            client.set_role(set_role(&alice, "alice", "viewer")).await,
            "alice demoting herself",
        );
        assert_last_admin(
            client
                .delete_user(authed(
                    &alice,
                    DeleteUserRequest {
                        login: "alice".into(),
                    },
                ))
                .await,
            "alice deleting herself",
        );
        // Deleting someone else who is no admin is as before.
        client
            .delete_user(authed(
                &alice,
                DeleteUserRequest {
                    login: "carol".into(),
                },
            ))
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_http_the_last_admin_is_refused_with_409() {
    bounded(async {
        let mut cluster = TestCluster::start(1).await;
        cluster.grant_admin(TEST_USER).await;
        let base = cluster.manager_http();
        let token = cluster.token.clone();
        let http = Client::new();

        let demote = http
            .put(format!("{base}/api/users/{TEST_USER}/role"))
            .bearer_auth(&token)
            .json(&json!({"role": "user"}))
            .send()
            .await
            .unwrap();
        assert_eq!(demote.status(), StatusCode::CONFLICT);
        let body: Value = demote.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains("last admin"),
            "{body}"
        );
        let delete = http
            .delete(format!("{base}/api/users/{TEST_USER}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(delete.status(), StatusCode::CONFLICT);

        // Still an admin: listing users works.
        let users = http
            .get(format!("{base}/api/users"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert!(users.status().is_success(), "{}", users.status());
    })
    .await;
}
