//! `dupla.v1.Snapshots`: the gRPC face of [`crate::files::snapshots`]. Every call
//! acts for the user of the bearer token and sees only their snapshots.
//! Long answers stream from a blocking task through a bounded channel, one
//! database page at a time, so a snapshot of any size costs the manager a
//! few pages of memory.

use crate::files::snapshots::{Kind, SnapshotHeader, TreeEntry, PAGE_ENTRIES};
use crate::identity::auth::{Authenticator, Session};
use crate::state::State;
use dupla::v1::snapshots_server::Snapshots;
use dupla::v1::{self as pb};
use dupla::{name, Error, Result};
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// Messages a streamed answer may have waiting for a slow reader.
const STREAM_DEPTH_MESSAGES: usize = 4;

/// Most paths and tags one snapshot may name, and the longest tag or host:
/// headers are read whole, so they stay small.
const MAX_SNAPSHOT_PATHS: usize = 1024;
const MAX_LABEL_LEN: usize = 256;

/// The Snapshots service over shared [`State`].
#[derive(Clone)]
pub struct SnapshotService {
    state: Arc<State>,
    auth: Authenticator,
    /// For the role check: viewers may not record or forget snapshots.
    accounts: Arc<crate::identity::accounts::Accounts>,
}

type Reply<T> = std::result::Result<Response<T>, Status>;
type ReplyStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

impl SnapshotService {
    /// Serve the snapshots of `state`, checking users with `auth`.
    pub fn new(
        state: Arc<State>,
        auth: Authenticator,
        accounts: Arc<crate::identity::accounts::Accounts>,
    ) -> Self {
        SnapshotService {
            state,
            auth,
            accounts,
        }
    }

    fn user<T>(&self, request: &Request<T>) -> Result<Session> {
        self.auth.check(request.metadata())
    }

    /// Check a batch of a new snapshot's entries against the catalog, fill
    /// in each file's size and blake3 from its version, and write them.
    /// Under the catalog lock, so no commit drops a version in between.
    fn add_entries(
        &self,
        owner: &str,
        header: &mut SnapshotHeader,
        last_path: &mut Option<String>,
        batch: Vec<pb::SnapshotEntry>,
    ) -> Result<()> {
        if batch.len() > PAGE_ENTRIES {
            return Err(Error::InvalidInput(format!(
                "at most {PAGE_ENTRIES} entries per message"
            )));
        }
        let _writes = self.state.lock_catalog_writes();
        let mut entries = Vec::with_capacity(batch.len());
        for wire in batch {
            let mut entry = tree_entry(wire)?;
            if last_path
                .as_deref()
                .is_some_and(|last| last >= entry.path.as_str())
            {
                return Err(Error::InvalidInput(format!(
                    "{}: snapshot entries must come in increasing path order, once each",
                    entry.path
                )));
            }
            if entry.kind == Kind::File {
                let record = self
                    .state
                    .catalog
                    .get_version(owner, &entry.path, entry.version)?
                    .filter(|_| entry.version > 0)
                    .ok_or_else(|| {
                        Error::Stale(format!(
                            "{}: version {} is not in your backups (removed meanwhile?); \
                             run the backup again",
                            entry.path, entry.version
                        ))
                    })?;
                entry.size = record.size;
                entry.blake3 = Some(record.blake3);
                header.files += 1;
                header.bytes += record.size;
            }
            *last_path = Some(entry.path.clone());
            entries.push(entry);
        }
        self.state
            .snapshots
            .write_entries(owner, &header.id, &entries)
    }

    /// Drop the versions among `used` that no snapshot uses any more and
    /// that are not their path's latest. Returns how many went.
    fn prune_versions(&self, owner: &str, used: Vec<(String, u64)>) -> Result<u64> {
        let _writes = self.state.lock_catalog_writes();
        let mut removed = 0;
        let unique: HashSet<(String, u64)> = used.into_iter().collect();
        for (name, version) in unique {
            if self.state.snapshots.is_referenced(owner, &name, version)? {
                continue;
            }
            let latest = self.state.catalog.get(owner, &name)?.map(|r| r.version);
            if latest != Some(version)
                && self.state.catalog.remove_version(owner, &name, version)?
            {
                removed += 1;
            }
        }
        self.state.catalog.flush()?;
        Ok(removed)
    }
}

