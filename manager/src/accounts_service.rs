//! `dupla.v1.Accounts`: register, login, logout, unregister, who-am-I and
//! user administration. Handlers translate wire messages and call the
//! pieces that decide: `accounts.rs` (records and password hashes),
//! `tokens.rs` (bearer tokens), `throttle.rs` (failed-login lockout),
//! `sessions.rs` (which storage server a login is sent to) and `auth.rs`
//! (the token check).
//!
//! argon2 runs on blocking threads, at most [`MAX_CONCURRENT_HASHES`] at a
//! time, so logins never stall the async runtime and a burst of them
//! cannot take all the memory (each hash uses 19 MiB).

use crate::accounts::{self, Account, Accounts, NewAccount};
use crate::auth::{Authenticator, Session};
use crate::room_hub::Hub;
use crate::sessions;
use crate::state::State;
use crate::throttle::LoginFailures;
use crate::tokens::Tokens;
use dupla::v1::accounts_server::Accounts as AccountsRpc;
use dupla::v1::{self as pb};
use dupla::{clock, Error, Result};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Semaphore;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

/// Password hashes computed at once: one per core of a small machine.
pub const MAX_CONCURRENT_HASHES: usize = 2;

/// The Accounts service.
#[derive(Clone)]
pub struct AccountsService {
    inner: Arc<Inner>,
}

struct Inner {
    state: Arc<State>,
    accounts: Arc<Accounts>,
    tokens: Arc<Mutex<Tokens>>,
    auth: Authenticator,
    hub: Arc<Hub>,
    failures: Mutex<LoginFailures>,
    hashing: Semaphore,
}

type Reply<T> = std::result::Result<Response<T>, Status>;

impl AccountsService {
    /// Serve `accounts` and `tokens`; `state` gives the membership and
    /// settings, `hub` the chat presence (and the sessions to end when an
    /// account goes).
    pub fn new(
        state: Arc<State>,
        accounts: Arc<Accounts>,
        tokens: Arc<Mutex<Tokens>>,
        hub: Arc<Hub>,
    ) -> Self {
        AccountsService {
            inner: Arc::new(Inner {
                auth: Authenticator::new(tokens.clone()),
                state,
                accounts,
                tokens,
                hub,
                failures: Mutex::new(LoginFailures::new()),
                hashing: Semaphore::new(MAX_CONCURRENT_HASHES),
            }),
        }
    }
}

