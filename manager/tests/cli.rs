//! The `dupla-manager` binary refuses a configuration it cannot run with,
//! with a clear message and a non-zero exit, before touching anything.

use std::process::Command;

#[test]
fn an_empty_secret_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dupla-manager"))
        .current_dir(dir.path())
        .env_remove("DUPLA_SECRET")
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cluster secret is empty"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "nothing may be created");
}

#[test]
fn a_malformed_node_toml_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("node.toml"), "listen = 5\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dupla-manager"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("node.toml"), "{stderr}");
}
