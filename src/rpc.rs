//! gRPC plumbing shared by every node: tuned endpoints and servers, the
//! services every node offers (health, reflection, Greeter, Clock), and the
//! cluster secret that guards internal calls.

use crate::chunk::MAX_CHUNK_SIZE;
use crate::clock::ClockService;
use crate::greeter::GreeterService;
use crate::shutdown::Shutdown;
use crate::v1::{clock_server::ClockServer, greeter_server::GreeterServer};
use crate::{Error, Result};
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Status};

pub use crate::tls::Transport;

/// The secret the demo cluster in `nodes/` ships with: public, so a node
/// reachable from other machines refuses it (see [`check_demo_secret`]).
pub const DEMO_SECRET: &str = "dupla-demo-secret-change-me";

/// Refuse the demo secret on a node listening beyond loopback (anyone who
/// read the repository could join the cluster); on loopback only warn.
pub fn check_demo_secret(secret: &Secret, listen: &str) -> Result<()> {
    if !secret.is_demo() {
        return Ok(());
    }
    if crate::tls::is_loopback(listen) {
        tracing::warn!(
            "this node uses the demo cluster secret from nodes/: fine on loopback, but set your own (`secret` in node.toml, --secret or DUPLA_SECRET, the same on every node) before listening on a network"
        );
        return Ok(());
    }
    Err(Error::InvalidInput(format!(
        "refusing to listen on {listen} with the demo cluster secret shipped in nodes/: anyone could join this cluster. Set your own secret, the same on the manager and every server: `secret = \"...\"` in node.toml, --secret or DUPLA_SECRET (e.g. `openssl rand -hex 32`)"
    )))
}

/// Metadata key carrying the cluster secret on server-to-server calls.
pub const SECRET_METADATA: &str = "x-dupla-secret";

/// Per-stream HTTP/2 flow-control window. The default 64 KiB would stall a
/// chunk for many round trips; 8 MiB lets several chunks fly per stream.
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;

/// Per-connection HTTP/2 window: room for a few concurrent streams at full speed.
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// HTTP/2 frame size each side accepts: 1 MiB frames carry a chunk in one
/// or two frames instead of 64 of the default 16 KiB, cutting per-frame
/// work on every hop.
pub const MAX_FRAME_BYTES: u32 = 1 << 20;

/// Largest message a node accepts: one chunk plus generous framing, so a
/// hostile peer cannot make a node buffer more than this per message.
pub const MAX_MESSAGE_BYTES: usize = MAX_CHUNK_SIZE + (64 << 10);

/// Largest message that carries a whole file's chunk list (a catalog entry:
/// commits, lookups, listings, upload receipts, download headers): 32 bytes
/// per MiB of file, so 64 MiB covers files up to about 2 TiB. Only ever
/// accepted from the manager or a storage server, never from a client.
pub const MAX_CATALOG_MESSAGE_BYTES: usize = 64 << 20;

/// How long to wait for a TCP connection before calling a node unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long setting up a connection may take as a whole: TCP, the TLS
/// handshake and the node's first HTTP/2 answer. The kernel accepts TCP for
/// a node that is stopped (SIGSTOP), hung or not a Dupla node at all, so
/// without this bound its callers would wait forever; with it they fail
/// with `Unavailable` (see [`no_answer`]). Calls themselves get no
/// deadline: a restore of many GB streams for minutes.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/2 pings keep idle connections honest and detect dead peers.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// The `http://host:port` URI of a node address.
pub fn uri(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// An endpoint to `addr` with Dupla's flow-control and timeout settings.
pub fn endpoint(addr: &str) -> Result<Endpoint> {
    let endpoint = Endpoint::from_shared(uri(addr))
        .map_err(|e| Error::InvalidInput(format!("bad node address {addr:?}: {e}")))?;
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true))
}

/// Connect to `addr` now in plain text, failing with `Unavailable` if it
/// does not answer within [`SETUP_TIMEOUT`]. Nodes and the client dial
/// through their [`Transport`] instead (the same path); this is for
/// `--insecure` clusters and tests.
pub async fn connect(addr: &str) -> Result<Channel> {
    Transport::Insecure.connect(addr).await
}

/// A plain-text channel to `addr` that connects on first use and reconnects
/// by itself (see [`connect`]: nodes use [`Transport::connect_lazy`]).
pub fn connect_lazy(addr: &str) -> Result<Channel> {
    Transport::Insecure.connect_lazy(addr)
}

