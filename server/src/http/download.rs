//! `GET /api/files/content?name=…`: a file's bytes over HTTP, from the same
//! reader as `Storage/Download` (any holder, every chunk checked against
//! its blake3, switching holder mid-file if one fails). `Range: bytes=a-b`
//! (one range) answers 206 with only those bytes, so browsers and `curl -C -`
//! resume; the stream starts at the chunk holding `a` and never buffers
//! the file. A browser link cannot set headers, so `?token=` may carry the
//! bearer token instead.

use super::Api;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use dupla::rpc::UserCredentials;
use dupla::v1::{download_response, DownloadRequest, DownloadResponse};
use dupla::web::{bearer, grpc_request, ApiError, ApiQuery, ApiResult};
use dupla::Error;
use futures::StreamExt;
use serde::Deserialize;
use utoipa::IntoParams;

/// Which file.
#[derive(Deserialize, IntoParams)]
pub struct Which {
    /// Catalog name.
    pub name: String,
    /// Version (0 or absent: the latest).
    #[serde(default)]
    pub version: u64,
    /// Bearer token, for links that cannot send `Authorization`.
    pub token: Option<String>,
}

/// A parsed `Range: bytes=start-[end]` (end inclusive), or a suffix
/// `bytes=-n` (the last n bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    /// From `start` to `end` (inclusive, or the end of the file).
    From(u64, Option<u64>),
    /// The last n bytes.
    Last(u64),
}

/// Parse a Range header; `Ok(None)` for none. Several ranges are refused.
pub fn parse_range(value: Option<&HeaderValue>) -> Result<Option<Range>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let bad = || {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable",
            "Range must be one `bytes=start-end`, `bytes=start-` or `bytes=-suffix`",
        )
    };
    let text = value.to_str().map_err(|_| bad())?.trim();
    let spec = text.strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') {
        return Err(bad());
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => Ok(Some(Range::Last(num(b)?))),
        (false, true) => Ok(Some(Range::From(num(a)?, None))),
        (false, false) => {
            let (start, end) = (num(a)?, num(b)?);
            if end < start {
                return Err(bad());
            }
            Ok(Some(Range::From(start, Some(end))))
        }
        (true, true) => Err(bad()),
    }
}

/// The byte span `[start, end]` of a `size`-byte file a range asks for.
fn span(range: Option<Range>, size: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let unsatisfiable = || {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable",
            format!("the file has {size} bytes"),
        )
    };
    match range {
        None => Ok(None),
        Some(_) if size == 0 => Err(unsatisfiable()),
        Some(Range::From(start, _)) if start >= size => Err(unsatisfiable()),
        Some(Range::From(start, end)) => Ok(Some((start, end.unwrap_or(size - 1).min(size - 1)))),
        Some(Range::Last(0)) => Err(unsatisfiable()),
        Some(Range::Last(n)) => Ok(Some((size.saturating_sub(n), size - 1))),
    }
}

#[utoipa::path(get, path = "/api/files/content", tag = "transfers",
    params(Which, ("Range" = Option<String>, Header, description = "bytes=start-end (one range)")),
    responses(
        (status = 200, description = "The whole file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The asked range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, body = dupla::web::ErrorBody),
        (status = 404, description = "No such file of yours", body = dupla::web::ErrorBody),
        (status = 416, body = dupla::web::ErrorBody)),
    security(("bearer" = [])))]
