//! `dupla-manager`: run from the manager's node directory (reads ./node.toml).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    dupla::telemetry::init("info");
    let args = dupla_manager::Args::parse();
    let result = match dupla_manager::Config::load(args) {
        Ok(config) => dupla_manager::run(config, dupla::shutdown::on_signals()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dupla-manager: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