/// Set up a connection through `endpoint` to `addr`, all of it within
/// [`SETUP_TIMEOUT`]. With `probe`, also wait for the node's first answer
/// (a health check): over plain text the HTTP/2 handshake does not wait
/// for the peer, so a node that accepted TCP and then froze would
/// otherwise only show at the first call, and a call has no deadline.
/// Over TLS a completed handshake already proves the node is running.
pub(crate) async fn connect_within(endpoint: Endpoint, addr: &str, probe: bool) -> Result<Channel> {
    let setup = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| unreachable(addr, &e))?;
        if probe {
            answers(channel.clone(), addr).await?;
        }
        Ok(channel)
    };
    tokio::time::timeout(SETUP_TIMEOUT, setup)
        .await
        .map_err(|_| no_answer(addr))?
}

/// Wait for any answer from the node behind `channel`: a health check,
/// which every node serves. An error status the node sent is an answer
/// too; only a broken connection (a status tonic made locally, which
/// carries its cause) is not.
async fn answers(channel: Channel, addr: &str) -> Result<()> {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    match health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(status) if std::error::Error::source(&status).is_none() => Ok(()),
        Err(status) => Err(unreachable(addr, &status)),
    }
}

/// The error for a connection to `addr` that failed with `e`, its causes
/// spelled out (tonic's own text says only "transport error").
fn unreachable(addr: &str, e: &(dyn std::error::Error + 'static)) -> Error {
    let detail = crate::tls::error_chain(e);
    if detail.contains("handshake timeout") {
        // A lazy channel's bound on the TLS handshake, met first.
        return no_answer(addr);
    }
    Error::Unavailable(format!("cannot reach {addr}: {detail}"))
}

/// The error for a node that accepted the connection but did not set it
/// up within [`SETUP_TIMEOUT`]. It says "timed out" and names no TLS cause,
/// so the client's hint asks whether the node runs, not whether TLS matches.
pub fn no_answer(addr: &str) -> Error {
    Error::Unavailable(format!(
        "cannot reach {addr}: it did not answer within {} s (timed out); is it running? is it stopped (SIGSTOP, a debugger) or hung?",
        SETUP_TIMEOUT.as_secs()
    ))
}

/// HTTP/2 streams one connection may have open at once: beyond it the peer
/// must wait, so one connection cannot pin unbounded buffers (each stream
/// may hold up to [`STREAM_WINDOW_BYTES`] in flight, and the connection
/// [`CONNECTION_WINDOW_BYTES`] in all).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// Requests of one connection handled at once; more wait their turn.
pub const MAX_REQUESTS_PER_CONNECTION: usize = 256;

/// A server builder with Dupla's flow-control settings and per-connection
/// limits on concurrent streams.
pub fn server() -> Server {
    Server::builder()
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .concurrency_limit_per_connection(MAX_REQUESTS_PER_CONNECTION)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .tcp_nodelay(true)
}

/// Services every node serves, as reflection advertises them.
const COMMON_SERVICES: [&str; 5] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "dupla.v1.Greeter",
    "dupla.v1.Clock",
];

/// A router with the services every node offers: health, reflection (v1 and
/// v1alpha, since common grpcurl builds speak only the latter), Greeter and
/// Clock. `role_services` are the fully qualified names of the services the
/// caller adds, so reflection lists exactly what this node serves. Returns
/// the health reporter so the caller can mark its own services as serving.
pub fn common_router(
    server: &mut Server,
    role_services: &[&str],
) -> Result<(Router, tonic_health::server::HealthReporter)> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = || {
        COMMON_SERVICES.iter().chain(role_services).fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |builder, name| builder.with_service_name(*name),
        )
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    let router = server
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(GreeterServer::new(GreeterService))
        .add_service(ClockServer::new(ClockService));
    Ok((router, health))
}

/// Bind a TCP listener, with a clear error when the address is taken.
pub async fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Unavailable(format!("cannot listen on {addr}: {e}")))
}

/// Serve `router` on `listener` until `shutdown` fires, then drain. At
/// most [`crate::connections::MAX_CONNECTIONS`] connections are served at
/// once.
pub async fn serve(router: Router, listener: TcpListener, mut shutdown: Shutdown) -> Result<()> {
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(30)));
    let incoming = crate::connections::limit(incoming, crate::connections::MAX_CONNECTIONS);
    router
        .serve_with_incoming_shutdown(incoming, async move { shutdown.wait().await })
        .await
        .map_err(|e| Error::Internal(format!("gRPC server failed: {e}")))
}

