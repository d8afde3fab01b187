//! `/api/register`, `/api/login`, `/api/logout`, `/api/whoami`, the
//! caller's status, and user administration under `/api/users` (admin
//! role): each calls `dupla.v1.Accounts` or `dupla.v1.Manager` as the
//! caller, so the admin check is the gRPC one.

use super::types::{Login, Quota, Register, Session, SetQuota, SetRole, User, UserStatus, WhoAmI};
use super::{Api, Caller};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use dupla::v1::accounts_server::Accounts as _;
use dupla::v1::manager_server::Manager as _;
use dupla::v1::{self as pb};
use dupla::web::{ApiJson, ApiPath, ApiResult, ErrorBody};
use dupla::{clock, Error};

#[utoipa::path(post, path = "/api/register", tag = "accounts", request_body = Register,
    responses((status = 200, description = "Registered (log in next)", body = User),
        (status = 400, body = ErrorBody),
        (status = 403, description = "The login is reserved for the administrator", body = ErrorBody),
        (status = 409, description = "Login taken", body = ErrorBody),
        (status = 429, description = "Too many registrations from this address: wait", body = ErrorBody)))]
/// Create an account (the user role).
pub async fn register(
    State(api): State<Api>,
    caller: Caller,
    ApiJson(r): ApiJson<Register>,
) -> ApiResult<Json<User>> {
    let request = caller.request(pb::RegisterRequest {
        login: r.login,
        password: r.password,
        first_names: r.first_names,
        last_names: r.last_names,
        age: r.age,
        gender: r.gender,
    });
    let reply = api.accounts.register(request).await?.into_inner();
    let user = reply
        .user
        .ok_or_else(|| Error::Internal("Register answered no user".into()))?;
    Ok(Json(user.into()))
}

#[utoipa::path(post, path = "/api/login", tag = "accounts", request_body = Login,
    responses((status = 200, description = "A bearer token", body = Session),
        (status = 401, description = "Wrong login or password", body = ErrorBody),
        (status = 429, description = "Too many failures: wait", body = ErrorBody)))]
/// Trade a login and password for a bearer token.
pub async fn login(
    State(api): State<Api>,
    caller: Caller,
    ApiJson(l): ApiJson<Login>,
) -> ApiResult<Json<Session>> {
    let request = caller.request(pb::LoginRequest {
        login: l.login,
        password: l.password,
    });
    let reply = api.accounts.login(request).await?.into_inner();
    Ok(Json(Session {
        token: reply.token,
        expires_unix_ms: reply.expires_unix_ms,
        server: reply.server.map(Into::into),
        user: reply.user.map(Into::into),
    }))
}

#[utoipa::path(post, path = "/api/logout", tag = "accounts",
    responses((status = 204, description = "The token is revoked"), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
/// Revoke the caller's token.
pub async fn logout(State(api): State<Api>, caller: Caller) -> ApiResult<StatusCode> {
    api.accounts
        .logout(caller.request(pb::LogoutRequest {}))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/whoami", tag = "accounts",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
/// The caller's account and token.
pub async fn whoami(State(api): State<Api>, caller: Caller) -> ApiResult<Json<WhoAmI>> {
    let reply = api
        .accounts
        .who_am_i(caller.request(pb::WhoAmIRequest {}))
        .await?
        .into_inner();
    Ok(Json(WhoAmI {
        user: reply.user.map(Into::into),
        expires_unix_ms: reply.expires_unix_ms,
        server: reply.server.map(Into::into),
    }))
}

/// `transferring`, `online` or `disconnected`, from the open uploads, the
/// tokens used within the session idle time, and the chat.
pub fn state_of(api: &Api, login: &str) -> &'static str {
    if api.state.lock_uploads().owners().contains(login) {
        return "transferring";
    }
    let active = api
        .tokens
        .lock()
        .expect("tokens lock poisoned")
        .active_logins(clock::unix_ms(), api.state.config.session_idle);
    if active.contains(login) || api.hub.is_online(login) {
        "online"
    } else {
        "disconnected"
    }
}

/// `user`'s status, its quota asked as `caller` (who must be them or an admin).
pub async fn status_of(api: &Api, caller: &Caller, user: pb::User) -> ApiResult<UserStatus> {
    let quota = api
        .manager
        .get_quota(caller.request(pb::GetQuotaRequest {
            login: user.login.clone(),
        }))
        .await?
        .into_inner();
    Ok(UserStatus {
        state: state_of(api, &user.login).into(),
        user: user.into(),
        quota: quota.into(),
    })
}

#[utoipa::path(get, path = "/api/me", tag = "accounts",
    responses((status = 200, body = UserStatus), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
/// The caller's state, role, quota and usage.
pub async fn my_status(State(api): State<Api>, caller: Caller) -> ApiResult<Json<UserStatus>> {
    let reply = api
        .accounts
        .who_am_i(caller.request(pb::WhoAmIRequest {}))
        .await?
        .into_inner();
    let user = reply
        .user
        .ok_or_else(|| Error::Internal("WhoAmI answered no user".into()))?;
    Ok(Json(status_of(&api, &caller, user).await?))
}

#[utoipa::path(get, path = "/api/users", tag = "users",
    responses((status = 200, body = Vec<UserStatus>), (status = 403, description = "Not an admin", body = ErrorBody)),
    security(("bearer" = [])))]
