//! The web console and the API reference, built into the binary
//! (`include_str!`: plain HTML, CSS and JavaScript modules, no build step,
//! nothing fetched from the network at run time).

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// One embedded file: its path, content type and text.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../assets/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/style.css"),
    ),
    (
        "/api/docs",
        "text/html; charset=utf-8",
        include_str!("../../assets/reference.html"),
    ),
    (
        "/reference.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/reference.js"),
    ),
];

/// The console's pages, and `/api/openapi.json` holding `openapi`.
pub fn router(openapi: String) -> Router {
    let openapi = Arc::new(openapi);
    let mut router = Router::new().route(
        "/api/openapi.json",
        get(move || {
            let doc = openapi.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    doc.as_str().to_string(),
                )
            }
        }),
    );
    for &(path, content_type, text) in ASSETS {
        router = router.route(
            path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, content_type),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    text,
                )
                    .into_response()
            }),
        );
    }
    router
}
