//! Repair planning: which files lost a copy, where their new copy goes.
//!
//! Pure functions over the catalog and a liveness view, no I/O, so the
//! rules are tested directly:
//!
//! * a file needs repair when fewer than two of its holders are `up` and the
//!   missing copy is really gone: a holder is `down` (past the grace period)
//!   or the file was written with one copy (degraded write). A `suspect`
//!   holder is waited for, not replaced: a short hiccup must not copy data;
//! * the new copy goes to the next server in the file's placement order
//!   (the same rendezvous rule as new writes) that does not hold it yet;
//! * the copy comes from the `up` holders; a file with none is reported,
//!   not repaired (nothing to copy from);
//! * most endangered first: fewest live copies, then smallest file (more
//!   files protected per byte copied).

use crate::cluster::membership::{Liveness, NodeRef};
use crate::files::catalog::FileRecord;
use dupla::placement::{self, Candidate, DEFAULT_LOAD_EPSILON};

/// Copies every file should have.
pub const TARGET_COPIES: usize = 2;

/// One file to re-replicate.
#[derive(Clone, Debug, PartialEq)]
pub struct RepairTask {
    /// Owner of the file.
    pub owner: String,
    /// File name.
    pub name: String,
    /// Version the plan was made for; the result is applied only if the
    /// file was not backed up again meanwhile.
    pub version: u64,
    /// Bytes to copy.
    pub size: u64,
    /// Holders that are up: the sources.
    pub sources: Vec<String>,
    /// The file's holders when the plan was made; the result is applied
    /// only if they are unchanged (a corruption report may drop one meanwhile).
    pub holders_before: Vec<String>,
    /// Server that receives the new copy.
    pub target: String,
}

impl RepairTask {
    /// The file's identity across passes: owner and name.
    pub fn key(&self) -> String {
        crate::files::catalog::placement_key(&self.owner, &self.name)
    }

    /// The holders after a successful repair: the live sources plus the target.
    pub fn new_holders(&self) -> Vec<String> {
        let mut holders = self.sources.clone();
        holders.push(self.target.clone());
        holders
    }
}

/// What planning found.
#[derive(Debug, Default, PartialEq)]
pub struct RepairPlan {
    /// Files to repair, most endangered first.
    pub tasks: Vec<RepairTask>,
    /// Files (`owner/name`) that need a copy but have no live holder to
    /// copy from.
    pub unrecoverable: Vec<String>,
    /// Files (`owner/name`) that need a copy but no server can take it now.
    pub waiting: Vec<String>,
}

/// Plan repairs for `records`. `liveness` tells each server's state;
/// `candidates` are the servers that may take data now (as for placement).
pub fn plan(
    records: &[FileRecord],
    liveness: impl Fn(&str) -> Liveness,
    candidates: &[Candidate],
) -> RepairPlan {
    let mut plan = RepairPlan::default();
    for record in records {
        let up: Vec<String> = record
            .holders
            .iter()
            .filter(|h| liveness(h) == Liveness::Up)
            .cloned()
            .collect();
        if up.len() >= TARGET_COPIES {
            continue;
        }
        let lost = record.holders.len() < TARGET_COPIES
            || record.holders.iter().any(|h| liveness(h) == Liveness::Down);
        if !lost {
            continue;
        }
        if up.is_empty() {
            plan.unrecoverable.push(record.placement_key());
            continue;
        }
        let order = placement::choose(
            &record.placement_key(),
            record.size,
            candidates,
            DEFAULT_LOAD_EPSILON,
        );
        match order
            .iter()
            .map(|&i| &candidates[i].id)
            .find(|id| !record.holders.contains(id))
        {
            Some(target) => plan.tasks.push(RepairTask {
                owner: record.owner.clone(),
                name: record.name.clone(),
                version: record.version,
                size: record.size,
                sources: up,
                holders_before: record.holders.clone(),
                target: target.clone(),
            }),
            None => plan.waiting.push(record.placement_key()),
        }
    }
    plan.tasks
        .sort_by_key(|t| (t.sources.len(), t.size, t.name.clone()));
    plan
}

