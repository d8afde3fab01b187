//! Resumable backups with the real binaries, broken for real:
//! - kill -9 the primary *and* the client in the middle of a 256 MiB
//!   backup; running the same backup again resumes by itself, sends at most
//!   the remainder plus one chunk, and the file restores byte-identical;
//! - kill -9 the server named with `--server` (the primary, where the
//!   upload entered): the same client run carries on through another
//!   server from what the replica had made durable.

use dupla::chunk::CHUNK_SIZE;
use dupla::placement::{choose, Candidate, DEFAULT_LOAD_EPSILON};
use dupla_manager::files::catalog::placement_key;
use dupla_testkit::procs::{
    self, backup_lines, client, copy_node_dir, start_cluster, wait_for_up, Cluster,
};
use dupla_testkit::test_bytes;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "alice";

/// The cluster's status as `dupla status --json` prints it.
fn status(root: &Path, manager: &str) -> Value {
    let out = client(root, &["--manager", manager, "--json", "status"]);
    assert!(out.status.success(), "status failed");
    serde_json::from_slice(&out.stdout).expect("status is JSON")
}

/// Server indices (into `cluster.servers`) in the placement order of
/// `USER`'s `name`, as the manager computes it now.
fn placement(cluster: &Cluster, root: &Path, name: &str, size: u64) -> Vec<usize> {
    let status = status(root, &cluster.manager.addr);
    let servers = status["servers"].as_array().unwrap();
    let candidates: Vec<Candidate> = servers
        .iter()
        .map(|s| Candidate {
            id: s["id"].as_str().unwrap().to_string(),
            free: s["capacity"].as_u64().unwrap() - s["used"].as_u64().unwrap(),
            active: 0,
        })
        .collect();
    choose(
        &placement_key(USER, name),
        size,
        &candidates,
        DEFAULT_LOAD_EPSILON,
    )
    .into_iter()
    .map(|i| {
        let addr = servers[i]["addr"].as_str().unwrap();
        cluster
            .servers
            .iter()
            .position(|s| s.addr == addr)
            .expect("a server of ours")
    })
    .collect()
}

/// Durable chunk files in the store of the server running in `server_dir`.
fn stored_chunks(server_dir: &Path) -> usize {
    dupla_testkit::stored_chunks(&server_dir.join("data"))
}

/// Wait (polling, 60 s at most) until `done` holds.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `dupla --json backup NAME` started in the background.
fn spawn_backup(root: &Path, manager: &str, name: &str) -> Child {
    spawn_backup_via(root, manager, None, name)
}

/// `dupla [--server SERVER] --json backup NAME` started in the background.
fn spawn_backup_via(root: &Path, manager: &str, server: Option<&str>, name: &str) -> Child {
    let server_args = server.map(|s| vec!["--server", s]).unwrap_or_default();
    Command::new(procs::bin_dir().join("dupla"))
        .current_dir(root)
        .args(["--manager", manager])
        .args(server_args)
        .args(["--json", "backup", name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dupla backup")
}

/// A cluster with `USER` logged in under a client root holding `name`
/// filled with `size` test bytes.
fn setup(tmp: &Path, name: &str, size: usize) -> (Cluster, PathBuf, Vec<u8>) {
    let cluster = start_cluster(tmp);
    let root = copy_node_dir("client", tmp);
    wait_for_up(&cluster, &root, 3);
    procs::register_and_login(&root, &cluster.manager.addr, USER);
    let data = test_bytes(size, 31);
    std::fs::write(root.join(name), &data).unwrap();
    (cluster, root, data)
}

/// The file restores byte-identical with the real client.
fn assert_restores(root: &Path, manager: &str, name: &str, data: &[u8]) {
    let out = client(
        root,
        &["--manager", manager, "restore", name, "-o", "restored.bin"],
    );
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = std::fs::read(root.join("restored.bin")).unwrap();
    assert!(restored == data, "{name}: restored bytes differ");
}

#[test]
fn killing_the_primary_and_the_client_mid_backup_then_rerunning_sends_only_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let size = 256 * CHUNK_SIZE;
    let (mut cluster, root, data) = setup(tmp.path(), "big.bin", size);
    let manager = cluster.manager.addr.clone();
    let order = placement(&cluster, &root, "big.bin", size as u64);
    let primary_dir = cluster.servers[order[0]].dir.clone();

    let mut backup = spawn_backup(&root, &manager, "big.bin");
    wait_until("the primary to store 64 MiB", || {
        stored_chunks(&primary_dir) >= 64
    });
    cluster.servers[order[0]].kill();
    backup.kill().expect("kill the client");
    let _ = backup.wait();

    // The same command again: the client's note says to resume.
    let started = Instant::now();
    let out = client(
        &root,
        &["--manager", &manager, "--json", "backup", "big.bin"],
    );
    assert!(
        out.status.success(),
        "the rerun failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = &backup_lines(&out.stdout).0[0];
    let resumed = report["resumed_bytes"].as_u64().unwrap();
    let sent = report["sent_bytes"].as_u64().unwrap();
    eprintln!(
        "rerun: resumed {resumed} bytes, sent {sent}, {} attempts, {:.1} s",
        report["attempts"],
        started.elapsed().as_secs_f64()
    );
    assert!(resumed > 0, "nothing was resumed: {report}");
    assert!(
        sent <= size as u64 - resumed + CHUNK_SIZE as u64,
        "sent more than the remainder plus one chunk: {report}"
    );
    assert_eq!(report["copies"], 2, "{report}");
    assert_eq!(report["size"], size as u64);
    assert_restores(&root, &manager, "big.bin", &data);
}

#[test]
fn a_backup_carries_on_through_another_server_when_the_named_server_dies() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut cluster, root, _) = setup(tmp.path(), "unused", 0);
    let manager = cluster.manager.addr.clone();
    let size = 128 * CHUNK_SIZE;
    let name = "clip.bin";
    let holders = placement(&cluster, &root, name, size as u64);
    let data = test_bytes(size, 32);
    std::fs::write(root.join(name), &data).unwrap();
    // The user names the primary; the upload enters there (two hops).
    // Before `--server` named only the first entry, a dead named server
    // was retried alone until the backup gave up.
    let primary = holders[0];
    let named = cluster.servers[primary].addr.clone();
    let backup = spawn_backup_via(&root, &manager, Some(&named), name);
    let holder_dirs: Vec<PathBuf> = holders[..2]
        .iter()
        .map(|&i| cluster.servers[i].dir.clone())
        .collect();
    wait_until("both holders to store 32 MiB", || {
        holder_dirs.iter().all(|d| stored_chunks(d) >= 32)
    });
    cluster.servers[primary].kill();

    let out = backup.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the backup failed: {stderr}");
    let report = &backup_lines(&out.stdout).0[0];
    eprintln!("{report}\n{stderr}");
    assert!(report["attempts"].as_u64().unwrap() >= 2, "{report}");
    assert_ne!(report["entry"].as_str(), Some(named.as_str()), "{report}");
    // 32 durable chunks on the replica: at least 32 of the smallest size.
    let resumed = report["resumed_bytes"].as_u64().unwrap();
    assert!(
        resumed >= 32 * dupla::chunk::MIN_CHUNK_SIZE as u64,
        "{report}"
    );
    assert_eq!(report["copies"], 2, "{report}");
    assert!(stderr.contains("resuming"), "{stderr}");
    assert_restores(&root, &manager, name, &data);
}
