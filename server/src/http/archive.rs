//! `GET /api/snapshots/{id}/archive`: a whole snapshot (or the part under
//! `prefix`) restored as one tar stream, for a browser. Entries come from
//! the manager's `Snapshots/Entries` as the user; each file's bytes from
//! the same reader as a download (every chunk checked, holders switched on
//! failure). Nothing is buffered beyond a few chunks; a failure midway
//! ends the body early, so a client sees a short archive, never a wrong
//! one.

use super::Api;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use bytes::Bytes;
use dupla::rpc::UserCredentials;
use dupla::v1::{download_response, DownloadRequest, DownloadResponse, EntryKind, SnapshotEntry};
use dupla::web::{bearer, grpc_request, ApiPath, ApiQuery, ApiResult};
use dupla::{Error, Result};
use futures::StreamExt;
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::mpsc;
use utoipa::IntoParams;

/// Blocks of the archive queued ahead of a slow reader.
const ARCHIVE_QUEUE_BLOCKS: usize = 4;
/// Tar's block size.
const BLOCK: usize = 512;

/// Which part of the snapshot.
#[derive(Deserialize, IntoParams)]
pub struct Part {
    /// Only this path and what lies below it.
    #[serde(default)]
    pub prefix: String,
    /// Bearer token, for links that cannot send `Authorization`.
    pub token: Option<String>,
}

#[utoipa::path(get, path = "/api/snapshots/{id}/archive", tag = "transfers",
    params(("id" = String, Path, description = "Snapshot id"), Part),
    responses(
        (status = 200, description = "The snapshot as a tar archive", content_type = "application/x-tar", body = Vec<u8>),
        (status = 401, body = dupla::web::ErrorBody),
        (status = 404, description = "No such snapshot of yours", body = dupla::web::ErrorBody)),
    security(("bearer" = [])))]
/// Restore a snapshot as a tar archive.
pub async fn archive(
    State(api): State<Api>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(part): ApiQuery<Part>,
) -> ApiResult<Response> {
    let token = bearer(&headers)
        .map(str::to_string)
        .or(part.token)
        .ok_or_else(|| {
            Error::Unauthenticated(
                "not logged in: send `Authorization: Bearer <token>` or `?token=`".into(),
            )
        })?;
    let request = grpc_request(
        Some(&token),
        None,
        dupla::v1::SnapshotEntriesRequest {
            id: id.clone(),
            prefix: part.prefix,
        },
    );
    let credentials = UserCredentials::of(&request)?;
    // Asked before the answer starts: an unknown snapshot is a 404, not an empty tar.
    let mut entries =
        dupla::v1::snapshots_client::SnapshotsClient::new(api.node.manager_channel.clone())
            .entries(request)
            .await
            .map_err(Error::from_status)?
            .into_inner();
    let first = match entries.next().await {
        Some(batch) => batch.map_err(Error::from_status)?.entries,
        None => Vec::new(),
    };
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(ARCHIVE_QUEUE_BLOCKS);
    let node = api.node.clone();
    tokio::spawn(async move {
        let result = write_archive(&node, &credentials, first, &mut entries, &tx).await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "snapshot archive cut short");
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-tar")
        .header(
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"snapshot-{}.tar\"",
                id.replace('"', "")
            ),
        )
        .body(body)
        .map_err(|e| Error::Internal(format!("response: {e}")).into())
}

type Sink = mpsc::Sender<std::io::Result<Bytes>>;

async fn send(tx: &Sink, data: Bytes) -> Result<()> {
    tx.send(Ok(data))
        .await
        .map_err(|_| Error::Aborted("the client went away".into()))
}

async fn write_archive(
    node: &Arc<crate::node::StorageNode>,
    credentials: &UserCredentials,
    first: Vec<SnapshotEntry>,
    rest: &mut tonic::Streaming<dupla::v1::SnapshotEntries>,
    tx: &Sink,
) -> Result<()> {
    let mut batch = first;
    loop {
        for entry in batch {
            write_entry(node, credentials, &entry, tx).await?;
        }
        match rest.next().await {
            Some(next) => batch = next.map_err(Error::from_status)?.entries,
            None => break,
        }
    }
    // The end of a tar: two zero blocks.
    send(tx, Bytes::from(vec![0u8; 2 * BLOCK])).await
}

