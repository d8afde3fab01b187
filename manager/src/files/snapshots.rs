//! Snapshots: what each backup run saw, per user, in the manager's database.
//!
//! Three trees, all keyed under the owner so one user never reads another's:
//! - `snapshots`: `owner \0 id` → the header (time, host, paths, tags,
//!   totals). A snapshot exists exactly when its header does.
//! - `snapshot_entries`: `owner \0 id \0 path` → one directory, file or link.
//! - `version_refs`: `owner \0 name \0 version \0 id` → nothing: the index
//!   that answers "does any snapshot still use this version?" without reading
//!   every snapshot.
//!
//! Writes go in the order that keeps every crash safe: a new snapshot writes
//! its references and entries, flushes, and only then its header; a forget
//! removes the header first (flushed), then entries and references. A crash
//! therefore leaves at most references without a header, which keep a file
//! version alive longer than needed, never the other way round.

use crate::files::catalog::{name_prefix, owner_prefix, version_key};
use dupla::kv::Kv;
use dupla::{Error, Hash, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const HEADERS_TREE: &str = "snapshots";
const ENTRIES_TREE: &str = "snapshot_entries";
const REFS_TREE: &str = "version_refs";

/// Entries read from the database at a time when walking a snapshot: the
/// manager's memory stays bounded whatever the snapshot's size.
pub const PAGE_ENTRIES: usize = 1024;

/// A snapshot's header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// Short hex id, unique per owner.
    pub id: String,
    /// Login of the user it belongs to.
    pub owner: String,
    /// When the run started, ms since the Unix epoch (client clock).
    pub time_unix_ms: i64,
    /// The client's host name.
    pub host: String,
    /// The paths the run was given.
    pub paths: Vec<String>,
    /// Labels given with `--tag`.
    pub tags: Vec<String>,
    /// Regular files and their total size.
    pub files: u64,
    /// Sum of the files' sizes.
    pub bytes: u64,
}

/// What a snapshot entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A regular file, whose content is a catalog version.
    File,
    /// A directory.
    Dir,
    /// A symbolic link, stored as its target text.
    Symlink,
}

/// One directory, file or link of a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// Relative to the client root, '/'-separated.
    pub path: String,
    /// Directory, file or link.
    pub kind: Kind,
    /// File size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: i64,
    /// Inode when backed up (change detection).
    pub inode: u64,
    /// Device when backed up (change detection).
    pub dev: u64,
    /// Files: the catalog version holding the content.
    pub version: u64,
    /// Files: blake3 of the content.
    pub blake3: Option<Hash>,
    /// Links: the target.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub link_target: String,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Internal(format!("encoding a snapshot: {e}")))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Internal(format!("decoding a snapshot: {e}")))
}

