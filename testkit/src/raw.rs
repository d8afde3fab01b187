//! Raw gRPC helpers: upload and download byte buffers (tests only: they
//! hold whole files in memory), and send hand-made, possibly malformed,
//! message sequences.

use bytes::Bytes;
use dupla::chunk::{self, CHUNK_SIZE};
use dupla::rpc::MAX_MESSAGE_BYTES;
use dupla::v1::storage_client::StorageClient;
use dupla::v1::{
    download_response, upload_request, DownloadRequest, UploadBegin, UploadEnd, UploadReceipt,
    UploadRequest,
};
use dupla::Hash;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Where a raw call goes, and as whom: a storage server's address and the
/// bearer token of a logged-in user (none, to test that calls are refused).
#[derive(Clone, Debug)]
pub struct Target {
    /// `host:port` of the storage server.
    pub addr: String,
    /// The user's token.
    pub token: Option<String>,
}

impl Target {
    /// Calls to `addr` as the user holding `token`.
    pub fn new(addr: impl Into<String>, token: &str) -> Target {
        Target {
            addr: addr.into(),
            token: Some(token.into()),
        }
    }

    /// Calls to `addr` without credentials.
    pub fn anonymous(addr: impl Into<String>) -> Target {
        Target {
            addr: addr.into(),
            token: None,
        }
    }

    /// `message` with this target's credentials.
    pub fn request<T>(&self, message: T) -> Request<T> {
        match &self.token {
            Some(token) => crate::chat::authed(token, message),
            None => Request::new(message),
        }
    }
}

