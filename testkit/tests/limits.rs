//! Bounded before authenticated: a call that fails the cluster-secret or
//! token check is refused on its headers, before the manager reads its
//! body, and calls that need neither may send only a small body. The
//! bodies here never end: a manager that read them before deciding would
//! never answer (and the test would time out).

use dupla::v1::{ClusterStatusReply, CommitRequest, FileEntry, LookupRequest};
use dupla_testkit::bounded;
use dupla_testkit::chat::LoneManager;
use tokio_stream::StreamExt;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Request, Status};

/// Bytes of the oversized messages: far above any client call's limit,
/// under the manager's 64 MiB catalog limit.
const BIG: usize = 8 << 20;

/// A lookup of an 8 MiB name.
fn big() -> LookupRequest {
    LookupRequest {
        name: "x".repeat(BIG),
        ..LookupRequest::default()
    }
}

/// Call `path` on the manager at `addr` with `message` as the first message
/// of a request body that never ends; what the manager answers.
async fn call_without_end<T, R>(addr: &str, path: &'static str, message: T) -> Result<R, Status>
where
    T: prost::Message + Send + Sync + 'static,
    R: prost::Message + Default + Send + Sync + 'static,
{
    let channel = dupla::rpc::connect(addr).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let body = tokio_stream::iter([message]).chain(tokio_stream::pending());
    grpc.client_streaming(
        Request::new(body),
        PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::<T, R>::default(),
    )
    .await
    .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_without_the_secret_or_a_token_are_refused_before_their_body() {
    bounded(async {
        let manager = LoneManager::start().await;
        let addr = manager.addr();
        let commit = CommitRequest {
            upload_id: "u".into(),
            entry: Some(FileEntry {
                name: "big".into(),
                chunks: vec![bytes::Bytes::from_static(&[7u8; 32]); BIG / 32],
                ..FileEntry::default()
            }),
        };
        let status = call_without_end::<_, dupla::v1::CommitReply>(
            &addr,
            "/dupla.v1.Manager/Commit",
            commit,
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("cluster secret"), "{status:?}");

        let status = call_without_end::<_, FileEntry>(&addr, "/dupla.v1.Manager/Lookup", big())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anonymous_calls_may_send_only_a_small_body() {
    bounded(async {
        let manager = LoneManager::start().await;
        let addr = manager.addr();
        // A status request padded with 8 MiB of a field it does not have
        // (decoders skip unknown fields): cut off, not read to the end.
        let padded = big();
        let status = call_without_end::<_, ClusterStatusReply>(
            &addr,
            "/dupla.v1.Manager/ClusterStatus",
            padded.clone(),
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        // Logins and registrations too.
        let status =
            call_without_end::<_, dupla::v1::LoginReply>(&addr, "/dupla.v1.Accounts/Login", padded)
                .await
                .unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_may_start_one_scrub_per_server_now_and_then() {
    bounded(async {
        let cluster = dupla_testkit::TestCluster::start(1).await;
        let target = cluster.at(0);
        let mut storage = dupla_testkit::raw::storage(&target).await;
        let first = storage
            .scrub(target.request(dupla::v1::ScrubRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert!(first.corrupt.is_empty());
        let status = storage
            .scrub(target.request(dupla::v1::ScrubRequest {}))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("try again in"), "{status:?}");
        // Another user is not affected.
        let other = cluster.new_user("other").await;
        let as_other = dupla_testkit::raw::Target::new(cluster.server_addr(0), &other);
        storage
            .scrub(as_other.request(dupla::v1::ScrubRequest {}))
            .await
            .unwrap();
    })
    .await;
}
