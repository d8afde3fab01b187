//! `dupla.v1.Manager`: the gRPC face of membership, placement and the
//! catalog. Handlers only translate between wire messages and [`State`];
//! the decisions live in `placement`, `membership` and `uploads`.

use crate::auth::{Authenticator, Session};
use crate::catalog::{FileRecord, PlacementLog};
use crate::membership::{Liveness, NodeRef, Report};
use crate::state::State;
use crate::tokens::Tokens;
use crate::uploads::OpenUpload;
use dupla::chunk::{chunk_count, ChunkLayout, CHUNK_SIZE, MAX_HELD_CHUNKS};
use dupla::placement::{self, DEFAULT_LOAD_EPSILON};
use dupla::v1::manager_server::Manager;
use dupla::v1::{self as pb};
use dupla::{clock, name, Error, Hash, Result};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tonic::{Request, Response, Status};

/// The Manager service over shared [`State`].
///
/// Catalog calls act for a user: Lookup, List and Remove need the user's
/// bearer token, and Place needs it too (the entry server forwards the
/// `authorization` metadata of the upload it serves), so every file has an
/// owner and each user sees only their own.
#[derive(Clone)]
pub struct ManagerService {
    state: Arc<State>,
    tokens: Arc<Mutex<Tokens>>,
    auth: Authenticator,
}

impl ManagerService {
    /// Serve `state`, checking users against `tokens`.
    pub fn new(state: Arc<State>, tokens: Arc<Mutex<Tokens>>) -> Self {
        ManagerService {
            state,
            auth: Authenticator::new(tokens.clone()),
            tokens,
        }
    }

    /// The user behind a catalog call.
    fn user<T>(&self, request: &Request<T>) -> Result<Session> {
        self.auth.check(request.metadata())
    }

    /// A catalog record as a wire entry, holders resolved to their current
    /// addresses and ordered live-first (so readers try a live copy first,
    /// primary first among equals).
    fn entry(&self, record: &FileRecord) -> pb::FileEntry {
        let now = Instant::now();
        let membership = self.state.lock_membership();
        let mut holders: Vec<(Liveness, pb::Node)> = record
            .holders
            .iter()
            .map(|id| match membership.get(id) {
                Some(m) => (
                    membership.liveness(m, now),
                    pb::Node {
                        id: id.clone(),
                        addr: m.node.addr.clone(),
                    },
                ),
                None => (
                    Liveness::Down,
                    pb::Node {
                        id: id.clone(),
                        addr: String::new(),
                    },
                ),
            })
            .collect();
        holders.sort_by_key(|(liveness, _)| *liveness as u8);
        pb::FileEntry {
            name: record.name.clone(),
            size: record.size,
            blake3: record.blake3.to_bytes(),
            chunks: record.chunks.iter().map(Hash::to_bytes).collect(),
            chunk_size: record.chunk_size,
            chunk_lengths: record.chunk_lengths.clone(),
            holders: holders.into_iter().map(|(_, n)| n).collect(),
            committed_unix_ms: record.committed_unix_ms,
            version: record.version,
        }
    }

    fn lookup_record(&self, owner: &str, name: &str, version: u64) -> Result<FileRecord> {
        self.state
            .catalog
            .get_version(owner, name, version)?
            .ok_or_else(|| match version {
                0 => Error::NotFound(format!("{name}: not found in your backups")),
                v => Error::NotFound(format!(
                    "{name}: version {v} is not in your backups (forgotten, or never made)"
                )),
            })
    }

