//! End to end with the real binaries: a `dupla-manager` process, three
//! users registered and logged in with the real `dupla` (`--password-stdin`),
//! and three `dupla chat` processes driven through their standard input,
//! their standard output read line by line as the contract says.

use dupla_testkit::procs::{
    bin_dir, client_with_input, copy_node_dir, free_port, nodes_dir, NodeProcess,
};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long one expected line may take.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// A client root with its own node.toml, like `nodes/client`.
fn client_root(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(nodes_dir().join("client/node.toml"), dir.join("node.toml")).unwrap();
    dir
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Wait until the manager accepts connections (30 s at most).
fn wait_for_port(manager: &NodeProcess) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&manager.addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "the manager never listened:\n{}",
            manager.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `dupla chat`, its stdout read by a thread into a channel.
struct Chat {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Chat {
    fn start(root: &Path, manager: &str, name: &str) -> Chat {
        let stderr = std::fs::File::create(root.join("chat.err")).unwrap();
        let mut child = Command::new(bin_dir().join("dupla"))
            .current_dir(root)
            .args(["--manager", manager, "chat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start dupla chat");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Chat {
            name: name.into(),
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Type one line.
    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Read lines until one equals `line` (or starts with it, if `prefix`).
    fn expect_line(&mut self, line: &str, prefix: bool) -> String {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(got) => {
                    self.seen.push(got.clone());
                    if got == line || (prefix && got.starts_with(line)) {
                        return got;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: no {line:?} in time; saw {:#?}", self.name, self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "{}: output ended before {line:?}; saw {:#?}",
                        self.name, self.seen
                    )
                }
            }
        }
    }

    fn expect(&mut self, line: &str) -> String {
        self.expect_line(line, false)
    }

    fn expect_prefix(&mut self, prefix: &str) -> String {
        self.expect_line(prefix, true)
    }

    /// Wait for the process to exit (after `#exit` or end of input).
    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn three_real_chat_clients_driven_through_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let dir = copy_node_dir("manager", tmp.path());
    let manager = NodeProcess::start(
        "manager",
        "dupla-manager",
        &dir,
        &addr,
        &["--listen", &addr],
    );
    wait_for_port(&manager);

    let mut roots = Vec::new();
    for (name, first) in [("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")] {
        let root = client_root(tmp.path(), name);
        let out = client_with_input(
            &root,
            &[
                "--manager",
                &addr,
                "register",
                "--login",
                name,
                "--first-names",
                first,
                "--last-names",
                "Tester",
                "--age",
                "33",
                "--gender",
                "other",
                "--password-stdin",
            ],
            "a long password\n",
        );
        assert_ok(&out, "register");
        let out = client_with_input(
            &root,
            &["--manager", &addr, "login", name, "--password-stdin"],
            "a long password\n",
        );
        assert_ok(&out, "login");
        let session = root.join(".dupla/session.json");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&session).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the token file is private");
        }
        roots.push(root);
    }
    // A wrong password is refused with a non-zero exit.
    let out = client_with_input(
        &roots[0],
        &["--manager", &addr, "login", "alice", "--password-stdin"],
        "not it at all\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong login or password"));

    let mut alice = Chat::start(&roots[0], &addr, "alice");
    alice.expect_prefix("* clock synchronised with the manager");
    alice.expect_prefix("* welcome alice; you are in lobby");
    let mut bob = Chat::start(&roots[1], &addr, "bob");
    bob.expect_prefix("* welcome bob");
    alice.expect("* bob joined lobby");
    let mut carol = Chat::start(&roots[2], &addr, "carol");
    carol.expect_prefix("* welcome carol");
    bob.expect("* carol joined lobby");

    alice.send("hello from alice");
    for chat in [&mut alice, &mut bob, &mut carol] {
        chat.expect("alice: hello from alice");
    }

    alice.send("#cR games");
    alice.expect("* you are now in games (1 here)");
    bob.send("#cR games");
    bob.expect("* room games already exists; #gR games enters it");
    bob.send("#gR games");
    bob.expect("* you are now in games (2 here)");
    alice.expect("* bob joined games");
    bob.send("gg");
    alice.expect("bob: gg");

    carol.send("#lR");
    carol.expect("* rooms: lobby (1), games (2)");
    carol.send("#show users");
    carol.expect("* users: alice (online), bob (online), carol (online)");
    carol.send("#\\private alice psst, it's carol");
    carol.expect("* private to alice: psst, it's carol");
    alice.expect("[private] carol: psst, it's carol");

    bob.send("#dR games");
    bob.expect("* only alice, who created games, may delete it");
    bob.send("#eR");
    bob.expect("* you are now in lobby (2 here)");
    bob.send("#eR");
    bob.expect("* you are already in lobby");

    // #dR by the creator sends its members back.
    carol.send("#cR tea");
    carol.expect("* you are now in tea (1 here)");
    bob.send("#gR tea");
    bob.expect("* you are now in tea (2 here)");
    carol.send("#dR tea");
    carol.expect("* deleted room tea");
    bob.expect("* room tea was removed (carol deleted it); you are back in lobby");

    // A creator's disconnect removes its room.
    bob.send("#gR games");
    bob.expect("* you are now in games (2 here)");
    alice.send("#exit");
    alice.expect("* bye");
    assert!(alice.wait().success(), "#exit ends dupla chat cleanly");
    bob.expect("* room games was removed (its creator alice disconnected); you are back in lobby");
    bob.send("#show users");
    bob.expect("* users: alice (offline), bob (online), carol (online)");

    // End of input ends the chat too.
    carol.stdin = None;
    assert!(carol.wait().success());
    bob.expect("* carol left lobby");
    bob.send("#exit");
    assert!(bob.wait().success());

    // Contract: on a pipe, no timestamps.
    assert!(bob
        .seen
        .iter()
        .all(|l| !l.starts_with('[') || l.starts_with("[private]")));
    drop(manager);
}
