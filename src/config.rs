//! Config helpers shared by every node: each node reads `./node.toml` from
//! its own directory, and every key there can be overridden by a flag or a
//! `DUPLA_*` environment variable (clap handles those two; this module
//! handles the file and the merge).

use crate::{Error, Result};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// The flags every node takes, flattened into each binary's `Args`; every
/// one has a `node.toml` key of the same name.
#[derive(clap::Args, Default, Clone)]
pub struct NodeArgs {
    /// Config file (default: ./node.toml if present).
    #[arg(long, env = "DUPLA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, host:port.
    #[arg(long, env = "DUPLA_LISTEN")]
    pub listen: Option<String>,
    /// Data directory (the manager's database; a server's chunks and id).
    #[arg(long, env = "DUPLA_DATA")]
    pub data: Option<PathBuf>,
    /// Cluster secret, the same on the manager and every server.
    #[arg(long, env = "DUPLA_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Turn TLS off: every link in plain text (logged as a warning).
    #[arg(long, env = "DUPLA_INSECURE")]
    pub insecure: bool,
}

impl std::fmt::Debug for NodeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeArgs")
            .field("config", &self.config)
            .field("listen", &self.listen)
            .field("data", &self.data)
            .field("secret", &self.secret.as_ref().map(|_| ".."))
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// What every node resolves from [`NodeArgs`] and its `node.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// Address to listen on.
    pub listen: String,
    /// Data directory, made absolute.
    pub data: PathBuf,
    /// Cluster secret (empty if none was given; the node refuses to start).
    pub secret: SecretString,
    /// TLS off (`--insecure`, `DUPLA_INSECURE` or `insecure = true`).
    pub insecure: bool,
}

/// A secret setting (the cluster secret): its `Debug` never shows it, so
/// logging a config cannot leak it. Reads as a `&str` where needed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(String);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"..\"" })
    }
}

impl std::ops::Deref for SecretString {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(secret: String) -> Self {
        SecretString(secret)
    }
}

impl From<&str> for SecretString {
    fn from(secret: &str) -> Self {
        SecretString(secret.to_string())
    }
}

impl PartialEq<&str> for SecretString {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl NodeArgs {
    /// The node's `node.toml` (this `config`, or `./node.toml` if present).
    pub fn load_file<T: DeserializeOwned + Default>(&self) -> Result<T> {
        load_toml(self.config.as_deref())
    }

    /// Flags over the file's `listen`, `data`, `secret` and `insecure` over
    /// defaults.
    pub fn resolve(
        &self,
        listen: Option<String>,
        data: Option<PathBuf>,
        secret: Option<String>,
        insecure: Option<bool>,
        default_listen: &str,
    ) -> Result<NodeSettings> {
        let cwd = std::env::current_dir()?;
        Ok(NodeSettings {
            listen: pick(self.listen.clone(), listen, || default_listen.into()),
            data: pick_path(
                self.data.clone(),
                data,
                "data",
                &cwd,
                &config_dir(&cwd, self.config.as_deref()),
            ),
            secret: pick(self.secret.clone(), secret, String::new).into(),
            insecure: self.insecure || insecure.unwrap_or(false),
        })
    }
}

/// Default config file, looked up in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "node.toml";

/// Read a TOML config file. A missing file is `Ok(T::default())` only when it
/// is the default `node.toml`; a file named explicitly must exist.
pub fn load_toml<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(T::default()),
        Err(e) => {
            return Err(Error::InvalidInput(format!(
                "cannot read config {}: {e}",
                path.display()
            )))
        }
    };
    toml::from_str(&text)
        .map_err(|e| Error::InvalidInput(format!("config {}: {e}", path.display())))
}

/// Longest duration a setting may give: ten years (a larger one is a typo,
/// and would overflow the clock arithmetic it feeds).
pub const MAX_SETTING_SECS: f64 = 10.0 * 365.0 * 24.0 * 3600.0;