/// Download a file (or one byte range of it).
pub async fn content(
    State(api): State<Api>,
    headers: HeaderMap,
    ApiQuery(which): ApiQuery<Which>,
) -> ApiResult<Response> {
    let token = bearer(&headers)
        .map(str::to_string)
        .or(which.token.clone())
        .ok_or_else(|| {
            Error::Unauthenticated(
                "not logged in: send `Authorization: Bearer <token>` or `?token=`".into(),
            )
        })?;
    let range = parse_range(headers.get(header::RANGE))?;
    let credentials = UserCredentials::of(&grpc_request(Some(&token), None, ()))?;
    // A suffix range needs the size first: start at 0 and skip.
    let asked_start = match range {
        Some(Range::From(start, _)) => start,
        _ => 0,
    };
    let opened = crate::download::open(
        api.node.clone(),
        credentials,
        DownloadRequest {
            name: which.name.clone(),
            offset: asked_start,
            version: which.version,
        },
    )
    .await;
    let mut stream = match opened {
        Ok(stream) => stream,
        // An offset past the end: the range is the problem, not the name.
        Err(Error::InvalidInput(m)) if range.is_some() && m.contains("past the end") => {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                m,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let entry = match stream.next().await {
        Some(Ok(DownloadResponse {
            msg: Some(download_response::Msg::Header(entry)),
        })) => entry,
        Some(Err(status)) => return Err(status.into()),
        _ => return Err(Error::Internal("a download starts with its header".into()).into()),
    };
    let size = entry.size;
    let span = span(range, size)?;
    let (start, end) = span.unwrap_or((0, size.saturating_sub(1)));
    let length = if size == 0 { 0 } else { end - start + 1 };
    let layout = dupla::chunk::ChunkLayout::of(&entry)?;
    let first_chunk_at = layout.offset(layout.index_at(asked_start));
    let body = bytes_between(stream, first_chunk_at, start, length);
    let file_name = entry
        .name
        .rsplit('/')
        .next()
        .unwrap_or("download")
        .replace('"', "");
    let mut response = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, length)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file_name}\""),
        )
        .header("x-dupla-blake3", hex::encode(&entry.blake3))
        .header("x-dupla-version", entry.version);
    response = match span {
        Some(_) => response
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")),
        None => response.status(StatusCode::OK),
    };
    response
        .body(body)
        .map_err(|e| Error::Internal(format!("response: {e}")).into())
}

/// The body: the chunks of `stream` (the first one starting at byte `at`
/// of the file) cut down to `length` bytes from `start`. An error midway
/// ends the body early, so the client sees a short read, never wrong bytes.
fn bytes_between(
    stream: crate::download::DownloadStream,
    at: u64,
    start: u64,
    length: u64,
) -> Body {
    let state = (stream, at, length);
    let chunks = futures::stream::unfold(state, move |(mut stream, mut at, mut left)| async move {
        while left > 0 {
            let data = match stream.next().await {
                Some(Ok(DownloadResponse {
                    msg: Some(download_response::Msg::Chunk(chunk)),
                })) => chunk.data,
                Some(Ok(_)) => continue,
                Some(Err(status)) => {
                    let error = std::io::Error::other(status.message().to_string());
                    return Some((Err(error), (stream, at, 0)));
                }
                None => {
                    let error = std::io::Error::other("the download ended before the file did");
                    return Some((Err(error), (stream, at, 0)));
                }
            };
            let chunk_start = at;
            at += data.len() as u64;
            if at <= start {
                continue; // wholly before the range (suffix ranges)
            }
            let from = start.saturating_sub(chunk_start) as usize;
            let take = (data.len() - from).min(left.min(usize::MAX as u64) as usize);
            left -= take as u64;
            return Some((Ok(data.slice(from..from + take)), (stream, at, left)));
        }
        None
    });
    Body::from_stream(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<Range>, ApiError> {
        parse_range(Some(&HeaderValue::from_str(text).unwrap()))
    }

    #[test]
    fn ranges_parse_and_clip_to_the_file() {
        assert_eq!(
            parse("bytes=10-19").unwrap(),
            Some(Range::From(10, Some(19)))
        );
        assert_eq!(parse("bytes=10-").unwrap(), Some(Range::From(10, None)));
        assert_eq!(parse("bytes=-5").unwrap(), Some(Range::Last(5)));
        for bad in [
            "bytes=5-1",
            "bytes=1-2,4-5",
            "items=1-2",
            "bytes=-",
            "bytes=a-b",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().status,
                StatusCode::RANGE_NOT_SATISFIABLE,
                "{bad}"
            );
        }
        assert_eq!(
            span(Some(Range::From(10, Some(1000))), 100).unwrap(),
            Some((10, 99))
        );
        assert_eq!(span(Some(Range::Last(10)), 100).unwrap(), Some((90, 99)));
        assert!(span(Some(Range::From(100, None)), 100).is_err());
        assert_eq!(span(None, 100).unwrap(), None);
    }
}
