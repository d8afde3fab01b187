//! The catalog: every committed file, by name, in the manager's database.
//! A record is written (and flushed to disk) only after all its holders
//! reported the chunks durable, so anything here can be restored.

use crate::membership::NodeRef;
use dupla::kv::Kv;
use dupla::{Error, Hash, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const FILES_TREE: &str = "files";
const PLACEMENTS_TREE: &str = "placements";
const SERVERS_TREE: &str = "servers";

/// One committed file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Catalog name.
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

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Internal(format!("decoding a record: {e}")))
}

impl Catalog {
    /// A catalog over `kv`.
    pub fn new(kv: Arc<dyn Kv>) -> Self {
        Catalog { kv }
    }

    /// The record of `name`, if committed.
    pub fn get(&self, name: &str) -> Result<Option<FileRecord>> {
        self.kv
            .get(FILES_TREE, name.as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Commit `record` durably, replacing any earlier version.
    pub fn put(&self, record: &FileRecord) -> Result<()> {
        self.kv
            .put(FILES_TREE, record.name.as_bytes(), &encode(record)?)?;
        self.kv.flush()
    }

    /// Remove `name` durably, returning its record.
    pub fn remove(&self, name: &str) -> Result<Option<FileRecord>> {
        let old = self.kv.delete(FILES_TREE, name.as_bytes())?;
        self.kv.flush()?;
        old.map(|b| decode(&b)).transpose()
    }

    /// Every record, in name order.
    pub fn all(&self) -> Result<Vec<FileRecord>> {
        self.kv
            .scan_prefix(FILES_TREE, b"")?
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
        FileRecord {
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
        assert_eq!(catalog.get("x").unwrap(), None);
        catalog.put(&record("x")).unwrap();
        catalog.put(&record("y/z")).unwrap();
        assert_eq!(catalog.get("x").unwrap(), Some(record("x")));
        assert_eq!(catalog.all().unwrap().len(), 2);
        assert_eq!(catalog.remove("x").unwrap(), Some(record("x")));
        assert_eq!(catalog.remove("x").unwrap(), None);
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
        assert_eq!(reopened.get("y/z").unwrap(), Some(record("y/z")));
    }
}
