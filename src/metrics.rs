//! Prometheus metrics of one node, served as text at `/metrics` beside
//! `/healthz` on the node's HTTP address. Each node owns its [`Metrics`]
//! registry rather than a process-wide one, because the test harness runs
//! a manager and several servers in one process.
//!
//! Two kinds of series: counters and histograms updated where the work
//! happens (request latency per RPC and per HTTP route, bytes in and out),
//! and gauges a node copies from its own state just before each scrape
//! (the `refresh` callback), so there is one source of truth for things
//! like the chunk store's size.

use crate::web::{ApiError, ApiResult};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::server::NamedService;

/// Latency buckets in seconds: 1 ms to a minute (a large upload's RPC).
const LATENCY_BUCKETS_SECS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Called before each scrape to copy a node's state into its gauges.
pub type Refresh = Arc<dyn Fn() + Send + Sync>;

/// One node's registry and the series every node has.
pub struct Metrics {
    /// Everything `/metrics` shows.
    pub registry: Registry,
    /// gRPC latency per service and method, until the response headers
    /// (a unary call's whole time; a stream's time to first answer).
    pub rpc_seconds: HistogramVec,
    /// gRPC calls per service, method and status code.
    pub rpc_calls: IntCounterVec,
    /// HTTP latency per method, matched route and status.
    pub http_seconds: HistogramVec,
}

impl Metrics {
    /// A registry whose series carry `role` (`manager` or `server`) as a
    /// constant label, so one Prometheus job can scrape every node.
    pub fn new(role: &str) -> Arc<Metrics> {
        let labels = [("role".to_string(), role.to_string())]
            .into_iter()
            .collect();
        let registry = Registry::new_custom(Some("dupla".into()), Some(labels))
            .expect("invariant: a fixed prefix and label are valid");
        let rpc_seconds = HistogramVec::new(
            HistogramOpts::new("rpc_duration_seconds", "gRPC request latency")
                .buckets(LATENCY_BUCKETS_SECS.to_vec()),
            &["service", "method"],
        )
        .expect("invariant: valid histogram");
        let rpc_calls = IntCounterVec::new(
            Opts::new("rpc_requests_total", "gRPC requests by status code"),
            &["service", "method", "code"],
        )
        .expect("invariant: valid counter");
        let http_seconds = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                .buckets(LATENCY_BUCKETS_SECS.to_vec()),
            &["method", "route", "status"],
        )
        .expect("invariant: valid histogram");
        let metrics = Metrics {
            registry,
            rpc_seconds,
            rpc_calls,
            http_seconds,
        };
        metrics.register(metrics.rpc_seconds.clone());
        metrics.register(metrics.rpc_calls.clone());
        metrics.register(metrics.http_seconds.clone());
        Arc::new(metrics)
    }

    fn register<C: prometheus::core::Collector + 'static>(&self, collector: C) {
        self.registry
            .register(Box::new(collector))
            .expect("invariant: each series is registered once per node");
    }

    /// A new gauge named `dupla_<name>`.
    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        let gauge = IntGauge::new(name, help).expect("invariant: valid gauge name");
        self.register(gauge.clone());
        gauge
    }

    /// A new gauge family named `dupla_<name>` with `labels`.
    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let gauge =
            IntGaugeVec::new(Opts::new(name, help), labels).expect("invariant: valid gauge name");
        self.register(gauge.clone());
        gauge
    }

    /// A new counter named `dupla_<name>` (end it in `_total`).
    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        let counter = IntCounter::new(name, help).expect("invariant: valid counter name");
        self.register(counter.clone());
        counter
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> ApiResult<String> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| ApiError::from(crate::Error::Internal(format!("metrics: {e}"))))?;
        String::from_utf8(out)
            .map_err(|e| ApiError::from(crate::Error::Internal(format!("metrics: {e}"))))
    }
}

/// Bring `counter` up to `value`, a total kept elsewhere (an atomic the
/// node updates where the work happens). Counters only go up.
pub fn catch_up(counter: &IntCounter, value: u64) {
    let now = counter.get();
    if value > now {
        counter.inc_by(value - now);
    }
}

#[derive(Clone)]
struct Scrape {
    metrics: Arc<Metrics>,
    refresh: Refresh,
}

/// `/metrics` (Prometheus text) and `/healthz` (`ok` while the node serves).
pub fn router(metrics: Arc<Metrics>, refresh: Refresh) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Scrape { metrics, refresh })
}

async fn scrape(State(scrape): State<Scrape>) -> ApiResult<Response> {
    (scrape.refresh)();
    let text = scrape.metrics.render()?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Axum middleware recording each request's latency by its route pattern
/// (`/api/files/{name}`, never the name itself: bounded label values).
pub async fn time_http(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let response = next.run(request).await;
    metrics
        .http_seconds
        .with_label_values(&[&method, &route, response.status().as_str()])
        .observe(start.elapsed().as_secs_f64());
    response
}

/// A gRPC service wrapped to record its latency and status per method.
#[derive(Clone)]
pub struct Timed<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Timed<S> {
    /// Time every call of `inner` into `metrics`.
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Self {
        Timed { inner, metrics }
    }
}

impl<S, B> Service<http::Request<Body>> for Timed<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // `/dupla.v1.Manager/Commit` → service and method labels.
        let mut parts = request.uri().path().trim_start_matches('/').splitn(2, '/');
        let service = parts.next().unwrap_or_default().to_string();
        let method = parts.next().unwrap_or_default().to_string();
        let metrics = self.metrics.clone();
        let start = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("0")
                .to_string();
            metrics
                .rpc_seconds
                .with_label_values(&[&service, &method])
                .observe(start.elapsed().as_secs_f64());
            metrics
                .rpc_calls
                .with_label_values(&[&service, &method, &code])
                .inc();
            Ok(response)
        })
    }
}

impl<S: NamedService> NamedService for Timed<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_renders_its_series_with_the_role_label() {
        let metrics = Metrics::new("server");
        metrics.gauge("chunk_store_bytes", "bytes").set(42);
        metrics
            .rpc_seconds
            .with_label_values(&["dupla.v1.Storage", "Upload"])
            .observe(0.01);
        let text = metrics.render().unwrap();
        assert!(
            text.contains("dupla_chunk_store_bytes{role=\"server\"} 42"),
            "{text}"
        );
        assert!(text.contains("dupla_rpc_duration_seconds_bucket"), "{text}");
    }
}