    fn place(&self, owner: &str, req: pb::PlaceRequest) -> Result<pb::PlaceReply> {
        name::validate(&req.name)?;
        let now = Instant::now();
        let (candidates, nodes, up) = {
            let membership = self.state.lock_membership();
            let candidates = membership.candidates(now);
            let nodes: Vec<pb::Node> = candidates
                .iter()
                .map(|c| pb::Node {
                    id: c.id.clone(),
                    addr: membership
                        .get(&c.id)
                        .map(|m| m.node.addr.clone())
                        .unwrap_or_default(),
                })
                .collect();
            let up: HashSet<String> = candidates.iter().map(|c| c.id.clone()).collect();
            (candidates, nodes, up)
        };
        let key = crate::catalog::placement_key(owner, &req.name);
        let order = placement::choose(&key, req.size, &candidates, DEFAULT_LOAD_EPSILON);
        if order.is_empty() && !candidates.is_empty() {
            // Waiting will not help: the file is larger than any live server's room.
            let largest = candidates.iter().map(|c| c.free).max().unwrap_or(0);
            return Err(Error::Exhausted(format!(
                "no live storage server has room for {} bytes (the most free on one is {largest}): add a server or free space",
                req.size
            )));
        }
        if order.is_empty() {
            return Err(Error::Unavailable(format!(
                "no live storage server to take {} bytes: start a server",
                req.size
            )));
        }
        let ordered: Vec<pb::Node> = order.iter().map(|&i| nodes[i].clone()).collect();
        let resumable_chunks = self.claimable(owner, &req.resume_chunks)?;
        if !req.preview && (resumable_chunks as usize) < req.resume_chunks.len() {
            return Err(Error::Stale(format!(
                "{}: part of the resumed data is used by files you do not own; the client sends those chunks itself",
                req.name
            )));
        }
        if req.held_chunks.len() > MAX_HELD_CHUNKS {
            return Err(Error::InvalidInput(format!(
                "{} held chunks in one upload; at most {MAX_HELD_CHUNKS}",
                req.held_chunks.len()
            )));
        }
        // Chunks sent by reference: every one must be claimable, in any
        // order (the rule of a resume's prefix, not just a leading run).
        if !req.preview && self.claimable(owner, &req.held_chunks)? < req.held_chunks.len() as u64 {
            return Err(Error::Stale(format!(
                "{}: some chunks sent by reference are used only by files you do not own; the client sends those chunks itself",
                req.name
            )));
        }
        if req.preview {
            return Ok(pb::PlaceReply {
                upload_id: String::new(),
                primary: Some(ordered[0].clone()),
                replica: ordered.get(1).cloned(),
                candidates: ordered,
                resumable_chunks,
            });
        }
        if order.len() == 1 {
            tracing::warn!(name = %req.name, "one live server: degraded write, one copy until repaired");
        }
        let upload_id = random_id();
        self.state
            .uploads
            .lock()
            .expect("uploads lock poisoned")
            .open(
                OpenUpload {
                    id: upload_id.clone(),
                    owner: owner.to_string(),
                    name: req.name.clone(),
                    entry: req.entry_id.clone(),
                    opened: now,
                },
                req.takeover,
                |entry| up.contains(entry),
            )
            .map_err(|other| {
                Error::AlreadyExists(format!(
                    "{}: another upload of this name is running (upload {}); try again when it finishes",
                    req.name, other.id
                ))
            })?;
        self.state.catalog.log_placement(&PlacementLog {
            upload_id: upload_id.clone(),
            name: req.name.clone(),
            size: req.size,
            entry_id: req.entry_id,
            candidates: candidates
                .iter()
                .map(|c| (c.id.clone(), c.free, c.active))
                .collect(),
            order: ordered.iter().map(|n| n.id.clone()).collect(),
            unix_ms: clock::unix_ms(),
        })?;
        tracing::info!(upload = %upload_id, name = %req.name, size = req.size,
            primary = %ordered[0].addr, replica = ?ordered.get(1).map(|n| &n.addr), "placed");
        Ok(pb::PlaceReply {
            upload_id,
            primary: Some(ordered[0].clone()),
            replica: ordered.get(1).cloned(),
            candidates: ordered,
            resumable_chunks,
        })
    }

