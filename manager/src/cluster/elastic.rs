//! Elastic application servers (issue 9, part 4): when a user logs in and
//! every server already holds `max_sessions` sessions, the manager launches
//! a server through its [`Launcher`] and assigns the user to it; a launched
//! server that stays without sessions for `idle_retire_secs`, while more
//! than `min_servers` are up, is drained and retired.
//!
//! * **Which servers are the manager's**: every launch is recorded in the
//!   manager's database (tree `launched_servers`) before the launcher runs,
//!   so a restarted manager still knows them. Only those are ever retired.
//! * **Draining** marks the server in membership (no new sessions, no new
//!   placements), then walks the catalog's server→files index: every file
//!   version it holds gets copies on other servers (the repair worker's
//!   verified copy, `repair_worker::copy_file`) until two other
//!   up servers hold it, and only then is the draining server dropped from
//!   its holders. A drain is complete when the index lists nothing for it.
//! * **Retiring** stops the drained server through the launcher and removes
//!   it from membership and from the known servers.
//!
//! The decision of what to retire, [`to_retire`], is a pure function.

use crate::cluster::launcher::Launcher;
use crate::cluster::membership::Liveness;
use crate::config::LauncherKind;
use crate::files::repair::{RepairTask, TARGET_COPIES};
use crate::identity::tokens::Tokens;
use crate::state::State;
use dupla::kv::Kv;
use dupla::shutdown::Shutdown;
use dupla::{clock, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Tree of the servers the manager launched, by id.
const LAUNCHED_TREE: &str = "launched_servers";

/// How often the retire worker looks for idle launched servers.
pub const RETIRE_SCAN_INTERVAL: Duration = Duration::from_millis(500);

/// How often a launch checks for the new server's first heartbeat.
const HEARTBEAT_POLL: Duration = Duration::from_millis(50);

/// After a failed launch, logins do not try another for this long (they
/// are refused or overfill at once instead of each waiting for a launch
/// that is likely to fail the same way).
pub const LAUNCH_RETRY_AFTER: Duration = Duration::from_secs(10);

/// File versions read from the server→files index at a time while draining.
const DRAIN_PAGE: usize = 256;

/// Where a launched server is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Started; no heartbeat yet.
    Launching,
    /// Heartbeating and serving.
    Active,
    /// Its files are being copied elsewhere; no new sessions or placements.
    Draining,
    /// Drained, stopped, removed from membership.
    Retired,
    /// The launch failed or timed out.
    Failed,
}

impl From<Stage> for dupla::v1::ServerLifecycle {
    fn from(stage: Stage) -> Self {
        use dupla::v1::ServerLifecycle as L;
        match stage {
            Stage::Launching => L::Launching,
            Stage::Active => L::Active,
            Stage::Draining => L::Draining,
            Stage::Retired => L::Retired,
            Stage::Failed => L::Failed,
        }
    }
}

/// A server the manager launched, as persisted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Launched {
    /// Its id (also its `data/node_id`).
    pub id: String,
    /// Where it is in its life.
    pub stage: Stage,
    /// When the launch started, Unix milliseconds.
    pub launched_unix_ms: i64,
    /// Milliseconds from the launch to its first heartbeat; 0 before.
    pub launch_ms: u64,
    /// When it was retired, Unix milliseconds; 0 before.
    pub retired_unix_ms: i64,
    /// Process id of a `local` server (to stop it after a manager restart).
    pub pid: Option<u32>,
    /// Being drained in order to retire (not an admin's drain only): a
    /// restarted manager finishes the retirement.
    #[serde(default)]
    pub retiring: bool,
}

/// What the retire decision knows of one launched, active server.
#[derive(Clone, Debug, PartialEq)]
pub struct IdleView {
    /// Server id.
    pub id: String,
    /// How long it has had no session; `None` while it has some.
    pub idle_for: Option<Duration>,
}

/// Which launched servers to retire now: those idle for `idle_retire` or
/// longer, longest idle first, while at least `min_servers` servers stay
/// up (`up` counts every up, non-draining server, static ones included),
/// and never fewer than [`TARGET_COPIES`]: a drain gives each file two
/// copies on *other* servers, which one remaining server cannot hold.
pub fn to_retire(
    launched: &[IdleView],
    up: usize,
    min_servers: usize,
    idle_retire: Duration,
) -> Vec<String> {
    let mut idle: Vec<&IdleView> = launched
        .iter()
        .filter(|s| s.idle_for.is_some_and(|d| d >= idle_retire))
        .collect();
    idle.sort_by(|a, b| b.idle_for.cmp(&a.idle_for).then(a.id.cmp(&b.id)));
    let room = up.saturating_sub(min_servers.max(TARGET_COPIES));
    idle.into_iter().take(room).map(|s| s.id.clone()).collect()
}

