//! A gate in front of a gRPC service that decides on the headers alone,
//! before a byte of the body is read: calls internal to the cluster need
//! the cluster secret, user calls a valid bearer token, and calls that need
//! neither may send at most [`MAX_CLIENT_MESSAGE_BYTES`]. So a
//! request that fails the secret or token check never makes the manager
//! buffer more than that, whatever the service's own decoding limit (which
//! is 64 MiB for catalog entries, and applies only once the secret passed).
//!
//! Handlers keep their own checks: the gate only refuses early.

use crate::identity::auth::Authenticator;
use dupla::rpc::Secret;
use std::convert::Infallible;
use std::pin::Pin;
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Bytes, Context, Poll, Service};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::Status;

/// Largest request body of a call that does not carry the cluster secret:
/// user calls to the manager (lookups, listings, chat lines, logins) are
/// small, so 64 KiB is plenty and bounds what an outsider can make the
/// manager buffer per stream.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 64 << 10;

/// What a call needs before its body is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// The cluster secret (server-to-manager calls); large bodies allowed.
    Secret,
    /// A valid bearer token; then the service's own limit applies.
    User,
    /// Nothing (login, register, public status); small bodies only.
    Nothing,
}

/// A service behind the gate; `rule` says what each method (the last part
/// of the path, `Commit`) needs.
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    secret: Secret,
    auth: Authenticator,
    rule: fn(&str) -> Need,
}

impl<S> Gate<S> {
    /// Guard `inner` with `rule`, checking against `secret` and `auth`.
    pub fn new(inner: S, secret: Secret, auth: Authenticator, rule: fn(&str) -> Need) -> Self {
        Gate {
            inner,
            secret,
            auth,
            rule,
        }
    }

    /// Whether the call may go on; how many body bytes it may send.
    fn admit(&self, request: &http::Request<Body>) -> Result<Option<usize>, Status> {
        let method = request.uri().path().rsplit('/').next().unwrap_or_default();
        let metadata = || MetadataMap::from_headers(request.headers().clone());
        match (self.rule)(method) {
            Need::Secret => {
                let call = tonic::Request::from_parts(metadata(), Default::default(), ());
                self.secret.check(&call)?;
                Ok(None)
            }
            Need::User => {
                self.auth.check(&metadata())?;
                Ok(None)
            }
            Need::Nothing => Ok(Some(MAX_CLIENT_MESSAGE_BYTES)),
        }
    }
}

impl<S> Service<http::Request<Body>> for Gate<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self.admit(&request) {
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
            Ok(None) => Box::pin(self.inner.call(request)),
            Ok(Some(limit)) => {
                let request = request.map(|body| {
                    Body::new(Limited {
                        inner: body,
                        // The 5-byte gRPC frame header of each message.
                        left: limit + 5,
                    })
                });
                Box::pin(self.inner.call(request))
            }
        }
    }
}

impl<S: NamedService> NamedService for Gate<S> {
    const NAME: &'static str = S::NAME;
}

/// A request body cut off with `RESOURCE_EXHAUSTED` past `left` bytes.
struct Limited {
    inner: Body,
    left: usize,
}

impl http_body::Body for Limited {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            let len = frame.data_ref().map_or(0, Bytes::len);
            if len > this.left {
                this.left = 0;
                return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                    "request too large: calls without the cluster secret may send at most {MAX_CLIENT_MESSAGE_BYTES} bytes"
                )))));
            }
            this.left -= len;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What each `dupla.v1.Manager` method needs.
pub fn manager_rule(method: &str) -> Need {
    match method {
        "Heartbeat" | "Place" | "Commit" | "ReportCorrupt" | "Abort" | "ReportStored"
        | "ChunkRefs" => Need::Secret,
        "Lookup" | "List" | "Remove" | "SetQuota" | "GetQuota" | "LaunchServer" | "DrainServer"
        | "RetireServer" => Need::User,
        _ => Need::Nothing,
    }
}

/// Every `dupla.v1.Snapshots` method acts for a user.
pub fn user_rule(_method: &str) -> Need {
    Need::User
}
