//! Config helpers shared by every node: each node reads `./node.toml` from
//! its own directory, and every key there can be overridden by a flag or a
//! `DUPLA_*` environment variable.
//!
//! Each binary declares its settings once, as one struct of optional values
//! that is at the same time its flags and variables (clap) and its
//! `node.toml` keys (serde): [`load_layered`] reads the file into that
//! struct, lays the command line over it ([`layered`]), and the binary then
//! resolves the result into its typed `Config` with the defaults.

use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The settings every node has, flattened into each binary's settings:
/// each is a flag, a `DUPLA_*` variable and a `node.toml` key of the same
/// name. `config` (which file) is a flag only.
#[derive(clap::Args, Serialize, Deserialize, Default, Clone, Debug)]
pub struct NodeArgs {
    /// Config file (default: ./node.toml if present).
    #[arg(long, env = "DUPLA_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on, host:port.
    #[arg(long, env = "DUPLA_LISTEN")]
    pub listen: Option<String>,
    /// Data directory (the manager's database; a server's chunks and id);
    /// in node.toml, relative to the file's folder [default: data].
    #[arg(long, env = "DUPLA_DATA")]
    pub data: Option<PathBuf>,
    /// Cluster secret, the same on the manager and every server.
    #[arg(long, env = "DUPLA_SECRET", hide_env_values = true)]
    pub secret: Option<SecretString>,
    /// Turn TLS off: every link in plain text (logged as a warning).
    #[arg(long, env = "DUPLA_INSECURE", num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: Option<bool>,
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
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
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
    /// The node's settings once laid over its file: listen address (or
    /// `default_listen`), data directory (already made absolute by
    /// [`load_layered`], else `data` beside the config file), secret and TLS.
    pub fn resolve(&self, config_dir: &Path, default_listen: &str) -> NodeSettings {
        NodeSettings {
            listen: self.listen.clone().unwrap_or_else(|| default_listen.into()),
            data: self
                .data
                .as_deref()
                .map_or_else(|| config_dir.join("data"), |d| resolve(config_dir, d)),
            secret: self.secret.clone().unwrap_or_default(),
            insecure: self.insecure.unwrap_or(false),
        }
    }
}

/// Settings read from a command line and a config file: `flags` (clap has
/// read the flags and variables into it) over the file (`config`, or
/// `./node.toml` if present), with the paths `rebase` lists made absolute:
/// a flag's against the working directory, a file's against the file's
/// folder. Returns the merged settings and that folder (where defaults of
/// relative paths live).
pub fn load_layered<T>(
    flags: &T,
    config: Option<&Path>,
    rebase: impl Fn(&mut T, &Path),
) -> Result<(T, PathBuf)>
where
    T: Serialize + DeserializeOwned + Default + Clone,
{
    let cwd = std::env::current_dir()
        .map_err(|e| Error::InvalidInput(format!("cannot read the working directory: {e}")))?;
    let dir = config_dir(&cwd, config);
    let mut file: T = load_toml(config)?;
    rebase(&mut file, &dir);
    let mut flags = flags.clone();
    rebase(&mut flags, &cwd);
    Ok((layered(&flags, file)?, dir))
}

/// Make a path setting absolute against `base` (see [`load_layered`]).
pub fn rebase_path(path: &mut Option<PathBuf>, base: &Path) {
    if let Some(p) = path.as_mut() {
        *p = resolve(base, p);
    }
}

/// `over` laid over `under`: every setting `over` gives (not `None`)
/// replaces `under`'s. Works on any settings struct through its TOML form
/// (where an unset setting is simply absent, and every number survives,
/// NaN and infinities included, for the checks that refuse them), so no
/// binary repeats its fields to merge them.
pub fn layered<T: Serialize + DeserializeOwned>(over: &T, under: T) -> Result<T> {
    let bad = |e: &dyn std::fmt::Display| Error::Internal(format!("merging settings: {e}"));
    let over = toml::Table::try_from(over).map_err(|e| bad(&e))?;
    let mut merged = toml::Table::try_from(under).map_err(|e| bad(&e))?;
    merged.extend(over);
    T::deserialize(merged).map_err(|e| bad(&e))
}

