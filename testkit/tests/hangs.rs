//! A node that accepts TCP but never answers (stopped with SIGSTOP, hung,
//! or not a Dupla node) fails its callers with `Unavailable` after
//! `SETUP_TIMEOUT`, in plain text and over TLS, through an eager connect,
//! a lazy channel and the client itself, instead of hanging them.
//!
//! Each call sits inside a generous timeout, a guard against the hang
//! itself; nothing asserts how fast the failure comes.

use dupla::rpc::{Transport, SETUP_TIMEOUT};
use dupla::v1::manager_client::ManagerClient;
use dupla::v1::ClusterStatusRequest;
use dupla::Error;
use dupla_client::Client;
use std::future::Future;
use std::time::Duration;
use tonic::Code;

/// Far beyond [`SETUP_TIMEOUT`] (and a lazy channel's TCP plus TLS
/// bounds): only a hang reaches it.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// A listener that accepts every connection and then neither reads nor
/// writes a byte, like a node whose process is stopped while the kernel
/// keeps completing TCP handshakes for it. It runs until the test ends.
async fn silent_listener() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// `call`, failing the test if it has not returned within [`HANG_GUARD`].
async fn guarded<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung on a node that never answers"))
}

/// A TLS transport trusting a fresh cluster CA, as a client that pinned it.
fn tls_transport() -> (Transport, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dupla::tls::Ca::load_or_create(dir.path()).unwrap();
    (Transport::tls(ca.pem().to_string(), None), dir)
}

/// `result` is the `Unavailable` that says the node did not answer.
fn assert_no_answer<T: std::fmt::Debug>(what: &str, result: dupla::Result<T>) {
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{what}: {err:?}");
    let text = err.to_string();
    let within = format!("did not answer within {} s", SETUP_TIMEOUT.as_secs());
    assert!(text.contains(&within), "{what}: {text}");
    assert!(text.contains("is it running?"), "{what}: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_text_connect_to_a_node_that_never_answers_fails() {
    let addr = silent_listener().await;
    // Over plain text TCP succeeds and the HTTP/2 handshake does not wait
    // for the peer: only the wait for a first answer catches it.
    let result = guarded("Transport::connect", Transport::Insecure.connect(&addr)).await;
    assert_no_answer("Transport::Insecure.connect", result);
    let result = guarded("rpc::connect", dupla::rpc::connect(&addr)).await;
    assert_no_answer("rpc::connect", result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connect_to_a_node_that_never_answers_fails() {
    let addr = silent_listener().await;
    let (transport, _ca) = tls_transport();
    // The TLS handshake is what never completes.
    let result = guarded("Transport::connect (TLS)", transport.connect(&addr)).await;
    assert_no_answer("Transport::tls(..).connect", result);
    // The trust-on-first-use fetch of the CA waits for the same handshake.
    let result = guarded("fetch_ca", dupla::tls::fetch_ca(&addr)).await;
    assert_no_answer("fetch_ca", result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_tls_channel_to_a_node_that_never_answers_fails_its_call() {
    let addr = silent_listener().await;
    let (transport, _ca) = tls_transport();
    // A lazy channel connects inside the call: the handshake's own bound
    // ends it, with no deadline on the call.
    let channel = transport.connect_lazy(&addr).unwrap();
    let result = guarded(
        "a call on a lazy TLS channel",
        ManagerClient::new(channel).cluster_status(ClusterStatusRequest {}),
    )
    .await;
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_gives_up_on_a_manager_that_never_answers() {
    let addr = silent_listener().await;
    // `dupla --insecure status`.
    let result = guarded(
        "client status (plain)",
        Client::new(addr.clone(), None).status(),
    )
    .await;
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("stopped or hung"), "{err}");
    // `dupla status` with the cluster CA pinned.
    let (transport, _ca) = tls_transport();
    let client = Client::new(addr.clone(), None).with_transport(transport);
    let err = guarded("client status (TLS)", client.status())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("stopped or hung"), "{err}");
    // `dupla status` before any CA is pinned: nothing gets pinned.
    let root = tempfile::tempdir().unwrap();
    let pin = root.path().join(".dupla").join("ca.pem");
    let client = Client::new(addr, None).with_pinned_ca(pin.clone());
    let result = guarded("client status (first use)", client.status()).await;
    assert_no_answer("client status (first use)", result);
    assert!(!pin.exists(), "a node that never answered was pinned");
}
