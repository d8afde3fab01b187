//! A real Mosquitto broker for tests: its own config in a temp directory,
//! a free loopback port, killed on drop, restartable on the same port.
//! `.ci/run` installs the `mosquitto` package; a test on a machine without
//! it says so and skips.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Where Debian's package puts the binary (not on a non-root PATH).
const KNOWN_PATHS: [&str; 2] = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"];

/// How long a starting broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The mosquitto binary, if installed.
pub fn binary() -> Option<PathBuf> {
    KNOWN_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            let out = Command::new("sh")
                .args(["-c", "command -v mosquitto"])
                .output()
                .ok()?;
            let path = String::from_utf8(out.stdout).ok()?.trim().to_string();
            (!path.is_empty()).then(|| PathBuf::from(path))
        })
}

/// A running Mosquitto.
pub struct Mosquitto {
    /// Its port on 127.0.0.1.
    pub port: u16,
    binary: PathBuf,
    dir: TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    /// Start one on a free port, or `None` (with a message saying the test
    /// is skipped) when mosquitto is not installed.
    pub fn start(test: &str) -> Option<Mosquitto> {
        let Some(binary) = binary() else {
            eprintln!(
                "SKIPPED {test}: mosquitto is not installed (apt-get install mosquitto; .ci/run does it)"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let mut broker = Mosquitto {
            port: crate::procs::free_port(),
            binary,
            dir,
            child: None,
        };
        broker.restart();
        Some(broker)
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Start it (again) on its port and wait until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let config = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n",
                self.port
            ),
        )
        .expect("write mosquitto.conf");
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).expect("log");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {} within {START_TIMEOUT:?}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}
