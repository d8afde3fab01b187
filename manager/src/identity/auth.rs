//! The one check of user calls: the `authorization: Bearer <token>`
//! metadata, looked up in [`Tokens`]. Use it as a tonic interceptor (the
//! whole service needs a user: Rooms) or call [`Authenticator::check`] in the
//! handlers that need one (Accounts, where Register and Login do not).
//! Either way a missing, malformed, expired or revoked token is
//! `UNAUTHENTICATED` with a message that says what to do.

use crate::cluster::membership::NodeRef;
use crate::identity::tokens::Tokens;
use dupla::{clock, Error, Result};
use std::sync::{Arc, Mutex};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

pub use dupla::rpc::AUTHORIZATION_METADATA;

/// The logged-in user behind a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Whose token it is.
    pub login: String,
    /// The token's key (its blake3), to revoke it or match it later.
    pub token_key: String,
    /// When the token stops working, ms since the Unix epoch.
    pub expires_unix_ms: i64,
    /// The storage server assigned at login.
    pub server: Option<NodeRef>,
}

/// Checks bearer tokens against the live [`Tokens`]. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    tokens: Arc<Mutex<Tokens>>,
}

impl Authenticator {
    /// Check against `tokens`.
    pub fn new(tokens: Arc<Mutex<Tokens>>) -> Self {
        Authenticator { tokens }
    }

    /// The session of the token in `metadata`, or `Unauthenticated`.
    pub fn check(&self, metadata: &MetadataMap) -> Result<Session> {
        let token = bearer(metadata)?;
        self.check_token(token)
    }

    /// The session of `token` itself, or `Unauthenticated`. A successful
    /// check counts as activity of the session.
    pub fn check_token(&self, token: &str) -> Result<Session> {
        let now_ms = clock::unix_ms();
        let mut tokens = self.tokens.lock().expect("tokens lock poisoned");
        let (token_key, record) = tokens.check(token, now_ms)?;
        tokens.touch(&token_key, now_ms);
        drop(tokens);
        Ok(Session {
            login: record.login,
            token_key,
            expires_unix_ms: record.expires_unix_ms,
            server: record.server,
        })
    }

    /// Whether the token stored under `token_key` still works now (sessions
    /// that outlive their call, like a chat, recheck with this). A session
    /// that is still valid counts as active: an open chat keeps it connected.
    pub fn still_valid(&self, session: &Session) -> bool {
        let now_ms = clock::unix_ms();
        if session.expires_unix_ms <= now_ms {
            return false;
        }
        let mut tokens = self.tokens.lock().expect("tokens lock poisoned");
        let known = tokens.is_known(&session.token_key);
        if known {
            tokens.touch(&session.token_key, now_ms);
        }
        known
    }
}

/// Refuse `session` an action that writes (`what`, for the message) when
/// its account is a viewer: viewers may list and restore only. The same
/// check guards gRPC and HTTP, since both call the same services.
pub fn may_write(
    accounts: &crate::identity::accounts::Accounts,
    session: &Session,
    what: &str,
) -> Result<()> {
    let role = accounts
        .get(&session.login)?
        .map(|a| a.role())
        .ok_or_else(|| {
            Error::Unauthenticated(format!("the account {:?} no longer exists", session.login))
        })?;
    if !role.may_write() {
        return Err(Error::PermissionDenied(format!(
            "{} is a viewer: viewers may list and restore, not {what}; ask an admin for the user role",
            session.login
        )));
    }
    Ok(())
}

/// The token of an `authorization: Bearer <token>` entry in `metadata`.
pub fn bearer(metadata: &MetadataMap) -> Result<&str> {
    let value = metadata.get(AUTHORIZATION_METADATA).ok_or_else(|| {
        Error::Unauthenticated(
            "not logged in: this call needs `authorization: Bearer <token>`; run `dupla login USER` first"
                .into(),
        )
    })?;
    let text = value.to_str().map_err(|_| {
        Error::Unauthenticated("the authorization metadata is not readable text".into())
    })?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::Unauthenticated("the authorization metadata must be `Bearer <token>`".into())
        })?;
    Ok(token)
}

/// The session an [`Authenticator`] interceptor attached to `request`.
pub fn session<T>(request: &Request<T>) -> Result<Session> {
    request
        .extensions()
        .get::<Session>()
        .cloned()
        .ok_or_else(|| {
            Error::Internal("invariant: this service runs behind the authenticator".into())
        })
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> std::result::Result<Request<()>, Status> {
        let session = self.check(request.metadata())?;
        request.extensions_mut().insert(session);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dupla::kv::MemoryKv;
    use std::time::Duration;
    use tonic::service::Interceptor;

    fn auth() -> (Authenticator, String) {
        let mut tokens = Tokens::load(Arc::new(MemoryKv::new()), clock::unix_ms()).unwrap();
        let (token, _) = tokens
            .issue("ada", None, Duration::from_secs(60), clock::unix_ms())
            .unwrap();
        (Authenticator::new(Arc::new(Mutex::new(tokens))), token)
    }

    fn with(value: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(AUTHORIZATION_METADATA, value.parse().unwrap());
        request
    }

    #[test]
    fn the_interceptor_attaches_the_session() {
        let (mut auth, token) = auth();
        let request = auth.call(with(&format!("Bearer {token}"))).unwrap();
        let session = session(&request).unwrap();
        assert_eq!(session.login, "ada");
        assert!(auth.still_valid(&session));
    }

    #[test]
    fn missing_or_bad_tokens_are_unauthenticated_with_a_reason() {
        let (mut auth, token) = auth();
        let cases = [
            (Request::new(()), "not logged in"),
            (with(&token), "Bearer <token>"),
            (with("Bearer "), "Bearer <token>"),
            (with("Bearer 00ff"), "unknown or was revoked"),
        ];
        for (request, reason) in cases {
            let status = auth.call(request).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(status.message().contains(reason), "{status:?}");
        }
    }
}
