//! Everything the manager knows, shared by its services.

use crate::cluster::membership::Membership;
use crate::config::Config;
use crate::files::catalog::Catalog;
use crate::files::snapshots::Snapshots;
use crate::files::uploads::Uploads;
use dupla::kv::Kv;
use dupla::rpc::Secret;
use dupla::Result;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The manager's state: persistent catalog plus in-memory membership and
/// open uploads. Locks are `std::sync::Mutex`: never held across `.await`.
pub struct State {
    /// Settings.
    pub config: Config,
    /// Secret internal calls must carry.
    pub secret: Secret,
    /// How the manager dials storage servers (TLS with its certificate,
    /// or plain text under `--insecure`); also tells whether heartbeats
    /// can be proven by certificates.
    pub transport: dupla::rpc::Transport,
    /// Committed files, placement log, known servers (on disk).
    pub catalog: Catalog,
    /// Snapshots of every user, in the same database as the catalog.
    pub snapshots: Snapshots,
    /// Live view of the storage servers.
    pub membership: Mutex<Membership>,
    /// Uploads placed but not yet committed or aborted.
    pub uploads: Mutex<Uploads>,
    /// What the repair worker has done since start.
    pub repair_stats: Mutex<RepairStats>,
    /// When this manager started (repairs wait a grace period after it).
    pub started: std::time::Instant,
    /// Set when something may have left a file short of copies (a
    /// one-holder commit, a corruption report, a manager start). With it
    /// clear and every server up, the repair worker skips its catalog scan:
    /// a healthy cluster pays nothing per pass.
    pub repair_wanted: AtomicBool,
}

impl State {
    /// The membership, locked (never across an `.await`).
    pub fn lock_membership(&self) -> std::sync::MutexGuard<'_, Membership> {
        self.membership.lock().expect("membership lock poisoned")
    }

    /// The catalog's read-modify-write lock, held while a record is read,
    /// changed and written back.
    pub fn lock_catalog_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.catalog.lock_writes()
    }

    /// The open uploads, locked (never across an `.await`).
    pub fn lock_uploads(&self) -> std::sync::MutexGuard<'_, Uploads> {
        self.uploads.lock().expect("uploads lock poisoned")
    }

    /// Everything of a deleted account: its open uploads are aborted (their
    /// commits fail), then its snapshots and files go. Returns how many
    /// file versions went.
    pub fn forget_owner(&self, login: &str) -> Result<usize> {
        let aborted = self.lock_uploads().close_owner(login);
        for upload in aborted {
            tracing::info!(upload = %upload.id, name = %upload.name, "upload aborted: its account was deleted");
        }
        let _writes = self.lock_catalog_writes();
        self.snapshots.remove_owner(login)?;
        self.catalog.remove_owner(login)
    }

    /// Ask the repair worker to scan the catalog at its next pass.
    pub fn want_repair(&self) {
        self.repair_wanted.store(true, Ordering::Relaxed);
    }
}

/// Counters of the repair worker, shown in cluster status.
#[derive(Clone, Copy, Debug, Default)]
pub struct RepairStats {
    /// Files given a new copy.
    pub files: u64,
    /// Bytes copied for them.
    pub bytes: u64,
}

impl State {
    /// Build the state over `kv`, restoring the servers known before a restart.
    pub fn open(
        config: Config,
        kv: Arc<dyn Kv>,
        transport: dupla::rpc::Transport,
    ) -> Result<State> {
        let catalog = Catalog::open(kv.clone())?;
        let mut membership = Membership::new(config.suspect_after, config.down_after);
        for node in catalog.servers()? {
            membership.restore(node);
        }
        Ok(State {
            secret: Secret::new(&config.secret)?,
            transport,
            config,
            catalog,
            snapshots: Snapshots::new(kv),
            membership: Mutex::new(membership),
            uploads: Mutex::new(Uploads::default()),
            repair_stats: Mutex::new(RepairStats::default()),
            started: std::time::Instant::now(),
            repair_wanted: AtomicBool::new(true),
        })
    }
}