/// The manager's elasticity: its launcher, the launched servers, the idle
/// clocks.
pub struct Elastic {
    state: Arc<State>,
    kv: Arc<dyn Kv>,
    tokens: Arc<Mutex<Tokens>>,
    launcher: Launcher,
    /// One launch (or retire) at a time.
    busy: tokio::sync::Mutex<()>,
    /// When each launched server was last seen with no session.
    idle_since: Mutex<HashMap<String, Instant>>,
    /// When the last launch failed.
    failed_at: Mutex<Option<Instant>>,
}

impl Elastic {
    /// Elasticity over `state`, launching with `launcher`.
    pub fn new(
        state: Arc<State>,
        kv: Arc<dyn Kv>,
        tokens: Arc<Mutex<Tokens>>,
        launcher: Launcher,
    ) -> Elastic {
        Elastic {
            state,
            kv,
            tokens,
            launcher,
            busy: tokio::sync::Mutex::new(()),
            idle_since: Mutex::new(HashMap::new()),
            failed_at: Mutex::new(None),
        }
    }

    /// Whether a launcher is configured.
    pub fn enabled(&self) -> bool {
        *self.launcher.kind() != LauncherKind::None
    }

    /// The launcher's name, for status.
    pub fn launcher_name(&self) -> &'static str {
        self.launcher.kind().name()
    }

    /// Every launched server ever recorded.
    pub fn records(&self) -> Result<Vec<Launched>> {
        self.kv
            .scan_prefix(LAUNCHED_TREE, b"")?
            .iter()
            .map(|(_, v)| {
                serde_json::from_slice(v)
                    .map_err(|e| Error::Internal(format!("launched server record: {e}")))
            })
            .collect()
    }

    /// One launched server's record.
    pub fn record(&self, id: &str) -> Result<Option<Launched>> {
        self.kv
            .get(LAUNCHED_TREE, id.as_bytes())?
            .map(|v| {
                serde_json::from_slice(&v)
                    .map_err(|e| Error::Internal(format!("launched server record: {e}")))
            })
            .transpose()
    }

    /// Whether `id` is a server the manager retired (its heartbeats are
    /// refused).
    pub fn is_retired(&self, id: &str) -> Result<bool> {
        if !id.starts_with("launch-") {
            return Ok(false);
        }
        Ok(self.record(id)?.is_some_and(|r| r.stage == Stage::Retired))
    }

    fn save(&self, record: &Launched) -> Result<()> {
        let bytes = serde_json::to_vec(record)
            .map_err(|e| Error::Internal(format!("launched server record: {e}")))?;
        self.kv.put(LAUNCHED_TREE, record.id.as_bytes(), &bytes)?;
        self.kv.flush()
    }

    fn set_stage(&self, id: &str, stage: Stage) -> Result<()> {
        if let Some(mut record) = self.record(id)? {
            record.stage = stage;
            if stage == Stage::Retired {
                record.retired_unix_ms = clock::unix_ms();
            }
            self.save(&record)?;
        }
        Ok(())
    }

    /// Whether some up server can take one more session now.
    fn has_room(&self) -> bool {
        let counts = self.session_counts();
        let loads = crate::identity::sessions::loads(&self.state, &counts, Instant::now());
        crate::identity::sessions::assign(&loads, self.state.config.max_sessions)
            .is_some_and(|a| !a.over_capacity)
    }

    fn session_counts(&self) -> HashMap<String, usize> {
        self.tokens
            .lock()
            .expect("tokens lock poisoned")
            .sessions_per_server(clock::unix_ms(), self.state.config.session_idle)
    }

    /// Every server is full: launch one (unless a launch running meanwhile
    /// made room) and wait for its first heartbeat. Returns the new
    /// server's id, `None` when room appeared without launching.
    pub async fn make_room(&self) -> Result<Option<String>> {
        let _busy = self.busy.lock().await;
        if self.has_room() {
            return Ok(None);
        }
        let failed_at = *self.failed_at.lock().expect("failed_at lock poisoned");
        if let Some(at) = failed_at.filter(|at| at.elapsed() < LAUNCH_RETRY_AFTER) {
            return Err(Error::Unavailable(format!(
                "the last launch failed {} s ago; the next is tried {} s after it",
                at.elapsed().as_secs(),
                LAUNCH_RETRY_AFTER.as_secs()
            )));
        }
        let launched = self.launch_locked().await;
        *self.failed_at.lock().expect("failed_at lock poisoned") =
            launched.is_err().then(Instant::now);
        launched.map(Some)
    }

    /// Launch a server now (an admin's `dupla servers launch`).
    pub async fn launch_now(&self) -> Result<String> {
        let _busy = self.busy.lock().await;
        self.launch_locked().await
    }

    async fn launch_locked(&self) -> Result<String> {
        if !self.enabled() {
            return Err(Error::InvalidInput(
                "no launcher is configured (launcher = \"none\" in the manager's node.toml)".into(),
            ));
        }
        let alive = self
            .records()?
            .iter()
            .filter(|r| matches!(r.stage, Stage::Launching | Stage::Active))
            .count();
        let max = self.state.config.elastic.max_launched;
        if alive >= max {
            return Err(Error::Exhausted(format!(
                "{alive} launched servers run already (max_launched = {max})"
            )));
        }
        let id = format!("launch-{}", hex::encode(rand::random::<[u8; 6]>()));
        let mut record = Launched {
            id: id.clone(),
            stage: Stage::Launching,
            launched_unix_ms: clock::unix_ms(),
            launch_ms: 0,
            retired_unix_ms: 0,
            pid: None,
            retiring: false,
        };
        // Recorded before it exists: a manager that dies mid-launch still
        // knows the server is its own.
        self.save(&record)?;
        let started = Instant::now();
        tracing::info!(%id, launcher = self.launcher_name(), "every server is full: launching one");
        let launched = async {
            record.pid = self.launcher.launch(&id).await?;
            self.save(&record)?;
            self.wait_for_heartbeat(&id).await
        }
        .await;
        if let Err(e) = launched {
            tracing::warn!(%id, error = %e, "launch failed");
            record.stage = Stage::Failed;
            self.save(&record)?;
            if let Err(stop) = self.launcher.stop(&id, record.pid).await {
                tracing::warn!(%id, error = %stop, "could not stop the failed launch");
            }
            return Err(e);
        }
        record.stage = Stage::Active;
        record.launch_ms = started.elapsed().as_millis() as u64;
        self.save(&record)?;
        tracing::info!(%id, launch_ms = record.launch_ms, "launched server is up");
        Ok(id)
    }

    /// Wait, at most the launch timeout, until `id` has heartbeated.
    async fn wait_for_heartbeat(&self, id: &str) -> Result<()> {
        let timeout = self.state.config.elastic.launch_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let up = {
                let membership = self.state.lock_membership();
                membership
                    .get(id)
                    .is_some_and(|m| membership.liveness(m, Instant::now()) == Liveness::Up)
            };
            if up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "server {id} sent no heartbeat within {timeout:?}"
                )));
            }
            tokio::time::sleep(HEARTBEAT_POLL).await;
        }
    }

    /// Drain `id`, a server the manager launched: no new sessions or
    /// placements, and every file it holds copied until two other servers
    /// hold it. Returns the file versions given new copies.
    pub async fn drain(&self, id: &str) -> Result<u64> {
        self.start_draining(id, false)?;
        self.finish_drain(id).await
    }

    /// Mark `id` draining (in membership and in its record).
    fn start_draining(&self, id: &str, retiring: bool) -> Result<()> {
        let mut record = self.own(id)?;
        if matches!(record.stage, Stage::Retired | Stage::Failed) {
            return Err(Error::InvalidInput(format!(
                "server {id} is {:?} already",
                record.stage
            )));
        }
        self.state.lock_membership().set_draining(id, true);
        record.stage = Stage::Draining;
        record.retiring |= retiring;
        self.save(&record)?;
        tracing::info!(%id, retiring, "draining");
        Ok(())
    }

    async fn finish_drain(&self, id: &str) -> Result<u64> {
        let moved = drain_files(&self.state, id).await?;
        tracing::info!(%id, moved, "drained: every file it held has two copies elsewhere");
        Ok(moved)
    }

    /// Drain `id`, then stop it and remove it from membership (an admin's
    /// `dupla servers retire`).
    pub async fn retire(&self, id: &str) -> Result<u64> {
        let _busy = self.busy.lock().await;
        self.start_draining(id, true)?;
        self.retire_drained(id).await
    }

    /// Retire `id`, chosen as idle: once it is marked draining (no login
    /// can land there any more), check that no session landed there
    /// meanwhile; if one did, it stays.
    async fn retire_idle(&self, id: &str) -> Result<()> {
        let _busy = self.busy.lock().await;
        self.start_draining(id, true)?;
        if self.session_counts().get(id).copied().unwrap_or(0) > 0 {
            self.state.lock_membership().set_draining(id, false);
            if let Some(mut record) = self.record(id)? {
                record.stage = Stage::Active;
                record.retiring = false;
                self.save(&record)?;
            }
            tracing::info!(%id, "not retired: a user logged in there meanwhile");
            return Ok(());
        }
        self.retire_drained(id).await.map(|_| ())
    }

    /// Finish draining `id` (marked draining), stop it, forget it.
    async fn retire_drained(&self, id: &str) -> Result<u64> {
        let moved = self.finish_drain(id).await?;
        let record = self.own(id)?;
        self.launcher.stop(id, record.pid).await?;
        self.state.lock_membership().remove(id);
        self.state.catalog.forget_server(id)?;
        self.set_stage(id, Stage::Retired)?;
        self.idle_since
            .lock()
            .expect("idle lock poisoned")
            .remove(id);
        tracing::info!(%id, moved, "server retired");
        Ok(moved)
    }

    /// The record of `id`, which must be a server the manager launched.
    fn own(&self, id: &str) -> Result<Launched> {
        self.record(id)?.ok_or_else(|| {
            Error::InvalidInput(format!(
                "server {} was not launched by the manager: only those are drained and retired",
                dupla::name::excerpt(id)
            ))
        })
    }

    /// One pass of the retire worker: update idle clocks, retire what
    /// [`to_retire`] picks, and finish drains a restart interrupted.
    pub async fn retire_pass(&self) -> Result<()> {
        let records = self.records()?;
        let counts = self.session_counts();
        let now = Instant::now();
        let (views, up) = {
            let membership = self.state.lock_membership();
            let up = membership
                .members()
                .filter(|m| membership.liveness(m, now) == Liveness::Up)
                .filter(|m| !membership.is_draining(&m.node.id))
                .count();
            let mut idle = self.idle_since.lock().expect("idle lock poisoned");
            let mut views = Vec::new();
            for record in records.iter().filter(|r| r.stage == Stage::Active) {
                let is_up = membership
                    .get(&record.id)
                    .is_some_and(|m| membership.liveness(m, now) == Liveness::Up);
                let sessions = counts.get(&record.id).copied().unwrap_or(0);
                if !is_up || sessions > 0 {
                    idle.remove(&record.id);
                    views.push(IdleView {
                        id: record.id.clone(),
                        idle_for: None,
                    });
                    continue;
                }
                let since = *idle.entry(record.id.clone()).or_insert(now);
                views.push(IdleView {
                    id: record.id.clone(),
                    idle_for: Some(now.saturating_duration_since(since)),
                });
            }
            (views, up)
        };
        let config = &self.state.config.elastic;
        // Retirements a restart (or a failure) interrupted come first.
        for record in records
            .iter()
            .filter(|r| r.stage == Stage::Draining && r.retiring)
        {
            let _busy = self.busy.lock().await;
            // Looked at again under the lock: an admin's retire may have
            // finished it meanwhile.
            let current = self.record(&record.id)?;
            if !current.is_some_and(|r| r.stage == Stage::Draining && r.retiring) {
                continue;
            }
            if let Err(e) = self.retire_drained(&record.id).await {
                tracing::warn!(id = %record.id, error = %e, "retire failed; will try again");
            }
        }
        for id in to_retire(&views, up, config.min_servers, config.idle_retire) {
            tracing::info!(%id, "retiring an idle launched server");
            if let Err(e) = self.retire_idle(&id).await {
                tracing::warn!(%id, error = %e, "retire failed; will try again");
            }
        }
        Ok(())
    }

    /// At start: servers a previous run was draining are draining again.
    pub fn restore(&self) -> Result<()> {
        let mut membership = self.state.lock_membership();
        for record in self.records()? {
            if record.stage == Stage::Draining {
                membership.set_draining(&record.id, true);
            }
        }
        Ok(())
    }
}

