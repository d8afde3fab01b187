//! HTTP uploads staged by byte range under `data/http-uploads/`: one
//! `<id>.json` (owner, name, size, optional blake3) and one `<id>.part`
//! holding the bytes received so far, in order. The length of the part
//! file is the resume offset, so an upload survives a dropped connection,
//! a page reload and a restart of this server. Staging is plain disk
//! space, not the chunk store: nothing counts as backed up until the whole
//! file has gone through the write path.

use dupla::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Folder under the data directory.
pub const STAGING_DIR: &str = "http-uploads";

/// Hex digits of an upload id (128 random bits).
const ID_HEX_LEN: usize = 32;

/// What a staged upload is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    /// Whose it is: only they may continue or cancel it.
    pub owner: String,
    /// Catalog name it will have.
    pub name: String,
    /// Exact size in bytes.
    pub size: u64,
    /// blake3 the uploader declared (hex), checked against the bytes at
    /// the end; `None`: the bytes staged here are taken as they are.
    pub blake3: Option<String>,
}

/// The staging folder, and a lock per upload a request works on.
pub struct Staging {
    dir: PathBuf,
    busy: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while one request works on an upload; freed on drop (also when
/// the request is cancelled because its client went away).
pub type Busy = tokio::sync::OwnedMutexGuard<()>;

impl Staging {
    /// Use (and create) `dir`.
    pub fn open(dir: &Path) -> Result<Staging> {
        std::fs::create_dir_all(dir)?;
        Ok(Staging {
            dir: dir.to_path_buf(),
            busy: Mutex::new(HashMap::new()),
        })
    }

    /// Uploads staged now.
    pub fn len(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many uploads `owner` has staged here, and the bytes they
    /// declared: what a new one must fit beside (quota, per-user limit).
    pub fn declared_by(&self, owner: &str) -> Result<(usize, u64)> {
        let (mut count, mut bytes) = (0, 0u64);
        for entry in std::fs::read_dir(&self.dir)?.filter_map(|e| e.ok()) {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let Ok(json) = std::fs::read(&path) else {
                continue; // removed meanwhile
            };
            if let Ok(meta) = serde_json::from_slice::<Meta>(&json) {
                if meta.owner == owner {
                    count += 1;
                    bytes = bytes.saturating_add(meta.size);
                }
            }
        }
        Ok((count, bytes))
    }

    /// Stage a new upload; its id.
    pub fn create(&self, meta: &Meta) -> Result<String> {
        use std::os::unix::fs::OpenOptionsExt;
        let id = hex::encode(rand::random::<[u8; ID_HEX_LEN / 2]>());
        // Private, as chunk files are: a backup may hold anything.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.part(&id))?;
        let json = serde_json::to_vec(meta)
            .map_err(|e| Error::Internal(format!("staging metadata: {e}")))?;
        write_durably(&self.dir.join(format!("{id}.json")), &json)?;
        Ok(id)
    }

    /// The upload `id` if it exists and is `owner`'s. Another user's is
    /// `NotFound`, as if it did not exist.
    pub fn get(&self, id: &str, owner: &str) -> Result<Meta> {
        let not_found = || Error::NotFound(format!("no upload {id} of yours here; start it again"));
        if id.len() != ID_HEX_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let json = match std::fs::read(self.dir.join(format!("{id}.json"))) {
            Ok(json) => json,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        let meta: Meta = serde_json::from_slice(&json)
            .map_err(|e| Error::Internal(format!("staging metadata of {id}: {e}")))?;
        if meta.owner != owner {
            return Err(not_found());
        }
        Ok(meta)
    }

    /// Bytes staged so far: where the upload resumes.
    pub fn offset(&self, id: &str) -> Result<u64> {
        Ok(std::fs::metadata(self.part(id))?.len())
    }

    /// The file holding the staged bytes.
    pub fn part(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.part"))
    }

    fn lock_of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut busy = self.busy.lock().expect("staging lock poisoned");
        // Locks of finished requests go, so the map stays small.
        busy.retain(|_, lock| Arc::strong_count(lock) > 1);
        busy.entry(id.to_string()).or_default().clone()
    }

    /// Claim `id` for one writing request; `Aborted` while another holds
    /// it (two writers at once would interleave bytes).
    pub fn claim(&self, id: &str) -> Result<Busy> {
        self.lock_of(id).try_lock_owned().map_err(|_| {
            Error::Aborted(format!(
                "upload {id} is busy with another request; retry when it ends"
            ))
        })
    }

    /// Wait until no request works on `id` (a request cut off by a dropped
    /// connection finishes writing what arrived first), then hold it.
    pub async fn settle(&self, id: &str) -> Busy {
        self.lock_of(id).lock_owned().await
    }

    /// Forget `id` and its bytes.
    pub fn remove(&self, id: &str) -> Result<()> {
        for path in [self.part(id), self.dir.join(format!("{id}.json"))] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

impl Staging {
    /// Remove uploads nobody has added a byte to for `idle` (a page closed
    /// for good, a script that gave up); how many went.
    pub fn sweep(&self, idle: std::time::Duration) -> Result<usize> {
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)?.filter_map(|e| e.ok()) {
            let path = entry.path();
            let (Some(id), Some("part")) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok());
            // One a request works on now is not idle, whatever its age.
            if age.is_some_and(|a| a >= idle) {
                if let Ok(_busy) = self.claim(id) {
                    self.remove(id)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Write `data` to `path` through a temporary file, fsynced, renamed.
fn write_durably(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_each_owner_staged_is_counted_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::open(dir.path()).unwrap();
        let meta = |owner: &str, size| Meta {
            owner: owner.into(),
            name: "a.bin".into(),
            size,
            blake3: None,
        };
        let id = staging.create(&meta("ada", 5)).unwrap();
        staging.create(&meta("ada", 7)).unwrap();
        staging.create(&meta("bob", 100)).unwrap();
        assert_eq!(staging.declared_by("ada").unwrap(), (2, 12));
        assert_eq!(staging.declared_by("eve").unwrap(), (0, 0));
        for path in [staging.part(&id), dir.path().join(format!("{id}.json"))] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is readable by others", path.display());
        }
    }

    #[test]
    fn uploads_belong_to_their_owner_and_ids_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::open(dir.path()).unwrap();
        let meta = Meta {
            owner: "ada".into(),
            name: "a.bin".into(),
            size: 3,
            blake3: None,
        };
        let id = staging.create(&meta).unwrap();
        assert_eq!(staging.get(&id, "ada").unwrap().name, "a.bin");
        assert!(matches!(staging.get(&id, "bob"), Err(Error::NotFound(_))));
        assert!(matches!(
            staging.get("../etc", "ada"),
            Err(Error::NotFound(_))
        ));
        assert_eq!(staging.offset(&id).unwrap(), 0);
        let busy = staging.claim(&id).unwrap();
        assert!(matches!(staging.claim(&id), Err(Error::Aborted(_))));
        drop(busy);
        staging.claim(&id).unwrap();
        assert_eq!(staging.len(), 1);
        assert_eq!(
            staging.sweep(std::time::Duration::from_secs(3600)).unwrap(),
            0
        );
        assert_eq!(staging.sweep(std::time::Duration::ZERO).unwrap(), 1);
        assert!(staging.is_empty());
    }
}
