//! `dupla.v1.Manager`: the gRPC face of membership, placement and the
//! catalog. Handlers only translate between wire messages and [`State`];
//! the decisions live in `placement`, `membership`, `uploads` and the
//! catalog, which owns its lock and indexes. Catalog work runs on the
//! blocking pool, never on the async workers.

use crate::cluster::membership::{Liveness, NodeRef, Report};
use crate::config::Quota;
use crate::files::catalog::{FileRecord, PlacementLog};
use crate::files::uploads::OpenUpload;
use crate::identity::accounts::Accounts;
use crate::identity::auth::{Authenticator, Session};
use crate::identity::tokens::Tokens;
use crate::state::State;
use dupla::chunk::{chunk_count, ChunkLayout, CHUNK_SIZE, MAX_HELD_CHUNKS};
use dupla::placement::{self, DEFAULT_LOAD_EPSILON};
use dupla::v1::manager_server::Manager;
use dupla::v1::{self as pb};
use dupla::{clock, name, Error, Hash, Result};
use std::collections::HashSet;
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
    accounts: Arc<Accounts>,
    tokens: Arc<Mutex<Tokens>>,
    auth: Authenticator,
    /// Launched servers: their origin in status, the admin's launch,
    /// drain and retire.
    elastic: Option<Arc<crate::cluster::elastic::Elastic>>,
}

impl ManagerService {
    /// Serve `state`, checking users against `tokens` (and admins against
    /// `accounts`).
    pub fn new(state: Arc<State>, tokens: Arc<Mutex<Tokens>>, accounts: Arc<Accounts>) -> Self {
        ManagerService {
            state,
            accounts,
            auth: Authenticator::new(tokens.clone()),
            tokens,
            elastic: None,
        }
    }

    /// Report launched servers, and let admins launch, drain and retire,
    /// through `elastic`.
    pub fn with_elastic(mut self, elastic: Arc<crate::cluster::elastic::Elastic>) -> Self {
        self.elastic = Some(elastic);
        self
    }