impl Inner {
    /// Run password hashing work on a blocking thread, a few at a time.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("the manager is shutting down".into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::Internal(format!("password hashing task: {e}")))
    }

    /// Whether `password` is `login`'s. An unknown login is checked against
    /// a decoy hash, so it takes as long as a wrong password.
    async fn password_matches(&self, login: &str, password: &str) -> Result<Option<Account>> {
        let account = self.accounts.get(login)?;
        let hash = account.as_ref().map_or_else(
            || accounts::decoy_hash().to_string(),
            |a| a.password_hash.clone(),
        );
        let password = password.to_string();
        let ok = self
            .blocking(move || accounts::verify_password(&password, &hash))
            .await?;
        Ok(account.filter(|_| ok))
    }

    /// Refuse while `login` is locked out after failures.
    fn check_lockout(&self, login: &str) -> Result<()> {
        let failures = self.failures.lock().expect("login failures lock poisoned");
        failures.check(login, Instant::now()).map_err(|wait| {
            Error::Exhausted(format!(
                "too many failed logins for {login:?}; try again in {} s",
                wait.as_secs().max(1)
            ))
        })
    }

    /// Count a failure for `login`, and say what is wrong.
    fn fail(&self, login: &str) -> Error {
        let locked = self
            .failures
            .lock()
            .expect("login failures lock poisoned")
            .fail(login, Instant::now());
        if locked {
            tracing::warn!(%login, "login locked out after repeated failures");
        }
        Error::Unauthenticated("wrong login or password".into())
    }

    async fn register(&self, req: pb::RegisterRequest) -> Result<pb::RegisterReply> {
        let new = NewAccount {
            login: req.login,
            first_names: req.first_names,
            last_names: req.last_names,
            age: req.age,
            gender: req.gender,
            password: req.password,
        };
        accounts::validate(&new)?;
        if self.accounts.exists(&new.login)? {
            return Err(Error::AlreadyExists(format!(
                "login {:?} is taken; choose another",
                new.login
            )));
        }
        let password = new.password.clone();
        let password_hash = self
            .blocking(move || accounts::hash_password(&password))
            .await??;
        let account = self.accounts.create(Account {
            login: new.login,
            first_names: new.first_names,
            last_names: new.last_names,
            age: new.age,
            gender: new.gender,
            password_hash,
            admin: false,
            registered_unix_ms: clock::unix_ms(),
        })?;
        tracing::info!(login = %account.login, admin = account.admin, "registered");
        if account.admin {
            crate::adopt_legacy_files(&self.state, &account.login)?;
        }
        Ok(pb::RegisterReply {
            user: Some(self.user(&account)),
        })
    }

    async fn login(&self, req: pb::LoginRequest) -> Result<pb::LoginReply> {
        if req.login.len() > accounts::MAX_LOGIN_LEN
            || req.password.len() > accounts::MAX_PASSWORD_BYTES
        {
            return Err(Error::Unauthenticated("wrong login or password".into()));
        }
        self.check_lockout(&req.login)?;
        let Some(account) = self.password_matches(&req.login, &req.password).await? else {
            return Err(self.fail(&req.login));
        };
        self.failures
            .lock()
            .expect("login failures lock poisoned")
            .clear(&account.login);
        let config = &self.state.config;
        let now_ms = clock::unix_ms();
        let (token, record, over_capacity) = {
            let mut tokens = self.tokens.lock().expect("tokens lock poisoned");
            let counts = tokens.sessions_per_server(now_ms, config.session_idle);
            let loads = sessions::loads(&self.state, &counts, Instant::now());
            let assignment = sessions::assign(&loads, config.max_sessions);
            let over = assignment.as_ref().is_some_and(|a| a.over_capacity);
            let server = assignment.map(|a| a.node);
            let (token, record) = tokens.issue(&account.login, server, config.token_ttl, now_ms)?;
            (token, record, over)
        };
        // An account deleted while its password was being checked gets no
        // token (deletion revokes tokens, but this one may be newer).
        if !self.accounts.exists(&account.login)? {
            let key = crate::tokens::token_key(&token);
            self.tokens
                .lock()
                .expect("tokens lock poisoned")
                .revoke(&key)?;
            return Err(Error::Unauthenticated("wrong login or password".into()));
        }
        tracing::info!(login = %account.login, server = ?record.server.as_ref().map(|s| &s.addr),
            over_capacity, "logged in");
        Ok(pb::LoginReply {
            token,
            expires_unix_ms: record.expires_unix_ms,
            server: record.server.map(node),
            over_capacity,
            user: Some(self.user(&account)),
        })
    }

    fn logout(&self, session: Session) -> Result<pb::LogoutReply> {
        self.tokens
            .lock()
            .expect("tokens lock poisoned")
            .revoke(&session.token_key)?;
        self.hub.kick_token(&session.token_key, "you logged out");
        tracing::info!(login = %session.login, "logged out");
        Ok(pb::LogoutReply {})
    }

    async fn unregister(
        &self,
        session: Session,
        req: pb::UnregisterRequest,
    ) -> Result<pb::UnregisterReply> {
        self.check_lockout(&session.login)?;
        if self
            .password_matches(&session.login, &req.password)
            .await?
            .is_none()
        {
            return Err(self.fail(&session.login));
        }
        self.delete(&session.login, "your account was deleted")?;
        Ok(pb::UnregisterReply {})
    }

    /// Delete an account and its backups, revoke its tokens and end its
    /// chat sessions.
    fn delete(&self, login: &str, reason: &str) -> Result<Account> {
        let account = self
            .accounts
            .delete(login)?
            .ok_or_else(|| Error::NotFound(format!("no user named {login:?}")))?;
        self.tokens
            .lock()
            .expect("tokens lock poisoned")
            .revoke_user(login)?;
        self.hub.kick_login(login, reason);
        let files = self.state.forget_owner(login)?;
        tracing::info!(%login, files, "account deleted with its files");
        Ok(account)
    }

    /// The account behind `session`; gone if it was deleted meanwhile.
    fn account_of(&self, session: &Session) -> Result<Account> {
        self.accounts.get(&session.login)?.ok_or_else(|| {
            Error::Unauthenticated(format!("the account {:?} no longer exists", session.login))
        })
    }

    /// Whether `account` has the admin role.
    fn is_admin(&self, account: &Account) -> bool {
        account.admin || self.state.config.admin.as_deref() == Some(account.login.as_str())
    }

    /// The caller, who must be an admin.
    fn admin(&self, metadata: &MetadataMap) -> Result<Account> {
        let account = self.account_of(&self.auth.check(metadata)?)?;
        if !self.is_admin(&account) {
            return Err(Error::PermissionDenied(format!(
                "{} is not an admin; user administration needs the admin role",
                account.login
            )));
        }
        Ok(account)
    }

    /// An account as others may see it: never its password hash.
    fn user(&self, account: &Account) -> pb::User {
        pb::User {
            login: account.login.clone(),
            first_names: account.first_names.clone(),
            last_names: account.last_names.clone(),
            age: account.age,
            gender: account.gender.clone(),
            admin: self.is_admin(account),
            registered_unix_ms: account.registered_unix_ms,
            online: self.hub.is_online(&account.login),
        }
    }
}