/// A wire entry as a stored one, checked.
fn tree_entry(wire: pb::SnapshotEntry) -> Result<TreeEntry> {
    name::validate(&wire.path)?;
    let kind = match pb::EntryKind::try_from(wire.kind) {
        Ok(pb::EntryKind::File) => Kind::File,
        Ok(pb::EntryKind::Dir) => Kind::Dir,
        Ok(pb::EntryKind::Symlink) => Kind::Symlink,
        _ => {
            return Err(Error::InvalidInput(format!(
                "{}: entry kind {} is not a file, directory or link",
                wire.path, wire.kind
            )))
        }
    };
    if kind == Kind::Symlink && (wire.link_target.is_empty() || wire.link_target.len() > 4096) {
        return Err(Error::InvalidInput(format!(
            "{}: a link needs a target of at most 4096 bytes",
            wire.path
        )));
    }
    Ok(TreeEntry {
        path: wire.path,
        kind,
        size: if kind == Kind::File { wire.size } else { 0 },
        mode: wire.mode & 0o7777,
        mtime_ns: wire.mtime_ns,
        inode: wire.inode,
        dev: wire.dev,
        version: if kind == Kind::File { wire.version } else { 0 },
        blake3: None,
        link_target: if kind == Kind::Symlink {
            wire.link_target
        } else {
            String::new()
        },
    })
}

/// A stored entry on the wire.
pub fn wire_entry(entry: TreeEntry) -> pb::SnapshotEntry {
    pb::SnapshotEntry {
        path: entry.path,
        kind: match entry.kind {
            Kind::File => pb::EntryKind::File,
            Kind::Dir => pb::EntryKind::Dir,
            Kind::Symlink => pb::EntryKind::Symlink,
        } as i32,
        size: entry.size,
        mode: entry.mode,
        mtime_ns: entry.mtime_ns,
        inode: entry.inode,
        dev: entry.dev,
        version: entry.version,
        blake3: entry.blake3.map(|h| h.to_bytes()).unwrap_or_default(),
        link_target: entry.link_target,
        lost: false,
    }
}

/// A stored header on the wire.
pub fn wire_info(header: &SnapshotHeader) -> pb::SnapshotInfo {
    pb::SnapshotInfo {
        id: header.id.clone(),
        time_unix_ms: header.time_unix_ms,
        host: header.host.clone(),
        paths: header.paths.clone(),
        tags: header.tags.clone(),
        files: header.files,
        bytes: header.bytes,
    }
}

/// Check the header a client sent to open a snapshot.
fn check_begin(begin: &pb::SnapshotInfo) -> Result<()> {
    if begin.paths.is_empty() || begin.paths.len() > MAX_SNAPSHOT_PATHS {
        return Err(Error::InvalidInput(format!(
            "a snapshot names 1 to {MAX_SNAPSHOT_PATHS} paths"
        )));
    }
    let too_long = |s: &String| s.len() > MAX_LABEL_LEN || s.chars().any(char::is_control);
    if begin.tags.len() > MAX_SNAPSHOT_PATHS || begin.tags.iter().any(too_long) {
        return Err(Error::InvalidInput(format!(
            "tags are at most {MAX_LABEL_LEN} bytes, without control characters"
        )));
    }
    if too_long(&begin.host) {
        return Err(Error::InvalidInput("the host name is too long".into()));
    }
    for path in &begin.paths {
        if path != "." {
            name::validate(path)?;
        }
    }
    Ok(())
}