/// Run retire passes until shutdown.
pub async fn run(elastic: Arc<Elastic>, mut shutdown: Shutdown) {
    if !elastic.enabled() {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RETIRE_SCAN_INTERVAL) => {}
            _ = shutdown.wait() => return,
        }
        if let Err(e) = elastic.retire_pass().await {
            tracing::warn!(error = %e, "retire pass failed");
        }
    }
}

/// Copy every file version `id` holds until two other up servers hold it,
/// then drop `id` from its holders; done when the index lists nothing for
/// `id`. Returns the versions that needed a new copy.
async fn drain_files(state: &Arc<State>, id: &str) -> Result<u64> {
    let mut moved = 0;
    loop {
        let (page, _) = state.catalog.held_by(id, None, DRAIN_PAGE)?;
        if page.is_empty() {
            return Ok(moved);
        }
        for record in page {
            moved += move_off(state, id, record).await?;
        }
    }
}

/// Give one file version enough copies off `id`, then release `id`.
async fn move_off(
    state: &Arc<State>,
    id: &str,
    record: crate::files::catalog::FileRecord,
) -> Result<u64> {
    let mut copies = 0;
    let mut record = record;
    loop {
        let (others, candidates) = {
            let now = Instant::now();
            let membership = state.lock_membership();
            let others: Vec<String> = record
                .holders
                .iter()
                .filter(|h| h.as_str() != id && !membership.is_draining(h))
                .filter(|h| {
                    membership
                        .get(h)
                        .is_some_and(|m| membership.liveness(m, now) == Liveness::Up)
                })
                .cloned()
                .collect();
            (others, membership.candidates(now))
        };
        if others.len() >= TARGET_COPIES {
            release(state, id, &record)?;
            return Ok(copies.min(1));
        }
        let order = dupla::placement::choose(
            &record.placement_key(),
            record.size,
            &candidates,
            dupla::placement::DEFAULT_LOAD_EPSILON,
        );
        let target = order
            .iter()
            .map(|&i| candidates[i].id.clone())
            .find(|c| !record.holders.contains(c))
            .ok_or_else(|| {
                Error::Exhausted(format!(
                    "no server can take a copy of {} off {id}: the drain waits",
                    record.placement_key()
                ))
            })?;
        let mut sources = others.clone();
        sources.push(id.to_string());
        let task = RepairTask {
            owner: record.owner.clone(),
            name: record.name.clone(),
            version: record.version,
            size: record.size,
            sources,
            holders_before: record.holders.clone(),
            target,
        };
        crate::files::repair_worker::copy_file(state, &task).await?;
        copies += 1;
        record = state
            .catalog
            .get_version(&record.owner, &record.name, record.version)?
            .filter(|r| r.holders.iter().any(|h| h == id))
            .ok_or_else(|| Error::Aborted("the file changed while it was drained".into()))?;
    }
}