/// A Storage client for the server at `target`.
pub async fn storage(target: &Target) -> StorageClient<Channel> {
    StorageClient::new(
        dupla::rpc::connect(&target.addr)
            .await
            .expect("server reachable"),
    )
    .max_decoding_message_size(dupla::rpc::MAX_CATALOG_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The well-formed message sequence of an upload of `data` as `name`.
pub fn upload_messages(name: &str, data: &[u8]) -> Vec<UploadRequest> {
    let mut messages = vec![UploadRequest {
        msg: Some(upload_request::Msg::Begin(UploadBegin {
            name: name.into(),
            size: data.len() as u64,
            resume_chunks: Vec::new(),
            resume: false,
            held_chunks: Vec::new(),
        })),
    }];
    for (i, piece) in data.chunks(CHUNK_SIZE).enumerate() {
        messages.push(UploadRequest {
            msg: Some(upload_request::Msg::Chunk(chunk::make(
                i as u64,
                Bytes::copy_from_slice(piece),
            ))),
        });
    }
    messages.push(UploadRequest {
        msg: Some(upload_request::Msg::End(UploadEnd {
            blake3: Hash::of(data).to_bytes(),
        })),
    });
    messages
}

/// Send `messages` as one Upload stream to `target`.
pub async fn upload_raw(
    target: &Target,
    messages: Vec<UploadRequest>,
) -> Result<UploadReceipt, Status> {
    storage(target)
        .await
        .upload(target.request(tokio_stream::iter(messages)))
        .await
        .map(|r| r.into_inner())
}

/// Upload `data` as `name` through `target`.
pub async fn upload(target: &Target, name: &str, data: &[u8]) -> Result<UploadReceipt, Status> {
    upload_raw(target, upload_messages(name, data)).await
}

/// Download `name` through `target`, checking every chunk and the whole
/// file against the catalog entry.
pub async fn download(target: &Target, name: &str) -> Result<Vec<u8>, Status> {
    let mut stream = storage(target)
        .await
        .download(target.request(DownloadRequest {
            name: name.into(),
            offset: 0,
            version: 0,
        }))
        .await?
        .into_inner();
    let header = match stream.message().await? {
        Some(dupla::v1::DownloadResponse {
            msg: Some(download_response::Msg::Header(h)),
        }) => h,
        other => {
            return Err(Status::internal(format!(
                "expected a header, got {other:?}"
            )))
        }
    };
    let mut data = Vec::with_capacity(header.size as usize);
    let layout = chunk::ChunkLayout::of(&header).map_err(|e| Status::data_loss(e.to_string()))?;
    while let Some(message) = stream.message().await? {
        match message.msg {
            Some(download_response::Msg::Chunk(c)) => {
                let index = c.index;
                chunk::verify_in_layout(&c, layout.index_at(data.len() as u64), &layout)
                    .map_err(|e| Status::data_loss(e.to_string()))?;
                assert_eq!(
                    c.hash, header.chunks[index as usize],
                    "chunk {index} differs from the catalog"
                );
                data.extend_from_slice(&c.data);
            }
            other => return Err(Status::internal(format!("expected a chunk, got {other:?}"))),
        }
    }
    assert_eq!(data.len() as u64, header.size, "download is short");
    assert_eq!(
        Hash::of(&data).to_bytes(),
        header.blake3,
        "whole-file hash differs"
    );
    Ok(data)
}

/// Download `name` through `target` and check it is exactly `want`
/// (compared by length and blake3, so a failure prints something readable).
pub async fn assert_restores(target: &Target, name: &str, want: &[u8]) {
    let addr = &target.addr;
    let got = download(target, name)
        .await
        .unwrap_or_else(|e| panic!("{name} via {addr}: {e:?}"));
    assert_eq!(
        (got.len(), Hash::of(&got)),
        (want.len(), Hash::of(want)),
        "{name} via {addr} restored different bytes"
    );
}

/// Start uploading `data` as `name` through `target`, send its first `sent`
/// chunks, wait until two servers of `cluster` made at least `durable`
/// chunks durable, then cut the stream off (no end marker) and check the
/// upload failed: an upload interrupted midway, as a crash would leave it.
pub async fn interrupted_upload(
    cluster: &crate::TestCluster,
    target: &Target,
    name: &str,
    data: &[u8],
    sent: usize,
    durable: usize,
) {
    interrupted_upload_of(cluster, target, upload_messages(name, data), sent, durable).await
}

/// The messages of an upload of `data` as `name` cut as the client cuts
/// it (content-defined chunks).
pub fn cdc_upload_messages(name: &str, data: &[u8]) -> Vec<UploadRequest> {
    let mut messages = upload_messages(name, &[]);
    messages[0] = UploadRequest {
        msg: Some(upload_request::Msg::Begin(UploadBegin {
            name: name.into(),
            size: data.len() as u64,
            ..Default::default()
        })),
    };
    let end = messages.pop().expect("the end marker");
    for (i, piece) in chunk::cut(data).into_iter().enumerate() {
        messages.push(UploadRequest {
            msg: Some(upload_request::Msg::Chunk(chunk::make(i as u64, piece))),
        });
    }
    messages.push(UploadRequest {
        msg: Some(upload_request::Msg::End(UploadEnd {
            blake3: Hash::of(data).to_bytes(),
        })),
    });
    drop(end);
    messages
}

/// [`interrupted_upload`] of the given upload `messages`.
pub async fn interrupted_upload_of(
    cluster: &crate::TestCluster,
    target: &Target,
    messages: Vec<UploadRequest>,
    sent: usize,
    durable: usize,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<UploadRequest>(4);
    let mut storage = storage(target).await;
    let request = target.request(tokio_stream::wrappers::ReceiverStream::new(rx));
    let call = tokio::spawn(async move { storage.upload(request).await });
    for message in messages.into_iter().take(1 + sent) {
        tx.send(message).await.expect("the upload is running");
    }
    let durable_on = || {
        cluster
            .servers
            .iter()
            .filter(|s| crate::stored_chunks(&s.data) >= durable)
            .count()
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while durable_on() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the holders never made {durable} chunks durable"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(tx);
    let status = call
        .await
        .expect("upload task")
        .expect_err("a cut-off upload must fail");
    assert_ne!(status.code(), tonic::Code::Ok);
}

/// The chunk hashes of `data`, in order.
pub fn chunk_hashes(data: &[u8]) -> Vec<Hash> {
    data.chunks(CHUNK_SIZE).map(Hash::of).collect()
}

/// How many leading chunks of `data` (to be stored as `name`) the cluster
/// holds, as `Storage/UploadStatus` through `target` reports it.
pub async fn held_chunks(target: &Target, name: &str, data: &[u8]) -> usize {
    storage(target)
        .await
        .upload_status(target.request(dupla::v1::UploadStatusRequest {
            name: name.into(),
            size: data.len() as u64,
            chunks: chunk_hashes(data).iter().map(Hash::to_bytes).collect(),
            chunk_lengths: Vec::new(),
        }))
        .await
        .expect("upload status")
        .into_inner()
        .held_chunks as usize
}

/// The messages of an upload of `data` as `name` that resumes after its
/// first `held` chunks: they are named in `UploadBegin.resume_chunks` and
/// left out of the stream.
pub fn resumed_messages(name: &str, data: &[u8], held: usize) -> Vec<UploadRequest> {
    let mut messages = upload_messages(name, data);
    messages[0] = UploadRequest {
        msg: Some(upload_request::Msg::Begin(UploadBegin {
            name: name.into(),
            size: data.len() as u64,
            resume_chunks: chunk_hashes(data)[..held]
                .iter()
                .map(Hash::to_bytes)
                .collect(),
            resume: true,
            held_chunks: Vec::new(),
        })),
    };
    messages.drain(1..1 + held);
    messages
}
