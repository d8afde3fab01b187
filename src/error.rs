//! One error type for the whole cluster, named for what the caller should
//! do about it, mapped to a gRPC status in exactly one place and back.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Status metadata naming the [`Error`] variant when the gRPC code alone
/// does not (an `Io` error travels as `INTERNAL`).
pub const ERROR_KIND_METADATA: &str = "dupla-error-kind";

/// [`ERROR_KIND_METADATA`] value of [`Error::Io`].
const IO_KIND: &str = "io";

/// Result with Dupla's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, by what the caller should do next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is wrong; retrying it unchanged will fail again.
    #[error("{0}")]
    InvalidInput(String),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing exists already or is being written by someone else.
    #[error("{0}")]
    AlreadyExists(String),
    /// A node is down or unreachable: retry, possibly elsewhere.
    #[error("{0}")]
    Unavailable(String),
    /// Stored or transmitted bytes do not match their blake3.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The caller has no valid credentials (user tokens, a later feature;
    /// a missing cluster secret is `PermissionDenied`).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but not allowed to do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// Not enough space (or servers) to take the data.
    #[error("{0}")]
    Exhausted(String),
    /// The operation was interrupted midway; it can be run again.
    #[error("{0}")]
    Aborted(String),
    /// What the request built on is gone (a resumed upload's chunks were
    /// lost): run it again from the start.
    #[error("{0}")]
    Stale(String),
    /// A local disk or file error. Not marked as the error's source: the
    /// message already says it, and a printed cause chain (`{:#}`) would
    /// repeat it.
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    /// A bug or broken invariant.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Io(e)
    }
}

impl Error {
    /// Whether the same request may succeed if retried (here or on another node).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_) | Error::Aborted(_) | Error::Io(_)
        )
    }

    /// The same kind of error with its message rewritten by `f` (to add
    /// what the user can do about it).
    pub fn map_message(self, f: impl FnOnce(&str) -> String) -> Error {
        match self {
            Error::InvalidInput(m) => Error::InvalidInput(f(&m)),
            Error::NotFound(m) => Error::NotFound(f(&m)),
            Error::AlreadyExists(m) => Error::AlreadyExists(f(&m)),
            Error::Unavailable(m) => Error::Unavailable(f(&m)),
            Error::Corrupt(m) => Error::Corrupt(f(&m)),
            Error::Unauthenticated(m) => Error::Unauthenticated(f(&m)),
            Error::PermissionDenied(m) => Error::PermissionDenied(f(&m)),
            Error::Exhausted(m) => Error::Exhausted(f(&m)),
            Error::Aborted(m) => Error::Aborted(f(&m)),
            Error::Stale(m) => Error::Stale(f(&m)),
            Error::Io(e) => Error::Io(std::io::Error::new(e.kind(), f(&e.to_string()))),
            Error::Internal(m) => Error::Internal(f(&m)),
        }
    }

    /// Map a gRPC status received from a peer back into an [`Error`]: the
    /// same variant and message it was sent as (see `From<Error> for
    /// Status`), so an error crossing several hops keeps its retry class
    /// and gains no prefix.
    pub fn from_status(status: Status) -> Self {
        let msg = status.message().to_string();
        let kind = status
            .metadata()
            .get(ERROR_KIND_METADATA)
            .and_then(|v| v.to_str().ok());
        if kind == Some(IO_KIND) {
            return Error::Io(std::io::Error::other(msg));
        }
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Error::InvalidInput(msg),
            Code::FailedPrecondition => Error::Stale(msg),
            Code::NotFound => Error::NotFound(msg),
            Code::AlreadyExists => Error::AlreadyExists(msg),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                Error::Unavailable(if msg.is_empty() {
                    "node unreachable".into()
                } else {
                    msg
                })
            }
            Code::DataLoss => Error::Corrupt(msg),
            Code::Unauthenticated => Error::Unauthenticated(msg),
            Code::PermissionDenied => Error::PermissionDenied(msg),
            Code::ResourceExhausted => Error::Exhausted(msg),
            Code::Aborted => Error::Aborted(msg),
            _ => Error::Internal(msg),
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        match err {
            Error::InvalidInput(m) => Status::invalid_argument(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Corrupt(m) => Status::data_loss(m),
            Error::Unauthenticated(m) => Status::unauthenticated(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::Exhausted(m) => Status::resource_exhausted(m),
            Error::Aborted(m) => Status::aborted(m),
            Error::Stale(m) => Status::failed_precondition(m),
            Error::Io(e) => {
                // No gRPC code means "a disk failed, retry": the variant
                // travels in metadata and `from_status` restores it.
                let mut status = Status::internal(e.to_string());
                status
                    .metadata_mut()
                    .insert(ERROR_KIND_METADATA, MetadataValue::from_static(IO_KIND));
                status
            }
            Error::Internal(m) => Status::internal(m),
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Error::from_status(status)
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(err: tonic::transport::Error) -> Self {
        Error::Unavailable(format!("connection failed: {err}"))
    }
}

/// `Err(Error::InvalidInput(format!(...)))`, for early returns.
#[macro_export]
macro_rules! errinput {
    ($($arg:tt)*) => { Err($crate::Error::InvalidInput(format!($($arg)*))) };
}

/// `Err(Error::Corrupt(format!(...)))`, for early returns.
#[macro_export]
macro_rules! errcorrupt {
    ($($arg:tt)*) => { Err($crate::Error::Corrupt(format!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip_keeps_the_kind_the_message_and_the_retry_class() {
        let cases = [
            Error::InvalidInput("bad name".into()),
            Error::NotFound("no such file".into()),
            Error::AlreadyExists("running".into()),
            Error::Unavailable("server a:1 is down".into()),
            Error::Corrupt("chunk 3 differs".into()),
            Error::Unauthenticated("log in".into()),
            Error::PermissionDenied("not yours".into()),
            Error::Exhausted("full".into()),
            Error::Aborted("interrupted".into()),
            Error::Stale("gone".into()),
            Error::Io(std::io::Error::other("disk on fire")),
            Error::Internal("bug".into()),
        ];
        for err in cases {
            let (shown, debug, retryable) = (err.to_string(), variant(&err), err.is_retryable());
            // Two hops: the message must not grow at each.
            let back = Error::from_status(Status::from(Error::from_status(Status::from(err))));
            assert_eq!(variant(&back), debug, "{shown}");
            assert_eq!(back.to_string(), shown);
            assert_eq!(back.is_retryable(), retryable, "{shown}");
        }
    }

    fn variant(err: &Error) -> String {
        format!("{err:?}")
            .split('(')
            .next()
            .unwrap_or_default()
            .to_string()
    }
}
