//! The JSON shapes of the manager's HTTP API, converted from the wire
//! types in one place (the gRPC services answer in prost messages; the
//! HTTP handlers call them and convert here). Hashes are hex, times are
//! milliseconds since the Unix epoch unless the field name says `_ns`.

use dupla::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// An account as others may see it.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct User {
    /// Unique login.
    pub login: String,
    /// First names.
    pub first_names: String,
    /// Last names.
    pub last_names: String,
    /// Age in years.
    pub age: u32,
    /// Free text.
    pub gender: String,
    /// `admin`, `user` or `viewer`.
    pub role: String,
    /// Registered at.
    pub registered_unix_ms: i64,
    /// In the chat now.
    pub online: bool,
}

impl From<pb::User> for User {
    fn from(u: pb::User) -> Self {
        User {
            login: u.login,
            first_names: u.first_names,
            last_names: u.last_names,
            age: u.age,
            gender: u.gender,
            role: u.role,
            registered_unix_ms: u.registered_unix_ms,
            online: u.online,
        }
    }
}

/// A storage server as a client sees it.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Node {
    /// Stable id.
    pub id: String,
    /// gRPC address.
    pub addr: String,
}

impl From<pb::Node> for Node {
    fn from(n: pb::Node) -> Self {
        Node {
            id: n.id,
            addr: n.addr,
        }
    }
}

/// `POST /api/register`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// 3 to 32 of `[a-z0-9_.-]`.
    #[schema(pattern = "^[a-z0-9_.-]{3,32}$")]
    pub login: String,
    /// 8 characters to 1024 bytes.
    #[schema(min_length = 8)]
    pub password: String,
    /// At most 100 characters, no control characters; empty: not given.
    #[schema(max_length = 100)]
    pub first_names: String,
    /// At most 100 characters, no control characters; empty: not given.
    #[schema(max_length = 100)]
    pub last_names: String,
    /// 1 to 150; 0: not given.
    #[schema(maximum = 150)]
    pub age: u32,
    /// Free text, at most 32 characters; empty: not given.
    #[schema(max_length = 32)]
    pub gender: String,
}

/// `POST /api/login`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// Login.
    pub login: String,
    /// Password.
    pub password: String,
}

/// A session: send `token` as `Authorization: Bearer <token>`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Session {
    /// Bearer token.
    pub token: String,
    /// When it stops working.
    pub expires_unix_ms: i64,
    /// Storage server assigned for transfers.
    pub server: Option<Node>,
    /// Who logged in.
    pub user: Option<User>,
}

/// `GET /api/whoami`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// The caller.
    pub user: Option<User>,
    /// When the token stops working.
    pub expires_unix_ms: i64,
    /// Storage server assigned at login.
    pub server: Option<Node>,
}

/// A file version in the catalog.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct File {
    /// Catalog name (a relative path).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// blake3 of the content, hex.
    pub blake3: String,
    /// Version number.
    pub version: u64,
    /// When it was committed.
    pub committed_unix_ms: i64,
    /// gRPC addresses of the servers holding a copy, live first.
    pub holders: Vec<String>,
}

impl From<pb::FileEntry> for File {
    fn from(f: pb::FileEntry) -> Self {
        File {
            name: f.name,
            size: f.size,
            blake3: hex::encode(&f.blake3),
            version: f.version,
            committed_unix_ms: f.committed_unix_ms,
            holders: f.holders.into_iter().map(|h| h.addr).collect(),
        }
    }
}

/// Search and filters of `GET /api/files`.
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct FileFilter {
    /// Glob (`*`, `?`) or substring of the name; empty: every file.
    #[serde(default)]
    pub q: String,
    /// Only files of at least this many bytes.
    pub min_size: Option<u64>,
    /// Only files of at most this many bytes.
    pub max_size: Option<u64>,
    /// Only files committed at or after this time (ms).
    pub after_ms: Option<i64>,
    /// Only files committed before this time (ms).
    pub before_ms: Option<i64>,
    /// Skip this many matches (paging).
    #[serde(default)]
    pub offset: usize,
    /// At most this many (default 1000, at most 10000).
    pub limit: Option<usize>,
}

