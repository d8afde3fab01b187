//! `dupla.v1.Accounts`: register, login, logout, unregister, who-am-I and
//! user administration. Handlers translate wire messages and call the
//! pieces that decide: `accounts.rs` (records and password hashes),
//! `tokens.rs` (bearer tokens), `throttle.rs` (back-off of password
//! guesses per source address and per login, counted before argon2 runs),
//! `sessions.rs` (which storage server a login is sent to) and `auth.rs`
//! (the token check).
//!
//! argon2 runs on blocking threads, at most [`MAX_CONCURRENT_HASHES`] at a
//! time, so logins never stall the async runtime and a burst of them
//! cannot take all the memory (each hash uses 19 MiB).

use crate::chat::room_hub::Hub;
use crate::identity::accounts::{self, Account, Accounts, NewAccount};
use crate::identity::auth::{Authenticator, Session};
use crate::identity::sessions;
use crate::identity::throttle::{LoginThrottle, RateLimits};
use crate::identity::tokens::Tokens;
use crate::state::State;
use dupla::v1::accounts_server::Accounts as AccountsRpc;
use dupla::v1::{self as pb};
use dupla::{clock, Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Semaphore;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

/// Password hashes computed at once: one per core of a small machine.
pub const MAX_CONCURRENT_HASHES: usize = 2;

/// Registrations one source address may make in a burst: room for a
/// classroom behind one NAT, or `dupla bench chat` with its default 200
/// clients.
pub const REGISTER_BURST: f64 = 250.0;
/// Registrations per second one source address may make, sustained.
pub const REGISTERS_PER_SEC: f64 = 0.2;

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
    /// The social graph and presence, cleared of an account when it goes.
    social: Arc<crate::social::graph::Social>,
    presence: Arc<crate::social::presence::Presence>,
    throttle: Mutex<LoginThrottle>,
    /// Registrations per source address.
    registrations: Mutex<RateLimits>,
    hashing: Semaphore,
    /// Password hashes computed or verified so far (tests check that
    /// refused guesses cost no hashing).
    hashes: AtomicU64,
    /// Launches a server when every one is full (issue 9, part 4).
    elastic: Option<Arc<crate::cluster::elastic::Elastic>>,
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
        (social, presence): (
            Arc<crate::social::graph::Social>,
            Arc<crate::social::presence::Presence>,
        ),
    ) -> Self {
        AccountsService {
            inner: Arc::new(Inner {
                auth: Authenticator::new(tokens.clone()),
                state,
                accounts,
                tokens,
                hub,
                social,
                presence,
                throttle: Mutex::new(LoginThrottle::new()),
                registrations: Mutex::new(RateLimits::new(REGISTERS_PER_SEC, REGISTER_BURST)),
                hashing: Semaphore::new(MAX_CONCURRENT_HASHES),
                hashes: AtomicU64::new(0),
                elastic: None,
            }),
        }
    }

    /// Launch servers through `elastic` when every one is full.
    pub fn with_elastic(mut self, elastic: Arc<crate::cluster::elastic::Elastic>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_elastic is called before the service is cloned")
            .elastic = Some(elastic);
        self
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
        self.hashes.fetch_add(1, Ordering::Relaxed);
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

    /// Check `password` against `login`'s, after the throttle admitted
    /// (and counted) the attempt from `source`: a refused guess costs no
    /// hashing, and parallel guesses are counted as surely as sequential
    /// ones. `Unauthenticated` when it is wrong.
    async fn throttled_password_check(
        &self,
        login: &str,
        password: &str,
        source: &str,
    ) -> Result<Account> {
        let admitted = self.lock_throttle().admit(login, source, Instant::now());
        if let Err(wait) = admitted {
            tracing::warn!(%login, %source, "password attempt refused: too many failures");
            return Err(Error::Exhausted(format!(
                "too many failed logins for {login:?} or from your address; try again in {} s",
                wait.as_secs().max(1)
            )));
        }
        let account = self
            .password_matches(login, password)
            .await?
            .ok_or_else(|| Error::Unauthenticated("wrong login or password".into()))?;
        self.lock_throttle().succeeded(login, source);
        Ok(account)
    }

    fn lock_throttle(&self) -> std::sync::MutexGuard<'_, LoginThrottle> {
        self.throttle.lock().expect("login throttle lock poisoned")
    }

    async fn register(&self, req: pb::RegisterRequest, source: &str) -> Result<pb::RegisterReply> {
        // Counted first, valid or not, before any hashing.
        let admitted = self
            .registrations
            .lock()
            .expect("registrations lock poisoned")
            .take(source, Instant::now());
        if let Err(wait) = admitted {
            return Err(Error::Exhausted(format!(
                "too many registrations from your address; try again in {} s",
                wait.as_secs().max(1)
            )));
        }
        let new = NewAccount {
            login: req.login,
            first_names: req.first_names,
            last_names: req.last_names,
            age: req.age,
            gender: req.gender,
            password: req.password,
        };
        accounts::validate(&new)?;
        if self.state.config.admin.as_deref() == Some(new.login.as_str()) {
            return Err(Error::PermissionDenied(format!(
                "login {:?} is reserved for the administrator, whom the operator creates with `dupla-manager admin create`; choose another",
                new.login
            )));
        }
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
        let account = self
            .accounts
            .create(new.into_account(password_hash, false))?;
        tracing::info!(login = %account.login, "registered");
        Ok(pb::RegisterReply {
            user: Some(self.user(&account)),
        })
    }

    async fn login(&self, req: pb::LoginRequest, source: &str) -> Result<pb::LoginReply> {
        if req.login.len() > accounts::MAX_LOGIN_LEN
            || req.password.len() > accounts::MAX_PASSWORD_BYTES
        {
            return Err(Error::Unauthenticated("wrong login or password".into()));
        }
        let account = self
            .throttled_password_check(&req.login, &req.password, source)
            .await?;
        let config = &self.state.config;
        let elastic = self.elastic.as_ref().filter(|e| e.enabled());
        let mut launched = false;
        let (token, record, over_capacity) = loop {
            // Some(issued), or None: every server is full and one may be
            // launched (at most once per login), with the tokens unlocked.
            let attempt = {
                let now_ms = clock::unix_ms();
                let mut tokens = self.tokens.lock().expect("tokens lock poisoned");
                let counts = tokens.sessions_per_server(now_ms, config.session_idle);
                let loads = sessions::loads(&self.state, &counts, Instant::now());
                let assignment = sessions::assign(&loads, config.max_sessions);
                let over = assignment.as_ref().is_some_and(|a| a.over_capacity);
                if over && !launched && elastic.is_some() {
                    None
                } else if over && config.refuse_over_capacity {
                    tracing::warn!(login = %account.login, servers = loads.len(),
                        max_sessions = config.max_sessions, "login refused: every server is full");
                    return Err(Error::Exhausted(format!(
                        "every application server already serves its {} users (max_sessions) and none can be started; try again later, or ask the operator to start another server",
                        config.max_sessions
                    )));
                } else {
                    let server = assignment.map(|a| a.node);
                    let (token, record) =
                        tokens.issue(&account.login, server, config.token_ttl, now_ms)?;
                    Some((token, record, over))
                }
            };
            if let Some(issued) = attempt {
                break issued;
            }
            // Launch, then choose again: the new server is empty, so it
            // takes the user.
            launched = true;
            let started = Instant::now();
            if let Some(elastic) = elastic {
                match elastic.make_room().await {
                    Ok(id) => tracing::info!(login = %account.login, launched = ?id,
                        wait_ms = started.elapsed().as_millis() as u64, "room made for a login"),
                    Err(e) => tracing::warn!(login = %account.login, error = %e,
                        "every server is full and none could be launched"),
                }
            }
        };
        // An account deleted while its password was being checked gets no
        // token (deletion revokes tokens, but this one may be newer).
        if !self.accounts.exists(&account.login)? {
            let key = crate::identity::tokens::token_key(&token);
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
        source: &str,
    ) -> Result<pb::UnregisterReply> {
        if req.password.len() > accounts::MAX_PASSWORD_BYTES {
            return Err(Error::Unauthenticated("wrong login or password".into()));
        }
        self.throttled_password_check(&session.login, &req.password, source)
            .await?;
        self.delete(&session.login, "your account was deleted")?;
        Ok(pb::UnregisterReply {})
    }

    /// Delete an account and its backups, revoke its tokens and end its
    /// chat sessions.
    fn delete(&self, login: &str, reason: &str) -> Result<Account> {
        let account = self.accounts.delete(login)?.ok_or_else(|| {
            Error::NotFound(format!("no user named {:?}", dupla::name::excerpt(login)))
        })?;
        self.tokens
            .lock()
            .expect("tokens lock poisoned")
            .revoke_user(login)?;
        self.hub.kick_login(login, reason);
        // Friendships, invitations, posts and memberships go with it.
        self.social.forget_user(login)?;
        self.presence.forget("", login)?;
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

    /// Whether `account` has the admin role: only an operator's grant,
    /// stored with the account, gives it.
    fn is_admin(&self, account: &Account) -> bool {
        account.admin
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
            role: account.role().as_str().to_string(),
        }
    }
}

