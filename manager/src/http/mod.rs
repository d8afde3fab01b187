//! The manager's HTTP face (docs/web.md): a JSON API under `/api/`, its
//! OpenAPI document at `/api/openapi.json` with a reference page at
//! `/api/docs`, the web console at `/`, and `/metrics` and `/healthz`.
//!
//! Handlers never decide anything themselves: they call the very gRPC
//! services the `dupla` client talks to (in-process, with the caller's
//! bearer token as metadata), so tokens, roles, ownership, throttles and
//! quotas are checked in one place for both protocols. File bytes never
//! pass through here: `POST /api/uploads` names the storage server to send
//! them to, and downloads go to a server's HTTP API.

pub mod accounts;
pub mod catalog;
pub mod chat;
pub mod cluster;
pub mod console;
pub mod history;
pub mod types;

use crate::chat::room_hub::Hub;
use crate::files::snapshot_service::SnapshotService;
use crate::identity::accounts::Accounts;
use crate::identity::accounts_service::AccountsService;
use crate::identity::tokens::Tokens;
use crate::service::ManagerService;
use crate::state::State;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::Router;
use dupla::metrics::{Metrics, Refresh};
use dupla::shutdown::Shutdown;
use dupla::web::{self, ApiError, MAX_JSON_BODY_BYTES};
use dupla::Result;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;
use utoipa::openapi::security::{Http as HttpScheme, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The running HTTP listener of the manager.
pub struct Http {
    /// Bound address.
    pub addr: SocketAddr,
    /// Resolves when it has stopped.
    pub task: JoinHandle<Result<()>>,
}

/// What the handlers share: the gRPC services they call, and the state
/// behind the few answers no RPC gives (user states, metrics).
#[derive(Clone)]
pub struct Api {
    /// `dupla.v1.Accounts`.
    pub accounts: AccountsService,
    /// `dupla.v1.Manager`.
    pub manager: ManagerService,
    /// `dupla.v1.Snapshots`.
    pub snapshots: SnapshotService,
    /// Membership, catalog, open uploads.
    pub state: Arc<State>,
    /// Account records (roles).
    pub accounts_db: Arc<Accounts>,
    /// Live tokens (who is online).
    pub tokens: Arc<Mutex<Tokens>>,
    /// Chat presence and deliveries.
    pub hub: Arc<Hub>,
    /// Browser chat sessions (each one a `Rooms/Chat` stream).
    pub chat: Arc<chat::ChatSessions>,
    /// The cluster over time, for the console's charts.
    pub history: Arc<history::History>,
    /// This manager's gRPC address, which browser chats dial.
    pub grpc_addr: String,
    /// Ends waits that outlive the server (chat long-polls).
    pub shutdown: Shutdown,
}

/// Who calls: their bearer token (if any) and address (throttles key on it).
pub struct Caller {
    /// `Authorization: Bearer` token.
    pub token: Option<String>,
    /// Peer address.
    pub peer: Option<SocketAddr>,
}

impl Caller {
    /// A gRPC request carrying the caller's token and address.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        web::grpc_request(self.token.as_deref(), self.peer, message)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> std::result::Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Ok(Caller {
            token: web::bearer(&parts.headers).map(str::to_string),
            peer,
        })
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpScheme::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Dupla manager HTTP API",
        description = "Accounts, catalog, snapshots, cluster status, users and statistics. File bytes go to a storage server's HTTP API (POST /api/uploads says which; see docs/web.md). Errors are JSON {code, message} with a stable code."
    ),
    modifiers(&BearerAuth),
    components(schemas(dupla::web::ErrorBody)),
    tags(
        (name = "accounts", description = "Register, log in and out, who am I"),
        (name = "catalog", description = "Files and snapshots of the caller"),
        (name = "cluster", description = "Servers, statistics"),
        (name = "users", description = "Administration (admin role)"),
        (name = "chat", description = "The chat rooms of `dupla chat`, long-polled")
    )
)]
struct ManagerDoc;

/// The API routes with their OpenAPI document.
pub fn api_router(api: Api) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ManagerDoc::openapi())
        .routes(routes!(accounts::register))
        .routes(routes!(accounts::login))
        .routes(routes!(accounts::logout))
        .routes(routes!(accounts::whoami))
        .routes(routes!(accounts::my_status))
        .routes(routes!(accounts::list_users))
        .routes(routes!(accounts::get_user, accounts::delete_user))
        .routes(routes!(accounts::set_role))
        .routes(routes!(accounts::set_quota))
        .routes(routes!(catalog::list_files))
        .routes(routes!(catalog::file_details, catalog::remove_file))
        .routes(routes!(catalog::list_snapshots))
        .routes(routes!(catalog::snapshot_entries))
        .routes(routes!(catalog::place_upload))
        .routes(routes!(cluster::status))
        .routes(routes!(cluster::stats))
        .routes(routes!(cluster::usage_csv))
        .routes(routes!(chat::open))
        .routes(routes!(chat::say))
        .routes(routes!(chat::events))
        .routes(routes!(chat::close))
        .with_state(api)
        .split_for_parts();
    web::document_common_errors(&mut doc);
    (router, doc)
}

