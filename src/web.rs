//! HTTP beside gRPC (docs/web.md): the pieces every node's HTTP API shares.
//! Errors are JSON `{"code", "message"}` with a stable `code` per
//! [`Error`] variant, mapped here in one place; bad input (unparsable JSON,
//! a wrong query, a body over the limit) is a 4xx with the same shape,
//! never a 500. Handlers reach the node's gRPC services in-process with the
//! caller's bearer token ([`grpc_request`]), so HTTP and gRPC share every
//! check: tokens, roles, ownership.

use crate::shutdown::Shutdown;
use crate::{Error, Result};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Largest JSON body the API reads (logins, registrations, role changes):
/// small, and enforced before the token is checked.
pub const MAX_JSON_BODY_BYTES: usize = 64 << 10;

/// The body of every error answer.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: `invalid_input`, `not_found`,
    /// `already_exists`, `unavailable`, `corrupt`, `unauthenticated`,
    /// `permission_denied`, `exhausted`, `aborted`, `stale`, `too_large`,
    /// `unsupported_media_type`, `range_not_satisfiable`, `internal`.
    pub code: String,
    /// What went wrong and what to do next, for people.
    pub message: String,
}

/// An error answer: an HTTP status and an [`ErrorBody`].
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status sent.
    pub status: StatusCode,
    /// JSON body sent.
    pub body: ErrorBody,
}

/// Result of an HTTP handler.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                code: code.into(),
                message: message.into(),
            },
        }
    }

    /// 400 `invalid_input`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// 404 `not_found` (unknown routes too).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let (status, code) = match &err {
            Error::InvalidInput(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::AlreadyExists(_) => (StatusCode::CONFLICT, "already_exists"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::Corrupt(_) => (StatusCode::BAD_GATEWAY, "corrupt"),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Error::PermissionDenied(_) => (StatusCode::FORBIDDEN, "permission_denied"),
            Error::Exhausted(_) => (StatusCode::TOO_MANY_REQUESTS, "exhausted"),
            Error::Aborted(_) => (StatusCode::CONFLICT, "aborted"),
            Error::Stale(_) => (StatusCode::CONFLICT, "stale"),
            Error::Io(_) | Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, err.to_string())
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Error::from_status(status).into()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "invalid_input",
        };
        // 422 (well-formed but wrong fields) is still bad input: one 400.
        let status = if code == "invalid_input" {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        ApiError::new(status, code, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::invalid(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::invalid(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = %self.body.code, message = %self.body.message, "HTTP API error");
        }
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// A JSON body whose rejection is an [`ApiError`] (axum's own is plain text).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> std::result::Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

/// A query string whose rejection is an [`ApiError`].
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> std::result::Result<Self, ApiError> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

/// A path parameter whose rejection is an [`ApiError`].
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> std::result::Result<Self, ApiError> {
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

/// Add to `doc` the error answers a route gives whatever its handler does,
/// unless it documents them itself: 400 when it takes a query, path or
/// body (the extractors refuse malformed ones), 401 when it needs a token,
/// 413 and 415 when it reads JSON. Then every status a client can see is
/// in the document (`scripts/api-fuzz.sh` checks that with schemathesis).
pub fn document_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{Ref, ResponseBuilder};
    let error = |what: &str| {
        ResponseBuilder::new()
            .description(what)
            .content(
                "application/json",
                utoipa::openapi::Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            )
            .build()
    };
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            let json_body = op
                .request_body
                .as_ref()
                .is_some_and(|b| b.content.contains_key("application/json"));
            let mut common = Vec::new();
            if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) || op.request_body.is_some() {
                common.push((
                    "400",
                    "Bad input: a malformed query, path or body (`invalid_input`)",
                ));
            }
            if op.security.is_some() {
                common.push((
                    "401",
                    "No token, or one that is unknown, expired or revoked (`unauthenticated`)",
                ));
            }
            if json_body {
                common.push(("413", "The JSON body is over 64 KiB (`too_large`)"));
                common.push((
                    "415",
                    "The body is not `application/json` (`unsupported_media_type`)",
                ));
            }
            for (status, what) in common {
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| error(what).into());
            }
        }
    }
}

/// The bearer token of an `Authorization: Bearer <token>` header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let text = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    text.strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// A gRPC request carrying `token` as its `authorization` metadata (as
/// the `dupla` client sends it), from `peer` (throttles key on it).
pub fn grpc_request<T>(
    token: Option<&str>,
    peer: Option<SocketAddr>,
    message: T,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = token.and_then(|t| format!("Bearer {t}").parse().ok()) {
        request
            .metadata_mut()
            .insert(crate::rpc::AUTHORIZATION_METADATA, value);
    }
    if let Some(peer) = peer {
        request
            .extensions_mut()
            .insert(tonic::transport::server::TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(peer),
            });
    }
    request
}

/// An `http` setting: empty or `off` disables the node's HTTP listener.
pub fn http_enabled(addr: &str) -> Option<&str> {
    let addr = addr.trim();
    (!addr.is_empty() && !addr.eq_ignore_ascii_case("off")).then_some(addr)
}

/// Serve `router` on `listener` until `shutdown` fires. Callers see the
/// peer address through `ConnectInfo<SocketAddr>`.
pub async fn serve(
    router: axum::Router,
    listener: TcpListener,
    mut shutdown: Shutdown,
) -> Result<()> {
    let addr = listener.local_addr()?;
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.wait().await })
    .await
    .map_err(|e| Error::Internal(format!("HTTP server on {addr} failed: {e}")))
}

/// Answer for routes that do not exist: a JSON 404, as for any API error.
pub async fn no_such_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {}; see /api/openapi.json", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_has_a_stable_code_and_4xx_for_bad_input() {
        let e = ApiError::from(Error::InvalidInput("x".into()));
        assert_eq!(
            (e.status, e.body.code.as_str()),
            (StatusCode::BAD_REQUEST, "invalid_input")
        );
        let e = ApiError::from(tonic::Status::permission_denied("no"));
        assert_eq!(
            (e.status, e.body.code.as_str()),
            (StatusCode::FORBIDDEN, "permission_denied")
        );
        let e = ApiError::from(tonic::Status::unauthenticated("who"));
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn bearer_tokens_and_off_switches() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        assert_eq!(http_enabled("off"), None);
        assert_eq!(http_enabled(""), None);
        assert_eq!(http_enabled("127.0.0.1:0"), Some("127.0.0.1:0"));
    }
}
