//! The client's handle on the cluster: the manager's address, an optional
//! entry server, and the connections made from them.
//!
//! Every request the client sends is built by `Client::request`, the one
//! place where the bearer token of a logged-in user is attached. The entry server for a transfer is the `--server` the user
//! named or, failing that, the manager's `up` servers ordered by fewest
//! active transfers; an unreachable one is skipped with a note on stderr.
//! Transfers then move the holders of the file to the front
//! ([`holders_first`]): an upload enters at the primary the manager would
//! choose, a restore at a server that holds the file, so neither pays a hop
//! through a server that only forwards.

use dupla::rpc::Transport;
use dupla::rpc::MAX_MESSAGE_BYTES;
use dupla::v1::snapshots_client::SnapshotsClient;
use dupla::v1::{
    accounts_client::AccountsClient, clock_client::ClockClient, greeter_client::GreeterClient,
    manager_client::ManagerClient, rooms_client::RoomsClient, storage_client::StorageClient,
    ServerStatus,
};
use dupla::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use tonic::transport::Channel;
use tonic::{Request, Status};

pub use dupla::rpc::AUTHORIZATION_METADATA;

/// Largest reply the client accepts: a catalog entry carries every chunk's
/// hash (32 bytes per MiB of file).
pub const MANAGER_REPLY_MAX_BYTES: usize = dupla::rpc::MAX_CATALOG_MESSAGE_BYTES;

/// A connection-holding handle on one cluster. Cheap to clone; clones share
/// the manager connection.
#[derive(Clone)]
pub struct Client {
    /// Manager address: catalog, status and clock calls go here.
    manager: String,
    /// Entry server the user forced, if any.
    server: Option<String>,
    /// Storage server the manager assigned at login: tried first when no
    /// server is forced.
    assigned: Option<String>,
    /// Bearer token of the logged-in user, from `dupla login`.
    token: Option<Arc<str>>,
    /// The manager channel, opened on first use and then reused.
    manager_channel: Arc<OnceCell<Channel>>,
    /// The last ranking of entry servers and when it was made: a run of
    /// many small files asks the manager's status once a second, not once
    /// per file.
    /// An async lock, held across the refresh: while one transfer asks the
    /// manager, the others wait for its answer instead of asking too.
    entries: Arc<tokio::sync::Mutex<Option<Ranking>>>,
    /// Where the cluster CA is pinned; `None` talks plain text (`--insecure`).
    ca_pin: Option<PathBuf>,
    /// The transport, settled at the first connection (the pinned CA, or
    /// the one the first node presented, pinned from then on).
    transport: Arc<OnceCell<Transport>>,
}

/// Entry servers, best first, and when the manager's status said so.
type Ranking = (Instant, Vec<String>);

/// How long a ranking of entry servers is reused. Short against the 3 s
/// after which a silent server stops being placed on, and an unreachable
/// entry is skipped at connect time anyway.
pub const ENTRY_RANKING_TTL: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("manager", &self.manager)
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| ".."))
            .field("ca_pin", &self.ca_pin)
            .finish()
    }
}

/// Which kind of node a message talks about.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    Manager,
    Server,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Manager => "manager",
            Role::Server => "server",
        })
    }
}

impl Client {
    /// A client of the cluster whose manager listens on `manager`; `server`
    /// forces the entry server for transfers. Nothing connects until used.
    /// It talks plain text until [`Client::with_pinned_ca`] (what `dupla`
    /// does unless `--insecure`) or [`Client::with_transport`].
    pub fn new(manager: String, server: Option<String>) -> Client {
        Client {
            manager,
            server,
            assigned: None,
            token: None,
            manager_channel: Arc::new(OnceCell::new()),
            entries: Arc::default(),
            ca_pin: None,
            transport: Arc::new(OnceCell::new()),
        }
    }

    /// Another client of the same cluster that dials the same way (TLS
    /// trusting the same pinned CA, or plain text) but holds connections of
    /// its own and no token: one per simulated user in the benchmarks.
    pub fn sibling(&self) -> Client {
        Client {
            manager: self.manager.clone(),
            server: self.server.clone(),
            assigned: None,
            token: None,
            manager_channel: Arc::new(OnceCell::new()),
            entries: Arc::default(),
            ca_pin: self.ca_pin.clone(),
            transport: self.transport.clone(),
        }
    }

