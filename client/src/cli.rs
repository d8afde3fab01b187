//! The command line: global flags (where the cluster is, the client root,
//! JSON output) and one subcommand per user action (files, cluster, account,
//! chat). Parsing only; the
//! commands themselves live in their own modules and run from [`crate::run`].

use crate::chat_bench::cpu::{parse_watch, Watched};
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;

/// Default size of each generated file in `dupla bench`.
pub const DEFAULT_BENCH_SIZE: &str = "1GiB";

/// Default number of clock samples for `dupla time`: enough that one of
/// them usually sees a quiet network, few enough to finish at once.
pub const DEFAULT_TIME_SAMPLES: usize = 8;

/// `dupla`: back files up to a Dupla cluster and get them back.
#[derive(Debug, Parser)]
#[command(
    name = "dupla",
    version,
    about = "Back files up to a Dupla cluster, restore them, and inspect the cluster",
    long_about = "Back files up to a Dupla cluster, restore them, and inspect the cluster.\n\n\
                  With no command in a terminal, dupla opens an interactive menu."
)]
pub struct Cli {
    /// Flags that apply to every command.
    #[command(flatten)]
    pub global: GlobalArgs,

    /// What to do; none opens the interactive menu (in a terminal).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags shared by every command. Each one beats its environment variable,
/// which beats the key of the same name in node.toml, which beats the default.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// Where the cluster is and where files live (also node.toml keys).
    #[command(flatten)]
    pub settings: crate::config::Settings,

    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,