/// Metadata key of a user's bearer token (`authorization: Bearer <token>`).
pub const AUTHORIZATION_METADATA: &str = "authorization";

/// The `authorization` metadata of a user's call, carried on unchanged when
/// a storage server asks the manager something on the user's behalf (the
/// manager checks it: servers never see accounts). Its Debug output hides
/// the token.
#[derive(Clone)]
pub struct UserCredentials(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl std::fmt::Debug for UserCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserCredentials(..)")
    }
}

impl UserCredentials {
    /// The credentials `request` carries, or `Unauthenticated` saying how to
    /// get some.
    pub fn of<T>(request: &Request<T>) -> Result<Self> {
        request
            .metadata()
            .get(AUTHORIZATION_METADATA)
            .cloned()
            .map(UserCredentials)
            .ok_or_else(|| {
                Error::Unauthenticated(
                    "not logged in: backups belong to accounts, so this call needs `authorization: Bearer <token>`; run `dupla login USER` first"
                        .into(),
                )
            })
    }

    /// Add the credentials to an outgoing request.
    pub fn attach<T>(&self, request: &mut Request<T>) {
        request
            .metadata_mut()
            .insert(AUTHORIZATION_METADATA, self.0.clone());
    }
}

/// The cluster secret: shared by the manager and the servers, carried on
/// every internal call, and never accepted from a client token.
#[derive(Clone)]
pub struct Secret(std::sync::Arc<str>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Wrap a configured secret; it must not be empty.
    pub fn new(secret: &str) -> Result<Self> {
        if secret.trim().is_empty() {
            return Err(Error::InvalidInput(
                "the cluster secret is empty: set `secret` in node.toml, --secret or DUPLA_SECRET"
                    .into(),
            ));
        }
        Ok(Secret(secret.into()))
    }

    /// Wrap a message in a request that carries the secret.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        self.attach(&mut request);
        request
    }

    /// Add the secret to an outgoing request.
    pub fn attach<T>(&self, request: &mut Request<T>) {
        let value = self
            .0
            .parse()
            .expect("invariant: the secret was validated as ASCII metadata at startup");
        request.metadata_mut().insert(SECRET_METADATA, value);
    }

    /// Refuse an incoming internal call that lacks the secret.
    #[allow(clippy::result_large_err)]
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let given = request
            .metadata()
            .get(SECRET_METADATA)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if constant_time_eq(given, self.0.as_bytes()) {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "this call is internal to the cluster and needs the cluster secret",
            ))
        }
    }

    /// A keyed hash of `parts` under a key derived from the secret: proves
    /// knowledge of the secret without sending it (enrolment, before the
    /// caller trusts the CA). Each part is length-prefixed, so parts cannot
    /// be shifted into one another.
    pub fn proof(&self, parts: &[&[u8]]) -> [u8; 32] {
        let key = blake3::derive_key("dupla 2026-12 enrolment proof v1", self.0.as_bytes());
        let mut hasher = blake3::Hasher::new_keyed(&key);
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        *hasher.finalize().as_bytes()
    }

    /// Whether `given` is the [`Secret::proof`] of `parts` (constant time).
    pub fn check_proof(&self, given: &[u8], parts: &[&[u8]]) -> bool {
        constant_time_eq(given, &self.proof(parts))
    }

    /// Whether this is the demo secret shipped in `nodes/`.
    pub fn is_demo(&self) -> bool {
        &*self.0 == DEMO_SECRET
    }

    /// Whether the secret can travel as gRPC metadata (visible ASCII).
    pub fn validate(&self) -> Result<()> {
        if self.0.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            Ok(())
        } else {
            Err(Error::InvalidInput(
                "the cluster secret must be printable ASCII without spaces".into(),
            ))
        }
    }
}

/// Compare without an early exit, so timing does not leak the secret.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_checked() {
        let secret = Secret::new("s3cret").unwrap();
        assert!(secret.check(&secret.request(())).is_ok());
        assert!(secret.check(&Request::new(())).is_err());
        let other = Secret::new("other").unwrap();
        assert!(secret.check(&other.request(())).is_err());
        assert!(Secret::new("  ").is_err());
        assert!(Secret::new("has space").unwrap().validate().is_err());
    }

    #[test]
    fn uri_adds_scheme_once() {
        assert_eq!(uri("127.0.0.1:1"), "http://127.0.0.1:1");
        assert_eq!(uri("http://h:1"), "http://h:1");
    }
}