    /// The same client, speaking TLS to nodes signed by the CA pinned in
    /// `pin`: the one there, or (first use) the one the first node it
    /// reaches presents, saved there (mode 0600). A node presenting another
    /// CA is refused.
    pub fn with_pinned_ca(mut self, pin: PathBuf) -> Client {
        self.ca_pin = Some(pin);
        self.transport = Arc::new(OnceCell::new());
        self
    }

    /// The same client, dialing with `transport` (tests and tools that hold
    /// the CA already).
    pub fn with_transport(mut self, transport: Transport) -> Client {
        self.ca_pin = None;
        self.transport = Arc::new(OnceCell::new_with(Some(transport)));
        self
    }

    /// Whether this client speaks TLS (false: `--insecure`).
    pub fn is_tls(&self) -> bool {
        self.ca_pin.is_some() || self.transport.get().is_some_and(Transport::is_tls)
    }

    /// The transport to dial `addr` with, pinning the CA on first use.
    async fn transport(&self, addr: &str) -> Result<Transport> {
        self.transport
            .get_or_try_init(|| async {
                match &self.ca_pin {
                    None => Ok(Transport::Insecure),
                    Some(pin) => pinned_transport(pin, addr).await,
                }
            })
            .await
            .cloned()
    }

    /// Open a channel to `addr`, with a message that says what to check
    /// (including a CA other than the pinned one).
    pub(crate) async fn open(&self, role: Role, addr: &str) -> Result<Channel> {
        let transport = self.transport(addr).await?;
        match transport.connect(addr).await {
            Ok(channel) => Ok(channel),
            Err(Error::Unavailable(detail)) if dupla::tls::is_certificate_error(&detail) => {
                Err(self
                    .certificate_refused(role, addr, &transport, &detail)
                    .await)
            }
            Err(Error::Unavailable(detail)) => {
                tracing::debug!(%addr, %detail, "connect failed");
                let hint = Failure::of(&detail).hint();
                Err(Error::Unavailable(format!(
                    "cannot reach {role} {addr} ({hint})"
                )))
            }
            Err(other) => Err(other),
        }
    }

    /// The error for a node whose certificate the pinned CA did not sign.
    async fn certificate_refused(
        &self,
        role: Role,
        addr: &str,
        transport: &Transport,
        detail: &str,
    ) -> Error {
        let pin = self
            .ca_pin
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the CA file".into());
        let pinned = transport
            .ca_pem()
            .map(dupla::tls::fingerprint)
            .unwrap_or_default();
        let presented = dupla::tls::fetch_ca(addr)
            .await
            .map(|ca| dupla::tls::fingerprint(&ca))
            .unwrap_or_else(|_| "unknown".into());
        tracing::debug!(%addr, %detail, "certificate refused");
        Error::PermissionDenied(format!(
            "refusing {role} {addr}: it presents cluster CA {presented}, not CA {pinned} pinned in {pin} on first use. Someone may be intercepting; if you know the cluster was re-created, delete {pin} and retry"
        ))
    }

    /// The same client, sending `token` as a bearer token on every request.
    pub fn with_token(mut self, token: impl Into<Arc<str>>) -> Client {
        self.token = Some(token.into());
        self
    }

    /// The same client, entering the cluster through `server` (the one
    /// assigned at login) while it is up, before any other.
    pub fn with_assigned_server(mut self, server: Option<String>) -> Client {
        self.assigned = server;
        self
    }

    /// The manager address this client talks to.
    pub fn manager_addr(&self) -> &str {
        &self.manager
    }

    /// The entry server the user forced, if any.
    pub fn server_addr(&self) -> Option<&str> {
        self.server.as_deref()
    }

