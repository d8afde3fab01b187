//! Tracing setup shared by the binaries: `RUST_LOG` filters, default `info`.

use tracing_subscriber::EnvFilter;

/// Install a stderr subscriber filtered by `RUST_LOG` (or `default` when unset).
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
