//! The Dupla manager: keeps the catalog, knows the storage servers from their
//! heartbeats, and decides where each new file goes. It never touches file
//! bytes: data flows between clients and storage servers only. It also
//! keeps the accounts (and their login tokens) and hosts the chat rooms.
//!
//! `run` is what the binary calls; `start` is the same for tests, returning
//! the bound address.

pub mod chat;
pub mod cluster;
pub mod config;
pub mod files;
pub mod http;
pub mod identity;
pub mod service;
pub mod social;
pub mod state;

pub use config::{Args, Config};

use dupla::kv::{Kv, SledKv};
use dupla::rpc::MAX_CATALOG_MESSAGE_BYTES;
use dupla::shutdown::Shutdown;
use dupla::v1::accounts_server::AccountsServer;
use dupla::v1::enrolment_server::EnrolmentServer;
use dupla::v1::manager_server::ManagerServer;
use dupla::v1::room_relay_server::RoomRelayServer;
use dupla::v1::rooms_server::RoomsServer;
use dupla::v1::snapshots_server::SnapshotsServer;
use dupla::v1::social_graph_server::SocialGraphServer;
use dupla::Result;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;

/// A started manager.
pub struct Running {
    /// Address it listens on.
    pub addr: SocketAddr,
    /// Address of its HTTP API and console, when it has one.
    pub http: Option<SocketAddr>,
    /// Resolves when it has shut down.
    pub task: JoinHandle<Result<()>>,
}

