//! `TestCluster`: a manager and N storage servers in this process.

use dupla::shutdown::{self, ShutdownHandle};
use dupla::v1::manager_client::ManagerClient;
use dupla::v1::{ClusterStatusReply, ClusterStatusRequest};
use dupla::Hash;
use dupla_server::faults::FaultPlan;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tempfile::TempDir;
use tokio::task::JoinHandle;

/// The cluster secret used by test clusters.
pub const TEST_SECRET: &str = "test-cluster-secret";

/// One node of the test cluster.
pub struct NodeHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its HTTP API listens (every test node has one, on a free port).
    pub http: Option<SocketAddr>,
    /// Server id (empty for the manager).
    pub id: String,
    /// Its data directory.
    pub data: PathBuf,
    /// The faults it injects (servers only; none unless started with some).
    pub faults: FaultPlan,
    shutdown: Option<ShutdownHandle>,
    task: Option<JoinHandle<dupla::Result<()>>>,
}

impl NodeHandle {
    /// Whether it is running.
    pub fn is_running(&self) -> bool {
        self.task.is_some()
    }

    async fn stop(&mut self) {
        if let Some(handle) = self.shutdown.take() {
            handle.trigger();
        }
        if let Some(task) = self.task.take() {
            // Graceful stop waits for open streams; abort if that stalls.
            match tokio::time::timeout(Duration::from_secs(10), task).await {
                Ok(_) => {}
                Err(_) => panic!("node {} did not stop within 10 s", self.addr),
            }
        }
    }
}

/// Settings a test gives the manager beyond [`dupla_manager::Config::for_test`]
/// (a broker, a smaller `max_sessions`...), kept for its restarts.
pub type ManagerSetup = std::sync::Arc<dyn Fn(&mut dupla_manager::Config) + Send + Sync>;

/// Settings a test gives its servers beyond [`dupla_server::Config::for_test`]
/// (broker credentials...), applied to each server started or restarted
/// while set.
pub type ServerSetup = std::sync::Arc<dyn Fn(&mut dupla_server::Config) + Send + Sync>;

/// Login of the user [`TestCluster::start`] registers and logs in.
pub const TEST_USER: &str = "tester";

/// A manager and N storage servers, each in its own temp directory; all
/// stop when the cluster is dropped (their shutdown handles drop with it).
pub struct TestCluster {
    /// The manager.
    pub manager: NodeHandle,
    /// The storage servers.
    pub servers: Vec<NodeHandle>,
    /// Token of [`TEST_USER`] (empty after [`TestCluster::start_without_user`]).
    pub token: String,
    /// Idle timeout of the servers started from now on (the servers'
    /// default when `None`).
    pub idle_timeout: Option<Duration>,
    /// How test clients dial the cluster: plain text, or (after
    /// [`TestCluster::start_tls`]) TLS trusting the cluster's CA.
    pub transport: dupla::rpc::Transport,
    /// Extra server settings, applied to every server (re)started from
    /// now on: change it between [`TestCluster::add_server`] calls to
    /// start servers set up differently.
    pub server_setup: Option<ServerSetup>,
    /// Extra manager settings, applied at every (re)start.
    manager_setup: Option<ManagerSetup>,
    root: TempDir,
}

impl TestCluster {
    /// Start a manager and `n` servers, wait until all servers are up, and
    /// log in [`TEST_USER`], whose token [`TestCluster::at`] uses.
    pub async fn start(n: usize) -> TestCluster {
        let mut cluster = Self::start_without_user(n).await;
        cluster.token = crate::chat::user(&cluster.manager_addr(), TEST_USER).await;
        cluster
    }

    /// Start a manager and `n` servers with no account registered.
    pub async fn start_without_user(n: usize) -> TestCluster {
        Self::start_servers(n, false, |_| FaultPlan::none()).await
    }

    /// As [`TestCluster::start`], with TLS on every link as a real
    /// cluster runs: the manager's CA, servers enrolled with it.
    pub async fn start_tls(n: usize) -> TestCluster {
        let mut cluster = Self::start_servers(n, true, |_| FaultPlan::none()).await;
        cluster.token = cluster.new_user(TEST_USER).await;
        cluster
    }