    /// How many leading `chunks` `owner` may claim in a resumed upload:
    /// those no other user's file uses, or that one of `owner`'s files uses
    /// too. A chunk hash is not proof of holding the bytes.
    /// For chunks sent by reference the count is compared with the whole
    /// list, so one unclaimable chunk anywhere refuses the upload.
    fn claimable<B: AsRef<[u8]>>(&self, owner: &str, chunks: &[B]) -> Result<u64> {
        if chunks.is_empty() {
            return Ok(0);
        }
        let asked = chunks
            .iter()
            .map(|c| Hash::from_slice(c.as_ref(), "chunk hash"))
            .collect::<Result<Vec<_>>>()?;
        let wanted: HashSet<Hash> = asked.iter().copied().collect();
        let (mut others, mut own) = (HashSet::<Hash>::new(), HashSet::<Hash>::new());
        self.state.catalog.for_each(|record| {
            let used = record.chunks.iter().filter(|c| wanted.contains(c));
            if record.owner == owner {
                own.extend(used);
            } else {
                others.extend(used);
            }
            Ok(())
        })?;
        Ok(asked
            .iter()
            .take_while(|c| !others.contains(c) || own.contains(c))
            .count() as u64)
    }

    fn commit(&self, req: pb::CommitRequest) -> Result<pb::CommitReply> {
        let entry = req
            .entry
            .ok_or_else(|| Error::InvalidInput("commit without a file entry".into()))?;
        let open = self
            .state
            .uploads
            .lock()
            .expect("uploads lock poisoned")
            .get(&req.upload_id)
            .cloned()
            .ok_or_else(|| {
                Error::Aborted(format!(
                    "upload {} is not open (expired, aborted or from before a manager restart); back the file up again",
                    req.upload_id
                ))
            })?;
        if open.name != entry.name {
            return Err(Error::InvalidInput(format!(
                "upload {} is for {:?}, not {:?}",
                req.upload_id, open.name, entry.name
            )));
        }
        let record = {
            let _writes = self.state.lock_catalog_writes();
            let previous = self.state.catalog.get(&open.owner, &entry.name)?;
            let record = self.record_from_entry(&open.owner, entry, previous.as_ref())?;
            self.state.catalog.put(&record)?;
            // The version this one replaces stays only if a snapshot uses it.
            if let Some(previous) = previous {
                let kept = self.state.snapshots.is_referenced(
                    &open.owner,
                    &previous.name,
                    previous.version,
                )?;
                if !kept {
                    self.state.catalog.remove_version(
                        &open.owner,
                        &previous.name,
                        previous.version,
                    )?;
                    self.state.catalog.flush()?;
                }
            }
            record
        };
        if record.holders.len() < crate::repair::TARGET_COPIES {
            self.state.want_repair();
        }
        self.state
            .uploads
            .lock()
            .expect("uploads lock poisoned")
            .close(&req.upload_id);
        tracing::info!(upload = %req.upload_id, name = %record.name, size = record.size,
            version = record.version, holders = ?record.holders, "committed");
        Ok(pb::CommitReply {
            entry: Some(self.entry(&record)),
        })
    }

