//! TLS on every link (issue 10): a backup through an in-process TLS cluster
//! (servers enrolled, heartbeats and replication over mutual TLS), CA
//! pinning on the client, plain text refused, heartbeats that cannot move
//! another server, the demo secret, and configs that never show the secret.

use dupla::rpc::{Secret, Transport, DEMO_SECRET};
use dupla::tls::{self, NodeIdentity, ENROL_REQUEST_LABEL};
use dupla::v1::enrolment_client::EnrolmentClient;
use dupla::v1::manager_client::ManagerClient;
use dupla::v1::{ClusterStatusRequest, EnrolRequest, HeartbeatRequest, Node};
use dupla_client::backup::{resolve, BackupOptions};
use dupla_client::Client;
use dupla_testkit::cluster::TEST_SECRET;
use dupla_testkit::{bounded, test_bytes, TestCluster};
use std::path::Path;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_cluster_backs_up_and_restores() {
    bounded(async {
        let cluster = TestCluster::start_tls(2).await;
        let root = tempfile::tempdir().unwrap();
        let pin = root.path().join(".dupla").join("ca.pem");
        let client = Client::new(cluster.manager_addr(), None)
            .with_pinned_ca(pin.clone())
            .with_token(cluster.token.clone());
        let data = test_bytes(3 << 20, 7);
        std::fs::write(root.path().join("a.bin"), &data).unwrap();
        let file = resolve(root.path(), Path::new("a.bin")).unwrap();
        let report = client
            .backup_resolved(root.path(), &file, BackupOptions::default())
            .await
            .unwrap();
        assert_eq!(report.version, 1);
        // Both servers hold it: the replica came over server-to-server TLS.
        let entry = cluster.lookup("a.bin").await.unwrap();
        assert_eq!(entry.holders.len(), 2, "{entry:?}");
        let dest = root.path().join("restored");
        client
            .restore_version("a.bin", 0, &dest, false)
            .await
            .unwrap();
        assert!(std::fs::read(&dest).unwrap() == data);
        // The CA was pinned on first use, readable by the user only.
        let pinned = std::fs::read_to_string(&pin).unwrap();
        assert!(tls::same_certificate(
            &pinned,
            cluster.transport.ca_pem().unwrap()
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&pin).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(client.is_tls());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_pinned_to_one_ca_refuses_another_clusters() {
    bounded(async {
        let first = TestCluster::start_tls(1).await;
        let second = TestCluster::start_tls(1).await;
        let root = tempfile::tempdir().unwrap();
        let pin = root.path().join(".dupla").join("ca.pem");
        Client::new(first.manager_addr(), None)
            .with_pinned_ca(pin.clone())
            .status()
            .await
            .expect("first use pins the first cluster's CA");
        let err = Client::new(second.manager_addr(), None)
            .with_pinned_ca(pin.clone())
            .status()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("pinned in"), "{err}");
        assert!(err.contains(&pin.display().to_string()), "{err}");
        assert!(err.contains("delete"), "{err}");
        assert!(
            err.contains(&tls::fingerprint(second.transport.ca_pem().unwrap())),
            "{err}"
        );
        // Deleting the pin (the cluster was re-created) trusts the new one.
        std::fs::remove_file(&pin).unwrap();
        Client::new(second.manager_addr(), None)
            .with_pinned_ca(pin)
            .status()
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plaintext_client_cannot_talk_to_a_tls_node() {
    bounded(async {
        let cluster = TestCluster::start_tls(1).await;
        for addr in [cluster.manager_addr(), cluster.server_addr(0)] {
            let answered = match dupla::rpc::connect(&addr).await {
                Ok(channel) => ManagerClient::new(channel)
                    .cluster_status(ClusterStatusRequest {})
                    .await
                    .is_ok(),
                Err(_) => false,
            };
            assert!(!answered, "{addr} answered a plain-text call");
        }
        // The insecure client says what to check.
        let err = Client::new(cluster.manager_addr(), None)
            .status()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("insecure"), "{err}");
    })
    .await;
}

/// A certificate for `id`, as any holder of the cluster secret can get
/// for an id the manager does not know yet.
async fn enrol_as(
    cluster: &TestCluster,
    id: &str,
    addr: &str,
) -> Result<NodeIdentity, tonic::Status> {
    let secret = Secret::new(TEST_SECRET).unwrap();
    let (key, csr_pem) = tls::new_request(id).unwrap();
    let proof = secret.proof(&[
        ENROL_REQUEST_LABEL,
        id.as_bytes(),
        addr.as_bytes(),
        csr_pem.as_bytes(),
    ]);
    let reply = EnrolmentClient::new(cluster.channel(&cluster.manager_addr()).await)
        .enrol(EnrolRequest {
            server_id: id.into(),
            addr: addr.into(),
            csr_pem,
            proof: proof.to_vec().into(),
        })
        .await?
        .into_inner();
    Ok(NodeIdentity {
        chain_pem: reply.cert_pem,
        key_pem: key.serialize_pem(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_heartbeat_cannot_move_another_servers_address() {
    bounded(async {
        let cluster = TestCluster::start_tls(1).await;
        let victim = cluster.servers[0].id.clone();
        let victim_addr = cluster.server_addr(0);
        let secret = Secret::new(TEST_SECRET).unwrap();
        let hijack = || {
            secret.request(HeartbeatRequest {
                node: Some(Node {
                    id: victim.clone(),
                    addr: "127.0.0.1:1".into(),
                }),
                capacity: 1 << 40,
                ..Default::default()
            })
        };
        // Another enrolled identity, with the secret: refused.
        let evil = enrol_as(&cluster, "srv-evil", "127.0.0.1:1").await.unwrap();
        let ca = cluster.transport.ca_pem().unwrap().to_string();
        let channel = Transport::tls(ca, Some(evil))
            .connect(&cluster.manager_addr())
            .await
            .unwrap();
        let status = ManagerClient::new(channel)
            .heartbeat(hijack())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        // No certificate at all, with the secret: refused.
        let status = ManagerClient::new(cluster.channel(&cluster.manager_addr()).await)
            .heartbeat(hijack())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("certificate"), "{status:?}");
        // Nor can the secret alone get a certificate for the victim's id.
        let status = enrol_as(&cluster, &victim, "127.0.0.1:1")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        // The victim is still where it was.
        let addr = cluster.status().await.servers.iter().find_map(|s| {
            s.node
                .as_ref()
                .filter(|n| n.id == victim)
                .map(|n| n.addr.clone())
        });
        assert_eq!(addr.as_deref(), Some(victim_addr.as_str()));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_server_on_a_new_port_proves_its_move() {
    bounded(async {
        let mut cluster = TestCluster::start_tls(1).await;
        let old = cluster.server_addr(0);
        cluster.stop_server(0).await;
        cluster.restart_server_elsewhere(0).await;
        let new = cluster.server_addr(0);
        assert_ne!(old, new);
        let id = cluster.servers[0].id.clone();
        cluster
            .wait_for_status(|s| {
                s.servers.iter().any(|s| {
                    s.state() == dupla::v1::ServerState::Up
                        && s.node.as_ref().is_some_and(|n| n.id == id && n.addr == new)
                })
            })
            .await;
    })
    .await;
}

#[tokio::test]
async fn the_demo_secret_is_refused_off_loopback_and_warned_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = dupla_manager::Config::for_test(dir.path().join("m"), DEMO_SECRET);
    config.listen = "0.0.0.0:0".into();
    let (_handle, shutdown) = dupla::shutdown::channel();
    let err = match dupla_manager::start(config.clone(), shutdown.clone()).await {
        Ok(_) => panic!("the manager started on 0.0.0.0 with the demo secret"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("demo cluster secret"), "{err}");
    assert!(err.contains("DUPLA_SECRET"), "{err}");

    let mut server =
        dupla_server::Config::for_test(dir.path().join("s"), "127.0.0.1:1".into(), DEMO_SECRET);
    server.listen = "0.0.0.0:0".into();
    server.advertise = Some("192.0.2.1:1".into());
    let err = match dupla_server::start(server, shutdown.clone()).await {
        Ok(_) => panic!("the server started on 0.0.0.0 with the demo secret"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("DUPLA_SECRET"), "{err}");

    // On loopback it starts (and warns).
    config.listen = "127.0.0.1:0".into();
    dupla_manager::start(config, shutdown)
        .await
        .expect("on loopback the demo secret only warns");
}

#[test]
fn debug_of_configs_never_shows_the_secret() {
    let secret = "s3cret-that-must-not-leak";
    let manager = dupla_manager::Config::for_test("/tmp/m".into(), secret);
    let server = dupla_server::Config::for_test("/tmp/s".into(), "m:1".into(), secret);
    for text in [format!("{manager:?}"), format!("{server:?}")] {
        assert!(!text.contains(secret), "{text}");
    }
    let args =
        <dupla_manager::Args as clap::Parser>::parse_from(["dupla-manager", "--secret", secret]);
    assert!(!format!("{args:?}").contains(secret));
    let args =
        <dupla_server::Args as clap::Parser>::parse_from(["dupla-server", "--secret", secret]);
    assert!(!format!("{args:?}").contains(secret));
}

/// A real `dupla-manager` from a copy of `nodes/manager` under `tmp`, on a
/// free port, with `extra` flags; and its address.
fn manager_process(tmp: &Path, extra: &[&str]) -> (dupla_testkit::procs::NodeProcess, String) {
    use dupla_testkit::procs::{copy_node_dir, free_port, NodeProcess};
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--listen", addr.as_str()];
    args.extend_from_slice(extra);
    let manager = NodeProcess::start(
        "manager",
        "dupla-manager",
        &copy_node_dir("manager", tmp),
        &addr,
        &args,
    );
    (manager, addr)
}

#[test]
fn insecure_runs_in_plain_text_and_says_so() {
    use dupla_testkit::procs::{client, copy_node_dir, free_port, NodeProcess};
    let tmp = tempfile::tempdir().unwrap();
    let (manager, manager_addr) = manager_process(tmp.path(), &["--insecure"]);
    let server_addr = format!("127.0.0.1:{}", free_port());
    let _server = NodeProcess::start(
        "server-1",
        "dupla-server",
        &copy_node_dir("server-1", tmp.path()),
        &server_addr,
        &[
            "--listen",
            &server_addr,
            "--manager",
            &manager_addr,
            "--insecure",
        ],
    );
    let root = copy_node_dir("client", tmp.path());
    let status = |extra: &[&str]| {
        let mut args = vec!["--manager", manager_addr.as_str()];
        args.extend_from_slice(extra);
        client(&root, &args)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let json = loop {
        let out = status(&["--insecure", "--json", "status"]);
        if out.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never answered: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            manager.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(json["tls"], false, "{json}");
    let out = status(&["--insecure", "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("TLS: OFF"), "{text}");
    assert!(manager.log().contains("TLS is OFF"), "{}", manager.log());
    // A client expecting TLS is told what to check, and pins nothing.
    let out = status(&["status"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--insecure"), "{stderr}");
    assert!(!root.join(".dupla").join("ca.pem").exists());
}

#[test]
fn a_plaintext_client_of_a_tls_cluster_always_says_why() {
    use dupla_testkit::procs::{client, copy_node_dir};
    let tmp = tempfile::tempdir().unwrap();
    let (manager, manager_addr) = manager_process(tmp.path(), &[]);
    let root = copy_node_dir("client", tmp.path());
    // The TLS node drops the plain-text connection while the client writes
    // to it. That once killed the client with SIGPIPE, silently, about one
    // run in two; every run must end with an error line and status 1.
    for run in 0..12 {
        let out = client(
            &root,
            &["--manager", manager_addr.as_str(), "--insecure", "status"],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "run {run}: {:?}, stderr: {stderr}\n{}",
            out.status,
            manager.log()
        );
        assert!(stderr.starts_with("error: "), "run {run}: {stderr}");
    }
}
