//! The catalog: every committed version of every file, by owner, name and
//! version, in the manager's database. A record is written (and flushed to
//! disk) only after all its holders reported the chunks durable, so anything
//! here can be restored.
//!
//! Records are keyed `owner \0 name \0 version` (the version as 8 big-endian
//! bytes): each user's files form one contiguous range (a listing is a prefix
//! scan), the versions of one name sit together in order, and two users may
//! both have `notes.txt`. A version stays while it is its name's latest or a
//! snapshot uses it ([`crate::snapshots`]); chunks of the versions that leave
//! are then garbage for the servers' collection.
//!
//! Two older layouts are moved into this one at start: records without an
//! owner (the tree `files`, [`Catalog::adopt_legacy`]) and records with one
//! version per name (the tree `owned_files`, [`Catalog::take_unversioned`]).

use crate::membership::NodeRef;
use dupla::kv::Kv;
use dupla::{Error, Hash, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Catalogs from before ownership: records keyed by name alone.
const LEGACY_FILES_TREE: &str = "files";
/// Catalogs from before versions: one record per owner and name.
const UNVERSIONED_FILES_TREE: &str = "owned_files";
const FILES_TREE: &str = "file_versions";

/// Records decoded at a time by a pass over the whole catalog.
pub const CATALOG_PAGE_RECORDS: usize = 1024;
const PLACEMENTS_TREE: &str = "placements";
const SERVERS_TREE: &str = "servers";

/// One committed file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Login of the user who backed it up (empty only in legacy records).
    #[serde(default)]
    pub owner: String,
    /// Catalog name, unique per owner.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// blake3 of the whole file.
    pub blake3: Hash,
    /// blake3 of each chunk, in order.
    pub chunks: Vec<Hash>,
    /// Chunk size the file was stored with (fixed layout; 0 when
    /// `chunk_lengths` is set).
    pub chunk_size: u32,
    /// Length of each chunk (content-defined chunking); empty for files
    /// stored with the fixed layout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunk_lengths: Vec<u32>,
    /// Ids of the servers holding a full copy, primary first.
    pub holders: Vec<String>,
    /// Commit time, ms since the Unix epoch.
    pub committed_unix_ms: i64,
    /// 1 for the first backup of this name, +1 for each later one.
    pub version: u64,
}

impl FileRecord {
    /// The name placement hashes for this file.
    pub fn placement_key(&self) -> String {
        placement_key(&self.owner, &self.name)
    }
}

/// The name placement hashes for `owner`'s `name`: owner and name together,
/// so one user's files spread like everyone else's and two users' files of
/// the same name land independently.
pub fn placement_key(owner: &str, name: &str) -> String {
    format!("{owner}/{name}")
}

/// A placement decision and its inputs, kept for operators and for
/// docs/placement.md's measurements.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlacementLog {
    /// Upload the decision was made for.
    pub upload_id: String,
    /// File name (the hash key).
    pub name: String,
    /// Declared size.
    pub size: u64,
    /// Server that asked.
    pub entry_id: String,
    /// Candidate ids with their free bytes and active transfers at the time.
    pub candidates: Vec<(String, u64, u32)>,
    /// Resulting order, primary first.
    pub order: Vec<String>,
    /// Decision time, ms since the Unix epoch.
    pub unix_ms: i64,
}

/// The manager's persistent state, over the [`Kv`] trait.
#[derive(Clone)]
pub struct Catalog {
    kv: Arc<dyn Kv>,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Internal(format!("encoding a record: {e}")))
}

/// The key of `owner`'s file `name` in the layout before versions. Logins
/// never contain NUL (they are `[a-z0-9_.-]`), so one owner's keys never run
/// into another's.
fn file_key(owner: &str, name: &str) -> Vec<u8> {
    let mut key = owner_prefix(owner);
    key.extend_from_slice(name.as_bytes());
    key
}

/// The prefix of every version of `owner`'s `name` (names never contain
/// NUL, so `a` never runs into `a/b`).
pub(crate) fn name_prefix(owner: &str, name: &str) -> Vec<u8> {
    let mut key = file_key(owner, name);
    key.push(0);
    key
}

