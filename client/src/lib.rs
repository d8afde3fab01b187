//! Dupla's client: back files up from a root directory to the cluster,
//! restore them, list and remove them, inspect the cluster, say hello, sync
//! clocks, benchmark, manage an account and chat — from the command line,
//! an interactive menu, or this library.
//!
//! An account goes [`account`] (register, login, logout...) with the token
//! kept by [`session_store`]; [`chat`] is `dupla chat`, and [`chat_bench`]
//! is `dupla bench chat`, its load benchmark.
//!
//! Following one backup through the modules: [`cli`] parses the command,
//! [`config`] merges flags, environment and node.toml, [`backup`] checks the
//! file is inside the root and names it, [`session`] picks an entry server,
//! and [`upload`] streams the chunks. A restore goes [`restore`] →
//! [`download`]. [`output`] and [`progress`] are all the user sees.

pub mod account;
pub mod backup;
pub mod bench;
pub mod chat;
pub mod chat_bench;
mod chat_link;
pub mod cli;
pub mod config;
pub mod download;
pub mod find;
pub mod forget;
pub mod hello;
pub mod list;
pub mod menu;
pub mod output;
pub mod progress;
pub mod quota;
pub mod remove;
pub mod restore;
pub mod resume;
pub mod scrub;
pub mod servers;
pub mod session;
pub mod session_store;
pub mod shell;
pub mod snapshot_backup;
pub mod snapshot_restore;
pub mod snapshots;
pub mod status;
pub mod time;
pub mod tree_restore;
pub mod upload;
pub mod walk;

pub use backup::BackupReport;
pub use bench::BenchReport;
pub use chat_bench::ChatBenchReport;
pub use restore::RestoreReport;
pub use session::Client;
pub use time::TimeReport;

use cli::{BenchTarget, Cli, Command};
use config::Config;
use output::Output;
use std::io::IsTerminal;

/// A configured client, ready to run commands.
#[derive(Debug, Clone)]
pub struct App {
    /// The cluster connection (with the saved token, when logged in).
    pub client: Client,
    /// The merged settings.
    pub config: Config,
    /// Text or JSON.
    pub out: Output,
    /// The session `dupla login` saved under the root, if any.
    pub session: Option<session_store::SavedSession>,
}

impl App {
    /// A client for `config`, carrying the token saved under its root when
    /// that token came from the same manager (a token is never sent to
    /// another manager).
    pub fn new(config: Config) -> App {
        let session = session_store::load(&config.root).unwrap_or_else(|err| {
            eprintln!("warning: {err}");
            None
        });
        let mut client = anonymous_client(&config);
        if let Some(saved) = session.as_ref().filter(|s| s.manager == config.manager) {
            client = client
                .with_token(saved.token.clone())
                .with_assigned_server(saved.server.clone());
        }
        App {
            client,
            out: Output { json: config.json },
            config,
            session,
        }
    }

    /// The same app after the session file changed (login, logout).
    pub fn reloaded(&self) -> App {
        App::new(self.config.clone())
    }

