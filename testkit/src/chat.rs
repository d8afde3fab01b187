//! Accounts and chat helpers for tests: a manager started alone (the chat
//! needs no storage server), register-and-login in one call, and an
//! in-process chat client that sends lines and awaits the events it
//! expects, shown as `dupla chat` shows them on a pipe.

use dupla::shutdown::{self, ShutdownHandle};
use dupla::v1::accounts_client::AccountsClient;
use dupla::v1::rooms_client::RoomsClient;
use dupla::v1::{chat_event, ChatEvent, ChatInput, LoginReply, LoginRequest, RegisterRequest};
use std::net::SocketAddr;
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

/// The password every test account gets.
pub const TEST_PASSWORD: &str = "correct horse battery";

/// How long one awaited chat event may take before the test fails with
/// what did arrive (shorter than `TEST_TIMEOUT`, for a useful message).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines a test chat client queues before `send` waits.
const INPUT_QUEUE: usize = 64;

/// A manager alone in a temporary directory, stopped on drop.
pub struct LoneManager {
    /// Where it listens.
    pub addr: SocketAddr,
    config: dupla_manager::Config,
    handle: Option<ShutdownHandle>,
    task: Option<JoinHandle<dupla::Result<()>>>,
    _dir: TempDir,
}

impl LoneManager {
    /// Start with the test defaults.
    pub async fn start() -> LoneManager {
        Self::start_with(|_| {}).await
    }

    /// Start after `adjust` changed the config (token lifetime, chat limits...).
    pub async fn start_with(adjust: impl FnOnce(&mut dupla_manager::Config)) -> LoneManager {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = dupla_manager::Config::for_test(
            dir.path().join("manager"),
            crate::cluster::TEST_SECRET,
        );
        adjust(&mut config);
        let (addr, handle, task) = launch(config.clone()).await;
        LoneManager {
            addr,
            config,
            handle: Some(handle),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Stop, then start again on the same data (on a fresh port, so no
    /// other process can have taken the old one meanwhile).
    pub async fn restart(&mut self) {
        self.stop().await;
        let (addr, handle, task) = launch(self.config.clone()).await;
        self.addr = addr;
        self.handle = Some(handle);
        self.task = Some(task);
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Stop and wait until it has (open chats end, told why).
    pub async fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.trigger();
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the manager stops within 10 s")
                .expect("manager task")
                .expect("manager ran cleanly");
        }
    }
}

/// Start a manager with `config`: its address, shutdown handle and task.
async fn launch(
    config: dupla_manager::Config,
) -> (SocketAddr, ShutdownHandle, JoinHandle<dupla::Result<()>>) {
    let (handle, shutdown) = shutdown::channel();
    let running = dupla_manager::start(config, shutdown)
        .await
        .expect("manager starts");
    (running.addr, handle, running.task)
}

/// An Accounts client for the manager at `addr`.
pub async fn accounts(addr: &str) -> AccountsClient<Channel> {
    AccountsClient::new(dupla::rpc::connect(addr).await.expect("manager reachable"))
}

/// A valid registration for `login`.
pub fn registration(login: &str) -> RegisterRequest {
    RegisterRequest {
        first_names: "Test".into(),
        last_names: format!("User {login}"),
        login: login.into(),
        password: TEST_PASSWORD.into(),
        age: 30,
        gender: "other".into(),
    }
}

/// `message` with `token` as its bearer token.
pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .expect("a hex token is valid metadata"),
    );
    request
}

