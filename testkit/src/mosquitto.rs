//! A real Mosquitto broker for tests: its own config in a temp directory,
//! a free loopback port, killed on drop, restartable on the same port;
//! optionally with a password file (no anonymous clients) and TLS with a
//! certificate from a CA made for the test ([`Options`]).
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

/// How a test's Mosquitto is set up beyond a plain, anonymous listener.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Users and passwords of its `password_file` (made with
    /// `mosquitto_passwd`); when any, anonymous clients are refused.
    pub users: Vec<(String, String)>,
    /// TLS on its listener, with a certificate for 127.0.0.1 and localhost
    /// signed by a CA made for the test ([`Mosquitto::ca_file`]).
    pub tls: bool,
}

/// `mosquitto_passwd`, beside the broker's binary or on the PATH.
fn passwd_binary(broker: &std::path::Path) -> PathBuf {
    [
        "/usr/bin/mosquitto_passwd",
        "/usr/local/bin/mosquitto_passwd",
    ]
    .iter()
    .map(PathBuf::from)
    .chain(broker.parent().map(|dir| dir.join("mosquitto_passwd")))
    .find(|p| p.exists())
    .unwrap_or_else(|| PathBuf::from("mosquitto_passwd"))
}

/// Whether this process runs as root (`/proc/self` belongs to its user).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A running Mosquitto.
pub struct Mosquitto {
    /// Its port on 127.0.0.1.
    pub port: u16,
    binary: PathBuf,
    dir: TempDir,
    child: Option<Child>,
    options: Options,
}

impl Mosquitto {
    /// Start one on a free port, or `None` (with a message saying the test
    /// is skipped) when mosquitto is not installed.
    pub fn start(test: &str) -> Option<Mosquitto> {
        Self::start_with(test, Options::default())
    }

    /// [`Mosquitto::start`] set up as `options` says.
    pub fn start_with(test: &str, options: Options) -> Option<Mosquitto> {
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
            options,
        };
        broker.write_files();
        broker.restart();
        Some(broker)
    }

    /// `mqtt://127.0.0.1:PORT`, or `mqtts://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The PEM file of the CA that signed its certificate (with TLS).
    pub fn ca_file(&self) -> PathBuf {
        assert!(self.options.tls, "this Mosquitto has no TLS");
        self.dir.path().join("ca").join(dupla::tls::CA_CERT_FILE)
    }

    /// The password file and the TLS certificate the options ask for.
    fn write_files(&self) {
        for (i, (user, password)) in self.options.users.iter().enumerate() {
            let file = self.dir.path().join("passwords");
            let mut command = Command::new(passwd_binary(&self.binary));
            command.arg("-b");
            if i == 0 {
                command.arg("-c");
            }
            let status = command
                .arg(&file)
                .arg(user)
                .arg(password)
                .status()
                .expect("run mosquitto_passwd");
            assert!(status.success(), "mosquitto_passwd failed: {status}");
        }
        if self.options.tls {
            let ca = dupla::tls::Ca::load_or_create(&self.dir.path().join("ca")).expect("test CA");
            let identity = ca
                .issue("mosquitto", &dupla::tls::cert_hosts(&[]))
                .expect("broker certificate");
            std::fs::write(self.dir.path().join("broker.pem"), &identity.chain_pem)
                .expect("write the certificate");
            std::fs::write(self.dir.path().join("broker.key"), &identity.key_pem)
                .expect("write the key");
        }
    }

    /// Its mosquitto.conf.
    fn config(&self) -> String {
        let dir = self.dir.path();
        let mut config = format!("listener {} 127.0.0.1\npersistence false\n", self.port);
        if self.options.users.is_empty() {
            config.push_str("allow_anonymous true\n");
        } else {
            let file = dir.join("passwords");
            config.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                file.display()
            ));
        }
        if self.options.tls {
            config.push_str(&format!(
                "certfile {}\nkeyfile {}\n",
                dir.join("broker.pem").display(),
                dir.join("broker.key").display()
            ));
        }
        // Started as root, Mosquitto drops to the `mosquitto` user before
        // reading the password file, which it then may not read in the
        // test's private temp directory.
        if running_as_root() {
            config.push_str("user root\n");
        }
        config
    }

    /// Start it (again) on its port and wait until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let config = self.dir.path().join("mosquitto.conf");
        std::fs::write(&config, self.config()).expect("write mosquitto.conf");
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