/// Whether `entry` passes `find`'s filters.
fn found(request: &pb::FindRequest, entry: &TreeEntry) -> bool {
    let last = entry.path.rsplit('/').next().unwrap_or(&entry.path);
    let named = name::matches(&request.pattern, &entry.path)
        || (request.pattern.contains(['*', '?']) && name::matches(&request.pattern, last));
    named
        && (request.larger == 0 || entry.size > request.larger)
        && (request.smaller == 0 || entry.size < request.smaller)
        && (request.newer_ns == 0 || entry.mtime_ns > request.newer_ns)
        && (request.older_ns == 0 || entry.mtime_ns < request.older_ns)
}

/// Run `produce` on a blocking thread, streaming what it sends.
fn stream_from<T: Send + 'static>(
    produce: impl FnOnce(&mpsc::Sender<std::result::Result<T, Status>>) -> Result<()> + Send + 'static,
) -> ReplyStream<T> {
    let (tx, rx) = mpsc::channel(STREAM_DEPTH_MESSAGES);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = produce(&tx) {
            let _ = tx.blocking_send(Err(e.into()));
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// Send one message from a producer; a gone reader stops it.
fn send<T>(tx: &mpsc::Sender<std::result::Result<T, Status>>, item: T) -> Result<()> {
    tx.blocking_send(Ok(item))
        .map_err(|_| Error::Aborted("the reader went away".into()))
}

#[tonic::async_trait]
impl Snapshots for SnapshotService {
    async fn create(
        &self,
        request: Request<Streaming<pb::CreateSnapshotRequest>>,
    ) -> Reply<pb::SnapshotInfo> {
        let user = self.user(&request)?;
        crate::identity::auth::may_write(&self.accounts, &user, "record snapshots")?;
        let owner = user.login;
        let mut stream = request.into_inner();
        let begin = match stream.message().await? {
            Some(pb::CreateSnapshotRequest {
                part: Some(pb::create_snapshot_request::Part::Begin(begin)),
            }) => begin,
            _ => {
                return Err(Status::invalid_argument(
                    "a snapshot starts with its header (begin)",
                ))
            }
        };
        check_begin(&begin)?;
        let mut header = SnapshotHeader {
            id: self.state.snapshots.new_id(&owner)?,
            owner: owner.clone(),
            time_unix_ms: begin.time_unix_ms,
            host: begin.host,
            paths: begin.paths,
            tags: begin.tags,
            files: 0,
            bytes: 0,
        };
        let mut last_path = None;
        let written = async {
            while let Some(message) = stream.message().await? {
                match message.part {
                    Some(pb::create_snapshot_request::Part::Entries(batch)) => {
                        // Database work on the blocking pool, not the async workers.
                        let (service, who) = (self.clone(), owner.clone());
                        let (mut h, mut last) = (header.clone(), last_path.take());
                        (header, last_path) = tokio::task::spawn_blocking(move || {
                            service.add_entries(&who, &mut h, &mut last, batch.entries)?;
                            Ok::<_, Error>((h, last))
                        })
                        .await
                        .map_err(|e| Error::Internal(format!("snapshot task: {e}")))??;
                    }
                    _ => {
                        return Err(Error::InvalidInput(
                            "only entries may follow a snapshot's header".into(),
                        ))
                    }
                }
            }
            let (state, h) = (self.state.clone(), header.clone());
            tokio::task::spawn_blocking(move || state.snapshots.publish(&h))
                .await
                .map_err(|e| Error::Internal(format!("snapshot task: {e}")))?
        }
        .await;
        if let Err(e) = written {
            // Nothing half-written stays: the entries and references go.
            self.state.snapshots.discard(&owner, &header.id)?;
            return Err(e.into());
        }
        tracing::info!(%owner, id = %header.id, files = header.files, bytes = header.bytes,
            "snapshot recorded");
        Ok(Response::new(wire_info(&header)))
    }

    type ListStream = ReplyStream<pb::SnapshotInfo>;

    async fn list(&self, request: Request<pb::ListSnapshotsRequest>) -> Reply<Self::ListStream> {
        let user = self.user(&request)?;
        let mut wanted = request.into_inner().paths;
        wanted.sort();
        wanted.dedup();
        let headers = self.state.snapshots.headers(&user.login)?;
        let infos: Vec<_> = headers
            .iter()
            .filter(|h| {
                let mut paths = h.paths.clone();
                paths.sort();
                paths.dedup();
                wanted.is_empty() || paths == wanted
            })
            .map(|h| Ok(wire_info(h)))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(infos))))
    }

    type EntriesStream = ReplyStream<pb::SnapshotEntries>;

    async fn entries(
        &self,
        request: Request<pb::SnapshotEntriesRequest>,
    ) -> Reply<Self::EntriesStream> {
        let user = self.user(&request)?;
        let req = request.into_inner();
        let snapshots = self.state.snapshots.clone();
        if snapshots.header(&user.login, &req.id)?.is_none() {
            return Err(not_found(&req.id));
        }
        // Few or none: looked up once, not per entry.
        let lost = self.state.catalog.lost_of(&user.login)?;
        Ok(Response::new(stream_from(move |tx| {
            let mut batch = Vec::new();
            snapshots.for_each_entry(&user.login, &req.id, &req.prefix, |entry| {
                let gone = !lost.is_empty() && lost.contains(&(entry.path.clone(), entry.version));
                let mut wire = wire_entry(entry);
                wire.lost = gone;
                batch.push(wire);
                if batch.len() == PAGE_ENTRIES {
                    let entries = std::mem::take(&mut batch);
                    send(tx, pb::SnapshotEntries { entries })?;
                }
                Ok(())
            })?;
            if !batch.is_empty() {
                send(tx, pb::SnapshotEntries { entries: batch })?;
            }
            Ok(())
        })))
    }

    type FindStream = ReplyStream<pb::SnapshotMatch>;

    async fn find(&self, request: Request<pb::FindRequest>) -> Reply<Self::FindStream> {
        let user = self.user(&request)?;
        let req = request.into_inner();
        let snapshots = self.state.snapshots.clone();
        Ok(Response::new(stream_from(move |tx| {
            for header in snapshots.headers(&user.login)? {
                snapshots.for_each_entry(&user.login, &header.id, "", |entry| {
                    if !found(&req, &entry) {
                        return Ok(());
                    }
                    send(tx, matched(&header, entry))
                })?;
            }
            Ok(())
        })))
    }

    type VersionsStream = ReplyStream<pb::SnapshotMatch>;

    async fn versions(&self, request: Request<pb::VersionsRequest>) -> Reply<Self::VersionsStream> {
        let user = self.user(&request)?;
        let path = request.into_inner().path;
        name::validate(&path)?;
        let snapshots = self.state.snapshots.clone();
        Ok(Response::new(stream_from(move |tx| {
            for header in snapshots.headers(&user.login)? {
                if let Some(entry) = snapshots.entry(&user.login, &header.id, &path)? {
                    send(tx, matched(&header, entry))?;
                }
            }
            Ok(())
        })))
    }

    async fn forget(&self, request: Request<pb::ForgetRequest>) -> Reply<pb::ForgetReply> {
        let user = self.user(&request)?;
        crate::identity::auth::may_write(&self.accounts, &user, "forget snapshots")?;
        let owner = user.login;
        let mut ids = request.into_inner().ids;
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            return Err(Status::invalid_argument("name the snapshots to forget"));
        }
        for id in &ids {
            if self.state.snapshots.header(&owner, id)?.is_none() {
                return Err(not_found(id));
            }
        }
        let mut used = Vec::new();
        for id in &ids {
            used.extend(self.state.snapshots.remove(&owner, id)?);
        }
        let versions_removed = self.prune_versions(&owner, used)?;
        tracing::info!(%owner, ?ids, versions_removed, "snapshots forgotten");
        Ok(Response::new(pb::ForgetReply {
            removed: ids,
            versions_removed,
        }))
    }
}

