//! A Dupla storage server: holds chunks on its disk, accepts uploads from
//! clients (as the entry, forwarding when it is not a holder), stores and
//! pipelines chunks as primary or replica, and serves downloads of any file.
//!
//! Follow an upload through the modules: `service` → `upload` (entry,
//! placement, commit) → `pipeline` (verify, forward, write) →
//! `chunk_store` (temp file, fsync, rename). A download: `service` →
//! `download` (holder failover) → `chunk_store` or a peer's `fetch`.

pub mod broker;
pub mod chunk_store;
pub mod config;
pub mod download;
pub mod faults;
pub mod fetch;
pub mod gc;
pub mod heartbeat_worker;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod node;
pub mod pacer;
pub mod pipeline;
pub mod replicate;
pub mod resume;
pub mod room_effects;
pub mod room_relay;
pub mod room_service;
pub mod scrub;
pub mod service;
pub mod social_hub;
pub mod social_service;
pub mod upload;

pub use config::{Args, Config};

use dupla::rpc::{MAX_CATALOG_MESSAGE_BYTES, MAX_MESSAGE_BYTES};
use dupla::shutdown::Shutdown;
use dupla::v1::rooms_server::RoomsServer;
use dupla::v1::social_server::SocialServer;
use dupla::v1::storage_server::StorageServer;
use dupla::Result;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// A started storage server.
pub struct Running {
    /// Address it listens on.
    pub addr: SocketAddr,
    /// Address of its HTTP API, when it has one.
    pub http: Option<SocketAddr>,
    /// Its stable id.
    pub id: String,
    /// Resolves when it has shut down.
    pub task: JoinHandle<Result<()>>,
}

/// Open the chunk store, bind, start heartbeating and serve in the background.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running> {
    // A killed test server stops its tasks as a shutdown would.
    let shutdown = config.faults.shutdown(shutdown);
    std::fs::create_dir_all(&config.data)?;
    let id = identity::load_or_create(&config.data)?;
    let store = chunk_store::ChunkStore::open(&config.data, config.capacity)?;
    let listener = dupla::rpc::bind(&config.listen).await?;
    let addr = listener.local_addr()?;
    let advertise = match &config.advertise {
        Some(advertise) => advertise.clone(),
        None if addr.ip().is_unspecified() => {
            return Err(dupla::Error::InvalidInput(format!(
                "listening on {addr} needs `advertise` (or --advertise): the address other nodes and clients reach this server at"
            )))
        }
        None => addr.to_string(),
    };
    let secret = dupla::rpc::Secret::new(&config.secret)?;
    dupla::rpc::check_demo_secret(&secret, &config.listen)?;
    let transport = if config.insecure {
        let transport = dupla::rpc::Transport::Insecure;
        transport.warn_if_insecure("this storage server");
        transport
    } else {
        identity::tls_transport(
            &config.data,
            &id,
            &advertise,
            &config.manager,
            &secret,
            shutdown.clone(),
        )
        .await?
    };
    let mut node = node::StorageNode::new(
        id.clone(),
        advertise.clone(),
        store,
        secret,
        &config.manager,
        config.repair_rate,
        transport.clone(),
    )?;
    node.gc_grace = config.gc_grace;
    node.idle_timeout = config.idle_timeout;
    node.faults = config.faults.clone();
    let node = Arc::new(node);
    // Latency per RPC, shown at the HTTP /metrics.
    let metrics = dupla::metrics::Metrics::new("server");
    // Before the first heartbeat, so the manager learns the HTTP URL at once.
    let http = http::start(
        node.clone(),
        &config.http,
        &config.data,
        metrics.clone(),
        shutdown.clone(),
    )
    .await?;
    let http_addr = http.as_ref().map(|h| h.addr);
    let service = StorageServer::new(service::StorageService::new(node.clone()))
        // Requests are chunk-sized; replies (receipts, download headers)
        // may carry a large file's chunk list.
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CATALOG_MESSAGE_BYTES);
    // Social: the streams open here, and the link to the message broker.
    let hub = Arc::new(social_hub::Hub::new());
    let link = Arc::new(broker::BrokerLink::new());
    let social = SocialServer::new(social_service::SocialService::new(
        node.clone(),
        hub.clone(),
        link.clone(),
        shutdown.clone(),
    ))
    .max_decoding_message_size(social_service::MAX_SOCIAL_REQUEST_BYTES);
    // Chat rooms: this server's users' chats, lines through the broker.
    let rooms = Arc::new(room_relay::RoomRelay::new(id.clone(), link.clone()));
    let chat = room_service::RoomsService::new(node.clone(), rooms.clone(), shutdown.clone());
    let chat_reset = tokio::spawn(chat.clone().reset(shutdown.clone()));
    let chat =
        RoomsServer::new(chat).max_decoding_message_size(room_service::MAX_CHAT_MESSAGE_BYTES);
    let mut server = transport.secure(dupla::rpc::server())?;
    let (router, health) = dupla::rpc::common_router(
        &mut server,
        &["dupla.v1.Storage", broker::SOCIAL_SERVICE, "dupla.v1.Rooms"],
    )?;
    health
        .set_serving::<StorageServer<service::StorageService>>()
        .await;
    let router = router
        .add_service(dupla::metrics::Timed::new(service, metrics.clone()))
        .add_service(dupla::metrics::Timed::new(social, metrics.clone()))
        .add_service(dupla::metrics::Timed::new(chat, metrics.clone()));
    let broker_worker = tokio::spawn(
        broker::Worker {
            link,
            hub,
            server_id: id.clone(),
            configured: config.broker.as_ref().map(|url| url.expose()),
            auth: config.broker_auth.clone(),
            node: node.clone(),
            health,
            inbound: Some(rooms),
        }
        .run(shutdown.clone()),
    );
    tracing::info!(%addr, %advertise, %id, data = %config.data.display(),
        capacity = config.capacity, manager = %config.manager, tls = transport.is_tls(),
        "storage server listening");
    let scrubs = config.scrub_interval.map(|interval| {
        tokio::spawn(scrub::run(
            node.clone(),
            interval,
            config.scrub_rate,
            shutdown.clone(),
        ))
    });
    let collector = tokio::spawn(gc::run(
        node.clone(),
        config.gc_interval,
        config.gc_grace,
        shutdown.clone(),
    ));
    let heartbeats = tokio::spawn(heartbeat_worker::run(
        node,
        config.heartbeat_interval,
        shutdown.clone(),
    ));
    let faults = config.faults.clone();
    let task = tokio::spawn(async move {
        let result = faults.serve(router, listener, shutdown).await;
        let _ = heartbeats.await;
        let _ = collector.await;
        if let Some(http) = http {
            let _ = http.task.await;
        }
        let _ = broker_worker.await;
        let _ = chat_reset.await;
        if let Some(scrubs) = scrubs {
            let _ = scrubs.await;
        }
        tracing::info!(%addr, "storage server stopped");
        result
    });
    Ok(Running {
        addr,
        http: http_addr,
        id,
        task,
    })
}

/// Run the server until `shutdown` fires.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<()> {
    let running = start(config, shutdown).await?;
    running
        .task
        .await
        .map_err(|e| dupla::Error::Internal(format!("server task: {e}")))?
}
