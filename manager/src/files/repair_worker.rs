//! The repair worker: finds files that lost a copy and has a server make a
//! new one, without anyone asking. Each pass plans with `repair::plan`,
//! then repairs the files in that order (most endangered first), one at a
//! time per target server and on every target at once: the target throttles
//! its copies to its repair budget, so copies to different servers run side
//! by side without any server taking more than its budget, and one huge
//! file delays only the files bound for the same server. A new holder is
//! recorded only after the target answered that its copy is durable and
//! verified. A failing file backs off exponentially.

use crate::cluster::membership::Liveness;
use crate::files::repair::{self, RepairTask};
use crate::state::State;
use dupla::chunk::REPLICATE_WINDOW_CHUNKS;
use dupla::rpc::MAX_CATALOG_MESSAGE_BYTES;
use dupla::shutdown::Shutdown;
use dupla::v1::storage_client::StorageClient;
use dupla::v1::{Node as WireNode, ReplicateRequest};
use dupla::{Error, Hash, Result};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time between repair passes.
pub const REPAIR_SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// First retry delay after a failed repair of a file; doubles up to the max.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Run repair passes until shutdown.
pub async fn run(state: Arc<State>, mut shutdown: Shutdown) {
    let mut backoff: HashMap<String, (Instant, Duration)> = HashMap::new();
    let mut reported: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REPAIR_SCAN_INTERVAL) => {}
            _ = shutdown.wait() => return,
        }
        let wanted = state.repair_wanted.swap(false, Ordering::Relaxed);
        if !wanted && !any_server_not_up(&state) {
            continue;
        }
        let planning = state.clone();
        let planned = tokio::task::spawn_blocking(move || plan_now(&planning))
            .await
            .unwrap_or_else(|e| Err(Error::Internal(format!("repair planning task: {e}"))));
        let plan = match planned {
            Ok(plan) => plan,
            Err(e) => {
                tracing::warn!(error = %e, "repair planning failed");
                state.want_repair();
                continue;
            }
        };
        if !(plan.tasks.is_empty() && plan.waiting.is_empty() && plan.unrecoverable.is_empty()) {
            // Work left (or blocked): look again next pass.
            state.want_repair();
        }
        for name in plan
            .unrecoverable
            .iter()
            .filter(|n| reported.insert((*n).clone()))
        {
            tracing::error!(file = %name, "no live copy left: waiting for a holder to come back");
        }
        let now = Instant::now();
        let due: Vec<RepairTask> = plan
            .tasks
            .into_iter()
            .filter(|t| backoff.get(&t.key()).is_none_or(|(next, _)| *next <= now))
            .collect();
        for (key, outcome) in repair_all(&state, due, &shutdown).await {
            match outcome {
                Ok(()) => {
                    backoff.remove(&key);
                    reported.remove(&key);
                }
                Err(()) => {
                    let delay = backoff
                        .get(&key)
                        .map_or(FIRST_BACKOFF, |(_, d)| (*d * 2).min(MAX_BACKOFF));
                    backoff.insert(key, (Instant::now() + delay, delay));
                }
            }
        }
    }
}

