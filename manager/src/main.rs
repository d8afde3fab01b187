//! `dupla-manager`: run from the manager's node directory (reads ./node.toml).
//! `dupla-manager admin ...` and `dupla-manager adopt-legacy LOGIN` are
//! operator actions on the stopped manager's data (see `admin.rs`).

use clap::{Parser, Subcommand};
use dupla::config::NodeArgs;
use std::io::BufRead;

/// Operator actions; each works on the data directory of a stopped manager.
#[derive(Parser, Debug)]
#[command(name = "dupla-manager", about = "Dupla manager: operator actions")]
struct Operator {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Admin accounts: the only way to get the admin role.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Give the files backed up before accounts existed to LOGIN.
    AdoptLegacy {
        /// Login that gets the files (it must exist).
        login: String,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Subcommand, Debug)]
enum AdminAction {
    /// Create the admin account LOGIN; reads its password from stdin.
    Create {
        /// The admin's login.
        login: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Give the existing account LOGIN the admin role.
    Grant {
        /// The login.
        login: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Take the admin role from the account LOGIN.
    Revoke {
        /// The login.
        login: String,
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// The manager's config for operator actions, from the same flags and
/// node.toml as a running manager.
fn config(node: NodeArgs) -> dupla::Result<dupla_manager::Config> {
    dupla_manager::Config::load(dupla_manager::Args {
        node,
        ..Default::default()
    })
}

/// The first line of stdin: the password, never a command-line argument
/// (which other users can read in the process list).
fn password_from_stdin() -> dupla::Result<String> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("password for the admin account (one line, echoed):");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn operate(operator: Operator) -> dupla::Result<()> {
    use dupla_manager::identity::admin;
    match operator.action {
        Action::Admin {
            action: AdminAction::Create { login, node },
        } => {
            let config = config(node)?;
            admin::create(&config, &login, &password_from_stdin()?)?;
            println!("created the admin account {login}");
        }
        Action::Admin {
            action: AdminAction::Grant { login, node },
        } => {
            admin::set_admin(&config(node)?, &login, true)?;
            println!("{login} is an admin");
        }
        Action::Admin {
            action: AdminAction::Revoke { login, node },
        } => {
            admin::set_admin(&config(node)?, &login, false)?;
            println!("{login} is no longer an admin");
        }
        Action::AdoptLegacy { login, node } => {
            let moved = admin::adopt_legacy(&config(node)?, &login)?;
            println!("{moved} files from before accounts now belong to {login}");
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    dupla::alloc::keep_large_buffers();
    serve()
}

#[tokio::main]
async fn serve() -> std::process::ExitCode {
    dupla::telemetry::init("info");
    let operator = matches!(
        std::env::args().nth(1).as_deref(),
        Some("admin" | "adopt-legacy")
    );
    let result = if operator {
        operate(Operator::parse())
    } else {
        let args = dupla_manager::Args::parse();
        match dupla_manager::Config::load(args) {
            Ok(config) => dupla_manager::run(config, dupla::shutdown::on_signals()).await,
            Err(e) => Err(e),
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dupla-manager: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