fn matched(header: &SnapshotHeader, entry: TreeEntry) -> pb::SnapshotMatch {
    pb::SnapshotMatch {
        snapshot: header.id.clone(),
        entry: Some(wire_entry(entry)),
        snapshot_unix_ms: header.time_unix_ms,
    }
}

fn not_found(id: &str) -> Status {
    Error::NotFound(format!("no snapshot {} in your backups", name::excerpt(id))).into()
}

/// Give each owner's files from a catalog before versions a first snapshot
/// (tag `adopted`), so they keep restoring by snapshot like any later run.
pub fn snapshot_adopted(state: &State) -> Result<()> {
    let moved = state.catalog.take_unversioned()?;
    for (owner, records) in &moved {
        let snapshots = &state.snapshots;
        let id = snapshots.new_id(owner)?;
        let mut records: Vec<_> = records.iter().collect();
        records.sort_by(|a, b| a.name.cmp(&b.name));
        let entries: Vec<TreeEntry> = records
            .iter()
            .map(|r| TreeEntry {
                path: r.name.clone(),
                kind: Kind::File,
                size: r.size,
                mode: 0o644,
                mtime_ns: r.committed_unix_ms.saturating_mul(1_000_000),
                inode: 0,
                dev: 0,
                version: r.version,
                blake3: Some(r.blake3),
                link_target: String::new(),
            })
            .collect();
        for page in entries.chunks(PAGE_ENTRIES) {
            snapshots.write_entries(owner, &id, page)?;
        }
        snapshots.publish(&SnapshotHeader {
            id: id.clone(),
            owner: owner.clone(),
            time_unix_ms: dupla::clock::unix_ms(),
            host: "dupla-manager".into(),
            paths: vec![".".into()],
            tags: vec!["adopted".into()],
            files: entries.len() as u64,
            bytes: entries.iter().map(|e| e.size).sum(),
        })?;
        tracing::warn!(%owner, id, files = entries.len(),
            "files from before snapshots now form snapshot {id}");
    }
    if !moved.is_empty() {
        state.catalog.drop_unversioned()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dupla::Hash;

    fn entry(path: &str, size: u64, mtime_ns: i64) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            kind: Kind::File,
            size,
            mode: 0o644,
            mtime_ns,
            inode: 0,
            dev: 0,
            version: 1,
            blake3: Some(Hash::of(b"")),
            link_target: String::new(),
        }
    }

    #[test]
    fn find_filters_by_name_size_and_time() {
        let req = |pattern: &str, larger, smaller, newer_ns, older_ns| pb::FindRequest {
            pattern: pattern.into(),
            larger,
            smaller,
            newer_ns,
            older_ns,
        };
        let e = entry("docs/report.pdf", 100, 50);
        assert!(found(&req("*.pdf", 0, 0, 0, 0), &e));
        assert!(found(&req("report", 0, 0, 0, 0), &e));
        assert!(!found(&req("*.txt", 0, 0, 0, 0), &e));
        assert!(found(&req("", 99, 101, 49, 51), &e));
        assert!(!found(&req("", 100, 0, 0, 0), &e));
        assert!(!found(&req("", 0, 100, 0, 0), &e));
        assert!(!found(&req("", 0, 0, 50, 0), &e));
        assert!(!found(&req("", 0, 0, 0, 50), &e));
    }

    #[test]
    fn bad_entries_are_refused() {
        let wire = |path: &str, kind: i32| pb::SnapshotEntry {
            path: path.into(),
            kind,
            ..Default::default()
        };
        assert!(tree_entry(wire("../x", pb::EntryKind::File as i32)).is_err());
        assert!(tree_entry(wire("x", 99)).is_err());
        assert!(tree_entry(wire("x", pb::EntryKind::Symlink as i32)).is_err());
        assert!(tree_entry(wire("x", pb::EntryKind::Dir as i32)).is_ok());
    }
}