/// A duration setting in seconds (fractions allowed): the first of flag/env
/// value and file value, else `default`. A negative, not-a-number or
/// absurdly large value is refused, naming `key`.
pub fn pick_secs(
    flag: Option<f64>,
    file: Option<f64>,
    default: std::time::Duration,
    key: &str,
) -> Result<std::time::Duration> {
    match flag.or(file) {
        None => Ok(default),
        Some(secs) if (0.0..=MAX_SETTING_SECS).contains(&secs) => {
            Ok(std::time::Duration::from_secs_f64(secs))
        }
        Some(secs) => Err(Error::InvalidInput(format!(
            "{key} = {secs}: give a number of seconds from 0 to {MAX_SETTING_SECS}"
        ))),
    }
}

/// First of: flag/env value, file value, default.
pub fn pick<T>(flag: Option<T>, file: Option<T>, default: impl FnOnce() -> T) -> T {
    flag.or(file).unwrap_or_else(default)
}

/// The directory a config file's relative paths are relative to: the
/// directory holding `config`, or `cwd` for the default `./node.toml`.
pub fn config_dir(cwd: &Path, config: Option<&Path>) -> PathBuf {
    config
        .and_then(Path::parent)
        .map(|dir| resolve(cwd, dir))
        .unwrap_or_else(|| cwd.to_path_buf())
}

/// A path setting: a flag's value is relative to the working directory, a
/// config file's (and the default) to the config file's directory.
pub fn pick_path(
    flag: Option<PathBuf>,
    file: Option<PathBuf>,
    default: &str,
    cwd: &Path,
    config_dir: &Path,
) -> PathBuf {
    match (flag, file) {
        (Some(flag), _) => resolve(cwd, &flag),
        (None, Some(file)) => resolve(config_dir, &file),
        (None, None) => resolve(config_dir, Path::new(default)),
    }
}

/// Resolve `path` against `base` unless it is absolute.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_seconds_are_checked() {
        use std::time::Duration;
        let default = Duration::from_secs(7);
        assert_eq!(pick_secs(None, None, default, "k").unwrap(), default);
        assert_eq!(
            pick_secs(None, Some(1.5), default, "k").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            pick_secs(Some(2.0), Some(1.5), default, "k").unwrap(),
            Duration::from_secs(2)
        );
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e30] {
            let err = pick_secs(Some(bad), None, default, "idle_timeout_secs").unwrap_err();
            assert!(err.to_string().contains("idle_timeout_secs"), "{err}");
        }
    }

    #[derive(serde::Deserialize, Default, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        listen: Option<String>,
    }

    #[test]
    fn explicit_missing_file_is_an_error_default_is_not() {
        let missing = Path::new("/nonexistent/dupla.toml");
        assert!(load_toml::<Sample>(Some(missing)).is_err());
    }

    #[test]
    fn file_paths_are_relative_to_the_config_file() {
        let cwd = Path::new("/work");
        let dir = config_dir(cwd, Some(Path::new("nodes/server-1/node.toml")));
        assert_eq!(dir, Path::new("/work/nodes/server-1"));
        assert_eq!(
            pick_path(None, Some("d".into()), "data", cwd, &dir),
            Path::new("/work/nodes/server-1/d")
        );
        assert_eq!(
            pick_path(Some("x".into()), Some("d".into()), "data", cwd, &dir),
            Path::new("/work/x")
        );
        assert_eq!(
            pick_path(None, None, "data", cwd, &dir),
            Path::new("/work/nodes/server-1/data")
        );
    }

    #[test]
    fn debug_of_settings_hides_the_secret() {
        let args = NodeArgs {
            secret: Some("hunter2-cluster".into()),
            ..NodeArgs::default()
        };
        let settings = args.resolve(None, None, None, None, "127.0.0.1:1").unwrap();
        assert_eq!(settings.secret, "hunter2-cluster");
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert!(!format!("{args:?}").contains("hunter2"));
    }

    #[test]
    fn flag_beats_file_beats_default() {
        assert_eq!(pick(Some(1), Some(2), || 3), 1);
        assert_eq!(pick(None, Some(2), || 3), 2);
        assert_eq!(pick(None::<i32>, None, || 3), 3);
    }
}
