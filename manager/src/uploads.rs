//! Uploads in progress: at most one per name, so two concurrent backups of
//! the same name cannot interleave. A record that nobody finishes expires,
//! so a crashed entry server cannot block a name for ever.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an upload may stay open without being committed or aborted
/// before another upload of the same name may take over.
pub const UPLOAD_LEASE: Duration = Duration::from_secs(30 * 60);

/// One open upload.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenUpload {
    /// Upload id handed to the entry server.
    pub id: String,
    /// Name being written.
    pub name: String,
    /// When it was opened.
    pub opened: Instant,
}

/// Open uploads, by id and by name.
#[derive(Debug, Default)]
pub struct Uploads {
    by_id: HashMap<String, OpenUpload>,
    by_name: HashMap<String, String>,
}

impl Uploads {
    /// Open an upload of `name`, unless a live one exists: then return it.
    pub fn open(&mut self, id: String, name: &str, now: Instant) -> Result<(), OpenUpload> {
        if let Some(existing) = self.by_name.get(name).and_then(|id| self.by_id.get(id)) {
            if now.saturating_duration_since(existing.opened) < UPLOAD_LEASE {
                return Err(existing.clone());
            }
            let stale = existing.id.clone();
            self.close(&stale);
        }
        self.by_name.insert(name.to_string(), id.clone());
        self.by_id.insert(
            id.clone(),
            OpenUpload {
                id,
                name: name.to_string(),
                opened: now,
            },
        );
        Ok(())
    }

    /// The open upload with this id.
    pub fn get(&self, id: &str) -> Option<&OpenUpload> {
        self.by_id.get(id)
    }

    /// Close an upload (committed or aborted); returns it if it was open.
    pub fn close(&mut self, id: &str) -> Option<OpenUpload> {
        let upload = self.by_id.remove(id)?;
        if self.by_name.get(&upload.name) == Some(&upload.id) {
            self.by_name.remove(&upload.name);
        }
        Some(upload)
    }

    /// Number of open uploads.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no upload is open.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_live_upload_per_name() {
        let mut u = Uploads::default();
        let t = Instant::now();
        u.open("1".into(), "a", t).unwrap();
        assert_eq!(u.open("2".into(), "a", t).unwrap_err().id, "1");
        u.open("3".into(), "b", t).unwrap();
        assert!(u.close("1").is_some());
        u.open("2".into(), "a", t).unwrap();
        assert_eq!(u.len(), 2);
    }

    #[test]
    fn a_stale_upload_gives_way() {
        let mut u = Uploads::default();
        let t = Instant::now();
        u.open("1".into(), "a", t).unwrap();
        u.open("2".into(), "a", t + UPLOAD_LEASE).unwrap();
        assert!(u.get("1").is_none());
        assert!(u.close("1").is_none());
        assert_eq!(u.get("2").unwrap().name, "a");
    }
}