/// The address a call came from, as throttles key it: the IP without the
/// port (a guesser opens as many connections as it likes).
pub fn source_of<T>(request: &Request<T>) -> String {
    request
        .remote_addr()
        .map_or_else(|| "unknown".to_string(), |a| a.ip().to_string())
}

/// A membership node as a wire node.
fn node(n: crate::cluster::membership::NodeRef) -> pb::Node {
    pb::Node {
        id: n.id,
        addr: n.addr,
    }
}

#[tonic::async_trait]
impl AccountsRpc for AccountsService {
    async fn set_role(&self, request: Request<pb::SetRoleRequest>) -> Reply<pb::User> {
        let admin = self.inner.admin(request.metadata())?;
        let req = request.into_inner();
        let role: accounts::Role = req.role.parse()?;
        let account = self.inner.accounts.set_role(&req.login, role)?;
        tracing::warn!(admin = %admin.login, login = %req.login, role = role.as_str(), "role changed");
        Ok(Response::new(self.inner.user(&account)))
    }

    async fn register(&self, request: Request<pb::RegisterRequest>) -> Reply<pb::RegisterReply> {
        let source = source_of(&request);
        Ok(Response::new(
            self.inner.register(request.into_inner(), &source).await?,
        ))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Reply<pb::LoginReply> {
        let source = source_of(&request);
        Ok(Response::new(
            self.inner.login(request.into_inner(), &source).await?,
        ))
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
        let source = source_of(&request);
        let reply = self
            .inner
            .unregister(session, request.into_inner(), &source)
            .await?;
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
        let account = self.inner.accounts.get(&login)?.ok_or_else(|| {
            Error::NotFound(format!("no user named {:?}", dupla::name::excerpt(&login)))
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use dupla::kv::MemoryKv;

    /// A service over memory, with `alice` registered.
    async fn service() -> Arc<Inner> {
        let kv: Arc<dyn dupla::kv::Kv> = Arc::new(MemoryKv::new());
        let config = Config::for_test("/nonexistent".into(), "s3cret");
        let state = Arc::new(
            State::open(config.clone(), kv.clone(), dupla::rpc::Transport::Insecure).unwrap(),
        );
        let tokens = Arc::new(Mutex::new(Tokens::load(kv.clone(), 0).unwrap()));
        let hub = Arc::new(Hub::new(config.chat.clone()));
        let accounts = Arc::new(Accounts::new(kv.clone()));
        let social = Arc::new(crate::social::graph::Social::new(
            kv.clone(),
            accounts.clone(),
        ));
        let presence = Arc::new(crate::social::presence::Presence::new(kv));
        let service = AccountsService::new(state, accounts, tokens, hub, (social, presence));
        let inner = service.inner;
        let mut req = pb::RegisterRequest {
            login: "alice".into(),
            first_names: "Alice".into(),
            last_names: "A".into(),
            age: 30,
            gender: "f".into(),
            password: "correct horse".into(),
        };
        inner
            .register(std::mem::take(&mut req), "10.0.0.1")
            .await
            .unwrap();
        inner
    }

    fn guess(password: &str) -> pb::LoginRequest {
        pb::LoginRequest {
            login: "alice".into(),
            password: password.into(),
        }
    }

    /// Fifty guesses polled at once (one thread: each is admitted or
    /// refused when first polled, before any hash finishes).
    #[tokio::test]
    async fn parallel_guesses_are_refused_before_hashing() {
        let inner = service().await;
        let before = inner.hashes.load(Ordering::Relaxed);
        let guesses = (0..50).map(|i| {
            let inner = inner.clone();
            async move {
                inner
                    .login(guess(&format!("guess {i:04}")), "10.0.0.66")
                    .await
            }
        });
        // Unregister's password check shares the throttle: polled right
        // after the guesses, it is refused too.
        let session = Session {
            login: "alice".into(),
            token_key: String::new(),
            expires_unix_ms: i64::MAX,
            server: None,
        };
        let req = pb::UnregisterRequest {
            password: "correct horse".into(),
        };
        let (outcomes, unregistered) = futures::join!(
            futures::future::join_all(guesses),
            inner.unregister(session, req, "10.0.0.66")
        );
        let refused = outcomes
            .iter()
            .filter(|o| matches!(o, Err(Error::Exhausted(_))))
            .count();
        let hashed = inner.hashes.load(Ordering::Relaxed) - before;
        assert_eq!(refused + hashed as usize, 50, "{outcomes:?}");
        assert!(hashed <= 6, "{hashed} of 50 parallel guesses were hashed");
        let err = unregistered.unwrap_err();
        assert!(matches!(err, Error::Exhausted(_)), "{err:?}");
    }

    #[tokio::test]
    async fn registrations_are_rate_limited_per_address() {
        let inner = service().await;
        let bad = || pb::RegisterRequest {
            login: "x".into(),
            ..Default::default()
        };
        // The service's own registration used one of 10.0.0.1's.
        for _ in 1..REGISTER_BURST as usize {
            let err = inner.register(bad(), "10.0.0.1").await.unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
        }
        let err = inner.register(bad(), "10.0.0.1").await.unwrap_err();
        assert!(matches!(err, Error::Exhausted(_)), "{err:?}");
        let err = inner.register(bad(), "10.0.0.2").await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    }
}