/// Repair `tasks` (in priority order): one queue per target server, the
/// queues side by side. Returns each file's key with whether it worked.
async fn repair_all(
    state: &Arc<State>,
    tasks: Vec<RepairTask>,
    shutdown: &Shutdown,
) -> Vec<(String, std::result::Result<(), ()>)> {
    let mut queues: HashMap<String, Vec<RepairTask>> = HashMap::new();
    for task in tasks {
        queues.entry(task.target.clone()).or_default().push(task);
    }
    let runs = queues.into_values().map(|queue| async move {
        let mut outcomes = Vec::new();
        for task in queue {
            if shutdown.is_triggered() {
                break;
            }
            let outcome = match repair_one(state, &task).await {
                Ok(bytes) => {
                    tracing::info!(owner = %task.owner, name = %task.name, target = %task.target,
                        bytes, "file re-replicated");
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(owner = %task.owner, name = %task.name, target = %task.target,
                        error = %e, "repair failed; will retry with backoff");
                    Err(())
                }
            };
            outcomes.push((task.key(), outcome));
        }
        outcomes
    });
    futures::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Whether any known server is not `up`: then files may be losing copies.
fn any_server_not_up(state: &State) -> bool {
    let now = Instant::now();
    let membership = state.lock_membership();
    let degraded = membership
        .members()
        .any(|m| membership.liveness(m, now) != Liveness::Up);
    degraded
}

/// Most file versions one pass plans for; the rest wait for the next pass
/// (memory and pass time stay bounded whatever the catalog's size).
pub const REPAIR_PLAN_FILES: usize = 4096;

/// Plan with the current membership, over the only files that can need a
/// copy: those with fewer than two holders, and those a `down` server
/// holds (read from the catalog's per-server index, nothing else).
pub fn plan_now(state: &State) -> Result<repair::RepairPlan> {
    let now = Instant::now();
    let down: Vec<String> = {
        let membership = state.lock_membership();
        let down = membership
            .members()
            .filter(|m| membership.liveness(m, now) == Liveness::Down)
            .map(|m| m.node.id.clone())
            .collect();
        down
    };
    let mut records = state.catalog.degraded(REPAIR_PLAN_FILES)?;
    let mut seen: HashSet<(String, String, u64)> = records
        .iter()
        .map(|r| (r.owner.clone(), r.name.clone(), r.version))
        .collect();
    for server in &down {
        let room = REPAIR_PLAN_FILES.saturating_sub(records.len());
        if room == 0 {
            break;
        }
        let (held, _) = state.catalog.held_by(server, None, room)?;
        records.extend(
            held.into_iter()
                .filter(|r| seen.insert((r.owner.clone(), r.name.clone(), r.version))),
        );
    }
    // Until a full grace period has passed since the manager started, a
    // server not heard from yet may simply not have sent its first
    // heartbeat: wait for it rather than copy its files elsewhere.
    let warming_up = state.started.elapsed() < state.config.down_after;
    let membership = state.lock_membership();
    let liveness = |id: &str| match membership.get(id) {
        Some(m) if m.last_seen.is_none() && warming_up => Liveness::Suspect,
        Some(m) => membership.liveness(m, now),
        None => Liveness::Down,
    };
    Ok(repair::plan(
        &records,
        liveness,
        &membership.candidates(now),
    ))
}

/// Have `task.target` copy the file version from `task.sources`, verified
/// chunk by chunk and durable before it answers, then record the target as
/// a holder (unless the version's holders changed meanwhile). Draining a
/// server uses it too (`elastic.rs`). Returns the bytes copied.
pub(crate) async fn copy_file(state: &Arc<State>, task: &RepairTask) -> Result<u64> {
    repair_one(state, task).await
}

/// Have the target copy the file, then record it as a holder.
async fn repair_one(state: &Arc<State>, task: &RepairTask) -> Result<u64> {
    let record = state
        .catalog
        .get_version(&task.owner, &task.name, task.version)?
        .filter(|r| r.version == task.version)
        .ok_or_else(|| Error::Aborted("the file changed or went away".into()))?;
    let addr = |id: &str| {
        let membership = state.lock_membership();
        membership.get(id).map(|m| m.node.addr.clone())
    };
    let target = addr(&task.target)
        .ok_or_else(|| Error::Unavailable(format!("target {} is unknown", task.target)))?;
    let sources: Vec<WireNode> = repair::resolve(&task.sources, addr)
        .into_iter()
        .map(|n| WireNode {
            id: n.id,
            addr: n.addr,
        })
        .collect();
    let mut client = StorageClient::new(state.transport.connect_lazy(&target)?)
        .max_decoding_message_size(MAX_CATALOG_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CATALOG_MESSAGE_BYTES);
    // Window by window, so a request stays small whatever the file's size.
    let mut copied_bytes = 0;
    for (window, chunks) in record.chunks.chunks(REPLICATE_WINDOW_CHUNKS).enumerate() {
        let reply = client
            .replicate(state.secret.request(ReplicateRequest {
                name: record.name.clone(),
                chunks: chunks.iter().map(Hash::to_bytes).collect(),
                size: record.size,
                sources: sources.clone(),
                first_chunk: (window * REPLICATE_WINDOW_CHUNKS) as u64,
            }))
            .await?
            .into_inner();
        copied_bytes += reply.copied_bytes;
    }
    let (state, task) = (state.clone(), task.clone());
    tokio::task::spawn_blocking(move || record_holder(&state, &task, copied_bytes))
        .await
        .map_err(|e| Error::Internal(format!("repair record task: {e}")))??;
    Ok(copied_bytes)
}

/// Record the repaired file's new holder, unless the file changed meanwhile.
fn record_holder(state: &State, task: &RepairTask, copied_bytes: u64) -> Result<()> {
    let _writes = state.lock_catalog_writes();
    let mut current = state
        .catalog
        .get_version(&task.owner, &task.name, task.version)?
        .filter(|r| r.version == task.version && r.holders == task.holders_before)
        .ok_or_else(|| Error::Aborted("the file changed while it was repaired".into()))?;
    current.holders = task.new_holders();
    // The stats lock is held across the write: a status that sees the new
    // holder (it reads the catalog, then the stats) also sees it counted.
    let mut stats = state.repair_stats.lock().expect("stats lock poisoned");
    state.catalog.put(&current)?;
    stats.files += 1;
    stats.bytes += copied_bytes;
    Ok(())
}