/// Log `login` in with the test password.
pub async fn login(addr: &str, login: &str) -> Result<LoginReply, Status> {
    accounts(addr)
        .await
        .login(LoginRequest {
            login: login.into(),
            password: TEST_PASSWORD.into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Register `login` and log it in; returns the token.
pub async fn user(addr: &str, login: &str) -> String {
    accounts(addr)
        .await
        .register(registration(login))
        .await
        .unwrap_or_else(|s| panic!("register {login}: {s:?}"));
    self::login(addr, login)
        .await
        .unwrap_or_else(|s| panic!("login {login}: {s:?}"))
        .token
}

/// Register `login` and log it in; returns the token and the address of
/// the storage server the login was assigned (where its chat runs).
pub async fn user_on_server(addr: &str, login: &str) -> (String, String) {
    accounts(addr)
        .await
        .register(registration(login))
        .await
        .unwrap_or_else(|s| panic!("register {login}: {s:?}"));
    let reply = self::login(addr, login)
        .await
        .unwrap_or_else(|s| panic!("login {login}: {s:?}"));
    let server = reply.server.expect("a server is assigned").addr;
    (reply.token, server)
}

/// The storage server the manager at `addr` assigned to `token`'s login,
/// where `dupla chat` opens that user's chat.
pub async fn assigned_server(addr: &str, token: &str) -> String {
    accounts(addr)
        .await
        .who_am_i(authed(token, dupla::v1::WhoAmIRequest {}))
        .await
        .unwrap_or_else(|s| panic!("who am i: {s:?}"))
        .into_inner()
        .server
        .expect("a server is assigned")
        .addr
}

/// An event as `dupla chat` prints it on a pipe (the contract).
pub fn render(event: &ChatEvent) -> String {
    match chat_event::Kind::try_from(event.kind) {
        Ok(chat_event::Kind::Message) => format!("{}: {}", event.from, event.text),
        Ok(chat_event::Kind::Private) => format!("[private] {}: {}", event.from, event.text),
        _ => format!("* {}", event.text),
    }
}

/// One chat connection, driven by the test.
pub struct ChatClient {
    /// Whose token it uses (for messages).
    pub login: String,
    input: Option<mpsc::Sender<ChatInput>>,
    events: Streaming<ChatEvent>,
    /// Every line shown so far, for failure messages.
    pub seen: Vec<String>,
}

impl ChatClient {
    /// Connect to the chat at `addr` (the manager's, or a storage
    /// server's) as the holder of `token`.
    pub async fn connect(addr: &str, login: &str, token: &str) -> Result<ChatClient, Status> {
        let channel = dupla::rpc::connect(addr).await.expect("manager reachable");
        Self::connect_on(channel, login, token).await
    }

    /// Connect over `channel` (a test may tune its flow control).
    pub async fn connect_on(
        channel: Channel,
        login: &str,
        token: &str,
    ) -> Result<ChatClient, Status> {
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        let events = RoomsClient::new(channel)
            .chat(authed(token, ReceiverStream::new(rx)))
            .await?
            .into_inner();
        Ok(ChatClient {
            login: login.into(),
            input: Some(tx),
            events,
            seen: Vec::new(),
        })
    }

    /// Send one line.
    pub async fn send(&self, line: &str) {
        self.input
            .as_ref()
            .expect("input is open")
            .send(ChatInput { line: line.into() })
            .await
            .expect("the chat stream is open");
    }

    /// Close the sending side (as a client at end of input does).
    pub fn close_input(&mut self) {
        self.input = None;
    }

    /// The next event, `None` at the end of the stream; a stream error is
    /// returned as `Err`.
    pub async fn next(&mut self) -> Result<Option<ChatEvent>, Status> {
        match tokio::time::timeout(EVENT_TIMEOUT, self.events.message()).await {
            Ok(result) => {
                if let Ok(Some(event)) = &result {
                    self.seen.push(render(event));
                }
                result
            }
            Err(_) => panic!(
                "{}: no event within {EVENT_TIMEOUT:?}; saw {:#?}",
                self.login, self.seen
            ),
        }
    }

    /// Read events until one shows as `line`; returns it.
    pub async fn expect(&mut self, line: &str) -> ChatEvent {
        self.expect_where(line, |e| render(e) == line).await
    }

    /// Read events until one shows starting with `prefix`; returns it.
    pub async fn expect_prefix(&mut self, prefix: &str) -> ChatEvent {
        self.expect_where(prefix, |e| render(e).starts_with(prefix))
            .await
    }

    /// Read events until `wanted` holds for one; returns it.
    pub async fn expect_where(
        &mut self,
        what: &str,
        wanted: impl Fn(&ChatEvent) -> bool,
    ) -> ChatEvent {
        loop {
            match self.next().await {
                Ok(Some(event)) if wanted(&event) => return event,
                Ok(Some(_)) => continue,
                other => panic!(
                    "{}: stream ended ({other:?}) before {what:?}; saw {:#?}",
                    self.login, self.seen
                ),
            }
        }
    }

    /// Expect `line`, unless it was already shown (and skipped while waiting
    /// for something else): for events whose timing against the others is
    /// not fixed, like a laggard's departure.
    pub async fn expect_seen_or_next(&mut self, line: &str) {
        if !self.seen.iter().any(|l| l == line) {
            self.expect(line).await;
        }
    }

    /// Read until the server ends the stream; returns the lines on the way.
    pub async fn until_closed(&mut self) -> Vec<String> {
        let start = self.seen.len();
        while let Ok(Some(_)) = self.next().await {}
        self.seen[start..].to_vec()
    }
}
