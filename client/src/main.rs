//! The `dupla` binary: parse the arguments, set up logging, run the client,
//! and turn a failure into one line on stderr and exit status 1 (3 for a
//! backup or snapshot restore that left some files out, 2 for a usage error).

use clap::{CommandFactory, Parser};
use dupla_client::cli::Cli;
use dupla_client::output::print_error;
use dupla_client::snapshot_backup::Partial;
use dupla_client::Usage;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

/// How long to let blocking work (a restore's part-file writes) finish at
/// exit. Bounded because a pending menu read of stdin can never finish.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Like any Unix filter, stop quietly when the reader of our output goes
/// away (`dupla --json snapshots | head -1`) instead of panicking on a
/// failed print. Not by restoring SIGPIPE's default action: that would also
/// kill the process, without a word, when a server closes a connection
/// while we write to it (TLS writes use `writev`, which cannot ask the
/// kernel not to signal). So SIGPIPE stays ignored, and only a print that
/// failed because stdout closed ends the process, with the status a
/// SIGPIPE death would give (128 + 13).
fn quiet_when_stdout_closes() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
}

fn main() -> ExitCode {
    dupla::alloc::keep_large_buffers();
    quiet_when_stdout_closes();
    let cli = Cli::parse();
    dupla::telemetry::init("warn");
    if cli.command.is_none() && !std::io::stdin().is_terminal() {
        // No command and nobody to answer a menu: show what is possible.
        let _ = Cli::command().write_help(&mut std::io::stderr());
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        tokio::select! {
            // The command first, so an outcome that is ready wins over a
            // Ctrl-C that arrives with it; otherwise Ctrl-C drops the run
            // (a backup's journal keeps what it committed).
            biased;
            outcome = dupla_client::run(cli) => match outcome {
                Ok(()) => ExitCode::SUCCESS,
                // Some files were skipped, the rest is in a snapshot.
                Err(err) if err.downcast_ref::<Partial>().is_some() => {
                    eprintln!("warning: {err}");
                    ExitCode::from(3)
                }
                // Parsed, but not a command that can run.
                Err(err) if err.downcast_ref::<Usage>().is_some() => {
                    eprintln!("error: {err}");
                    ExitCode::from(2)
                }
                Err(err) => {
                    print_error(&err);
                    ExitCode::FAILURE
                }
            },
            // Dropping the command cancels its calls. A restore keeps its
            // part file (hidden, beside the destination) to continue from.
            _ = tokio::signal::ctrl_c() => {
                eprintln!("error: interrupted; run the same command again to finish");
                ExitCode::from(130)
            }
        }
    });
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    code
}