    /// Run `f` on the blocking pool: catalog reads and writes (sled, its
    /// flushes) never stall the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ManagerService) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let service = self.clone();
        tokio::task::spawn_blocking(move || f(&service))
            .await
            .map_err(|e| Error::Internal(format!("catalog task: {e}")))?
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
            lost: record.lost_unix_ms != 0,
        }
    }

    fn lookup_record(&self, owner: &str, name: &str, version: u64) -> Result<FileRecord> {
        // A name no upload could have stored (empty, `..`, 5 MB long) is a
        // bad request, not a missing file; and the NOT_FOUND below then
        // quotes at most a valid name's length.
        name::validate(name)?;
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
        let key = crate::files::catalog::placement_key(owner, &req.name);
        let previous = self.state.catalog.get(owner, &req.name)?;
        let order = placement::prefer_holders(
            placement::choose(&key, req.size, &candidates, DEFAULT_LOAD_EPSILON),
            &candidates,
            previous.as_ref().map_or(&[][..], |p| &p.holders[..]),
        );
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
        self.check_quota(owner, &req.name, req.size)?;
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

    /// The quota in force for `login`, and whether it is their own.
    fn quota_of(&self, login: &str) -> Result<(Quota, bool)> {
        Ok(match self.state.catalog.quota(login)? {
            Some(q) => (q, true),
            None => (self.state.config.quota, false),
        })
    }

    /// Refuse an upload of `size` bytes as `owner`'s `name` that would take
    /// them past their quota. The version it replaces counts as freed
    /// unless a snapshot keeps it.
    pub(crate) fn check_quota(&self, owner: &str, name: &str, size: u64) -> Result<()> {
        let (quota, _) = self.quota_of(owner)?;
        if quota == Quota::default() {
            return Ok(());
        }
        let used = self.state.catalog.usage(owner)?;
        let (mut files, mut bytes) = (used.files + 1, used.bytes.saturating_add(size));
        if let Some(previous) = self.state.catalog.get(owner, name)? {
            let kept = self
                .state
                .snapshots
                .is_referenced(owner, name, previous.version)?;
            if !kept {
                files -= 1;
                bytes = bytes.saturating_sub(previous.size);
            }
        }
        if quota.bytes > 0 && bytes > quota.bytes {
            return Err(Error::Exhausted(format!(
                "{name}: over your quota of {} bytes ({} used, this file adds {size}); remove files or forget snapshots, or ask an admin for more",
                quota.bytes, used.bytes
            )));
        }
        if quota.files > 0 && files > quota.files {
            return Err(Error::Exhausted(format!(
                "{name}: over your quota of {} file versions ({} kept); remove files or forget snapshots, or ask an admin for more",
                quota.files, used.files
            )));
        }
        Ok(())
    }

    /// Whether `session`'s account has the admin role.
    fn is_admin(&self, session: &Session) -> Result<bool> {
        let account = self.accounts.get(&session.login)?;
        Ok(account.is_some_and(|a| a.admin)
            || self.state.config.admin.as_deref() == Some(session.login.as_str()))
    }

    /// Refuse a viewer (who may list and restore only) an action that
    /// writes: `what` says which, for the message.
    pub(crate) fn may_write(&self, session: &Session, what: &str) -> Result<()> {
        crate::identity::auth::may_write(&self.accounts, session, what)
    }

    /// `login`'s quota and usage.
    fn quota_reply(&self, login: &str) -> Result<pb::QuotaReply> {
        let (quota, custom) = self.quota_of(login)?;
        let used = self.state.catalog.usage(login)?;
        Ok(pb::QuotaReply {
            login: login.to_string(),
            quota_bytes: quota.bytes,
            quota_files: quota.files,
            used_bytes: used.bytes,
            used_files: used.files,
            custom,
        })
    }

    /// How many leading `chunks` `owner` may claim by hash
    /// ([`crate::files::catalog::Catalog::claimable`]).
    fn claimable<B: AsRef<[u8]>>(&self, owner: &str, chunks: &[B]) -> Result<u64> {
        let asked = chunks
            .iter()
            .map(|c| Hash::from_slice(c.as_ref(), "chunk hash"))
            .collect::<Result<Vec<_>>>()?;
        self.state.catalog.claimable(owner, &asked)
    }

    fn commit(&self, req: pb::CommitRequest) -> Result<pb::CommitReply> {
        let entry = req
            .entry
            .ok_or_else(|| Error::InvalidInput("commit without a file entry".into()))?;
        let open = self
            .state
            .lock_uploads()
            .get(&req.upload_id)
            .cloned()
            .ok_or_else(|| {
                // The id came from the client, through the entry server.
                Error::Aborted(format!(
                    "upload {} is not open (expired, aborted or from before a manager restart); back the file up again",
                    name::excerpt(&req.upload_id)
                ))
            })?;
        if open.name != entry.name {
            return Err(Error::InvalidInput(format!(
                "upload {} is for {:?}, not {:?}",
                req.upload_id,
                open.name,
                name::excerpt(&entry.name)
            )));
        }
        let record = {
            let _writes = self.state.lock_catalog_writes();
            // Still open under the lock: a deleted account's upload
            // (closed before its files go) never commits.
            if self.state.lock_uploads().get(&req.upload_id).is_none() {
                return Err(Error::Aborted(format!(
                    "upload {} was aborted meanwhile; back the file up again",
                    req.upload_id
                )));
            }
            let previous = self.state.catalog.get(&open.owner, &entry.name)?;
            let record = self.record_from_entry(&open.owner, entry, previous.as_ref())?;
            // The version this one replaces stays only if a snapshot uses it.
            let keep = match &previous {
                Some(p) => self
                    .state
                    .snapshots
                    .is_referenced(&open.owner, &p.name, p.version)?,
                None => false,
            };
            self.state
                .catalog
                .commit(&record, previous.as_ref(), keep)?;
            record
        };
        if record.holders.len() < crate::files::repair::TARGET_COPIES {
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
            lost_unix_ms: 0,
        })
    }

    /// The cluster status now (ClusterStatus without a request), for
    /// `/metrics`.
    pub fn status_now(&self) -> Result<pb::ClusterStatusReply> {
        self.status()
    }

    fn status(&self) -> Result<pb::ClusterStatusReply> {
        let sessions = self
            .tokens
            .lock()
            .expect("tokens lock poisoned")
            .sessions_per_server(clock::unix_ms(), self.state.config.session_idle);
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
                    state: pb::ServerState::from(membership.liveness(m, now)).into(),
                    capacity: m.report.capacity,
                    used: m.report.used,
                    files: 0,
                    active_transfers: m.report.active,
                    peak_rss: m.report.peak_rss,
                    last_seen_ms_ago: m.last_seen.map_or(u64::MAX, |t| {
                        now.saturating_duration_since(t).as_millis() as u64
                    }),
                    sessions: sessions.get(&m.node.id).copied().unwrap_or(0) as u32,
                    http: m.report.http.clone(),
                    launched_by: pb::ServerOrigin::Operator.into(),
                    lifecycle: match membership.is_draining(&m.node.id) {
                        true => pb::ServerLifecycle::Draining,
                        false => pb::ServerLifecycle::Active,
                    }
                    .into(),
                    uptime_ms: match membership.liveness(m, now) {
                        Liveness::Up => m
                            .up_since
                            .map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64),
                        _ => 0,
                    },
                    launch_ms: 0,
                    launched_unix_ms: 0,
                })
                .collect();
            let up = membership
                .members()
                .filter(|m| membership.liveness(m, now) == Liveness::Up)
                .map(|m| m.node.id.clone())
                .collect();
            (servers, up)
        };
        // Counters kept with the records: no pass over the catalog.
        let counts = self.state.catalog.counts()?;
        // Read after the catalog: a repair counts itself while it records
        // its holder (`repair_worker::record_holder`), so a repaired file
        // these counts show is always in the totals too.
        let repairs = *self.state.repair_stats.lock().expect("stats lock poisoned");
        let (mut under, mut under_bytes) = (0u64, 0u64);
        for (holders, usage) in &counts.holder_sets {
            if holders.iter().filter(|h| up.contains(*h)).count()
                < crate::files::repair::TARGET_COPIES
            {
                under += usage.files;
                under_bytes += usage.bytes;
            }
        }
        for server in &mut servers {
            let id = server.node.as_ref().map(|n| n.id.as_str()).unwrap_or("");
            server.files = counts.servers.get(id).map_or(0, |u| u.files);
        }
        let (retired, launcher) = self.launched_status(&mut servers)?;
        // Over capacity: no live server can take a session without going
        // past max_sessions (new logins still succeed, on the least loaded).
        let max_sessions = self.state.config.max_sessions;
        let up_servers = servers.iter().filter(|s| {
            s.state() == pb::ServerState::Up && s.lifecycle() != pb::ServerLifecycle::Draining
        });
        let over_capacity = up_servers
            .clone()
            .all(|s| s.sessions as usize >= max_sessions)
            && up_servers.count() > 0;
        Ok(pb::ClusterStatusReply {
            servers,
            files: counts.total.files,
            bytes: counts.total.bytes,
            under_replicated: under,
            under_replicated_bytes: under_bytes,
            repaired_files: repairs.files,
            repaired_bytes: repairs.bytes,
            sessions: sessions.values().sum::<usize>() as u64,
            max_sessions: max_sessions as u32,
            over_capacity,
            retired,
            launcher,
            lost: self.state.catalog.lost_latest()?.len() as u64,
        })
    }

    /// Mark the servers the manager launched in `servers`; returns the
    /// retired (or failed) ones and the launcher's name.
    fn launched_status(
        &self,
        servers: &mut [pb::ServerStatus],
    ) -> Result<(Vec<pb::ServerStatus>, String)> {
        let Some(elastic) = &self.elastic else {
            return Ok((Vec::new(), "none".into()));
        };
        let mut retired = Vec::new();
        for record in elastic.records()? {
            let lifecycle = pb::ServerLifecycle::from(record.stage);
            match servers
                .iter_mut()
                .find(|s| s.node.as_ref().is_some_and(|n| n.id == record.id))
            {
                Some(server) => {
                    server.launched_by = pb::ServerOrigin::Manager.into();
                    if server.lifecycle() != pb::ServerLifecycle::Draining {
                        server.lifecycle = lifecycle.into();
                    }
                    server.launch_ms = record.launch_ms;
                    server.launched_unix_ms = record.launched_unix_ms;
                }
                None => retired.push(pb::ServerStatus {
                    node: Some(pb::Node {
                        id: record.id.clone(),
                        addr: String::new(),
                    }),
                    state: pb::ServerState::Down.into(),
                    launched_by: pb::ServerOrigin::Manager.into(),
                    lifecycle: lifecycle.into(),
                    launch_ms: record.launch_ms,
                    launched_unix_ms: record.launched_unix_ms,
                    last_seen_ms_ago: u64::MAX,
                    ..Default::default()
                }),
            }
        }
        Ok((retired, elastic.launcher_name().into()))
    }

    /// The caller must be an admin, and the manager have a launcher.
    fn elastic_admin(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<(Session, Arc<crate::cluster::elastic::Elastic>)> {
        let session = self.auth.check(metadata)?;
        if !self.is_admin(&session)? {
            return Err(Error::PermissionDenied(format!(
                "{} is not an admin; launching, draining and retiring servers needs the admin role",
                session.login
            )));
        }
        let elastic = self
            .elastic
            .clone()
            .ok_or_else(|| Error::InvalidInput("this manager has no launcher".into()))?;
        Ok((session, elastic))
    }

    /// The status of server `id` (live or retired), for an action's reply.
    async fn server_status(&self, id: String) -> Result<Option<pb::ServerStatus>> {
        let status = self.blocking(|s| s.status()).await?;
        Ok(status
            .servers
            .into_iter()
            .chain(status.retired)
            .find(|s| s.node.as_ref().is_some_and(|n| n.id == id)))
    }
}

