//! The manager's settings: `node.toml` in its directory, overridden by flags
//! and `DUPLA_*` variables.

use clap::Parser;
use dupla::config::{load_layered, rebase_path, secs_setting, NodeArgs};
use dupla::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Default listen address of the manager.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50050";
/// Servers are expected to heartbeat this often.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A server silent this long is `suspect`: no new placements, reads go elsewhere.
pub const DEFAULT_SUSPECT_AFTER: Duration = Duration::from_secs(3);
/// A server silent this long is `down`.
pub const DEFAULT_DOWN_AFTER: Duration = Duration::from_secs(30);
/// Login tokens live a day: long enough that a user logs in once per
/// working day, short enough that a leaked token stops working.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Sessions one storage server takes before login prefers another one.
pub const DEFAULT_MAX_SESSIONS: usize = 10;
/// Default idle time after which a session stops counting: 5 minutes.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(300);
/// Where the embedded MQTT broker listens when no `broker` is configured:
/// loopback (it has no authentication) on a port of the system's choosing
/// (servers ask the manager where it is, so several clusters on one
/// machine never collide).
pub const DEFAULT_BROKER_LISTEN: &str = "127.0.0.1:0";
/// How long a launched server has to send its first heartbeat before the
/// launch counts as failed (a cold start of `dupla-server` takes well
/// under a second; a cloud VM may take a minute: raise it for those).
pub const DEFAULT_LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// A launched server with no session for this long is retired.
pub const DEFAULT_IDLE_RETIRE: Duration = Duration::from_secs(600);
/// Servers up below which none is retired.
pub const DEFAULT_MIN_SERVERS: usize = 1;
/// Launched servers alive at once, at most: a runaway of logins (or of
/// `dupla bench chat`) cannot start servers without bound.
pub const DEFAULT_MAX_LAUNCHED: usize = 8;

/// How the manager starts a storage server when every one is full.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LauncherKind {
    /// Never launch (the default): logins overfill or are refused.
    #[default]
    None,
    /// Start `dupla-server` on this machine from a template node directory.
    Local,
    /// Run the operator's `launch_command` with `launch ID` / `retire ID`.
    Command,
}

impl std::str::FromStr for LauncherKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(LauncherKind::None),
            "local" => Ok(LauncherKind::Local),
            "command" => Ok(LauncherKind::Command),
            other => Err(format!(
                "launcher {other:?}: expected \"none\", \"local\" or \"command\""
            )),
        }
    }
}

impl LauncherKind {
    /// The name node.toml and `dupla status` use.
    pub fn name(&self) -> &'static str {
        match self {
            LauncherKind::None => "none",
            LauncherKind::Local => "local",
            LauncherKind::Command => "command",
        }
    }
}

/// Elastic application servers: launching when every server is full,
/// retiring launched servers that stay idle (docs/social.md, "Elastic
/// application servers").
#[derive(Clone, Debug)]
pub struct Elastic {
    /// Which launcher; `None` turns elasticity off.
    pub launcher: LauncherKind,
    /// `local`: node directory whose node.toml a launched server copies
    /// (its capacity, rates, broker...); listen, data, manager and secret
    /// are the launcher's own.
    pub launch_template: Option<PathBuf>,
    /// `local`: the `dupla-server` binary; default: beside the manager's
    /// own executable.
    pub server_binary: Option<PathBuf>,
    /// `command`: the operator's program, run as `PROGRAM launch ID` and
    /// `PROGRAM retire ID`.
    pub launch_command: Option<PathBuf>,
    /// How long a launch may take to its first heartbeat.
    pub launch_timeout: Duration,
    /// A launched server without sessions this long is drained and retired.
    pub idle_retire: Duration,
    /// Never retire below this many servers up.
    pub min_servers: usize,
    /// Launched servers alive at once, at most.
    pub max_launched: usize,
}

impl Default for Elastic {
    fn default() -> Self {
        Elastic {
            launcher: LauncherKind::None,
            launch_template: None,
            server_binary: None,
            launch_command: None,
            launch_timeout: DEFAULT_LAUNCH_TIMEOUT,
            idle_retire: DEFAULT_IDLE_RETIRE,
            min_servers: DEFAULT_MIN_SERVERS,
            max_launched: DEFAULT_MAX_LAUNCHED,
        }
    }
}