/// Bind `addr` and serve until `shutdown`; `None` when HTTP is off.
/// `metrics` is the manager's registry (its gRPC services record there too).
pub async fn start(
    api: Api,
    addr: &str,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> Result<Option<Http>> {
    let Some(addr) = web::http_enabled(addr) else {
        return Ok(None);
    };
    let listener = dupla::rpc::bind(addr).await?;
    let bound = listener.local_addr()?;
    let refresh = refresher(&metrics, api.clone());
    tokio::spawn(sweep_chats(api.chat.clone(), shutdown.clone()));
    tokio::spawn(
        api.history
            .clone()
            .run(api.manager.clone(), shutdown.clone()),
    );
    let (routes, doc) = api_router(api);
    let doc = doc
        .to_json()
        .map_err(|e| dupla::Error::Internal(format!("OpenAPI document: {e}")))?;
    let app = routes
        .merge(console::router(doc))
        .merge(dupla::metrics::router(metrics.clone(), refresh))
        .fallback(web::no_such_route)
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            dupla::metrics::time_http,
        ))
        // Every JSON body is small; bounded before any token is checked.
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY_BYTES));
    tracing::info!(http = %bound, "manager HTTP listening: console at http://{bound}/");
    let task = tokio::spawn(web::serve(app, listener, shutdown));
    Ok(Some(Http { addr: bound, task }))
}

/// Close browser chat sessions whose page stopped polling, until shutdown.
async fn sweep_chats(chats: Arc<chat::ChatSessions>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(chat::CHAT_IDLE / 2) => chats.sweep(),
            _ = shutdown.wait() => return,
        }
    }
}

/// Gauges copied from the manager's state at each scrape.
fn refresher(metrics: &Metrics, api: Api) -> Refresh {
    let servers = metrics.gauge_vec("servers", "Storage servers by state", &["state"]);
    let files = metrics.gauge("catalog_files", "File versions in the catalog");
    let bytes = metrics.gauge("catalog_bytes", "Bytes of the catalog's files (one copy)");
    let under = metrics.gauge(
        "under_replicated_files",
        "Files with fewer than two live copies",
    );
    let under_bytes = metrics.gauge("under_replicated_bytes", "Bytes of under-replicated files");
    let repaired = metrics.counter("repaired_files_total", "Files given a new copy by repairs");
    let repaired_bytes = metrics.counter("repaired_bytes_total", "Bytes copied by repairs");
    let sessions = metrics.gauge("sessions", "Connected client sessions");
    let transfers = metrics.gauge(
        "uploads_open",
        "Uploads placed and not yet committed or aborted",
    );
    let transfers_active =
        metrics.gauge("server_transfers", "Transfers in progress on all servers");
    let accounts = metrics.gauge("accounts", "Registered accounts");
    let chat = metrics.counter("chat_deliveries_total", "Chat events delivered to clients");
    let chat_lines = metrics.counter(
        "chat_lines_relayed_total",
        "Chat room messages the manager itself carried (0 when every chat runs on the servers)",
    );
    Arc::new(move || {
        let Ok(status) = api.manager.status_now() else {
            return; // the catalog is unreadable: /healthz-style alerts fire elsewhere
        };
        servers.reset();
        for server in &status.servers {
            let state = match dupla::v1::ServerState::try_from(server.state) {
                Ok(dupla::v1::ServerState::Up) => "up",
                Ok(dupla::v1::ServerState::Suspect) => "suspect",
                _ => "down",
            };
            servers.with_label_values(&[state]).inc();
        }
        let clamp = |v: u64| v.min(i64::MAX as u64) as i64;
        files.set(clamp(status.files));
        bytes.set(clamp(status.bytes));
        under.set(clamp(status.under_replicated));
        under_bytes.set(clamp(status.under_replicated_bytes));
        dupla::metrics::catch_up(&repaired, status.repaired_files);
        dupla::metrics::catch_up(&repaired_bytes, status.repaired_bytes);
        sessions.set(clamp(status.sessions));
        transfers.set(api.state.lock_uploads().len() as i64);
        transfers_active.set(clamp(history::transfers_in_progress(&status)));
        accounts.set(api.accounts_db.logins().map_or(0, |l| l.len() as i64));
        dupla::metrics::catch_up(&chat, api.hub.deliveries());
        dupla::metrics::catch_up(&chat_lines, api.hub.lines_relayed());
    })
}