fn header_key(owner: &str, id: &str) -> Vec<u8> {
    let mut key = owner_prefix(owner);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The prefix of every entry of one snapshot.
fn entries_prefix(owner: &str, id: &str) -> Vec<u8> {
    let mut key = header_key(owner, id);
    key.push(0);
    key
}

fn entry_key(owner: &str, id: &str, path: &str) -> Vec<u8> {
    let mut key = entries_prefix(owner, id);
    key.extend_from_slice(path.as_bytes());
    key
}

fn ref_key(owner: &str, name: &str, version: u64, id: &str) -> Vec<u8> {
    let mut key = version_key(owner, name, version);
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The snapshots of every user, over the [`Kv`] trait.
#[derive(Clone)]
pub struct Snapshots {
    kv: Arc<dyn Kv>,
}

impl Snapshots {
    /// The snapshots kept in `kv`.
    pub fn new(kv: Arc<dyn Kv>) -> Self {
        Snapshots { kv }
    }

    /// `owner`'s snapshots, oldest first.
    pub fn headers(&self, owner: &str) -> Result<Vec<SnapshotHeader>> {
        let mut headers: Vec<SnapshotHeader> = self
            .kv
            .scan_prefix(HEADERS_TREE, &owner_prefix(owner))?
            .iter()
            .map(|(_, v)| decode(v))
            .collect::<Result<_>>()?;
        headers.sort_by(|a, b| (a.time_unix_ms, &a.id).cmp(&(b.time_unix_ms, &b.id)));
        Ok(headers)
    }

    /// One of `owner`'s snapshots.
    pub fn header(&self, owner: &str, id: &str) -> Result<Option<SnapshotHeader>> {
        self.kv
            .get(HEADERS_TREE, &header_key(owner, id))?
            .map(|v| decode(&v))
            .transpose()
    }

    /// A fresh id for a new snapshot of `owner`: 8 hex digits.
    pub fn new_id(&self, owner: &str) -> Result<String> {
        loop {
            let id = hex::encode(rand::random::<[u8; 4]>());
            let taken = self.header(owner, &id)?.is_some()
                || !self
                    .kv
                    .scan_page(ENTRIES_TREE, &entries_prefix(owner, &id), None, 1)?
                    .is_empty();
            if !taken {
                return Ok(id);
            }
        }
    }

    /// Write entries of the snapshot `id` being created (not flushed, not
    /// visible until [`Snapshots::publish`]).
    pub fn write_entries(&self, owner: &str, id: &str, entries: &[TreeEntry]) -> Result<()> {
        for entry in entries {
            if entry.kind == Kind::File {
                self.kv.put(
                    REFS_TREE,
                    &ref_key(owner, &entry.path, entry.version, id),
                    b"",
                )?;
            }
            self.kv.put(
                ENTRIES_TREE,
                &entry_key(owner, id, &entry.path),
                &encode(entry)?,
            )?;
        }
        Ok(())
    }

    /// Make the snapshot whose entries were written durable and visible.
    pub fn publish(&self, header: &SnapshotHeader) -> Result<()> {
        self.kv.flush()?;
        self.kv.put(
            HEADERS_TREE,
            &header_key(&header.owner, &header.id),
            &encode(header)?,
        )?;
        self.kv.flush()
    }

    /// Call `f` on every entry of snapshot `id` whose path is `prefix` or
    /// lies below it (every entry with an empty prefix), in path order,
    /// reading [`PAGE_ENTRIES`] at a time.
    pub fn for_each_entry(
        &self,
        owner: &str,
        id: &str,
        prefix: &str,
        mut f: impl FnMut(TreeEntry) -> Result<()>,
    ) -> Result<()> {
        let prefix = prefix.trim_end_matches('/');
        let mut scan_prefix = entries_prefix(owner, id);
        scan_prefix.extend_from_slice(prefix.as_bytes());
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page =
                self.kv
                    .scan_page(ENTRIES_TREE, &scan_prefix, after.as_deref(), PAGE_ENTRIES)?;
            let full = page.len() == PAGE_ENTRIES;
            after = page.last().map(|(k, _)| k.clone());
            for (_, value) in page {
                let entry: TreeEntry = decode(&value)?;
                // The key prefix `a` also matches the sibling `ab`.
                if under(prefix, &entry.path) {
                    f(entry)?;
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// `path`'s entry in snapshot `id`.
    pub fn entry(&self, owner: &str, id: &str, path: &str) -> Result<Option<TreeEntry>> {
        self.kv
            .get(ENTRIES_TREE, &entry_key(owner, id, path))?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Whether any snapshot (or one being written) uses this version.
    pub fn is_referenced(&self, owner: &str, name: &str, version: u64) -> Result<bool> {
        let mut prefix = version_key(owner, name, version);
        prefix.push(0);
        Ok(!self.kv.scan_page(REFS_TREE, &prefix, None, 1)?.is_empty())
    }

    /// Remove snapshot `id` of `owner`: its header (durably, first), then
    /// its entries and references. Returns the file versions it used, for
    /// the caller to drop those nothing else keeps.
    pub fn remove(&self, owner: &str, id: &str) -> Result<Vec<(String, u64)>> {
        if self
            .kv
            .delete(HEADERS_TREE, &header_key(owner, id))?
            .is_some()
        {
            self.kv.flush()?;
        }
        self.discard(owner, id)
    }

    /// Delete the entries and references of snapshot `id` (a forgotten one,
    /// or one whose creation failed). Returns the file versions it used.
    pub fn discard(&self, owner: &str, id: &str) -> Result<Vec<(String, u64)>> {
        let mut used = Vec::new();
        let prefix = entries_prefix(owner, id);
        loop {
            let page = self
                .kv
                .scan_page(ENTRIES_TREE, &prefix, None, PAGE_ENTRIES)?;
            if page.is_empty() {
                break;
            }
            for (key, value) in &page {
                let entry: TreeEntry = decode(value)?;
                if entry.kind == Kind::File {
                    self.kv
                        .delete(REFS_TREE, &ref_key(owner, &entry.path, entry.version, id))?;
                    used.push((entry.path, entry.version));
                }
                self.kv.delete(ENTRIES_TREE, key)?;
            }
        }
        self.kv.flush()?;
        Ok(used)
    }

    /// Take `name` out of every snapshot of `owner` (`dupla rm`).
    pub fn drop_path(&self, owner: &str, name: &str) -> Result<()> {
        for (key, _) in self.kv.scan_prefix(REFS_TREE, &name_prefix(owner, name))? {
            self.kv.delete(REFS_TREE, &key)?;
        }
        for header in self.headers(owner)? {
            if let Some(entry) = self.entry(owner, &header.id, name)? {
                self.kv
                    .delete(ENTRIES_TREE, &entry_key(owner, &header.id, name))?;
                let mut updated = header.clone();
                if entry.kind == Kind::File {
                    updated.files = updated.files.saturating_sub(1);
                    updated.bytes = updated.bytes.saturating_sub(entry.size);
                }
                self.kv.put(
                    HEADERS_TREE,
                    &header_key(owner, &header.id),
                    &encode(&updated)?,
                )?;
            }
        }
        self.kv.flush()
    }

    /// Remove every snapshot of `owner` (their account is gone).
    pub fn remove_owner(&self, owner: &str) -> Result<()> {
        let prefix = owner_prefix(owner);
        for tree in [HEADERS_TREE, ENTRIES_TREE, REFS_TREE] {
            for (key, _) in self.kv.scan_prefix(tree, &prefix)? {
                self.kv.delete(tree, &key)?;
            }
        }
        self.kv.flush()
    }
}

/// Whether `path` is `prefix` or lies below it (every path with an empty
/// prefix).
pub fn under(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dupla::kv::MemoryKv;

    fn file(path: &str, version: u64) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            kind: Kind::File,
            size: 3,
            mode: 0o644,
            mtime_ns: 1,
            inode: 1,
            dev: 1,
            version,
            blake3: Some(Hash::of(b"abc")),
            link_target: String::new(),
        }
    }

    fn header(owner: &str, id: &str, time: i64) -> SnapshotHeader {
        SnapshotHeader {
            id: id.into(),
            owner: owner.into(),
            time_unix_ms: time,
            host: "h".into(),
            paths: vec![".".into()],
            tags: vec![],
            files: 2,
            bytes: 6,
        }
    }

    #[test]
    fn a_snapshot_is_visible_only_once_published_and_keeps_its_versions() {
        let snaps = Snapshots::new(Arc::new(MemoryKv::new()));
        snaps
            .write_entries("ada", "s1", &[file("a", 1), file("a/b", 2)])
            .unwrap();
        assert!(snaps.headers("ada").unwrap().is_empty());
        assert!(snaps.is_referenced("ada", "a", 1).unwrap());
        snaps.publish(&header("ada", "s1", 10)).unwrap();
        assert_eq!(snaps.headers("ada").unwrap().len(), 1);
        assert!(snaps.headers("bob").unwrap().is_empty());
        assert!(!snaps.is_referenced("ada", "a", 2).unwrap());
        assert!(!snaps.is_referenced("bob", "a", 1).unwrap());
        let mut seen = Vec::new();
        snaps
            .for_each_entry("ada", "s1", "a", |e| {
                seen.push(e.path);
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, vec!["a", "a/b"]);
        let used = snaps.remove("ada", "s1").unwrap();
        assert_eq!(used, vec![("a".into(), 1), ("a/b".into(), 2)]);
        assert!(!snaps.is_referenced("ada", "a", 1).unwrap());
        assert!(snaps.headers("ada").unwrap().is_empty());
    }

    #[test]
    fn pages_cover_a_large_snapshot_and_skip_siblings_of_the_prefix() {
        let snaps = Snapshots::new(Arc::new(MemoryKv::new()));
        let mut entries: Vec<TreeEntry> = (0..PAGE_ENTRIES * 2 + 5)
            .map(|i| file(&format!("ab{i:05}"), 1))
            .collect();
        entries.push(file("a/x", 1));
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        snaps.write_entries("ada", "s", &entries).unwrap();
        let mut count = 0;
        snaps
            .for_each_entry("ada", "s", "", |_| {
                count += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(count, entries.len());
        let mut below_a = Vec::new();
        snaps
            .for_each_entry("ada", "s", "a", |e| {
                below_a.push(e.path);
                Ok(())
            })
            .unwrap();
        assert_eq!(below_a, vec!["a/x"]);
    }

    #[test]
    fn under_matches_whole_components() {
        assert!(under("", "x"));
        assert!(under("a", "a"));
        assert!(under("a/", "a/b"));
        assert!(!under("a", "ab"));
    }
}