/// Command line of `dupla-manager`: its settings, each a flag, a `DUPLA_*`
/// variable and a `node.toml` key of the same name (the positional HOST
/// PORT are flags only).
#[derive(Parser, Serialize, Deserialize, Debug, Default, Clone)]
#[command(
    name = "dupla-manager",
    version,
    about = "Dupla manager: membership, placement, catalog"
)]
pub struct Args {
    /// Config file, listen address, database directory, cluster secret, TLS.
    #[command(flatten)]
    #[serde(flatten)]
    pub node: NodeArgs,
    /// Address of the HTTP API, console and `/metrics` (`127.0.0.1:8080`
    /// in nodes/); empty or `off` turns HTTP off [default: off].
    #[arg(long, env = "DUPLA_HTTP")]
    pub http: Option<String>,
    /// Host to listen on, as the assignment's `./server HOST PORT`: with
    /// PORT, the same as `--listen HOST:PORT`.
    #[arg(requires = "port", conflicts_with = "listen")]
    #[serde(skip)]
    pub host: Option<String>,
    /// Port to listen on (with HOST).
    #[arg(requires = "host")]
    #[serde(skip)]
    pub port: Option<u16>,
    /// The MQTT broker social messages travel through, `mqtt://host:port`
    /// or `mqtts://host:port` (TLS), optionally with `user:password@`
    /// (Mosquitto, ActiveMQ...); servers without their own `broker` use it.
    /// Unset: the manager runs its embedded broker on `--broker-listen`.
    #[arg(long, env = "DUPLA_BROKER")]
    pub broker: Option<dupla::broker::UrlSetting>,
    /// Where the embedded MQTT broker listens when no broker is configured
    /// [default: 127.0.0.1:0, a free loopback port the servers learn from
    /// the manager].
    #[arg(long, env = "DUPLA_BROKER_LISTEN")]
    pub broker_listen: Option<String>,
    /// Seconds of heartbeat silence before a server is suspect.
    #[arg(long, env = "DUPLA_SUSPECT_AFTER_SECS")]
    pub suspect_after_secs: Option<f64>,
    /// Seconds of heartbeat silence before a server is down.
    #[arg(long, env = "DUPLA_DOWN_AFTER_SECS")]
    pub down_after_secs: Option<f64>,
    /// Seconds a login token stays valid [default: 86400, a day].
    #[arg(long, env = "DUPLA_TOKEN_TTL_SECS")]
    pub token_ttl_secs: Option<f64>,
    /// Sessions per storage server before login prefers another [default: 10].
    #[arg(long, env = "DUPLA_MAX_SESSIONS")]
    pub max_sessions: Option<usize>,
    /// Seconds without a call after which a session stops counting toward
    /// its server's load [default: 300].
    #[arg(long, env = "DUPLA_SESSION_IDLE_SECS")]
    pub session_idle_secs: Option<f64>,
    /// When every server already holds `max_sessions` sessions, refuse
    /// logins (RESOURCE_EXHAUSTED) instead of overfilling the least loaded
    /// server [default: false, overfill].
    #[arg(long, env = "DUPLA_REFUSE_OVER_CAPACITY", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub refuse_over_capacity: Option<bool>,
    /// How to start a storage server when every one is full: "none"
    /// (the default), "local" or "command".
    #[arg(long, env = "DUPLA_LAUNCHER")]
    pub launcher: Option<LauncherKind>,
    /// `local` launcher: the node directory launched servers copy their
    /// node.toml from.
    #[arg(long, env = "DUPLA_LAUNCH_TEMPLATE")]
    pub launch_template: Option<PathBuf>,
    /// `local` launcher: the `dupla-server` binary [default: beside the
    /// manager's own executable].
    #[arg(long, env = "DUPLA_SERVER_BINARY")]
    pub server_binary: Option<PathBuf>,
    /// `command` launcher: the program run as `PROGRAM launch|retire ID`.
    #[arg(long, env = "DUPLA_LAUNCH_COMMAND")]
    pub launch_command: Option<PathBuf>,
    /// Seconds a launched server has to send its first heartbeat before
    /// the launch counts as failed [default: 30].
    #[arg(long, env = "DUPLA_LAUNCH_TIMEOUT_SECS")]
    pub launch_timeout_secs: Option<f64>,
    /// Seconds a launched server may stay without sessions before it is
    /// drained and retired [default: 600].
    #[arg(long, env = "DUPLA_IDLE_RETIRE_SECS")]
    pub idle_retire_secs: Option<f64>,
    /// Servers up below which none is retired [default: 1].
    #[arg(long, env = "DUPLA_MIN_SERVERS")]
    pub min_servers: Option<usize>,
    /// Launched servers alive at once, at most [default: 8].
    #[arg(long, env = "DUPLA_MAX_LAUNCHED")]
    pub max_launched: Option<usize>,
    /// Login reserved for the administrator: `Register` refuses it (only
    /// `dupla-manager admin create` makes it, and grants the role).
    #[arg(long, env = "DUPLA_ADMIN")]
    pub admin: Option<String>,
    /// Default bytes each user's kept file versions may take; 0: unlimited
    /// [default: 0]. An admin sets one user's with `dupla quota LOGIN` (`Manager/SetQuota`).
    #[arg(long, env = "DUPLA_QUOTA_BYTES")]
    pub quota_bytes: Option<u64>,
    /// Default file versions each user may keep; 0: unlimited [default: 0].
    #[arg(long, env = "DUPLA_QUOTA_FILES")]
    pub quota_files: Option<u64>,
    /// Host names or addresses others reach the manager at, for its TLS
    /// certificate (besides the listen host and loopback), comma-separated.
    #[arg(long = "tls-names", env = "DUPLA_TLS_NAMES", value_delimiter = ',')]
    pub tls_names: Option<Vec<String>>,
}

