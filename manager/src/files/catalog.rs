//! The catalog: every committed version of every file, by owner, name and
//! version, in the manager's database. A record is written (and flushed to
//! disk) only after all its holders reported the chunks durable, so anything
//! here can be restored.
//!
//! Records are keyed `owner \0 name \0 version` (the version as 8 big-endian
//! bytes): each user's files form one contiguous range (a listing is a prefix
//! scan), the versions of one name sit together in order, and two users may
//! both have `notes.txt`. A version stays while it is its name's latest or a
//! snapshot uses it ([`crate::files::snapshots`]); chunks of the versions that leave
//! are then garbage for the servers' collection.
//!
//! # Indexes
//!
//! Beside the records the catalog keeps, in the same atomic batch as the
//! record they describe (so an index never disagrees with the records, even
//! after a crash), the indexes its requests need; no request and no
//! periodic pass decodes the whole catalog:
//!
//! - `chunk_refs`: `hash ‖ owner \0 name \0 version` → nothing: who uses a
//!   chunk (claims by hash, corruption reports);
//! - `server_files`: `server \0 ‖ owner \0 name \0 version` → size: the
//!   files a server holds (repair planning for a lost server);
//! - `server_chunks`: `server \0 ‖ hash ‖ owner \0 name \0 version` →
//!   nothing: whether a server should keep a chunk (`ChunkRefs`, GC);
//! - `degraded_files`: the records with fewer than two holders;
//! - `possessed_chunks`: chunks a user sent in an upload that failed,
//!   which they alone may claim by hash for a while (not derived from the
//!   records, so not rebuilt);
//! - `catalog_counters`: files and bytes in all, per server, per owner
//!   (quotas) and per holder set (under-replicated files in
//!   `ClusterStatus` from a handful of counters).
//!
//! Writes that maintain counters run under the catalog's own index lock;
//! the flush after them is a group commit ([`dupla::kv::SledKv`]). A
//! catalog from before the indexes gets them in one pass at start
//! ([`Catalog::open`]), a page at a time.
//!
//! Two older layouts are moved into this one at start: records without an
//! owner (the tree `files`, [`Catalog::adopt_legacy`]) and records with one
//! version per name (the tree `owned_files`, [`Catalog::take_unversioned`]).

use crate::cluster::membership::NodeRef;
use crate::config::Quota;
use dupla::kv::{Batch, Kv};
use dupla::{Error, Hash, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// Catalogs from before ownership: records keyed by name alone.
const LEGACY_FILES_TREE: &str = "files";
/// Catalogs from before versions: one record per owner and name.
const UNVERSIONED_FILES_TREE: &str = "owned_files";
const FILES_TREE: &str = "file_versions";
const CHUNK_REFS_TREE: &str = "chunk_refs";
const SERVER_FILES_TREE: &str = "server_files";
const SERVER_CHUNKS_TREE: &str = "server_chunks";
const DEGRADED_TREE: &str = "degraded_files";
/// Versions every copy of which was found corrupt: version key → ().
const LOST_TREE: &str = "lost_files";
const COUNTERS_TREE: &str = "catalog_counters";
/// Chunks a user proved they hold by sending them in an upload that did not
/// finish: `owner \0 chunk` → the time (unix ms, big-endian) until which
/// they may claim it by hash ([`Catalog::record_possession`]).
const POSSESSED_TREE: &str = "possessed_chunks";
/// Index trees, rebuilt together from the records.
const INDEX_TREES: [&str; 6] = [
    CHUNK_REFS_TREE,
    SERVER_FILES_TREE,
    SERVER_CHUNKS_TREE,
    DEGRADED_TREE,
    LOST_TREE,
    COUNTERS_TREE,
];
const META_TREE: &str = "catalog_meta";
/// Per-user quotas set by an admin: login → [`Quota`].
const QUOTAS_TREE: &str = "quotas";
/// Set once the indexes of the records exist (after the migration pass).
const INDEXED_MARK: &[u8] = b"indexed-v1";
/// Counter keys: everything, one server, one owner, one holder set.
const TOTAL_COUNTER: &[u8] = b"t";
const SERVER_COUNTER: u8 = b's';
const OWNER_COUNTER: u8 = b'o';
const HOLDERS_COUNTER: u8 = b'h';
/// Copies a file should have (fewer: it is in `degraded_files`).
const FULL_COPIES: usize = 2;

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
    /// When its last copy was found corrupt (ms since the Unix epoch); 0
    /// while a good copy may exist. A lost version cannot be restored, and
    /// the next backup sends the file again instead of calling it unchanged.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lost_unix_ms: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
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

/// Files and bytes under one counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// File versions.
    pub files: u64,
    /// Sum of their sizes (one copy).
    pub bytes: u64,
}