/// The keys a settings struct accepts in a file: its fields, by their
/// serde names (flattened parts included).
fn known_keys<T: Serialize + Default>() -> Vec<String> {
    match serde_json::to_value(T::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Default config file, looked up in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "node.toml";

/// Read a TOML config file. A missing file is `Ok(T::default())` only when it
/// is the default `node.toml`; a file named explicitly must exist. A key
/// `T` does not have is refused, naming it (a typo must not be ignored).
pub fn load_toml<T: Serialize + DeserializeOwned + Default>(path: Option<&Path>) -> Result<T> {
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
    let invalid =
        |e: toml::de::Error| Error::InvalidInput(format!("config {}: {e}", path.display()));
    let table: toml::Table = toml::from_str(&text).map_err(invalid)?;
    let known = known_keys::<T>();
    if let Some(unknown) = table.keys().find(|k| !known.contains(k)) {
        let mut known = known;
        known.sort();
        return Err(Error::InvalidInput(format!(
            "config {}: unknown key `{unknown}`; the keys are {}",
            path.display(),
            known.join(", ")
        )));
    }
    T::deserialize(table).map_err(invalid)
}

/// Longest duration a setting may give: ten years (a larger one is a typo,
/// and would overflow the clock arithmetic it feeds).
pub const MAX_SETTING_SECS: f64 = 10.0 * 365.0 * 24.0 * 3600.0;

/// A duration setting in seconds (fractions allowed), else `default`. A
/// negative, not-a-number or absurdly large value is refused, naming `key`.
pub fn secs_setting(
    value: Option<f64>,
    default: std::time::Duration,
    key: &str,
) -> Result<std::time::Duration> {
    match value {
        None => Ok(default),
        Some(secs) if (0.0..=MAX_SETTING_SECS).contains(&secs) => {
            Ok(std::time::Duration::from_secs_f64(secs))
        }
        Some(secs) => Err(Error::InvalidInput(format!(
            "{key} = {secs}: give a number of seconds from 0 to {MAX_SETTING_SECS}"
        ))),
    }
}

/// The directory a config file's relative paths are relative to: the
/// directory holding `config`, or `cwd` for the default `./node.toml`.
pub fn config_dir(cwd: &Path, config: Option<&Path>) -> PathBuf {
    config
        .and_then(Path::parent)
        .map(|dir| resolve(cwd, dir))
        .unwrap_or_else(|| cwd.to_path_buf())
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
    use clap::Parser;

    #[test]
    fn durations_in_seconds_are_checked() {
        use std::time::Duration;
        let default = Duration::from_secs(7);
        assert_eq!(secs_setting(None, default, "k").unwrap(), default);
        assert_eq!(
            secs_setting(Some(1.5), default, "k").unwrap(),
            Duration::from_millis(1500)
        );
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e30] {
            let err = secs_setting(Some(bad), default, "idle_timeout_secs").unwrap_err();
            assert!(err.to_string().contains("idle_timeout_secs"), "{err}");
        }
    }

    /// A binary's settings, declared once: flags, variables and file keys.
    #[derive(Parser, Serialize, Deserialize, Default, Clone, Debug)]
    struct Sample {
        #[command(flatten)]
        #[serde(flatten)]
        node: NodeArgs,
        #[arg(long)]
        capacity: Option<String>,
        #[arg(long)]
        rate: Option<f64>,
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let file = dir.join("node.toml");
        std::fs::write(&file, text).unwrap();
        file
    }

    fn load(argv: &[&str], file: &Path) -> Result<(Sample, PathBuf)> {
        let mut flags = Sample::try_parse_from(argv).unwrap();
        flags.node.config = Some(file.to_path_buf());
        load_layered(&flags, Some(file), |s: &mut Sample, base| {
            rebase_path(&mut s.node.data, base)
        })
    }

    #[test]
    fn a_flag_beats_the_file_which_beats_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "listen = \"127.0.0.1:6000\"\ncapacity = \"2GiB\"\nrate = 3\nsecret = \"s\"\n",
        );
        let (merged, _) = load(&["x", "--listen", "127.0.0.1:7000"], &file).unwrap();
        assert_eq!(merged.node.listen.as_deref(), Some("127.0.0.1:7000"));
        assert_eq!(merged.capacity.as_deref(), Some("2GiB"));
        assert_eq!(merged.rate, Some(3.0), "an integer in the file is a number");
        assert_eq!(merged.node.secret.as_deref(), Some("s"));
        assert_eq!(merged.node.insecure, None);
        let (merged, _) = load(&["x", "--insecure"], &file).unwrap();
        assert_eq!(merged.node.insecure, Some(true), "a bare --insecure");
    }

    #[test]
    fn file_paths_are_relative_to_the_file_and_flag_paths_to_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "data = \"d\"\n");
        let (merged, config_dir) = load(&["x"], &file).unwrap();
        assert_eq!(config_dir, dir.path());
        let settings = merged.node.resolve(&config_dir, "127.0.0.1:1");
        assert_eq!(settings.data, dir.path().join("d"));
        assert_eq!(settings.listen, "127.0.0.1:1");
        let (merged, config_dir) = load(&["x", "--data", "elsewhere"], &file).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            merged.node.resolve(&config_dir, "").data,
            cwd.join("elsewhere")
        );
        let file = write(dir.path(), "");
        let (merged, config_dir) = load(&["x"], &file).unwrap();
        assert_eq!(
            merged.node.resolve(&config_dir, "").data,
            dir.path().join("data")
        );
    }

    #[test]
    fn unknown_keys_and_missing_named_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "capacty = \"2GiB\"\n");
        let err = load(&["x"], &file).unwrap_err().to_string();
        assert!(err.contains("unknown key `capacty`"), "{err}");
        assert!(
            err.contains("capacity"),
            "the message lists the keys: {err}"
        );
        let file = write(dir.path(), "config = \"other.toml\"\n");
        assert!(load(&["x"], &file).is_err(), "config is a flag, not a key");
        let missing = Path::new("/nonexistent/dupla.toml");
        assert!(load_toml::<Sample>(Some(missing)).is_err());
    }

    #[test]
    fn debug_of_settings_hides_the_secret() {
        let args = NodeArgs {
            secret: Some("hunter2-cluster".into()),
            ..NodeArgs::default()
        };
        let settings = args.resolve(Path::new("/"), "127.0.0.1:1");
        assert_eq!(settings.secret, "hunter2-cluster");
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert!(!format!("{args:?}").contains("hunter2"));
    }
}
