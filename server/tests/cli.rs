//! The `dupla-server` binary refuses a configuration it cannot run with,
//! with a clear message and a non-zero exit.

use std::process::Command;

#[test]
fn a_bad_capacity_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dupla-server"))
        .current_dir(dir.path())
        .args(["--secret", "s", "--capacity", "ten gigs"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ten gigs"), "{stderr}");
}