impl Usage {
    fn encode(self) -> Vec<u8> {
        let mut v = self.files.to_be_bytes().to_vec();
        v.extend_from_slice(&self.bytes.to_be_bytes());
        v
    }

    fn decode(bytes: &[u8]) -> Result<Usage> {
        let field = |range: std::ops::Range<usize>| {
            bytes
                .get(range)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| Error::Internal("a catalog counter is not 16 bytes".into()))
        };
        Ok(Usage {
            files: field(0..8)?,
            bytes: field(8..16)?,
        })
    }
}

/// The catalog's counters: what `ClusterStatus` shows, without a pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// Every file version.
    pub total: Usage,
    /// Per server id: the versions it holds.
    pub servers: BTreeMap<String, Usage>,
    /// Per set of holders (ids, sorted): the versions held by exactly them.
    pub holder_sets: Vec<(Vec<String>, Usage)>,
}

/// A change of counters, applied under the index lock.
#[derive(Default)]
struct Deltas(HashMap<Vec<u8>, (i64, i64)>);

impl Deltas {
    fn add(&mut self, key: Vec<u8>, sign: i64, size: u64) {
        let entry = self.0.entry(key).or_default();
        entry.0 += sign;
        entry.1 += sign * size as i64;
    }
}

/// The manager's persistent state, over the [`Kv`] trait. It owns its
/// locks and indexes: callers never scan it themselves.
#[derive(Clone)]
pub struct Catalog {
    kv: Arc<dyn Kv>,
    /// Serialises read-modify-write sequences on records (commits,
    /// removals, repairs, corruption reports), so a repair never overwrites
    /// a newer version.
    writes: Arc<Mutex<()>>,
    /// Held while a batch reads and updates the counters.
    index: Arc<Mutex<()>>,
}

fn counter_key(kind: u8, parts: &[&str]) -> Vec<u8> {
    let mut key = vec![kind];
    for part in parts {
        key.push(0);
        key.extend_from_slice(part.as_bytes());
    }
    key
}

fn server_prefix(server: &str) -> Vec<u8> {
    let mut key = server.as_bytes().to_vec();
    key.push(0);
    key
}

/// The holder set of a record, as a counter key (ids sorted).
fn holders_counter(holders: &[String]) -> Vec<u8> {
    let mut ids: Vec<&str> = holders.iter().map(String::as_str).collect();
    ids.sort_unstable();
    counter_key(HOLDERS_COUNTER, &ids)
}

fn distinct_chunks(record: &FileRecord) -> Vec<Hash> {
    let mut chunks = record.chunks.clone();
    chunks.sort_unstable_by_key(|h| h.0);
    chunks.dedup();
    chunks
}

/// Add to `batch` (or, with `remove`, take out of it) the index entries and
/// counter deltas of `record`.
fn index_ops(record: &FileRecord, remove: bool, batch: &mut Batch, deltas: &mut Deltas) {
    let vk = version_key(&record.owner, &record.name, record.version);
    let with = |prefix: &[u8]| [prefix, vk.as_slice()].concat();
    let mut write = |tree: &str, key: Vec<u8>, value: Vec<u8>| {
        if remove {
            batch.delete(tree, key)
        } else {
            batch.put(tree, key, value)
        }
    };
    let chunks = distinct_chunks(record);
    for chunk in &chunks {
        write(CHUNK_REFS_TREE, with(&chunk.0), Vec::new());
    }
    for holder in &record.holders {
        let prefix = server_prefix(holder);
        write(
            SERVER_FILES_TREE,
            with(&prefix),
            record.size.to_be_bytes().to_vec(),
        );
        for chunk in &chunks {
            write(
                SERVER_CHUNKS_TREE,
                with(&[prefix.as_slice(), &chunk.0].concat()),
                Vec::new(),
            );
        }
    }
    if record.holders.len() < FULL_COPIES {
        write(DEGRADED_TREE, vk.clone(), Vec::new());
    }
    if record.lost_unix_ms != 0 {
        write(LOST_TREE, vk.clone(), Vec::new());
    }
    let sign = if remove { -1 } else { 1 };
    deltas.add(TOTAL_COUNTER.to_vec(), sign, record.size);
    deltas.add(
        counter_key(OWNER_COUNTER, &[&record.owner]),
        sign,
        record.size,
    );
    deltas.add(holders_counter(&record.holders), sign, record.size);
    for holder in &record.holders {
        deltas.add(counter_key(SERVER_COUNTER, &[holder]), sign, record.size);
    }
}

