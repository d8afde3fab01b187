//! The social assignment's scripted client against a real cluster of
//! processes: `dupla-manager HOST PORT` (positional, as `./server HOST
//! PORT`), three servers taking one session each (so the three users sit
//! on different servers and every message crosses the manager's embedded
//! broker), and `dupla shell HOST PORT < testcase`, compared line by line
//! with the expected output kept beside the testcase.

use dupla_testkit::procs::{self, copy_node_dir, free_port, NodeProcess};
use std::path::Path;
use std::time::{Duration, Instant};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const TESTCASE: &str = include_str!("data/social_shell.testcase");
const EXPECTED: &str = include_str!("data/social_shell.expected");

/// Wait until `addr` (TLS, signed by the CA in `ca`) says its Social
/// service is SERVING: connected to the broker, presence cleared.
async fn wait_for_social(addr: &str, ca: &Path, logs: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = async {
            let pem = std::fs::read_to_string(ca).ok()?;
            let transport = dupla::rpc::Transport::tls(pem, None);
            let channel = transport.connect(addr).await.ok()?;
            let request = HealthCheckRequest {
                service: "dupla.v1.Social".into(),
            };
            let reply = HealthClient::new(channel).check(request).await.ok()?;
            Some(reply.into_inner().status)
        }
        .await;
        if status == Some(ServingStatus::Serving as i32) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} never served Social ({status:?})\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_testcase_through_dupla_shell_matches_the_expected_output() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let manager_addr = format!("127.0.0.1:{port}");
    let dir = copy_node_dir("manager", root.path());
    let port_arg = port.to_string();
    let manager = NodeProcess::start(
        "manager",
        "dupla-manager",
        &dir,
        &manager_addr,
        &["127.0.0.1", &port_arg, "--max-sessions", "1"],
    );
    let servers: Vec<NodeProcess> = (1..=3)
        .map(|n| {
            let name = format!("server-{n}");
            let addr = format!("127.0.0.1:{}", free_port());
            let dir = copy_node_dir(&name, root.path());
            NodeProcess::start(
                &name,
                "dupla-server",
                &dir,
                &addr,
                &["--listen", &addr, "--manager", &manager_addr],
            )
        })
        .collect();
    let logs = || {
        std::iter::once(&manager)
            .chain(&servers)
            .map(|n| format!("--- {} ---\n{}", n.name, n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let ca = manager.dir.join("data").join(dupla::tls::CA_CERT_FILE);
    for server in &servers {
        wait_for_social(&server.addr, &ca, logs).await;
    }
    let client = root.path().join("client");
    std::fs::create_dir_all(&client).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        procs::client_with_input(&client, &["shell", "127.0.0.1", &port_arg], TESTCASE)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let got: Vec<&str> = stdout.lines().collect();
    let want: Vec<&str> = EXPECTED.lines().collect();
    let first_difference = got
        .iter()
        .zip(&want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    assert!(
        out.status.success() && got == want,
        "dupla shell (exit {:?}) differs from the expected output at line {}:\n got: {:?}\nwant: {:?}\n\nstdout:\n{stdout}\nstderr:\n{}\n{}",
        out.status.code(),
        first_difference + 1,
        got.get(first_difference),
        want.get(first_difference),
        String::from_utf8_lossy(&out.stderr),
        logs()
    );
}
