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

#[test]
fn bad_broker_settings_are_refused_at_startup_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_dupla-server"))
            .current_dir(dir.path())
            .args(["--secret", "s"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = refused(&["--broker", "mqtts://srv:hunter2@mq:port"]);
    assert!(stderr.contains("bad port"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the password is shown: {stderr}"
    );
    let stderr = refused(&[
        "--broker-username",
        "srv",
        "--broker-password-file",
        "no-such-file",
    ]);
    assert!(stderr.contains("broker_password_file"), "{stderr}");
    assert!(stderr.contains("no-such-file"), "{stderr}");
    let stderr = refused(&["--broker-ca", "no-such-ca.pem"]);
    assert!(stderr.contains("broker_ca"), "{stderr}");
}