/// The version key at the end of an index key, after `prefix_len` bytes.
fn tail_key(key: &[u8], prefix_len: usize) -> &[u8] {
    key.get(prefix_len..).unwrap_or_default()
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

/// The key of `owner`'s possession of `chunk`.
fn possession_key(owner: &str, chunk: &Hash) -> Vec<u8> {
    [owner_prefix(owner).as_slice(), &chunk.0].concat()
}

/// A big-endian unix-ms value (0 when malformed: expired).
fn decode_ms(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
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
    /// A catalog over `kv`, without checking its indexes (tests and tools
    /// that just wrote it; the manager uses [`Catalog::open`]).
    pub fn new(kv: Arc<dyn Kv>) -> Self {
        Catalog {
            kv,
            writes: Arc::new(Mutex::new(())),
            index: Arc::new(Mutex::new(())),
        }
    }

    /// The catalog in `kv`, its indexes built first if it has records from
    /// before them: a one-time pass at start, a page at a time.
    pub fn open(kv: Arc<dyn Kv>) -> Result<Self> {
        let catalog = Catalog::new(kv);
        if catalog.kv.get(META_TREE, INDEXED_MARK)?.is_none() {
            let files = catalog.rebuild_indexes()?;
            tracing::info!(files, "catalog indexes built");
        }
        catalog.prune_possessions(dupla::clock::unix_ms().max(0) as u64)?;
        Ok(catalog)
    }

    /// The records' read-modify-write lock, held while a record is read,
    /// changed and written back.
    pub fn lock_writes(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().expect("catalog lock poisoned")
    }

    /// Drop every index entry and write them again from the records.
    fn rebuild_indexes(&self) -> Result<u64> {
        let _index = self.index.lock().expect("catalog index lock poisoned");
        for tree in INDEX_TREES {
            loop {
                let page = self.kv.scan_page(tree, b"", None, CATALOG_PAGE_RECORDS)?;
                if page.is_empty() {
                    break;
                }
                let mut batch = Batch::new();
                for (key, _) in page {
                    batch.delete(tree, key);
                }
                self.kv.apply(&batch)?;
            }
        }
        let mut counters: HashMap<Vec<u8>, (i64, i64)> = HashMap::new();
        let mut files = 0;
        self.for_each_page(|records| {
            let (mut batch, mut deltas) = (Batch::new(), Deltas::default());
            for record in records {
                index_ops(record, false, &mut batch, &mut deltas);
                files += 1;
            }
            self.kv.apply(&batch)?;
            for (key, (f, b)) in deltas.0 {
                let entry = counters.entry(key).or_default();
                entry.0 += f;
                entry.1 += b;
            }
            Ok(())
        })?;
        let mut batch = Batch::new();
        for (key, (f, b)) in counters {
            let usage = Usage {
                files: f.max(0) as u64,
                bytes: b.max(0) as u64,
            };
            batch.put(COUNTERS_TREE, key, usage.encode());
        }
        batch.put(META_TREE, INDEXED_MARK.to_vec(), Vec::new());
        self.kv.apply(&batch)?;
        self.kv.flush()?;
        Ok(files)
    }

    /// Apply `removes` then `puts` (records, with their indexes and
    /// counters) in one atomic batch, not flushed.
    fn write(&self, removes: &[FileRecord], puts: &[FileRecord]) -> Result<()> {
        let _index = self.index.lock().expect("catalog index lock poisoned");
        let (mut batch, mut deltas) = (Batch::new(), Deltas::default());
        let mut replaced = Vec::new();
        for record in puts {
            let key = version_key(&record.owner, &record.name, record.version);
            if let Some(old) = self.kv.get(FILES_TREE, &key)? {
                replaced.push(decode::<FileRecord>(&old)?);
            }
        }
        for old in removes.iter().chain(&replaced) {
            index_ops(old, true, &mut batch, &mut deltas);
        }
        for record in removes {
            batch.delete(
                FILES_TREE,
                version_key(&record.owner, &record.name, record.version),
            );
        }
        for record in puts {
            index_ops(record, false, &mut batch, &mut deltas);
            batch.put(
                FILES_TREE,
                version_key(&record.owner, &record.name, record.version),
                encode(record)?,
            );
        }
        for (key, (files, bytes)) in deltas.0 {
            if (files, bytes) == (0, 0) {
                continue;
            }
            let now = match self.kv.get(COUNTERS_TREE, &key)? {
                Some(v) => Usage::decode(&v)?,
                None => Usage::default(),
            };
            let next = Usage {
                files: (now.files as i64 + files).max(0) as u64,
                bytes: (now.bytes as i64 + bytes).max(0) as u64,
            };
            if next == Usage::default() {
                batch.delete(COUNTERS_TREE, key);
            } else {
                batch.put(COUNTERS_TREE, key, next.encode());
            }
        }
        self.kv.apply(&batch)
    }

    /// The latest version of `owner`'s `name`, if any is committed. Only
    /// that one is decoded (every `Place` asks, and a big file's older
    /// versions each carry a long chunk list).
    pub fn get(&self, owner: &str, name: &str) -> Result<Option<FileRecord>> {
        self.kv
            .scan_prefix(FILES_TREE, &name_prefix(owner, name))?
            .pop()
            .map(|(_, v)| decode(&v))
            .transpose()
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
        self.write(&[], std::slice::from_ref(record))?;
        self.kv.flush()
    }

    /// Commit `record`, the next version of its name, durably, with the
    /// version it replaces (if any) removed in the same batch unless `keep`
    /// says a snapshot uses it. Call under [`Catalog::lock_writes`].
    pub fn commit(
        &self,
        record: &FileRecord,
        previous: Option<&FileRecord>,
        keep: bool,
    ) -> Result<()> {
        let removes: Vec<FileRecord> = previous.filter(|_| !keep).cloned().into_iter().collect();
        self.write(&removes, std::slice::from_ref(record))?;
        self.kv.flush()
    }

    /// Remove every version of `owner`'s `name` durably, returning the
    /// latest.
    pub fn remove(&self, owner: &str, name: &str) -> Result<Option<FileRecord>> {
        let versions = self.versions_of(owner, name)?;
        self.write(&versions, &[])?;
        self.kv.flush()?;
        Ok(versions.last().cloned())
    }

    /// Remove one version (not flushed: the caller flushes once for a
    /// batch). Returns whether it was there.
    pub fn remove_version(&self, owner: &str, name: &str, version: u64) -> Result<bool> {
        match self.get_version(owner, name, version)? {
            Some(record) if version > 0 => {
                self.write(&[record], &[])?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Make the removals so far durable.
    pub fn flush(&self) -> Result<()> {
        self.kv.flush()
    }

    /// Every kept version of every file of every owner, by owner, name and
    /// version (tests and small tools only: it holds the whole catalog).
    #[cfg(test)]
    pub fn all(&self) -> Result<Vec<FileRecord>> {
        self.scan(b"")
    }

    /// Call `f` on every kept version of every file, [`CATALOG_PAGE_RECORDS`]
    /// at a time, by owner, name and version: only for the one-time
    /// migration at start (no request or periodic pass reads the whole
    /// catalog).
    fn for_each_page(&self, mut f: impl FnMut(&[FileRecord]) -> Result<()>) -> Result<()> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page =
                self.kv
                    .scan_page(FILES_TREE, b"", after.as_deref(), CATALOG_PAGE_RECORDS)?;
            let full = page.len() == CATALOG_PAGE_RECORDS;
            after = page.last().map(|(k, _)| k.clone());
            let records = page
                .iter()
                .map(|(_, v)| decode(v))
                .collect::<Result<Vec<FileRecord>>>()?;
            f(&records)?;
            if !full {
                return Ok(());
            }
        }
    }

    /// The counters: files and bytes in all, per server, per holder set.
    pub fn counts(&self) -> Result<Counts> {
        let mut counts = Counts {
            total: self.counter(TOTAL_COUNTER)?,
            ..Counts::default()
        };
        for (key, value) in self.kv.scan_prefix(COUNTERS_TREE, &[SERVER_COUNTER, 0])? {
            let id = String::from_utf8_lossy(tail_key(&key, 2)).into_owned();
            counts.servers.insert(id, Usage::decode(&value)?);
        }
        for (key, value) in self.kv.scan_prefix(COUNTERS_TREE, &[HOLDERS_COUNTER])? {
            let ids = tail_key(&key, 2)
                .split(|b| *b == 0)
                .map(|id| String::from_utf8_lossy(id).into_owned())
                .collect();
            counts.holder_sets.push((ids, Usage::decode(&value)?));
        }
        Ok(counts)
    }

    /// What `owner`'s kept versions take (quotas).
    pub fn usage(&self, owner: &str) -> Result<Usage> {
        self.counter(&counter_key(OWNER_COUNTER, &[owner]))
    }

    fn counter(&self, key: &[u8]) -> Result<Usage> {
        match self.kv.get(COUNTERS_TREE, key)? {
            Some(v) => Usage::decode(&v),
            None => Ok(Usage::default()),
        }
    }

    /// Records by version key, read from the index entries of `page`
    /// whose version key starts after `prefix_len` bytes (entries whose
    /// record went meanwhile are skipped).
    fn records_of(
        &self,
        page: &[(Vec<u8>, Vec<u8>)],
        prefix_len: usize,
    ) -> Result<Vec<FileRecord>> {
        let mut records = Vec::with_capacity(page.len());
        for (key, _) in page {
            if let Some(value) = self.kv.get(FILES_TREE, tail_key(key, prefix_len))? {
                records.push(decode(&value)?);
            }
        }
        Ok(records)
    }

    /// At most `limit` of the versions `server` holds, after the version key
    /// `after`; returns them with the key to continue from. Reads only
    /// that server's part of the index.
    pub fn held_by(
        &self,
        server: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<FileRecord>, Option<Vec<u8>>)> {
        let prefix = server_prefix(server);
        let after = after.map(|a| [prefix.as_slice(), a].concat());
        let page = self
            .kv
            .scan_page(SERVER_FILES_TREE, &prefix, after.as_deref(), limit)?;
        let next = (page.len() == limit)
            .then(|| page.last().map(|(k, _)| tail_key(k, prefix.len()).to_vec()))
            .flatten();
        Ok((self.records_of(&page, prefix.len())?, next))
    }

    /// The latest versions whose every copy was found corrupt: what users
    /// must back up again.
    pub fn lost_latest(&self) -> Result<Vec<FileRecord>> {
        let marked = self.kv.scan_page(LOST_TREE, b"", None, usize::MAX)?;
        let mut lost = Vec::new();
        for record in self.records_of(&marked, 0)? {
            let latest = self.get(&record.owner, &record.name)?;
            if latest.is_some_and(|l| l.version == record.version) {
                lost.push(record);
            }
        }
        Ok(lost)
    }

    /// `owner`'s lost versions, as (name, version).
    pub fn lost_of(&self, owner: &str) -> Result<std::collections::HashSet<(String, u64)>> {
        let marked = self
            .kv
            .scan_page(LOST_TREE, &owner_prefix(owner), None, usize::MAX)?;
        Ok(self
            .records_of(&marked, 0)?
            .into_iter()
            .map(|r| (r.name, r.version))
            .collect())
    }

    /// At most `limit` of the versions with fewer than two holders.
    pub fn degraded(&self, limit: usize) -> Result<Vec<FileRecord>> {
        let page = self.kv.scan_page(DEGRADED_TREE, b"", None, limit)?;
        self.records_of(&page, 0)
    }

    /// Whether a version `server` holds uses `chunk`: the server must keep it.
    pub fn server_uses(&self, server: &str, chunk: &Hash) -> Result<bool> {
        let prefix = [server_prefix(server).as_slice(), &chunk.0].concat();
        Ok(!self
            .kv
            .scan_page(SERVER_CHUNKS_TREE, &prefix, None, 1)?
            .is_empty())
    }

    /// How many leading `chunks` `owner` may claim by hash (a resumed
    /// upload, chunks sent by reference). A hash is not proof of holding
    /// the bytes, so a chunk is claimable only when one of `owner`'s own
    /// versions uses it, or when `owner` sent its bytes in an upload that
    /// did not finish ([`Catalog::record_possession`], until that expires):
    /// never a chunk only another user sent (a version of theirs, or their
    /// unfinished upload), nor one whose last user went (a removed file or
    /// version, a deleted account). Each lookup reads one or two keys.
    pub fn claimable(&self, owner: &str, chunks: &[Hash]) -> Result<u64> {
        let now = dupla::clock::unix_ms().max(0) as u64;
        let mut count = 0;
        for chunk in chunks {
            let own = [chunk.0.as_slice(), &owner_prefix(owner)].concat();
            let claimable = !self
                .kv
                .scan_page(CHUNK_REFS_TREE, &own, None, 1)?
                .is_empty()
                || self
                    .kv
                    .get(POSSESSED_TREE, &possession_key(owner, chunk))?
                    .is_some_and(|until| decode_ms(&until) > now);
            if !claimable {
                break;
            }
            count += 1;
        }
        Ok(count)
    }

    /// Record that `owner` sent the bytes of `chunks` (a hop received and
    /// verified them in an upload that then failed), so they may claim them
    /// by hash until `until_ms`.
    pub fn record_possession(&self, owner: &str, chunks: &[Hash], until_ms: u64) -> Result<()> {
        let mut batch = Batch::new();
        for chunk in chunks {
            batch.put(
                POSSESSED_TREE,
                possession_key(owner, chunk),
                until_ms.to_be_bytes().to_vec(),
            );
        }
        self.kv.apply(&batch)
    }

    /// Forget the possessions that expired before `now_ms`; returns how
    /// many went. Run at start, so the tree holds at most a grace period's
    /// worth of failed uploads.
    pub fn prune_possessions(&self, now_ms: u64) -> Result<usize> {
        let mut batch = Batch::new();
        let mut pruned = 0;
        for (key, until) in self.kv.scan_prefix(POSSESSED_TREE, b"")? {
            if decode_ms(&until) <= now_ms {
                batch.delete(POSSESSED_TREE, key);
                pruned += 1;
            }
        }
        self.kv.apply(&batch)?;
        Ok(pruned)
    }

    /// Forget `server` as a holder of every version using one of `corrupt`,
    /// unless it is the version's last holder (then the copy stays listed:
    /// a partly damaged copy beats none, and a download still tries it).
    /// Reads only the versions using those chunks. Returns how many
    /// versions changed.
    pub fn drop_corrupt_holder(&self, server: &str, corrupt: &HashSet<Hash>) -> Result<u64> {
        let _writes = self.lock_writes();
        let mut affected = 0;
        for chunk in corrupt {
            let mut after: Option<Vec<u8>> = None;
            loop {
                let prefix = [server_prefix(server).as_slice(), &chunk.0].concat();
                let page = self.kv.scan_page(
                    SERVER_CHUNKS_TREE,
                    &prefix,
                    after.as_deref(),
                    CATALOG_PAGE_RECORDS,
                )?;
                let full = page.len() == CATALOG_PAGE_RECORDS;
                after = page.last().map(|(k, _)| k.clone());
                // Another holder may still have a good copy: this one stops
                // counting. The last holder stays listed (a version has
                // one), and the version is marked lost.
                let changed: Vec<FileRecord> = self
                    .records_of(&page, prefix.len())?
                    .into_iter()
                    .filter(|r| r.holders.len() > 1 || r.lost_unix_ms == 0)
                    .map(|mut r| {
                        if r.holders.len() > 1 {
                            r.holders.retain(|h| h != server);
                        } else {
                            r.lost_unix_ms = dupla::clock::unix_ms();
                            tracing::error!(owner = %r.owner, name = %r.name, version = r.version,
                                "every copy of this version was found corrupt: it is lost until backed up again");
                        }
                        r
                    })
                    .collect();
                affected += changed.len() as u64;
                self.write(&[], &changed)?;
                if !full {
                    break;
                }
            }
        }
        self.kv.flush()?;
        Ok(affected)
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

    /// Remove every file of `owner` durably (their account is gone), a
    /// page at a time; returns how many versions there were.
    pub fn remove_owner(&self, owner: &str) -> Result<usize> {
        let mut possessions = Batch::new();
        for (key, _) in self.kv.scan_prefix(POSSESSED_TREE, &owner_prefix(owner))? {
            possessions.delete(POSSESSED_TREE, key);
        }
        self.kv.apply(&possessions)?;
        let mut removed = 0;
        loop {
            let page =
                self.kv
                    .scan_page(FILES_TREE, &owner_prefix(owner), None, CATALOG_PAGE_RECORDS)?;
            if page.is_empty() {
                break;
            }
            let records = page
                .iter()
                .map(|(_, v)| decode(v))
                .collect::<Result<Vec<FileRecord>>>()?;
            removed += records.len();
            self.write(&records, &[])?;
        }
        self.kv.flush()?;
        Ok(removed)
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
                self.write(&[], std::slice::from_ref(&record))?;
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

    /// `login`'s own quota, if an admin set one.
    pub fn quota(&self, login: &str) -> Result<Option<Quota>> {
        self.kv
            .get(QUOTAS_TREE, login.as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Set `login`'s own quota durably (`None`: the default applies).
    pub fn set_quota(&self, login: &str, quota: Option<Quota>) -> Result<()> {
        match quota {
            Some(q) => self.kv.put(QUOTAS_TREE, login.as_bytes(), &encode(&q)?)?,
            None => {
                self.kv.delete(QUOTAS_TREE, login.as_bytes())?;
            }
        }
        self.kv.flush()
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

    /// Forget a retired server's identity (it holds no file any more).
    pub fn forget_server(&self, id: &str) -> Result<()> {
        self.kv.delete(SERVERS_TREE, id.as_bytes())?;
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
            lost_unix_ms: 0,
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

    /// Every entry of every index tree derived from the records (and the
    /// counters).
    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    fn index_dump(kv: &dyn Kv) -> Vec<(String, Entries)> {
        INDEX_TREES
            .iter()
            .map(|t| (t.to_string(), kv.scan_prefix(t, b"").unwrap()))
            .collect()
    }

    fn with(
        owner: &str,
        name: &str,
        version: u64,
        chunks: &[&[u8]],
        holders: &[&str],
    ) -> FileRecord {
        FileRecord {
            version,
            size: 10 * version,
            chunks: chunks.iter().map(|c| Hash::of(c)).collect(),
            holders: holders.iter().map(|h| h.to_string()).collect(),
            ..owned(owner, name)
        }
    }

    /// The indexes after a mix of writes are those a rebuild from the
    /// records alone gives, and they answer the requests' questions.
    fn index_suite(kv: Arc<dyn Kv>) {
        let catalog = Catalog::open(kv.clone()).unwrap();
        catalog
            .commit(
                &with("ada", "a", 1, &[b"x", b"y", b"x"], &["s1", "s2"]),
                None,
                false,
            )
            .unwrap();
        let a1 = catalog.get("ada", "a").unwrap().unwrap();
        catalog
            .commit(
                &with("ada", "a", 2, &[b"y", b"z"], &["s1", "s2"]),
                Some(&a1),
                false,
            )
            .unwrap();
        catalog
            .put(&with("bob", "b", 1, &[b"shared"], &["s2"]))
            .unwrap();
        catalog
            .put(&with("ada", "c", 1, &[b"shared", b"gone"], &["s1", "s3"]))
            .unwrap();
        // A repair: new holders for the same version.
        catalog
            .put(&with("bob", "b", 1, &[b"shared"], &["s2", "s3"]))
            .unwrap();
        catalog.remove("ada", "c").unwrap();

        let counts = catalog.counts().unwrap();
        assert_eq!(
            counts.total,
            Usage {
                files: 2,
                bytes: 30
            }
        );
        assert_eq!(
            counts.servers["s1"],
            Usage {
                files: 1,
                bytes: 20
            }
        );
        assert_eq!(
            counts.servers["s3"],
            Usage {
                files: 1,
                bytes: 10
            }
        );
        assert!(!counts.servers.contains_key("s4"));
        assert_eq!(
            catalog.usage("ada").unwrap(),
            Usage {
                files: 1,
                bytes: 20
            }
        );
        assert_eq!(counts.holder_sets.len(), 2);
        assert!(catalog.server_uses("s1", &Hash::of(b"z")).unwrap());
        assert!(!catalog.server_uses("s1", &Hash::of(b"x")).unwrap());
        assert!(catalog.server_uses("s3", &Hash::of(b"shared")).unwrap());
        assert!(!catalog.server_uses("s1", &Hash::of(b"shared")).unwrap());
        let (held, next) = catalog.held_by("s2", None, 10).unwrap();
        assert_eq!(held.len(), 2);
        assert_eq!(next, None);
        let (first, next) = catalog.held_by("s2", None, 1).unwrap();
        let (second, _) = catalog.held_by("s2", next.as_deref(), 1).unwrap();
        assert_ne!(first, second);
        assert!(catalog.degraded(10).unwrap().is_empty());

        // Claims: own chunks yes; another user's, or a removed file's, no;
        // chunks the catalog never saw only by who sent them (an unfinished
        // upload's), until that expires.
        let claim = |owner: &str, chunks: &[&[u8]]| {
            let hashes: Vec<Hash> = chunks.iter().map(|c| Hash::of(c)).collect();
            catalog.claimable(owner, &hashes).unwrap()
        };
        assert_eq!(claim("ada", &[b"y", b"z", b"new"]), 2, "no one sent new");
        let now = dupla::clock::unix_ms() as u64;
        catalog
            .record_possession("ada", &[Hash::of(b"new")], now + 60_000)
            .unwrap();
        catalog
            .record_possession("ada", &[Hash::of(b"old")], now - 1)
            .unwrap();
        assert_eq!(claim("ada", &[b"y", b"z", b"new"]), 3);
        assert_eq!(claim("ada", &[b"old"]), 0, "an expired possession");
        assert_eq!(catalog.prune_possessions(now).unwrap(), 1);
        assert_eq!(claim("bob", &[b"new", b"y"]), 0, "ada's unfinished upload");
        assert_eq!(claim("ada", &[b"shared"]), 0, "bob's chunk");
        assert_eq!(claim("bob", &[b"gone"]), 0, "a removed file's chunk");
        assert_eq!(claim("ada", &[b"x"]), 0, "a replaced version's chunk");
        // A chunk used again leaves the released set.
        catalog
            .put(&with("bob", "d", 1, &[b"gone"], &["s1", "s2"]))
            .unwrap();
        assert_eq!(claim("bob", &[b"gone"]), 1);
        assert_eq!(claim("ada", &[b"gone"]), 0);

        let corrupt: HashSet<Hash> = [Hash::of(b"shared")].into_iter().collect();
        assert_eq!(catalog.drop_corrupt_holder("s2", &corrupt).unwrap(), 1);
        assert_eq!(
            catalog.get("bob", "b").unwrap().unwrap().holders,
            vec!["s3"]
        );
        assert_eq!(catalog.degraded(10).unwrap().len(), 1);
        assert_eq!(catalog.remove_owner("bob").unwrap(), 2);
        assert_eq!(catalog.usage("bob").unwrap(), Usage::default());
        assert_eq!(claim("ada", &[b"shared"]), 0, "a deleted account's chunk");

        let incremental = index_dump(kv.as_ref());
        kv.delete(META_TREE, INDEXED_MARK).unwrap();
        let rebuilt = Catalog::open(kv.clone()).unwrap();
        assert_eq!(index_dump(kv.as_ref()), incremental);
        assert_eq!(rebuilt.counts().unwrap(), catalog.counts().unwrap());
    }

    #[test]
    fn memory_indexes_match_a_rebuild() {
        index_suite(Arc::new(MemoryKv::new()));
    }

    #[test]
    fn sled_indexes_match_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        index_suite(Arc::new(SledKv::open(dir.path()).unwrap()));
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