/// A membership node as a wire node.
fn node(n: crate::membership::NodeRef) -> pb::Node {
    pb::Node {
        id: n.id,
        addr: n.addr,
    }
}

#[tonic::async_trait]
impl AccountsRpc for AccountsService {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Reply<pb::RegisterReply> {
        Ok(Response::new(
            self.inner.register(request.into_inner()).await?,
        ))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Reply<pb::LoginReply> {
        Ok(Response::new(self.inner.login(request.into_inner()).await?))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Reply<pb::LogoutReply> {
        let session = self.inner.auth.check(request.metadata())?;
        Ok(Response::new(self.inner.logout(session)?))
    }

    async fn unregister(
        &self,
        request: Request<pb::UnregisterRequest>,
    ) -> Reply<pb::UnregisterReply> {
        let session = self.inner.auth.check(request.metadata())?;
        let reply = self.inner.unregister(session, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Reply<pb::WhoAmIReply> {
        let session = self.inner.auth.check(request.metadata())?;
        let account = self.inner.account_of(&session)?;
        Ok(Response::new(pb::WhoAmIReply {
            user: Some(self.inner.user(&account)),
            expires_unix_ms: session.expires_unix_ms,
            server: session.server.map(node),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Reply<pb::ListUsersReply> {
        self.inner.admin(request.metadata())?;
        let users = self
            .inner
            .accounts
            .all()?
            .iter()
            .map(|a| self.inner.user(a))
            .collect();
        Ok(Response::new(pb::ListUsersReply { users }))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Reply<pb::User> {
        self.inner.admin(request.metadata())?;
        let login = request.into_inner().login;
        let account = self
            .inner
            .accounts
            .get(&login)?
            .ok_or_else(|| Error::NotFound(format!("no user named {login:?}")))?;
        Ok(Response::new(self.inner.user(&account)))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Reply<pb::DeleteUserReply> {
        let admin = self.inner.admin(request.metadata())?;
        let login = request.into_inner().login;
        let account = self.inner.delete(
            &login,
            &format!("your account was deleted by {}", admin.login),
        )?;
        Ok(Response::new(pb::DeleteUserReply {
            deleted: Some(self.inner.user(&account)),
        }))
    }
}
