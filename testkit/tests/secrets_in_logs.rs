//! Nothing logs a token, a password or the cluster secret: every node's
//! log, at trace level for every crate (tonic, h2 and hyper included), is
//! captured through a whole session (register, login, a wrong password,
//! upload, download, logout; the servers log in to the broker with a
//! password) and searched for them.

use dupla::v1::{LoginRequest, LogoutRequest};
use dupla_testkit::chat::{self, TEST_PASSWORD};
use dupla_testkit::cluster::{TEST_SECRET, TEST_USER};
use dupla_testkit::raw::{self, Target};
use dupla_testkit::{test_bytes, TestCluster};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Every log line written, shared with the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the servers give the broker as their password.
const BROKER_PASSWORD: &str = "broker-hunter2";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_log_line_carries_a_token_a_password_or_the_secret() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    dupla_testkit::bounded(async {
        // The embedded broker takes any credentials: what matters is that
        // the servers give one, from a file, over plain text (which they
        // warn about, naming the broker).
        let files = tempfile::tempdir().unwrap();
        let password_file = files.path().join("broker-password");
        std::fs::write(&password_file, format!("{BROKER_PASSWORD}\n")).unwrap();
        let mut cluster = TestCluster::start_configured_servers(
            2,
            |_| {},
            move |c| {
                c.broker_auth = dupla::broker::BrokerAuth::load(
                    Some("dupla".into()),
                    Some(&password_file),
                    None,
                )
                .unwrap();
            },
        )
        .await;
        let manager = cluster.manager_addr();
        cluster.token = chat::user(&manager, TEST_USER).await;
        dupla_testkit::social::wait_for_social(&cluster).await;
        let bob = chat::user(&manager, "bob").await;
        let refused = chat::accounts(&manager)
            .await
            .login(LoginRequest {
                login: "bob".into(),
                password: "not the password".into(),
            })
            .await;
        assert!(refused.is_err(), "a wrong password logs in");
        let data = test_bytes(3 << 20, 7);
        let as_bob = Target::new(cluster.server_addr(0), &bob);
        raw::upload(&as_bob, "notes.bin", &data).await.unwrap();
        raw::assert_restores(&as_bob, "notes.bin", &data).await;
        chat::accounts(&manager)
            .await
            .logout(chat::authed(&bob, LogoutRequest {}))
            .await
            .unwrap();
        let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
        assert!(log.contains("upload committed"), "the log was not captured");
        assert!(
            log.contains("credentials travel in plain text"),
            "no broker login"
        );
        for (what, secret) in [
            ("bob's token", bob.as_str()),
            ("the test user's token", cluster.token.as_str()),
            ("a password", TEST_PASSWORD),
            ("a wrong password", "not the password"),
            ("the cluster secret", TEST_SECRET),
            ("the broker password", BROKER_PASSWORD),
        ] {
            assert!(!log.contains(secret), "{what} is in the log");
        }
    })
    .await;
}
