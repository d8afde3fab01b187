//! Bad input gets a clear status and leaves nothing in the catalog.

use bytes::Bytes;
use dupla::chunk::CHUNK_SIZE;
use dupla::v1::{upload_request, StoreRequest, UploadRequest};
use dupla_testkit::{bounded, raw, test_bytes, TestCluster};
use tonic::Code;

async fn assert_not_in_catalog(cluster: &TestCluster, name: &str) {
    let err = cluster.lookup(name).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "{name} must not be in the catalog"
    );
    assert_eq!(cluster.status().await.files, 0);
}

fn chunk_message(messages: &mut [UploadRequest], i: usize) -> &mut dupla::v1::Chunk {
    match messages[i].msg.as_mut() {
        Some(upload_request::Msg::Chunk(c)) => c,
        _ => panic!("message {i} is not a chunk"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunk_whose_hash_does_not_match_is_refused() {
    bounded(async {
        let cluster = TestCluster::start(3).await;
        let data = test_bytes(2 * CHUNK_SIZE, 1);
        let mut messages = raw::upload_messages("tampered.bin", &data);
        let chunk = chunk_message(&mut messages, 2);
        let mut bytes = chunk.data.to_vec();
        bytes[0] ^= 1;
        chunk.data = Bytes::from(bytes);
        let err = raw::upload_raw(&cluster.at(0), messages).await.unwrap_err();
        assert_eq!(err.code(), Code::DataLoss, "{err:?}");
        assert_not_in_catalog(&cluster, "tampered.bin").await;
        // The name is free again right away.
        raw::upload(&cluster.at(0), "tampered.bin", &data)
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_file_hash_mismatch_commits_nothing() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let mut messages = raw::upload_messages("liar.txt", b"some content");
        if let Some(upload_request::Msg::End(end)) = messages.last_mut().unwrap().msg.as_mut() {
            end.blake3 = dupla::Hash::of(b"other content").to_bytes();
        }
        let err = raw::upload_raw(&cluster.at(0), messages).await.unwrap_err();
        assert_eq!(err.code(), Code::DataLoss, "{err:?}");
        assert_not_in_catalog(&cluster, "liar.txt").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_that_ends_early_commits_nothing() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let data = test_bytes(3 * CHUNK_SIZE, 2);
        let mut messages = raw::upload_messages("short.bin", &data);
        messages.truncate(3); // begin + 2 chunks, no third chunk, no end
        let err = raw::upload_raw(&cluster.at(0), messages).await.unwrap_err();
        assert_eq!(err.code(), Code::Aborted, "{err:?}");
        assert_not_in_catalog(&cluster, "short.bin").await;

        // Declared size smaller than what is sent.
        let mut messages = raw::upload_messages("long.bin", &data);
        if let Some(upload_request::Msg::Begin(b)) = messages[0].msg.as_mut() {
            b.size = CHUNK_SIZE as u64;
        }
        let err = raw::upload_raw(&cluster.at(0), messages).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert_not_in_catalog(&cluster, "long.bin").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_names_and_missing_files_get_clear_statuses() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        for bad in ["../etc/passwd", "/abs", "a//b", ""] {
            let err = raw::upload(&cluster.at(0), bad, b"x").await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
        }
        let err = raw::download(&cluster.at(0), "nope.txt").await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("nope.txt"), "{}", err.message());
        // An upload that does not start with UploadBegin.
        let mut messages = raw::upload_messages("x", b"x");
        messages.remove(0);
        let err = raw::upload_raw(&cluster.at(0), messages).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(cluster.status().await.files, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_upload_of_a_name_in_progress_is_refused() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        // Hold the first upload open: send begin and one chunk, then wait.
        let (tx, rx) = tokio::sync::mpsc::channel::<UploadRequest>(4);
        let data = test_bytes(2 * CHUNK_SIZE, 3);
        let mut messages = raw::upload_messages("busy.bin", &data).into_iter();
        tx.send(messages.next().unwrap()).await.unwrap();
        tx.send(messages.next().unwrap()).await.unwrap();
        let target = cluster.at(0);
        let mut client = raw::storage(&target).await;
        let first = tokio::spawn(async move {
            client
                .upload(target.request(tokio_stream::wrappers::ReceiverStream::new(rx)))
                .await
        });
        // The first upload is placed once its first chunk is staged on a
        // holder (a temp file named after the chunk's hash).
        let first_chunk = dupla::Hash::of(&data[..CHUNK_SIZE]).to_hex();
        let staged = |i: usize| {
            std::fs::read_dir(cluster.servers[i].data.join("tmp"))
                .map(|dir| {
                    dir.flatten()
                        .any(|f| f.file_name().to_string_lossy().starts_with(&first_chunk))
                })
                .unwrap_or(false)
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while !(0..2).any(staged) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "first upload never started"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let second = raw::upload(&cluster.at(1), "busy.bin", b"other")
            .await
            .expect_err("a concurrent upload of the same name was accepted");
        assert_eq!(second.code(), Code::AlreadyExists, "{second:?}");
        assert!(
            second.message().contains("another upload"),
            "{}",
            second.message()
        );
        for message in messages {
            tx.send(message).await.unwrap();
        }
        drop(tx);
        first.await.unwrap().unwrap();
        raw::assert_restores(&cluster.at(1), "busy.bin", &data).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn internal_calls_without_the_cluster_secret_are_refused() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let mut storage = raw::storage(&cluster.at(0)).await;
        let err = storage
            .store(tokio_stream::iter(Vec::<StoreRequest>::new()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        let err = storage
            .fetch_chunks(dupla::v1::FetchChunksRequest { hashes: vec![] })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        let mut manager = cluster.manager_client().await;
        let err = manager
            .place(dupla::v1::PlaceRequest {
                name: "x".into(),
                size: 1,
                entry_id: "me".into(),
                preview: false,
                takeover: false,
                resume_chunks: Vec::new(),
                held_chunks: Vec::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        let err = manager
            .heartbeat(dupla::v1::HeartbeatRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_that_goes_silent_is_dropped_after_the_idle_timeout() {
    bounded(async {
        let mut cluster = TestCluster::start(0).await;
        cluster.idle_timeout = Some(std::time::Duration::from_secs(1));
        cluster.add_server().await;
        cluster.add_server().await;
        cluster.wait_for_up(2).await;
        // Begin and one chunk, then silence with the connection kept open.
        let data = test_bytes(3 * CHUNK_SIZE, 17);
        let (tx, rx) = tokio::sync::mpsc::channel::<UploadRequest>(4);
        for message in raw::upload_messages("silent.bin", &data)
            .into_iter()
            .take(2)
        {
            tx.send(message).await.unwrap();
        }
        let target = cluster.at(0);
        let err = raw::storage(&target)
            .await
            .upload(target.request(tokio_stream::wrappers::ReceiverStream::new(rx)))
            .await
            .expect_err("a silent stream must not be committed");
        assert_eq!(err.code(), Code::Aborted, "{err:?}");
        assert!(err.message().contains("no data for"), "{err:?}");
        drop(tx);
        assert_not_in_catalog(&cluster, "silent.bin").await;
        // The name is free again at once: the entry told the manager.
        raw::upload(&cluster.at(1), "silent.bin", &data)
            .await
            .unwrap();
        raw::assert_restores(&cluster.at(0), "silent.bin", &data).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_name_is_a_bad_request_not_a_missing_file() {
    bounded(async {
        let cluster = TestCluster::start(1).await;
        let err = cluster.lookup("").await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("empty"), "{err:?}");
    })
    .await
}
