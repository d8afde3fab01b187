//! The logged-in session on disk: `ROOT/.dupla/session.json`, holding the
//! bearer token from `dupla login` and the storage server the manager
//! assigned, so later commands need no password. The folder is created
//! with mode 0700 and the file with mode 0600 (written to a temporary file
//! first, then renamed, so a crash never leaves half a token).

use dupla::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Folder under the client root that holds the client's own state.
pub const STATE_DIR: &str = ".dupla";
/// The session file's name inside [`STATE_DIR`].
pub const SESSION_FILE: &str = "session.json";

/// What `dupla login` keeps.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSession {
    /// Who is logged in.
    pub login: String,
    /// The bearer token (a secret: never printed).
    pub token: String,
    /// When it stops working, ms since the Unix epoch.
    pub expires_unix_ms: i64,
    /// The manager that issued it.
    pub manager: String,
    /// Address of the storage server assigned at login, if any was up.
    pub server: Option<String>,
}

impl std::fmt::Debug for SavedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedSession")
            .field("login", &self.login)
            .field("token", &"..")
            .field("expires_unix_ms", &self.expires_unix_ms)
            .field("manager", &self.manager)
            .field("server", &self.server)
            .finish()
    }
}

/// The cluster CA pinned on first use, inside [`STATE_DIR`].
pub const CA_FILE: &str = "ca.pem";

/// Where the client rooted at `root` pins the cluster's CA.
pub fn ca_path(root: &Path) -> PathBuf {
    root.join(STATE_DIR).join(CA_FILE)
}

/// Where the session of the client rooted at `root` lives.
pub fn path(root: &Path) -> PathBuf {
    root.join(STATE_DIR).join(SESSION_FILE)
}

/// The saved session, if there is one. A file that cannot be read as a
/// session is reported, not trusted.
pub fn load(root: &Path) -> Result<Option<SavedSession>> {
    let path = path(root);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Io(e)),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::InvalidInput(format!(
            "{} is not a session file ({e}); delete it and log in again",
            path.display()
        ))
    })
}

/// Save `session`, readable by the user only.
pub fn save(root: &Path, session: &SavedSession) -> Result<PathBuf> {
    let dir = root.join(STATE_DIR);
    create_private_dir(&dir)?;
    let path = dir.join(SESSION_FILE);
    let tmp = dir.join(format!("{SESSION_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(session)
        .map_err(|e| Error::Internal(format!("encoding the session: {e}")))?;
    let _ = std::fs::remove_file(&tmp);
    let mut file = private_file(&tmp)?;
    file.write_all(&json)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Forget the saved session; true if there was one.
pub fn remove(root: &Path) -> Result<bool> {
    match std::fs::remove_file(path(root)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::Io(e)),
    }
}

#[cfg(unix)]
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // An existing folder keeps its mode unless we tighten it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    Ok(())
}

#[cfg(unix)]
pub(crate) fn private_file(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    Ok(std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?)
}

#[cfg(not(unix))]
pub(crate) fn private_file(path: &Path) -> Result<std::fs::File> {
    Ok(std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SavedSession {
        SavedSession {
            login: "ada".into(),
            token: "ab".repeat(32),
            expires_unix_ms: 1,
            manager: "127.0.0.1:50050".into(),
            server: Some("127.0.0.1:50051".into()),
        }
    }

    #[test]
    fn save_load_remove() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(load(root.path()).unwrap(), None);
        let path = save(root.path(), &session()).unwrap();
        assert_eq!(load(root.path()).unwrap(), Some(session()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let dir_mode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dir_mode & 0o777, 0o700);
        }
        // Saving again replaces it.
        save(root.path(), &session()).unwrap();
        assert!(remove(root.path()).unwrap());
        assert!(!remove(root.path()).unwrap());
        assert!(!format!("{:?}", session()).contains(&"ab".repeat(32)));
    }

    #[test]
    fn a_garbled_file_is_reported() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join(STATE_DIR)).unwrap();
        std::fs::write(path(root.path()), "{not json").unwrap();
        let err = load(root.path()).unwrap_err();
        assert!(err.to_string().contains("log in again"), "{err}");
    }
}
