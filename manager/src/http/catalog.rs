//! The caller's files and snapshots (`dupla.v1.Manager` List, Lookup and
//! Remove; `dupla.v1.Snapshots` List and Entries), and `POST /api/uploads`,
//! which names the storage server an upload goes to: the manager sees
//! metadata only, never file bytes.

use super::types::{
    Entry, EntryFilter, File, FileFilter, FilePage, FileRef, PlaceUpload, Snapshot, UploadTarget,
};
use super::{Api, Caller};
use crate::cluster::membership::Liveness;
use axum::extract::State;
use axum::Json;
use dupla::v1::manager_server::Manager as _;
use dupla::v1::snapshots_server::Snapshots as _;
use dupla::v1::{self as pb};
use dupla::web::{ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use dupla::{name, Error};
use futures::StreamExt;
use std::time::Instant;

/// Default and largest page of a listing: a browser renders a thousand
/// rows comfortably; more is paged.
const DEFAULT_PAGE: usize = 1000;
const MAX_PAGE: usize = 10_000;

fn page_size(limit: Option<usize>) -> usize {
    limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
}

#[utoipa::path(get, path = "/api/files", tag = "catalog", params(FileFilter),
    responses((status = 200, description = "The caller's files (latest version of each), by name", body = FilePage),
        (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
/// Search and filter the caller's files by name, size and date.
pub async fn list_files(
    State(api): State<Api>,
    caller: Caller,
    ApiQuery(f): ApiQuery<FileFilter>,
) -> ApiResult<Json<FilePage>> {
    let request = caller.request(pb::ListRequest {
        pattern: f.q.clone(),
    });
    let files = api.manager.list(request).await?.into_inner().files;
    let matching: Vec<pb::FileEntry> = files
        .into_iter()
        .filter(|e| f.min_size.is_none_or(|m| e.size >= m))
        .filter(|e| f.max_size.is_none_or(|m| e.size <= m))
        .filter(|e| f.after_ms.is_none_or(|t| e.committed_unix_ms >= t))
        .filter(|e| f.before_ms.is_none_or(|t| e.committed_unix_ms < t))
        .collect();
    let total = matching.len();
    let files = matching
        .into_iter()
        .skip(f.offset)
        .take(page_size(f.limit))
        .map(File::from)
        .collect();
    Ok(Json(FilePage { total, files }))
}

#[utoipa::path(get, path = "/api/file", tag = "catalog", params(FileRef),
    responses((status = 200, body = File),
        (status = 400, description = "A name no upload could have stored (empty, `..`, over 1024 bytes)", body = ErrorBody),
        (status = 404, description = "Not one of the caller's files", body = ErrorBody)),
    security(("bearer" = [])))]
/// One file's details.
pub async fn file_details(
    State(api): State<Api>,
    caller: Caller,
    ApiQuery(r): ApiQuery<FileRef>,
) -> ApiResult<Json<File>> {
    let request = caller.request(pb::LookupRequest {
        name: r.name,
        version: r.version,
    });
    Ok(Json(api.manager.lookup(request).await?.into_inner().into()))
}

#[utoipa::path(delete, path = "/api/file", tag = "catalog", params(FileRef),
    responses((status = 200, description = "Removed from the catalog", body = File),
        (status = 400, description = "A name no upload could have stored", body = ErrorBody),
        (status = 403, description = "Viewers may not delete", body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
/// Remove a file (every version no snapshot keeps).
pub async fn remove_file(
    State(api): State<Api>,
    caller: Caller,
    ApiQuery(r): ApiQuery<FileRef>,
) -> ApiResult<Json<File>> {
    let reply = api
        .manager
        .remove(caller.request(pb::RemoveRequest { name: r.name }))
        .await?
        .into_inner();
    let removed = reply
        .removed
        .ok_or_else(|| Error::Internal("Remove answered no entry".into()))?;
    Ok(Json(removed.into()))
}

#[utoipa::path(get, path = "/api/snapshots", tag = "catalog",
    responses((status = 200, description = "The caller's snapshots, oldest first", body = Vec<Snapshot>),
        (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
/// The caller's snapshots.
pub async fn list_snapshots(
    State(api): State<Api>,
    caller: Caller,
) -> ApiResult<Json<Vec<Snapshot>>> {
    let mut stream = api
        .snapshots
        .list(caller.request(pb::ListSnapshotsRequest { paths: vec![] }))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(info) = stream.next().await {
        out.push(info?.into());
    }
    Ok(Json(out))
}

#[utoipa::path(get, path = "/api/snapshots/{id}/entries", tag = "catalog",
    params(("id" = String, Path, description = "Snapshot id"), EntryFilter),
    responses((status = 200, description = "Entries in path order", body = Vec<Entry>),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
/// The entries of one snapshot (restore a file with its `path` and `version`).
pub async fn snapshot_entries(
    State(api): State<Api>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(f): ApiQuery<EntryFilter>,
) -> ApiResult<Json<Vec<Entry>>> {
    let request = caller.request(pb::SnapshotEntriesRequest {
        id,
        prefix: f.prefix,
    });
    let mut stream = api.snapshots.entries(request).await?.into_inner();
    let limit = page_size(f.limit);
    let mut out = Vec::new();
    // The stream is dropped at the limit: the manager stops reading pages.
    while let Some(batch) = stream.next().await {
        out.extend(batch?.entries.into_iter().map(Entry::from));
        if out.len() >= limit {
            out.truncate(limit);
            break;
        }
    }
    Ok(Json(out))
}

#[utoipa::path(post, path = "/api/uploads", tag = "catalog", request_body = PlaceUpload,
    responses((status = 200, description = "Stage the file at this server", body = UploadTarget),
        (status = 403, description = "Viewers may not back up", body = ErrorBody),
        (status = 429, description = "Over quota", body = ErrorBody),
        (status = 503, description = "No server with an HTTP API is up", body = ErrorBody)),
    security(("bearer" = [])))]
/// Where to upload a file: the caller's assigned server if it is up and
/// has an HTTP API, else another that is. Checks role, name and quota
/// first, so a refused upload sends no bytes.
pub async fn place_upload(
    State(api): State<Api>,
    caller: Caller,
    ApiJson(p): ApiJson<PlaceUpload>,
) -> ApiResult<Json<UploadTarget>> {
    let auth = crate::identity::auth::Authenticator::new(api.tokens.clone());
    let session = auth.check_token(caller.token.as_deref().unwrap_or_default())?;
    crate::identity::auth::may_write(&api.accounts_db, &session, "back up files")?;
    name::validate(&p.name)?;
    api.manager.check_quota(&session.login, &p.name, p.size)?;
    let assigned = session.server.map(|s| s.id);
    let membership = api.state.lock_membership();
    let now = Instant::now();
    let usable = |m: &&crate::cluster::membership::Member| {
        !m.report.http.is_empty() && membership.liveness(m, now) == Liveness::Up
    };
    let chosen = assigned
        .as_deref()
        .and_then(|id| membership.get(id))
        .filter(usable)
        .or_else(|| {
            membership
                .members()
                .filter(usable)
                .min_by_key(|m| m.report.active)
        })
        .ok_or_else(|| {
            Error::Unavailable("no storage server with an HTTP API is up; retry shortly".into())
        })?;
    Ok(Json(UploadTarget {
        url: chosen.report.http.clone(),
        server: chosen.node.addr.clone(),
    }))
}