    /// Validate a committed entry and turn it into the next version's record.
    fn record_from_entry(
        &self,
        owner: &str,
        entry: pb::FileEntry,
        previous: Option<&FileRecord>,
    ) -> Result<FileRecord> {
        name::validate(&entry.name)?;
        let chunks = entry
            .chunks
            .iter()
            .map(|c| Hash::from_slice(c, "chunk hash"))
            .collect::<Result<Vec<_>>>()?;
        // Content-defined chunks: one length per chunk, each 1..=MAX,
        // summing to the size. None: the fixed layout of older uploads.
        let expected = if entry.chunk_lengths.is_empty() {
            chunk_count(entry.size)
        } else {
            ChunkLayout::from_lengths(entry.size, &entry.chunk_lengths)?.count()
        };
        if chunks.len() as u64 != expected {
            return Err(Error::InvalidInput(format!(
                "{} chunks listed for a {}-byte file in {} chunks",
                chunks.len(),
                entry.size,
                expected
            )));
        }
        let mut holder_ids: Vec<&str> = entry.holders.iter().map(|n| n.id.as_str()).collect();
        holder_ids.sort_unstable();
        holder_ids.dedup();
        if holder_ids.len() != entry.holders.len() || holder_ids.is_empty() {
            return Err(Error::InvalidInput(format!(
                "a commit needs distinct holders, got {holder_ids:?}"
            )));
        }
        {
            let membership = self.state.lock_membership();
            if let Some(unknown) = holder_ids.iter().find(|id| membership.get(id).is_none()) {
                return Err(Error::InvalidInput(format!("unknown holder {unknown}")));
            }
        }
        Ok(FileRecord {
            owner: owner.to_string(),
            name: entry.name,
            size: entry.size,
            blake3: Hash::from_slice(&entry.blake3, "file blake3")?,
            chunks,
            chunk_size: if entry.chunk_lengths.is_empty() {
                CHUNK_SIZE as u32
            } else {
                0
            },
            chunk_lengths: entry.chunk_lengths,
            holders: entry.holders.into_iter().map(|n| n.id).collect(),
            committed_unix_ms: clock::unix_ms(),
            version: previous.map_or(1, |p| p.version + 1),
        })
    }

    /// Forget `server` as a holder of every file using one of `corrupt`,
    /// unless it is the file's last holder (then the copy stays listed: a
    /// partly damaged copy beats none, and a download still tries it).
    fn drop_corrupt_holder(
        &self,
        server: &str,
        corrupt: &std::collections::HashSet<Hash>,
    ) -> Result<u64> {
        let _writes = self.state.lock_catalog_writes();
        let mut affected = 0;
        // Rewriting a record keeps its key, so the pass goes on past it.
        self.state.catalog.for_each(|mut record| {
            let uses = record.chunks.iter().any(|c| corrupt.contains(c));
            if uses && record.holders.len() > 1 && record.holders.iter().any(|h| h == server) {
                record.holders.retain(|h| h != server);
                self.state.catalog.put(&record)?;
                affected += 1;
            }
            Ok(())
        })?;
        if affected > 0 {
            self.state.want_repair();
        }
        Ok(affected)
    }

    /// Every chunk of every file that lists `server` as a holder, and the
    /// number of files in the catalog. Read under the catalog write lock,
    /// so no commit or repair is half-applied.
    fn chunks_held_by(&self, server: &str) -> Result<(HashSet<Hash>, u64)> {
        let _writes = self.state.lock_catalog_writes();
        let (mut chunks, mut files) = (HashSet::new(), 0);
        self.state.catalog.for_each(|record| {
            files += 1;
            if record.holders.iter().any(|h| h == server) {
                chunks.extend(record.chunks);
            }
            Ok(())
        })?;
        Ok((chunks, files))
    }