    /// As [`TestCluster::start`], server `i` injecting the faults of
    /// `faults(i)`. Give [`FaultPlan::new`] to add rules while it runs
    /// (placement is known only once every server has its id), through
    /// [`TestCluster::faults`]. A plan belongs to one server.
    pub async fn start_with_faults(n: usize, faults: impl Fn(usize) -> FaultPlan) -> TestCluster {
        if !dupla_server::faults::ENABLED {
            panic!("fault injection needs dupla-server's `faults` feature (the testkit's tests enable it)");
        }
        let mut cluster = Self::start_servers(n, false, faults).await;
        cluster.token = crate::chat::user(&cluster.manager_addr(), TEST_USER).await;
        cluster
    }

    /// Start a manager set up by `setup` and `n` servers, with no account
    /// registered (the social tests give a broker and `max_sessions`).
    pub async fn start_configured(
        n: usize,
        setup: impl Fn(&mut dupla_manager::Config) + Send + Sync + 'static,
    ) -> TestCluster {
        Self::start_configured_servers(n, setup, |_| {}).await
    }

    /// As [`TestCluster::start_configured`], each server also set up by
    /// `servers` (kept as [`TestCluster::server_setup`]).
    pub async fn start_configured_servers(
        n: usize,
        setup: impl Fn(&mut dupla_manager::Config) + Send + Sync + 'static,
        servers: impl Fn(&mut dupla_server::Config) + Send + Sync + 'static,
    ) -> TestCluster {
        Self::start_servers_with(
            n,
            false,
            |_| FaultPlan::none(),
            Some(std::sync::Arc::new(setup)),
            Some(std::sync::Arc::new(servers)),
        )
        .await
    }

    async fn start_servers(
        n: usize,
        tls: bool,
        faults: impl Fn(usize) -> FaultPlan,
    ) -> TestCluster {
        Self::start_servers_with(n, tls, faults, None, None).await
    }

    async fn start_servers_with(
        n: usize,
        tls: bool,
        faults: impl Fn(usize) -> FaultPlan,
        manager_setup: Option<ManagerSetup>,
        server_setup: Option<ServerSetup>,
    ) -> TestCluster {
        let root = tempfile::tempdir().expect("temp dir");
        let manager = start_manager(
            root.path().join("manager"),
            "127.0.0.1:0",
            "127.0.0.1:0",
            tls,
            manager_setup.as_ref(),
        )
        .await;
        let transport = match tls {
            true => dupla::rpc::Transport::tls(
                std::fs::read_to_string(manager.data.join(dupla::tls::CA_CERT_FILE))
                    .expect("the manager wrote its CA"),
                None,
            ),
            false => dupla::rpc::Transport::Insecure,
        };
        let mut cluster = TestCluster {
            manager,
            servers: Vec::new(),
            token: String::new(),
            idle_timeout: None,
            transport,
            server_setup,
            manager_setup,
            root,
        };
        for i in 0..n {
            let server = cluster
                .start_server_in(
                    cluster.root.path().join(format!("server-{i}")),
                    "127.0.0.1:0",
                    "127.0.0.1:0",
                    faults(i),
                )
                .await;
            cluster.servers.push(server);
        }
        cluster.wait_for_up(n).await;
        cluster
    }

    async fn start_server_in(
        &self,
        data: PathBuf,
        listen: &str,
        http: &str,
        faults: FaultPlan,
    ) -> NodeHandle {
        let mut config = dupla_server::Config::for_test(
            data.clone(),
            self.manager.addr.to_string(),
            TEST_SECRET,
        );
        config.listen = listen.into();
        config.http = http.into();
        config.faults = faults.clone();
        config.insecure = !self.transport.is_tls();
        if let Some(idle) = self.idle_timeout {
            config.idle_timeout = idle;
        }
        if let Some(setup) = &self.server_setup {
            setup(&mut config);
        }
        let (handle, shutdown) = shutdown::channel();
        let running = dupla_server::start(config, shutdown)
            .await
            .expect("server starts");
        NodeHandle {
            addr: running.addr,
            http: running.http,
            id: running.id,
            data,
            faults,
            shutdown: Some(handle),
            task: Some(running.task),
        }
    }