/// The key of one version of `owner`'s `name`.
pub(crate) fn version_key(owner: &str, name: &str, version: u64) -> Vec<u8> {
    let mut key = name_prefix(owner, name);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// The prefix of every key of `owner`.
pub(crate) fn owner_prefix(owner: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(owner.len() + 1);
    prefix.extend_from_slice(owner.as_bytes());
    prefix.push(0);
    prefix
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Internal(format!("decoding a record: {e}")))
}

impl Catalog {
    /// A catalog over `kv`.
    pub fn new(kv: Arc<dyn Kv>) -> Self {
        Catalog { kv }
    }

    /// The latest version of `owner`'s `name`, if any is committed.
    pub fn get(&self, owner: &str, name: &str) -> Result<Option<FileRecord>> {
        Ok(self.versions_of(owner, name)?.pop())
    }

    /// Version `version` of `owner`'s `name` (0: the latest).
    pub fn get_version(&self, owner: &str, name: &str, version: u64) -> Result<Option<FileRecord>> {
        if version == 0 {
            return self.get(owner, name);
        }
        self.kv
            .get(FILES_TREE, &version_key(owner, name, version))?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Every kept version of `owner`'s `name`, oldest first.
    pub fn versions_of(&self, owner: &str, name: &str) -> Result<Vec<FileRecord>> {
        self.scan(&name_prefix(owner, name))
    }

    /// Commit `record` durably: a new version, or an update of the holders
    /// of an existing one (repair, corruption).
    pub fn put(&self, record: &FileRecord) -> Result<()> {
        self.kv.put(
            FILES_TREE,
            &version_key(&record.owner, &record.name, record.version),
            &encode(record)?,
        )?;
        self.kv.flush()
    }

    /// Remove every version of `owner`'s `name` durably, returning the
    /// latest.
    pub fn remove(&self, owner: &str, name: &str) -> Result<Option<FileRecord>> {
        let versions = self.kv.scan_prefix(FILES_TREE, &name_prefix(owner, name))?;
        for (key, _) in &versions {
            self.kv.delete(FILES_TREE, key)?;
        }
        self.kv.flush()?;
        versions.last().map(|(_, v)| decode(v)).transpose()
    }

    /// Remove one version (not flushed: the caller flushes once for a
    /// batch). Returns whether it was there.
    pub fn remove_version(&self, owner: &str, name: &str, version: u64) -> Result<bool> {
        Ok(self
            .kv
            .delete(FILES_TREE, &version_key(owner, name, version))?
            .is_some())
    }

    /// Make the removals so far durable.
    pub fn flush(&self) -> Result<()> {
        self.kv.flush()
    }

    /// Every kept version of every file of every owner, by owner, name and
    /// version.
    pub fn all(&self) -> Result<Vec<FileRecord>> {
        self.scan(b"")
    }

    /// Call `f` on every kept version of every file, by owner, name and
    /// version, reading [`CATALOG_PAGE_RECORDS`] at a time: a pass over a
    /// catalog of any size in bounded memory.
    pub fn for_each(&self, mut f: impl FnMut(FileRecord) -> Result<()>) -> Result<()> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page =
                self.kv
                    .scan_page(FILES_TREE, b"", after.as_deref(), CATALOG_PAGE_RECORDS)?;
            let full = page.len() == CATALOG_PAGE_RECORDS;
            after = page.last().map(|(k, _)| k.clone());
            for (_, value) in page {
                f(decode(&value)?)?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// The latest version of each of `owner`'s files, in name order.
    pub fn owned_by(&self, owner: &str) -> Result<Vec<FileRecord>> {
        let mut latest: Vec<FileRecord> = Vec::new();
        for record in self.scan(&owner_prefix(owner))? {
            // Versions of a name are adjacent and ascending: the last wins.
            match latest.last_mut() {
                Some(last) if last.name == record.name => *last = record,
                _ => latest.push(record),
            }
        }
        Ok(latest)
    }

    /// Remove every file of `owner` durably (their account is gone);
    /// returns how many versions there were.
    pub fn remove_owner(&self, owner: &str) -> Result<usize> {
        let keys = self.kv.scan_prefix(FILES_TREE, &owner_prefix(owner))?;
        for (key, _) in &keys {
            self.kv.delete(FILES_TREE, key)?;
        }
        self.kv.flush()?;
        Ok(keys.len())
    }

    /// Move every record of a catalog from before ownership under `owner`
    /// (an owner's own newer record of the same name wins), into the layout
    /// before versions, which [`Catalog::take_unversioned`] then moves on.
    /// Returns how many were moved; idempotent, and safe to rerun after a
    /// crash.
    pub fn adopt_legacy(&self, owner: &str) -> Result<usize> {
        let legacy = self.kv.scan_prefix(LEGACY_FILES_TREE, b"")?;
        for (_, value) in &legacy {
            let mut record: FileRecord = decode(value)?;
            record.owner = owner.to_string();
            let key = file_key(owner, &record.name);
            if self.kv.get(UNVERSIONED_FILES_TREE, &key)?.is_none()
                && self.get(owner, &record.name)?.is_none()
            {
                self.kv
                    .put(UNVERSIONED_FILES_TREE, &key, &encode(&record)?)?;
            }
        }
        // Every copy durable before any original goes: a crash in between
        // leaves copies, never none (and a rerun skips what is there).
        self.kv.flush()?;
        for (key, _) in &legacy {
            self.kv.delete(LEGACY_FILES_TREE, key)?;
        }
        self.kv.flush()?;
        Ok(legacy.len())
    }

    /// Whether records from before ownership are waiting for an owner.
    pub fn has_legacy(&self) -> Result<bool> {
        Ok(!self
            .kv
            .scan_page(LEGACY_FILES_TREE, b"", None, 1)?
            .is_empty())
    }

    /// Move the records of a catalog from before versions (one per owner and
    /// name) into the versioned layout, keeping their version numbers, and
    /// return them by owner so each owner's become a first snapshot. The
    /// copies are durable before any original goes; the caller records the
    /// snapshots, then calls [`Catalog::drop_unversioned`]. A crash in
    /// between leaves the originals, and a rerun moves nothing twice.
    pub fn take_unversioned(&self) -> Result<Vec<(String, Vec<FileRecord>)>> {
        let mut by_owner: Vec<(String, Vec<FileRecord>)> = Vec::new();
        for (_, value) in self.kv.scan_prefix(UNVERSIONED_FILES_TREE, b"")? {
            let mut record: FileRecord = decode(&value)?;
            record.version = record.version.max(1);
            let key = version_key(&record.owner, &record.name, record.version);
            if self.kv.get(FILES_TREE, &key)?.is_none() {
                self.kv.put(FILES_TREE, &key, &encode(&record)?)?;
            }
            match by_owner.last_mut() {
                Some((owner, records)) if *owner == record.owner => records.push(record),
                _ => by_owner.push((record.owner.clone(), vec![record])),
            }
        }
        self.kv.flush()?;
        Ok(by_owner)
    }

    /// Delete the records [`Catalog::take_unversioned`] moved.
    pub fn drop_unversioned(&self) -> Result<()> {
        for (key, _) in self.kv.scan_prefix(UNVERSIONED_FILES_TREE, b"")? {
            self.kv.delete(UNVERSIONED_FILES_TREE, &key)?;
        }
        self.kv.flush()
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<FileRecord>> {
        self.kv
            .scan_prefix(FILES_TREE, prefix)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// Record a placement decision (not flushed: it is a log, not a promise).
    pub fn log_placement(&self, log: &PlacementLog) -> Result<()> {
        self.kv
            .put(PLACEMENTS_TREE, log.upload_id.as_bytes(), &encode(log)?)
    }

    /// A logged placement.
    pub fn placement(&self, upload_id: &str) -> Result<Option<PlacementLog>> {
        self.kv
            .get(PLACEMENTS_TREE, upload_id.as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Remember a server's identity and address across restarts.
    pub fn save_server(&self, node: &NodeRef) -> Result<()> {
        self.kv
            .put(SERVERS_TREE, node.id.as_bytes(), &encode(node)?)?;
        self.kv.flush()
    }

    /// Servers known from earlier runs.
    pub fn servers(&self) -> Result<Vec<NodeRef>> {
        self.kv
            .scan_prefix(SERVERS_TREE, b"")?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dupla::kv::{MemoryKv, SledKv};

    fn record(name: &str) -> FileRecord {
        owned("ada", name)
    }

    fn owned(owner: &str, name: &str) -> FileRecord {
        FileRecord {
            owner: owner.into(),
            name: name.into(),
            size: 3,
            blake3: Hash::of(b"abc"),
            chunks: vec![Hash::of(b"abc")],
            chunk_size: 1 << 20,
            chunk_lengths: Vec::new(),
            holders: vec!["a".into(), "b".into()],
            committed_unix_ms: 1,
            version: 1,
        }
    }

    fn suite(catalog: &Catalog) {
        assert_eq!(catalog.get("ada", "x").unwrap(), None);
        catalog.put(&record("x")).unwrap();
        catalog.put(&record("y/z")).unwrap();
        assert_eq!(catalog.get("ada", "x").unwrap(), Some(record("x")));
        assert_eq!(catalog.all().unwrap().len(), 2);
        assert_eq!(catalog.remove("ada", "x").unwrap(), Some(record("x")));
        assert_eq!(catalog.remove("ada", "x").unwrap(), None);
    }

    #[test]
    fn owners_have_separate_namespaces() {
        let catalog = Catalog::new(Arc::new(MemoryKv::new()));
        // "ad" is a prefix of "ada": the NUL separator keeps them apart.
        for (owner, name) in [("ada", "notes.txt"), ("ad", "notes.txt"), ("bob", "a")] {
            catalog.put(&owned(owner, name)).unwrap();
        }
        assert_eq!(
            catalog.owned_by("ad").unwrap(),
            vec![owned("ad", "notes.txt")]
        );
        assert_eq!(catalog.get("bob", "notes.txt").unwrap(), None);
        assert_eq!(catalog.remove_owner("ada").unwrap(), 1);
        assert_eq!(catalog.all().unwrap().len(), 2);
        assert!(catalog.get("ad", "notes.txt").unwrap().is_some());
    }

    #[test]
    fn legacy_records_are_adopted_once() {
        let kv = Arc::new(MemoryKv::new());
        let mut legacy = owned("", "old.txt");
        legacy.owner.clear();
        kv.put(LEGACY_FILES_TREE, b"old.txt", &encode(&legacy).unwrap())
            .unwrap();
        let catalog = Catalog::new(kv);
        assert!(catalog.has_legacy().unwrap());
        assert_eq!(catalog.adopt_legacy("root").unwrap(), 1);
        assert!(!catalog.has_legacy().unwrap());
        let moved = catalog.take_unversioned().unwrap();
        assert_eq!(
            moved,
            vec![("root".to_string(), vec![owned("root", "old.txt")])]
        );
        catalog.drop_unversioned().unwrap();
        assert_eq!(
            catalog.get("root", "old.txt").unwrap(),
            Some(owned("root", "old.txt"))
        );
        assert_eq!(catalog.adopt_legacy("root").unwrap(), 0);
        assert!(catalog.take_unversioned().unwrap().is_empty());
    }

    #[test]
    fn versions_of_a_name_are_kept_apart_and_in_order() {
        let catalog = Catalog::new(Arc::new(MemoryKv::new()));
        for (name, version) in [("a", 1), ("a", 2), ("a/b", 1), ("a", 10)] {
            let mut r = record(name);
            r.version = version;
            catalog.put(&r).unwrap();
        }
        assert_eq!(catalog.get("ada", "a").unwrap().unwrap().version, 10);
        assert_eq!(
            catalog.get_version("ada", "a", 2).unwrap().unwrap().version,
            2
        );
        assert_eq!(catalog.get_version("ada", "a", 3).unwrap(), None);
        let versions: Vec<u64> = catalog
            .versions_of("ada", "a")
            .unwrap()
            .iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(versions, vec![1, 2, 10]);
        let latest: Vec<(String, u64)> = catalog
            .owned_by("ada")
            .unwrap()
            .into_iter()
            .map(|r| (r.name, r.version))
            .collect();
        assert_eq!(latest, vec![("a".into(), 10), ("a/b".into(), 1)]);
        assert_eq!(catalog.all().unwrap().len(), 4);
        assert_eq!(catalog.remove("ada", "a").unwrap().unwrap().version, 10);
        assert_eq!(catalog.all().unwrap().len(), 1);
    }

    #[test]
    fn memory_catalog() {
        suite(&Catalog::new(Arc::new(MemoryKv::new())));
    }

    #[test]
    fn sled_catalog_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        suite(&Catalog::new(Arc::new(SledKv::open(dir.path()).unwrap())));
        let reopened = Catalog::new(Arc::new(SledKv::open(dir.path()).unwrap()));
        assert_eq!(reopened.get("ada", "y/z").unwrap(), Some(record("y/z")));
    }
}