    /// Client config file [default: ./node.toml]
    #[arg(long, value_name = "PATH", env = "DUPLA_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

/// One user action.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Back up files and directories from the client root (each PATH is
    /// relative to the root) and record a snapshot of them; unchanged files
    /// are not read again and changed ones send only their new chunks
    Backup {
        /// Files and directories to back up (directories recursively)
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Ask the cluster what it already holds of each file and send only
        /// the rest (automatic after an interrupted run of the same backup)
        #[arg(long)]
        resume: bool,
        /// Skip paths matching PATTERN (gitignore-style glob; repeatable)
        #[arg(long = "exclude", value_name = "PATTERN")]
        excludes: Vec<String>,
        /// Skip paths matching the patterns in FILE (one per line; repeatable)
        #[arg(long = "exclude-file", value_name = "FILE")]
        exclude_files: Vec<PathBuf>,
        /// Label the snapshot with TAG (repeatable)
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Show what would be backed up without sending anything
        #[arg(long)]
        dry_run: bool,
    },
    /// Restore a backed-up file (to ROOT/NAME unless -o is given), or with
    /// --target a whole snapshot or subtree into a directory
    Restore {
        /// Catalog name (or, with --target, paths inside the snapshot; none
        /// restores all of it)
        #[arg(value_name = "NAME")]
        names: Vec<String>,
        /// Where to write the file; an existing directory receives NAME's file name
        #[arg(
            short = 'o',
            long = "output",
            value_name = "PATH",
            conflicts_with = "target"
        )]
        output: Option<PathBuf>,
        /// The snapshot to restore from (an id from `dupla snapshots`, its
        /// first digits, or `latest`); without it, the latest version of NAME
        #[arg(long, value_name = "ID")]
        snapshot: Option<String>,
        /// Restore the snapshot's tree (or the given paths of it) into DIR,
        /// inside the client root
        #[arg(long, value_name = "DIR", requires = "snapshot")]
        target: Option<PathBuf>,
    },
    /// List your snapshots, oldest first
    Snapshots {
        /// Only snapshots of exactly these paths (repeatable)
        #[arg(long = "path", value_name = "PATH")]
        paths: Vec<String>,
    },
    /// List the versions of a file across your snapshots
    Versions {
        /// The file's path, as `dupla ls` shows it
        path: String,
    },
    /// Search file paths across your snapshots
    Find {
        /// Glob (* and ?) on the path or its last component, or a substring
        pattern: String,
        /// Only files larger than SIZE (e.g. 10MiB)
        #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
        larger: Option<u64>,
        /// Only files smaller than SIZE
        #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
        smaller: Option<u64>,
        /// Only entries modified after TIME: YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS (UTC), or an age like 7d, 12h, 30m
        #[arg(long, value_name = "TIME", value_parser = crate::find::parse_time_arg)]
        newer: Option<i64>,
        /// Only entries modified before TIME
        #[arg(long, value_name = "TIME", value_parser = crate::find::parse_time_arg)]
        older: Option<i64>,
    },
    /// Remove snapshots, by id or by a keep policy; their data goes once no
    /// kept snapshot uses it
    Forget(ForgetArgs),
    /// List backed-up files whose name contains PATTERN (or matches it as a glob)
    #[command(alias = "list")]
    Ls {
        /// Substring, or glob with * and ?; empty lists everything
        #[arg(default_value = "")]
        pattern: String,
    },
    /// Remove a file and all its versions from the catalog
    ///
    /// Snapshots that held the file can no longer restore it; `dupla forget`
    /// removes snapshots instead.
    #[command(alias = "remove")]
    Rm {
        /// Catalog name, as `dupla ls` shows it
        name: String,
    },
    /// Show every storage server and the catalog totals
    Status,
    /// The storage servers (as status); admins launch, drain and retire
    /// the manager's own servers by hand
    Servers {
        /// What to do; none shows the servers
        #[command(subcommand)]
        action: Option<ServersAction>,
    },
    /// Have every live server re-hash all its chunks now, and wait; corrupt
    /// chunks are quarantined and re-replicated from their other copy
    Scrub,
    /// Say hello: each NAME comes back as "Hola NAME"
    Hello {
        /// Names to greet
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Compare this machine's clock with the manager's (Cristian's algorithm)
    Time {
        /// Round trips to measure; the fastest one is used
        #[arg(long, default_value_t = DEFAULT_TIME_SAMPLES, value_parser = clap::value_parser!(usize))]
        samples: usize,
    },
    /// Measure upload and download throughput with generated files;
    /// `dupla bench chat` measures the chat instead
    #[command(args_conflicts_with_subcommands = true)]
    Bench(BenchArgs),
    /// Create an account (asks for what the flags do not give)
    Register(RegisterArgs),
    /// Log in: keep a token in ROOT/.dupla/session.json so later commands need no password
    Login {
        /// Your login
        user: String,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// Log out: revoke the token and forget it
    Logout,
    /// Delete your account (asks for the password again)
    Unregister {
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// Show who is logged in here, until when, and the assigned server
    Whoami,
    /// User administration (admins): list accounts, show one, or delete one
    Users(UsersArgs),
    /// Your storage use against your quota; admins: anyone's, and set one
    Quota(QuotaArgs),
    /// Chat: rooms and private messages (commands start with #; #help lists them)
    Chat,
    /// The social network's scripted client (manager at HOST PORT): one
    /// command a line on stdin (register, login, invite, post, send,
    /// create-group...; docs/social.md), one reply a line on stdout
    Shell {
        /// The manager's host
        host: String,
        /// The manager's port
        port: u16,
    },
}

/// Options of `dupla forget`.
#[derive(Debug, Clone, Default, Args)]
pub struct ForgetArgs {
    /// Snapshots to remove (ids from `dupla snapshots`, or their first digits)
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N days that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// Keep the newest snapshot of each of the last N weeks that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// Keep the newest snapshot of each of the last N months that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// Only show what would be kept and removed
    #[arg(long)]
    pub dry_run: bool,
}

/// Options of `dupla register`. Missing fields are asked for on a terminal.
#[derive(Debug, Clone, Default, Args)]
pub struct RegisterArgs {
    /// Login: 3 to 32 of a-z, 0-9, _ . -
    #[arg(long)]
    pub login: Option<String>,
    /// First names
    #[arg(long, value_name = "NAMES")]
    pub first_names: Option<String>,
    /// Last names
    #[arg(long, value_name = "NAMES")]
    pub last_names: Option<String>,
    /// Age in years (1 to 150)
    #[arg(long, value_parser = crate::account::parse_age)]
    pub age: Option<u32>,
    /// Gender (free text)
    #[arg(long)]
    pub gender: Option<String>,
    /// Read the password from the first line of standard input
    #[arg(long)]
    pub password_stdin: bool,
}

/// The admin's actions of `dupla servers`.
#[derive(Debug, Clone, Subcommand)]
pub enum ServersAction {
    /// Launch a storage server now with the manager's launcher
    Launch,
    /// Drain a server the manager launched: no new sessions or placements,
    /// every file it holds copied so two other servers hold it
    Drain {
        /// The server's id, as `dupla status --json` shows it
        id: String,
    },
    /// Drain a server the manager launched, then stop it and forget it
    Retire {
        /// The server's id
        id: String,
    },
}

/// Options of `dupla users`.
#[derive(Debug, Clone, Default, Args)]
pub struct UsersArgs {
    /// One account to show (or delete with --delete); none lists them all
    pub login: Option<String>,
    /// Delete the named account
    #[arg(long)]
    pub delete: bool,
}

/// Options of `dupla quota`.
#[derive(Debug, Clone, Default, Args)]
pub struct QuotaArgs {
    /// Whose quota (admins); none: yours
    pub login: Option<String>,
    /// Set the bytes their kept file versions may take (e.g. 10GiB; 0: no limit)
    #[arg(long, value_parser = parse_size_arg)]
    pub bytes: Option<u64>,
    /// Set how many file versions they may keep (0: no limit)
    #[arg(long)]
    pub files: Option<u64>,
    /// Back to the manager's default quota
    #[arg(long, conflicts_with_all = ["bytes", "files"])]
    pub reset: bool,
}

/// Options of `dupla bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What to measure instead of file transfers
    #[command(subcommand)]
    pub target: Option<BenchTarget>,
    /// Size of each generated file (e.g. 1GiB, 100MB, 4096)
    #[arg(long, default_value = DEFAULT_BENCH_SIZE, value_parser = parse_size_arg)]
    pub size: u64,
    /// Number of files
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Transfers running at the same time
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Also download (and verify) every file after uploading
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub download: bool,
}

/// What `dupla bench` measures, when not file transfers.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchTarget {
    /// Chat load: N clients in one room, each message timed from send to receipt
    Chat(ChatBenchArgs),
    /// Social fan-out: N users on their assigned servers send direct or group
    /// messages through the broker, each delivery timed from send to receipt
    Social(SocialBenchArgs),
}

/// What `dupla bench social` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FanoutMode {
    /// Each user sends direct messages to the next one (a ring of friends):
    /// one delivery per message
    Direct,
    /// Each user sends to one group holding every user: a delivery to each
    /// member per message, the sender included
    Group,
}

