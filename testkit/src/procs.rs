//! Real processes for end-to-end tests: the built `dupla-manager`,
//! `dupla-server` and `dupla` binaries, each started from its own copy of a
//! `nodes/` directory, killed for real, and stopped on drop.

use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Directory holding the workspace's built binaries (next to the test
/// executable's `deps/` directory).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps")
        .to_path_buf();
    for bin in ["dupla-manager", "dupla-server", "dupla"] {
        assert!(
            dir.join(bin).exists(),
            "{} is missing: run `cargo build --workspace --bins` (cargo test --workspace builds it)",
            dir.join(bin).display()
        );
    }
    dir
}

/// The repository's `nodes/` directory.
pub fn nodes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../nodes")
}

/// The repository's `sample-files/` directory.
pub fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sample-files")
}

/// A free TCP port on 127.0.0.1 (bound then released: fine for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Copy `nodes/<node>/node.toml` into `dest/<node>/` and return that
/// directory. Its fixed HTTP port (8080–8083) becomes a free one, as tests
/// pass a free `--listen`: test clusters run side by side and beside a demo.
pub fn copy_node_dir(node: &str, dest: &Path) -> PathBuf {
    let dir = dest.join(node);
    std::fs::create_dir_all(&dir).expect("node dir");
    let text =
        std::fs::read_to_string(nodes_dir().join(node).join("node.toml")).expect("read node.toml");
    let text: String = text
        .lines()
        .map(|line| match line.starts_with("http = ") {
            true => "http = \"127.0.0.1:0\"".to_string(),
            false => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("node.toml"), text + "\n").expect("copy node.toml");
    dir
}

/// A running node process, killed when dropped.
pub struct NodeProcess {
    /// The node's name (`manager`, `server-2`, ...).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Its listen address.
    pub addr: String,
    child: Option<Child>,
}

impl NodeProcess {
    /// Start `program` in `dir` with extra flags; output goes to `dir/node.log`.
    pub fn start(name: &str, program: &str, dir: &Path, addr: &str, args: &[&str]) -> NodeProcess {
        let log = std::fs::File::create(dir.join("node.log")).expect("log file");
        let child = Command::new(bin_dir().join(program))
            .current_dir(dir)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        NodeProcess {
            name: name.into(),
            dir: dir.to_path_buf(),
            addr: addr.into(),
            child: Some(child),
        }
    }

    /// kill -9, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The node's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run the `dupla` client in `root` with `args`, returning its output.
pub fn client(root: &Path, args: &[&str]) -> Output {
    Command::new(bin_dir().join("dupla"))
        .current_dir(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run dupla")
}

/// Run the `dupla` client in `root` with `args`, writing `input` to its
/// standard input.
pub fn client_with_input(root: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(bin_dir().join("dupla"))
        .current_dir(root)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dupla");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("write dupla's stdin");
    child.wait_with_output().expect("dupla finishes")
}

/// Password of the accounts [`register_and_login`] creates.
pub const PROCS_PASSWORD: &str = "correct horse battery staple";

/// Register `login` with the real client and log it in, so the session is
/// saved under `root` and later commands there act as that user.
pub fn register_and_login(root: &Path, manager: &str, login: &str) {
    let password = format!("{PROCS_PASSWORD}\n");
    let steps: [&[&str]; 2] = [
        &[
            "--manager",
            manager,
            "register",
            "--login",
            login,
            "--first-names",
            "Test",
            "--last-names",
            "User",
            "--age",
            "30",
            "--gender",
            "other",
            "--password-stdin",
        ],
        &["--manager", manager, "login", login, "--password-stdin"],
    ];
    for args in steps {
        let out = client_with_input(root, args, &password);
        assert!(
            out.status.success(),
            "dupla {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A manager and three servers, started from copies of `nodes/`.
pub struct Cluster {
    /// The manager process.
    pub manager: NodeProcess,
    /// The storage servers, `server-1` first.
    pub servers: Vec<NodeProcess>,
}

/// Start a manager and three servers from copies of `nodes/` under `root`.
pub fn start_cluster(root: &Path) -> Cluster {
    let manager_addr = format!("127.0.0.1:{}", free_port());
    let dir = copy_node_dir("manager", root);
    let manager = NodeProcess::start(
        "manager",
        "dupla-manager",
        &dir,
        &manager_addr,
        &["--listen", &manager_addr],
    );
    let servers = (1..=3)
        .map(|n| {
            let name = format!("server-{n}");
            let addr = format!("127.0.0.1:{}", free_port());
            let dir = copy_node_dir(&name, root);
            NodeProcess::start(
                &name,
                "dupla-server",
                &dir,
                &addr,
                &["--listen", &addr, "--manager", &manager_addr],
            )
        })
        .collect();
    Cluster { manager, servers }
}

/// One JSON value per non-empty line of `stdout`.
pub fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// The lines of `dupla --json backup`: one receipt per new or changed file
/// (in path order), and the run's summary (the line with `"snapshot"`).
pub fn backup_lines(stdout: &[u8]) -> (Vec<Value>, Value) {
    let (files, mut summary): (Vec<Value>, Vec<Value>) = json_lines(stdout)
        .into_iter()
        .partition(|line| line.get("name").is_some());
    assert_eq!(summary.len(), 1, "one summary line: {summary:?}");
    (files, summary.remove(0))
}

/// Poll `dupla status --json` until `n` servers are up (30 s at most).
pub fn wait_for_up(cluster: &Cluster, client_root: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = client(
            client_root,
            &["--manager", &cluster.manager.addr, "--json", "status"],
        );
        if out.status.success() {
            let status: Value = serde_json::from_slice(&out.stdout).expect("status is JSON");
            let up = status["servers"]
                .as_array()
                .map_or(0, |s| s.iter().filter(|s| s["state"] == "up").count());
            if up == n {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "servers never came up\nmanager log:\n{}",
            cluster.manager.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
