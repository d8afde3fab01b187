//! Dupla's client: back files up from a root directory to the cluster,
//! restore them, list and remove them, inspect the cluster, say hello, sync
//! clocks, and benchmark — from the command line, an interactive menu, or
//! this library.
//!
//! Following one backup through the modules: [`cli`] parses the command,
//! [`config`] merges flags, environment and node.toml, [`backup`] checks the
//! file is inside the root and names it, [`session`] picks an entry server,
//! and [`upload`] streams the chunks. A restore goes [`restore`] →
//! [`download`]. [`output`] and [`progress`] are all the user sees.

pub mod backup;
pub mod bench;
pub mod cli;
pub mod config;
pub mod download;
pub mod hello;
pub mod list;
pub mod menu;
pub mod output;
pub mod progress;
pub mod remove;
pub mod restore;
pub mod session;
pub mod status;
pub mod time;
pub mod upload;

pub use backup::BackupReport;
pub use bench::BenchReport;
pub use restore::RestoreReport;
pub use session::Client;
pub use time::TimeReport;

use cli::{Cli, Command};
use config::Config;
use output::Output;
use std::io::IsTerminal;

/// A configured client, ready to run commands.
#[derive(Debug, Clone)]
pub struct App {
    /// The cluster connection.
    pub client: Client,
    /// The merged settings.
    pub config: Config,
    /// Text or JSON.
    pub out: Output,
}

impl App {
    /// A client for `config`.
    pub fn new(config: Config) -> App {
        App {
            client: Client::new(config.manager.clone(), config.server.clone()),
            out: Output { json: config.json },
            config,
        }
    }

    /// Run one command and print its result.
    pub async fn execute(&self, command: Command) -> anyhow::Result<()> {
        let (client, out, root) = (&self.client, self.out, self.config.root.as_path());
        match command {
            Command::Backup { files } => backup::command(client, root, &files, out).await,
            Command::Restore { name, output } => {
                restore::command(client, root, &name, output.as_deref(), out).await
            }
            Command::Ls { pattern } => list::command(client, &pattern, out).await,
            Command::Rm { name } => remove::command(client, &name, out).await,
            Command::Status => status::command(client, out).await,
            Command::Hello { names } => hello::command(client, &names, out).await,
            Command::Time { samples } => time::command(client, samples, out).await,
            Command::Bench(args) => bench::command(client, &args, out).await,
        }
    }
}

/// What `dupla` does once its arguments are parsed: run the command, or the
/// menu when there is none and stdin is a terminal.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let app = App::new(Config::load(&cli.global)?);
    match cli.command {
        Some(command) => app.execute(command).await,
        None if std::io::stdin().is_terminal() => menu::run(&app).await,
        None => anyhow::bail!("no command given; `dupla --help` lists them"),
    }
}
