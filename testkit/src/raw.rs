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
use tonic::Status;

/// A Storage client for `addr`.
pub async fn storage(addr: &str) -> StorageClient<Channel> {
    StorageClient::new(dupla::rpc::connect(addr).await.expect("server reachable"))
        .max_decoding_message_size(dupla::rpc::MAX_CATALOG_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The well-formed message sequence of an upload of `data` as `name`.
pub fn upload_messages(name: &str, data: &[u8]) -> Vec<UploadRequest> {
    let mut messages = vec![UploadRequest {
        msg: Some(upload_request::Msg::Begin(UploadBegin {
            name: name.into(),
            size: data.len() as u64,
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

/// Send `messages` as one Upload stream to `addr`.
pub async fn upload_raw(addr: &str, messages: Vec<UploadRequest>) -> Result<UploadReceipt, Status> {
    storage(addr)
        .await
        .upload(tokio_stream::iter(messages))
        .await
        .map(|r| r.into_inner())
}

/// Upload `data` as `name` through the server at `addr`.
pub async fn upload(addr: &str, name: &str, data: &[u8]) -> Result<UploadReceipt, Status> {
    upload_raw(addr, upload_messages(name, data)).await
}

/// Download `name` through the server at `addr`, checking every chunk and
/// the whole file against the catalog entry.
pub async fn download(addr: &str, name: &str) -> Result<Vec<u8>, Status> {
    let mut stream = storage(addr)
        .await
        .download(DownloadRequest {
            name: name.into(),
            offset: 0,
        })
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
    while let Some(message) = stream.message().await? {
        match message.msg {
            Some(download_response::Msg::Chunk(c)) => {
                let index = c.index;
                chunk::verify_in_file(&c, (data.len() / CHUNK_SIZE) as u64, header.size)
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

/// Download `name` through `addr` and check it is exactly `want` (compared by
/// length and blake3, so a failure prints something readable).
pub async fn assert_restores(addr: &str, name: &str, want: &[u8]) {
    let got = download(addr, name)
        .await
        .unwrap_or_else(|e| panic!("{name} via {addr}: {e:?}"));
    assert_eq!(
        (got.len(), Hash::of(&got)),
        (want.len(), Hash::of(want)),
        "{name} via {addr} restored different bytes"
    );
}