    /// Wrap a message for sending: the one place per-user credentials go.
    pub(crate) fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = &self.token {
            match format!("Bearer {token}").parse() {
                Ok(value) => {
                    request.metadata_mut().insert(AUTHORIZATION_METADATA, value);
                }
                Err(_) => tracing::warn!("the saved token is not valid metadata; sending none"),
            }
        }
        request
    }

    /// The manager's channel, connecting on first use.
    async fn manager_channel(&self) -> Result<Channel> {
        self.manager_channel
            .get_or_try_init(|| self.open(Role::Manager, &self.manager))
            .await
            .cloned()
    }

    /// A Manager service client.
    pub(crate) async fn manager(&self) -> Result<ManagerClient<Channel>> {
        Ok(ManagerClient::new(self.manager_channel().await?)
            .max_decoding_message_size(MANAGER_REPLY_MAX_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// The manager's Accounts service.
    pub(crate) async fn manager_accounts(&self) -> Result<AccountsClient<Channel>> {
        Ok(AccountsClient::new(self.manager_channel().await?))
    }

    /// The manager's Snapshots service.
    pub(crate) async fn manager_snapshots(&self) -> Result<SnapshotsClient<Channel>> {
        Ok(SnapshotsClient::new(self.manager_channel().await?)
            .max_decoding_message_size(MANAGER_REPLY_MAX_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// The manager's Rooms service (the chat).
    pub(crate) async fn manager_rooms(&self) -> Result<RoomsClient<Channel>> {
        Ok(RoomsClient::new(self.manager_channel().await?))
    }

    /// Whether requests carry a bearer token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The manager's Clock service.
    pub(crate) async fn manager_clock(&self) -> Result<ClockClient<Channel>> {
        Ok(ClockClient::new(self.manager_channel().await?))
    }

    /// The manager's Greeter service.
    pub(crate) async fn manager_greeter(&self) -> Result<GreeterClient<Channel>> {
        Ok(GreeterClient::new(self.manager_channel().await?))
    }

    /// Turn a failed manager call into an [`Error`] that names the manager.
    pub(crate) fn manager_error(&self, status: Status) -> Error {
        rpc_error(Role::Manager, &self.manager, status)
    }

    /// Servers to enter the cluster through, best first: the forced one
    /// (`--server`), or the one assigned at login while it is up, then the
    /// manager's other `up` servers by fewest active transfers. `--server`
    /// names the first entry, not the only one: when it dies mid-transfer,
    /// a retry carries on through the others (it alone when the manager
    /// cannot say which are up).
    pub async fn entry_servers(&self) -> Result<Vec<String>> {
        if let Some(server) = &self.server {
            let others = match self.ranked_entries().await {
                Ok(ranked) => ranked,
                Err(e) => {
                    tracing::debug!(error = %e, "no other entry servers known");
                    Vec::new()
                }
            };
            return Ok(assigned_first(others, Some(server), true));
        }
        self.ranked_entries().await
    }

    /// The manager's `up` servers, the assigned one first while it is up,
    /// then by fewest active transfers (cached for [`ENTRY_RANKING_TTL`]).
    async fn ranked_entries(&self) -> Result<Vec<String>> {
        let mut cached = self.entries.lock().await;
        if let Some((at, ranked)) = cached.as_ref() {
            if at.elapsed() < ENTRY_RANKING_TTL {
                return Ok(ranked.clone());
            }
        }
        let status = self.status().await?;
        let ranked = assigned_first(
            rank_entries(&status.servers),
            self.assigned.as_deref(),
            false,
        );
        if ranked.is_empty() {
            return Err(Error::Unavailable(format!(
                "no storage server is up (the manager at {} knows {}); start one or pass --server",
                self.manager,
                status.servers.len()
            )));
        }
        *cached = Some((Instant::now(), ranked.clone()));
        Ok(ranked)
    }

    /// The manager's late (suspect) servers, fewest active transfers first:
    /// worth a try when none is up, since a late heartbeat under load says
    /// little about whether a server answers.
    pub(crate) async fn late_servers(&self) -> Result<Vec<String>> {
        let status = self.status().await?;
        Ok(rank_by_state(
            &status.servers,
            dupla::v1::ServerState::Suspect,
        ))
    }

    /// Connect to the first reachable server of `candidates`, saying on
    /// stderr when one is skipped. Returns its address and a Storage client.
    pub(crate) async fn connect_storage(
        &self,
        candidates: &[String],
    ) -> Result<(String, StorageClient<Channel>)> {
        let channel = |ch| {
            StorageClient::new(ch)
                .max_decoding_message_size(MANAGER_REPLY_MAX_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        };
        let (addr, ch) = self.connect_first(Role::Server, candidates).await?;
        Ok((addr, channel(ch)))
    }

    /// A Greeter on the first reachable server of `candidates`.
    pub(crate) async fn connect_greeter(
        &self,
        candidates: &[String],
    ) -> Result<(String, GreeterClient<Channel>)> {
        let (addr, ch) = self.connect_first(Role::Server, candidates).await?;
        Ok((addr, GreeterClient::new(ch)))
    }

    /// Connect to the first of `candidates` that answers.
    pub(crate) async fn connect_first(
        &self,
        role: Role,
        candidates: &[String],
    ) -> Result<(String, Channel)> {
        let mut last = None;
        for (i, addr) in candidates.iter().enumerate() {
            match self.open(role, addr).await {
                Ok(channel) => return Ok((addr.clone(), channel)),
                Err(err @ Error::Unavailable(_)) => {
                    if let Some(next) = candidates.get(i + 1) {
                        eprintln!("note: cannot reach {role} {addr}; trying {next}");
                    }
                    last = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable(format!("no {role} to connect to"))))
    }
}

/// The `up` servers, fewest active transfers first (ties by address, so the
/// order is stable), as entry candidates.
pub fn rank_entries(servers: &[ServerStatus]) -> Vec<String> {
    rank_by_state(servers, dupla::v1::ServerState::Up)
}

/// The servers in `state`, fewest active transfers first (ties by address).
fn rank_by_state(servers: &[ServerStatus], state: dupla::v1::ServerState) -> Vec<String> {
    let mut up: Vec<(u32, &str)> = servers
        .iter()
        .filter(|s| s.state() == state)
        .filter_map(|s| {
            let node = s.node.as_ref()?;
            (!node.addr.is_empty()).then_some((s.active_transfers, node.addr.as_str()))
        })
        .collect();
    up.sort();
    up.into_iter().map(|(_, addr)| addr.to_string()).collect()
}

/// `ranked` with `first` moved to the front when it is among them (a
/// server that is not up is not tried first), or put there anyway when
/// `forced` (the user named it).
fn assigned_first(mut ranked: Vec<String>, first: Option<&str>, forced: bool) -> Vec<String> {
    let Some(first) = first else {
        return ranked;
    };
    match ranked.iter().position(|r| r == first) {
        Some(pos) => {
            let server = ranked.remove(pos);
            ranked.insert(0, server);
        }
        None if forced => ranked.insert(0, first.to_string()),
        None => {}
    }
    ranked
}

/// `candidates` with the servers of `preferred` (in that order) that are
/// among them moved to the front: a transfer enters at a holder of the file
/// (the primary first) when one is up, and the other candidates stay behind
/// it as fallbacks.
pub fn holders_first(candidates: &[String], preferred: &[String]) -> Vec<String> {
    let mut ordered: Vec<String> = preferred
        .iter()
        .filter(|p| candidates.contains(p))
        .cloned()
        .collect();
    ordered.dedup();
    let rest: Vec<String> = candidates
        .iter()
        .filter(|c| !ordered.contains(c))
        .cloned()
        .collect();
    ordered.extend(rest);
    ordered
}

/// TLS with the CA pinned in `pin`, or with the CA `addr` presents, which
/// is pinned there from now on (trust on first use).
async fn pinned_transport(pin: &Path, addr: &str) -> Result<Transport> {
    if let Some(ca) = dupla::tls::read_optional(pin)? {
        return Ok(Transport::tls(ca, None));
    }
    let ca = dupla::tls::fetch_ca(addr).await?;
    if let Some(dir) = pin.parent() {
        crate::session_store::create_private_dir(dir)?;
    }
    dupla::tls::write_durably(pin, ca.as_bytes(), true)?;
    eprintln!(
        "note: trusting cluster CA {} presented by {addr} from now on (pinned in {})",
        dupla::tls::fingerprint(&ca),
        pin.display()
    );
    Ok(Transport::tls(ca, None))
}

/// Map a failed call to `addr` into an [`Error`]. A status that tonic made
/// locally from a broken connection (it carries a source error) becomes
/// `Unavailable` naming the node; a status the node sent keeps its kind and
/// message.
pub(crate) fn rpc_error(role: Role, addr: &str, status: Status) -> Error {
    if std::error::Error::source(&status).is_some() {
        tracing::debug!(%addr, ?status, "transport failure");
        let hint = Failure::of(&format!("{status:?}")).hint();
        return Error::Unavailable(format!(
            "lost the connection to {role} {addr} ({}); {hint}",
            status.message()
        ));
    }
    if status.code() == tonic::Code::Unimplemented {
        // A node that is not what this call expects: a storage server
        // given as --manager, say, or another program on that port.
        return Error::InvalidInput(format!(
            "{addr} does not answer {role} calls: is it the {role}'s address? ({})",
            if status.message().is_empty() {
                "unimplemented"
            } else {
                status.message()
            }
        ));
    }
    Error::from_status(status)
}

/// What a failed connection suggests, from its details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Nothing answers there (refused, unreachable).
    Gone,
    /// Garbage where a TLS record or an HTTP/2 frame was due: one side
    /// speaks TLS and the other plain text.
    TlsMismatch,
    /// Could be either: a node that dies mid-call and a TLS node dropping
    /// a plain-text connection both look like a reset.
    Unclear,
    /// It took the connection but never answered ([`dupla::rpc::SETUP_TIMEOUT`]).
    Silent,
}

impl Failure {
    fn of(detail: &str) -> Failure {
        let detail = detail.to_ascii_lowercase();
        let any = |signs: &[&str]| signs.iter().any(|sign| detail.contains(sign));
        if any(&["did not answer within"]) {
            return Failure::Silent;
        }
        // A body was flowing, so both sides spoke the same protocol: the
        // node stopped mid-transfer (hyper words it as an h2 error).
        if any(&[
            "error reading a body from connection",
            // rustls: the peer's process ended mid-connection.
            "close_notify",
        ]) {
            return Failure::Gone;
        }
        if any(&[
            "h2 protocol error",
            "frame_size_error",
            "invalidcontenttype",
            "corrupt message",
            "handshake",
            "tls",
        ]) {
            Failure::TlsMismatch
        } else if any(&["connection refused", "no route to host", "timed out"]) {
            Failure::Gone
        } else {
            Failure::Unclear
        }
    }

    /// What to ask the user to check.
    fn hint(self) -> &'static str {
        match self {
            Failure::Gone => "is it running?",
            Failure::Silent => "it took the connection but did not answer: is it stopped or hung?",
            Failure::TlsMismatch => "does TLS match? (--insecure on both sides, or on neither)",
            Failure::Unclear => {
                "is it running? if it is, does TLS match? (--insecure on both sides, or on neither)"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dupla::v1::Node;

    fn server(addr: &str, state: &str, active: u32) -> ServerStatus {
        ServerStatus {
            node: Some(Node {
                id: format!("id-{addr}"),
                addr: addr.into(),
            }),
            state: match state {
                "up" => dupla::v1::ServerState::Up,
                "suspect" => dupla::v1::ServerState::Suspect,
                _ => dupla::v1::ServerState::Down,
            }
            .into(),
            active_transfers: active,
            ..Default::default()
        }
    }

    #[test]
    fn only_garbled_connections_suggest_a_tls_mismatch() {
        for (detail, failure) in [
            // What a plain-text client of a TLS node sees.
            (
                "Status { message: \"h2 protocol error: http2 error\", source: GoAway(FRAME_SIZE_ERROR) }",
                Failure::TlsMismatch,
            ),
            (
                "received corrupt message of type InvalidContentType",
                Failure::TlsMismatch,
            ),
            // A node that accepts and never answers (stopped, hung).
            (
                "cannot reach 127.0.0.1:1: it did not answer within 5 s (timed out)",
                Failure::Silent,
            ),
            // A node killed mid-download: the stream had been working.
            (
                "Status { code: Internal, message: \"h2 protocol error: error reading a body from connection\" }",
                Failure::Gone,
            ),
            // A TLS node killed mid-upload: TLS was working.
            (
                "transport error: peer closed connection without sending TLS close_notify",
                Failure::Gone,
            ),
            // Nothing listening: TLS is not the cause.
            (
                "tcp connect error: Connection refused (os error 111)",
                Failure::Gone,
            ),
            // A reset: a node killed mid-transfer, or a TLS node dropping a
            // plain-text connection.
            (
                "Status { message: \"transport error\", source: hyper::Error(Io, Os { code: 104, message: \"Connection reset by peer\" }) }",
                Failure::Unclear,
            ),
        ] {
            assert_eq!(Failure::of(detail), failure, "{detail}");
        }
        assert!(Failure::Silent.hint().contains("stopped or hung"));
        assert_eq!(Failure::of("operation was canceled"), Failure::Unclear);
        assert!(Failure::Unclear.hint().contains("--insecure"));
        assert!(Failure::TlsMismatch.hint().contains("--insecure"));
        assert!(!Failure::Gone.hint().contains("insecure"));
    }

    #[test]
    fn a_node_that_does_not_know_the_call_is_the_wrong_address() {
        let err = rpc_error(Role::Manager, "127.0.0.1:5", Status::unimplemented(""));
        let text = err.to_string();
        assert!(
            text.contains("127.0.0.1:5 does not answer manager calls"),
            "{text}"
        );
        assert!(matches!(err, Error::InvalidInput(_)));
    }

    #[test]
    fn entries_are_up_servers_least_busy_first() {
        let servers = [
            server("a:1", "up", 3),
            server("b:1", "down", 0),
            server("c:1", "up", 1),
            server("d:1", "suspect", 0),
            server("e:1", "up", 1),
        ];
        assert_eq!(rank_entries(&servers), ["c:1", "e:1", "a:1"]);
        assert_eq!(
            rank_by_state(&servers, dupla::v1::ServerState::Suspect),
            ["d:1"]
        );
        assert!(rank_entries(&[]).is_empty());
    }

    #[test]
    fn the_assigned_server_goes_first_while_it_is_up() {
        let ranked = || vec!["c:1".to_string(), "e:1".into(), "a:1".into()];
        assert_eq!(
            assigned_first(ranked(), Some("a:1"), false),
            ["a:1", "c:1", "e:1"]
        );
        assert_eq!(assigned_first(ranked(), Some("b:1"), false), ranked());
        assert_eq!(assigned_first(ranked(), None, false), ranked());
    }

    #[test]
    fn a_forced_server_is_the_first_entry_not_the_only_one() {
        let ranked = || vec!["c:1".to_string(), "e:1".into(), "a:1".into()];
        assert_eq!(
            assigned_first(ranked(), Some("a:1"), true),
            ["a:1", "c:1", "e:1"]
        );
        // Not up as far as the manager knows: still tried first.
        assert_eq!(
            assigned_first(ranked(), Some("b:1"), true),
            ["b:1", "c:1", "e:1", "a:1"]
        );
        assert_eq!(assigned_first(Vec::new(), Some("b:1"), true), ["b:1"]);
    }

    #[test]
    fn holders_go_first_in_placement_order() {
        let candidates = vec!["a:1".to_string(), "b:1".into(), "c:1".into()];
        let placed = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            holders_first(&candidates, &placed(&["c:1", "b:1", "a:1"])),
            ["c:1", "b:1", "a:1"]
        );
        // A holder that is not up is skipped; the others stay as fallbacks.
        assert_eq!(
            holders_first(&candidates, &placed(&["d:1", "b:1"])),
            ["b:1", "a:1", "c:1"]
        );
        assert_eq!(holders_first(&candidates, &[]), candidates);
    }

    #[test]
    fn token_goes_into_the_authorization_header() {
        let client = Client::new("m:1".into(), None);
        assert!(client.request(()).metadata().get("authorization").is_none());
        let client = client.with_token("abc");
        let req = client.request(());
        assert_eq!(
            req.metadata()
                .get("authorization")
                .unwrap()
                .to_str()
                .unwrap(),
            "Bearer abc"
        );
        assert!(!format!("{client:?}").contains("abc"));
    }

    #[tokio::test]
    async fn unreachable_server_says_so() {
        // Port 1 on loopback is closed on any sane test machine.
        let err = Client::new("m:1".into(), None)
            .connect_first(Role::Server, &["127.0.0.1:1".into()])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)));
        assert!(err.to_string().contains("cannot reach server 127.0.0.1:1"));
    }
}