/// Options of `dupla bench social`.
#[derive(Debug, Clone, Args)]
pub struct SocialBenchArgs {
    /// Direct messages (one delivery each) or group messages (one per member)
    #[arg(long, value_enum, default_value_t = FanoutMode::Group)]
    pub mode: FanoutMode,
    /// Users, each a real account with its own stream on its assigned server
    #[arg(long, default_value_t = DEFAULT_CHAT_CLIENTS,
          value_parser = clap::value_parser!(u32).range(2..=i64::from(MAX_CHAT_CLIENTS)))]
    pub clients: u32,
    /// Messages per second sent by all users together (not per user)
    #[arg(long, default_value_t = DEFAULT_CHAT_RATE,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: u32,
    /// Length of the sending phase, in seconds
    #[arg(long, default_value_t = DEFAULT_CHAT_SECONDS,
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub seconds: u32,
    /// Accounts are PREFIX000, PREFIX001...: registered on first use, then reused;
    /// their friendships and the group PREFIX-all are kept too
    #[arg(long, default_value = DEFAULT_SOCIAL_PREFIX, value_parser = parse_prefix)]
    pub prefix: String,
    /// Also report the CPU time of this process while messages flow
    /// (NAME=PID, repeatable; Linux)
    #[arg(long, value_name = "NAME=PID", value_parser = parse_watch)]
    pub watch: Vec<Watched>,
}

/// Default prefix of the accounts `dupla bench social` uses (`fan000`...).
pub const DEFAULT_SOCIAL_PREFIX: &str = "fan";

impl Default for SocialBenchArgs {
    fn default() -> Self {
        SocialBenchArgs {
            mode: FanoutMode::Group,
            clients: DEFAULT_CHAT_CLIENTS,
            rate: DEFAULT_CHAT_RATE,
            seconds: DEFAULT_CHAT_SECONDS,
            prefix: DEFAULT_SOCIAL_PREFIX.into(),
            watch: Vec::new(),
        }
    }
}

/// Default number of chat clients in `dupla bench chat`.
pub const DEFAULT_CHAT_CLIENTS: u32 = 200;
/// Default total message rate of `dupla bench chat`, messages per second.
pub const DEFAULT_CHAT_RATE: u32 = 200;
/// Default length of the sending phase of `dupla bench chat`, seconds.
pub const DEFAULT_CHAT_SECONDS: u32 = 10;
/// Default prefix of the accounts `dupla bench chat` uses (`bench000`...).
pub const DEFAULT_CHAT_PREFIX: &str = "bench";
/// Most chat clients one benchmark opens: the manager's default limit of
/// chat connections.
pub const MAX_CHAT_CLIENTS: u32 = 4096;
/// Longest account prefix: room for four digits in a 32-character login.
pub const MAX_CHAT_PREFIX: usize = 28;

/// Options of `dupla bench chat`.
#[derive(Debug, Clone, Args)]
pub struct ChatBenchArgs {
    /// Chat clients, each a real account with its own connection
    #[arg(long, default_value_t = DEFAULT_CHAT_CLIENTS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CHAT_CLIENTS)))]
    pub clients: u32,
    /// Messages per second sent by all clients together (not per client);
    /// every message is delivered to every client, so deliveries per second
    /// are RATE x CLIENTS
    #[arg(long, default_value_t = DEFAULT_CHAT_RATE,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: u32,
    /// Length of the sending phase, in seconds
    #[arg(long, default_value_t = DEFAULT_CHAT_SECONDS,
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub seconds: u32,
    /// Accounts are PREFIX000, PREFIX001...: registered on first use, then reused
    #[arg(long, default_value = DEFAULT_CHAT_PREFIX, value_parser = parse_prefix)]
    pub prefix: String,
    /// Also report the CPU time of this process while messages flow
    /// (NAME=PID, repeatable; Linux)
    #[arg(long, value_name = "NAME=PID", value_parser = parse_watch)]
    pub watch: Vec<Watched>,
}