    fn status(&self) -> Result<pb::ClusterStatusReply> {
        let sessions = self
            .tokens
            .lock()
            .expect("tokens lock poisoned")
            .sessions_per_server(clock::unix_ms(), self.state.config.session_idle);
        let repairs = *self.state.repair_stats.lock().expect("stats lock poisoned");
        let now = Instant::now();
        // The servers first, and the membership lock released before the
        // catalog pass, so heartbeats never wait for it.
        let (mut servers, up): (Vec<pb::ServerStatus>, HashSet<String>) = {
            let membership = self.state.lock_membership();
            let servers = membership
                .members()
                .map(|m| pb::ServerStatus {
                    node: Some(pb::Node {
                        id: m.node.id.clone(),
                        addr: m.node.addr.clone(),
                    }),
                    state: membership.liveness(m, now).as_str().into(),
                    capacity: m.report.capacity,
                    used: m.report.used,
                    files: 0,
                    active_transfers: m.report.active,
                    peak_rss: m.report.peak_rss,
                    last_seen_ms_ago: m.last_seen.map_or(u64::MAX, |t| {
                        now.saturating_duration_since(t).as_millis() as u64
                    }),
                    sessions: sessions.get(&m.node.id).copied().unwrap_or(0) as u32,
                })
                .collect();
            let up = membership
                .members()
                .filter(|m| membership.liveness(m, now) == Liveness::Up)
                .map(|m| m.node.id.clone())
                .collect();
            (servers, up)
        };
        // One pass over the catalog, a page at a time: memory stays flat
        // whatever the number of files.
        let (mut files, mut bytes, mut under, mut under_bytes) = (0u64, 0u64, 0u64, 0u64);
        let mut per_server: HashMap<String, u64> = HashMap::new();
        self.state.catalog.for_each(|record| {
            files += 1;
            bytes += record.size;
            if record.holders.iter().filter(|h| up.contains(*h)).count() < 2 {
                under += 1;
                under_bytes += record.size;
            }
            for holder in record.holders {
                *per_server.entry(holder).or_default() += 1;
            }
            Ok(())
        })?;
        for server in &mut servers {
            let id = server.node.as_ref().map(|n| n.id.as_str()).unwrap_or("");
            server.files = per_server.get(id).copied().unwrap_or(0);
        }
        // Over capacity: no live server can take a session without going
        // past max_sessions (new logins still succeed, on the least loaded).
        let max_sessions = self.state.config.max_sessions;
        let up_servers = servers.iter().filter(|s| s.state == "up");
        let over_capacity = up_servers
            .clone()
            .all(|s| s.sessions as usize >= max_sessions)
            && up_servers.count() > 0;
        Ok(pb::ClusterStatusReply {
            servers,
            files,
            bytes,
            under_replicated: under,
            under_replicated_bytes: under_bytes,
            repaired_files: repairs.files,
            repaired_bytes: repairs.bytes,
            sessions: sessions.values().sum::<usize>() as u64,
            max_sessions: max_sessions as u32,
            over_capacity,
        })
    }
}

/// Most chunks one ChunkRefs call may ask about.
pub const MAX_CHUNK_REFS: usize = 65_536;

/// A random 128-bit id in hex.
fn random_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

