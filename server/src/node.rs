//! The running server's shared state: who it is, its chunk store, its
//! connections to peers and to the manager.

use crate::chunk_store::ChunkStore;
use crate::metrics::ActiveTransfers;
use dupla::rpc::{Secret, MAX_CATALOG_MESSAGE_BYTES, MAX_MESSAGE_BYTES};
use dupla::v1::accounts_client::AccountsClient;
use dupla::v1::manager_client::ManagerClient;
use dupla::v1::storage_client::StorageClient;
use dupla::v1::Node as WireNode;
use dupla::v1::ReportCorruptRequest;
use dupla::{Hash, Result};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use tonic::transport::Channel;

/// Everything a request handler needs.
pub struct StorageNode {
    /// Stable id.
    pub id: String,
    /// Address peers reach this server at.
    pub addr: String,
    /// Local chunks.
    pub store: ChunkStore,
    /// Cluster secret for internal calls, both ways.
    pub secret: Secret,
    /// Transfers in progress (reported in heartbeats).
    pub active: ActiveTransfers,
    /// Bytes per second repair copies into this server may take.
    pub repair_rate: u64,
    /// Held by the running scrub pass, so passes never overlap.
    pub scrub_lock: tokio::sync::Mutex<()>,
    /// When each user last started an on-demand scrub here.
    pub user_scrubs: std::sync::Mutex<crate::scrub::UserScrubs>,
    /// How long a chunk no file uses is kept before collection.
    pub gc_grace: std::time::Duration,
    /// A sender silent this long is presumed gone (uploads, Store hops).
    pub idle_timeout: std::time::Duration,
    /// Faults injected on the write path (tests only; none by default).
    pub faults: crate::faults::FaultPlan,
    /// Bytes moved and scrub progress, for `/metrics`.
    pub traffic: crate::metrics::Traffic,
    /// Base URL of this server's HTTP API, once it listens (heartbeats
    /// tell the manager, which tells the web console).
    pub http_url: std::sync::OnceLock<String>,
    /// Corrupt chunks quarantined here whose report to the manager failed:
    /// retried after each successful heartbeat, so none is forgotten.
    unreported: std::sync::Mutex<Vec<Hash>>,
    manager: ManagerClient<Channel>,
    /// How this server dials the manager and its peers.
    transport: dupla::rpc::Transport,
    /// The manager's channel, for its other services (Accounts).
    pub(crate) manager_channel: Channel,
    peers: Mutex<HashMap<String, Channel>>,
}

impl StorageNode {
    /// Build the node state; connections are made lazily on first use.
    pub fn new(
        id: String,
        addr: String,
        store: ChunkStore,
        secret: Secret,
        manager: &str,
        repair_rate: u64,
        transport: dupla::rpc::Transport,
    ) -> Result<Self> {
        let manager_channel = transport.connect_lazy(manager)?;
        let manager = ManagerClient::new(manager_channel.clone())
            .max_decoding_message_size(MAX_CATALOG_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_CATALOG_MESSAGE_BYTES);
        Ok(StorageNode {
            id,
            addr,
            store,
            secret,
            active: ActiveTransfers::default(),
            repair_rate,
            scrub_lock: tokio::sync::Mutex::new(()),
            user_scrubs: std::sync::Mutex::default(),
            gc_grace: std::time::Duration::from_secs(crate::config::DEFAULT_GC_GRACE_SECS),
            idle_timeout: crate::pipeline::IDLE_TIMEOUT,
            faults: crate::faults::FaultPlan::none(),
            traffic: Default::default(),
            http_url: std::sync::OnceLock::new(),
            unreported: std::sync::Mutex::new(Vec::new()),
            manager,
            transport,
            manager_channel,
            peers: Mutex::new(HashMap::new()),
        })
    }

    /// This server as the wire knows it.
    pub fn wire_node(&self) -> WireNode {
        WireNode {
            id: self.id.clone(),
            addr: self.addr.clone(),
        }
    }

    /// The manager's social graph (cheap clone of the shared channel).
    pub fn social_graph(&self) -> dupla::v1::social_graph_client::SocialGraphClient<Channel> {
        dupla::v1::social_graph_client::SocialGraphClient::new(self.manager_channel.clone())
    }

    /// The manager's RoomRelay: the rooms of the chats served here.
    pub fn room_relay(&self) -> dupla::v1::room_relay_client::RoomRelayClient<Channel> {
        dupla::v1::room_relay_client::RoomRelayClient::new(self.manager_channel.clone())
    }

    /// A client for the manager (cheap clone of a shared channel).
    pub fn manager(&self) -> ManagerClient<Channel> {
        self.manager.clone()
    }

    /// Check that `user` is a logged-in user (the manager's Accounts
    /// service says who the token belongs to): for user calls that do not
    /// otherwise go to the manager.
    pub async fn check_user(&self, user: &dupla::rpc::UserCredentials) -> Result<String> {
        let mut request = tonic::Request::new(dupla::v1::WhoAmIRequest {});
        user.attach(&mut request);
        let reply = AccountsClient::new(self.manager_channel.clone())
            .who_am_i(request)
            .await?
            .into_inner();
        Ok(reply.user.map(|u| u.login).unwrap_or_default())
    }

    /// A chunk read back corrupt: quarantine it and tell the manager, in
    /// the background (the reader has already moved on to the other copy).
    pub fn on_corrupt(self: &Arc<Self>, hash: Hash) {
        let node = self.clone();
        tokio::spawn(async move {
            let quarantined = node.store.quarantine(&hash);
            if let Err(e) = quarantined {
                tracing::warn!(chunk = %hash, error = %e, "could not quarantine a corrupt chunk");
            }
            if let Err(e) = node.report_corrupt(vec![hash]).await {
                tracing::warn!(chunk = %hash, error = %e, "could not report a corrupt chunk");
            }
        });
    }

    /// Tell the manager these chunks are corrupt here. On failure they are
    /// kept and sent again after the next successful heartbeat.
    pub async fn report_corrupt(&self, chunks: Vec<Hash>) -> Result<()> {
        let request = self.secret.request(ReportCorruptRequest {
            server_id: self.id.clone(),
            chunks: chunks.iter().map(Hash::to_bytes).collect(),
        });
        match self.manager().report_corrupt(request).await {
            Ok(reply) => {
                tracing::warn!(
                    chunks = chunks.len(),
                    files = reply.into_inner().files_affected,
                    "reported corrupt chunks; the manager re-replicates the affected files"
                );
                Ok(())
            }
            Err(status) => {
                self.unreported
                    .lock()
                    .expect("unreported lock poisoned")
                    .extend(chunks);
                Err(status.into())
            }
        }
    }

    /// Send again the corruption reports that failed earlier.
    pub async fn retry_unreported(&self) {
        let pending =
            std::mem::take(&mut *self.unreported.lock().expect("unreported lock poisoned"));
        if !pending.is_empty() {
            if let Err(e) = self.report_corrupt(pending).await {
                tracing::warn!(error = %e, "corruption report still failing; will retry");
            }
        }
    }

    /// A client for the storage server at `addr`, reusing one HTTP/2
    /// connection per peer.
    pub fn peer(&self, addr: &str) -> Result<StorageClient<Channel>> {
        let channel = {
            let mut peers = self.peers.lock().expect("peers lock poisoned");
            match peers.get(addr) {
                Some(channel) => channel.clone(),
                None => {
                    let channel = self.transport.connect_lazy(addr)?;
                    peers.insert(addr.to_string(), channel.clone());
                    channel
                }
            }
        };
        Ok(StorageClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}