impl Default for ChatBenchArgs {
    fn default() -> Self {
        ChatBenchArgs {
            clients: DEFAULT_CHAT_CLIENTS,
            rate: DEFAULT_CHAT_RATE,
            seconds: DEFAULT_CHAT_SECONDS,
            prefix: DEFAULT_CHAT_PREFIX.into(),
            watch: Vec::new(),
        }
    }
}

/// An account prefix: 1 to 28 of `a-z 0-9 _ . -`, so that the prefix plus
/// the client number is a valid login.
pub fn parse_prefix(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= MAX_CHAT_PREFIX
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "an account prefix is 1 to {MAX_CHAT_PREFIX} of a-z, 0-9, _ . or -, not {text:?}"
        ))
    }
}

/// clap adapter for [`dupla::size::parse_size`].
fn parse_size_arg(text: &str) -> Result<u64, String> {
    dupla::size::parse_size(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_commands_and_global_flags_anywhere() {
        let cli = Cli::try_parse_from(["dupla", "backup", "a.txt", "b/c.bin", "--json"]).unwrap();
        assert!(cli.global.json);
        assert!(matches!(cli.command, Some(Command::Backup { ref paths, .. }) if paths.len() == 2));

        let cli = Cli::try_parse_from(["dupla", "restore", "x", "-o", "/tmp/y"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Restore {
                output: Some(_),
                ..
            })
        ));

        let cli = Cli::try_parse_from([
            "dupla",
            "bench",
            "--size",
            "2MiB",
            "--count",
            "3",
            "--download",
            "false",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Bench(b)) => {
                assert_eq!(b.size, 2 << 20);
                assert_eq!(b.count, 3);
                assert!(!b.download);
            }
            other => panic!("expected bench, got {other:?}"),
        }
        assert!(Cli::try_parse_from(["dupla", "bench", "--size", "lots"]).is_err());
        match Cli::try_parse_from(["dupla", "bench", "--size", "1MiB", "--count", "3"])
            .unwrap()
            .command
        {
            Some(Command::Bench(b)) => {
                assert_eq!((b.size, b.count), (1 << 20, 3));
                assert!(b.target.is_none() && b.download);
            }
            other => panic!("expected bench, got {other:?}"),
        }

        // `bench chat`: its own flags, defaults from the reference.
        match Cli::try_parse_from(["dupla", "bench", "chat", "--clients", "5", "--json"])
            .unwrap()
            .command
        {
            Some(Command::Bench(BenchArgs {
                target: Some(BenchTarget::Chat(c)),
                ..
            })) => {
                assert_eq!((c.clients, c.rate, c.seconds), (5, 200, 10));
                assert_eq!(c.prefix, "bench");
            }
            other => panic!("expected bench chat, got {other:?}"),
        }
        for bad in [
            &["dupla", "bench", "chat", "--clients", "0"][..],
            &["dupla", "bench", "chat", "--clients", "5000"],
            &["dupla", "bench", "chat", "--rate", "0"],
            &["dupla", "bench", "chat", "--seconds", "0"],
            &["dupla", "bench", "chat", "--rate", "fast"],
            &["dupla", "bench", "chat", "--prefix", "Bench"],
            &["dupla", "bench", "chat", "--prefix", ""],
            &["dupla", "bench", "chat", "--size", "1MiB"],
            &["dupla", "bench", "--size", "1MiB", "chat"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }

        let cli = Cli::try_parse_from([
            "dupla",
            "register",
            "--login",
            "ada",
            "--first-names",
            "Ada",
            "--age",
            "36",
            "--password-stdin",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Register(r)) => {
                assert_eq!(r.login.as_deref(), Some("ada"));
                assert_eq!(r.age, Some(36));
                assert!(r.password_stdin && r.gender.is_none());
            }
            other => panic!("expected register, got {other:?}"),
        }
        assert!(Cli::try_parse_from(["dupla", "register", "--age", "200"]).is_err());
        assert!(matches!(
            Cli::try_parse_from(["dupla", "login", "ada", "--password-stdin"])
                .unwrap()
                .command,
            Some(Command::Login {
                password_stdin: true,
                ..
            })
        ));
        assert!(Cli::try_parse_from(["dupla", "login"]).is_err());
        assert!(matches!(
            Cli::try_parse_from(["dupla", "chat"]).unwrap().command,
            Some(Command::Chat)
        ));
        assert!(Cli::try_parse_from(["dupla", "backup"]).is_err());
        assert!(Cli::try_parse_from(["dupla"]).unwrap().command.is_none());
    }
}