/// Drop `id` from a version's holders, if two others still hold it.
fn release(state: &State, id: &str, record: &crate::files::catalog::FileRecord) -> Result<()> {
    let _writes = state.lock_catalog_writes();
    let Some(mut current) =
        state
            .catalog
            .get_version(&record.owner, &record.name, record.version)?
    else {
        return Ok(());
    };
    let others = current.holders.iter().filter(|h| h.as_str() != id).count();
    if others >= TARGET_COPIES {
        current.holders.retain(|h| h != id);
        state.catalog.put(&current)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, idle_secs: Option<u64>) -> IdleView {
        IdleView {
            id: id.into(),
            idle_for: idle_secs.map(Duration::from_secs),
        }
    }

    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn busy_or_recently_idle_servers_stay() {
        let servers = [view("a", None), view("b", Some(59))];
        assert!(to_retire(&servers, 3, 1, IDLE).is_empty());
    }

    #[test]
    fn idle_servers_retire_longest_idle_first() {
        let servers = [view("a", Some(60)), view("b", Some(600)), view("c", None)];
        assert_eq!(to_retire(&servers, 4, 1, IDLE), ["b", "a"]);
        assert_eq!(to_retire(&servers, 3, 1, IDLE), ["b"]);
    }

    #[test]
    fn min_servers_stay_up() {
        let servers = [view("a", Some(100)), view("b", Some(200))];
        // Three up (one static), at least two must stay: one retires.
        assert_eq!(to_retire(&servers, 3, 2, IDLE), ["b"]);
        assert!(to_retire(&servers, 2, 2, IDLE).is_empty());
        assert!(to_retire(&servers, 1, 2, IDLE).is_empty());
        assert_eq!(to_retire(&servers, 5, 3, IDLE), ["b", "a"]);
    }

    #[test]
    fn two_servers_always_stay_for_the_two_copies() {
        let servers = [view("a", Some(100)), view("b", Some(200))];
        // min_servers = 1, but one server cannot hold a file's two copies.
        assert_eq!(to_retire(&servers, 3, 1, IDLE), ["b"]);
        assert!(to_retire(&servers, 2, 1, IDLE).is_empty());
        assert!(to_retire(&servers, 2, 0, IDLE).is_empty());
    }

    #[test]
    fn ties_fall_to_the_id() {
        let servers = [view("b", Some(60)), view("a", Some(60))];
        assert_eq!(to_retire(&servers, 4, 1, IDLE), ["a", "b"]);
    }
}
