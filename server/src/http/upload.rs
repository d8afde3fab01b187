//! Resumable HTTP uploads (docs/web.md, "Uploads"): `POST /api/uploads`
//! stages a file of a given name and size; `PUT /api/uploads/{id}?offset=N`
//! appends the bytes from N (where the last request stopped: `GET` says);
//! the request that brings the last byte sends the whole file through
//! the write path of `Storage/Upload` (in this process when this server is
//! to hold a copy, else at the primary), so it takes the same path as the
//! `dupla` client's: placement, two copies, blake3 on every chunk and on
//! the whole file, commit only when both copies are durable. A request
//! that brings the whole rest of the file starts that commit at once,
//! reading behind the bytes it stages ([`super::tail`]).

use super::Api;
use crate::node::StorageNode;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use dupla::rpc::UserCredentials;
use dupla::v1::{upload_request, UploadBegin, UploadEnd, UploadRequest};
use dupla::web::{bearer, grpc_request, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use dupla::{name, Error, Hash, Result};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// Chunks read ahead of the gRPC upload stream: bounds memory per upload.
const UPLOAD_CHANNEL_CHUNKS: usize = 4;

/// Bytes of a request body gathered before each write to the staged file:
/// a few large writes instead of one per body frame, and the memory one
/// uploading request holds.
const STAGING_WRITE_BYTES: usize = 1 << 20;

/// Start an upload.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUpload {
    /// Catalog name: a relative `/`-separated path.
    pub name: String,
    /// Exact size in bytes.
    pub size: u64,
    /// blake3 of the whole file (64 hex digits), if the uploader knows it:
    /// the server then refuses to commit other bytes.
    #[serde(default)]
    pub blake3: Option<String>,
}

/// An upload in progress, or just finished.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct UploadState {
    /// Id to continue it with.
    pub id: String,
    /// Catalog name.
    pub name: String,
    /// Exact size in bytes.
    pub size: u64,
    /// Bytes staged: send the rest from here.
    pub offset: u64,
    /// The file is committed with two copies (the last request only).
    pub done: bool,
    /// The committed file, when `done`.
    pub file: Option<Committed>,
}

/// A committed file, as the write path's receipt says.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Committed {
    /// Catalog name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// blake3 of the whole file, hex.
    pub blake3: String,
    /// Catalog version.
    pub version: u64,
    /// Servers holding a copy (gRPC addresses), primary first.
    pub holders: Vec<String>,
    /// Durable copies written.
    pub copies: u32,
}

/// Where a range starts.
#[derive(Deserialize, IntoParams)]
pub struct Offset {
    /// Byte offset of this request's body in the file; must equal the
    /// staged length (409 `stale` otherwise, with the right offset).
    pub offset: u64,
}

/// The caller behind a request: login and role per the manager.
pub(crate) async fn caller(
    node: &StorageNode,
    token: Option<&str>,
) -> Result<(String, String, UserCredentials)> {
    let token = token.ok_or_else(|| {
        Error::Unauthenticated(
            "not logged in: send `Authorization: Bearer <token>` (POST /api/login at the manager)"
                .into(),
        )
    })?;
    let request = grpc_request(Some(token), None, dupla::v1::WhoAmIRequest {});
    let credentials = UserCredentials::of(&request)?;
    let reply = dupla::v1::accounts_client::AccountsClient::new(node.manager_channel.clone())
        .who_am_i(request)
        .await
        .map_err(Error::from_status)?
        .into_inner();
    let user = reply
        .user
        .ok_or_else(|| Error::Internal("WhoAmI answered no user".into()))?;
    Ok((user.login, user.role, credentials))
}

#[utoipa::path(post, path = "/api/uploads", tag = "transfers",
    request_body = NewUpload,
    responses(
        (status = 200, description = "Staged; PUT the bytes", body = UploadState),
        (status = 400, body = dupla::web::ErrorBody), (status = 401, body = dupla::web::ErrorBody),
        (status = 403, description = "Viewers may not back up", body = dupla::web::ErrorBody),
        (status = 429, description = "Larger than this server offers, over the caller's quota, or too many uploads staged", body = dupla::web::ErrorBody)),
    security(("bearer" = [])))]