/// A page of files.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct FilePage {
    /// Matches in total, before paging.
    pub total: usize,
    /// This page.
    pub files: Vec<File>,
}

/// Which file.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileRef {
    /// Catalog name.
    pub name: String,
    /// Version; 0 or absent: the latest.
    #[serde(default)]
    pub version: u64,
}

/// A snapshot's header.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    /// Short hex id.
    pub id: String,
    /// When the run started (client clock).
    pub time_unix_ms: i64,
    /// Client host name.
    pub host: String,
    /// Paths the run was given.
    pub paths: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Regular files.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
}

impl From<pb::SnapshotInfo> for Snapshot {
    fn from(s: pb::SnapshotInfo) -> Self {
        Snapshot {
            id: s.id,
            time_unix_ms: s.time_unix_ms,
            host: s.host,
            paths: s.paths,
            tags: s.tags,
            files: s.files,
            bytes: s.bytes,
        }
    }
}

/// One entry of a snapshot.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Entry {
    /// Relative path.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    /// Bytes (files).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Catalog version holding the content (files): download it with
    /// `name=path&version=…`.
    pub version: u64,
    /// blake3 of the content, hex (files).
    pub blake3: String,
}

impl From<pb::SnapshotEntry> for Entry {
    fn from(e: pb::SnapshotEntry) -> Self {
        let kind = match pb::EntryKind::try_from(e.kind) {
            Ok(pb::EntryKind::Dir) => "dir",
            Ok(pb::EntryKind::Symlink) => "symlink",
            _ => "file",
        };
        Entry {
            path: e.path,
            kind: kind.into(),
            size: e.size,
            mode: e.mode,
            mtime_ns: e.mtime_ns,
            version: e.version,
            blake3: hex::encode(&e.blake3),
        }
    }
}

/// Filters of a snapshot's entries.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EntryFilter {
    /// Only this path and what lies below it.
    #[serde(default)]
    pub prefix: String,
    /// At most this many (default 1000, at most 10000).
    pub limit: Option<usize>,
}

/// A storage server's state.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Server {
    /// Stable id.
    pub id: String,
    /// gRPC address.
    pub addr: String,
    /// Base URL of its HTTP API (downloads, uploads, metrics); empty if none.
    pub http: String,
    /// `up`, `suspect` or `down`.
    pub state: String,
    /// Bytes offered.
    pub capacity: u64,
    /// Bytes used.
    pub used: u64,
    /// File versions with a copy here.
    pub files: u64,
    /// Transfers in progress.
    pub active_transfers: u32,
    /// Client sessions assigned.
    pub sessions: u32,
    /// Peak resident memory, bytes.
    pub peak_rss: u64,
    /// Since its last heartbeat; absent if never heard from.
    pub last_seen_ms_ago: Option<u64>,
}

/// `GET /api/cluster`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Cluster {
    /// Every known storage server.
    pub servers: Vec<Server>,
    /// File versions, all users.
    pub files: u64,
    /// Their bytes (one copy).
    pub bytes: u64,
    /// Files with fewer than two live copies.
    pub under_replicated: u64,
    /// Their bytes.
    pub under_replicated_bytes: u64,
    /// Files repaired since the manager started.
    pub repaired_files: u64,
    /// Bytes copied by repairs.
    pub repaired_bytes: u64,
    /// Connected sessions.
    pub sessions: u64,
    /// Sessions a server takes before login prefers another.
    pub max_sessions: u32,
    /// Every up server is full.
    pub over_capacity: bool,
}