    /// Run one command and print its result.
    pub async fn execute(&self, command: Command) -> anyhow::Result<()> {
        let (client, out, root) = (&self.client, self.out, self.config.root.as_path());
        match command {
            Command::Backup {
                paths,
                resume,
                excludes,
                exclude_files,
                tags,
                dry_run,
            } => {
                let options = snapshot_backup::RunOptions {
                    paths,
                    excludes,
                    exclude_files,
                    tags,
                    dry_run,
                    resume,
                    progress: !out.json,
                };
                snapshot_backup::run(client, root, &options, out)
                    .await
                    .map(|_| ())
            }
            Command::Restore {
                names,
                output,
                snapshot,
                target,
            } => match (snapshot, target) {
                (Some(id), Some(target)) => {
                    snapshot_restore::restore_tree(client, root, &id, &target, &names, out)
                        .await
                        .map(|_| ())
                }
                (snapshot, None) => {
                    let [name] = names.as_slice() else {
                        return Err(Usage(
                            "name one file to restore, or restore a snapshot's tree with \
                             --snapshot ID --target DIR [PATH...]",
                        )
                        .into());
                    };
                    match snapshot {
                        Some(id) => {
                            snapshot_restore::restore_file(
                                client,
                                root,
                                &id,
                                name,
                                output.as_deref(),
                                out,
                            )
                            .await
                        }
                        None => restore::command(client, root, name, output.as_deref(), out).await,
                    }
                }
                (None, Some(_)) => unreachable!("clap: --target requires --snapshot"),
            },
            Command::Snapshots { paths } => snapshots::command(client, &paths, out).await,
            Command::Versions { path } => find::versions_command(client, &path, out).await,
            Command::Find {
                pattern,
                larger,
                smaller,
                newer,
                older,
            } => {
                let filters = find::FindFilters {
                    larger,
                    smaller,
                    newer_ns: newer,
                    older_ns: older,
                };
                find::find_command(client, &pattern, &filters, out).await
            }
            Command::Forget(args) => forget::command(client, &args, out).await,
            Command::Ls { pattern } => list::command(client, &pattern, out).await,
            Command::Rm { name } => remove::command(client, &name, out).await,
            Command::Status => status::command(client, out).await,
            Command::Servers { action } => servers::command(client, action.as_ref(), out).await,
            Command::Scrub => scrub::command(client, out).await,
            Command::Hello { names } => hello::command(client, &names, out).await,
            Command::Time { samples } => time::command(client, samples, out).await,
            Command::Bench(args) => match &args.target {
                // Its own accounts: the saved session plays no part.
                Some(BenchTarget::Chat(chat)) => {
                    chat_bench::command(&self.anonymous(), root, chat, out).await
                }
                Some(BenchTarget::Social(social)) => {
                    chat_bench::social_command(&self.anonymous(), root, social, out).await
                }
                None => bench::command(client, &args, out).await,
            },
            // Register and login need no token: a stale one must not get in the way.
            Command::Register(args) => account::register(&self.anonymous(), &args, out).await,
            Command::Login {
                user,
                password_stdin,
            } => account::login(&self.anonymous(), root, &user, password_stdin, out).await,
            Command::Logout => account::logout(client, root, self.session.as_ref(), out).await,
            Command::Unregister { password_stdin } => {
                account::unregister(client, root, self.session.as_ref(), password_stdin, out).await
            }
            Command::Whoami => account::whoami(client, out).await,
            Command::Users(args) => account::users(client, &args, out).await,
            Command::Quota(args) => quota::command(client, &args, out).await,
            Command::Chat => chat::command(client).await,
            // Its own users, each logged in by the script: no saved session.
            Command::Shell { host, port } => {
                let config = Config {
                    manager: format!("{host}:{port}"),
                    ..self.config.clone()
                };
                shell::run(anonymous_client(&config)).await
            }
        }
    }

    /// The client without a token.
    fn anonymous(&self) -> Client {
        anonymous_client(&self.config)
    }
}

/// A client for `config` without a token: TLS with the CA pinned under the
/// root unless `--insecure`. Register and login use it too, so they pin
/// the CA the same way every other command does.
fn anonymous_client(config: &Config) -> Client {
    let client = Client::new(config.manager.clone(), config.server.clone());
    if config.insecure {
        client
    } else {
        client.with_pinned_ca(session_store::ca_path(&config.root))
    }
}

/// A command line that parses but asks for something impossible (two names
/// to restore into one place): `dupla` exits with status 2, as for the usage
/// errors clap finds itself, so scripts can tell a typo from a failure.
#[derive(Debug)]
pub struct Usage(pub &'static str);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Usage {}

/// What `dupla` does once its arguments are parsed: run the command, or the
/// menu when there is none and stdin is a terminal.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let app = App::new(Config::load(&cli.global)?);
    match cli.command {
        Some(command) => app.execute(command).await,
        None if std::io::stdin().is_terminal() => menu::run(&app).await,
        None => Err(Usage("no command given; `dupla --help` lists them").into()),
    }
}