type Reply<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl Manager for ManagerService {
    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> Reply<pb::HeartbeatReply> {
        self.state.secret.check(&request)?;
        let peer = dupla::tls::peer_name(&request);
        let req = request.into_inner();
        let node = req
            .node
            .filter(|n| !n.id.is_empty() && !n.addr.is_empty())
            .ok_or_else(|| Status::invalid_argument("heartbeat without a node id and address"))?;
        let node = NodeRef {
            id: node.id,
            addr: node.addr,
        };
        let report = Report {
            capacity: req.capacity,
            used: req.used,
            active: req.active_transfers,
            peak_rss: req.peak_rss,
        };
        let proof = match self.state.transport.is_tls() {
            true => crate::membership::Proof::Certificate(peer.as_deref()),
            false => crate::membership::Proof::Unavailable,
        };
        let changed = self
            .state
            .lock_membership()
            .heartbeat(node.clone(), report, Instant::now(), proof)
            .map_err(|refused| {
                tracing::warn!(id = %node.id, addr = %node.addr, %refused, "heartbeat refused");
                Status::permission_denied(refused)
            })?;
        if changed {
            tracing::info!(id = %node.id, addr = %node.addr, "server joined");
            self.state.catalog.save_server(&node)?;
        }
        Ok(Response::new(pb::HeartbeatReply {
            interval_ms: self.state.config.heartbeat_interval.as_millis() as u64,
        }))
    }

    async fn place(&self, request: Request<pb::PlaceRequest>) -> Reply<pb::PlaceReply> {
        self.state.secret.check(&request)?;
        let user = self.user(&request)?;
        Ok(Response::new(
            self.place(&user.login, request.into_inner())?,
        ))
    }

    async fn commit(&self, request: Request<pb::CommitRequest>) -> Reply<pb::CommitReply> {
        self.state.secret.check(&request)?;
        Ok(Response::new(self.commit(request.into_inner())?))
    }

    async fn report_corrupt(
        &self,
        request: Request<pb::ReportCorruptRequest>,
    ) -> Reply<pb::ReportCorruptReply> {
        self.state.secret.check(&request)?;
        let req = request.into_inner();
        let corrupt = req
            .chunks
            .iter()
            .map(|c| Hash::from_slice(c, "chunk hash"))
            .collect::<Result<std::collections::HashSet<_>>>()?;
        let files_affected = self.drop_corrupt_holder(&req.server_id, &corrupt)?;
        tracing::warn!(server = %req.server_id, chunks = corrupt.len(), files_affected,
            "corrupt chunks reported; affected files will be re-replicated");
        Ok(Response::new(pb::ReportCorruptReply { files_affected }))
    }

    async fn abort(&self, request: Request<pb::AbortRequest>) -> Reply<pb::AbortReply> {
        self.state.secret.check(&request)?;
        let req = request.into_inner();
        if let Some(upload) = self
            .state
            .uploads
            .lock()
            .expect("uploads lock poisoned")
            .close(&req.upload_id)
        {
            tracing::warn!(upload = %upload.id, name = %upload.name, reason = %req.reason, "upload aborted");
        }
        Ok(Response::new(pb::AbortReply {}))
    }

    async fn chunk_refs(
        &self,
        request: Request<pb::ChunkRefsRequest>,
    ) -> Reply<pb::ChunkRefsReply> {
        self.state.secret.check(&request)?;
        let req = request.into_inner();
        if req.chunks.len() > MAX_CHUNK_REFS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_CHUNK_REFS} chunks per ChunkRefs"
            )));
        }
        let asked = req
            .chunks
            .iter()
            .map(|c| Hash::from_slice(c, "chunk hash"))
            .collect::<Result<Vec<_>>>()?;
        let (held_here, catalog_files) = self.chunks_held_by(&req.server_id)?;
        Ok(Response::new(pb::ChunkRefsReply {
            referenced: asked.iter().map(|h| held_here.contains(h)).collect(),
            catalog_files,
        }))
    }

    async fn lookup(&self, request: Request<pb::LookupRequest>) -> Reply<pb::FileEntry> {
        let user = self.user(&request)?;
        let req = request.into_inner();
        let record = self.lookup_record(&user.login, &req.name, req.version)?;
        Ok(Response::new(self.entry(&record)))
    }

    async fn list(&self, request: Request<pb::ListRequest>) -> Reply<pb::ListReply> {
        let user = self.user(&request)?;
        let pattern = request.into_inner().pattern;
        let files = self
            .state
            .catalog
            .owned_by(&user.login)
            .map_err(Status::from)?
            .iter()
            .filter(|r| name::matches(&pattern, &r.name))
            .map(|r| pb::FileEntry {
                // Listings leave chunk lists out: Lookup has them.
                chunks: Vec::new(),
                ..self.entry(r)
            })
            .collect();
        Ok(Response::new(pb::ListReply { files }))
    }

    async fn remove(&self, request: Request<pb::RemoveRequest>) -> Reply<pb::RemoveReply> {
        let user = self.user(&request)?;
        let name = request.into_inner().name;
        let removed = {
            let _writes = self.state.lock_catalog_writes();
            self.state.snapshots.drop_path(&user.login, &name)?;
            self.state.catalog.remove(&user.login, &name)?
        };
        let record =
            removed.ok_or_else(|| Error::NotFound(format!("{name}: not found in your backups")))?;
        tracing::info!(owner = %user.login, name = %name, "removed from the catalog");
        Ok(Response::new(pb::RemoveReply {
            removed: Some(self.entry(&record)),
        }))
    }

    async fn cluster_status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> Reply<pb::ClusterStatusReply> {
        Ok(Response::new(self.status()?))
    }
}