/// Stage a new upload.
pub async fn create(
    State(api): State<Api>,
    headers: HeaderMap,
    ApiJson(new): ApiJson<NewUpload>,
) -> ApiResult<Json<UploadState>> {
    let (login, role, _) = caller(&api.node, bearer(&headers)).await?;
    if role == "viewer" {
        return Err(Error::PermissionDenied(format!(
            "{login} is a viewer: viewers may list and restore, not back up files; ask an admin for the user role"
        ))
        .into());
    }
    name::validate(&new.name)?;
    if let Some(hash) = &new.blake3 {
        Hash::from_hex(hash)?;
    }
    if new.size > api.node.store.capacity() {
        return Err(Error::Exhausted(format!(
            "{} bytes is more than this server offers ({} bytes)",
            new.size,
            api.node.store.capacity()
        ))
        .into());
    }
    // Staged bytes take this server's disk before the write path's quota
    // check at Place: they count against the quota from the start.
    let staging = api.staging.clone();
    let owner = login.clone();
    let (staged, staged_bytes) = tokio::task::spawn_blocking(move || staging.declared_by(&owner))
        .await
        .map_err(|e| Error::Internal(format!("staging: {e}")))??;
    if staged >= MAX_STAGED_PER_USER {
        return Err(Error::Exhausted(format!(
            "{login} has {staged} uploads staged on this server; finish or cancel (DELETE) one first"
        ))
        .into());
    }
    let token = bearer(&headers).unwrap_or_default();
    let quota = dupla::v1::manager_client::ManagerClient::new(api.node.manager_channel.clone())
        .get_quota(grpc_request(
            Some(token),
            None,
            dupla::v1::GetQuotaRequest::default(),
        ))
        .await
        .map_err(Error::from_status)?
        .into_inner();
    check_quota(&quota, staged as u64, staged_bytes, new.size)?;
    let meta = super::staging::Meta {
        owner: login,
        name: new.name.clone(),
        size: new.size,
        blake3: new.blake3,
    };
    let staging = api.staging.clone();
    let id = tokio::task::spawn_blocking(move || staging.create(&meta))
        .await
        .map_err(|e| Error::Internal(format!("staging: {e}")))??;
    Ok(Json(UploadState {
        id,
        name: new.name,
        size: new.size,
        offset: 0,
        done: false,
        file: None,
    }))
}

/// Uploads one user may have staged on one server at once.
pub const MAX_STAGED_PER_USER: usize = 16;

/// Refuse a new staged upload of `size` bytes that, with what the user
/// keeps and has staged, would go past their quota (0: unlimited).
fn check_quota(
    quota: &dupla::v1::QuotaReply,
    staged: u64,
    staged_bytes: u64,
    size: u64,
) -> Result<()> {
    let bytes = quota
        .used_bytes
        .saturating_add(staged_bytes)
        .saturating_add(size);
    let files = quota.used_files.saturating_add(staged).saturating_add(1);
    if quota.quota_bytes != 0 && bytes > quota.quota_bytes {
        return Err(Error::Exhausted(format!(
            "over your quota: {} kept, {} staged and {} more would pass {} bytes; \
             remove files (`dupla rm`, `dupla forget`) or ask an admin",
            quota.used_bytes, staged_bytes, size, quota.quota_bytes
        )));
    }
    if quota.quota_files != 0 && files > quota.quota_files {
        return Err(Error::Exhausted(format!(
            "over your quota: {} file versions kept and {staged} staged; the quota is {}",
            quota.used_files, quota.quota_files
        )));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/uploads/{id}", tag = "transfers",
    params(("id" = String, Path, description = "Upload id")),
    responses((status = 200, description = "Where to resume", body = UploadState),
        (status = 404, body = dupla::web::ErrorBody)),
    security(("bearer" = [])))]
