//! The client's settings: where the manager is, which storage server to
//! enter through (if any), and the client root. Each comes from the first of
//! flag, `DUPLA_*` environment variable (clap reads both), the client's
//! `node.toml`, and a default.
//!
//! ```toml
//! # nodes/client/node.toml
//! manager = "127.0.0.1:50050"   # manager address
//! server = "127.0.0.1:50051"    # optional: always enter through this server
//! root = "files"                # client root, relative to this file's folder
//! insecure = false              # true: plain text, for clusters run with --insecure
//! ```

use crate::cli::GlobalArgs;
use dupla::config::{load_layered, rebase_path};
use dupla::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Manager address used when neither flag, environment nor node.toml names one.
pub const DEFAULT_MANAGER: &str = "127.0.0.1:50050";

/// The client's settings, declared once: each is a flag, a `DUPLA_*`
/// variable and a node.toml key of the same name, all optional.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
pub struct Settings {
    /// Manager address (host:port) [default: 127.0.0.1:50050]
    #[arg(long, value_name = "ADDR", env = "DUPLA_MANAGER", global = true)]
    pub manager: Option<String>,

    /// Storage server to try first for transfers, instead of the least busy
    /// one the manager reports (a large backup still enters at the server
    /// chosen to store it, and any transfer moves on when this one fails)
    #[arg(long, value_name = "ADDR", env = "DUPLA_SERVER", global = true)]
    pub server: Option<String>,

    /// Client root: files to back up must be inside it, restores land in it
    /// [default: the working directory; in node.toml, relative to its folder]
    #[arg(long, value_name = "DIR", env = "DUPLA_ROOT", global = true)]
    pub root: Option<PathBuf>,

    /// Talk to a cluster that runs without TLS (plain text: anyone on the
    /// path can read your token and files)
    #[arg(long, env = "DUPLA_INSECURE", global = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: Option<bool>,
}

/// The settings a command runs with, after merging every source.
#[derive(Debug, Clone)]
pub struct Config {
    /// Manager address: catalog, cluster status, clock.
    pub manager: String,
    /// Entry server forced by the user; `None` lets the manager's status choose.
    pub server: Option<String>,
    /// Client root as an absolute path: backups come from inside it and
    /// restores land in it. Not required to exist until a command uses it.
    pub root: PathBuf,
    /// Print JSON instead of text.
    pub json: bool,
    /// Plain text instead of TLS; otherwise the cluster CA is pinned on
    /// first use in `ROOT/.dupla/ca.pem` and any other CA is refused.
    pub insecure: bool,
}

impl Config {
    /// Merge flags/environment (`args`), the config file and the defaults.
    pub fn load(args: &GlobalArgs) -> Result<Config> {
        let (set, _) = load_layered(
            &args.settings,
            args.config.as_deref(),
            |s: &mut Settings, base| rebase_path(&mut s.root, base),
        )?;
        let cwd = std::env::current_dir()
            .map_err(|e| Error::InvalidInput(format!("cannot read the working directory: {e}")))?;
        let config = Config {
            manager: set.manager.unwrap_or_else(|| DEFAULT_MANAGER.to_string()),
            server: set.server,
            root: set.root.unwrap_or(cwd),
            json: args.json,
            insecure: set.insecure.unwrap_or(false),
        };
        config.validate()?;
        Ok(config)
    }

    /// Refuse settings that cannot work, with a message naming the setting.
    pub fn validate(&self) -> Result<()> {
        check_addr("manager", &self.manager)?;
        if let Some(server) = &self.server {
            check_addr("server", server)?;
        }
        Ok(())
    }
}

/// An address must be non-empty and free of spaces; the rest is checked when
/// connecting, with the address in the message.
fn check_addr(what: &str, addr: &str) -> Result<()> {
    if addr.trim().is_empty() || addr.contains(char::is_whitespace) {
        return Err(Error::InvalidInput(format!(
            "the {what} address {addr:?} is not host:port (set --{what} or DUPLA_{})",
            what.to_ascii_uppercase()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> GlobalArgs {
        GlobalArgs::default()
    }

    #[test]
    fn flag_beats_file_and_relative_root_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(
            &path,
            "manager = \"10.0.0.1:1\"\nserver = \"10.0.0.2:2\"\nroot = \"files\"\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path.clone());
        let config = Config::load(&a).unwrap();
        assert_eq!(config.manager, "10.0.0.1:1");
        assert_eq!(config.server.as_deref(), Some("10.0.0.2:2"));
        assert_eq!(config.root, dir.path().join("files"));

        a.settings.manager = Some("10.0.0.9:9".into());
        a.settings.root = Some(PathBuf::from("/elsewhere"));
        let config = Config::load(&a).unwrap();
        assert_eq!(config.manager, "10.0.0.9:9");
        assert_eq!(config.root, PathBuf::from("/elsewhere"));
    }

    #[test]
    fn unknown_keys_and_bad_addresses_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "manger = \"x:1\"\n").unwrap();
        let mut a = args();
        a.config = Some(path);
        assert!(Config::load(&a).is_err());

        let mut a = args();
        a.config = Some(dir.path().join("missing.toml"));
        assert!(Config::load(&a).is_err());

        let config = Config {
            manager: " ".into(),
            server: None,
            root: PathBuf::from("/"),
            json: false,
            insecure: false,
        };
        assert!(config.validate().is_err());
    }
}
