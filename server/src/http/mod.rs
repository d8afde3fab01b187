//! The storage server's HTTP face (docs/web.md): file bytes for the web
//! console and `curl`, beside `/metrics` and `/healthz`. Downloads stream
//! from the same holder-failover reader as `Storage/Download`
//! ([`download`]); uploads are staged here by byte range so they survive a
//! dropped connection or a page reload, then fed through the same
//! two-copy, blake3-verified write path as `Storage/Upload` ([`upload`]).
//! Every data route needs the user's bearer token, which the manager
//! checks: servers never see accounts.

pub mod archive;
pub mod download;
pub mod staging;
pub mod tail;
pub mod upload;

use crate::metrics::Traffic;
use crate::node::StorageNode;
use axum::extract::DefaultBodyLimit;
use axum::Router;
use dupla::metrics::{Metrics, Refresh};
use dupla::shutdown::Shutdown;
use dupla::web::{self, MAX_JSON_BODY_BYTES};
use dupla::Result;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The running HTTP listener of a server.
pub struct Http {
    /// Bound address.
    pub addr: SocketAddr,
    /// Resolves when it has stopped.
    pub task: JoinHandle<Result<()>>,
}

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    /// The storage node.
    pub node: Arc<StorageNode>,
    /// Uploads staged here by range.
    pub staging: Arc<staging::Staging>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Dupla storage server HTTP API",
        description = "File bytes: downloads with Range, resumable uploads by byte range. Errors are JSON {code, message}."
    ),
    components(schemas(dupla::web::ErrorBody))
)]
struct ServerDoc;

/// The routes with their OpenAPI document.
pub fn router(api: Api) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ServerDoc::openapi())
        .routes(routes!(download::content))
        .routes(routes!(archive::archive))
        .routes(routes!(upload::create))
        .routes(routes!(upload::status, upload::put_range, upload::cancel))
        .with_state(api)
        .split_for_parts();
    web::document_common_errors(&mut doc);
    (router, doc)
}

/// Bind `addr` and serve until `shutdown`; `None` when HTTP is off.
pub async fn start(
    node: Arc<StorageNode>,
    addr: &str,
    data: &std::path::Path,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> Result<Option<Http>> {
    let Some(addr) = web::http_enabled(addr) else {
        return Ok(None);
    };
    let listener = dupla::rpc::bind(addr).await?;
    let bound = listener.local_addr()?;
    let url = base_url(bound, &node.addr);
    let _ = node.http_url.set(url.clone());
    let staging = Arc::new(staging::Staging::open(&data.join(staging::STAGING_DIR))?);
    tokio::spawn(sweep_staging(
        staging.clone(),
        node.gc_grace,
        shutdown.clone(),
    ));
    let refresh = refresher(&metrics, node.clone(), staging.clone());
    let (api, doc) = router(Api { node, staging });
    let doc_json = Arc::new(
        doc.to_json()
            .map_err(|e| dupla::Error::Internal(format!("OpenAPI document: {e}")))?,
    );
    let app = api
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let doc = doc_json.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        doc.as_str().to_string(),
                    )
                }
            }),
        )
        .merge(dupla::metrics::router(metrics.clone(), refresh))
        .fallback(web::no_such_route)
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            dupla::metrics::time_http,
        ))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY_BYTES))
        // The console is served by the manager and calls servers from
        // there; tokens travel in headers (no cookies), so any origin may.
        .layer(tower_http::cors::CorsLayer::very_permissive());
    tracing::info!(http = %bound, %url, "storage server HTTP listening");
    let task = tokio::spawn(web::serve(app, listener, shutdown));
    Ok(Some(Http { addr: bound, task }))
}

/// How often abandoned HTTP uploads are looked for.
const STAGING_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Remove staged uploads idle longer than `grace` (the server's
/// `gc_grace_secs`, the same promise as for unfinished gRPC uploads), at
/// start and then every [`STAGING_SWEEP_INTERVAL`], until shutdown.
async fn sweep_staging(
    staging: Arc<staging::Staging>,
    grace: std::time::Duration,
    mut shutdown: Shutdown,
) {
    loop {
        let sweeper = staging.clone();
        match tokio::task::spawn_blocking(move || sweeper.sweep(grace)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "abandoned HTTP uploads removed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "sweeping HTTP uploads failed"),
            Err(e) => tracing::warn!(error = %e, "sweeping HTTP uploads failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(STAGING_SWEEP_INTERVAL) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// The URL others reach the HTTP API at: the bound port on the advertised
/// host when bound to every interface.
fn base_url(bound: SocketAddr, advertise: &str) -> String {
    if bound.ip().is_unspecified() {
        let host = dupla::tls::host_of(advertise);
        return format!("http://{host}:{}", bound.port());
    }
    format!("http://{bound}")
}

/// Gauges copied from the node at each scrape.
fn refresher(metrics: &Metrics, node: Arc<StorageNode>, staging: Arc<staging::Staging>) -> Refresh {
    let used = metrics.gauge("chunk_store_bytes", "Bytes of chunks stored here");
    let capacity = metrics.gauge("chunk_store_capacity_bytes", "Bytes this server offers");
    let active = metrics.gauge(
        "active_transfers",
        "Uploads, downloads and pipeline hops in progress",
    );
    let staged = metrics.gauge(
        "http_uploads_staged",
        "HTTP uploads staged here, unfinished",
    );
    let bytes_in = metrics.counter("bytes_in_total", "File bytes received from clients");
    let bytes_out = metrics.counter("bytes_out_total", "File bytes sent to clients");
    let uploads = metrics.counter(
        "uploads_total",
        "Uploads finished with this server as the entry",
    );
    let downloads = metrics.counter("downloads_total", "Downloads started here");
    let scrub_passes = metrics.counter("scrub_passes_total", "Scrub passes finished");
    let scrub_bytes = metrics.counter("scrub_bytes_total", "Bytes re-hashed by scrubs");
    let scrub_corrupt = metrics.counter(
        "scrub_corrupt_chunks_total",
        "Corrupt chunks found by scrubs",
    );
    let peak_rss = metrics.gauge("peak_rss_bytes", "Peak resident memory of the process");
    Arc::new(move || {
        let t = &node.traffic;
        used.set(node.store.used().min(i64::MAX as u64) as i64);
        capacity.set(node.store.capacity().min(i64::MAX as u64) as i64);
        active.set(i64::from(node.active.get()));
        staged.set(staging.len() as i64);
        dupla::metrics::catch_up(&bytes_in, Traffic::get(&t.bytes_in));
        dupla::metrics::catch_up(&bytes_out, Traffic::get(&t.bytes_out));
        dupla::metrics::catch_up(&uploads, Traffic::get(&t.uploads));
        dupla::metrics::catch_up(&downloads, Traffic::get(&t.downloads));
        dupla::metrics::catch_up(&scrub_passes, Traffic::get(&t.scrub_passes));
        dupla::metrics::catch_up(&scrub_bytes, Traffic::get(&t.scrub_bytes));
        dupla::metrics::catch_up(&scrub_corrupt, Traffic::get(&t.scrub_corrupt));
        peak_rss.set(crate::metrics::peak_rss().min(i64::MAX as u64) as i64);
    })
}
