//! A storage server's settings: `node.toml` in its directory, overridden by
//! flags and `DUPLA_*` variables.

use clap::Parser;
use dupla::broker::{BrokerAuth, BrokerUrl, UrlSetting};
use dupla::config::{load_layered, rebase_path, secs_setting, NodeArgs};
use dupla::size::parse_size;
use dupla::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Default listen address (server-1's; the others set theirs in node.toml).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default manager address.
pub const DEFAULT_MANAGER: &str = "127.0.0.1:50050";
/// Default space for chunks.
pub const DEFAULT_CAPACITY: &str = "10GiB";
/// Bytes per second a repair copy may take, so client traffic keeps flowing.
pub const DEFAULT_REPAIR_RATE: &str = "200MiB";
/// Bytes per second the background scrub re-hashes.
pub const DEFAULT_SCRUB_RATE: &str = "50MiB";
/// Time between background scrub passes.
pub const DEFAULT_SCRUB_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
/// Default time between garbage-collection passes: an hour.
pub const DEFAULT_GC_INTERVAL_SECS: u64 = 3600;
/// Default time an unused chunk is kept (and an unfinished upload can be
/// resumed): a day.
pub const DEFAULT_GC_GRACE_SECS: u64 = 86_400;

/// How often to report to the manager (it marks a server suspect after a
/// few missed beats).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Command line of `dupla-server`: its settings, each a flag, a `DUPLA_*`
/// variable and a `node.toml` key of the same name.
#[derive(Parser, Serialize, Deserialize, Debug, Default, Clone)]
#[command(name = "dupla-server", version, about = "Dupla storage server")]
pub struct Args {
    /// Config file, listen address, data directory, cluster secret, TLS.
    #[command(flatten)]
    #[serde(flatten)]
    pub node: NodeArgs,
    /// Address of the HTTP API, console and `/metrics` (`127.0.0.1:8081`
    /// in nodes/); empty or `off` turns HTTP off [default: off].
    #[arg(long, env = "DUPLA_HTTP")]
    pub http: Option<String>,
    /// Address other nodes reach this server at (default: the listen address).
    #[arg(long, env = "DUPLA_ADVERTISE")]
    pub advertise: Option<String>,
    /// Manager address, host:port.
    #[arg(long, env = "DUPLA_MANAGER")]
    pub manager: Option<String>,
    /// Space this server offers for chunks, e.g. 10GiB.
    #[arg(long, env = "DUPLA_CAPACITY")]
    pub capacity: Option<String>,
    /// Bytes per second repairs may copy into this server, e.g. 200MiB.
    #[arg(long, env = "DUPLA_REPAIR_RATE")]
    pub repair_rate: Option<String>,
    /// Bytes per second the background scrub re-hashes, e.g. 50MiB.
    #[arg(long, env = "DUPLA_SCRUB_RATE")]
    pub scrub_rate: Option<String>,
    /// Seconds between background scrub passes (0 turns them off).
    #[arg(long, env = "DUPLA_SCRUB_INTERVAL_SECS")]
    pub scrub_interval_secs: Option<u64>,
    /// Seconds a transfer's sender may stay silent before it is presumed
    /// gone [default: 60].
    #[arg(long, env = "DUPLA_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<f64>,
    /// Seconds between garbage-collection passes (0 turns them off).
    #[arg(long, env = "DUPLA_GC_INTERVAL_SECS")]
    pub gc_interval_secs: Option<u64>,
    /// Seconds a chunk no file uses is kept (an unfinished upload can be
    /// resumed that long) [default: 86400].
    #[arg(long, env = "DUPLA_GC_GRACE_SECS")]
    pub gc_grace_secs: Option<u64>,
    /// The MQTT broker social messages travel through,
    /// `mqtt://host:port` or `mqtts://host:port` (TLS), optionally with
    /// `user:password@` [default: the one the manager names: its embedded
    /// broker, or its own `broker` setting].
    #[arg(long, env = "DUPLA_BROKER")]
    pub broker: Option<UrlSetting>,
    /// User name to give the broker (whichever broker: this server's own
    /// or the one the manager names); replaces a user in the URL.
    #[arg(long, env = "DUPLA_BROKER_USERNAME")]
    pub broker_username: Option<String>,
    /// File whose first line is the broker password (kept out of node.toml
    /// and the process list); needs `broker_username`.
    #[arg(long, env = "DUPLA_BROKER_PASSWORD_FILE")]
    pub broker_password_file: Option<PathBuf>,
    /// PEM file of the CA that signed an `mqtts://` broker's certificate
    /// [default: the system's CA certificates].
    #[arg(long, env = "DUPLA_BROKER_CA")]
    pub broker_ca: Option<PathBuf>,
}

/// Resolved server settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// Address of the HTTP API (JSON under `/api/`, `/metrics`,
    /// `/healthz`); empty or `off` serves no HTTP. Plain HTTP: bind it
    /// to loopback or put a TLS proxy in front (docs/web.md).
    pub http: String,
    /// Address to advertise; `None` means the bound listen address.
    pub advertise: Option<String>,
    /// Manager address.
    pub manager: String,
    /// Data directory: `chunks/`, `tmp/`, `node_id`.
    pub data: PathBuf,
    /// Bytes of chunks this server accepts.
    pub capacity: u64,
    /// Cluster secret (Debug hides it).
    pub secret: dupla::config::SecretString,
    /// TLS off (`--insecure`): no enrolment, plain text on every link.
    pub insecure: bool,
    /// Heartbeat period (until the manager's reply sets it).
    pub heartbeat_interval: Duration,
    /// Bytes per second a repair copy into this server may take.
    pub repair_rate: u64,
    /// Bytes per second the background scrub re-hashes.
    pub scrub_rate: u64,
    /// Time between background scrub passes; `None` turns them off.
    pub scrub_interval: Option<Duration>,
    /// A sender silent this long is presumed gone and its transfer dropped.
    pub idle_timeout: Duration,
    /// Time between garbage-collection passes; zero turns them off.
    pub gc_interval: Duration,
    /// How long a chunk no file uses is kept: an unfinished upload can be
    /// resumed for that long, then its chunks are reclaimed.
    pub gc_grace: Duration,
    /// Faults to inject on the write path: tests only, never read from
    /// `node.toml` or flags (none by default).
    pub faults: crate::faults::FaultPlan,
    /// The MQTT broker that carries social messages between servers
    /// (`mqtt[s]://host:port`: Mosquitto, ActiveMQ...); `None` asks the
    /// manager, which names its own setting or its embedded broker.
    pub broker: Option<BrokerUrl>,
    /// User, password and CA for the broker (Debug hides the password).
    pub broker_auth: BrokerAuth,
}