    /// Start one more server; returns its index.
    pub async fn add_server(&mut self) -> usize {
        self.add_server_with_faults(FaultPlan::none()).await
    }

    /// Start one more server injecting `faults`; returns its index.
    pub async fn add_server_with_faults(&mut self, faults: FaultPlan) -> usize {
        let i = self.servers.len();
        let data = self.root.path().join(format!("server-{i}"));
        let server = self
            .start_server_in(data, "127.0.0.1:0", "127.0.0.1:0", faults)
            .await;
        self.servers.push(server);
        i
    }

    /// The fault plan of server `i` (add rules to it, or kill the server
    /// with [`FaultPlan::kill`]).
    pub fn faults(&self, i: usize) -> &FaultPlan {
        &self.servers[i].faults
    }

    /// Address of the manager, as `host:port`.
    pub fn manager_addr(&self) -> String {
        self.manager.addr.to_string()
    }

    /// Address of server `i`.
    pub fn server_addr(&self, i: usize) -> String {
        self.servers[i].addr.to_string()
    }

    /// Raw calls to server `i` as [`TEST_USER`].
    pub fn at(&self, i: usize) -> crate::raw::Target {
        crate::raw::Target::new(self.server_addr(i), &self.token)
    }

    /// The first name `prefix-0`, `prefix-1`, ... whose placement order
    /// (server indices, as the manager would place [`TEST_USER`]'s file of
    /// `size` bytes on the idle cluster now) satisfies `wanted`.
    pub async fn name_placed(
        &self,
        prefix: &str,
        size: u64,
        wanted: impl Fn(&[usize]) -> bool,
    ) -> String {
        use dupla::placement::{choose, Candidate, DEFAULT_LOAD_EPSILON};
        let status = self.status().await;
        let candidates: Vec<Candidate> = status
            .servers
            .iter()
            .filter(|s| s.state() == dupla::v1::ServerState::Up)
            .map(|s| Candidate {
                id: s.node.as_ref().expect("a server has a node").id.clone(),
                free: s.capacity.saturating_sub(s.used),
                active: 0,
            })
            .collect();
        (0..100_000)
            .map(|i| format!("{prefix}-{i}"))
            .find(|name| {
                let key = dupla_manager::files::catalog::placement_key(TEST_USER, name);
                let order: Vec<usize> = choose(&key, size, &candidates, DEFAULT_LOAD_EPSILON)
                    .into_iter()
                    .map(|i| self.server_index(&candidates[i].id))
                    .collect();
                wanted(&order)
            })
            .expect("a name with the wanted placement")
    }