/// Where a staged upload stands: resume from `offset`.
pub async fn status(
    State(api): State<Api>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<UploadState>> {
    let (login, _, _) = caller(&api.node, bearer(&headers)).await?;
    let meta = api.staging.get(&id, &login)?;
    // After a dropped connection the old request may still be writing what
    // arrived: the offset is read once it is done.
    let _settled = api.staging.settle(&id).await;
    let offset = api.staging.offset(&id)?;
    Ok(Json(UploadState {
        id,
        name: meta.name,
        size: meta.size,
        offset,
        done: false,
        file: None,
    }))
}

#[utoipa::path(delete, path = "/api/uploads/{id}", tag = "transfers",
    params(("id" = String, Path, description = "Upload id")),
    responses((status = 204, description = "Cancelled, staged bytes deleted"),
        (status = 404, body = dupla::web::ErrorBody)),
    security(("bearer" = [])))]
/// Cancel a staged upload.
pub async fn cancel(
    State(api): State<Api>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::http::StatusCode> {
    let (login, _, _) = caller(&api.node, bearer(&headers)).await?;
    api.staging.get(&id, &login)?;
    let _busy = api.staging.settle(&id).await;
    api.staging.remove(&id)?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/api/uploads/{id}", tag = "transfers",
    params(("id" = String, Path, description = "Upload id"), Offset),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The file's bytes from `offset` on (all the rest, or a part)"),
    responses(
        (status = 200, description = "Bytes staged; `done` once the file is committed", body = UploadState),
        (status = 409, description = "Wrong offset (`stale`): the message and GET give the right one", body = dupla::web::ErrorBody),
        (status = 413, description = "More bytes than the declared size", body = dupla::web::ErrorBody)),
    security(("bearer" = [])))]
/// Send bytes of a staged upload from `offset`. The request that completes
/// the file commits it through the write path and answers with the file.
pub async fn put_range(
    State(api): State<Api>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(at): ApiQuery<Offset>,
    body: Body,
) -> Result<Json<UploadState>, ([(axum::http::HeaderName, &'static str); 1], ApiError)> {
    // An error answer closes the connection, and says so. It may come
    // before the body was read (a `stale` offset is refused before a byte
    // of it); hyper then closes the connection once the answer is out, but
    // does not always say `Connection: close` in it, and a keep-alive client
    // sends its next request (the GET for the right offset) into a
    // connection that is closing: "connection closed before message
    // completed".
    stage_range(api, headers, id, at, body)
        .await
        .map_err(|e| ([(axum::http::header::CONNECTION, "close")], e))
}

async fn stage_range(
    api: Api,
    headers: HeaderMap,
    id: String,
    at: Offset,
    body: Body,
) -> ApiResult<Json<UploadState>> {
    // Token, ownership and offset are checked before a byte of the body is read.
    let (login, _, credentials) = caller(&api.node, bearer(&headers)).await?;
    let meta = api.staging.get(&id, &login)?;
    // Requests on one upload take turns: one cut off by a dropped
    // connection finishes writing what arrived before the next one reads
    // the offset.
    let _busy = api.staging.settle(&id).await;
    let staged = api.staging.offset(&id)?;
    if at.offset != staged {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "stale",
            format!("{id} has {staged} bytes staged: send from offset={staged}"),
        ));
    }
    let part = api.staging.part(&id);
    let rest = meta.size - staged;
    // A request that says it brings the whole rest of the file (as curl,
    // browsers and JMeter do) commits while it stages: the commit reads
    // the part file behind the appender (`tail`). Otherwise, or for an
    // empty file, the commit starts after the last byte.
    let (offset, committed) = if rest > 0 && content_length(&headers) == Some(rest) {
        let (written, progress) = tokio::sync::watch::channel(staged);
        let source = super::tail::Tail::new(
            std::fs::File::open(&part).map_err(Error::from)?,
            meta.size,
            progress,
        );
        let (appended, committed) = tokio::join!(
            append(&api, &id, staged, meta.size, body, Some(written)),
            commit(&api.node, source, &meta, credentials),
        );
        let offset = appended?;
        if offset < meta.size || committed.is_err() {
            // The client goes on from `offset` (cut short: the commit
            // failed for want of bytes and its upload was aborted), so it
            // must be durable. When the commit succeeded the staged copy
            // is deleted unsynced: its bytes already have two durable copies.
            let file = tokio::fs::File::open(&part).await.map_err(Error::from)?;
            file.sync_data().await.map_err(Error::from)?;
        }
        (offset, (offset == meta.size).then_some(committed))
    } else {
        let offset = append(&api, &id, staged, meta.size, body, None).await?;
        let committed = if offset == meta.size {
            let file = std::fs::File::open(&part).map_err(Error::from)?;
            Some(commit(&api.node, file, &meta, credentials).await)
        } else {
            None
        };
        (offset, committed)
    };
    let Some(committed) = committed else {
        return Ok(Json(UploadState {
            id,
            name: meta.name,
            size: meta.size,
            offset,
            done: false,
            file: None,
        }));
    };
    let committed = committed?;
    api.staging.remove(&id)?;
    Ok(Json(UploadState {
        id,
        name: meta.name,
        size: meta.size,
        offset,
        done: true,
        file: Some(committed),
    }))
}

