//! The manager checks the names users send before it looks them up: a name
//! no upload could have stored (`../etc/passwd`, 5 MB long) is a bad
//! request, not a missing file, and no error message sends back more than
//! a bounded piece of what the caller sent (a status message travels whole
//! in the `grpc-message` trailer).

use dupla::v1::manager_client::ManagerClient;
use dupla::v1::snapshots_client::SnapshotsClient;
use dupla::v1::{LookupRequest, RemoveRequest, SnapshotEntriesRequest, VersionsRequest};
use dupla_testkit::chat::{authed, LoneManager};
use dupla_testkit::{bounded, chat};
use tonic::{Code, Status};

/// The longest message any refusal below may have: a valid name (1024
/// bytes) quoted with some words around it.
const MAX_MESSAGE_BYTES: usize = 2048;

/// Names no upload could have stored, the last one 5 MB long.
fn bad_names() -> Vec<String> {
    vec![
        "../etc/passwd".into(),
        "/etc/passwd".into(),
        "a//b".into(),
        "a/./b".into(),
        "x".repeat(5 << 20),
    ]
}

/// `status` has `code` and a bounded message.
fn assert_refused(what: &str, status: Status, code: Code) {
    let shown = status.message().chars().take(200).collect::<String>();
    assert_eq!(status.code(), code, "{what}: {shown}");
    assert!(
        status.message().len() <= MAX_MESSAGE_BYTES,
        "{what}: a {}-byte message: {shown}…",
        status.message().len()
    );
}

async fn manager(addr: &str) -> ManagerClient<tonic::transport::Channel> {
    ManagerClient::new(dupla::rpc::connect(addr).await.unwrap())
        .max_decoding_message_size(dupla::rpc::MAX_CATALOG_MESSAGE_BYTES)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_and_remove_refuse_names_no_upload_could_store() {
    bounded(async {
        let lone = LoneManager::start().await;
        let token = chat::user(&lone.addr(), "namer").await;
        let mut manager = manager(&lone.addr()).await;
        for name in bad_names() {
            let what = format!("{:?}", name.chars().take(20).collect::<String>());
            for version in [0, 3] {
                let status = manager
                    .lookup(authed(
                        &token,
                        LookupRequest {
                            name: name.clone(),
                            version,
                        },
                    ))
                    .await
                    .unwrap_err();
                assert_refused(
                    &format!("lookup {what} v{version}"),
                    status,
                    Code::InvalidArgument,
                );
            }
            let status = manager
                .remove(authed(&token, RemoveRequest { name: name.clone() }))
                .await
                .unwrap_err();
            assert_refused(&format!("remove {what}"), status, Code::InvalidArgument);
        }
        // A name that could exist is still simply not found, and named.
        let status = manager
            .lookup(authed(
                &token,
                LookupRequest {
                    name: "docs/missing.txt".into(),
                    version: 0,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(status.message().contains("docs/missing.txt"), "{status:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_calls_quote_at_most_a_bounded_part_of_what_they_were_sent() {
    bounded(async {
        let lone = LoneManager::start().await;
        let token = chat::user(&lone.addr(), "namer").await;
        let mut snapshots = SnapshotsClient::new(dupla::rpc::connect(&lone.addr()).await.unwrap());
        for path in bad_names() {
            let status = snapshots
                .versions(authed(&token, VersionsRequest { path }))
                .await
                .unwrap_err();
            assert_refused("versions", status, Code::InvalidArgument);
        }
        // A snapshot id is not a name: unknown, whatever its length.
        let status = snapshots
            .entries(authed(
                &token,
                SnapshotEntriesRequest {
                    id: "7".repeat(5 << 20),
                    prefix: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_refused("entries of a 5 MB id", status, Code::NotFound);
    })
    .await;
}
