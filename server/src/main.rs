//! `dupla-server`: run from the server's node directory (reads ./node.toml).

use clap::Parser;

fn main() -> std::process::ExitCode {
    dupla::alloc::keep_large_buffers();
    serve()
}

#[tokio::main]
async fn serve() -> std::process::ExitCode {
    dupla::telemetry::init("info");
    let args = dupla_server::Args::parse();
    let result = match dupla_server::Config::load(args) {
        Ok(config) => dupla_server::run(config, dupla::shutdown::on_signals()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dupla-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