/// Open the database, bind, and serve in the background.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running> {
    std::fs::create_dir_all(&config.data)?;
    dupla::rpc::check_demo_secret(&dupla::rpc::Secret::new(&config.secret)?, &config.listen)?;
    let listener = dupla::rpc::bind(&config.listen).await?;
    let addr = listener.local_addr()?;
    let (transport, ca) = transport(&config)?;
    let kv: Arc<dyn Kv> = Arc::new(SledKv::open(&config.data.join("db"))?);
    let state = Arc::new(state::State::open(
        config.clone(),
        kv.clone(),
        transport.clone(),
    )?);
    // Accounts and tokens share the catalog's database; rooms live in memory.
    let accounts = Arc::new(identity::accounts::Accounts::new(kv.clone()));
    let tokens = Arc::new(Mutex::new(identity::tokens::Tokens::load(
        kv.clone(),
        dupla::clock::unix_ms(),
    )?));
    if state.catalog.has_legacy()? {
        tracing::warn!(
            "the catalog holds files from before accounts: stop the manager and give them to an account with `dupla-manager adopt-legacy LOGIN`"
        );
    }
    {
        let _writes = state.lock_catalog_writes();
        files::snapshot_service::snapshot_adopted(&state)?;
    }
    let hub = Arc::new(chat::room_hub::Hub::new(config.chat.clone()));
    // Latency per RPC of every dupla service, shown at the HTTP /metrics.
    let metrics = dupla::metrics::Metrics::new("manager");
    use dupla::metrics::Timed;
    // The social graph shares the database too; presence says who has a
    // message stream open, and where.
    let social = Arc::new(social::graph::Social::new(kv.clone(), accounts.clone()));
    let presence = Arc::new(social::presence::Presence::new(kv.clone()));
    let (broker_url, embedded_broker) = match &config.broker {
        Some(url) => (url.expose(), None),
        None => {
            let broker =
                social::embedded_broker::start(&config.broker_listen, shutdown.clone()).await?;
            (
                social::embedded_broker::advertised(broker.addr, &config.tls_names),
                Some(broker.task),
            )
        }
    };
    let authenticator = identity::auth::Authenticator::new(tokens.clone());
    // Launched servers dial the manager on loopback when it listens on
    // every interface.
    let dial_addr = match addr.ip().is_unspecified() {
        true => format!("127.0.0.1:{}", addr.port()),
        false => addr.to_string(),
    };
    let elastic = Arc::new(cluster::elastic::Elastic::new(
        state.clone(),
        kv.clone(),
        tokens.clone(),
        cluster::launcher::Launcher::new(
            config.elastic.clone(),
            dial_addr,
            config.secret.to_string(),
            config.insecure,
            config.data.clone(),
        ),
    ));
    elastic.restore()?;
    // Gates check the secret or token on the headers, before the large
    // catalog limit lets a body in (see gate.rs).
    let snapshot_service = identity::gate::Gate::new(
        SnapshotsServer::new(files::snapshot_service::SnapshotService::new(
            state.clone(),
            authenticator.clone(),
            accounts.clone(),
        ))
        .max_decoding_message_size(MAX_CATALOG_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CATALOG_MESSAGE_BYTES),
        state.secret.clone(),
        authenticator.clone(),
        identity::gate::user_rule,
    );
    // One instance shared by gRPC and HTTP: the login throttle counts both.
    let accounts_rpc = identity::accounts_service::AccountsService::new(
        state.clone(),
        accounts.clone(),
        tokens.clone(),
        hub.clone(),
        (social.clone(), presence.clone()),
    )
    .with_elastic(elastic.clone());
    let http_api = http::Api {
        accounts: accounts_rpc.clone(),
        manager: service::ManagerService::new(state.clone(), tokens.clone(), accounts.clone()),
        snapshots: files::snapshot_service::SnapshotService::new(
            state.clone(),
            authenticator.clone(),
            accounts.clone(),
        ),
        state: state.clone(),
        accounts_db: accounts.clone(),
        tokens: tokens.clone(),
        hub: hub.clone(),
        chat: Default::default(),
        history: Default::default(),
        // Browser chats open `Rooms/Chat` on this very manager.
        grpc_addr: match addr.ip().is_unspecified() {
            true => format!("127.0.0.1:{}", addr.port()),
            false => addr.to_string(),
        },
        shutdown: shutdown.clone(),
    };
    let http = http::start(http_api, &config.http, metrics.clone(), shutdown.clone()).await?;
    let http_addr = http.as_ref().map(|h| h.addr);
    let accounts_service = AccountsServer::new(accounts_rpc)
        .max_decoding_message_size(identity::gate::MAX_CLIENT_MESSAGE_BYTES);
    let social_service = identity::gate::Gate::new(
        SocialGraphServer::new(social::service::SocialGraphService::new(
            social,
            presence,
            tokens.clone(),
            state.clone(),
            broker_url.clone(),
        ))
        .max_decoding_message_size(identity::gate::MAX_CLIENT_MESSAGE_BYTES),
        state.secret.clone(),
        authenticator.clone(),
        |_| identity::gate::Need::Secret,
    );
    let catalog_accounts = accounts.clone();
    // The rooms of the chats the storage servers serve (lines go through
    // the broker; the servers ask the manager only for room changes).
    let members = state.clone();
    let relay = chat::relay::RelayService::new(
        accounts.clone(),
        authenticator.clone(),
        config.chat.max_clients,
        Arc::new(move |server: &str| {
            members
                .lock_membership()
                .has_died(server, std::time::Instant::now())
        }),
    );
    {
        let relay = relay.clone();
        hub.online_elsewhere(move |login| relay.is_online(login));
    }
    let relay_service = identity::gate::Gate::new(
        RoomRelayServer::new(relay)
            .max_decoding_message_size(identity::gate::MAX_CLIENT_MESSAGE_BYTES),
        state.secret.clone(),
        authenticator.clone(),
        |_| identity::gate::Need::Secret,
    );
    let rooms_service = InterceptedService::new(
        RoomsServer::new(chat::room_service::RoomsService::new(
            hub,
            accounts,
            authenticator.clone(),
            config.chat.clone(),
            shutdown.clone(),
        ))
        .max_decoding_message_size(chat::room_service::MAX_CHAT_MESSAGE_BYTES),
        authenticator.clone(),
    );
    let repairs = tokio::spawn(files::repair_worker::run(state.clone(), shutdown.clone()));
    let retirements = tokio::spawn(cluster::elastic::run(elastic.clone(), shutdown.clone()));
    let enrolment = ca.map(|ca| {
        EnrolmentServer::new(identity::enrolment::EnrolmentService::new(
            state.clone(),
            ca,
        ))
    });
    let service = identity::gate::Gate::new(
        ManagerServer::new(
            service::ManagerService::new(state.clone(), tokens, catalog_accounts)
                .with_elastic(elastic),
        )
        .max_decoding_message_size(MAX_CATALOG_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CATALOG_MESSAGE_BYTES),
        state.secret.clone(),
        authenticator,
        identity::gate::manager_rule,
    );
    let mut server = transport.secure(dupla::rpc::server())?;
    let (router, health) = dupla::rpc::common_router(
        &mut server,
        &[
            "dupla.v1.Manager",
            "dupla.v1.Accounts",
            "dupla.v1.Rooms",
            "dupla.v1.Snapshots",
            "dupla.v1.Enrolment",
            "dupla.v1.SocialGraph",
            "dupla.v1.RoomRelay",
        ],
    )?;
    health
        .set_serving::<ManagerServer<service::ManagerService>>()
        .await;
    health
        .set_serving::<AccountsServer<identity::accounts_service::AccountsService>>()
        .await;
    health
        .set_serving::<RoomsServer<chat::room_service::RoomsService>>()
        .await;
    health
        .set_serving::<SnapshotsServer<files::snapshot_service::SnapshotService>>()
        .await;
    let router = router
        .add_service(Timed::new(service, metrics.clone()))
        .add_service(Timed::new(snapshot_service, metrics.clone()))
        .add_service(Timed::new(accounts_service, metrics.clone()))
        .add_service(Timed::new(rooms_service, metrics.clone()))
        .add_service(Timed::new(social_service, metrics.clone()))
        .add_service(Timed::new(relay_service, metrics.clone()))
        .add_optional_service(enrolment);
    tracing::info!(%addr, data = %config.data.display(), tls = transport.is_tls(), broker = %dupla::broker::redact(&broker_url), "manager listening");
    let task = tokio::spawn(async move {
        let result = dupla::rpc::serve(router, listener, shutdown).await;
        let _ = repairs.await;
        let _ = retirements.await;
        if let Some(broker) = embedded_broker {
            let _ = broker.await;
        }
        if let Some(http) = http {
            let _ = http.task.await;
        }
        tracing::info!(%addr, "manager stopped");
        result
    });
    Ok(Running {
        addr,
        http: http_addr,
        task,
    })
}