impl Config {
    /// Flags and variables (`args`) over `node.toml` over the defaults.
    pub fn load(args: Args) -> Result<Config> {
        let (set, config_dir) =
            load_layered(&args, args.node.config.as_deref(), |s: &mut Args, base| {
                rebase_path(&mut s.node.data, base);
                rebase_path(&mut s.broker_password_file, base);
                rebase_path(&mut s.broker_ca, base);
            })?;
        let node = set.node.resolve(&config_dir, DEFAULT_LISTEN);
        let size =
            |value: Option<String>, default: &str| parse_size(value.as_deref().unwrap_or(default));
        let config = Config {
            http: set.http.unwrap_or_default(),
            listen: node.listen,
            advertise: set.advertise,
            manager: set.manager.unwrap_or_else(|| DEFAULT_MANAGER.into()),
            data: node.data,
            capacity: size(set.capacity, DEFAULT_CAPACITY)?,
            secret: node.secret,
            insecure: node.insecure,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            repair_rate: size(set.repair_rate, DEFAULT_REPAIR_RATE)?,
            scrub_rate: size(set.scrub_rate, DEFAULT_SCRUB_RATE)?,
            scrub_interval: match set.scrub_interval_secs {
                Some(0) => None,
                Some(secs) => Some(Duration::from_secs(secs)),
                None => Some(DEFAULT_SCRUB_INTERVAL),
            },
            idle_timeout: secs_setting(
                set.idle_timeout_secs,
                crate::pipeline::IDLE_TIMEOUT,
                "idle_timeout_secs",
            )?,
            gc_interval: Duration::from_secs(
                set.gc_interval_secs.unwrap_or(DEFAULT_GC_INTERVAL_SECS),
            ),
            gc_grace: Duration::from_secs(set.gc_grace_secs.unwrap_or(DEFAULT_GC_GRACE_SECS)),
            faults: Default::default(),
            broker: set.broker.as_deref().map(BrokerUrl::parse).transpose()?,
            broker_auth: BrokerAuth::load(
                set.broker_username,
                set.broker_password_file.as_deref(),
                set.broker_ca.as_deref(),
            )?,
        };
        config.validate()?;
        Ok(config)
    }