async fn write_entry(
    node: &Arc<crate::node::StorageNode>,
    credentials: &UserCredentials,
    entry: &SnapshotEntry,
    tx: &Sink,
) -> Result<()> {
    let mtime = entry.mtime_ns.max(0) as u64 / 1_000_000_000;
    match EntryKind::try_from(entry.kind) {
        Ok(EntryKind::Dir) => {
            for block in headers(&format!("{}/", entry.path), b'5', 0, entry.mode, mtime, "") {
                send(tx, block).await?;
            }
        }
        Ok(EntryKind::Symlink) => {
            for block in headers(&entry.path, b'2', 0, entry.mode, mtime, &entry.link_target) {
                send(tx, block).await?;
            }
        }
        _ => {
            for block in headers(&entry.path, b'0', entry.size, entry.mode, mtime, "") {
                send(tx, block).await?;
            }
            let request = DownloadRequest {
                name: entry.path.clone(),
                offset: 0,
                version: entry.version,
            };
            let mut stream =
                crate::download::open(node.clone(), credentials.clone(), request).await?;
            let mut sent = 0u64;
            while let Some(message) = stream.next().await {
                if let DownloadResponse {
                    msg: Some(download_response::Msg::Chunk(chunk)),
                } = message.map_err(Error::from_status)?
                {
                    sent += chunk.data.len() as u64;
                    send(tx, chunk.data).await?;
                }
            }
            if sent != entry.size {
                return Err(Error::Corrupt(format!(
                    "{}: sent {sent} of {} bytes",
                    entry.path, entry.size
                )));
            }
            let pad = (BLOCK - (sent as usize % BLOCK)) % BLOCK;
            if pad > 0 {
                send(tx, Bytes::from(vec![0u8; pad])).await?;
            }
        }
    }
    Ok(())
}

/// The header blocks of one entry: a GNU long-name record first when the
/// path or link target does not fit tar's 100 bytes.
fn headers(path: &str, kind: u8, size: u64, mode: u32, mtime: u64, link: &str) -> Vec<Bytes> {
    let mut out = Vec::new();
    for (text, long_kind) in [(path, b'L'), (link, b'K')] {
        if text.len() >= 100 {
            let data = format!("{text}\0").into_bytes();
            out.push(header(
                "././@LongLink",
                long_kind,
                data.len() as u64,
                0o644,
                0,
                "",
            ));
            let mut padded = data;
            padded.resize(padded.len().div_ceil(BLOCK) * BLOCK, 0);
            out.push(Bytes::from(padded));
        }
    }
    out.push(header(path, kind, size, mode, mtime, link));
    out
}

/// One ustar header block (names cut at 100 bytes: `headers` adds the
/// long-name record before it).
fn header(path: &str, kind: u8, size: u64, mode: u32, mtime: u64, link: &str) -> Bytes {
    let mut block = [0u8; BLOCK];
    let put = |block: &mut [u8; BLOCK], at: usize, len: usize, bytes: &[u8]| {
        let n = bytes.len().min(len);
        block[at..at + n].copy_from_slice(&bytes[..n]);
    };
    let octal =
        |value: u64, len: usize| format!("{value:0width$o}\0", width = len - 1).into_bytes();
    put(&mut block, 0, 100, path.as_bytes());
    put(&mut block, 100, 8, &octal(u64::from(mode & 0o7777), 8));
    put(&mut block, 108, 8, &octal(0, 8));
    put(&mut block, 116, 8, &octal(0, 8));
    put(&mut block, 124, 12, &octal(size, 12));
    put(&mut block, 136, 12, &octal(mtime, 12));
    block[156] = kind;
    put(&mut block, 157, 100, link.as_bytes());
    put(&mut block, 257, 8, b"ustar\x0000");
    // The checksum counts its own field as spaces.
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    put(&mut block, 148, 8, format!("{sum:06o}\0 ").as_bytes());
    Bytes::copy_from_slice(&block)
}