/// How much one user may keep: bytes (one copy) and file versions, each
/// 0 for unlimited. Checked when an upload is placed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Quota {
    /// Bytes of kept file versions; 0: unlimited.
    pub bytes: u64,
    /// Kept file versions; 0: unlimited.
    pub files: u64,
}

/// Resolved manager settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:0` picks a free port, for tests).
    pub listen: String,
    /// Address of the HTTP API (JSON under `/api/`, `/metrics`,
    /// `/healthz`, and the web console at `/`); empty or `off` serves no HTTP. Plain HTTP: bind it
    /// to loopback or put a TLS proxy in front (docs/web.md).
    pub http: String,
    /// Directory holding the sled database.
    pub data: PathBuf,
    /// Cluster secret every internal call must carry (Debug hides it).
    pub secret: dupla::config::SecretString,
    /// TLS off (`--insecure`): plain text on every link, said in the logs
    /// and in `dupla status`.
    pub insecure: bool,
    /// Heartbeat period asked of the servers.
    pub heartbeat_interval: Duration,
    /// Silence after which a server is suspect.
    pub suspect_after: Duration,
    /// Silence after which a server is down.
    pub down_after: Duration,
    /// How long a login token stays valid. Zero makes every token expire at
    /// once (tests use it to exercise expiry without waiting).
    pub token_ttl: Duration,
    /// Sessions a storage server takes before login sends users elsewhere
    /// (when every server is full, the least loaded one takes more).
    pub max_sessions: usize,
    /// A session whose client made no call for this long (and holds no
    /// open chat) is disconnected: it no longer counts toward its server's
    /// `max_sessions`. The token itself stays valid until it expires.
    pub session_idle: Duration,
    /// When every live server already has `max_sessions` sessions: refuse
    /// the login with a clear error (true), or send the user to the least
    /// loaded server anyway (false, the default: nothing can launch
    /// another server yet, and `dupla bench chat` logs in hundreds).
    pub refuse_over_capacity: bool,
    /// A login reserved for the administrator: `Register` refuses it, so
    /// nobody takes it before the operator's `dupla-manager admin create`.
    /// It grants nothing by itself.
    pub admin: Option<String>,
    /// Default quota of each user (an admin may set one user's otherwise).
    pub quota: Quota,
    /// Limits of the chat rooms: queue sizes, flood control, clients.
    pub chat: ChatLimits,
    /// Names the manager's TLS certificate carries besides its listen host
    /// and loopback (needed when it listens on 0.0.0.0).
    pub tls_names: Vec<String>,
    /// The MQTT broker social messages travel through between servers
    /// (`mqtt[s]://host:port`), named to servers as written (a password in
    /// it included; Debug hides it); `None` runs the embedded one on
    /// `broker_listen`, so a one-machine cluster needs nothing installed.
    pub broker: Option<dupla::broker::BrokerUrl>,
    /// Listen address of the embedded broker.
    pub broker_listen: String,
    /// Launching and retiring storage servers.
    pub elastic: Elastic,
}

/// Limits of the chat rooms. Not in node.toml: the defaults suit any
/// deployment; tests shrink them to provoke lag and throttling quickly.
#[derive(Clone, Debug)]
pub struct ChatLimits {
    /// Events a room buffers for its slowest member; one that falls further
    /// behind is told and disconnected, so a slow client never slows the room.
    pub room_capacity: usize,
    /// Events queued for one client on their way to its connection (answers,
    /// private messages); a full queue means the client stopped reading.
    pub client_queue: usize,
    /// How long the server waits for a client to take an event before
    /// calling it dead or stuck and disconnecting it.
    pub slow_client_timeout: Duration,
    /// Lines per second one client may send, sustained (flood control).
    pub lines_per_sec: f64,
    /// Lines one client may send in a burst above the sustained rate.
    pub burst: f64,
    /// Chat connections the manager serves at once.
    pub max_clients: usize,
}