/// Addresses for the ids of `nodes`, from a lookup (unknown ids dropped).
pub fn resolve(ids: &[String], addr_of: impl Fn(&str) -> Option<String>) -> Vec<NodeRef> {
    ids.iter()
        .filter_map(|id| {
            addr_of(id).map(|addr| NodeRef {
                id: id.clone(),
                addr,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dupla::Hash;

    fn record(name: &str, size: u64, holders: &[&str]) -> FileRecord {
        FileRecord {
            owner: "ada".into(),
            name: name.into(),
            size,
            blake3: Hash::of(name.as_bytes()),
            chunks: vec![],
            chunk_size: 1 << 20,
            chunk_lengths: Vec::new(),
            holders: holders.iter().map(|h| h.to_string()).collect(),
            committed_unix_ms: 0,
            version: 3,
            lost_unix_ms: 0,
        }
    }

    fn candidates(ids: &[&str]) -> Vec<Candidate> {
        ids.iter()
            .map(|id| Candidate {
                id: id.to_string(),
                free: 1 << 40,
                active: 0,
            })
            .collect()
    }

    fn states(
        down: &'static [&'static str],
        suspect: &'static [&'static str],
    ) -> impl Fn(&str) -> Liveness {
        move |id| {
            if down.contains(&id) {
                Liveness::Down
            } else if suspect.contains(&id) {
                Liveness::Suspect
            } else {
                Liveness::Up
            }
        }
    }

    #[test]
    fn a_down_holder_is_replaced_by_the_next_server_in_placement_order() {
        let records = [record("a", 10, &["s1", "s2"])];
        let cands = candidates(&["s1", "s3", "s4"]);
        let plan = plan(&records, states(&["s2"], &[]), &cands);
        assert_eq!(plan.tasks.len(), 1);
        let task = &plan.tasks[0];
        assert_eq!(task.sources, vec!["s1".to_string()]);
        let order = placement::choose("a", 10, &cands, DEFAULT_LOAD_EPSILON);
        let expected = order
            .iter()
            .map(|&i| cands[i].id.clone())
            .find(|id| id != "s1")
            .unwrap();
        assert_eq!(task.target, expected);
        assert_eq!(task.new_holders(), vec!["s1".to_string(), expected]);
    }

    #[test]
    fn a_suspect_holder_is_waited_for() {
        let records = [record("a", 10, &["s1", "s2"])];
        let plan = plan(&records, states(&[], &["s2"]), &candidates(&["s1", "s3"]));
        assert_eq!(plan, RepairPlan::default());
    }

    #[test]
    fn a_degraded_write_gets_its_second_copy() {
        let records = [record("a", 10, &["s1"])];
        let plan = plan(&records, states(&[], &[]), &candidates(&["s1", "s2"]));
        assert_eq!(plan.tasks[0].target, "s2");
    }

    #[test]
    fn no_live_holder_is_unrecoverable_and_no_room_waits() {
        let records = [
            record("gone", 10, &["s1", "s2"]),
            record("stuck", 10, &["s3"]),
        ];
        let plan = plan(&records, states(&["s1", "s2"], &[]), &candidates(&["s3"]));
        assert_eq!(plan.unrecoverable, vec!["ada/gone".to_string()]);
        assert_eq!(plan.waiting, vec!["ada/stuck".to_string()]);
        assert!(plan.tasks.is_empty());
    }

    #[test]
    fn smaller_files_go_first() {
        let records = [
            record("big", 1000, &["s1", "s2"]),
            record("small", 1, &["s1", "s2"]),
        ];
        let plan = plan(&records, states(&["s2"], &[]), &candidates(&["s1", "s3"]));
        let names: Vec<&str> = plan.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["small", "big"]);
    }

    #[test]
    fn healthy_files_need_nothing() {
        let records = [record("a", 10, &["s1", "s2"])];
        assert_eq!(
            plan(&records, states(&[], &[]), &candidates(&["s1", "s2"])),
            RepairPlan::default()
        );
    }
}