    /// Register and log in another user; returns their token.
    pub async fn new_user(&self, login: &str) -> String {
        if !self.transport.is_tls() {
            return crate::chat::user(&self.manager_addr(), login).await;
        }
        let channel = self.channel(&self.manager_addr()).await;
        let mut accounts = dupla::v1::accounts_client::AccountsClient::new(channel);
        accounts
            .register(crate::chat::registration(login))
            .await
            .unwrap_or_else(|s| panic!("register {login}: {s:?}"));
        accounts
            .login(dupla::v1::LoginRequest {
                login: login.into(),
                password: crate::chat::TEST_PASSWORD.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("login {login}: {s:?}"))
            .into_inner()
            .token
    }

    /// A channel to `addr` the way test clients dial this cluster.
    pub async fn channel(&self, addr: &str) -> tonic::transport::Channel {
        self.transport
            .connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{addr} reachable: {e}"))
    }

    /// [`TEST_USER`]'s catalog entry of `name`, with its chunk list.
    pub async fn lookup(&self, name: &str) -> Result<dupla::v1::FileEntry, tonic::Status> {
        self.manager_client()
            .await
            .lookup(self.as_user(dupla::v1::LookupRequest {
                name: name.into(),
                version: 0,
            }))
            .await
            .map(|r| r.into_inner())
    }

    /// Every file of the user holding `token`, in name order (without
    /// chunk lists, as `List` gives them).
    pub async fn files_of(&self, token: &str) -> Vec<dupla::v1::FileEntry> {
        let mut files = self
            .manager_client()
            .await
            .list(crate::chat::authed(
                token,
                dupla::v1::ListRequest::default(),
            ))
            .await
            .expect("list")
            .into_inner()
            .files;
        files.sort_by(|a, b| a.name.cmp(&b.name));
        files
    }

    /// `message` as a call of [`TEST_USER`] (for the manager's catalog calls).
    pub fn as_user<T>(&self, message: T) -> tonic::Request<T> {
        crate::chat::authed(&self.token, message)
    }

    /// Index of the server with this id.
    pub fn server_index(&self, id: &str) -> usize {
        self.servers
            .iter()
            .position(|s| s.id == id)
            .unwrap_or_else(|| panic!("no server with id {id}"))
    }

    /// A manager client.
    pub async fn manager_client(&self) -> ManagerClient<tonic::transport::Channel> {
        ManagerClient::new(self.channel(&self.manager_addr()).await)
            .max_decoding_message_size(dupla::rpc::MAX_CATALOG_MESSAGE_BYTES)
    }

    /// The manager's cluster status.
    pub async fn status(&self) -> ClusterStatusReply {
        self.manager_client()
            .await
            .cluster_status(ClusterStatusRequest {})
            .await
            .expect("status")
            .into_inner()
    }

    /// Wait (polling the manager's status) until `n` servers are up.
    pub async fn wait_for_up(&self, n: usize) {
        self.wait_for_status(|s| {
            s.servers
                .iter()
                .filter(|s| s.state() == dupla::v1::ServerState::Up)
                .count()
                == n
        })
        .await;
    }

    /// Wait (polling status, 50 ms apart, 60 s at most) until `done` holds.
    pub async fn wait_for_status(&self, done: impl Fn(&ClusterStatusReply) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.status().await;
            if done(&status) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "cluster never reached the awaited state: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop server `i` (its port stops answering; its data stays).
    pub async fn stop_server(&mut self, i: usize) {
        self.servers[i].stop().await;
    }

    /// Restart server `i` on the same address and data directory (a
    /// killed one too, after [`TestCluster::stop_server`]). It comes back
    /// with a fresh plan with no rules when it had one, none otherwise.
    pub async fn restart_server(&mut self, i: usize) {
        assert!(!self.servers[i].is_running(), "server {i} is running");
        let data = self.servers[i].data.clone();
        let listen = self.servers[i].addr.to_string();
        let faults = if self.servers[i].faults.is_empty() {
            FaultPlan::none()
        } else {
            FaultPlan::new()
        };
        // Its HTTP API comes back on its old port too.
        let http = self.servers[i]
            .http
            .map_or_else(|| "off".to_string(), |a| a.to_string());
        self.servers[i] = self.start_server_in(data, &listen, &http, faults).await;
    }

    /// Restart stopped server `i` with its data directory on a new port
    /// (as a server moved to another address would come back).
    pub async fn restart_server_elsewhere(&mut self, i: usize) {
        assert!(!self.servers[i].is_running(), "server {i} is running");
        let data = self.servers[i].data.clone();
        self.servers[i] = self
            .start_server_in(data, "127.0.0.1:0", "127.0.0.1:0", FaultPlan::none())
            .await;
    }

    /// Stop the manager and start it again on the same address and data.
    pub async fn restart_manager(&mut self) {
        self.stop_manager().await;
        self.start_manager_again().await;
    }

    /// Give `login` the admin role the way an operator does
    /// (`dupla-manager admin grant`, with the manager stopped), then start
    /// the manager again. Tokens survive the restart.
    pub async fn grant_admin(&mut self, login: &str) {
        self.stop_manager().await;
        let config = dupla_manager::Config::for_test(self.manager.data.clone(), TEST_SECRET);
        dupla_manager::identity::admin::set_admin(&config, login, true)
            .unwrap_or_else(|e| panic!("grant admin to {login}: {e}"));
        self.start_manager_again().await;
        // A restarted manager places nothing until the running servers'
        // heartbeats come back.
        let running = self.servers.iter().filter(|s| s.is_running()).count();
        self.wait_for_up(running).await;
    }

    /// Stop the manager (its database stays).
    pub async fn stop_manager(&mut self) {
        self.manager.stop().await;
    }

    /// Start the stopped manager on its old address and data.
    pub async fn start_manager_again(&mut self) {
        let (data, listen, http) = self.stopped_manager();
        self.manager = start_manager(
            data,
            &listen,
            &http,
            self.transport.is_tls(),
            self.manager_setup.as_ref(),
        )
        .await;
    }

    /// Start the stopped manager again on threads of its own (a runtime
    /// with two workers), as its own process would run. Benchmarks use it:
    /// they then time the manager, not the queue of this process's runtime,
    /// which the servers and the load share.
    pub async fn start_manager_apart(&mut self) {
        let (data, listen, http) = self.stopped_manager();
        let (tls, setup) = (self.transport.is_tls(), self.manager_setup.clone());
        let (outer, mut stop) = shutdown::channel();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let node_data = data.clone();
        let thread = tokio::task::spawn_blocking(move || -> dupla::Result<()> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("manager-apart")
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let mut node = start_manager(node_data, &listen, &http, tls, setup.as_ref()).await;
                let _ = started_tx.send((node.addr, node.http));
                stop.wait().await;
                node.stop().await;
                Ok(())
            })
        });
        let (addr, http) = started_rx.await.expect("the manager's runtime started it");
        self.manager = NodeHandle {
            addr,
            http,
            id: String::new(),
            data,
            faults: FaultPlan::none(),
            shutdown: Some(outer),
            task: Some(tokio::spawn(async move {
                thread
                    .await
                    .map_err(|e| dupla::Error::Internal(format!("manager thread: {e}")))?
            })),
        };
    }

    /// Data directory, listen address and HTTP address of the stopped
    /// manager, for starting it again where it was.
    fn stopped_manager(&self) -> (PathBuf, String, String) {
        assert!(!self.manager.is_running(), "the manager is running");
        // The HTTP API comes back on its old port too.
        let http = self
            .manager
            .http
            .map_or_else(|| "off".to_string(), |a| a.to_string());
        (
            self.manager.data.clone(),
            self.manager.addr.to_string(),
            http,
        )
    }

    /// Path of the chunk with `hash` in server `i`'s store.
    pub fn chunk_path(&self, i: usize, hash: &Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.servers[i]
            .data
            .join("chunks")
            .join(&hex[..2])
            .join(hex)
    }

    /// Base URL of the manager's HTTP API and console.
    pub fn manager_http(&self) -> String {
        let addr = self.manager.http.expect("test managers serve HTTP");
        format!("http://{addr}")
    }

    /// Base URL of server `i`'s HTTP API.
    pub fn server_http(&self, i: usize) -> String {
        let addr = self.servers[i].http.expect("test servers serve HTTP");
        format!("http://{addr}")
    }

    /// Root of the cluster's temporary directories.
    pub fn root(&self) -> &std::path::Path {
        self.root.path()
    }
}

async fn start_manager(
    data: PathBuf,
    listen: &str,
    http: &str,
    tls: bool,
    setup: Option<&ManagerSetup>,
) -> NodeHandle {
    let mut config = dupla_manager::Config::for_test(data.clone(), TEST_SECRET);
    config.listen = listen.into();
    config.http = http.into();
    config.insecure = !tls;
    if let Some(setup) = setup {
        setup(&mut config);
    }
    let (handle, shutdown) = shutdown::channel();
    // After a restart in the same process, connection tasks of the stopped
    // manager may still hold its database (and its lock) for a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let running = loop {
        match dupla_manager::start(config.clone(), shutdown.clone()).await {
            Ok(running) => break running,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("manager restart: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("manager does not start: {e}"),
        }
    };
    NodeHandle {
        addr: running.addr,
        http: running.http,
        id: String::new(),
        data,
        faults: FaultPlan::none(),
        shutdown: Some(handle),
        task: Some(running.task),
    }
}
