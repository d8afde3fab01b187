//! Cluster status (`Manager/ClusterStatus`, public as over gRPC) and
//! statistics: totals, users by state, usage per user, and usage as CSV.

use super::accounts::status_of;
use super::types::{Cluster, Stats, UserStatus};
use super::{Api, Caller};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use dupla::v1::accounts_server::Accounts as _;
use dupla::v1::manager_server::Manager as _;
use dupla::v1::{self as pb};
use dupla::web::{ApiResult, ErrorBody};
use dupla::Error;

#[utoipa::path(get, path = "/api/cluster", tag = "cluster",
    responses((status = 200, description = "Servers and catalog totals", body = Cluster)))]
/// The storage servers (state, capacity, used, transfers, sessions) and the
/// catalog's totals, repairs included.
pub async fn status(State(api): State<Api>, caller: Caller) -> ApiResult<Json<Cluster>> {
    let reply = api
        .manager
        .cluster_status(caller.request(pb::ClusterStatusRequest {}))
        .await?;
    Ok(Json(reply.into_inner().into()))
}

/// Every user's status for an admin; the caller's own for anyone else.
async fn usage(api: &Api, caller: &Caller) -> ApiResult<Vec<UserStatus>> {
    match api
        .accounts
        .list_users(caller.request(pb::ListUsersRequest {}))
        .await
    {
        Ok(reply) => {
            let mut out = Vec::new();
            for user in reply.into_inner().users {
                out.push(status_of(api, caller, user).await?);
            }
            Ok(out)
        }
        Err(status) if status.code() == tonic::Code::PermissionDenied => {
            let me = api
                .accounts
                .who_am_i(caller.request(pb::WhoAmIRequest {}))
                .await?
                .into_inner();
            let user = me
                .user
                .ok_or_else(|| Error::Internal("WhoAmI answered no user".into()))?;
            Ok(vec![status_of(api, caller, user).await?])
        }
        Err(status) => Err(status.into()),
    }
}

#[utoipa::path(get, path = "/api/stats", tag = "cluster",
    responses((status = 200, body = Stats), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
/// Statistics: cluster totals, users by state, usage per user (an admin
/// sees everyone, a user themselves), chat deliveries.
pub async fn stats(State(api): State<Api>, caller: Caller) -> ApiResult<Json<Stats>> {
    let usage = usage(&api, &caller).await?;
    let cluster = api
        .manager
        .cluster_status(caller.request(pb::ClusterStatusRequest {}))
        .await?;
    let mut users_by_state = std::collections::BTreeMap::new();
    for u in &usage {
        *users_by_state.entry(u.state.clone()).or_insert(0) += 1;
    }
    Ok(Json(Stats {
        cluster: cluster.into_inner().into(),
        users: usage.len(),
        users_by_state,
        usage,
        chat_deliveries: api.hub.deliveries(),
        chat_lines_relayed: api.hub.lines_relayed(),
        history: api.history.samples(),
    }))
}

#[utoipa::path(get, path = "/api/stats/usage.csv", tag = "cluster",
    responses((status = 200, description = "login,role,state,used_bytes,used_files,quota_bytes,quota_files", content_type = "text/csv", body = String),
        (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
/// Usage per user as CSV (everyone for an admin).
pub async fn usage_csv(State(api): State<Api>, caller: Caller) -> ApiResult<impl IntoResponse> {
    let mut csv = String::from("login,role,state,used_bytes,used_files,quota_bytes,quota_files\n");
    for u in usage(&api, &caller).await? {
        // Logins are [a-z0-9_.-]: nothing to quote.
        csv.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            u.user.login,
            u.user.role,
            u.state,
            u.quota.used_bytes,
            u.quota.used_files,
            u.quota.quota_bytes,
            u.quota.quota_files
        ));
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"dupla-usage.csv\"",
            ),
        ],
        csv,
    ))
}
