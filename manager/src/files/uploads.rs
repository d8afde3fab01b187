//! Uploads in progress: at most one per owner and name, so two concurrent
//! backups of the same file cannot interleave (two users' files of the same
//! name are different files). A record that nobody finishes gives way
//! when its entry server is no longer up (it crashed mid-upload) or after a
//! lease, so nothing blocks a name for ever.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long an upload may stay open without being committed or aborted
/// before another upload of the same name may take over.
pub const UPLOAD_LEASE: Duration = Duration::from_secs(30 * 60);

/// One open upload.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenUpload {
    /// Upload id handed to the entry server.
    pub id: String,
    /// Login of the user backing it up.
    pub owner: String,
    /// Name being written.
    pub name: String,
    /// Entry server coordinating it.
    pub entry: String,
    /// When it was opened.
    pub opened: Instant,
}

impl OpenUpload {
    fn key(&self) -> (String, String) {
        (self.owner.clone(), self.name.clone())
    }
}

/// How many closed uploads keep their owner known: a hop of a failed
/// upload may report what it received just after the entry aborted it.
const RECENTLY_CLOSED: usize = 4096;

/// Open uploads, by id and by owner and name.
#[derive(Debug, Default)]
pub struct Uploads {
    by_id: HashMap<String, OpenUpload>,
    /// (owner, name) → upload id.
    by_name: HashMap<(String, String), String>,
    /// (upload id, owner) of the last uploads closed, oldest first.
    closed: VecDeque<(String, String)>,
}

impl Uploads {
    /// Open `upload`, unless a live upload of the same name exists: then
    /// return that one. An existing upload is stale (and replaced) when its
    /// lease ran out or `entry_up` says its entry server is gone; with
    /// `takeover` (its owner resumes it) it is replaced in any case, and a
    /// commit of it later fails.
    pub fn open(
        &mut self,
        upload: OpenUpload,
        takeover: bool,
        entry_up: impl Fn(&str) -> bool,
    ) -> Result<(), OpenUpload> {
        if let Some(existing) = self
            .by_name
            .get(&upload.key())
            .and_then(|id| self.by_id.get(id))
        {
            let expired = upload.opened.saturating_duration_since(existing.opened) >= UPLOAD_LEASE;
            if !takeover && !expired && entry_up(&existing.entry) {
                return Err(existing.clone());
            }
            let stale = existing.id.clone();
            self.close(&stale);
        }
        self.by_name.insert(upload.key(), upload.id.clone());
        self.by_id.insert(upload.id.clone(), upload);
        Ok(())
    }

    /// The open upload with this id.
    pub fn get(&self, id: &str) -> Option<&OpenUpload> {
        self.by_id.get(id)
    }

    /// Close an upload (committed or aborted); returns it if it was open.
    pub fn close(&mut self, id: &str) -> Option<OpenUpload> {
        let upload = self.by_id.remove(id)?;
        if self.by_name.get(&upload.key()) == Some(&upload.id) {
            self.by_name.remove(&upload.key());
        }
        if self.closed.len() == RECENTLY_CLOSED {
            self.closed.pop_front();
        }
        self.closed
            .push_back((upload.id.clone(), upload.owner.clone()));
        Some(upload)
    }

    /// The owner of upload `id`, open or among the last closed.
    pub fn owner_of(&self, id: &str) -> Option<String> {
        match self.by_id.get(id) {
            Some(upload) => Some(upload.owner.clone()),
            None => self
                .closed
                .iter()
                .rev()
                .find(|(closed, _)| closed == id)
                .map(|(_, owner)| owner.clone()),
        }
    }

    /// Close every upload of `owner` (their account is gone) and forget
    /// they were theirs; returns them.
    pub fn close_owner(&mut self, owner: &str) -> Vec<OpenUpload> {
        let ids: Vec<String> = self
            .by_id
            .values()
            .filter(|u| u.owner == owner)
            .map(|u| u.id.clone())
            .collect();
        let closed = ids.iter().filter_map(|id| self.close(id)).collect();
        self.closed.retain(|(_, o)| o != owner);
        closed
    }

