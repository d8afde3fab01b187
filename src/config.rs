//! Config helpers shared by every node: each node reads `./node.toml` from
//! its own directory, and every key there can be overridden by a flag or a
//! `DUPLA_*` environment variable (clap handles those two; this module
//! handles the file and the merge).

use crate::{Error, Result};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

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

/// First of: flag/env value, file value, default.
pub fn pick<T>(flag: Option<T>, file: Option<T>, default: impl FnOnce() -> T) -> T {
    flag.or(file).unwrap_or_else(default)
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
    fn flag_beats_file_beats_default() {
        assert_eq!(pick(Some(1), Some(2), || 3), 1);
        assert_eq!(pick(None, Some(2), || 3), 2);
        assert_eq!(pick(None::<i32>, None, || 3), 3);
    }
}