/// TLS with the cluster CA (created in the data directory on first start)
/// and a fresh certificate for this manager, or plain text under
/// `--insecure`, which says so in the log.
fn transport(config: &Config) -> Result<(dupla::rpc::Transport, Option<Arc<dupla::tls::Ca>>)> {
    use dupla::tls::{cert_hosts, host_of, Ca, Transport, MANAGER_NAME};
    if config.insecure {
        let transport = Transport::Insecure;
        transport.warn_if_insecure("the manager");
        return Ok((transport, None));
    }
    let ca = Ca::load_or_create(&config.data)?;
    let mut hosts = vec![host_of(&config.listen)];
    hosts.extend(config.tls_names.iter().map(|name| host_of(name)));
    let identity = ca.issue(MANAGER_NAME, &cert_hosts(&hosts))?;
    let transport = Transport::tls(ca.pem().to_string(), Some(identity));
    Ok((transport, Some(Arc::new(ca))))
}

/// Give the files of a catalog from before ownership to `owner` (an
/// explicit operator step: [`identity::admin::adopt_legacy`]); how many moved.
pub(crate) fn adopt_legacy_files(state: &state::State, owner: &str) -> Result<usize> {
    let _writes = state.lock_catalog_writes();
    if !state.catalog.has_legacy()? {
        return Ok(0);
    }
    let moved = state.catalog.adopt_legacy(owner)?;
    tracing::warn!(
        owner,
        moved,
        "files backed up before accounts existed now belong to {owner}"
    );
    files::snapshot_service::snapshot_adopted(state)?;
    Ok(moved)
}

/// Run the manager until `shutdown` fires.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<()> {
    let running = start(config, shutdown).await?;
    running
        .task
        .await
        .map_err(|e| dupla::Error::Internal(format!("manager task: {e}")))?
}