    /// Whose uploads are open now: the users transferring.
    pub fn owners(&self) -> std::collections::HashSet<String> {
        self.by_id.values().map(|u| u.owner.clone()).collect()
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

    fn upload(id: &str, name: &str, entry: &str, opened: Instant) -> OpenUpload {
        OpenUpload {
            id: id.into(),
            owner: "ada".into(),
            name: name.into(),
            entry: entry.into(),
            opened,
        }
    }

    #[test]
    fn one_live_upload_per_name() {
        let mut u = Uploads::default();
        let t = Instant::now();
        u.open(upload("1", "a", "e", t), false, |_| true).unwrap();
        assert_eq!(
            u.open(upload("2", "a", "e", t), false, |_| true)
                .unwrap_err()
                .id,
            "1"
        );
        u.open(upload("3", "b", "e", t), false, |_| true).unwrap();
        assert!(u.close("1").is_some());
        u.open(upload("2", "a", "e", t), false, |_| true).unwrap();
        assert_eq!(u.len(), 2);
    }

    #[test]
    fn different_owners_may_upload_the_same_name() {
        let mut u = Uploads::default();
        let t = Instant::now();
        u.open(upload("1", "a", "e", t), false, |_| true).unwrap();
        let mut bob = upload("2", "a", "e", t);
        bob.owner = "bob".into();
        u.open(bob, false, |_| true).unwrap();
        assert_eq!(u.len(), 2);
    }

    #[test]
    fn closing_an_owner_closes_only_theirs() {
        let mut u = Uploads::default();
        let t = Instant::now();
        u.open(upload("1", "a", "e", t), false, |_| true).unwrap();
        let mut bob = upload("2", "a", "e", t);
        bob.owner = "bob".into();
        u.open(bob, false, |_| true).unwrap();
        let closed = u.close_owner("ada");
        assert_eq!(closed.len(), 1);
        assert!(u.get("1").is_none());
        assert!(u.get("2").is_some());
        assert_eq!(
            u.owner_of("1"),
            None,
            "a deleted owner's upload is no one's"
        );
    }

    #[test]
    fn a_closed_upload_keeps_its_owner_for_late_reports() {
        let mut u = Uploads::default();
        let t = Instant::now();
        u.open(upload("1", "a", "e", t), false, |_| true).unwrap();
        assert_eq!(u.owner_of("1").as_deref(), Some("ada"));
        u.close("1");
        assert_eq!(u.owner_of("1").as_deref(), Some("ada"));
        for i in 0..RECENTLY_CLOSED {
            let id = format!("x{i}");
            u.open(upload(&id, &id, "e", t), false, |_| true).unwrap();
            u.close(&id);
        }
        assert_eq!(u.owner_of("1"), None, "only the last closed are kept");
        assert_eq!(u.owner_of("nope"), None);
    }

    #[test]
    fn a_resume_takes_over_a_live_upload_of_the_name() {
        let mut u = Uploads::default();
        let t = Instant::now();
        u.open(upload("1", "a", "e", t), false, |_| true).unwrap();
        u.open(upload("2", "a", "e", t), true, |_| true).unwrap();
        assert!(u.get("1").is_none(), "the old upload can no longer commit");
        assert_eq!(u.len(), 1);
    }

    #[test]
    fn a_stale_upload_gives_way() {
        let mut u = Uploads::default();
        let t = Instant::now();
        u.open(upload("1", "a", "e", t), false, |_| true).unwrap();
        u.open(upload("2", "a", "e", t + UPLOAD_LEASE), false, |_| true)
            .unwrap();
        assert!(u.get("1").is_none());
        assert!(u.close("1").is_none());
        assert_eq!(u.get("2").unwrap().name, "a");
    }

    #[test]
    fn an_upload_whose_entry_died_gives_way() {
        let mut u = Uploads::default();
        let t = Instant::now();
        u.open(upload("1", "a", "crashed", t), false, |_| true)
            .unwrap();
        u.open(upload("2", "a", "other", t), false, |id| id != "crashed")
            .unwrap();
        assert!(u.get("1").is_none());
    }
}