impl From<pb::ClusterStatusReply> for Cluster {
    fn from(c: pb::ClusterStatusReply) -> Self {
        let servers = c
            .servers
            .into_iter()
            .map(|s| {
                let node = s.node.unwrap_or_default();
                let state = match pb::ServerState::try_from(s.state) {
                    Ok(pb::ServerState::Up) => "up",
                    Ok(pb::ServerState::Suspect) => "suspect",
                    _ => "down",
                };
                Server {
                    id: node.id,
                    addr: node.addr,
                    http: s.http,
                    state: state.into(),
                    capacity: s.capacity,
                    used: s.used,
                    files: s.files,
                    active_transfers: s.active_transfers,
                    sessions: s.sessions,
                    peak_rss: s.peak_rss,
                    last_seen_ms_ago: (s.last_seen_ms_ago != u64::MAX)
                        .then_some(s.last_seen_ms_ago),
                }
            })
            .collect();
        Cluster {
            servers,
            files: c.files,
            bytes: c.bytes,
            under_replicated: c.under_replicated,
            under_replicated_bytes: c.under_replicated_bytes,
            repaired_files: c.repaired_files,
            repaired_bytes: c.repaired_bytes,
            sessions: c.sessions,
            max_sessions: c.max_sessions,
            over_capacity: c.over_capacity,
        }
    }
}

/// A quota and what is used of it; 0 means unlimited.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Quota {
    /// Bytes allowed (one copy).
    pub quota_bytes: u64,
    /// File versions allowed.
    pub quota_files: u64,
    /// Bytes used.
    pub used_bytes: u64,
    /// File versions kept.
    pub used_files: u64,
    /// Set for this user by an admin (otherwise the default).
    pub custom: bool,
}

impl From<pb::QuotaReply> for Quota {
    fn from(q: pb::QuotaReply) -> Self {
        Quota {
            quota_bytes: q.quota_bytes,
            quota_files: q.quota_files,
            used_bytes: q.used_bytes,
            used_files: q.used_files,
            custom: q.custom,
        }
    }
}

/// A user's state, role and usage.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct UserStatus {
    /// The account.
    pub user: User,
    /// `transferring` (an upload open), `online` (active within the
    /// session idle time, or in the chat) or `disconnected`.
    pub state: String,
    /// Quota and usage.
    pub quota: Quota,
}

/// `PUT /api/users/{login}/role`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    /// `admin`, `user` or `viewer`.
    pub role: String,
}

/// `PUT /api/users/{login}/quota`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuota {
    /// Bytes (one copy); 0: unlimited.
    #[serde(default)]
    pub bytes: u64,
    /// File versions; 0: unlimited.
    #[serde(default)]
    pub files: u64,
    /// Go back to the manager's default.
    #[serde(default)]
    pub reset: bool,
}

/// `GET /api/stats`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// The cluster totals.
    pub cluster: Cluster,
    /// Accounts.
    pub users: usize,
    /// Users per state (`transferring`, `online`, `disconnected`).
    pub users_by_state: std::collections::BTreeMap<String, usize>,
    /// Usage per user (admins see everyone, others themselves).
    pub usage: Vec<UserStatus>,
    /// Chat events delivered since the manager started.
    pub chat_deliveries: u64,
    /// Chat room messages the manager itself carried since it started (its
    /// compatibility `Rooms` service); chats on the servers never add to it.
    pub chat_lines_relayed: u64,
    /// The cluster every 10 s over the last hour (since the manager
    /// started, if later), oldest first: the console's charts.
    pub history: Vec<crate::http::history::Sample>,
}

/// `POST /api/uploads`: where to send a new file.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceUpload {
    /// Catalog name it will have.
    pub name: String,
    /// Exact size in bytes.
    pub size: u64,
}

/// The storage server to stage the upload at.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct UploadTarget {
    /// Base URL of the server's HTTP API: `POST {url}/api/uploads`, then
    /// `PUT {url}/api/uploads/{id}?offset=…`.
    pub url: String,
    /// The server's gRPC address.
    pub server: String,
}
