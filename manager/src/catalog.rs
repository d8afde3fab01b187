//! The catalog: every committed file, by owner and name, in the manager's
//! database. A record is written (and flushed to disk) only after all its
//! holders reported the chunks durable, so anything here can be restored.
//!
//! Records are keyed `owner \0 name`: each user's files form one contiguous
//! range (a listing is a prefix scan) and two users may both have
//! `notes.txt`. Catalogs written before files had owners (the tree `files`)
//! are moved under an owner by [`Catalog::adopt_legacy`].

use crate::membership::NodeRef;
use dupla::kv::Kv;
use dupla::{Error, Hash, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Catalogs from before ownership: records keyed by name alone.
const LEGACY_FILES_TREE: &str = "files";
const FILES_TREE: &str = "owned_files";
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
    /// Chunk size the file was stored with.
    pub chunk_size: u32,
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

/// The key of `owner`'s file `name`. Logins never contain NUL (they are
/// `[a-z0-9_.-]`), so one owner's keys never run into another's.
fn file_key(owner: &str, name: &str) -> Vec<u8> {
    let mut key = owner_prefix(owner);
    key.extend_from_slice(name.as_bytes());
    key
}

fn owner_prefix(owner: &str) -> Vec<u8> {
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

    /// `owner`'s record of `name`, if committed.
    pub fn get(&self, owner: &str, name: &str) -> Result<Option<FileRecord>> {
        self.kv
            .get(FILES_TREE, &file_key(owner, name))?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Commit `record` durably, replacing any earlier version.
    pub fn put(&self, record: &FileRecord) -> Result<()> {
        self.kv.put(
            FILES_TREE,
            &file_key(&record.owner, &record.name),
            &encode(record)?,
        )?;
        self.kv.flush()
    }

    /// Remove `owner`'s `name` durably, returning its record.
    pub fn remove(&self, owner: &str, name: &str) -> Result<Option<FileRecord>> {
        let old = self.kv.delete(FILES_TREE, &file_key(owner, name))?;
        self.kv.flush()?;
        old.map(|b| decode(&b)).transpose()
    }

    /// Every record of every owner, by owner then name.
    pub fn all(&self) -> Result<Vec<FileRecord>> {
        self.scan(b"")
    }

    /// `owner`'s records, in name order.
    pub fn owned_by(&self, owner: &str) -> Result<Vec<FileRecord>> {
        self.scan(&owner_prefix(owner))
    }

    /// Remove every file of `owner` durably (their account is gone);
    /// returns how many there were.
    pub fn remove_owner(&self, owner: &str) -> Result<usize> {
        let keys = self.kv.scan_prefix(FILES_TREE, &owner_prefix(owner))?;
        for (key, _) in &keys {
            self.kv.delete(FILES_TREE, key)?;
        }
        self.kv.flush()?;
        Ok(keys.len())
    }

    /// Move every record of a catalog from before ownership under `owner`
    /// (an owner's own newer record of the same name wins). Returns how
    /// many were moved; idempotent, and safe to rerun after a crash.
    pub fn adopt_legacy(&self, owner: &str) -> Result<usize> {
        let legacy = self.kv.scan_prefix(LEGACY_FILES_TREE, b"")?;
        for (_, value) in &legacy {
            let mut record: FileRecord = decode(value)?;
            record.owner = owner.to_string();
            if self.get(owner, &record.name)?.is_none() {
                self.kv.put(
                    FILES_TREE,
                    &file_key(owner, &record.name),
                    &encode(&record)?,
                )?;
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
        Ok(!self.kv.scan_prefix(LEGACY_FILES_TREE, b"")?.is_empty())
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
        assert_eq!(
            catalog.get("root", "old.txt").unwrap(),
            Some(owned("root", "old.txt"))
        );
        assert_eq!(catalog.adopt_legacy("root").unwrap(), 0);
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