/// The request's declared body length, if any.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Append `body` to the staged part of `id`, at most up to `size`; the new
/// length. A body cut short keeps what arrived (the next request resumes
/// there); one longer than the file is refused and leaves nothing of it.
/// `written`, if given, hears the part file's length after every write (a
/// commit reading behind), and is dropped when the body ends; the part is
/// then left unsynced (see `put_range`).
async fn append(
    api: &Api,
    id: &str,
    staged: u64,
    size: u64,
    body: Body,
    written: Option<super::tail::Written>,
) -> ApiResult<u64> {
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(api.staging.part(id))
        .await
        .map_err(Error::from)?;
    let mut offset = staged;
    let mut stream = body.into_data_stream();
    let mut cut_short = None;
    // Body frames are often 16 KiB or less: gather them and write large
    // pieces, each then published to a commit reading behind.
    let mut pending = bytes::BytesMut::with_capacity(STAGING_WRITE_BYTES);
    loop {
        let data = match stream.next().await {
            Some(Ok(data)) => Some(data),
            None => None,
            Some(Err(e)) => {
                cut_short = Some(e.to_string());
                None
            }
        };
        if let Some(data) = &data {
            if offset + (pending.len() + data.len()) as u64 > size {
                file.set_len(staged).await.map_err(Error::from)?;
                return Err(ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the upload is {size} bytes; this request sent past its end"),
                ));
            }
            pending.extend_from_slice(data);
        }
        let last = data.is_none();
        if pending.len() >= STAGING_WRITE_BYTES || (last && !pending.is_empty()) {
            tokio::io::AsyncWriteExt::write_all(&mut file, &pending)
                .await
                .map_err(Error::from)?;
            // Not counted in `bytes_in` here: the commit sends the file
            // through Storage/Upload, which counts it once.
            offset += pending.len() as u64;
            pending.clear();
            if let Some(written) = &written {
                // tokio's File writes in the background: in the file
                // first, then readable behind us.
                tokio::io::AsyncWriteExt::flush(&mut file)
                    .await
                    .map_err(Error::from)?;
                written.send_replace(offset);
            }
        }
        if last {
            break;
        }
    }
    // Durable before it counts as staged: the offset a later request reads
    // must never point past bytes a crash could lose. With a commit reading
    // behind, the caller syncs only if that commit fails.
    if written.is_none() {
        file.sync_data().await.map_err(Error::from)?;
    }
    if let Some(reason) = cut_short {
        tracing::info!(upload = %id, offset, %reason, "HTTP upload cut short; it resumes from here");
    }
    Ok(offset)
}