/// Most chunks one ChunkRefs call may ask about, and one ReportStored
/// may report.
pub const MAX_CHUNK_REFS: usize = 65_536;

/// How long a user may claim by hash the chunks they sent in an upload
/// that failed: the servers' default garbage-collection grace, after which
/// those chunks may be gone anyway.
pub const POSSESSION_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The chunk hashes of a `call` that may carry at most [`MAX_CHUNK_REFS`].
fn chunk_list<B: AsRef<[u8]>>(chunks: &[B], call: &str) -> Result<Vec<Hash>> {
    if chunks.len() > MAX_CHUNK_REFS {
        return Err(Error::InvalidInput(format!(
            "at most {MAX_CHUNK_REFS} chunks per {call}"
        )));
    }
    chunks
        .iter()
        .map(|c| Hash::from_slice(c.as_ref(), "chunk hash"))
        .collect()
}

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
            http: req.http,
        };
        // A retired server that still runs (or a heartbeat that was in
        // flight when it stopped) must not join again.
        if let Some(elastic) = &self.elastic {
            let id = node.id.clone();
            let elastic = elastic.clone();
            let retired = tokio::task::spawn_blocking(move || elastic.is_retired(&id))
                .await
                .map_err(|e| Status::internal(format!("retired check: {e}")))??;
            if retired {
                return Err(Status::failed_precondition(format!(
                    "server {} was retired by the manager; it has no place in the cluster any more",
                    node.id
                )));
            }
        }
        let proof = match self.state.transport.is_tls() {
            true => crate::cluster::membership::Proof::Certificate(peer.as_deref()),
            false => crate::cluster::membership::Proof::Unavailable,
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
            self.blocking(move |s| s.state.catalog.save_server(&node))
                .await?;
        }
        Ok(Response::new(pb::HeartbeatReply {
            interval_ms: self.state.config.heartbeat_interval.as_millis() as u64,
        }))
    }

    async fn place(&self, request: Request<pb::PlaceRequest>) -> Reply<pb::PlaceReply> {
        self.state.secret.check(&request)?;
        let user = self.user(&request)?;
        let req = request.into_inner();
        // A preview only says where a file is (resume, restore paths).
        if !req.preview {
            self.may_write(&user, "back up files")?;
        }
        Ok(Response::new(
            self.blocking(move |s| s.place(&user.login, req)).await?,
        ))
    }

    async fn commit(&self, request: Request<pb::CommitRequest>) -> Reply<pb::CommitReply> {
        self.state.secret.check(&request)?;
        let req = request.into_inner();
        Ok(Response::new(self.blocking(move |s| s.commit(req)).await?))
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
        let files_affected = self
            .blocking(move |s| {
                let affected = s
                    .state
                    .catalog
                    .drop_corrupt_holder(&req.server_id, &corrupt)?;
                if affected > 0 {
                    s.state.want_repair();
                }
                Ok(affected)
            })
            .await?;
        tracing::warn!(
            files_affected,
            "corrupt chunks reported; affected files will be re-replicated"
        );
        Ok(Response::new(pb::ReportCorruptReply { files_affected }))
    }

    async fn abort(&self, request: Request<pb::AbortRequest>) -> Reply<pb::AbortReply> {
        self.state.secret.check(&request)?;
        let req = request.into_inner();
        if let Some(upload) = self.state.lock_uploads().close(&req.upload_id) {
            tracing::warn!(upload = %upload.id, name = %upload.name, reason = %req.reason, "upload aborted");
        }
        Ok(Response::new(pb::AbortReply {}))
    }

    async fn report_stored(
        &self,
        request: Request<pb::ReportStoredRequest>,
    ) -> Reply<pb::ReportStoredReply> {
        self.state.secret.check(&request)?;
        let req = request.into_inner();
        let chunks = chunk_list(&req.chunks, "ReportStored")?;
        // An upload the manager no longer knows (restarted, or long closed)
        // proves nothing about anyone: its owner sends those chunks again.
        let Some(owner) = self.state.lock_uploads().owner_of(&req.upload_id) else {
            tracing::debug!(upload = %req.upload_id, "stored chunks of an unknown upload ignored");
            return Ok(Response::new(pb::ReportStoredReply {}));
        };
        tracing::debug!(upload = %req.upload_id, %owner, chunks = chunks.len(), "chunks an upload brought recorded");
        let until = dupla::clock::unix_ms().max(0) as u64 + POSSESSION_TTL.as_millis() as u64;
        self.blocking(move |s| s.state.catalog.record_possession(&owner, &chunks, until))
            .await?;
        Ok(Response::new(pb::ReportStoredReply {}))
    }

    async fn chunk_refs(
        &self,
        request: Request<pb::ChunkRefsRequest>,
    ) -> Reply<pb::ChunkRefsReply> {
        self.state.secret.check(&request)?;
        let req = request.into_inner();
        let asked = chunk_list(&req.chunks, "ChunkRefs")?;
        let reply = self
            .blocking(move |s| {
                let catalog = &s.state.catalog;
                // The count first: a file committed in between only adds
                // references, never makes a chunk look unused.
                let catalog_files = catalog.counts()?.total.files;
                let referenced = asked
                    .iter()
                    .map(|h| catalog.server_uses(&req.server_id, h))
                    .collect::<Result<Vec<bool>>>()?;
                Ok(pb::ChunkRefsReply {
                    referenced,
                    catalog_files,
                })
            })
            .await?;
        Ok(Response::new(reply))
    }

    async fn lookup(&self, request: Request<pb::LookupRequest>) -> Reply<pb::FileEntry> {
        let user = self.user(&request)?;
        let req = request.into_inner();
        let entry = self
            .blocking(move |s| {
                let record = s.lookup_record(&user.login, &req.name, req.version)?;
                Ok(s.entry(&record))
            })
            .await?;
        Ok(Response::new(entry))
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
        self.may_write(&user, "delete files")?;
        let name = request.into_inner().name;
        // As Lookup: a name that cannot be stored is a bad request.
        name::validate(&name)?;
        let (login, path) = (user.login.clone(), name.clone());
        let removed = self
            .blocking(move |s| {
                let _writes = s.state.lock_catalog_writes();
                s.state.snapshots.drop_path(&login, &path)?;
                s.state.catalog.remove(&login, &path)
            })
            .await?;
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
        Ok(Response::new(self.blocking(|s| s.status()).await?))
    }

    async fn set_quota(&self, request: Request<pb::SetQuotaRequest>) -> Reply<pb::QuotaReply> {
        let user = self.user(&request)?;
        let req = request.into_inner();
        let reply = self
            .blocking(move |s| {
                if !s.is_admin(&user)? {
                    return Err(Error::PermissionDenied(format!(
                        "{} is not an admin; setting quotas needs the admin role",
                        user.login
                    )));
                }
                if !s.accounts.exists(&req.login)? {
                    return Err(Error::NotFound(format!(
                        "no user named {:?}",
                        name::excerpt(&req.login)
                    )));
                }
                let quota = (!req.reset).then_some(Quota {
                    bytes: req.bytes,
                    files: req.files,
                });
                s.state.catalog.set_quota(&req.login, quota)?;
                tracing::info!(admin = %user.login, login = %req.login, ?quota, "quota set");
                s.quota_reply(&req.login)
            })
            .await?;
        Ok(Response::new(reply))
    }

    async fn launch_server(
        &self,
        request: Request<pb::LaunchServerRequest>,
    ) -> Reply<pb::ServerActionReply> {
        let (admin, elastic) = self.elastic_admin(request.metadata())?;
        tracing::info!(admin = %admin.login, "launch asked by an admin");
        let id = elastic.launch_now().await?;
        Ok(Response::new(pb::ServerActionReply {
            server: self.server_status(id).await?,
            moved_files: 0,
        }))
    }

    async fn drain_server(
        &self,
        request: Request<pb::ServerActionRequest>,
    ) -> Reply<pb::ServerActionReply> {
        let (admin, elastic) = self.elastic_admin(request.metadata())?;
        let id = request.into_inner().id;
        tracing::info!(admin = %admin.login, %id, "drain asked by an admin");
        let moved = elastic.drain(&id).await?;
        Ok(Response::new(pb::ServerActionReply {
            server: self.server_status(id).await?,
            moved_files: moved,
        }))
    }

    async fn retire_server(
        &self,
        request: Request<pb::ServerActionRequest>,
    ) -> Reply<pb::ServerActionReply> {
        let (admin, elastic) = self.elastic_admin(request.metadata())?;
        let id = request.into_inner().id;
        tracing::info!(admin = %admin.login, %id, "retire asked by an admin");
        let moved = elastic.retire(&id).await?;
        Ok(Response::new(pb::ServerActionReply {
            server: self.server_status(id).await?,
            moved_files: moved,
        }))
    }

    async fn get_quota(&self, request: Request<pb::GetQuotaRequest>) -> Reply<pb::QuotaReply> {
        let user = self.user(&request)?;
        let login = request.into_inner().login;
        let reply = self
            .blocking(move |s| {
                let login = if login.is_empty() {
                    user.login.clone()
                } else {
                    login
                };
                if login != user.login && !s.is_admin(&user)? {
                    return Err(Error::PermissionDenied(format!(
                        "{} is not an admin; another user's quota needs the admin role",
                        user.login
                    )));
                }
                s.quota_reply(&login)
            })
            .await?;
        Ok(Response::new(reply))
    }
}