impl Default for ChatLimits {
    fn default() -> Self {
        ChatLimits {
            room_capacity: 1024,
            client_queue: 256,
            slow_client_timeout: Duration::from_secs(10),
            lines_per_sec: dupla::chat::rate::LINES_PER_SEC,
            burst: dupla::chat::rate::LINE_BURST,
            max_clients: 4096,
        }
    }
}

impl Config {
    /// Flags and variables (`args`) over `node.toml` over the defaults.
    pub fn load(mut args: Args) -> Result<Config> {
        if let (Some(host), Some(port)) = (&args.host, args.port) {
            args.node.listen = Some(format!("{host}:{port}"));
        }
        let (set, config_dir) =
            load_layered(&args, args.node.config.as_deref(), |s: &mut Args, base| {
                rebase_path(&mut s.node.data, base);
                rebase_path(&mut s.launch_template, base);
                rebase_path(&mut s.server_binary, base);
            })?;
        let node = set.node.resolve(&config_dir, DEFAULT_LISTEN);
        let config = Config {
            http: set.http.unwrap_or_default(),
            listen: node.listen,
            data: node.data,
            secret: node.secret,
            insecure: node.insecure,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            suspect_after: secs_setting(
                set.suspect_after_secs,
                DEFAULT_SUSPECT_AFTER,
                "suspect_after_secs",
            )?,
            down_after: secs_setting(set.down_after_secs, DEFAULT_DOWN_AFTER, "down_after_secs")?,
            token_ttl: secs_setting(set.token_ttl_secs, DEFAULT_TOKEN_TTL, "token_ttl_secs")?,
            max_sessions: set.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS),
            session_idle: secs_setting(
                set.session_idle_secs,
                DEFAULT_SESSION_IDLE,
                "session_idle_secs",
            )?,
            refuse_over_capacity: set.refuse_over_capacity.unwrap_or(false),
            admin: set.admin,
            quota: Quota {
                bytes: set.quota_bytes.unwrap_or(0),
                files: set.quota_files.unwrap_or(0),
            },
            chat: ChatLimits::default(),
            tls_names: set.tls_names.unwrap_or_default(),
            broker: set
                .broker
                .as_deref()
                .map(dupla::broker::BrokerUrl::parse)
                .transpose()?,
            broker_listen: set
                .broker_listen
                .unwrap_or_else(|| DEFAULT_BROKER_LISTEN.into()),
            elastic: Elastic {
                launcher: set.launcher.unwrap_or_default(),
                launch_template: set.launch_template,
                server_binary: set.server_binary,
                launch_command: set.launch_command,
                launch_timeout: secs_setting(
                    set.launch_timeout_secs,
                    DEFAULT_LAUNCH_TIMEOUT,
                    "launch_timeout_secs",
                )?,
                idle_retire: secs_setting(
                    set.idle_retire_secs,
                    DEFAULT_IDLE_RETIRE,
                    "idle_retire_secs",
                )?,
                min_servers: set.min_servers.unwrap_or(DEFAULT_MIN_SERVERS),
                max_launched: set.max_launched.unwrap_or(DEFAULT_MAX_LAUNCHED),
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// A config for tests: free port, given data dir and secret, quick
    /// timings, plain text (tests of TLS turn `insecure` off).
    pub fn for_test(data: PathBuf, secret: &str) -> Config {
        Config {
            listen: "127.0.0.1:0".into(),
            http: "127.0.0.1:0".into(),
            data,
            secret: secret.into(),
            insecure: true,
            heartbeat_interval: Duration::from_millis(200),
            suspect_after: Duration::from_millis(1500),
            down_after: Duration::from_secs(5),
            token_ttl: DEFAULT_TOKEN_TTL,
            max_sessions: DEFAULT_MAX_SESSIONS,
            session_idle: DEFAULT_SESSION_IDLE,
            refuse_over_capacity: false,
            admin: None,
            quota: Quota::default(),
            chat: ChatLimits::default(),
            tls_names: Vec::new(),
            broker: None,
            broker_listen: "127.0.0.1:0".into(),
            elastic: Elastic::default(),
        }
    }

    /// Refuse settings the manager cannot run with.
    pub fn validate(&self) -> Result<()> {
        dupla::rpc::Secret::new(&self.secret)?.validate()?;
        if self.suspect_after > self.down_after {
            return Err(Error::InvalidInput(
                "suspect_after_secs must not exceed down_after_secs".into(),
            ));
        }
        if self.token_ttl.is_zero() {
            return Err(Error::InvalidInput(
                "token_ttl_secs must be positive: a zero lifetime makes every login useless".into(),
            ));
        }
        match self.elastic.launcher {
            LauncherKind::Local if self.elastic.launch_template.is_none() => {
                return Err(Error::InvalidInput(
                    "launcher = \"local\" needs launch_template, the node directory launched servers copy (e.g. \"../server-1\")".into(),
                ))
            }
            LauncherKind::Command if self.elastic.launch_command.is_none() => {
                return Err(Error::InvalidInput(
                    "launcher = \"command\" needs launch_command, the program run as `PROGRAM launch ID` and `PROGRAM retire ID`".into(),
                ))
            }
            _ => {}
        }
        if self.max_sessions == 0 {
            return Err(Error::InvalidInput(
                "max_sessions must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "secret = \"s\"\n").unwrap();
        let mut argv = vec!["dupla-manager", "--config", file.to_str().unwrap()];
        argv.extend_from_slice(args);
        Config::load(Args::try_parse_from(argv).map_err(|e| Error::InvalidInput(e.to_string()))?)
    }

    #[test]
    fn host_port_positional_is_listen() {
        let config = load(&["0.0.0.0", "8888"]).unwrap();
        assert_eq!(config.listen, "0.0.0.0:8888");
        assert!(load(&["0.0.0.0"]).is_err(), "a host needs a port");
        assert!(load(&["0.0.0.0", "8888", "--listen", "127.0.0.1:1"]).is_err());
        assert_eq!(load(&[]).unwrap().listen, DEFAULT_LISTEN);
    }

    #[test]
    fn a_duration_flag_that_is_not_a_number_is_refused_not_ignored() {
        for bad in ["nan", "inf", "-1"] {
            let flag = format!("--down-after-secs={bad}");
            let err = load(&[&flag]).unwrap_err().to_string();
            assert!(err.contains("down_after_secs"), "{bad}: {err}");
        }
    }

    #[test]
    fn broker_and_over_capacity_settings() {
        let config = load(&[]).unwrap();
        assert_eq!(
            (config.broker, config.broker_listen.as_str()),
            (None, DEFAULT_BROKER_LISTEN)
        );
        assert!(!config.refuse_over_capacity);
        let config = load(&["--broker", "mqtt://h:1883", "--refuse-over-capacity"]).unwrap();
        assert_eq!(config.broker.as_ref().unwrap().expose(), "mqtt://h:1883");
        assert!(config.refuse_over_capacity, "a bare flag turns it on");
        let tls = load(&["--broker", "mqtts://srv:hunter2@h"]).unwrap();
        assert_eq!(tls.broker.as_ref().unwrap().port, 8883);
        assert!(!format!("{tls:?}").contains("hunter2"), "{tls:?}");
        let err = load(&["--broker", "mqtts://srv:hunter2@h:x"]).unwrap_err();
        assert!(err.to_string().contains("bad port"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let config = load(&["--refuse-over-capacity=false", "--insecure", "7.0.0.1", "9"]);
        let config = config.unwrap();
        assert!(!config.refuse_over_capacity);
        assert!(
            config.insecure,
            "--insecure takes no value: the next word is HOST"
        );
        assert_eq!(config.listen, "7.0.0.1:9");
    }

    #[test]
    fn elastic_settings() {
        let config = load(&[]).unwrap();
        assert_eq!(
            config.elastic.launcher,
            LauncherKind::None,
            "off by default"
        );
        assert_eq!(config.elastic.idle_retire, DEFAULT_IDLE_RETIRE);
        let config = load(&[
            "--launcher",
            "local",
            "--launch-template",
            "../server-1",
            "--idle-retire-secs",
            "2.5",
            "--min-servers",
            "3",
        ])
        .unwrap();
        assert_eq!(config.elastic.launcher, LauncherKind::Local);
        assert_eq!(config.elastic.idle_retire, Duration::from_millis(2500));
        assert_eq!(config.elastic.min_servers, 3);
        let missing = load(&["--launcher", "local"]).unwrap_err().to_string();
        assert!(missing.contains("launch_template"), "{missing}");
        let missing = load(&["--launcher", "command"]).unwrap_err().to_string();
        assert!(missing.contains("launch_command"), "{missing}");
        assert!(load(&["--launcher", "cloud"]).is_err());
    }
}