/// Send the staged file (read from `part`) through `Storage/Upload`, as the
/// user; the committed file.
async fn commit(
    node: &Arc<StorageNode>,
    part: impl std::io::Read + Send + 'static,
    meta: &super::staging::Meta,
    credentials: UserCredentials,
) -> Result<Committed> {
    let (tx, rx) = tokio::sync::mpsc::channel(UPLOAD_CHANNEL_CHUNKS);
    let begin = UploadRequest {
        msg: Some(upload_request::Msg::Begin(UploadBegin {
            name: meta.name.clone(),
            size: meta.size,
            ..Default::default()
        })),
    };
    tx.send(begin)
        .await
        .map_err(|_| Error::Internal("upload channel closed".into()))?;
    let declared = meta.blake3.as_deref().map(Hash::from_hex).transpose()?;
    let entry = entry_for(node, &credentials, meta).await;
    // Content-defined chunks, as the `dupla` client cuts them, so the
    // same file backed up both ways shares its chunks.
    let reader = tokio::task::spawn_blocking(move || feed(part, declared, tx));
    let messages = tokio_stream::wrappers::ReceiverStream::new(rx);
    let receipt = if entry == node.addr {
        // Here: the write path in this process, without a TLS round trip
        // to our own gRPC port.
        let messages = Box::pin(futures::StreamExt::map(messages, Ok));
        crate::upload::handle(node.clone(), credentials, messages).await
    } else {
        let mut request = tonic::Request::new(messages);
        credentials.attach(&mut request);
        node.peer(&entry)?
            .upload(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::from_status)
    };
    let fed = reader
        .await
        .map_err(|e| Error::Internal(format!("staged file reader: {e}")))?;
    let receipt = receipt?;
    fed?;
    let entry = receipt
        .entry
        .ok_or_else(|| Error::Internal("receipt without its entry".into()))?;
    Ok(Committed {
        name: entry.name,
        size: entry.size,
        blake3: hex::encode(&entry.blake3),
        version: entry.version,
        holders: entry.holders.into_iter().map(|h| h.addr).collect(),
        copies: receipt.copies,
    })
}

/// Where the commit enters the write path: here if this server is to hold
/// a copy, else the primary the manager would choose now, so the bytes
/// take the `dupla` client's two hops (primary, then replica) instead of
/// three. Here if the preview fails: the upload then places it itself.
async fn entry_for(
    node: &Arc<StorageNode>,
    credentials: &UserCredentials,
    meta: &super::staging::Meta,
) -> String {
    let preview = dupla::v1::UploadStatusRequest {
        name: meta.name.clone(),
        size: meta.size,
        ..Default::default()
    };
    let placement = match crate::resume::status(node, credentials, preview).await {
        Ok(reply) => reply.placement,
        Err(e) => {
            tracing::debug!(error = %e, "no placement preview; the upload enters here");
            return node.addr.clone();
        }
    };
    let holders: Vec<&str> = placement.iter().take(2).map(|n| n.addr.as_str()).collect();
    match holders.first() {
        Some(primary) if !holders.contains(&node.addr.as_str()) => primary.to_string(),
        _ => node.addr.clone(),
    }
}

/// Read the staged file chunk by chunk into the upload stream, then its
/// end marker with the declared (or computed) blake3.
fn feed(
    file: impl std::io::Read,
    declared: Option<Hash>,
    tx: tokio::sync::mpsc::Sender<UploadRequest>,
) -> Result<()> {
    let mut whole = blake3::Hasher::new();
    let reader = std::io::BufReader::new(file);
    for (index, data) in dupla::chunk::Chunker::new(reader).enumerate() {
        let data = data?;
        whole.update(&data);
        let chunk = dupla::chunk::make(index as u64, data);
        let message = UploadRequest {
            msg: Some(upload_request::Msg::Chunk(chunk)),
        };
        if tx.blocking_send(message).is_err() {
            return Ok(()); // the upload call failed: its error says why
        }
    }
    let hash = declared.unwrap_or_else(|| Hash::from(whole.finalize()));
    let end = UploadRequest {
        msg: Some(upload_request::Msg::End(UploadEnd {
            blake3: hash.to_bytes(),
        })),
    };
    let _ = tx.blocking_send(end);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_uploads_count_against_the_quota() {
        let quota = dupla::v1::QuotaReply {
            quota_bytes: 100,
            quota_files: 3,
            used_bytes: 40,
            used_files: 1,
            ..Default::default()
        };
        assert!(check_quota(&quota, 0, 0, 60).is_ok());
        assert!(matches!(
            check_quota(&quota, 1, 30, 31),
            Err(Error::Exhausted(m)) if m.contains("over your quota")
        ));
        assert!(
            check_quota(&quota, 2, 0, 1).is_err(),
            "a fourth file version"
        );
        let unlimited = dupla::v1::QuotaReply::default();
        assert!(check_quota(&unlimited, 1000, u64::MAX, u64::MAX).is_ok());
    }
}