/// Every account with its state, role and usage (admin).
pub async fn list_users(
    State(api): State<Api>,
    caller: Caller,
) -> ApiResult<Json<Vec<UserStatus>>> {
    let users = api
        .accounts
        .list_users(caller.request(pb::ListUsersRequest {}))
        .await?
        .into_inner()
        .users;
    let mut out = Vec::with_capacity(users.len());
    for user in users {
        out.push(status_of(&api, &caller, user).await?);
    }
    Ok(Json(out))
}

#[utoipa::path(get, path = "/api/users/{login}", tag = "users",
    params(("login" = String, Path, description = "Whose")),
    responses((status = 200, body = UserStatus), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
/// One account with its state, role and usage (admin).
pub async fn get_user(
    State(api): State<Api>,
    caller: Caller,
    ApiPath(login): ApiPath<String>,
) -> ApiResult<Json<UserStatus>> {
    let user = api
        .accounts
        .get_user(caller.request(pb::GetUserRequest { login }))
        .await?
        .into_inner();
    Ok(Json(status_of(&api, &caller, user).await?))
}

#[utoipa::path(delete, path = "/api/users/{login}", tag = "users",
    params(("login" = String, Path, description = "Whose")),
    responses((status = 200, description = "Deleted with their files", body = User),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The last admin account", body = ErrorBody)),
    security(("bearer" = [])))]
/// Delete an account and its backups (admin).
pub async fn delete_user(
    State(api): State<Api>,
    caller: Caller,
    ApiPath(login): ApiPath<String>,
) -> ApiResult<Json<User>> {
    let reply = api
        .accounts
        .delete_user(caller.request(pb::DeleteUserRequest { login }))
        .await?
        .into_inner();
    let user = reply
        .deleted
        .ok_or_else(|| Error::Internal("DeleteUser answered no user".into()))?;
    Ok(Json(user.into()))
}

#[utoipa::path(put, path = "/api/users/{login}/role", tag = "users", request_body = SetRole,
    params(("login" = String, Path, description = "Whose")),
    responses((status = 200, body = User), (status = 400, description = "Unknown role", body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Would leave no admin account", body = ErrorBody)),
    security(("bearer" = [])))]
/// Change an account's role: `admin`, `user` or `viewer` (admin).
pub async fn set_role(
    State(api): State<Api>,
    caller: Caller,
    ApiPath(login): ApiPath<String>,
    ApiJson(r): ApiJson<SetRole>,
) -> ApiResult<Json<User>> {
    let user = api
        .accounts
        .set_role(caller.request(pb::SetRoleRequest {
            login,
            role: r.role,
        }))
        .await?
        .into_inner();
    Ok(Json(user.into()))
}

#[utoipa::path(put, path = "/api/users/{login}/quota", tag = "users", request_body = SetQuota,
    params(("login" = String, Path, description = "Whose")),
    responses((status = 200, body = Quota), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
/// Set or reset an account's quota (admin).
pub async fn set_quota(
    State(api): State<Api>,
    caller: Caller,
    ApiPath(login): ApiPath<String>,
    ApiJson(q): ApiJson<SetQuota>,
) -> ApiResult<Json<Quota>> {
    let request = caller.request(pb::SetQuotaRequest {
        login,
        bytes: q.bytes,
        files: q.files,
        reset: q.reset,
    });
    let quota = api.manager.set_quota(request).await?.into_inner();
    Ok(Json(quota.into()))
}
