//! The small storage trait the manager keeps its state behind: named trees
//! of ordered byte keys. sled implements it on disk; [`MemoryKv`] in memory
//! for fast tests. Both run the same test suite below.

use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

/// One write of a [`Batch`]: a value to set, or `None` to remove the key.
pub type BatchOp = (String, Vec<u8>, Option<Vec<u8>>);

/// Writes to several trees applied all together or not at all: a record
/// and its index entries never disagree, even after a crash.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    /// The writes, in order (a later write of a key wins).
    pub ops: Vec<BatchOp>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `key` to `value` in `tree`.
    pub fn put(&mut self, tree: &str, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((tree.to_string(), key, Some(value)));
    }

    /// Remove `key` from `tree`.
    pub fn delete(&mut self, tree: &str, key: Vec<u8>) {
        self.ops.push((tree.to_string(), key, None));
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// Ordered key/value trees with durable flush.
pub trait Kv: Send + Sync + 'static {
    /// Value of `key` in `tree`.
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Set `key` to `value` in `tree`.
    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<()>;
    /// Remove `key` from `tree`, returning the old value.
    fn delete(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Every entry of `tree` whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// At most `limit` entries of `tree` whose key starts with `prefix` and
    /// comes after `after` (from the first when `None`), in key order: a
    /// long range read page by page, in bounded memory.
    fn scan_page(
        &self,
        tree: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Make every write so far durable (fsync).
    fn flush(&self) -> Result<()>;
    /// Apply every write of `batch` atomically, across trees (not flushed).
    fn apply(&self, batch: &Batch) -> Result<()>;
}

/// Bytes of database pages sled keeps in memory. sled's default (1 GiB)
/// lets a node's memory grow with its catalog; the pages not cached here are
/// still in the kernel's page cache.
pub const SLED_CACHE_BYTES: u64 = 64 << 20;

/// How many times [`SledKv::open`] retries a database lock still held by
/// this process's previous instance, and the pause between tries (1 s in all).
const LOCK_RETRIES: u32 = 50;
const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Mode of a database directory: private to the node's user.
pub const DB_DIR_MODE: u32 = 0o700;

/// [`Kv`] on a sled database directory.
pub struct SledKv {
    db: sled::Db,
    flushes: GroupCommit,
}

/// Group commit: callers that ask for a flush while one runs wait for the
/// next one, which covers all of them, so many small commits share one
/// fsync instead of queueing one each.
#[derive(Default)]
struct GroupCommit {
    /// Tickets handed out, one per flush asked for.
    asked: AtomicU64,
    /// (highest ticket a finished flush covers, whether a flush runs now).
    state: Mutex<(u64, bool)>,
    done: Condvar,
}

impl GroupCommit {
    /// Return once a flush that started after this call has finished.
    fn flush(&self, fsync: impl Fn() -> Result<()>) -> Result<()> {
        let ticket = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let mut state = self.state.lock().expect("flush lock poisoned");
        loop {
            if state.0 >= ticket {
                return Ok(());
            }
            if state.1 {
                state = self.done.wait(state).expect("flush lock poisoned");
                continue;
            }
            // Lead this flush: it covers every ticket handed out so far.
            state.1 = true;
            let covers = self.asked.load(Ordering::SeqCst);
            drop(state);
            let result = fsync();
            state = self.state.lock().expect("flush lock poisoned");
            state.1 = false;
            if result.is_ok() {
                state.0 = state.0.max(covers);
            }
            self.done.notify_all();
            result?;
        }
    }
}

fn storage_err(e: sled::Error) -> Error {
    Error::Internal(format!("database: {e}"))
}

impl SledKv {
    /// Open (or create) the database in `dir`.
    ///
    /// sled's background threads can hold a just-dropped database's file
    /// lock for a few milliseconds, so a reopen in the same process (a
    /// restarted node in the test harness) retries a held lock briefly
    /// before giving up; another live process holding it still fails.
    pub fn open(dir: &Path) -> Result<Self> {
        // Accounts, tokens and the catalog: nobody but the node's user may
        // list or read them, whatever sled's own file modes.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DB_DIR_MODE))?;
        }
        let mut attempt = 0;
        loop {
            let opened = sled::Config::new()
                .path(dir)
                .cache_capacity(SLED_CACHE_BYTES)
                .open();
            match opened {
                Ok(db) => {
                    return Ok(SledKv {
                        db,
                        flushes: GroupCommit::default(),
                    })
                }
                // sled reports a held lock as an `Other` io error naming it.
                Err(sled::Error::Io(e))
                    if attempt < LOCK_RETRIES
                        && e.to_string().starts_with("could not acquire lock") =>
                {
                    attempt += 1;
                    std::thread::sleep(LOCK_RETRY_PAUSE);
                }
                Err(e) => {
                    return Err(Error::Unavailable(format!(
                        "cannot open database {}: {e}",
                        dir.display()
                    )))
                }
            }
        }
    }

    fn tree(&self, name: &str) -> Result<sled::Tree> {
        self.db.open_tree(name).map_err(storage_err)
    }
}

impl Kv for SledKv {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree(tree)?
            .get(key)
            .map_err(storage_err)?
            .map(|v| v.to_vec()))
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree(tree)?.insert(key, value).map_err(storage_err)?;
        Ok(())
    }

    fn delete(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree(tree)?
            .remove(key)
            .map_err(storage_err)?
            .map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tree(tree)?
            .scan_prefix(prefix)
            .map(|item| {
                let (k, v) = item.map_err(storage_err)?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    fn scan_page(
        &self,
        tree: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let tree = self.tree(tree)?;
        let range = match after {
            Some(after) => tree
                .range::<&[u8], _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => tree.range::<&[u8], _>(prefix..),
        };
        let mut page = Vec::new();
        for item in range {
            let (k, v) = item.map_err(storage_err)?;
            if !k.starts_with(prefix) || page.len() == limit {
                break;
            }
            page.push((k.to_vec(), v.to_vec()));
        }
        Ok(page)
    }

    fn flush(&self) -> Result<()> {
        self.flushes.flush(|| {
            self.db.flush().map_err(storage_err)?;
            Ok(())
        })
    }

    fn apply(&self, batch: &Batch) -> Result<()> {
        use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
        if batch.is_empty() {
            return Ok(());
        }
        let mut names: Vec<&str> = batch.ops.iter().map(|(t, _, _)| t.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        if let [name] = names.as_slice() {
            // One tree: sled applies its own batch atomically, at a
            // fraction of a transaction's cost (no read set, no retries).
            let mut writes = sled::Batch::default();
            for (_, key, value) in &batch.ops {
                match value {
                    Some(v) => writes.insert(key.as_slice(), v.as_slice()),
                    None => writes.remove(key.as_slice()),
                }
            }
            return self.tree(name)?.apply_batch(writes).map_err(storage_err);
        }
        let trees = names
            .iter()
            .map(|n| self.tree(n))
            .collect::<Result<Vec<_>>>()?;
        let applied = trees.as_slice().transaction(|txs| {
            for (tree, key, value) in &batch.ops {
                let i = names
                    .binary_search(&tree.as_str())
                    .expect("every tree of the batch was opened");
                match value {
                    Some(v) => txs[i].insert(key.as_slice(), v.as_slice())?,
                    None => txs[i].remove(key.as_slice())?,
                };
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        applied.map_err(|e| match e {
            TransactionError::Storage(e) => storage_err(e),
            TransactionError::Abort(()) => Error::Internal("database: batch aborted".into()),
        })
    }
}

/// One ordered tree of byte keys in memory.
type MemoryTree = BTreeMap<Vec<u8>, Vec<u8>>;

/// [`Kv`] in memory, for tests.
#[derive(Default)]
pub struct MemoryKv {
    trees: Mutex<BTreeMap<String, MemoryTree>>,
}

impl MemoryKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Kv for MemoryKv {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let trees = self.trees.lock().expect("kv lock poisoned");
        Ok(trees.get(tree).and_then(|t| t.get(key).cloned()))
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let mut trees = self.trees.lock().expect("kv lock poisoned");
        trees
            .entry(tree.to_string())
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut trees = self.trees.lock().expect("kv lock poisoned");
        Ok(trees.get_mut(tree).and_then(|t| t.remove(key)))
    }

    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let trees = self.trees.lock().expect("kv lock poisoned");
        Ok(trees
            .get(tree)
            .map(|t| {
                t.range(prefix.to_vec()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn scan_page(
        &self,
        tree: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        use std::ops::Bound;
        let trees = self.trees.lock().expect("kv lock poisoned");
        let Some(t) = trees.get(tree) else {
            return Ok(Vec::new());
        };
        let start = match after {
            Some(after) => Bound::Excluded(after.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        Ok(t.range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn apply(&self, batch: &Batch) -> Result<()> {
        let mut trees = self.trees.lock().expect("kv lock poisoned");
        for (tree, key, value) in &batch.ops {
            let t = trees.entry(tree.clone()).or_default();
            match value {
                Some(v) => t.insert(key.clone(), v.clone()),
                None => t.remove(key),
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The suite every implementation must pass.
    fn suite(kv: &dyn Kv) {
        assert_eq!(kv.get("t", b"a").unwrap(), None);
        kv.put("t", b"a", b"1").unwrap();
        kv.put("t", b"ab", b"2").unwrap();
        kv.put("t", b"b", b"3").unwrap();
        kv.put("other", b"a", b"x").unwrap();
        assert_eq!(kv.get("t", b"a").unwrap(), Some(b"1".to_vec()));
        let scanned = kv.scan_prefix("t", b"a").unwrap();
        assert_eq!(
            scanned,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"ab".to_vec(), b"2".to_vec())
            ]
        );
        assert_eq!(kv.scan_prefix("t", b"").unwrap().len(), 3);
        let first = kv.scan_page("t", b"a", None, 1).unwrap();
        assert_eq!(first, vec![(b"a".to_vec(), b"1".to_vec())]);
        let next = kv.scan_page("t", b"a", Some(b"a"), 5).unwrap();
        assert_eq!(next, vec![(b"ab".to_vec(), b"2".to_vec())]);
        assert!(kv.scan_page("t", b"a", Some(b"ab"), 5).unwrap().is_empty());
        assert_eq!(kv.scan_page("t", b"", Some(b"ab"), 5).unwrap().len(), 1);
        assert_eq!(kv.delete("t", b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.delete("t", b"a").unwrap(), None);
        assert_eq!(kv.get("other", b"a").unwrap(), Some(b"x".to_vec()));
        kv.flush().unwrap();
        // A batch writes several trees at once, later writes winning.
        let mut batch = Batch::new();
        batch.put("t", b"c".to_vec(), b"4".to_vec());
        batch.put("index", b"4c".to_vec(), Vec::new());
        batch.delete("other", b"a".to_vec());
        batch.put("t", b"c".to_vec(), b"5".to_vec());
        kv.apply(&batch).unwrap();
        assert_eq!(kv.get("t", b"c").unwrap(), Some(b"5".to_vec()));
        assert_eq!(kv.get("index", b"4c").unwrap(), Some(Vec::new()));
        assert_eq!(kv.get("other", b"a").unwrap(), None);
        kv.apply(&Batch::new()).unwrap();
        kv.flush().unwrap();
    }

    #[test]
    fn memory_passes_the_suite() {
        suite(&MemoryKv::new());
    }

    #[test]
    fn sled_passes_the_suite_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let kv = SledKv::open(dir.path()).unwrap();
            suite(&kv);
        }
        let kv = SledKv::open(dir.path()).unwrap();
        assert_eq!(kv.get("t", b"b").unwrap(), Some(b"3".to_vec()));
        assert_eq!(kv.get("index", b"4c").unwrap(), Some(Vec::new()));
    }

    #[test]
    fn concurrent_flushes_share_one_fsync() {
        let commits = GroupCommit::default();
        let fsyncs = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    commits
                        .flush(|| {
                            fsyncs.fetch_add(1, Ordering::SeqCst);
                            Ok(())
                        })
                        .unwrap()
                });
            }
        });
        let n = fsyncs.load(Ordering::SeqCst);
        assert!((1..=8).contains(&n), "{n} fsyncs");
        assert_eq!(commits.state.lock().unwrap().0, 8);
    }

    #[test]
    fn a_database_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let _kv = SledKv::open(&db).unwrap();
        let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, DB_DIR_MODE);
    }
}