    /// A config for tests: free port, given dirs and secret, fast
    /// heartbeats, plain text (tests of TLS turn `insecure` off).
    pub fn for_test(data: PathBuf, manager: String, secret: &str) -> Config {
        Config {
            listen: "127.0.0.1:0".into(),
            http: "127.0.0.1:0".into(),
            advertise: None,
            manager,
            data,
            // Far more than any test stores, and less than the free space of
            // the disks tests run on, so that what servers report (their
            // capacity shrinks to the disk's room when that is less) stays
            // fixed while other tests fill and empty the disk.
            capacity: 4 << 30,
            secret: secret.into(),
            insecure: true,
            heartbeat_interval: Duration::from_millis(100),
            repair_rate: 1 << 30,
            scrub_rate: 1 << 30,
            scrub_interval: None,
            idle_timeout: crate::pipeline::IDLE_TIMEOUT,
            gc_interval: Duration::ZERO,
            gc_grace: Duration::from_secs(DEFAULT_GC_GRACE_SECS),
            faults: Default::default(),
            broker: None,
            broker_auth: BrokerAuth::default(),
        }
    }

    /// Refuse settings the server cannot run with.
    pub fn validate(&self) -> Result<()> {
        dupla::rpc::Secret::new(&self.secret)?.validate()?;
        if self.capacity == 0 {
            return Err(Error::InvalidInput("capacity must be above zero".into()));
        }
        if self.idle_timeout.is_zero() {
            return Err(Error::InvalidInput(
                "idle_timeout_secs must be above zero".into(),
            ));
        }
        if let (Some(broker), Some(ca)) = (&self.broker, &self.broker_auth.ca_path) {
            if !broker.tls {
                return Err(Error::InvalidInput(format!(
                    "broker_ca {} is set but broker {broker} is plain text: write mqtts:// for TLS",
                    ca.display()
                )));
            }
        }
        if self.repair_rate == 0 || self.scrub_rate == 0 {
            return Err(Error::InvalidInput(
                "repair_rate and scrub_rate must be above zero".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_node_toml_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:6000\"\ncapacity = \"2GiB\"\nsecret = \"s\"\n",
        )
        .unwrap();
        let config = Config::load(Args {
            node: NodeArgs {
                config: Some(file),
                listen: Some("127.0.0.1:7000".into()),
                ..NodeArgs::default()
            },
            ..Args::default()
        })
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:7000");
        assert_eq!(config.capacity, 2 << 30);
        assert_eq!(config.manager, DEFAULT_MANAGER);
        assert_eq!(config.secret, "s");
        assert!(!format!("{config:?}").contains("\"s\""), "{config:?}");
    }

    #[test]
    fn broker_settings_are_read_checked_and_hidden() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("password"), "hunter2\n").unwrap();
        let file = dir.path().join("node.toml");
        let load = |toml: &str| {
            std::fs::write(&file, format!("secret = \"s\"\n{toml}")).unwrap();
            Config::load(Args {
                node: NodeArgs {
                    config: Some(file.clone()),
                    ..NodeArgs::default()
                },
                ..Args::default()
            })
        };
        // Relative files are found beside node.toml.
        let config = load(
            "broker = \"mqtts://mq.example\"\nbroker_username = \"srv\"\nbroker_password_file = \"password\"\n",
        )
        .unwrap();
        let broker = config.broker.clone().unwrap();
        assert_eq!((broker.tls, broker.port), (true, 8883));
        assert_eq!(config.broker_auth.password.as_deref(), Some("hunter2"));
        assert!(!format!("{config:?}").contains("hunter2"), "{config:?}");
        let config = load("broker = \"mqtt://srv:hunter2@mq.example\"\n").unwrap();
        assert!(!format!("{config:?}").contains("hunter2"), "{config:?}");
        let args = Args {
            broker: Some("mqtt://srv:hunter2@h".into()),
            ..Args::default()
        };
        assert!(!format!("{args:?}").contains("hunter2"), "{args:?}");
        for (toml, named) in [
            ("broker = \"mqtt://h:port\"\n", "port"),
            ("broker = \"http://h\"\n", "scheme"),
            (
                "broker_username = \"u\"\nbroker_password_file = \"nope\"\n",
                "broker_password_file",
            ),
            ("broker_ca = \"nope.pem\"\n", "broker_ca"),
            ("broker_ca = \"password\"\n", "broker_ca"),
        ] {
            let err = load(toml).unwrap_err().to_string();
            assert!(err.contains(named), "{toml}: {err}");
        }
    }

    #[test]
    fn unknown_keys_in_node_toml_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "capacty = \"2GiB\"\n").unwrap();
        let err = Config::load(Args {
            node: NodeArgs {
                config: Some(file),
                ..NodeArgs::default()
            },
            ..Args::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("capacty"), "{err}");
    }
}
