//! The Dupla manager: keeps the catalog, knows the storage servers from their
//! heartbeats, and decides where each new file goes. It never touches file
//! bytes: data flows between clients and storage servers only.
//!
//! `run` is what the binary calls; `start` is the same for tests, returning
//! the bound address.

pub mod catalog;
pub mod config;
pub mod membership;
pub mod service;
pub mod state;
pub mod uploads;

pub use config::{Args, Config};

use dupla::kv::SledKv;
use dupla::rpc::MAX_CATALOG_MESSAGE_BYTES;
use dupla::shutdown::Shutdown;
use dupla::v1::manager_server::ManagerServer;
use dupla::Result;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// A started manager.
pub struct Running {
    /// Address it listens on.
    pub addr: SocketAddr,
    /// Resolves when it has shut down.
    pub task: JoinHandle<Result<()>>,
}

/// Open the database, bind, and serve in the background.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running> {
    std::fs::create_dir_all(&config.data)?;
    let kv = Arc::new(SledKv::open(&config.data.join("db"))?);
    let state = Arc::new(state::State::open(config.clone(), kv)?);
    let listener = dupla::rpc::bind(&config.listen).await?;
    let addr = listener.local_addr()?;
    let service = ManagerServer::new(service::ManagerService::new(state))
        .max_decoding_message_size(MAX_CATALOG_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CATALOG_MESSAGE_BYTES);
    let mut server = dupla::rpc::server();
    let (router, health) = dupla::rpc::common_router(&mut server, &["dupla.v1.Manager"])?;
    health
        .set_serving::<ManagerServer<service::ManagerService>>()
        .await;
    let router = router.add_service(service);
    tracing::info!(%addr, data = %config.data.display(), "manager listening");
    let task = tokio::spawn(async move {
        let result = dupla::rpc::serve(router, listener, shutdown).await;
        tracing::info!(%addr, "manager stopped");
        result
    });
    Ok(Running { addr, task })
}

/// Run the manager until `shutdown` fires.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<()> {
    let running = start(config, shutdown).await?;
    running
        .task
        .await
        .map_err(|e| dupla::Error::Internal(format!("manager task: {e}")))?
}
